//! The OCI image archive `kiln build` bakes into every image that pins its
//! cluster's container images (`images` in the profile; issue 23's contract C2):
//! one OCI image layout (image-spec `image-layout.md`) as a plain uncompressed
//! tar, which `ctr -n k8s.io images import` reads at first boot.
//!
//! ```text
//! blobs/sha256/<hex>   each image's index (verbatim: its digest is the pin), and for
//!                      the built architecture only its manifest, config and layers
//! index.json           one descriptor per image, in profile order: the image's index,
//!                      named io.containerd.image.name = "name:tag" and
//!                      org.opencontainers.image.ref.name = "tag"; then, in the same
//!                      order, one more per image naming the same index
//!                      io.containerd.image.name = "name@sha256:<index digest>"
//! oci-layout           {"imageLayoutVersion":"1.0.0"}
//! ```
//!
//! containerd's importer (v2.1.5 `core/images/archive/importer.go`) stores every
//! regular file of the tar as a blob under its own digest and takes `index.json` as
//! the root; the client walks it with the node's platform matcher
//! (`client/import.go`, `images.FilterPlatforms`), so the other architectures'
//! manifests an index names are never read (`builder/tests/oci_layout.rs` holds
//! this against the real containerd). The names a descriptor carries become the
//! image names (`imageName`: `io.containerd.image.name` first).
//!
//! The bytes are the same on every rebuild: entries sorted by name, ustar headers
//! with mtime = the epoch, uid/gid 0, no user or group names, mode 0644, no
//! directory entries; JSON with a fixed key order and no whitespace. The archive
//! is never held in memory: it is one [`Content::Generated`] entry of the image
//! tree, streamed from the verified blobs in the cache by each writer, every blob
//! hashed as it is packed (a byte that differs from its digest fails the build,
//! exit 3, before anything reaches the output directory).

use crate::error::{Error, Result};
use crate::hash;
use crate::image::tree::{Content, Entry, Generate, Generated, Origin, Tree};
use crate::inputs::image_blobs::{Blob, FetchedImage};
use crate::inputs::profile::Profile;
use serde::Serialize;
use sha2::Digest;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;

/// Where the archive is in every format but a sysext.
pub const ARCHIVE_PATH: &str = "/opt/kiln/images/images.oci.tar";
/// Where the archive is in a systemd-sysext image (which carries only `/usr`).
pub const SYSEXT_ARCHIVE_PATH: &str = "/usr/share/kiln/images/images.oci.tar";
/// The archive's file mode.
pub const MODE: u32 = 0o644;

/// image-spec `media-types.md`: the media type of `index.json`.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// containerd `core/images/annotations.go` `AnnotationImageName`: the name
/// `ctr images import` gives the image a descriptor points at.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// image-spec `annotations.md` `org.opencontainers.image.ref.name`: the tag.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// image-spec `image-layout.md`: the `oci-layout` file and the version it names
/// (containerd's importer refuses any other: `ocispec.ImageLayoutVersion`).
const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_VERSION: &str = "1.0.0";
/// A tar block (POSIX ustar); an archive ends with two zero blocks.
const BLOCK: u64 = 512;

/// What one archive member holds.
#[derive(Debug)]
enum Body {
    /// kiln's own JSON (`index.json`, `oci-layout`).
    Inline(Vec<u8>),
    /// A verified blob in the cache, and the image that named it (for errors).
    Blob(Blob, String),
}

/// One regular file of the archive.
#[derive(Debug)]
struct Member {
    name: String,
    size: u64,
    header: [u8; 512],
    body: Body,
}

/// The archive of a list of fetched images: its members in order, streamed on demand.
#[derive(Debug)]
pub struct Archive {
    members: Vec<Member>,
}

#[derive(Serialize)]
struct Index<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    manifests: Vec<Descriptor<'a>>,
}

#[derive(Serialize)]
struct Descriptor<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    digest: &'a str,
    size: u64,
    annotations: BTreeMap<&'a str, &'a str>,
}

/// The tag of `name:tag` (the `:` after the last `/`), if it has one.
pub fn tag_of(reference: &str) -> Option<&str> {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    last.rsplit_once(':').map(|(_, t)| t).filter(|t| !t.is_empty())
}

