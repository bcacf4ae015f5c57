//! Where an image's blobs are read from, by digest: a registry through the
//! OCI distribution API, or a mirror's OCI image layout (a directory, or the
//! same directory served over HTTP).
//!
//! Registry requests (distribution `docs/spec/api.md`; OCI distribution-spec
//! `spec.md` "Pulling manifests", "Pulling blobs"): `GET
//! /v2/<repository>/manifests/<digest>` with the manifest media types in
//! `Accept`, `GET /v2/<repository>/blobs/<digest>`. A `401` is answered once
//! per request with the anonymous Bearer token its `WWW-Authenticate`
//! challenge names ([`crate::inputs::oci::fetch_token`]), kept for the
//! image's later requests. Redirects (registry.k8s.io answers blob GETs with
//! a `307` to blob storage on another host) are followed by kiln itself, at
//! most [`MAX_REDIRECTS`], to `http(s)` only, and the `Authorization` header
//! goes only to the origin that issued the token, never to another host.
//! Every request is bounded by what is left of its blob's deadline.

use crate::inputs::fetch::{
    is_http_url, printable, redirected, transport_attempt, Attempt, Cause, FetchOptions, Mirror, MAX_REDIRECTS,
};
use crate::inputs::image_ref::ImagePin;
use crate::inputs::oci::{ImageRef, ACCEPT};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

/// The directory of a mirror that holds its images as an OCI image layout
/// (`oci-layout`, `index.json`, `blobs/sha256/<hex>`).
pub const LAYOUT_DIR: &str = "oci";

/// How a missing blob's cause begins.
pub const NOT_FOUND: &str = "not found (HTTP 404)";

/// Where one image is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A registry: base URL (`https://registry.k8s.io`), repository, and the
    /// upstream registry's name sent as `ns=` to a mirror.
    Registry {
        /// `http(s)://HOST[/PATH]`.
        base: String,
        /// `kube-apiserver`, `coredns/coredns`.
        repository: String,
        /// `?ns=` for a registry mirror (containerd's convention).
        ns: Option<String>,
    },
    /// A mirror directory's `oci/` layout.
    LayoutDir(PathBuf),
    /// A mirror URL's `oci/` layout (the directory served over HTTP).
    LayoutUrl(String),
    /// `--offline` without a mirror: only the cache.
    Offline,
}

impl Origin {
    /// Where `image` is read from under `opts`: `--registry-mirror`, else
    /// `--mirror`'s layout, else (unless `--offline`) its own registry.
    pub fn of(pin: &ImagePin, opts: &FetchOptions) -> Origin {
        let image =
            ImageRef { registry: pin.registry.clone(), repository: pin.repository.clone(), reference: pin.tag.clone() };
        if let Some(m) = &opts.registry_mirror {
            let ns = Some(image.registry.clone());
            return Origin::Registry {
                base: m.trim_end_matches('/').to_string(),
                repository: image.repository.clone(),
                ns,
            };
        }
        match &opts.mirror {
            Some(Mirror::Dir(d)) => Origin::LayoutDir(d.join(LAYOUT_DIR)),
            Some(Mirror::Url(u)) => Origin::LayoutUrl(format!("{u}/{LAYOUT_DIR}")),
            None if opts.offline => Origin::Offline,
            None => Origin::Registry { base: image.base_url(), repository: image.repository.clone(), ns: None },
        }
    }
}

/// Whether a digest names a manifest (index or image manifest) or another blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// `/manifests/<digest>` on a registry.
    Manifest,
    /// `/blobs/<digest>` on a registry.
    Blob,
}

/// A body being read: the reader, the length the source declares, and where it comes from.
pub struct Body {
    /// The bytes.
    pub reader: Box<dyn Read + Send>,
    /// `Content-Length`, or the file's size.
    pub length: Option<u64>,
    /// The URL (after redirects) or file it is read from.
    pub from: String,
}

/// One image's source, shared by the threads fetching its blobs.
pub struct Source<'a> {
    /// Where from.
    pub origin: Origin,
    agent: &'a ureq::Agent,
    opts: &'a FetchOptions,
    token: Mutex<Option<String>>,
}

