//! Block maps in bmaptool's XML format 2.0: which blocks of a sparse image
//! hold data, with a sha256 per range, so `bmaptool copy` (and `kiln flash`)
//! write only those blocks and verify them.
//!
//! The format is bmap-tools' own (yoctoproject/bmaptool,
//! `src/bmaptool/BmapCreate.py`, `SUPPORTED_BMAP_VERSION = "2.0"`):
//!
//! ```xml
//! <?xml version="1.0" ?>
//! <bmap version="2.0">
//!     <ImageSize> 12288 </ImageSize>
//!     <BlockSize> 4096 </BlockSize>
//!     <BlocksCount> 3 </BlocksCount>
//!     <MappedBlocksCount> 2 </MappedBlocksCount>
//!     <ChecksumType> sha256 </ChecksumType>
//!     <BmapFileChecksum> …64 hex… </BmapFileChecksum>
//!     <BlockMap>
//!         <Range chksum="…64 hex…"> 0-1 </Range>
//!     </BlockMap>
//! </bmap>
//! ```
//!
//! * `BlocksCount` is `ceil(ImageSize / BlockSize)`; a range `first-last` is
//!   inclusive, a single block is written `first`.
//! * A range's `chksum` covers its bytes, the last block cut at `ImageSize`
//!   (BmapCopy.py hashes what it reads, and reads stop at the end of the image).
//! * `BmapFileChecksum` is the sha256 of the whole file with its own value
//!   replaced by 64 ASCII `0` (BmapCreate.py `_bmap_file_end`, verified in
//!   BmapCopy.py `_verify_bmap_checksum`).
//!
//! Mapped ranges come from `lseek(SEEK_DATA/SEEK_HOLE)`: what the filesystem
//! stores, rounded out to whole blocks (bmaptool's `Filemap.FilemapSeek` does
//! the same when FIEMAP is not used) — plus, unlike `bmaptool create`, every
//! block of the image's partition table and file-system structures and every
//! allocated cluster/block, zero or not ([`super::fsmap`]): bmaptool writes
//! only mapped ranges, so a hole there would keep a used card's old bytes.
//!
//! [`Bmap::parse`] reads a file through `roxmltree` and holds it to the plain
//! markup bmaptool writes; [`Bmap::to_xml`] writes one by hand, byte for byte
//! what bmaptool 3.x writes for the same ranges.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::hash::hex;

/// The block size kiln writes bmaps with (bytes). bmaptool takes any block
/// size from the file; 4 KiB matches ext4's and the page cache's.
pub const BLOCK_SIZE: u64 = 4096;

/// The bmap format version kiln writes and reads (major 2: sha256 checksums).
pub const VERSION: &str = "2.0";

/// A block map: the image's size, its block size, and its mapped ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    /// Size of the image in bytes (`ImageSize`).
    pub image_size: u64,
    /// Block size in bytes (`BlockSize`).
    pub block_size: u64,
    /// Mapped block ranges in ascending order, non-overlapping.
    pub ranges: Vec<BmapRange>,
}

/// One mapped range of blocks, inclusive at both ends, with its sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmapRange {
    /// First block of the range.
    pub first: u64,
    /// Last block of the range (inclusive).
    pub last: u64,
    /// sha256 (lowercase hex) of the range's bytes, cut at the image size.
    pub sha256: String,
}

impl BmapRange {
    /// Byte offset and length of this range in an image of `image_size`
    /// bytes with blocks of `block_size` bytes (the last block cut at the end).
    pub fn byte_span(&self, block_size: u64, image_size: u64) -> (u64, u64) {
        let start = self.first.saturating_mul(block_size);
        let end = self.last.saturating_add(1).saturating_mul(block_size).min(image_size);
        (start, end.saturating_sub(start))
    }
}

impl Bmap {
    /// Number of blocks in the image (`BlocksCount`).
    pub fn blocks_count(&self) -> u64 {
        self.image_size.div_ceil(self.block_size.max(1))
    }

    /// Number of mapped blocks (`MappedBlocksCount`).
    pub fn mapped_blocks(&self) -> u64 {
        self.ranges.iter().map(|r| r.last - r.first + 1).sum()
    }

