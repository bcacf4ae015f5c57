//! The images of a mirror directory: an OCI image layout at `DIR/oci/`
//! (OCI image-spec `image-layout.md`): `oci-layout`, `index.json` and
//! `blobs/sha256/<hex>`.
//!
//! `kiln mirror` ([`mirror_images`]) fetches every pinned image of the
//! profiles for each architecture they list (as `kiln build` does,
//! [`crate::inputs::images::fetch_images`]) and copies each blob from the
//! cache into `blobs/sha256/`, hashed again on the way (the artifacts' copy,
//! [`crate::inputs::mirror`]); `index.json` then names each image's index,
//! annotated as containerd's importer and the baked archive name images
//! (`io.containerd.image.name` = `name:tag`, `org.opencontainers.image.ref.name`
//! = the tag). Images already listed are kept (merged by name and digest),
//! so one directory serves several profiles.
//!
//! `kiln build --mirror DIR` reads blobs by digest from `DIR/oci/blobs`
//! (or `URL/oci/blobs/…` when the directory is served over HTTP); `kiln pin
//! --base-url DIR|URL` resolves `name:tag` through `index.json` ([`lookup`]).

use crate::error::{Error, IoContext, Result};
use crate::inputs::cache::Cache;
use crate::inputs::fetch::FetchOptions;
use crate::inputs::image_blobs::{Blob, FetchedImage};
use crate::inputs::image_source::LAYOUT_DIR;
use crate::inputs::images::{self, MAX_MANIFEST};
use crate::inputs::mirror::{self as files, Found, Item, MirrorOptions, Report, Status, Wanted};
use crate::inputs::profile::{Arch, Artifact, Install, Profile};
use crate::progress::Progress;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// `oci-layout`'s content (image-spec `image-layout.md`).
pub const OCI_LAYOUT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";
/// The annotation containerd's importer names an image by.
pub const NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The OCI annotation for the reference (the tag, as the baked archive writes it).
pub const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// One image in `index.json`: `name:tag`, its index descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// `name:tag`.
    pub reference: String,
    /// The image index digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its size.
    pub size: u64,
}

impl Listed {
    fn json(&self) -> Value {
        let tag = self.reference.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
        json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
            "annotations": { NAME_ANNOTATION: self.reference, REF_ANNOTATION: tag },
        })
    }
}

/// Parses a layout's `index.json`: each descriptor with a name annotation.
pub fn parse_index(text: &str, source: &str) -> Result<Vec<Listed>> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| Error::build(format!("{source}: not JSON ({e}); is it an OCI layout's index.json?")))?;
    let list = v
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::build(format!("{source}: no `manifests` array; is it an OCI layout's index.json?")))?;
    Ok(list
        .iter()
        .filter_map(|d| {
            Some(Listed {
                reference: d.pointer(&format!("/annotations/{NAME_ANNOTATION}"))?.as_str()?.to_string(),
                digest: d.get("digest")?.as_str()?.to_string(),
                media_type: d.get("mediaType").and_then(Value::as_str).unwrap_or(images::media::OCI_INDEX).to_string(),
                size: d.get("size")?.as_u64()?,
            })
        })
        .collect())
}

/// The digest `index.json` at `base` (a mirror directory or URL) lists for
/// `reference`; `None` when it lists none. Two different digests for one
/// reference are refused.
pub fn lookup(base: &str, reference: &str, opts: &FetchOptions, agent: &ureq::Agent) -> Result<Option<String>> {
    let text = read_index(base, opts, agent)?;
    let source = format!("{base}/{LAYOUT_DIR}/index.json");
    let found: Vec<String> =
        parse_index(&text, &source)?.into_iter().filter(|l| l.reference == reference).map(|l| l.digest).collect();
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        many => Err(Error::build(format!(
            "{source} lists {reference} with {} digests ({}); remove the stale one, or pin it by hand",
            many.len(),
            many.join(", ")
        ))),
    }
}

