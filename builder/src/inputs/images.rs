//! Fetching the profile's pinned container images for one architecture
//! ([`fetch_images`]): every blob by digest, verified while it streams, into
//! the content cache (`sha256/<hex>`, shared with the artifacts).
//!
//! For each image: the image index the pin names (`GET
//! /v2/<name>/manifests/sha256:…`; its sha256 must be the pin), the
//! `linux/<arch>` manifest it lists ([`select`]), that manifest by digest,
//! its config and its layers by digest (`GET /v2/<name>/blobs/sha256:…`).
//! Every blob is hashed as it is written to the cache's `tmp/` and renamed
//! into place only when its sha256 is the digest that named it; a body is
//! read up to its descriptor's size (the pinned index, whose size nothing
//! records, up to [`MAX_MANIFEST`]) and no further; a `Content-Length` other
//! than the descriptor's size is refused before a byte is read; every blob
//! has the fetch options' deadline over all its attempts. Indexes, manifests
//! and configs are fetched first (small); then the layers not yet cached,
//! each distinct digest once, on `--jobs` threads. A mismatch anywhere fails
//! the build with exit 3 and caches nothing of the blob that failed.
//!
//! Sources ([`crate::inputs::image_source`]): the image's registry, or
//! `--registry-mirror URL` (a registry), or `--mirror DIR|URL`'s OCI image
//! layout (`DIR/oci/`, which `kiln mirror` fills); `--offline` reads the cache
//! (and a mirror) only.

use crate::error::{Error, Kind, Result};
use crate::hash;
use crate::inputs::cache::{Cache, Entry};
use crate::inputs::fetch::{self, Attempt, Bounded, Cause, FetchOptions};
use crate::inputs::image_blobs::{Blob, FetchedImage};
use crate::inputs::image_ref::ImagePin;
use crate::inputs::image_source::{Origin, Source, What, NOT_FOUND};
use crate::inputs::profile::Arch;
use crate::progress::{human_bytes, Progress};
use serde::Deserialize;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The largest index, manifest or config read: containerd's own cap on a
/// manifest (`MaxManifestSize`, 4 MiB, containerd v2.1.5
/// `core/remotes/docker/resolver.go`); an index of every platform is a few KiB.
pub const MAX_MANIFEST: u64 = 4 << 20;

/// The most bytes one architecture's images may take together: 8 GiB.
/// kubeadm's images for a control plane are about 300 MB, a CNI's a few
/// hundred more; the cap stops a hostile manifest naming thousands of
/// layers from filling the cache's disk before the first byte is verified.
pub const MAX_TOTAL: u64 = 8 << 30;

/// OCI image-spec media types (`media-types.md`) and Docker's equivalents.
pub mod media {
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// Docker image manifest v2 schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
}

/// A content descriptor (OCI image-spec `descriptor.md`).
#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    /// Media type of what it names.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// For an index entry: its platform.
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// An index entry's platform (OCI image-spec `image-index.md`).
#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `linux`, …
    pub os: String,
    /// `v8` for arm64, …
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// `os/architecture[/variant]`.
    pub fn show(&self) -> String {
        match self.variant.as_deref() {
            Some(v) if !v.is_empty() => format!("{}/{}/{v}", self.os, self.architecture),
            _ => format!("{}/{}", self.os, self.architecture),
        }
    }
}