    /// Byte offset and length of `range` in this image.
    pub fn byte_span(&self, range: &BmapRange) -> (u64, u64) {
        range.byte_span(self.block_size, self.image_size)
    }

    /// The bmap file's text, byte for byte what bmaptool 3.x writes for the
    /// same ranges (comments included), with `BmapFileChecksum` filled in.
    pub fn to_xml(&self) -> String {
        let text = self.xml_with_checksum(&"0".repeat(64));
        let sum = hex(&Sha256::digest(text.as_bytes()));
        self.xml_with_checksum(&sum)
    }

    fn xml_with_checksum(&self, checksum: &str) -> String {
        let blocks = self.blocks_count();
        let mapped = self.mapped_blocks();
        let percent = if blocks == 0 { 0.0 } else { mapped as f64 * 100.0 / blocks as f64 };
        let mut x = String::new();
        x.push_str("<?xml version=\"1.0\" ?>\n");
        x.push_str(
            "<!-- This file contains the block map for an image file: the blocks\n     \
             which hold data and have to be copied to the target device. Written by\n     \
             kiln in bmaptool's format 2.0 (bmaptool copy IMAGE DEVICE reads it). -->\n\n",
        );
        let _ = writeln!(x, "<bmap version=\"{VERSION}\">");
        let _ = writeln!(x, "    <!-- Image size in bytes: {} -->", human_size(self.image_size));
        let _ = writeln!(x, "    <ImageSize> {} </ImageSize>\n", self.image_size);
        x.push_str("    <!-- Size of a block in bytes -->\n");
        let _ = writeln!(x, "    <BlockSize> {} </BlockSize>\n", self.block_size);
        x.push_str("    <!-- Count of blocks in the image file -->\n");
        let _ = writeln!(x, "    <BlocksCount> {blocks} </BlocksCount>\n");
        let _ = writeln!(
            x,
            "    <!-- Count of mapped blocks: {} or {percent:.1}% -->",
            human_size(mapped * self.block_size)
        );
        let _ = writeln!(x, "    <MappedBlocksCount> {mapped} </MappedBlocksCount>\n");
        x.push_str("    <!-- Type of checksum used in this file -->\n");
        x.push_str("    <ChecksumType> sha256 </ChecksumType>\n\n");
        x.push_str(
            "    <!-- The checksum of this bmap file. When it is calculated, the value of\n         \
             the checksum has to be zero (all ASCII \"0\" symbols).  -->\n",
        );
        let _ = writeln!(x, "    <BmapFileChecksum> {checksum} </BmapFileChecksum>\n");
        x.push_str(
            "    <!-- The block map which consists of elements which may either be a\n         \
             range of blocks or a single block. The 'chksum' attribute\n         \
             (if present) is the checksum of this blocks range. -->\n",
        );
        x.push_str("    <BlockMap>\n");
        for r in &self.ranges {
            if r.first == r.last {
                let _ = writeln!(x, "        <Range chksum=\"{}\"> {} </Range>", r.sha256, r.first);
            } else {
                let _ = writeln!(x, "        <Range chksum=\"{}\"> {}-{} </Range>", r.sha256, r.first, r.last);
            }
        }
        x.push_str("    </BlockMap>\n</bmap>\n");
        x
    }

