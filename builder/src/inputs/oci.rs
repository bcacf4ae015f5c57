//! The CNI manifest's container images, for every architecture (seed row 43:
//! a DaemonSet whose image lacks arm64 leaves the Pis NotReady).
//!
//! `kiln pin` reads every `image:` of the profile's `[cni_manifest]` (or of
//! `--cni-manifest FILE`, a CNI the image does not carry)
//! ([`manifest_images`]) and resolves each through the OCI distribution API
//! ([`resolve`]): `GET /v2/<name>/manifests/<reference>` accepting an OCI
//! index, a Docker manifest list and both single-image manifests; on `401`
//! the anonymous Bearer token flow its `WWW-Authenticate` challenge names (as
//! registry.k8s.io, ghcr.io, quay.io and Docker Hub answer); redirects
//! followed as downloads follow them. A single-image manifest's platform is
//! read from its config blob. The profile records, per image, the digest and
//! its platforms (`[cni_images."<image>"]`).
//!
//! `kiln check` (offline) then refuses a profile one of whose architectures
//! a recorded image does not cover ([`check_profile`]), naming image and arch.

use crate::error::{Error, Result};
use crate::hash::hex;
use crate::inputs::fetch::MAX_REDIRECTS;
use crate::inputs::profile::{Arch, PinnedImage};
use sha2::{Digest, Sha256};
use std::io::Read;

/// Media types asked for, indexes first (OCI image-spec `image-index.md`,
/// `manifest.md`; Docker's manifest list and manifest v2 schema 2).
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// The largest manifest or config blob read (an index is a few KiB).
const MAX_BODY: u64 = 4 << 20;

/// An image reference split as containerd and Docker split it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host (`docker.io` for familiar names).
    pub registry: String,
    /// Repository path (`library/busybox`).
    pub repository: String,
    /// Tag or `sha256:` digest.
    pub reference: String,
}

impl ImageRef {
    /// Splits `image` by distribution/reference's rules (`normalize.go`,
    /// `splitDockerDomain`): the first path element is a registry when it is
    /// `localhost`, contains `.` or `:`, or is not lowercase; otherwise the
    /// image is on `docker.io` (`index.docker.io` is its legacy name) and a
    /// one-element name gets `library/`. No tag means `latest` (`defaultTag`).
    pub fn parse(image: &str) -> std::result::Result<ImageRef, String> {
        let bad = |why: &str| format!("image `{image}` {why}");
        if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("is empty or has whitespace"));
        }
        let (name, reference) = match image.split_once('@') {
            Some((n, d)) => {
                let hexpart = d.strip_prefix("sha256:").ok_or_else(|| bad("has a digest that is not sha256:"))?;
                if !crate::hash::is_sha256_hex(hexpart) {
                    return Err(bad("has a digest that is not sha256: and 64 hex digits"));
                }
                // A tag beside the digest is ignored, as containerd does.
                let n = match n.rsplit_once(':') {
                    Some((a, t)) if !t.contains('/') => a,
                    _ => n,
                };
                (n, d.to_string())
            }
            None => match image.rsplit_once(':') {
                Some((n, t)) if !t.contains('/') => (n, t.to_string()),
                _ => (image, "latest".to_string()),
            },
        };
        let (registry, repository) = match name.split_once('/') {
            None => ("docker.io".to_string(), format!("library/{name}")),
            Some((d, rest)) if d == "localhost" || d.contains('.') || d.contains(':') || d.to_lowercase() != d => {
                let d = if d == "index.docker.io" { "docker.io" } else { d };
                let rest =
                    if d == "docker.io" && !rest.contains('/') { format!("library/{rest}") } else { rest.into() };
                (d.to_string(), rest)
            }
            Some(_) => ("docker.io".to_string(), name.to_string()),
        };
        let path_ok = |s: &str| {
            !s.is_empty()
                && s.split('/').all(|c| {
                    !c.is_empty()
                        && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
                })
        };
        if !path_ok(&repository) {
            return Err(bad("has a repository name that is not lowercase path components"));
        }
        if reference.is_empty()
            || !reference.chars().all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c))
            || reference.len() > 128 + 7
        {
            return Err(bad("has an invalid tag"));
        }
        Ok(ImageRef { registry, repository, reference })
    }

    /// The registry's API base: Docker Hub's API host for `docker.io`
    /// (containerd `core/remotes/docker/resolver.go`, `docker.io` →
    /// `registry-1.docker.io`); plain HTTP for a loopback registry, HTTPS
    /// otherwise (containerd `core/remotes/docker/registry.go`,
    /// `MatchLocalhost`, the hosts CRI talks to without TLS).
    pub fn base_url(&self) -> String {
        let host = if self.registry == "docker.io" { "registry-1.docker.io" } else { self.registry.as_str() };
        let bare =
            host.rsplit_once(':').map_or(host, |(h, p)| if p.chars().all(|c| c.is_ascii_digit()) { h } else { host });
        let bare = bare.trim_start_matches('[').trim_end_matches(']');
        let loopback = bare == "localhost" || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        format!("{}://{host}", if loopback { "http" } else { "https" })
    }
}