/// An index or a manifest: the fields kiln reads.
#[derive(Debug, Clone, Deserialize)]
struct Document {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// Whether an index entry's platform is `linux/<arch>`: the variant is none
/// or the one containerd normalises to none (`platforms/database.go`,
/// `normalizeArch`: `arm64` `v8` or `8`, `amd64` `v1`); `arm` takes `v7`.
pub fn matches(p: &Platform, arch: Arch) -> bool {
    let variant = p.variant.as_deref().unwrap_or("");
    let ok_variant = match arch {
        Arch::Arm64 => matches!(variant, "" | "v8" | "8"),
        Arch::Amd64 => matches!(variant, "" | "v1"),
        Arch::Arm => matches!(variant, "" | "v7" | "7"),
    };
    p.os == "linux" && p.architecture == arch.as_str() && ok_variant
}

/// The `linux/<arch>` manifest of an index (the first one, in index order, as
/// containerd takes the first of equally good matches), or the platforms it has.
pub fn select(manifests: &[Descriptor], arch: Arch) -> std::result::Result<&Descriptor, Vec<String>> {
    manifests.iter().find(|d| d.platform.as_ref().is_some_and(|p| matches(p, arch))).ok_or_else(|| {
        let mut have: Vec<String> =
            manifests.iter().map(|d| d.platform.as_ref().map_or("no platform".into(), Platform::show)).collect();
        have.dedup();
        have
    })
}

/// Whether `d` is `sha256:` and 64 lowercase hex digits (go-digest's rule).
fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// What is fetched and from where, for the whole run.
struct Ctx<'a> {
    cache: &'a Cache,
    opts: &'a FetchOptions,
    progress: &'a Progress,
    arch: Arch,
    /// Blobs fetched (not found in the cache) and their bytes.
    fetched: Mutex<(usize, u64)>,
}

/// One blob to have in the cache: its digest, size when known, media type, and a label.
struct Want<'a> {
    what: What,
    digest: &'a str,
    size: Option<u64>,
    label: String,
}

/// Fetches every image of `images` (pinned: each has a digest) for `arch`
/// into `cache`, and returns each one's verified blobs, in input order.
/// When some cannot be fetched, the others still are, and one error names
/// each failure: exit 3 when a byte contradicted a digest, 2 when a pinned
/// image has no `linux/<arch>` build or is not an image, 1 otherwise.
pub fn fetch_images(
    cache: &Cache,
    opts: &FetchOptions,
    images: &[ImagePin],
    arch: Arch,
    progress: &Progress,
) -> Result<Vec<FetchedImage>> {
    if images.is_empty() {
        return Ok(Vec::new());
    }
    let started = Instant::now();
    let agent = fetch::agent(opts.timeout);
    let ctx = Ctx { cache, opts, progress, arch, fetched: Mutex::new((0, 0)) };
    let sources: Vec<Source> = images.iter().map(|i| Source::new(Origin::of(i, opts), &agent, opts)).collect();
    let mut errors: Vec<Error> = Vec::new();
    let mut planned: Vec<Option<FetchedImage>> = Vec::new();
    for (pin, src) in images.iter().zip(&sources) {
        match plan_image(&ctx, pin, src) {
            Ok(p) => planned.push(Some(p)),
            Err(e) => {
                errors.push(e);
                planned.push(None);
            }
        }
    }
    let total: u64 = distinct_layers(&planned).iter().map(|(_, l)| l.size).sum();
    if total > MAX_TOTAL {
        return Err(Error::build(format!(
            "the images for {arch} name {} of layers, more than kiln's cap of {}; is every image in `images` meant to be there?",
            human_bytes(total),
            human_bytes(MAX_TOTAL)
        )));
    }
    errors.extend(fetch_layers(&ctx, &planned, &sources));
    if !errors.is_empty() {
        return Err(report(errors, opts));
    }
    let (n, bytes) = ctx.fetched.lock().map(|g| *g).unwrap_or_default();
    progress.step(format!(
        "images ({arch}): {} image(s), {} blob(s) ({}) fetched in {:.1} s, the rest from the cache {}",
        images.len(),
        n,
        human_bytes(bytes),
        started.elapsed().as_secs_f64(),
        cache.root().display()
    ));
    planned.into_iter().map(|p| p.ok_or_else(|| Error::build("an image vanished while fetching (kiln bug)"))).collect()
}

