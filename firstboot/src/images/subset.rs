//! Part of the baked archive: the images one node runs, as an archive of its own,
//! streamed to `ctr images import -` (containerd v2.1.5 `cmd/ctr/commands/images/import.go`
//! reads the archive from stdin when it is `-`).
//!
//! A worker runs no control-plane image, and importing one costs it minutes of disk
//! and CPU on an SD card (each byte stored twice: the content store and unpacked).
//! The archive is the plain ustar tar `kiln build` writes
//! (`builder/src/outputs/oci_layout.rs`): `blobs/sha256/<hex>` members, `index.json`,
//! `oci-layout`. [`Subset::plan`] walks its headers (seeking past every body), keeps
//! the `index.json` descriptors that name a kept image and every blob they reach
//! (index → manifests → config and layers, where the archive has them); [`Subset::write`]
//! copies those members byte for byte, with the shorter `index.json`. Read by hand
//! rather than with the `tar` crate: kiln-firstboot's dependencies stay few
//! (`tests/dependencies.allow`), and anything but kiln's own ustar members is refused
//! as damage.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// A tar block.
const BLOCK: u64 = 512;
/// The most members an archive may have (kiln's has a few per image layer).
const MAX_MEMBERS: usize = 100_000;
/// The largest `index.json`, image index or manifest read into memory.
const MAX_JSON: u64 = 4 << 20;
/// How deep descriptors may nest (an index of indexes of manifests is as deep as
/// image-spec `image-index.md` allows in practice).
const MAX_DEPTH: usize = 4;
/// containerd `core/images/annotations.go` `AnnotationImageName`.
const IMAGE_NAME: &str = "io.containerd.image.name";

/// One regular file of the archive: where its header starts, how long its body
/// is, and the header.
#[derive(Debug, Clone, Copy)]
struct Member {
    at: u64,
    size: u64,
    header: [u8; 512],
}

/// The members one node's images need, planned from the archive's headers.
#[derive(Debug)]
pub struct Subset {
    file: File,
    /// Members copied as they are, in archive order (kept blobs and `oci-layout`).
    copied: Vec<Member>,
    /// `index.json`'s header (its size and checksum rewritten) and its new body.
    index_header: [u8; 512],
    index: Vec<u8>,
    /// Bytes of the blobs kept: what ctr imports.
    pub bytes: u64,
}

fn damaged(what: impl std::fmt::Display) -> String {
    format!("the archive is damaged: {what}")
}

/// The NUL-terminated field `b`.
fn field(b: &[u8]) -> &[u8] {
    b.iter().position(|&c| c == 0).map_or(b, |n| &b[..n])
}

/// An octal number field (ustar: digits, then NUL or space).
fn octal(b: &[u8]) -> Option<u64> {
    let t = std::str::from_utf8(field(b)).ok()?.trim_matches(|c| c == ' ' || c == '\0');
    u64::from_str_radix(t, 8).ok()
}

/// The header checksum: the header's bytes summed with the checksum field as spaces.
fn checksum(h: &[u8; 512]) -> u64 {
    h.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u64::from(b) }).sum()
}