/// Refuses a blob whose digest could not name a file under `blobs/sha256/`.
fn check_blob(image: &str, b: &Blob) -> Result<()> {
    let ok =
        b.digest.strip_prefix("sha256:").is_some_and(|h| hash::is_sha256_hex(h) && !h.contains(char::is_uppercase));
    if !ok {
        return Err(Error::build(format!(
            "image {image}: blob digest `{}` is not sha256:<64 lowercase hex> (kiln bug: the fetch verified it)",
            b.digest
        )));
    }
    Ok(())
}

/// The ustar header of a member `name` of `size` bytes.
fn header(name: &str, size: u64, epoch: u64) -> Result<[u8; 512]> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).map_err(|e| Error::build(format!("image archive member {name}: {e}")))?;
    h.set_size(size);
    h.set_mode(MODE);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(epoch);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(*h.as_bytes())
}

/// `name:tag@sha256:<index digest>`: how the profile and `image.toml` pin an image.
pub fn pinned(image: &FetchedImage) -> String {
    format!("{}@{}", image.reference, image.index.digest)
}

impl Archive {
    /// The archive of `images` (in profile order) with every mtime = `epoch`.
    /// A reference without a tag, a repeated reference or a malformed digest
    /// is refused (the profile's checks and the fetch refuse them first).
    pub fn new(images: &[FetchedImage], epoch: u64) -> Result<Archive> {
        let mut blobs: BTreeMap<String, Member> = BTreeMap::new();
        let mut descriptors = Vec::with_capacity(2 * images.len());
        let mut digest_names = Vec::with_capacity(images.len());
        for (n, img) in images.iter().enumerate() {
            let r = img.reference.as_str();
            let tag = tag_of(r).ok_or_else(|| Error::build(format!("image `{r}` has no tag (kiln bug)")))?;
            if images[..n].iter().any(|o| o.reference == img.reference) {
                return Err(Error::build(format!("image `{r}` is listed twice (kiln bug)")));
            }
            for b in [&img.index, &img.manifest, &img.config].into_iter().chain(&img.layers) {
                check_blob(r, b)?;
                let name = format!("blobs/sha256/{}", &b.digest["sha256:".len()..]);
                if let std::collections::btree_map::Entry::Vacant(slot) = blobs.entry(name) {
                    let header = header(slot.key(), b.size, epoch)?;
                    let (name, size, body) = (slot.key().clone(), b.size, Body::Blob(b.clone(), r.to_string()));
                    slot.insert(Member { name, size, header, body });
                }
            }
            let named = |annotations| Descriptor {
                media_type: &img.index.media_type,
                digest: &img.index.digest,
                size: img.index.size,
                annotations,
            };
            descriptors.push(named(BTreeMap::from([(ANNOTATION_IMAGE_NAME, r), (ANNOTATION_REF_NAME, tag)])));
            digest_names.push(format!("{}@{}", &r[..r.len() - tag.len() - 1], img.index.digest));
        }
        // The digest reference of each image (`name@sha256:<index digest>`), as a pull
        // leaves it: containerd's CRI plugin takes an image's repo digests only from
        // such names (v2.1.5 internal/cri/util ParseImageReferences), so without it
        // `crictl images --digests` shows none.
        for (img, name) in images.iter().zip(&digest_names) {
            descriptors.push(Descriptor {
                media_type: &img.index.media_type,
                digest: &img.index.digest,
                size: img.index.size,
                annotations: BTreeMap::from([(ANNOTATION_IMAGE_NAME, name.as_str())]),
            });
        }
        let index = Index { schema_version: 2, media_type: INDEX_MEDIA_TYPE, manifests: descriptors };
        let index = serde_json::to_vec(&index).map_err(|e| Error::build(format!("index.json: {e}")))?;
        let layout = format!("{{\"imageLayoutVersion\":\"{LAYOUT_VERSION}\"}}").into_bytes();
        let mut members: Vec<Member> = blobs.into_values().collect();
        for (name, bytes) in [("index.json", index), (LAYOUT_FILE, layout)] {
            let size = bytes.len() as u64;
            members.push(Member {
                name: name.to_string(),
                size,
                header: header(name, size, epoch)?,
                body: Body::Inline(bytes),
            });
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Archive { members })
    }

    /// The archive's size in bytes: a header and the padded content per
    /// member, then two zero blocks.
    pub fn size(&self) -> u64 {
        self.members.iter().map(|m| BLOCK + m.size.div_ceil(BLOCK) * BLOCK).sum::<u64>() + 2 * BLOCK
    }

    /// The member names, in archive order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.name.as_str())
    }
}