    /// Parses a bmap file strictly: version 2.x, every element present once,
    /// `ChecksumType` sha256, the file checksum verified, ranges ascending,
    /// disjoint, inside the image, each with a sha256, and `MappedBlocksCount`
    /// equal to their sum. Errors say what is wrong and to regenerate the file.
    ///
    /// The XML is read by `roxmltree`, then held to the plain subset bmap
    /// files use (`plain_markup`: no entities, CDATA, processing
    /// instructions, namespaces or mixed content).
    pub fn parse(xml: &str) -> Result<Bmap> {
        let doc = roxmltree::Document::parse(xml).map_err(|e| bad(format!("not a bmap XML file: {e}")))?;
        plain_markup(&doc, xml)?;
        let root = doc.root_element();
        check_root(root)?;
        let image_size = number(root, "ImageSize")?;
        let block_size = number(root, "BlockSize")?;
        let blocks = number(root, "BlocksCount")?;
        let mapped = number(root, "MappedBlocksCount")?;
        if block_size == 0 || block_size % 512 != 0 {
            return Err(bad(format!("BlockSize {block_size} is not a positive multiple of 512")));
        }
        if image_size == 0 || blocks != image_size.div_ceil(block_size) {
            return Err(bad(format!(
                "BlocksCount {blocks} does not match ImageSize {image_size} / BlockSize {block_size}"
            )));
        }
        let cs_type = text(one(root, "ChecksumType")?);
        if cs_type.trim() != "sha256" {
            return Err(bad(format!("ChecksumType is {:?}; kiln reads and writes sha256 only", cs_type.trim())));
        }
        verify_file_checksum(xml, one(root, "BmapFileChecksum")?)?;
        let ranges = block_map(one(root, "BlockMap")?, blocks)?;
        let bmap = Bmap { image_size, block_size, ranges };
        if bmap.mapped_blocks() != mapped {
            return Err(bad(format!(
                "MappedBlocksCount {mapped} does not match the {} blocks the ranges cover",
                bmap.mapped_blocks()
            )));
        }
        Ok(bmap)
    }
}

/// An XML node of a bmap file being read.
type Node<'a, 'i> = roxmltree::Node<'a, 'i>;

/// Holds the parsed file to the subset bmap files use (bmaptool writes
/// nothing else): elements, attributes, text and comments, the text and
/// attribute values as written (no entity or character references, no
/// CDATA), no processing instructions (beyond the `<?xml …?>` declaration)
/// or namespaces, and no element holding both text and elements. An error
/// names the line. (A DOCTYPE is refused by roxmltree itself.)
fn plain_markup(doc: &roxmltree::Document, xml: &str) -> Result<()> {
    let at = |n: Node, what: &str| {
        bad(format!("not a bmap XML file: line {}: {what}", doc.text_pos_at(n.range().start).row))
    };
    for n in doc.root().descendants() {
        if n.is_pi() {
            return Err(at(n, "processing instructions are not allowed"));
        }
        if n.is_text() && xml.get(n.range()) != n.text() {
            return Err(at(n, "entities and CDATA are not allowed"));
        }
        if !n.is_element() {
            continue;
        }
        if n.tag_name().namespace().is_some() || n.attributes().any(|a| a.namespace().is_some()) {
            return Err(at(n, "namespaces are not allowed"));
        }
        if n.attributes().any(|a| xml.get(a.range_value()) != Some(a.value())) {
            return Err(at(n, "entities and '<' are not allowed in attribute values"));
        }
        if n.children().any(|c| c.is_element())
            && n.children().any(|c| c.is_text() && !c.text().unwrap_or_default().trim().is_empty())
        {
            return Err(at(n, &format!("<{}> mixes text and elements", n.tag_name().name())));
        }
    }
    Ok(())
}

/// Element names `<bmap>` may hold.
const KNOWN: [&str; 7] =
    ["ImageSize", "BlockSize", "BlocksCount", "MappedBlocksCount", "ChecksumType", "BmapFileChecksum", "BlockMap"];

/// `<bmap version="2.x">` with no other attribute and only [`KNOWN`] elements.
fn check_root(root: Node) -> Result<()> {
    if root.tag_name().name() != "bmap" {
        return Err(bad(format!("root element is <{}>, expected <bmap>", root.tag_name().name())));
    }
    let version = root.attribute("version").ok_or_else(|| bad("<bmap> has no version attribute"))?;
    if version.split('.').next() != Some("2")
        || !version.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad(format!("bmap version {version:?} is not supported; kiln reads format 2.x")));
    }
    if let Some(a) = root.attributes().find(|a| a.name() != "version") {
        return Err(bad(format!("unknown attribute {:?} on <bmap>", a.name())));
    }
    if let Some(c) = elements(root).find(|c| !KNOWN.contains(&c.tag_name().name())) {
        return Err(bad(format!("unknown element <{}> in <bmap>", c.tag_name().name())));
    }
    Ok(())
}