/// The archive's members by name, each checked: a ustar header with a valid
/// checksum, a regular file, a body inside the file.
fn members(file: &mut File) -> Result<BTreeMap<String, Member>, String> {
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut by_name = BTreeMap::new();
    let (mut at, mut seen) = (0u64, 0usize);
    loop {
        seen += 1;
        if seen > MAX_MEMBERS {
            return Err(damaged(format!("more than {MAX_MEMBERS} members")));
        }
        let mut h = [0u8; 512];
        file.seek(SeekFrom::Start(at))
            .and_then(|_| file.read_exact(&mut h))
            .map_err(|e| damaged(format!("no tar header at byte {at}: {e}")))?;
        if h.iter().all(|&b| b == 0) {
            break;
        }
        if octal(&h[148..156]) != Some(checksum(&h)) {
            return Err(damaged(format!("the tar header at byte {at} has a wrong checksum")));
        }
        // Regular files, and directories (other writers' archives carry `blobs/`;
        // containerd's importer skips them, and so does the part).
        let dir = h[156] == b'5';
        if !(h[156] == b'0' || h[156] == 0 || dir) || &h[257..262] != b"ustar" {
            return Err(damaged(format!(
                "the member at byte {at} is not a plain ustar file or directory (kiln writes only those)"
            )));
        }
        let name = String::from_utf8(field(&h[..100]).to_vec()).map_err(|_| damaged("a member name is not UTF-8"))?;
        if !field(&h[345..500]).is_empty() {
            return Err(damaged(format!("{name}: a ustar name prefix (kiln's names are short)")));
        }
        let size = octal(&h[124..136]).ok_or_else(|| damaged(format!("{name}: no size")))?;
        let next = (at + BLOCK).checked_add(size.div_ceil(BLOCK) * BLOCK).filter(|&n| n <= len);
        let next = next.ok_or_else(|| damaged(format!("{name} ({size} bytes) runs past the end of the file")))?;
        if !dir && by_name.insert(name.clone(), Member { at, size, header: h }).is_some() {
            return Err(damaged(format!("{name} is in the archive twice")));
        }
        at = next;
    }
    Ok(by_name)
}

fn read_json(file: &mut File, m: Member, name: &str) -> Result<serde_json::Value, String> {
    if m.size > MAX_JSON {
        return Err(damaged(format!("{name} is {} bytes, more than the {MAX_JSON} a JSON document may be", m.size)));
    }
    let mut body = vec![0u8; usize::try_from(m.size).map_err(|e| e.to_string())?];
    file.seek(SeekFrom::Start(m.at + BLOCK))
        .and_then(|_| file.read_exact(&mut body))
        .map_err(|e| damaged(format!("{name}: {e}")))?;
    serde_json::from_slice(&body).map_err(|e| damaged(format!("{name} is not JSON: {e}")))
}

fn blob_name(digest: &str) -> Option<String> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("blobs/sha256/{hex}"))
}

/// The digests a descriptor's blob names: an index's manifests, a manifest's config
/// and layers (image-spec `image-index.md`, `manifest.md`; Docker's list and
/// manifest types alike).
fn children(doc: &serde_json::Value) -> Vec<(String, String)> {
    let one = |d: &serde_json::Value| {
        let digest = d["digest"].as_str()?.to_string();
        Some((digest, d["mediaType"].as_str().unwrap_or_default().to_string()))
    };
    let list = |k: &str| doc[k].as_array().map(|a| a.iter().filter_map(one).collect::<Vec<_>>()).unwrap_or_default();
    let mut out = list("manifests");
    out.extend(one(&doc["config"]));
    out.extend(list("layers"));
    out
}

fn walks_further(media_type: &str) -> bool {
    media_type.ends_with("image.index.v1+json")
        || media_type.ends_with("image.manifest.v1+json")
        || media_type.ends_with("manifest.list.v2+json")
        || media_type.ends_with("distribution.manifest.v2+json")
}