fn read_index(base: &str, opts: &FetchOptions, agent: &ureq::Agent) -> Result<String> {
    let url = format!("{}/{LAYOUT_DIR}/index.json", base.trim_end_matches('/'));
    if crate::inputs::fetch::is_http_url(base) {
        return crate::inputs::fetch::fetch_text_up_to(opts, agent, &url, MAX_MANIFEST, "an OCI layout's index.json");
    }
    let path = Path::new(base.strip_prefix("file://").unwrap_or(base)).join(LAYOUT_DIR).join("index.json");
    let mut text = String::new();
    crate::io::open_regular(&path).and_then(|f| f.take(MAX_MANIFEST).read_to_string(&mut text)).map_err(|e| {
        Error::build(format!("{}: {e}; fill the mirror with `kiln mirror PROFILE... --out DIR`", path.display()))
    })?;
    Ok(text)
}

/// A blob the mirror needs, as the artifact record the mirror's file copy reads.
fn wanted(b: &Blob, what: &str, image: &FetchedImage, arch: Arch, profile: &str) -> Wanted {
    let hex = b.digest.trim_start_matches("sha256:").to_string();
    let artifact = Artifact {
        name: image.reference.clone(),
        version: what.to_string(),
        arch,
        url: b.digest.clone(),
        sha256: hex.clone(),
        size: Some(b.size),
        dest: String::new(),
        mode: 0o644,
        install: Install::File { name: hex.clone() },
    };
    Wanted {
        artifact,
        rel: PathBuf::from(LAYOUT_DIR).join("blobs").join("sha256").join(hex),
        profiles: vec![profile.into()],
    }
}

/// `kiln mirror`: the artifacts ([`files::mirror`]), then the images
/// ([`mirror_images`]), in one report sorted by path. The images are tried
/// even when some artifacts failed; the error then names both.
pub fn mirror_all(profiles: &[Profile], opts: &MirrorOptions, progress: &Progress) -> Result<Report> {
    let archs = profiles
        .iter()
        .map(|p| Ok((p.name().to_string(), files::archs_of(p, &opts.archs)?)))
        .collect::<Result<BTreeMap<String, Vec<Arch>>>>()?;
    let artifacts = files::mirror(profiles, opts, progress);
    let (items, image_failure) = mirror_images(profiles, &archs, opts, progress)?;
    let mut report = match (artifacts, image_failure) {
        (Ok(r), None) => r,
        (Err(a), Some(b)) => {
            return Err(Error { kind: a.kind.max_severity(b.kind), message: format!("{}\n{}", a.message, b.message) })
        }
        (Err(e), None) | (Ok(_), Some(e)) => return Err(e),
    };
    report.files.extend(items);
    report.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(report)
}

/// Fills `opts.out/oci/` with the pinned images of `profiles` for the
/// architectures `archs` names for each, merging `index.json`. Returns one
/// [`Item`] per blob, and the error naming what could not be fetched.
pub fn mirror_images(
    profiles: &[Profile],
    archs: &BTreeMap<String, Vec<Arch>>,
    opts: &MirrorOptions,
    progress: &Progress,
) -> Result<(Vec<Item>, Option<Error>)> {
    let mut by_digest: BTreeMap<String, (Wanted, PathBuf)> = BTreeMap::new();
    let mut listed: Vec<Listed> = Vec::new();
    let mut errors: Vec<Error> = Vec::new();
    if profiles.iter().all(|p| crate::inputs::image_pins::pinned(p).is_empty()) {
        return Ok((Vec::new(), None));
    }
    let cache = Cache::open(opts.cache_dir.as_deref())?;
    for p in profiles {
        let pins = crate::inputs::image_pins::pinned(p);
        for arch in archs.get(p.name()).into_iter().flatten() {
            let got = match images::fetch_images(&cache, &opts.fetch, &pins, *arch, progress) {
                Ok(g) => g,
                Err(e) => {
                    errors.push(e.context(format!("{} ({arch})", p.name())));
                    continue;
                }
            };
            for img in &got {
                let parts = [("index", &img.index), ("manifest", &img.manifest), ("config", &img.config)];
                let layers = img.layers.iter().map(|l| ("layer", l));
                for (what, b) in parts.into_iter().chain(layers) {
                    let entry = by_digest
                        .entry(b.digest.clone())
                        .or_insert_with(|| (wanted(b, what, img, *arch, p.name()), b.path.clone()));
                    if !entry.0.profiles.iter().any(|n| n == p.name()) {
                        entry.0.profiles.push(p.name().to_string());
                    }
                }
                let l = Listed {
                    reference: img.reference.clone(),
                    digest: img.index.digest.clone(),
                    media_type: img.index.media_type.clone(),
                    size: img.index.size,
                };
                if !listed.contains(&l) {
                    listed.push(l);
                }
            }
        }
    }
    if by_digest.is_empty() && errors.is_empty() {
        return Ok((Vec::new(), None));
    }
    let mut items = Vec::with_capacity(by_digest.len());
    for (w, blob) in by_digest.values() {
        let status = match files::inspect(&opts.out, w)? {
            Found::Right(_) => Status::AlreadyPresent,
            found => {
                files::install(&opts.out, &w.rel, blob, &w.artifact, opts)?;
                if found == Found::Absent {
                    Status::Downloaded
                } else {
                    Status::Replaced
                }
            }
        };
        items.push(files::item(w, status, w.artifact.size.unwrap_or_default()));
    }
    write_index(&opts.out, listed)?;
    let error = (!errors.is_empty()).then(|| {
        let kind = errors.iter().fold(crate::error::Kind::Build, |k, e| k.max_severity(e.kind));
        Error { kind, message: errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>().join("\n") }
    });
    Ok((items, error))
}