/// The element children of `n`.
fn elements<'a, 'i>(n: Node<'a, 'i>) -> impl Iterator<Item = Node<'a, 'i>> {
    n.children().filter(|c| c.is_element())
}

/// An element's own text: its text children joined (comments left out).
fn text(n: Node) -> String {
    n.children().filter(|c| c.is_text()).filter_map(|c| c.text()).collect()
}

/// The one `<name>` element in `root`.
fn one<'a, 'i>(root: Node<'a, 'i>, name: &str) -> Result<Node<'a, 'i>> {
    let mut it = elements(root).filter(|c| c.tag_name().name() == name);
    let e = it.next().ok_or_else(|| bad(format!("missing <{name}>")))?;
    if it.next().is_some() {
        return Err(bad(format!("<{name}> appears more than once")));
    }
    Ok(e)
}

/// The number the one `<name>` element holds (and nothing else).
fn number(root: Node, name: &str) -> Result<u64> {
    let e = one(root, name)?;
    if elements(e).next().is_some() || e.attributes().len() != 0 {
        return Err(bad(format!("<{name}> must hold only a number")));
    }
    let t = text(e);
    parse_u64(t.trim()).ok_or_else(|| bad(format!("<{name}> is {:?}, not a number", t.trim())))
}

/// `BmapFileChecksum`: the sha256 of the whole file with the checksum's 64
/// digits, where they stand, replaced by ASCII `0` (BmapCopy.py
/// `_verify_bmap_checksum`). A mismatch is a verify error (exit 3).
fn verify_file_checksum(xml: &str, cs: Node) -> Result<()> {
    let all = text(cs);
    let file_sum = all.trim();
    if !is_hex64(file_sum) {
        return Err(bad("BmapFileChecksum is not 64 lowercase hex digits"));
    }
    // Text is as written (plain_markup), so its range locates the digits.
    let mut zeroed = xml.as_bytes().to_vec();
    let digits = cs.children().find(|c| c.is_text() && !c.text().unwrap_or_default().trim().is_empty());
    if let Some(t) = digits {
        let raw = t.text().unwrap_or_default();
        let start = t.range().start + (raw.len() - raw.trim_start().len());
        if let Some(d) = zeroed.get_mut(start..start + 64) {
            d.copy_from_slice(&[b'0'; 64]);
        }
    }
    let actual = hex(&Sha256::digest(&zeroed));
    if actual != file_sum {
        return Err(Error::verify(format!(
            "bmap file checksum mismatch: the file says {file_sum}, its contents hash to {actual}; \
             the .bmap was edited or damaged, regenerate it with `kiln build` or `bmaptool create`"
        )));
    }
    Ok(())
}

/// `<BlockMap>`: only `<Range chksum="…">first-last</Range>` (or `block`)
/// elements, ascending, disjoint and below `blocks`.
fn block_map(map: Node, blocks: u64) -> Result<Vec<BmapRange>> {
    if !text(map).trim().is_empty() || map.attributes().len() != 0 {
        return Err(bad("<BlockMap> may hold only <Range> elements"));
    }
    let mut ranges: Vec<BmapRange> = Vec::new();
    for r in elements(map) {
        if r.tag_name().name() != "Range" || elements(r).next().is_some() {
            return Err(bad(format!(
                "<BlockMap> holds <{}>; only <Range>text</Range> is allowed",
                r.tag_name().name()
            )));
        }
        let t = text(r);
        let t = t.trim();
        let (first, last) = match t.split_once('-') {
            Some((a, b)) => (parse_u64(a.trim()), parse_u64(b.trim())),
            None => (parse_u64(t), parse_u64(t)),
        };
        let (Some(first), Some(last)) = (first, last) else {
            return Err(bad(format!("<Range> {t:?} is not `first-last` or `block`")));
        };
        if last < first || last >= blocks {
            return Err(bad(format!("<Range> {first}-{last} is reversed or beyond block {}", blocks - 1)));
        }
        if let Some(prev) = ranges.last() {
            if first <= prev.last {
                return Err(bad(format!("<Range> {first}-{last} overlaps or precedes {}-{}", prev.first, prev.last)));
            }
        }
        if let Some(a) = r.attributes().find(|a| a.name() != "chksum") {
            return Err(bad(format!("unknown attribute {:?} on <Range>", a.name())));
        }
        let sum = r.attribute("chksum").ok_or_else(|| bad(format!("<Range> {first}-{last} has no chksum")))?;
        if !is_hex64(sum) {
            return Err(bad(format!("<Range> {first}-{last}: chksum is not 64 lowercase hex digits")));
        }
        ranges.push(BmapRange { first, last, sha256: sum.to_string() });
    }
    Ok(ranges)
}