/// Every `image:` value of a (multi-document) Kubernetes YAML manifest, in
/// order, without repeats: the containers and initContainers of its
/// DaemonSets and Deployments. A line-level reading of `image: VALUE`
/// (optionally as a `- image:` list item, quoted or not, a `#` comment after
/// it): enough for the manifests CNIs publish.
pub fn manifest_images(yaml: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in yaml.lines() {
        let t = line.trim_start();
        let t = t.strip_prefix("- ").map(str::trim_start).unwrap_or(t);
        let Some(v) = t.strip_prefix("image:") else { continue };
        let v = v.trim();
        let v = match v.chars().next() {
            Some(q @ ('"' | '\'')) => v[1..].split(q).next().unwrap_or_default(),
            _ => v.split(" #").next().unwrap_or_default().trim(),
        };
        if !v.is_empty() && !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
    }
    out
}

/// A `WWW-Authenticate: Bearer k="v",…` challenge's parameters.
pub fn bearer_challenge(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.trim().strip_prefix("Bearer ").or_else(|| header.trim().strip_prefix("bearer "))?;
    let mut out = Vec::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (k, after) = s.split_once('=')?;
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.push((k.trim().trim_start_matches(',').trim().to_string(), v));
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(out)
}

/// `GET url` with `accept`, following redirects (at most [`MAX_REDIRECTS`],
/// http/https only, the credential dropped when the host changes) and
/// answering one Bearer challenge. Returns the body and `Docker-Content-Digest`.
fn get(agent: &ureq::Agent, url: &str, accept: &str, token: &mut Option<String>) -> Result<(Vec<u8>, Option<String>)> {
    let mut current = url.to_string();
    let host_of = |u: &str| url::Url::parse(u).ok().and_then(|u| u.host_str().map(str::to_string));
    // The token goes only to the host that asked for it.
    let mut token_host = host_of(url);
    let mut challenged = false;
    let mut hops = 0;
    loop {
        let same_host = host_of(&current) == token_host;
        let mut req = agent.get(&current).set("Accept", accept);
        if let (Some(t), true) = (token.as_ref(), same_host) {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(401, r)) if !challenged => {
                challenged = true;
                let h = r.header("WWW-Authenticate").unwrap_or_default().to_string();
                *token = Some(fetch_token(agent, &current, &h)?);
                token_host = host_of(&current);
                continue;
            }
            Err(ureq::Error::Status(code, _)) => {
                return Err(Error::build(format!("{current}: HTTP {code}; does the image exist, and is it public?")))
            }
            Err(ureq::Error::Transport(t)) => return Err(Error::build(format!("{current}: {t}"))),
        };
        if (300..400).contains(&resp.status()) {
            hops += 1;
            let loc = resp.header("Location").unwrap_or_default().to_string();
            let next = url::Url::parse(&current).and_then(|b| b.join(loc.trim()));
            match next {
                Ok(n) if hops <= MAX_REDIRECTS && matches!(n.scheme(), "http" | "https") => {
                    current = n.to_string();
                    continue;
                }
                Ok(_) if hops > MAX_REDIRECTS => {
                    return Err(Error::build(format!(
                        "{url}: more than {MAX_REDIRECTS} redirects; the registry redirects in a loop"
                    )))
                }
                _ => return Err(Error::build(format!("{current}: redirect to `{loc}`, not an http(s) URL"))),
            }
        }
        let digest = resp.header("Docker-Content-Digest").map(str::to_string);
        let mut body = Vec::new();
        resp.into_reader()
            .take(MAX_BODY + 1)
            .read_to_end(&mut body)
            .map_err(|e| Error::build(format!("{current}: reading the body: {e}")))?;
        if body.len() as u64 > MAX_BODY {
            return Err(Error::build(format!("{current}: more than {MAX_BODY} bytes; not a manifest")));
        }
        return Ok((body, digest));
    }
}