impl Generate for Archive {
    fn open(self: Arc<Self>) -> Box<dyn Read + Send> {
        Box::new(Stream { archive: self, at: 0, pending: Vec::new(), pos: 0, blob: None, ended: false })
    }
}

/// A blob being packed: its file, what is left of it, and its running hash.
struct Reading {
    file: File,
    left: u64,
    size: u64,
    hasher: sha2::Sha256,
    digest: String,
    path: PathBuf,
    image: String,
}

/// The archive's bytes, produced as they are read.
struct Stream {
    archive: Arc<Archive>,
    /// The next member to start.
    at: usize,
    /// Bytes to hand out before anything else (a header, inline content, padding).
    pending: Vec<u8>,
    pos: usize,
    blob: Option<Reading>,
    ended: bool,
}

/// An error of a blob that is not what its digest says: exit 3.
fn blob_error(image: &str, digest: &str, path: &std::path::Path, what: &str) -> io::Error {
    io::Error::other(Error::verify(format!(
        "image {image}: blob {digest} in the cache ({}) {what}; nothing was written; build again (the blob is checked and fetched again)",
        path.display()
    )))
}

/// The zero bytes that pad `size` bytes of content to a whole block.
fn padding(size: u64) -> Vec<u8> {
    vec![0; (size.div_ceil(BLOCK) * BLOCK - size) as usize]
}

impl Stream {
    /// Starts the next member (or the end blocks); false when nothing is left.
    fn next_member(&mut self) -> io::Result<bool> {
        let archive = Arc::clone(&self.archive);
        let Some(m) = archive.members.get(self.at) else {
            if self.ended {
                return Ok(false);
            }
            self.ended = true;
            self.pending = vec![0; 2 * BLOCK as usize];
            self.pos = 0;
            return Ok(true);
        };
        self.at += 1;
        self.pending = m.header.to_vec();
        self.pos = 0;
        match &m.body {
            Body::Inline(b) => {
                self.pending.extend_from_slice(b);
                self.pending.extend(padding(m.size));
            }
            Body::Blob(b, image) => {
                let (digest, path) = (&b.digest, &b.path);
                let file = crate::io::open_regular(path)
                    .map_err(|e| blob_error(image, digest, path, &format!("cannot be read: {e}")))?;
                let on_disk = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
                if on_disk != b.size {
                    return Err(blob_error(image, digest, path, &format!("has {on_disk} bytes, not {}", b.size)));
                }
                self.blob = Some(Reading {
                    file,
                    left: b.size,
                    size: b.size,
                    hasher: sha2::Sha256::new(),
                    digest: digest.clone(),
                    path: path.clone(),
                    image: image.clone(),
                });
            }
        }
        Ok(true)
    }

    /// Reads from the blob being packed; at its end checks its digest and queues the padding.
    fn read_blob(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let Some(b) = self.blob.as_mut() else { return Ok(None) };
        if b.left == 0 {
            let mut one = [0u8; 1];
            if b.file.read(&mut one)? != 0 {
                return Err(blob_error(&b.image, &b.digest, &b.path, &format!("grew past {} bytes", b.size)));
            }
            let got = format!("sha256:{}", hash::hex(&std::mem::take(&mut b.hasher).finalize()));
            if got != b.digest {
                return Err(blob_error(&b.image, &b.digest, &b.path, &format!("hashes to {got}")));
            }
            self.pending = padding(b.size);
            self.pos = 0;
            self.blob = None;
            return Ok(None);
        }
        let room = usize::try_from(b.left).unwrap_or(usize::MAX).min(buf.len());
        let n = b.file.read(&mut buf[..room])?;
        if n == 0 {
            let read = b.size - b.left;
            return Err(blob_error(&b.image, &b.digest, &b.path, &format!("ended after {read} of {} bytes", b.size)));
        }
        b.hasher.update(&buf[..n]);
        b.left -= n as u64;
        Ok(Some(n))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos < self.pending.len() {
                let n = (self.pending.len() - self.pos).min(buf.len());
                buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if let Some(n) = self.read_blob(buf)? {
                return Ok(n);
            }
            if self.pos < self.pending.len() {
                continue;
            }
            if !self.next_member()? {
                return Ok(0);
            }
        }
    }
}