/// Maps `image`: its data ranges (from `SEEK_DATA`/`SEEK_HOLE`) and every
/// block its file systems need whether zero or not ([`super::fsmap`]), rounded
/// out to [`BLOCK_SIZE`] blocks and merged, each range hashed with sha256. A
/// card written with this map alone is correct whatever it held before.
pub fn create(image: &Path) -> Result<Bmap> {
    let mut f = File::open(image).io_ctx(image.display())?;
    let image_size = f.metadata().io_ctx(image.display())?.len();
    if image_size == 0 {
        return Err(Error::build(format!("{}: the image is empty; nothing to map", image.display())));
    }
    let mut spans = data_spans(&f, image_size).io_ctx(format!("{}: finding data ranges", image.display()))?;
    // Zero-valued file-system structures are holes too, but a card must get them.
    let required = super::fsmap::required_spans(&f, image_size).map_err(|e| {
        Error::config(format!(
            "{}: {e}; the image's partition table or file systems are damaged — rebuild it with `kiln build --format card`",
            image.display()
        ))
    })?;
    spans.extend(required);
    let spans = super::fsmap::merge(spans);
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for (start, end) in spans {
        let first = start / BLOCK_SIZE;
        let last = (end - 1) / BLOCK_SIZE;
        match ranges.last_mut() {
            Some(prev) if first <= prev.1 + 1 => prev.1 = prev.1.max(last),
            _ => ranges.push((first, last)),
        }
    }
    let ranges = split_long(ranges);
    let mut out = Vec::with_capacity(ranges.len());
    let mut buf = vec![0u8; 1 << 20];
    for (first, last) in ranges {
        out.push(hash_range(&mut f, first, last, image_size, &mut buf).io_ctx(image.display())?);
    }
    Ok(Bmap { image_size, block_size: BLOCK_SIZE, ranges: out })
}

/// Longest range kiln writes, in blocks (1 MiB): one range is one unit of
/// `kiln flash`'s pipeline and of bmaptool's verify.
pub const MAX_RANGE_BLOCKS: u64 = 256;

/// Splits `[first, last]` runs into pieces of at most [`MAX_RANGE_BLOCKS`].
fn split_long(ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(ranges.len());
    for (mut a, b) in ranges {
        while b - a + 1 > MAX_RANGE_BLOCKS {
            out.push((a, a + MAX_RANGE_BLOCKS - 1));
            a += MAX_RANGE_BLOCKS;
        }
        out.push((a, b));
    }
    out
}

/// The range `first..=last` of `f` (an image of `image_size` bytes), hashed.
fn hash_range(f: &mut File, first: u64, last: u64, image_size: u64, buf: &mut [u8]) -> std::io::Result<BmapRange> {
    let mut r = BmapRange { first, last, sha256: String::new() };
    let (start, len) = r.byte_span(BLOCK_SIZE, image_size);
    f.seek(SeekFrom::Start(start))?;
    let mut h = Sha256::new();
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        f.read_exact(&mut buf[..n])?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    r.sha256 = hex(&h.finalize());
    Ok(r)
}

/// Blocks per piece a node's `.bmap` splits a range into where the node
/// changed it (64 KiB): only the pieces holding a changed block are hashed
/// from the node's image; the others are the base's bytes, hashed once for
/// all nodes ([`PieceHashes`]).
pub const PIECE_BLOCKS: u64 = 16;

/// sha256 of the base image's pieces (`first..=last` → hex), shared by the
/// nodes of one `kiln fleet images` run.
#[derive(Debug, Default)]
pub struct PieceHashes(std::sync::Mutex<std::collections::HashMap<(u64, u64), String>>);