/// The anonymous token a Bearer challenge offers (distribution's token
/// spec, `docs/spec/auth/token.md`: `GET realm?service=…&scope=…`, answer
/// `{"token": …}` or `{"access_token": …}`).
pub(crate) fn fetch_token(agent: &ureq::Agent, url: &str, challenge: &str) -> Result<String> {
    let params = bearer_challenge(challenge).ok_or_else(|| {
        Error::build(format!(
            "{url}: HTTP 401 without a Bearer challenge (`{challenge}`); kiln reads public images only"
        ))
    })?;
    let get = |k: &str| params.iter().find(|(p, _)| p.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
    let realm = get("realm").ok_or_else(|| Error::build(format!("{url}: the Bearer challenge names no realm")))?;
    let mut u = url::Url::parse(&realm).map_err(|e| Error::build(format!("{url}: token realm `{realm}`: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(Error::build(format!("{url}: token realm `{realm}` is not an http(s) URL")));
    }
    for k in ["service", "scope"] {
        if let Some(v) = get(k) {
            u.query_pairs_mut().append_pair(k, &v);
        }
    }
    let r = agent.get(u.as_str()).call().map_err(|e| Error::build(format!("{u}: getting a pull token: {e}")))?;
    let mut body = Vec::new();
    r.into_reader().take(MAX_BODY).read_to_end(&mut body).map_err(|e| Error::build(format!("{u}: {e}")))?;
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| Error::build(format!("{u}: the token answer is not JSON: {e}")))?;
    v.get("token")
        .or_else(|| v.get("access_token"))
        .and_then(|t| t.as_str())
        .map(str::to_string)
        .ok_or_else(|| Error::build(format!("{u}: the token answer has no `token`")))
}

fn platform_of(v: &serde_json::Value) -> Option<String> {
    let os = v.get("os")?.as_str()?;
    let arch = v.get("architecture")?.as_str()?;
    Some(match v.get("variant").and_then(|x| x.as_str()) {
        Some(var) if !var.is_empty() => format!("{os}/{arch}/{var}"),
        _ => format!("{os}/{arch}"),
    })
}

/// The platforms an image index lists, sorted (attestation manifests, which
/// carry `unknown/unknown`, left out).
pub fn index_platforms(v: &serde_json::Value) -> Vec<String> {
    let mut platforms: Vec<String> = Vec::new();
    for m in v.get("manifests").and_then(|m| m.as_array()).into_iter().flatten() {
        if let Some(p) = m.get("platform").and_then(platform_of).filter(|p| !p.starts_with("unknown/")) {
            if !platforms.contains(&p) {
                platforms.push(p);
            }
        }
    }
    platforms.sort();
    platforms
}

/// Resolves `image` to its manifest digest and platforms.
pub fn resolve(agent: &ureq::Agent, image: &str) -> Result<PinnedImage> {
    resolve_via(agent, image, None)
}

/// [`resolve`] through a registry mirror (`http(s)://HOST[/PATH]`, asked
/// for `/v2/<repository>/…?ns=<registry>` as containerd asks its mirrors).
pub fn resolve_via(agent: &ureq::Agent, image: &str, mirror: Option<&str>) -> Result<PinnedImage> {
    let r = ImageRef::parse(image).map_err(Error::config)?;
    let (base, q) = match mirror {
        Some(m) => (format!("{}/v2/{}", m.trim_end_matches('/'), r.repository), format!("?ns={}", r.registry)),
        None => (format!("{}/v2/{}", r.base_url(), r.repository), String::new()),
    };
    let mut token = None;
    let (body, header) = get(agent, &format!("{base}/manifests/{}{q}", r.reference), ACCEPT, &mut token)
        .map_err(|e| e.context(format!("resolving {image}")))?;
    let digest = format!("sha256:{}", hex(&Sha256::digest(&body)));
    for (what, want) in [
        ("the reference's digest", r.reference.strip_prefix("sha256:").map(|_| &r.reference)),
        ("Docker-Content-Digest", header.as_ref()),
    ] {
        if let Some(w) = want {
            if !w.eq_ignore_ascii_case(&digest) {
                return Err(Error::verify(format!("{image}: the manifest's sha256 is {digest} but {what} is {w}")));
            }
        }
    }
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| Error::build(format!("{image}: the registry's manifest is not JSON: {e}")))?;
    let mut platforms: Vec<String> = Vec::new();
    if v.get("manifests").is_some() {
        platforms = index_platforms(&v);
    } else if let Some(cfg) = v.pointer("/config/digest").and_then(|d| d.as_str()) {
        let (blob, _) = get(agent, &format!("{base}/blobs/{cfg}{q}"), "*/*", &mut token)
            .map_err(|e| e.context(format!("reading {image}'s config")))?;
        let got = format!("sha256:{}", hex(&Sha256::digest(&blob)));
        if !got.eq_ignore_ascii_case(cfg) {
            return Err(Error::verify(format!("{image}: config blob {cfg} has sha256 {got}")));
        }
        let c: serde_json::Value = serde_json::from_slice(&blob)
            .map_err(|e| Error::build(format!("{image}: the config blob is not JSON: {e}")))?;
        platforms.extend(platform_of(&c));
    }
    if platforms.is_empty() {
        return Err(Error::build(format!("{image}: the manifest names no platform; is it an image?")));
    }
    platforms.sort();
    Ok(PinnedImage { digest, platforms })
}

/// Whether `platforms` runs on `arch` (Linux; any variant).
pub fn covers(platforms: &[String], arch: Arch) -> bool {
    platforms.iter().any(|p| {
        let mut it = p.split('/');
        it.next() == Some("linux") && it.next() == Some(arch.as_str())
    })
}

/// `kiln pin --cni-manifest`: resolves every image of `manifest` and writes
/// `[cni_images]` into `doc`, replacing what was there.
pub fn pin_manifest(
    doc: &mut toml_edit::DocumentMut,
    manifest: &std::path::Path,
    agent: &ureq::Agent,
) -> Result<Vec<String>> {
    let text = crate::io::open_regular(manifest)
        .and_then(|f| {
            let mut s = String::new();
            f.take(MAX_BODY * 4).read_to_string(&mut s).map(|_| s)
        })
        .map_err(|e| Error::config(format!("--cni-manifest {}: {e}", manifest.display())))?;
    if manifest_images(&text).is_empty() {
        return Err(Error::config(format!(
            "--cni-manifest {}: no `image:` in it; is it the CNI's Kubernetes manifest?",
            manifest.display()
        )));
    }
    pin_images(doc, &text, agent)
}

/// Resolves every image of the manifest `text` (the profile's own
/// `[cni_manifest]`, or `--cni-manifest`'s) and writes `[cni_images]` into
/// `doc`, replacing what was there (none: the table is removed). One line per image.
pub fn pin_images(doc: &mut toml_edit::DocumentMut, text: &str, agent: &ureq::Agent) -> Result<Vec<String>> {
    let images = manifest_images(text);
    if images.is_empty() {
        doc.remove("cni_images");
        return Ok(Vec::new());
    }
    let mut table = toml_edit::Table::new();
    let mut lines = Vec::new();
    let mut failed = Vec::new();
    for image in &images {
        match resolve(agent, image) {
            Ok(p) => {
                let mut t = toml_edit::Table::new();
                t["digest"] = toml_edit::value(p.digest.clone());
                let mut a = toml_edit::Array::new();
                for pl in &p.platforms {
                    a.push(pl.as_str());
                }
                t["platforms"] = toml_edit::value(a);
                table.insert(image, toml_edit::Item::Table(t));
                lines.push(format!("{image}: {} ({})", p.digest, p.platforms.join(", ")));
            }
            Err(e) => failed.push(e.message),
        }
    }
    if !failed.is_empty() {
        return Err(Error::build(format!(
            "{} CNI image(s) could not be resolved:\n{}",
            failed.len(),
            failed.join("\n")
        )));
    }
    table.set_implicit(true);
    doc["cni_images"] = toml_edit::Item::Table(table);
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_as_distribution_reference_does() {
        let r = |s: &str| ImageRef::parse(s).unwrap();
        assert_eq!(
            r("busybox"),
            ImageRef { registry: "docker.io".into(), repository: "library/busybox".into(), reference: "latest".into() }
        );
        assert_eq!(r("flannel/flannel:v0.26.7").repository, "flannel/flannel");
        assert_eq!(r("flannel/flannel:v0.26.7").registry, "docker.io");
        assert_eq!(r("index.docker.io/busybox:1").repository, "library/busybox");
        let g = r("ghcr.io/flannel-io/flannel:v0.26.7");
        assert_eq!(
            (g.registry.as_str(), g.repository.as_str(), g.reference.as_str()),
            ("ghcr.io", "flannel-io/flannel", "v0.26.7")
        );
        let l = r("127.0.0.1:5000/a/b");
        assert_eq!((l.registry.as_str(), l.reference.as_str()), ("127.0.0.1:5000", "latest"));
        assert_eq!(l.base_url(), "http://127.0.0.1:5000");
        assert_eq!(r("busybox").base_url(), "https://registry-1.docker.io");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(r(&format!("quay.io/x/y:v1@{d}")).reference, d);
        for bad in ["", "a b", "Busybox", "x/y@sha1:abc", "x/Y:1"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn images_are_read_from_manifest_lines() {
        let y = "kind: DaemonSet\nspec:\n  containers:\n  - name: a\n    image: ghcr.io/x/a:v1 # pinned\n  initContainers:\n    - image: \"ghcr.io/x/b:v2\"\n---\n    image: 'ghcr.io/x/a:v1'\n  imagePullPolicy: IfNotPresent\n";
        assert_eq!(manifest_images(y), ["ghcr.io/x/a:v1", "ghcr.io/x/b:v2"]);
    }

    #[test]
    fn bearer_challenges_parse() {
        let c = bearer_challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#).unwrap();
        assert_eq!(c[0], ("realm".into(), "https://auth.docker.io/token".into()));
        assert_eq!(c[2], ("scope".into(), "repository:library/busybox:pull".into()));
        assert!(bearer_challenge("Basic realm=\"x\"").is_none());
    }
}