impl<'a> Source<'a> {
    /// A source reading from `origin` with `agent` and `opts`' timeouts.
    pub fn new(origin: Origin, agent: &'a ureq::Agent, opts: &'a FetchOptions) -> Source<'a> {
        Source { origin, agent, opts, token: Mutex::new(None) }
    }

    /// Where `digest` is read from (for messages).
    pub fn location(&self, what: What, digest: &str) -> String {
        match &self.origin {
            Origin::Registry { base, repository, ns } => {
                let kind = if what == What::Manifest { "manifests" } else { "blobs" };
                let q = ns.as_ref().map(|n| format!("?ns={n}")).unwrap_or_default();
                format!("{base}/v2/{repository}/{kind}/{digest}{q}")
            }
            Origin::LayoutDir(d) => d.join("blobs").join(digest.replacen(':', "/", 1)).display().to_string(),
            Origin::LayoutUrl(u) => format!("{u}/blobs/{}", digest.replacen(':', "/", 1)),
            Origin::Offline => "the cache (--offline)".to_string(),
        }
    }

    /// Opens `digest` for reading, within `deadline`.
    pub(crate) fn open(&self, what: What, digest: &str, deadline: Instant) -> Result<Body, Attempt> {
        let at = self.location(what, digest);
        match &self.origin {
            Origin::Offline => Err(Attempt::Final(Cause::Failed("not in the cache, and --offline".into()))),
            Origin::LayoutDir(_) => {
                let f = crate::io::open_regular(std::path::Path::new(&at)).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Attempt::Final(Cause::NotFound),
                    _ => Attempt::Final(Cause::Failed(format!("cannot be read: {e}"))),
                })?;
                let length = f.metadata().ok().map(|m| m.len());
                Ok(Body { reader: Box::new(f), length, from: at })
            }
            Origin::LayoutUrl(_) => self.get(&at, "*/*", deadline, false),
            Origin::Registry { .. } => {
                let accept = if what == What::Manifest { ACCEPT } else { "*/*" };
                self.get(&at, accept, deadline, true)
            }
        }
    }

    /// `GET url`: redirects, the Bearer challenge (when `auth`), the deadline.
    fn get(&self, url: &str, accept: &str, deadline: Instant, auth: bool) -> Result<Body, Attempt> {
        let origin_of = |u: &str| url::Url::parse(u).ok().map(|u| u.origin());
        let token_origin = origin_of(url);
        let mut current = url.to_string();
        let mut challenged = false;
        let mut hops = 0;
        loop {
            let at = redirected(url, &current);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Attempt::Transient(format!("deadline reached before requesting{at}")));
            }
            let mut req = self.agent.get(&current).set("Accept", accept);
            if left < self.opts.timeout {
                req = req.timeout(left);
            }
            let token = self.token.lock().ok().and_then(|t| t.clone());
            if let (Some(t), true) = (token, origin_of(&current) == token_origin) {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            let resp = match req.call() {
                Ok(r) => r,
                Err(ureq::Error::Status(401, r)) if auth && !challenged && origin_of(&current) == token_origin => {
                    challenged = true;
                    let challenge = r.header("WWW-Authenticate").unwrap_or_default().to_string();
                    let t = crate::inputs::oci::fetch_token(self.agent, &current, &challenge)
                        .map_err(|e| Attempt::Final(Cause::Failed(e.message)))?;
                    if let Ok(mut slot) = self.token.lock() {
                        *slot = Some(t);
                    }
                    continue;
                }
                Err(ureq::Error::Status(404, _)) if at.is_empty() => return Err(Attempt::Final(Cause::NotFound)),
                Err(ureq::Error::Status(404, _)) => {
                    return Err(Attempt::Final(Cause::Failed(format!("{NOT_FOUND}{at}"))))
                }
                Err(ureq::Error::Status(code, _)) if code == 429 || code >= 500 => {
                    return Err(Attempt::Transient(format!("HTTP {code}{at}")))
                }
                Err(ureq::Error::Status(code, _)) => {
                    let hint = if code == 401 || code == 403 { "; kiln reads public images only" } else { "" };
                    return Err(Attempt::Final(Cause::Failed(format!("HTTP {code}{at}{hint}"))));
                }
                Err(ureq::Error::Transport(t)) => return Err(transport_attempt(&t, &current, &at)),
            };
            if !(300..400).contains(&resp.status()) {
                let length = resp.header("Content-Length").and_then(|v| v.trim().parse::<u64>().ok());
                return Ok(Body { reader: Box::new(resp.into_reader()), length, from: current });
            }
            hops += 1;
            let location = resp.header("Location").unwrap_or_default().to_string();
            let next = url::Url::parse(&current).and_then(|b| b.join(location.trim()));
            match next {
                Ok(n) if hops <= MAX_REDIRECTS && is_http_url(n.as_str()) => current = n.to_string(),
                Ok(_) if hops > MAX_REDIRECTS => {
                    return Err(Attempt::Final(Cause::Failed(format!(
                        "more than {MAX_REDIRECTS} redirects (last to `{}`); the registry redirects in a loop",
                        printable(&location)
                    ))))
                }
                _ => {
                    return Err(Attempt::Final(Cause::Failed(format!(
                        "redirects{at} to `{}`; kiln follows redirects only to http:// and https:// URLs",
                        printable(&location)
                    ))))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_follows_the_options() {
        let r = ImagePin::parse("registry.k8s.io/coredns/coredns:v1.12.1").unwrap();
        let mut o = FetchOptions::default();
        let reg = |o: &FetchOptions| {
            Source::new(Origin::of(&r, o), &crate::inputs::fetch::agent(o.timeout), o)
                .location(What::Manifest, "sha256:ab")
        };
        assert_eq!(reg(&o), "https://registry.k8s.io/v2/coredns/coredns/manifests/sha256:ab");
        o.mirror = Some(Mirror::Dir("/srv/m".into()));
        assert_eq!(Origin::of(&r, &o), Origin::LayoutDir("/srv/m/oci".into()));
        assert_eq!(reg(&o), "/srv/m/oci/blobs/sha256/ab");
        o.mirror = Some(Mirror::Url("http://m:8080/k".into()));
        assert_eq!(reg(&o), "http://m:8080/k/oci/blobs/sha256/ab");
        o.registry_mirror = Some("http://127.0.0.1:5000/".into());
        assert_eq!(reg(&o), "http://127.0.0.1:5000/v2/coredns/coredns/manifests/sha256:ab?ns=registry.k8s.io");
        let off = FetchOptions { offline: true, ..FetchOptions::default() };
        assert_eq!(Origin::of(&r, &off), Origin::Offline);
    }
}