/// The map of `image`, a copy of `base_image` (mapped by `base`) with the
/// blocks `changed` (ascending, [`BLOCK_SIZE`] blocks) written over it, as
/// `kiln fleet images` makes per node: `base`'s ranges, those holding a
/// changed block split into [`PIECE_BLOCKS`] pieces, plus the changed blocks
/// it does not map. Pieces with a changed block are hashed from `image`, the
/// rest from `base_image` once per run (`memo`).
pub fn with_changed_blocks(
    base: &Bmap,
    base_image: &Path,
    image: &Path,
    changed: &[u64],
    memo: &PieceHashes,
) -> Result<Bmap> {
    if base.block_size != BLOCK_SIZE {
        return Err(Error::config(format!(
            "{}: the base image's .bmap has {}-byte blocks; kiln personalises with {BLOCK_SIZE}-byte blocks — regenerate it with `kiln build --format card`",
            image.display(),
            base.block_size
        )));
    }
    let mut f = File::open(image).io_ctx(image.display())?;
    let mut bf: Option<File> = None;
    let blocks = base.blocks_count();
    let touched = |a: u64, b: u64| {
        let lo = changed.partition_point(|x| *x < a);
        changed.get(lo).is_some_and(|x| *x <= b)
    };
    let mut out: Vec<BmapRange> = Vec::with_capacity(base.ranges.len() + changed.len());
    let mut buf = vec![0u8; 1 << 20];
    for r in &base.ranges {
        if !touched(r.first, r.last) {
            out.push(r.clone());
            continue;
        }
        let mut a = r.first;
        while a <= r.last {
            let b = (a + PIECE_BLOCKS - 1).min(r.last);
            if touched(a, b) {
                out.push(hash_range(&mut f, a, b, base.image_size, &mut buf).io_ctx(image.display())?);
            } else {
                let known = memo.0.lock().ok().and_then(|m| m.get(&(a, b)).cloned());
                let sha = match known {
                    Some(h) => h,
                    None => {
                        if bf.is_none() {
                            bf = Some(File::open(base_image).io_ctx(base_image.display())?);
                        }
                        let bfile = bf.as_mut().ok_or_else(|| Error::build("base image vanished"))?;
                        let h = hash_range(bfile, a, b, base.image_size, &mut buf).io_ctx(base_image.display())?.sha256;
                        if let Ok(mut m) = memo.0.lock() {
                            m.insert((a, b), h.clone());
                        }
                        h
                    }
                };
                out.push(BmapRange { first: a, last: b, sha256: sha });
            }
            a = b + 1;
        }
    }
    // Changed blocks outside every base range: runs of their own.
    let mapped = |x: u64| {
        let i = base.ranges.partition_point(|r| r.last < x);
        base.ranges.get(i).is_some_and(|r| r.first <= x)
    };
    let mut extra: Vec<(u64, u64)> = Vec::new();
    for &x in changed.iter().filter(|x| **x < blocks && !mapped(**x)) {
        match extra.last_mut() {
            Some((_, l)) if *l + 1 == x => *l = x,
            _ => extra.push((x, x)),
        }
    }
    for (a, b) in extra {
        out.push(hash_range(&mut f, a, b, base.image_size, &mut buf).io_ctx(image.display())?);
    }
    out.sort_by_key(|r| r.first);
    Ok(Bmap { image_size: base.image_size, block_size: BLOCK_SIZE, ranges: out })
}

/// Byte spans `[start, end)` that hold data, from `SEEK_DATA`/`SEEK_HOLE`.
pub(crate) fn data_spans(f: &File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let fd = f.as_raw_fd();
    let mut spans = Vec::new();
    let mut pos: u64 = 0;
    while pos < size {
        // SAFETY: lseek on an fd we own; no memory is passed.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // no data after pos
            }
            if e.raw_os_error() == Some(libc::EINVAL) {
                return Ok(vec![(0, size)]); // SEEK_DATA unsupported: all data
            }
            return Err(e);
        }
        let data = data as u64;
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let hole = (hole as u64).min(size);
        if hole > data {
            spans.push((data, hole));
        }
        pos = hole.max(data + 1);
    }
    Ok(spans)
}