/// Index, manifest and config of one image, in the cache and checked; its
/// layers listed (their `path` is where they will be once fetched).
fn plan_image(ctx: &Ctx, pin: &ImagePin, src: &Source) -> Result<FetchedImage> {
    let reference = pin.reference();
    let arch = ctx.arch;
    let name = |what: &str| format!("{reference} ({arch}) {what}");
    let digest =
        pin.digest.as_deref().ok_or_else(|| Error::config(format!("{reference} has no digest; run `kiln pin`")))?;
    let want = Want { what: What::Manifest, digest, size: None, label: name("index") };
    let (index_path, index_bytes) = small(ctx, src, &want)?;
    let doc = parse(&index_bytes, &name("index"))?;
    let index_type = doc.media_type.clone().unwrap_or_else(|| media::OCI_INDEX.to_string());
    let index =
        Blob { digest: digest.to_string(), media_type: index_type, size: index_bytes.len() as u64, path: index_path };
    let (manifest, doc) = match &doc.manifests {
        Some(list) => {
            let d = select(list, arch).map_err(|have| {
                Error::config(format!(
                    "{reference}: its image index {digest} has no linux/{arch} manifest (it has {}); pick an image built for {arch}, or drop {arch} from the profile's architectures",
                    have.join(", ")
                ))
            })?;
            check_descriptor(d, &name("manifest"), ctx.opts)?;
            let want = Want { what: What::Manifest, digest: &d.digest, size: Some(d.size), label: name("manifest") };
            let (path, bytes) = small(ctx, src, &want)?;
            let m = parse(&bytes, &name("manifest"))?;
            if let (Some(own), false) = (&m.media_type, d.media_type.is_empty()) {
                if *own != d.media_type {
                    return Err(Error::verify(format!(
                        "{}: the index names media type {} but the manifest says {own}; the image is inconsistent: re-pin it with `kiln pin` after checking it",
                        name("manifest"),
                        d.media_type
                    )));
                }
            }
            let media_type = m.media_type.clone().unwrap_or_else(|| d.media_type.clone());
            (Blob { digest: d.digest.clone(), media_type, size: d.size, path }, m)
        }
        // A single-platform image pinned by its manifest: index and manifest are one blob.
        None => (index.clone(), doc),
    };
    let (Some(config), Some(layers)) = (&doc.config, &doc.layers) else {
        return Err(Error::config(format!(
            "{}: neither an image index nor an image manifest; is `{reference}` a container image?",
            name("manifest")
        )));
    };
    check_descriptor(config, &name("config"), ctx.opts)?;
    let want = Want { what: What::Blob, digest: &config.digest, size: Some(config.size), label: name("config") };
    let (config_path, config_bytes) = small(ctx, src, &want)?;
    check_config_platform(&config_bytes, arch, &name("config"))?;
    let config = blob_of(config, config_path);
    let mut out = Vec::with_capacity(layers.len());
    for l in layers {
        check_descriptor(l, &name("layer"), ctx.opts)?;
        out.push(blob_of(l, ctx.cache.blob_path(&l.digest["sha256:".len()..])));
    }
    Ok(FetchedImage { reference, index, manifest, config, layers: out })
}

fn blob_of(d: &Descriptor, path: std::path::PathBuf) -> Blob {
    Blob { digest: d.digest.clone(), media_type: d.media_type.clone(), size: d.size, path }
}

/// A descriptor kiln can fetch: sha256, within the per-blob cap.
fn check_descriptor(d: &Descriptor, label: &str, opts: &FetchOptions) -> Result<()> {
    if !is_sha256_digest(&d.digest) {
        return Err(Error::config(format!(
            "{label}: digest `{}` is not sha256: and 64 lowercase hex digits; kiln verifies sha256 only",
            fetch::printable(&d.digest)
        )));
    }
    if d.size > opts.max_size {
        return Err(Error::build(format!(
            "{label} {}: its descriptor says {} bytes, more than kiln's cap of {} for one blob",
            d.digest, d.size, opts.max_size
        )));
    }
    Ok(())
}

