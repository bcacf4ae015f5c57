//! Container images as a build has them once fetched: every blob a file named
//! by its digest, and per image its index, one architecture's manifest, config
//! and layers ([`Image`], the fields of kiln's `FetchedImage`).
//!
//! [`unpack`] reads them out of a `tests/k8s/images` archive (the real programs;
//! index.json -> image index -> manifest -> config, layers); [`synthetic`] makes a
//! small valid image without any program; [`reindex`] puts manifests of several
//! architectures under one new image index (a multi-arch image whose other
//! platforms' blobs a build never fetches). Panics on anything unexpected: it
//! reads only what the tests themselves made.

use crate::standin::sha256;
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The OCI media types the kit writes (image-spec `media-types.md`).
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// An image manifest.
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// An image config.
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// An uncompressed layer.
pub const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// One blob, stored as `DIR/<hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Media type, as the descriptor naming it says.
    pub media_type: String,
    /// Bytes.
    pub size: u64,
    /// The file.
    pub path: PathBuf,
}

/// One image for one architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `name:tag`.
    pub reference: String,
    /// The image index (its digest is the pin).
    pub index: Blob,
    /// The architecture's manifest.
    pub manifest: Blob,
    /// Its config.
    pub config: Blob,
    /// Its layers.
    pub layers: Vec<Blob>,
}

impl Image {
    /// `name:tag@sha256:<index digest>`, as a profile pins it.
    pub fn pinned(&self) -> String {
        format!("{}@{}", self.reference, self.index.digest)
    }

    /// The `name` of `name:tag`.
    pub fn repository(&self) -> &str {
        let slash = self.reference.rfind('/').map_or(0, |i| i + 1);
        match self.reference[slash..].rfind(':') {
            Some(i) => &self.reference[..slash + i],
            None => &self.reference,
        }
    }
}

/// Writes `bytes` as a blob of `media_type` into `dir`.
pub fn put(dir: &Path, bytes: &[u8], media_type: &str) -> Blob {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let hex = sha256(bytes);
    let path = dir.join(&hex);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Blob { digest: format!("sha256:{hex}"), media_type: media_type.into(), size: bytes.len() as u64, path }
}

fn json_blob(dir: &Path, v: &Value, media_type: &str) -> Blob {
    put(dir, &serde_json::to_vec(v).unwrap_or_default(), media_type)
}

fn descriptor(b: &Blob) -> Value {
    json!({"mediaType": b.media_type, "digest": b.digest, "size": b.size})
}

/// A small valid image of `reference` for linux/`arch`: one uncompressed layer
/// holding `/hello` (whose text is `seed`), its config, manifest and an index
/// naming that one platform. Blobs go to `dir`.
pub fn synthetic(dir: &Path, reference: &str, arch: &str, seed: &str) -> Image {
    let mut layer = tar::Builder::new(Vec::new());
    let body = format!("hello from {reference} {seed}\n");
    let mut h = tar::Header::new_ustar();
    h.set_path("hello").unwrap_or_else(|e| panic!("{e}"));
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    layer.append(&h, body.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let layer = put(dir, &layer.into_inner().unwrap_or_default(), LAYER);
    let config = json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
    });
    let config = json_blob(dir, &config, CONFIG);
    let manifest = json!({"schemaVersion": 2, "mediaType": MANIFEST, "config": descriptor(&config), "layers": [descriptor(&layer)]});
    let manifest = json_blob(dir, &manifest, MANIFEST);
    let index = index_of(dir, &[(&manifest, arch)]);
    Image { reference: reference.into(), index, manifest, config, layers: vec![layer] }
}

