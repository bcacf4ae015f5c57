//! `kiln pin` for the profile's `images`: each entry resolved to the digest
//! of its image index and written back as `name:tag@sha256:…`, for review in
//! the diff ([`pin_images`]).
//!
//! kubeadm's images for the profile's Kubernetes version (after `--version`)
//! are retagged to kubeadm's tags and added when missing, in kubeadm's order
//! after the profile's own entries (kube-proxy only warned about, as `kiln
//! check` does: a list without it is for a cluster without kube-proxy);
//! other entries keep their tags. Each tag is
//! resolved through the OCI distribution API ([`crate::inputs::oci::resolve`]:
//! anonymous Bearer tokens, redirects, `Docker-Content-Digest` checked), or
//! through `--registry-mirror URL`, or, with `--base-url DIR|URL`, through the
//! mirror's OCI layout (`oci/index.json`, [`crate::inputs::image_mirror`]). An
//! image without a `linux/<arch>` build for one of the profile's
//! architectures is refused. The array is edited with `toml_edit`: comments
//! and each kept entry's layout survive.

use crate::error::{Error, Result};
use crate::hash::sha256_hex;
use crate::inputs::fetch::FetchOptions;
use crate::inputs::image_mirror;
use crate::inputs::image_pins::{kubeadm_list, ImagePin, KUBE_PROXY};
use crate::inputs::images::{self, Platform, MAX_MANIFEST};
use crate::inputs::profile::{Arch, Profile};
use crate::progress::Progress;
use std::io::Read;
use toml_edit::{DocumentMut, Value};

/// Where and how `kiln pin` resolves images.
#[derive(Debug, Clone, Copy)]
pub struct Resolve<'a> {
    /// `--version`: the Kubernetes version the profile moves to.
    pub version: Option<&'a str>,
    /// `--base-url DIR|URL`: a mirror, whose `oci/index.json` names the digests.
    pub base_url: Option<&'a str>,
    /// `--registry-mirror URL`: a registry serving every image.
    pub registry_mirror: Option<&'a str>,
    /// Timeouts and retries.
    pub fetch: &'a FetchOptions,
    /// The HTTP agent.
    pub agent: &'a ureq::Agent,
}

/// Re-pins `images` in `doc` (a profile without the key is left alone).
pub fn pin_images(profile: &Profile, doc: &mut DocumentMut, opts: &Resolve, progress: &Progress) -> Result<()> {
    let Some(list) = &profile.doc.images else { return Ok(()) };
    let version = opts.version.map_or_else(|| profile.doc.kubernetes_version.get_ref().clone(), str::to_string);
    let kubeadm = kubeadm_list(&version).map_err(|m| Error::config(format!("{}: {m}", profile.path.display())))?;
    let mut entries: Vec<ImagePin> = list.get_ref().iter().filter_map(|e| ImagePin::parse(e.get_ref()).ok()).collect();
    for e in &mut entries {
        if let Some((_, tag)) = kubeadm.iter().find(|(n, _)| *n == e.name).filter(|(_, t)| *t != e.tag) {
            progress.step(format!(
                "{}: {} follows kubeadm {version}: tag {tag}",
                profile.path.display(),
                e.reference()
            ));
            e.tag = tag.clone();
            e.digest = None;
        }
    }
    for (name, tag) in &kubeadm {
        if entries.iter().any(|e| e.name == *name) {
            continue;
        }
        // As `kiln check`: a list without kube-proxy is for a cluster without it.
        if name == KUBE_PROXY {
            progress.warn(format!("{}: `images` has no {name}; add \"{name}:{tag}\" if the cluster runs kube-proxy (node.toml [cluster] kube_proxy, default true)", profile.path.display()));
            continue;
        }
        progress.step(format!("{}: adding {name}:{tag}, which kubeadm {version} runs", profile.path.display()));
        entries.push(ImagePin::parse(&format!("{name}:{tag}")).map_err(Error::build)?);
    }
    let mut failed = Vec::new();
    for e in &mut entries {
        match resolve(e, opts).and_then(|(d, platforms)| covers(e, &d, &platforms, profile).map(|()| d)) {
            Ok(d) => {
                progress.detail(format!("{}: {d}", e.reference()));
                e.digest = Some(d);
            }
            Err(err) => failed.push(err),
        }
    }
    if let Some(first) = failed.first() {
        let kind = failed.iter().fold(first.kind, |k, e| k.max_severity(e.kind));
        let lines: Vec<String> = failed.iter().map(|e| e.message.clone()).collect();
        return Err(Error {
            kind,
            message: format!("{} image(s) could not be pinned:\n{}", lines.len(), lines.join("\n")),
        });
    }
    write_array(doc, &entries);
    Ok(())
}

/// The image's index digest and platforms, from wherever the options say.
fn resolve(e: &ImagePin, opts: &Resolve) -> Result<(String, Vec<String>)> {
    let reference = e.reference();
    if let Some(base) = opts.base_url.filter(|_| opts.registry_mirror.is_none()) {
        let digest = image_mirror::lookup(base, &reference, opts.fetch, opts.agent)?.ok_or_else(|| {
            Error::build(format!(
                "{reference}: not in the mirror {base}/oci/index.json; `kiln mirror PROFILE... --out DIR` puts it there"
            ))
        })?;
        let bytes = layout_blob(base, &digest, opts)?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::build(format!("{reference}: the mirror's index {digest} is not JSON: {e}")))?;
        return Ok((digest, crate::inputs::oci::index_platforms(&v)));
    }
    let p = crate::inputs::oci::resolve_via(opts.agent, &reference, opts.registry_mirror)?;
    Ok((p.digest, p.platforms))
}