fn bad(msg: impl Into<String>) -> Error {
    Error::config(format!("invalid bmap file: {}; regenerate it with `kiln build`", msg.into()))
}

fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// bmaptool's `human_size`: bytes in the largest unit that keeps the value ≥ 1,
/// with one decimal ("1.5 MiB"), integers printed without decimals.
fn human_size(size: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = size as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{size} bytes")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bmap {
        Bmap {
            image_size: 3 * 4096 + 100,
            block_size: 4096,
            ranges: vec![
                BmapRange { first: 0, last: 1, sha256: "a".repeat(64) },
                BmapRange { first: 3, last: 3, sha256: "b".repeat(64) },
            ],
        }
    }

    #[test]
    fn xml_round_trips_and_checksum_is_verified() {
        let b = sample();
        let x = b.to_xml();
        assert!(x.contains(
            "<Range chksum=\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"> 3 </Range>"
        ));
        assert!(x.contains("<BlocksCount> 4 </BlocksCount>"));
        assert_eq!(Bmap::parse(&x).expect("parses"), b);
        let tampered = x.replacen("> 3 </Range>", "> 2 </Range>", 1);
        let e = Bmap::parse(&tampered).expect_err("tampered");
        assert!(e.message.contains("checksum mismatch"), "{e}");
    }

    #[test]
    fn strict_parse_rejects_malformed() {
        let x = sample().to_xml();
        for (from, to) in [
            ("<ChecksumType> sha256 ", "<ChecksumType> sha1 "),
            ("version=\"2.0\"", "version=\"1.3\""),
            ("<MappedBlocksCount> 3 ", "<MappedBlocksCount> 4 "),
            ("</BlockMap>", "<Foo/></BlockMap>"),
        ] {
            assert!(x.contains(from), "{from}");
            assert!(Bmap::parse(&x.replacen(from, to, 1)).is_err(), "{to}");
        }
        assert!(Bmap::parse("").is_err());
        assert!(Bmap::parse("<bmap version=\"2.0\">").is_err());
    }

    /// roxmltree alone would decode these (or, for a PI, keep it as a node);
    /// a bmap file is held to the plain markup bmaptool writes.
    #[test]
    fn entities_cdata_pis_namespaces_and_mixed_content_are_refused() {
        let x = sample().to_xml();
        for (from, to, says) in [
            ("<BlocksCount> 4 ", "<BlocksCount> &#52; ", "entities"),
            ("<BlocksCount> 4 ", "<BlocksCount> <![CDATA[4]]> ", "CDATA"),
            ("<BlocksCount> 4 ", "<BlocksCount> <?pi x?> 4 ", "processing instructions are not allowed"),
            ("<Range chksum=\"a", "<Range chksum=\"&#97;", "attribute values"),
            ("<bmap version=\"2.0\">", "<bmap version=\"2.0\" xmlns=\"urn:x\">", "namespaces"),
            ("</BlockMap>", "x</BlockMap>", "mixes text and elements"),
        ] {
            assert!(x.contains(from), "{from}");
            let e = Bmap::parse(&x.replacen(from, to, 1)).expect_err(to);
            assert!(e.message.contains(says) && e.message.contains("line "), "{to}: {e}");
        }
    }

    #[test]
    fn create_maps_only_data() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("kiln-bmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).io_ctx("tmp")?;
        let img = dir.join("img");
        let f = File::create(&img).io_ctx("img")?;
        f.set_len(64 << 20).io_ctx("img")?;
        use std::os::unix::fs::FileExt;
        f.write_all_at(&[1u8; 5000], 0).io_ctx("img")?;
        f.write_all_at(&[2u8; 10], 32 << 20).io_ctx("img")?;
        drop(f);
        let b = create(&img)?;
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(b.image_size, 64 << 20);
        assert!(b.mapped_blocks() < 1024, "mapped {}", b.mapped_blocks());
        assert_eq!(b.ranges[0].first, 0);
        assert!(b.ranges.iter().any(|r| r.first <= 8192 && r.last >= 8192));
        assert_eq!(Bmap::parse(&b.to_xml())?, b);
        Ok(())
    }
}