/// The config's `os`/`architecture` must be the platform the index chose.
fn check_config_platform(bytes: &[u8], arch: Arch, label: &str) -> Result<()> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::config(format!("{label}: not JSON ({e}); is it an image config?")))?;
    let got = (v.get("os").and_then(|x| x.as_str()), v.get("architecture").and_then(|x| x.as_str()));
    match got {
        (Some("linux"), Some(a)) if a == arch.as_str() => Ok(()),
        (os, a) => Err(Error::config(format!(
            "{label}: the image's config says {}/{}, not linux/{arch}; the image is mislabelled: pick another",
            os.unwrap_or("?"),
            a.unwrap_or("?")
        ))),
    }
}

fn parse(bytes: &[u8], label: &str) -> Result<Document> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::config(format!("{label}: not an OCI index or manifest ({e}); is the pinned digest an image's?"))
    })
}

/// Has a small blob (index, manifest, config) in the cache and returns its bytes.
fn small(ctx: &Ctx, src: &Source, want: &Want) -> Result<(std::path::PathBuf, Vec<u8>)> {
    let path = ensure(ctx, src, want).map_err(|c| cause_error(want, src, c, ctx.opts))?;
    let mut bytes = Vec::new();
    crate::io::open_regular(&path)
        .and_then(|f| f.take(MAX_MANIFEST + 1).read_to_end(&mut bytes))
        .map_err(|e| Error::build(format!("{}: {e}", path.display())))?;
    Ok((path, bytes))
}

/// The layers of every planned image, each digest once, with the image that names it first.
fn distinct_layers(planned: &[Option<FetchedImage>]) -> Vec<(usize, &Blob)> {
    let mut out: Vec<(usize, &Blob)> = Vec::new();
    for (i, img) in planned.iter().enumerate() {
        for l in img.iter().flat_map(|p| &p.layers) {
            if !out.iter().any(|(_, b)| b.digest == l.digest) {
                out.push((i, l));
            }
        }
    }
    out
}

/// Fetches every layer on `jobs` threads; returns an error per layer that failed.
fn fetch_layers(ctx: &Ctx, planned: &[Option<FetchedImage>], sources: &[Source]) -> Vec<Error> {
    let todo = distinct_layers(planned);
    let queue = Mutex::new(todo.into_iter());
    let errors: Mutex<Vec<Error>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..ctx.opts.jobs.max(1) {
            s.spawn(|| loop {
                let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
                let Some((i, layer)) = next else { break };
                let reference = planned[i].as_ref().map(|p| p.reference.as_str()).unwrap_or_default();
                let want = Want {
                    what: What::Blob,
                    digest: &layer.digest,
                    size: Some(layer.size),
                    label: format!("{reference} ({}) layer", ctx.arch),
                };
                if let Err(c) = ensure(ctx, &sources[i], &want) {
                    if let Ok(mut all) = errors.lock() {
                        all.push(cause_error(&want, &sources[i], c, ctx.opts));
                    }
                }
            });
        }
    });
    errors.into_inner().unwrap_or_default()
}

/// The blob in the cache (hashed again unless its stamp holds), else fetched.
fn ensure(ctx: &Ctx, src: &Source, want: &Want) -> std::result::Result<std::path::PathBuf, Cause> {
    let hex = &want.digest["sha256:".len()..];
    match ctx.cache.check(hex).map_err(|e| Cause::Failed(e.message))? {
        Entry::Valid(path, _) => return Ok(path),
        Entry::Corrupt(actual) => ctx.progress.warn(format!(
            "cached {} {} was corrupt (sha256 {actual}); removed it, fetching it again",
            want.label, want.digest
        )),
        Entry::Missing => {}
    }
    let deadline = Instant::now() + ctx.opts.deadline;
    let start = Instant::now();
    let warn = |cause: &str, attempt: u32, most: u32, delay: Duration| {
        ctx.progress.warn(format!(
            "{}: {cause}; retrying in {:.1} s (attempt {attempt} of {most})",
            want.label,
            delay.as_secs_f64()
        ))
    };
    let (path, n) = fetch::retry(ctx.opts, deadline, warn, || download(ctx, src, want, deadline))?;
    if let Ok(mut f) = ctx.fetched.lock() {
        f.0 += 1;
        f.1 += n;
    }
    ctx.progress.detail(format!(
        "fetched {} {}: {} in {:.1} s from {}",
        want.label,
        &want.digest[..19],
        human_bytes(n),
        start.elapsed().as_secs_f64(),
        src.location(want.what, want.digest)
    ));
    Ok(path)
}