/// The archive of `images` as a generated file: its size and sha256 fixed now
/// by streaming it once, which also checks every blob against its digest.
pub fn generated(images: &[FetchedImage], epoch: u64) -> Result<Generated> {
    let archive = Arc::new(Archive::new(images, epoch)?);
    let size = archive.size();
    let mut stream = Arc::clone(&archive).open();
    let (n, sha256) = hash::copy_hashed(&mut stream, &mut io::sink(), |_| {}).map_err(|e| {
        match e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
            Some(k) => k.clone(),
            None => Error::build(format!("the image archive: {e}")),
        }
    })?;
    if n != size {
        return Err(Error::build(format!("the image archive has {n} bytes, planned {size} (kiln bug)")));
    }
    Ok(Generated { size, sha256, source: archive })
}

/// The archive's tree entry.
fn entry(content: Content) -> Entry {
    Entry::file(content, MODE, Origin::Images)
}

/// Adds the archive of `images` at [`ARCHIVE_PATH`] (`kiln build`), after
/// checking they are the profile's `images`, in its order; nothing when the
/// profile pins none.
pub fn add(tree: &mut Tree, profile: &Profile, images: &[FetchedImage], epoch: u64) -> Result<()> {
    let want = profile.images();
    let have: Vec<String> = images.iter().map(pinned).collect();
    if want != have {
        return Err(Error::build(format!(
            "the images fetched ({}) are not the profile's ({}) (kiln bug)",
            have.join(", "),
            want.join(", ")
        )));
    }
    if images.is_empty() {
        return Ok(());
    }
    tree.insert(ARCHIVE_PATH, entry(Content::Generated(generated(images, epoch)?)), false)
}

/// Adds the archive's placeholder (`kiln check`: its path, mode and origin,
/// no bytes), when the profile pins images.
pub fn add_declared(tree: &mut Tree, profile: &Profile) -> Result<()> {
    if profile.images().is_empty() {
        return Ok(());
    }
    tree.insert(ARCHIVE_PATH, entry(Content::Inline(Vec::new())), false)
}

/// One image as `manifest.json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ImageRecord {
    /// `name:tag`.
    pub reference: String,
    /// The image index's digest (the pin).
    pub index_digest: String,
    /// The built architecture's manifest digest.
    pub manifest_digest: String,
    /// Its config digest.
    pub config_digest: String,
    /// Its layers' digests, in order.
    pub layer_digests: Vec<String>,
    /// Bytes of the index, manifest, config and layers together.
    pub size: u64,
}

impl ImageRecord {
    /// The record of `image`.
    pub fn of(image: &FetchedImage) -> ImageRecord {
        ImageRecord {
            reference: image.reference.clone(),
            index_digest: image.index.digest.clone(),
            manifest_digest: image.manifest.digest.clone(),
            config_digest: image.config.digest.clone(),
            layer_digests: image.layers.iter().map(|l| l.digest.clone()).collect(),
            size: [&image.index, &image.manifest, &image.config].into_iter().chain(&image.layers).map(|b| b.size).sum(),
        }
    }
}

/// The image archive of one architecture ([`crate::outputs::oci_layout`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ImagesSection {
    /// The archive: where each format carries it, its sha256 and size.
    pub archive: ArchiveRecord,
    /// The images in it, in profile order.
    pub images: Vec<ImageRecord>,
}

/// The image archive file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ArchiveRecord {
    /// Its path in the tarball, the card and a `files` mode Ignition install.
    pub path: String,
    /// Its path in the systemd-sysext image.
    pub sysext_path: String,
    /// sha256 of the archive.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// `manifest.json`'s record of the archive in `tree` (built from `images`),