impl Subset {
    /// Plans the part of `archive` whose images `keep` names (each an
    /// `io.containerd.image.name` of `index.json`: `name:tag` or `name@sha256:…`).
    pub fn plan(archive: &Path, keep: &BTreeSet<String>) -> Result<Subset, String> {
        let mut file = File::open(archive).map_err(|e| format!("cannot open it: {e}"))?;
        let members = members(&mut file)?;
        let (Some(&index_m), Some(&layout_m)) = (members.get("index.json"), members.get("oci-layout")) else {
            return Err(damaged("it has no index.json or no oci-layout"));
        };
        let mut index = read_json(&mut file, index_m, "index.json")?;
        let all = index["manifests"].as_array().cloned().ok_or_else(|| damaged("index.json has no manifests"))?;
        let descriptors: Vec<serde_json::Value> = all
            .iter()
            .filter(|d| d["annotations"][IMAGE_NAME].as_str().is_some_and(|n| keep.contains(n)))
            .cloned()
            .collect();
        // Every blob the kept descriptors reach, where the archive has it (an image
        // index names the other architectures' manifests, which kiln leaves out).
        let mut need: BTreeSet<String> = BTreeSet::new();
        let mut todo: Vec<(String, String, usize)> = descriptors
            .iter()
            .filter_map(|d| {
                Some((d["digest"].as_str()?.to_string(), d["mediaType"].as_str().unwrap_or_default().to_string(), 0))
            })
            .collect();
        while let Some((digest, media_type, depth)) = todo.pop() {
            let name =
                blob_name(&digest).ok_or_else(|| damaged(format!("the digest {digest:?} is not sha256:<64 hex>")))?;
            let Some(&m) = members.get(&name) else { continue };
            if !need.insert(name.clone()) || !walks_further(&media_type) {
                continue;
            }
            if depth >= MAX_DEPTH {
                return Err(damaged(format!("{name}: descriptors nest deeper than {MAX_DEPTH}")));
            }
            let doc = read_json(&mut file, m, &name)?;
            todo.extend(children(&doc).into_iter().map(|(d, t)| (d, t, depth + 1)));
        }
        index["manifests"] = serde_json::Value::Array(descriptors);
        let index = serde_json::to_vec(&index).map_err(|e| e.to_string())?;
        let mut index_header = index_m.header;
        let size = format!("{:011o}\0", index.len());
        index_header[124..136].copy_from_slice(size.as_bytes());
        let sum = format!("{:06o}\0 ", checksum(&index_header));
        index_header[148..156].copy_from_slice(sum.as_bytes());
        let bytes = members.iter().filter(|(n, _)| need.contains(*n)).map(|(_, m)| m.size).sum();
        let mut copied: Vec<Member> =
            members.iter().filter(|(n, _)| need.contains(*n)).map(|(_, m)| *m).chain([layout_m]).collect();
        copied.sort_by_key(|m| m.at);
        Ok(Subset { file, copied, index_header, index, bytes })
    }