/// One attempt: stream the body into `tmp/`, hashing it, bounded by the
/// descriptor's size (or [`MAX_MANIFEST`]) and the deadline; commit it
/// under its digest when the sha256 matches.
fn download(
    ctx: &Ctx,
    src: &Source,
    want: &Want,
    deadline: Instant,
) -> std::result::Result<(std::path::PathBuf, u64), Attempt> {
    let body = src.open(want.what, want.digest, deadline)?;
    let from = body.from.clone();
    let limit = want.size.unwrap_or(MAX_MANIFEST);
    if let (Some(len), Some(size)) = (body.length, want.size) {
        if len != size {
            return Err(Attempt::Final(Cause::Mismatch(format!(
                "{} {}: {from} declares Content-Length {len}, but the descriptor says {size} bytes; nothing was cached",
                want.label, want.digest
            ))));
        }
    }
    if want.size.is_none() && body.length.is_some_and(|n| n > limit) {
        return Err(Attempt::Final(too_large(want, &from, limit)));
    }
    let bar = ctx.progress.bar(&want.label, want.size.or(body.length));
    let tmp = ctx.cache.tmp_path("image-blob");
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| Attempt::Final(Cause::Failed(format!("{}: {e}", tmp.display()))))?;
        let mut out = BufWriter::new(file);
        let mut reader = Bounded { inner: body.reader, read: 0, limit, deadline: Some(deadline) };
        let (n, sha) = hash::copy_hashed(&mut reader, &mut out, |k| bar.inc(k)).map_err(|e| match e.kind() {
            _ if fetch::is_too_large(&e) => Attempt::Final(too_large(want, &from, limit)),
            io::ErrorKind::UnexpectedEof => {
                Attempt::Transient(format!("truncated body from {from}: {} bytes", reader.read))
            }
            _ => Attempt::Transient(format!("reading {from}: {e}")),
        })?;
        out.flush().map_err(|e| Attempt::Final(Cause::Failed(format!("{}: {e}", tmp.display()))))?;
        if let Some(size) = want.size {
            if n != size {
                return Err(Attempt::Transient(format!("truncated body from {from}: {n} of {size} bytes")));
            }
        }
        if format!("sha256:{sha}") != want.digest {
            return Err(Attempt::Final(Cause::Mismatch(format!(
                "checksum mismatch for {}: {from}\n  expected {}\n  actual   sha256:{sha}\nnothing was cached or written; if the image really changed, review it and re-pin with `kiln pin PROFILE`",
                want.label, want.digest
            ))));
        }
        let path = ctx.cache.commit(&tmp, &sha).map_err(|e| Attempt::Final(Cause::Failed(e.message)))?;
        Ok((path, n))
    })();
    bar.finish_and_clear();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn too_large(want: &Want, from: &str, limit: u64) -> Cause {
    match want.size {
        Some(size) => Cause::Mismatch(format!(
            "{} {}: {from} sent more than the descriptor's {size} bytes; nothing was cached",
            want.label, want.digest
        )),
        None => Cause::Failed(format!("{from}: more than {limit} bytes; not an image index")),
    }
}