/// A blob of the mirror's layout, checked against its digest.
fn layout_blob(base: &str, digest: &str, opts: &Resolve) -> Result<Vec<u8>> {
    let rel = format!("oci/blobs/{}", digest.replacen(':', "/", 1));
    let bytes = if crate::inputs::fetch::is_http_url(base) {
        let url = format!("{}/{rel}", base.trim_end_matches('/'));
        crate::inputs::fetch::fetch_text_up_to(opts.fetch, opts.agent, &url, MAX_MANIFEST, "an image index")?
            .into_bytes()
    } else {
        let path = std::path::Path::new(base.strip_prefix("file://").unwrap_or(base)).join(&rel);
        let mut b = Vec::new();
        crate::io::open_regular(&path)
            .and_then(|f| f.take(MAX_MANIFEST).read_to_end(&mut b))
            .map_err(|e| Error::build(format!("{}: {e}", path.display())))?;
        b
    };
    let got = format!("sha256:{}", sha256_hex(&bytes));
    if got != digest {
        return Err(Error::verify(format!(
            "the mirror {base}: {rel} has sha256 {got}, not {digest}; fill the mirror again with `kiln mirror`"
        )));
    }
    Ok(bytes)
}

/// Refuses an image that has no build for one of the profile's architectures.
fn covers(e: &ImagePin, digest: &str, platforms: &[String], profile: &Profile) -> Result<()> {
    let parsed: Vec<Platform> = platforms
        .iter()
        .map(|p| {
            let mut it = p.splitn(3, '/');
            Platform {
                os: it.next().unwrap_or_default().into(),
                architecture: it.next().unwrap_or_default().into(),
                variant: it.next().map(str::to_string),
            }
        })
        .collect();
    let missing: Vec<Arch> =
        profile.architectures().into_iter().filter(|a| !parsed.iter().any(|p| images::matches(p, *a))).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::config(format!(
        "{} ({digest}) has no build for {} (it has {}); pick a multi-arch image or drop the architecture from the profile",
        e.reference(),
        missing.iter().map(|a| format!("linux/{a}")).collect::<Vec<_>>().join(", "),
        platforms.join(", ")
    )))
}

/// Writes `entries` as the `images` array, one per line; an entry that was
/// there keeps its comments.
fn write_array(doc: &mut DocumentMut, entries: &[ImagePin]) {
    let old: Vec<Value> =
        doc.get("images").and_then(|i| i.as_array()).map(|a| a.iter().cloned().collect()).unwrap_or_default();
    let old_decor = doc.get("images").and_then(|i| i.as_value()).map(|v| v.decor().clone());
    let trailing =
        doc.get("images").and_then(|i| i.as_array()).map(|a| a.trailing().as_str().unwrap_or("").to_string());
    let mut arr = toml_edit::Array::new();
    for e in entries {
        let mut v = Value::from(e.pinned());
        let was =
            old.iter().find(|o| o.as_str().and_then(|s| ImagePin::parse(s).ok()).is_some_and(|p| p.name == e.name));
        match was {
            Some(o) if o.decor().prefix().and_then(|p| p.as_str()).is_some_and(|p| p.contains('\n')) => {
                *v.decor_mut() = o.decor().clone()
            }
            _ => v.decor_mut().set_prefix("\n  "),
        }
        arr.push_formatted(v);
    }
    arr.set_trailing_comma(true);
    let trailing = trailing.filter(|t| t.contains('\n')).unwrap_or_else(|| "\n".to_string());
    arr.set_trailing(trailing);
    let mut value = Value::Array(arr);
    if let Some(d) = old_decor {
        *value.decor_mut() = d;
    }
    doc["images"] = toml_edit::Item::Value(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_array_is_rewritten_one_per_line_keeping_comments() {
        let d = format!("sha256:{}", "e".repeat(64));
        let text =
            "images = [\n  # the API server\n  \"reg.io/a:1\",\n  \"reg.io/b:2\", # trailing\n] # after\nx = 1\n";
        let mut doc: DocumentMut = text.parse().unwrap();
        let mut pins: Vec<ImagePin> =
            ["reg.io/a:1", "reg.io/b:2", "reg.io/c:3"].iter().map(|s| ImagePin::parse(s).unwrap()).collect();
        for p in &mut pins {
            p.digest = Some(d.clone());
        }
        write_array(&mut doc, &pins);
        let out = doc.to_string();
        assert!(out.contains(&format!("  # the API server\n  \"reg.io/a:1@{d}\",\n")), "{out}");
        // A comment after the last entry belongs to the array's end (toml_edit's
        // `trailing`), so it stays there, after the entries kiln adds.
        assert!(out.contains(&format!("\n  \"reg.io/c:3@{d}\", # trailing\n] # after\nx = 1\n")), "{out}");
        let mut empty: DocumentMut = "images = []\n".parse().unwrap();
        write_array(&mut empty, &pins[..1]);
        assert_eq!(empty.to_string(), format!("images = [\n  \"reg.io/a:1@{d}\",\n]\n"));
    }
}