    /// Writes the planned archive to `out`: the kept members byte for byte, the new
    /// `index.json`, the two zero blocks that end a tar.
    pub fn write(mut self, out: &mut dyn Write) -> io::Result<()> {
        for m in &self.copied {
            self.file.seek(SeekFrom::Start(m.at))?;
            let len = BLOCK + m.size.div_ceil(BLOCK) * BLOCK;
            let copied = io::copy(&mut (&mut self.file).take(len), out)?;
            if copied != len {
                return Err(io::Error::other(format!("the archive ended {} bytes early", len - copied)));
            }
        }
        out.write_all(&self.index_header)?;
        out.write_all(&self.index)?;
        // The index's padding to a block, then the two zero blocks.
        let pad = (512 - self.index.len() % 512) % 512;
        out.write_all(&[0u8; 3 * 512][..pad + 2 * 512])?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ustar member as kiln's builder writes one (mode 0644, uid/gid 0, mtime 0).
    fn member(name: &str, body: &[u8]) -> Vec<u8> {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", body.len()).as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum = format!("{:06o}\0 ", checksum(&h));
        h[148..156].copy_from_slice(sum.as_bytes());
        let mut out = h.to_vec();
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    /// Two images, `a` (index 1 → manifest 2 → config 3, layer 4) and `b` (index 5 →
    /// manifest 6 → config 7, layer 4 shared, layer 8), each named twice in index.json.
    fn archive(dir: &Path) -> std::path::PathBuf {
        let idx = |m: char| {
            format!(
                r#"{{"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}"}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}"}}]}}"#,
                digest(m),
                digest('9')
            )
        };
        let man = |c: char, layers: &[char]| {
            let l: Vec<String> = layers
                .iter()
                .map(|x| {
                    format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}"}}"#, digest(*x))
                })
                .collect();
            format!(
                r#"{{"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}"}},"layers":[{}]}}"#,
                digest(c),
                l.join(",")
            )
        };
        let name = |c: char| format!("blobs/sha256/{}", c.to_string().repeat(64));
        let d = |c: char, n: &str| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{}","size":1,"annotations":{{"io.containerd.image.name":"{n}"}}}}"#,
                digest(c)
            )
        };
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{},{},{},{}]}}"#,
            d('1', "r/a:1"),
            d('5', "r/b:1"),
            d('1', &format!("r/a@{}", digest('1'))),
            d('5', &format!("r/b@{}", digest('5')))
        );
        let mut tar = Vec::new();
        for (c, body) in [
            ('1', idx('2')),
            ('2', man('3', &['4'])),
            ('3', "{}".into()),
            ('4', "x".repeat(1000)),
            ('5', idx('6')),
            ('6', man('7', &['4', '8'])),
            ('7', "{}".into()),
            ('8', "y".repeat(3000)),
        ] {
            tar.extend(member(&name(c), body.as_bytes()));
        }
        tar.extend(member("index.json", index.as_bytes()));
        tar.extend(member("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#));
        tar.extend([0u8; 1024]);
        let p = dir.join("images.oci.tar");
        std::fs::write(&p, tar).unwrap();
        p
    }

    fn names(tar: &[u8], dir: &Path) -> (Vec<String>, serde_json::Value) {
        let p = dir.join("out.tar");
        std::fs::write(&p, tar).unwrap();
        let mut f = File::open(&p).unwrap();
        let m = members(&mut f).unwrap();
        let index = read_json(&mut f, m["index.json"], "index.json").unwrap();
        (m.keys().map(|k| k.chars().take(14).collect()).collect(), index)
    }

    #[test]
    fn keeps_the_named_images_and_every_blob_they_reach() {
        let dir = tempfile::tempdir().unwrap();
        let a = archive(dir.path());
        let keep: BTreeSet<String> = ["r/b:1".to_string(), format!("r/b@{}", digest('5'))].into();
        let s = Subset::plan(&a, &keep).unwrap();
        let all: u64 = members(&mut File::open(&a).unwrap())
            .unwrap()
            .iter()
            .filter(|(n, _)| n.starts_with("blobs/"))
            .map(|(_, m)| m.size)
            .sum();
        // Kept: both layers (4000 bytes) and b's small blobs; left: a's index,
        // manifest and config, a few hundred bytes.
        assert!(s.bytes > 4000 && all - s.bytes < 1000, "{} of {all}", s.bytes);
        let mut out = Vec::new();
        s.write(&mut out).unwrap();
        let (names, index) = names(&out, dir.path());
        let hex: Vec<String> = names.iter().filter_map(|n| n.strip_prefix("blobs/sha256/")).map(String::from).collect();
        // b's index, manifest, config, both layers (4 shared with a); nothing of a's.
        assert_eq!(hex, ["4", "5", "6", "7", "8"]);
        assert!(names.contains(&"index.json".into()) && names.contains(&"oci-layout".into()));
        let kept: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["annotations"][IMAGE_NAME].as_str().unwrap())
            .collect();
        assert_eq!(kept, ["r/b:1", &format!("r/b@{}", digest('5'))]);
        assert_eq!(index["schemaVersion"], 2);
    }

    #[test]
    fn damage_is_refused_with_where() {
        let dir = tempfile::tempdir().unwrap();
        let a = archive(dir.path());
        let good = std::fs::read(&a).unwrap();
        let keep: BTreeSet<String> = ["r/a:1".to_string()].into();
        let mut bad = good.clone();
        bad[20] ^= 1; // inside the first header's name: its checksum no longer holds
        std::fs::write(&a, &bad).unwrap();
        let e = Subset::plan(&a, &keep).unwrap_err();
        assert!(e.contains("wrong checksum"), "{e}");
        std::fs::write(&a, &good[..good.len() - 2048]).unwrap();
        let e = Subset::plan(&a, &keep).unwrap_err();
        assert!(e.contains("damaged"), "{e}");
    }
}