/// The error for a blob that could not be had.
fn cause_error(want: &Want, src: &Source, cause: Cause, opts: &FetchOptions) -> Error {
    let at = src.location(want.what, want.digest);
    match cause {
        Cause::Mismatch(m) => Error::verify(m),
        Cause::NotFound => {
            Error::build(format!("{} {}: {at}: {NOT_FOUND}{}", want.label, want.digest, where_next(opts)))
        }
        Cause::Failed(m) if m.starts_with(NOT_FOUND) => {
            Error::build(format!("{} {}: {at}: {m}{}", want.label, want.digest, where_next(opts)))
        }
        Cause::Failed(m) => Error::build(format!("{} {}: {at}: {m}", want.label, want.digest)),
    }
}

/// What to do when a blob is missing where kiln looked.
fn where_next(opts: &FetchOptions) -> &'static str {
    match (&opts.mirror, &opts.registry_mirror) {
        (_, Some(_)) => "; the registry mirror lacks it: copy the image there",
        (Some(_), None) => "; the mirror lacks it: `kiln mirror PROFILE... --out DIR` fills its oci/ layout",
        (None, None) => "; does the image still exist? re-pin it with `kiln pin PROFILE`",
    }
}

/// One error for every image failure: verification failures first (exit 3),
/// then profile problems (exit 2), then the rest (exit 1).
fn report(mut errors: Vec<Error>, opts: &FetchOptions) -> Error {
    let rank = |k: Kind| match k {
        Kind::Verify => 0,
        Kind::Config => 1,
        Kind::Build => 2,
    };
    errors.sort_by_key(|e| rank(e.kind));
    let kind = errors.iter().fold(Kind::Build, |k, e| k.max_severity(e.kind));
    let mut lines: Vec<String> = errors.iter().map(|e| e.message.clone()).collect();
    if opts.offline && opts.mirror.is_none() && opts.registry_mirror.is_none() {
        lines.push("--offline reads the cache only: fetch the images once without --offline, or pass --mirror DIR (`kiln mirror PROFILE... --out DIR` fills one where the registries are reachable)".into());
    }
    Error { kind, message: format!("{} image blob(s) could not be fetched:\n{}", errors.len(), lines.join("\n")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(platform: Option<(&str, &str, Option<&str>)>) -> Descriptor {
        Descriptor {
            media_type: media::OCI_MANIFEST.into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 1,
            platform: platform.map(|(os, a, v)| Platform {
                os: os.into(),
                architecture: a.into(),
                variant: v.map(str::to_string),
            }),
        }
    }

    #[test]
    fn the_platform_is_linux_and_the_arch_with_its_normal_variant() {
        let list = [
            d(Some(("linux", "amd64", None))),
            d(Some(("linux", "arm", Some("v7")))),
            d(Some(("linux", "arm64", Some("v8")))),
            d(Some(("unknown", "unknown", None))),
        ];
        assert!(std::ptr::eq(select(&list, Arch::Arm64).unwrap(), &list[2]));
        assert!(std::ptr::eq(select(&list, Arch::Amd64).unwrap(), &list[0]));
        let only_v9 = [d(Some(("linux", "arm64", Some("v9")))), d(Some(("windows", "arm64", None))), d(None)];
        assert_eq!(select(&only_v9, Arch::Arm64).unwrap_err(), ["linux/arm64/v9", "windows/arm64", "no platform"]);
        assert!(matches(
            &Platform { os: "linux".into(), architecture: "amd64".into(), variant: Some("v1".into()) },
            Arch::Amd64
        ));
        assert!(!matches(
            &Platform { os: "linux".into(), architecture: "amd64".into(), variant: Some("v3".into()) },
            Arch::Amd64
        ));
    }

    #[test]
    fn digests_are_sha256_lowercase() {
        assert!(is_sha256_digest(&format!("sha256:{}", "0f".repeat(32))));
        for bad in [
            "sha256:ABC",
            "sha512:00",
            "",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}/..", "a".repeat(62)),
        ] {
            assert!(!is_sha256_digest(bad), "{bad}");
        }
    }
}