/// Writes `oci-layout` (when absent) and `index.json`: what was there, plus `new`, sorted.
fn write_index(out: &Path, new: Vec<Listed>) -> Result<()> {
    let dir = out.join(LAYOUT_DIR);
    files::walk_parents(out, &PathBuf::from(LAYOUT_DIR).join("index.json"), true)?;
    let layout = dir.join("oci-layout");
    if std::fs::read_to_string(&layout).ok().as_deref() != Some(OCI_LAYOUT) {
        crate::io::write_atomic(&layout, OCI_LAYOUT.as_bytes(), 0o644)?;
    }
    let path = dir.join("index.json");
    let mut all = match std::fs::read_to_string(&path) {
        Ok(text) => parse_index(&text, &path.display().to_string())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).io_ctx(path.display()),
    };
    for l in new {
        if !all.contains(&l) {
            all.push(l);
        }
    }
    all.sort_by(|a, b| (&a.reference, &a.digest).cmp(&(&b.reference, &b.digest)));
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": images::media::OCI_INDEX,
        "manifests": all.iter().map(Listed::json).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| Error::build(e.to_string()))? + "\n";
    crate::io::write_atomic(&path, text.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_json_round_trips_and_merges() {
        let d = tempfile::tempdir().unwrap();
        let l = |r: &str, c: char| Listed {
            reference: r.into(),
            digest: format!("sha256:{}", c.to_string().repeat(64)),
            media_type: images::media::OCI_INDEX.into(),
            size: 3,
        };
        write_index(d.path(), vec![l("reg.io/b:1", 'b')]).unwrap();
        write_index(d.path(), vec![l("reg.io/a:2", 'a'), l("reg.io/b:1", 'b')]).unwrap();
        let text = std::fs::read_to_string(d.path().join("oci/index.json")).unwrap();
        assert_eq!(parse_index(&text, "x").unwrap(), [l("reg.io/a:2", 'a'), l("reg.io/b:1", 'b')]);
        assert!(text.contains(r#""org.opencontainers.image.ref.name": "2""#), "{text}");
        assert_eq!(std::fs::read_to_string(d.path().join("oci/oci-layout")).unwrap(), OCI_LAYOUT);
        let opts = FetchOptions::default();
        let agent = crate::inputs::fetch::agent(opts.timeout);
        let base = d.path().to_str().unwrap();
        assert_eq!(lookup(base, "reg.io/a:2", &opts, &agent).unwrap(), Some(l("", 'a').digest));
        assert_eq!(lookup(base, "reg.io/c:2", &opts, &agent).unwrap(), None);
        write_index(d.path(), vec![l("reg.io/a:2", 'c')]).unwrap();
        assert!(lookup(base, "reg.io/a:2", &opts, &agent).unwrap_err().message.contains("2 digests"));
    }
}