/// An image index naming each `(manifest, arch)` for linux/arch (arm64 as variant v8).
pub fn index_of(dir: &Path, manifests: &[(&Blob, &str)]) -> Blob {
    let list: Vec<Value> = manifests
        .iter()
        .map(|(m, arch)| {
            let mut d = descriptor(m);
            d["platform"] = match *arch {
                "arm64" => json!({"architecture": "arm64", "os": "linux", "variant": "v8"}),
                a => json!({"architecture": a, "os": "linux"}),
            };
            d
        })
        .collect();
    json_blob(dir, &json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": list}), INDEX)
}

/// A manifest for linux/`arch` whose config and layer are nowhere: what a
/// multi-arch index names for a platform a build does not fetch.
pub fn absent_manifest(dir: &Path, arch: &str) -> Blob {
    let ghost = |what: &str, mt: &str| json!({"mediaType": mt, "digest": format!("sha256:{}", sha256(format!("absent {arch} {what}").as_bytes())), "size": 1234});
    let m = json!({"schemaVersion": 2, "mediaType": MANIFEST, "config": ghost("config", CONFIG), "layers": [ghost("layer", LAYER)]});
    json_blob(dir, &m, MANIFEST)
}

/// `image` under a new index naming its manifest (for `arch`) and `others`
/// (each `(manifest, arch)`): a multi-arch image; only `image`'s own blobs exist.
pub fn reindex(dir: &Path, image: &Image, arch: &str, others: &[(&Blob, &str)]) -> Image {
    let mut all = vec![(&image.manifest, arch)];
    all.extend_from_slice(others);
    Image { index: index_of(dir, &all), ..image.clone() }
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blob_of(dir: &Path, d: &Value) -> Blob {
    let digest = d["digest"].as_str().unwrap_or_else(|| panic!("descriptor without digest: {d}")).to_string();
    let path = dir.join(digest.trim_start_matches("sha256:"));
    let size = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{digest}: {} {e}", path.display())).len();
    assert_eq!(Some(size), d["size"].as_u64(), "{digest}: size");
    Blob { digest, media_type: d["mediaType"].as_str().unwrap_or_default().into(), size, path }
}

/// Unpacks a `tests/k8s/images` archive (or any OCI layout tar) into `dir` and
/// returns its images: each descriptor of index.json named by a tag
/// (`io.containerd.image.name` without `@`), with the linux/`arch` manifest of its index.
pub fn unpack(archive: &Path, dir: &Path, arch: &str) -> Vec<Image> {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let f = std::fs::File::open(archive).unwrap_or_else(|e| panic!("{}: {e}", archive.display()));
    let mut index_json = Value::Null;
    for e in tar::Archive::new(f).entries().unwrap_or_else(|e| panic!("{}: {e}", archive.display())) {
        let mut e = e.unwrap_or_else(|e| panic!("{}: {e}", archive.display()));
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = e.path().map(|p| p.display().to_string()).unwrap_or_default();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap_or_else(|err| panic!("{name}: {err}"));
        if name == "index.json" {
            index_json = serde_json::from_slice(&bytes).unwrap_or_else(|err| panic!("{name}: {err}"));
        } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            assert_eq!(sha256(&bytes), hex, "{}: {name}", archive.display());
            std::fs::write(dir.join(hex), &bytes).unwrap_or_else(|err| panic!("{hex}: {err}"));
        }
    }
    let descriptors = index_json["manifests"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for d in descriptors {
        let Some(reference) = d["annotations"]["io.containerd.image.name"].as_str().filter(|r| !r.contains('@')) else {
            continue;
        };
        let index = blob_of(dir, &d);
        let manifests = read_json(&index.path)["manifests"].as_array().cloned().unwrap_or_default();
        let m = manifests
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .unwrap_or_else(|| panic!("{reference}: no {arch} manifest in {}", index.digest));
        let manifest = blob_of(dir, m);
        let doc = read_json(&manifest.path);
        let config = blob_of(dir, &doc["config"]);
        let layers = doc["layers"].as_array().cloned().unwrap_or_default().iter().map(|l| blob_of(dir, l)).collect();
        out.push(Image { reference: reference.into(), index, manifest, config, layers });
    }
    out
}