/// if it has one.
pub fn manifest_section(tree: &Tree, images: &[FetchedImage]) -> Option<ImagesSection> {
    use crate::image::tree::Node;
    let Node::File(Content::Generated(g)) = &tree.get(ARCHIVE_PATH)?.node else { return None };
    Some(ImagesSection {
        archive: ArchiveRecord {
            path: ARCHIVE_PATH.into(),
            sysext_path: SYSEXT_ARCHIVE_PATH.into(),
            sha256: g.sha256.clone(),
            size: g.size,
        },
        images: images.iter().map(ImageRecord::of).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(dir: &std::path::Path, bytes: &[u8], media_type: &str) -> Blob {
        let digest = format!("sha256:{}", hash::sha256_hex(bytes));
        let path = dir.join(&digest[7..]);
        std::fs::write(&path, bytes).unwrap();
        Blob { digest, media_type: media_type.into(), size: bytes.len() as u64, path }
    }

    fn image(dir: &std::path::Path, reference: &str, seed: &[u8]) -> FetchedImage {
        let layer = blob(dir, &[seed, b"-layer"].concat(), "application/vnd.oci.image.layer.v1.tar");
        FetchedImage {
            reference: reference.into(),
            index: blob(dir, &[seed, b"-index"].concat(), "application/vnd.oci.image.index.v1+json"),
            manifest: blob(dir, &[seed, b"-manifest"].concat(), "application/vnd.oci.image.manifest.v1+json"),
            config: blob(dir, &[seed, b"-config"].concat(), "application/vnd.oci.image.config.v1+json"),
            layers: vec![layer],
        }
    }

    fn read_all(g: &Generated) -> std::result::Result<Vec<u8>, io::Error> {
        let mut out = Vec::new();
        Arc::clone(&g.source).open().read_to_end(&mut out).map(|_| out)
    }

    #[test]
    fn the_archive_is_a_sorted_tar_whose_size_and_digest_are_planned() {
        let dir = tempfile::tempdir().unwrap();
        let imgs = [image(dir.path(), "registry.k8s.io/pause:3.10.1", b"p"), image(dir.path(), "r.io/a/b:v1", b"b")];
        let g = generated(&imgs, 1_700_000_000).unwrap();
        let bytes = read_all(&g).unwrap();
        assert_eq!(bytes.len() as u64, g.size);
        assert_eq!(hash::sha256_hex(&bytes), g.sha256);
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header();
            assert_eq!((h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap()), (0o644, 0, 0));
            assert_eq!(h.mtime().unwrap(), 1_700_000_000);
            assert_eq!(h.username().unwrap(), Some(""));
            let name = e.path().unwrap().display().to_string();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                assert_eq!(hash::sha256_hex(&body), hex);
            }
            if name == "index.json" {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["manifests"][1]["annotations"][ANNOTATION_IMAGE_NAME], "r.io/a/b:v1");
                assert_eq!(v["manifests"][1]["annotations"][ANNOTATION_REF_NAME], "v1");
                assert_eq!(v["manifests"][0]["digest"], imgs[0].index.digest.as_str());
            }
            names.push(name);
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names.len(), 2 * 4 + 2);
        assert_eq!(names.last().map(String::as_str), Some("oci-layout"));
    }

    #[test]
    fn a_changed_blob_fails_with_exit_3_naming_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let imgs = [image(dir.path(), "r.io/x:v1", b"x")];
        let g = generated(&imgs, 0).unwrap();
        // Same size, other bytes: only the hash sees it.
        std::fs::write(&imgs[0].layers[0].path, b"y-layer").unwrap();
        let e = read_all(&g).unwrap_err();
        let k = e.get_ref().and_then(|i| i.downcast_ref::<Error>()).unwrap();
        assert_eq!(k.kind, crate::error::Kind::Verify);
        assert!(k.message.contains("r.io/x:v1") && k.message.contains(&imgs[0].layers[0].digest), "{}", k.message);
        assert_eq!(generated(&imgs, 0).unwrap_err().kind, crate::error::Kind::Verify);
        // Shorter: refused before a byte of it is packed.
        std::fs::write(&imgs[0].layers[0].path, b"y").unwrap();
        assert!(generated(&imgs, 0).unwrap_err().message.contains("has 1 bytes, not 7"));
    }

    #[test]
    fn shared_blobs_are_packed_once_and_bad_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = image(dir.path(), "r.io/a:v1", b"a");
        let mut b = image(dir.path(), "r.io/b:v1", b"b");
        b.layers = a.layers.clone();
        let ar = Archive::new(&[a.clone(), b.clone()], 0).unwrap();
        assert_eq!(ar.names().filter(|n| n.starts_with("blobs/")).count(), 7);
        assert!(Archive::new(&[a.clone(), a.clone()], 0).is_err());
        let mut bad = a.clone();
        bad.layers[0].digest = "sha256:../../etc/passwd".into();
        assert!(Archive::new(&[bad], 0).unwrap_err().message.contains("not sha256"));
        let mut untagged = a;
        untagged.reference = "localhost:5000/a".into();
        assert!(Archive::new(&[untagged], 0).unwrap_err().message.contains("no tag"));
        assert_eq!(tag_of("localhost:5000/a:v2"), Some("v2"));
    }
}
