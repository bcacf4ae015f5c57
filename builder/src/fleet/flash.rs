//! `kiln flash`: the image's mapped ranges plus a node's personalised blocks,
//! written to a card (or a file) and read back.
//!
//! 1. Plan: every range of the `.bmap`, plus the node's personalised blocks
//!    that fall outside them (the FAT may place new files in unmapped space)
//!    and the image's file-system structures a foreign `.bmap` leaves out.
//! 2. Write: a reader thread reads each range from the image, checks it against
//!    the `.bmap` sha256 (a damaged image is caught, exit 3), lays the node's
//!    blocks over it and hashes what will be written; the writer thread writes
//!    it. Then `fdatasync`.
//! 3. Verify: each range is read back bypassing the page cache — `O_DIRECT`
//!    with 4 KiB-aligned buffers, or `fdatasync` + `posix_fadvise(DONTNEED)`
//!    where `O_DIRECT` is refused — and its sha256 compared; a mismatch names
//!    the range and exits 3. Then the FAT partition is opened on the target and
//!    each personalised file is read back and compared.
//! 4. Structures: the partition table and file systems are parsed from the
//!    target ([`crate::outputs::card::fsmap`]) and every block they need — FATs, root
//!    directory, allocated clusters, ext4 descriptors, bitmaps, inode tables,
//!    allocated blocks — must lie in what was written and read back, so no
//!    byte the file systems use is the card's old content.
//!
//! Why step 3 has both checks: the range hashes prove the card holds what the
//! reader thread sent, byte for byte; they are hashes *of what was sent*, so
//! they cannot tell whether what was sent holds the node's files. The FAT
//! read-back compares the files, read through the target's own FAT, with
//! the rendered files themselves (an independent source): it catches a block
//! damaged in memory after personalisation or a planning/overlay bug, which
//! every range hash passes. A byte changed on the card after writing is
//! always caught by the range hashes first (every allocated cluster lies in a
//! written extent, step 4), so the read-back is not there for that.
//!
//! Test-only failpoints: `KILN_TEST_FLIP_BYTE=<offset>` flips the byte at that
//! offset of the target between the write and the verify (so tests can prove
//! the verify catches it); `KILN_TEST_FLIP_BYTE=staged:<offset>` flips it in
//! the block being sent, after personalisation and before it is hashed and
//! written (what only the FAT read-back can catch). Never set them otherwise.

use crate::error::{Error, Result};
use crate::fleet::device::Target;
use crate::fleet::personalise::{self, Personalised, BLOCK};
use crate::hash::hex;
use crate::outputs::card::bmap::Bmap;
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// The test-only failpoint variable (see the module docs).
pub const FLIP_ENV: &str = "KILN_TEST_FLIP_BYTE";

/// Bytes moved per I/O.
const CHUNK: usize = 4 << 20;

/// One extent to write: bytes `start..start+len` of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// The `.bmap` sha256 of the image's bytes here (`None` for extra personalised blocks).
    pub image_sha256: Option<String>,
    /// Human label: `bmap range 3 (blocks 100-200)` or `personalised blocks 5000-5002`.
    pub label: String,
}

/// The extents to write for a node: the bmap's ranges, then the blocks
/// outside them that the node's personalisation wrote or that the image's
/// file systems need (`required`, from [`crate::outputs::card::fsmap::required_spans`] of the image:
/// a `.bmap` from another tool or an older kiln may leave zero-valued
/// structures unmapped, and a used card would keep its old bytes there).
pub fn plan(bmap: &Bmap, p: &Personalised, required: &[(u64, u64)]) -> Vec<Extent> {
    let mut v: Vec<Extent> = bmap
        .ranges
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (start, len) = bmap.byte_span(r);
            Extent {
                start,
                len,
                image_sha256: Some(r.sha256.clone()),
                label: format!("bmap range {} (blocks {}-{}, bytes {start}-{})", i + 1, r.first, r.last, start + len),
            }
        })
        .collect();
    let blocks = bmap.image_size.div_ceil(BLOCK);
    // Blocks the bmap does not map, as sorted disjoint [first, last] runs.
    let mut wanted: Vec<(u64, u64)> = p.blocks.keys().map(|&b| (b, b)).collect();
    wanted.extend(
        required
            .iter()
            .filter(|(s, e)| e > s && *s < bmap.image_size)
            .map(|&(s, e)| (s / BLOCK, (e.min(bmap.image_size) - 1) / BLOCK)),
    );
    let mut extra: Vec<(u64, u64)> = Vec::new();
    for (a, b) in crate::outputs::card::fsmap::merge(wanted.into_iter().map(|(a, b)| (a, b + 1)).collect()) {
        let b = b.min(blocks);
        let (lo, mut a) = (a, a);
        for r in bmap.ranges.iter().filter(|r| r.last >= lo && r.first < b) {
            if r.first > a {
                extra.push((a, r.first - 1));
            }
            a = a.max(r.last + 1);
        }
        if a < b {
            extra.push((a, b - 1));
        }
    }
    for (a, b) in extra {
        let start = a * BLOCK;
        let len = ((b + 1) * BLOCK).min(bmap.image_size) - start;
        v.push(Extent {
            start,
            len,
            image_sha256: None,
            label: format!(
                "unmapped blocks {a}-{b} (bytes {start}-{}: personalised or file-system structure)",
                start + len
            ),
        });
    }
    v.sort_by_key(|e| e.start);
    v
}

/// What a flash did.
#[derive(Debug, Clone)]
pub struct Report {
    /// Node name.
    pub node: String,
    /// Target path.
    pub device: String,
    /// Bytes written.
    pub bytes: u64,
    /// Extents written.
    pub extents: usize,
    /// Time writing (including the final sync).
    pub write: Duration,
    /// Time verifying.
    pub verify: Duration,
    /// How the verify bypassed the page cache.
    pub verify_mode: &'static str,
}

impl Report {
    /// One line for the end of a flash.
    pub fn summary(&self) -> String {
        let rate = |d: Duration| crate::progress::human_bytes((self.bytes as f64 / d.as_secs_f64().max(1e-6)) as u64);
        format!(
            "{} → {}: wrote {} in {} ranges in {:.1} s ({}/s), verified in {:.1} s ({}/s, {}): ok",
            self.node,
            self.device,
            crate::progress::human_bytes(self.bytes),
            self.extents,
            self.write.as_secs_f64(),
            rate(self.write),
            self.verify.as_secs_f64(),
            rate(self.verify),
            self.verify_mode
        )
    }
}

/// A buffer aligned for `O_DIRECT`.
struct Aligned {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new(len: usize) -> Result<Aligned> {
        let layout = std::alloc::Layout::from_size_align(len, 4096).map_err(|e| Error::build(e.to_string()))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(Error::build("out of memory for an O_DIRECT buffer"));
        }
        Ok(Aligned { ptr, layout })
    }
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for layout.size() bytes and uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in `new`.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

fn overlay_chunk(p: &Personalised, start: u64, buf: &mut [u8]) -> bool {
    let end = start + buf.len() as u64;
    let mut patched = false;
    for (&b, data) in p.blocks.range(start / BLOCK..end.div_ceil(BLOCK)) {
        let (bs, be) = (b * BLOCK, (b + 1) * BLOCK);
        let (s, e) = (bs.max(start), be.min(end));
        if s < e {
            buf[(s - start) as usize..(e - start) as usize]
                .copy_from_slice(&data[(s - bs) as usize..(e - bs) as usize]);
            patched = true;
        }
    }
    patched
}

fn read_full(f: &File, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Writes `plan` from `image` (+ `p`'s blocks) to `target`, then verifies it.
/// Returns what was written; a mismatch is [`crate::error::Kind::Verify`] (exit 3).
pub fn flash(image: &Path, plan: &[Extent], p: &Personalised, target: &Target, bar: &ProgressBar) -> Result<Report> {
    let src = File::open(image).map_err(|e| Error::config(format!("{}: {e}", image.display())))?;
    let total: u64 = plan.iter().map(|e| e.len).sum();
    bar.set_length(total * 2);
    let t0 = Instant::now();
    let hashes = write_extents(&Source { file: &src, path: image, p }, plan, target, bar)?;
    target.file.sync_data().map_err(|e| Error::build(format!("syncing {}: {e}", target.path.display())))?;
    let write = t0.elapsed();
    flip_written_byte(target);

    let t1 = Instant::now();
    let mode = verify_extents(target, plan, &hashes, bar)?;
    // The file systems on the target itself: every structure they need and
    // every allocated block lies inside what was written and read back
    // (nothing there is the card's old content).
    drop_cache(&target.file);
    let image_size = src.metadata().map_err(|e| Error::build(format!("{}: {e}", image.display())))?.len();
    check_structures(target, plan, image_size)?;
    verify_files(target, p)?;
    let verify = t1.elapsed();
    Ok(Report {
        node: p.node.clone(),
        device: target.path.display().to_string(),
        bytes: total,
        extents: plan.len(),
        write,
        verify,
        verify_mode: mode,
    })
}

/// What the reader thread reads from: the image file and the node's blocks.
struct Source<'a> {
    file: &'a File,
    path: &'a Path,
    p: &'a Personalised,
}

/// Step 2: a reader (this thread) sends each extent's chunks, checked and
/// personalised ([`send_extent`]), to a writer thread that writes them to
/// the target and hands the buffers back. Returns the sha256 of what was
/// sent for each extent, in plan order.
fn write_extents(src: &Source, plan: &[Extent], target: &Target, bar: &ProgressBar) -> Result<Vec<String>> {
    let dev = &target.file;
    let dname = target.path.display().to_string();
    let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(4);
    let (ret_tx, ret_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let staged_flip =
        std::env::var(FLIP_ENV).ok().and_then(|v| v.strip_prefix("staged:").and_then(|o| o.parse::<u64>().ok()));
    std::thread::scope(|s| {
        let writer = s.spawn(move || -> Result<()> {
            for (off, buf) in rx {
                dev.write_all_at(&buf, off).map_err(|e| Error::build(format!("writing {dname} at byte {off}: {e}")))?;
                bar.inc(buf.len() as u64);
                let _ = ret_tx.send(buf);
            }
            Ok(())
        });
        let chan = Channel { tx, ret_rx, staged_flip };
        let mut hashes = Vec::with_capacity(plan.len());
        let mut failure = None;
        for ext in plan {
            match send_extent(src, ext, &chan) {
                Ok(Some(h)) => hashes.push(h),
                // The writer stopped: its own error is the one to report.
                Ok(None) => break,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        drop(chan);
        let w = writer.join().map_err(|_| Error::build("the writer thread panicked"))?;
        match failure {
            Some(e) => Err(e),
            None => w.map(|()| hashes),
        }
    })
}

/// The reader's ends of the channels to the writer thread.
struct Channel {
    /// Chunks to write: (byte offset, bytes).
    tx: std::sync::mpsc::SyncSender<(u64, Vec<u8>)>,
    /// Buffers the writer is done with, to reuse.
    ret_rx: std::sync::mpsc::Receiver<Vec<u8>>,
    /// The `staged:` failpoint's offset (see the module docs).
    staged_flip: Option<u64>,
}

/// Reads one extent from the image in chunks, lays the node's blocks over
/// them and sends them to the writer; checks the image's bytes against the
/// `.bmap` sha256. Returns the sha256 of what was sent, or `None` when the
/// writer has stopped (it reports why).
fn send_extent(src: &Source, ext: &Extent, chan: &Channel) -> Result<Option<String>> {
    let p = src.p;
    let mut img_h = Sha256::new();
    let mut out_h = Sha256::new();
    let touched = p.blocks.range(ext.start / BLOCK..(ext.start + ext.len).div_ceil(BLOCK)).next().is_some();
    let mut off = ext.start;
    while off < ext.start + ext.len {
        let n = ((ext.start + ext.len - off) as usize).min(CHUNK);
        let mut buf = chan.ret_rx.try_recv().unwrap_or_default();
        buf.resize(n, 0);
        match read_full(src.file, &mut buf, off) {
            Ok(k) if k == n => {}
            Ok(k) => {
                return Err(Error::verify(format!(
                    "{}: {}: the image ends at byte {} but the .bmap maps up to {}; the image and its .bmap do not belong together — rebuild with `kiln build --format card`",
                    src.path.display(), ext.label, off + k as u64, ext.start + ext.len
                )));
            }
            Err(e) => return Err(Error::build(format!("reading {}: {e}", src.path.display()))),
        }
        if ext.image_sha256.is_some() {
            img_h.update(&buf);
        }
        if touched {
            overlay_chunk(p, off, &mut buf);
        }
        if let Some(at) = chan.staged_flip.filter(|at| (off..off + n as u64).contains(at)) {
            buf[(at - off) as usize] ^= 0xff;
        }
        if touched || ext.image_sha256.is_none() {
            out_h.update(&buf);
        }
        if chan.tx.send((off, buf)).is_err() {
            return Ok(None);
        }
        off += n as u64;
    }
    let img = hex(&img_h.finalize());
    if let Some(want) = &ext.image_sha256 {
        if !img.eq_ignore_ascii_case(want) {
            return Err(Error::verify(format!(
                "{}: {} has sha256 {img} but its .bmap says {want}; the image is damaged — rebuild it or copy it again",
                src.path.display(),
                ext.label
            )));
        }
    }
    Ok(Some(if touched || ext.image_sha256.is_none() { hex(&out_h.finalize()) } else { img }))
}

/// The `KILN_TEST_FLIP_BYTE=<offset>` failpoint: flips that byte of the
/// target after the write, before the verify (see the module docs).
fn flip_written_byte(target: &Target) {
    if let Ok(v) = std::env::var(FLIP_ENV) {
        if let Ok(off) = v.parse::<u64>() {
            let mut b = [0u8; 1];
            let _ = target.file.read_exact_at(&mut b, off);
            b[0] ^= 0xff;
            let _ = target.file.write_all_at(&b, off);
            let _ = target.file.sync_data();
        }
    }
}

/// Step 3, the ranges: each extent read back bypassing the page cache and
/// its sha256 compared with what was sent. Returns how the cache was bypassed.
fn verify_extents(target: &Target, plan: &[Extent], hashes: &[String], bar: &ProgressBar) -> Result<&'static str> {
    let (reader, mode) = open_uncached(target)?;
    let mut abuf = Aligned::new(CHUNK)?;
    for (ext, want) in plan.iter().zip(hashes) {
        let mut h = Sha256::new();
        let mut off = ext.start;
        let end = ext.start + ext.len;
        while off < end {
            let n = ((end - off) as usize).min(CHUNK);
            // O_DIRECT needs whole 4 KiB blocks: read rounded up, hash only `n`.
            let rn = n.div_ceil(4096) * 4096;
            let buf = &mut abuf.as_mut()[..rn];
            let k = read_full(&reader, buf, off)
                .map_err(|e| Error::build(format!("reading {} back at byte {off}: {e}", target.path.display())))?;
            if k < n {
                return Err(Error::verify(format!(
                    "verify failed on {}: {} ends early at byte {}; the card is smaller than it claims (counterfeit?) — use another card",
                    target.path.display(), ext.label, off + k as u64
                )));
            }
            h.update(&buf[..n]);
            bar.inc(n as u64);
            off += n as u64;
        }
        let got = hex(&h.finalize());
        if &got != want {
            return Err(Error::verify(format!(
                "verify failed on {}: {} reads back with sha256 {got}, written {want}; the card is failing or counterfeit — flash again or use another card",
                target.path.display(), ext.label
            )));
        }
    }
    Ok(mode)
}

/// Step 3, the files: each personalised file read back through the FAT on
/// the target itself and compared with the rendered file.
fn verify_files(target: &Target, p: &Personalised) -> Result<()> {
    for f in &p.files {
        let got = personalise::read_back(&target.file, p.partition, &f.path).map_err(|e| {
            Error::verify(format!(
                "verify failed on {}: cannot read {} from its FAT boot partition: {e}",
                target.path.display(),
                f.path
            ))
        })?;
        if got != f.data {
            return Err(Error::verify(format!(
                "verify failed on {}: {} on its FAT boot partition differs from what was written; flash again",
                target.path.display(),
                f.path
            )));
        }
    }
    Ok(())
}

/// Reads the partition table and file systems back from the target and
/// checks that every block they need (zero or not) was written and verified.
fn check_structures(target: &Target, plan: &[Extent], size: u64) -> Result<()> {
    let need = crate::outputs::card::fsmap::required_spans(&target.file, size).map_err(|e| {
        Error::verify(format!(
            "verify failed on {}: its file systems do not read back as written: {e}; flash again or use another card",
            target.path.display()
        ))
    })?;
    let mut i = 0;
    for (s, e) in need {
        let mut pos = s;
        while pos < e {
            while i < plan.len() && plan[i].start + plan[i].len <= pos {
                i += 1;
            }
            match plan.get(i) {
                Some(x) if x.start <= pos => pos = x.start + x.len,
                _ => {
                    return Err(Error::verify(format!(
                        "verify failed on {}: its file systems use bytes {pos}-{e}, which were not written (they hold what the card held before); the image and its .bmap do not belong together — rebuild with `kiln build --format card`",
                        target.path.display()
                    )))
                }
            }
        }
    }
    Ok(())
}

fn drop_cache(f: &File) {
    let _ = f.sync_data();
    // SAFETY: advisory call on a valid descriptor.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

/// A descriptor that reads the target without the page cache.
fn open_uncached(target: &Target) -> Result<(File, &'static str)> {
    match OpenOptions::new().read(true).custom_flags(libc::O_DIRECT | libc::O_CLOEXEC).open(&target.path) {
        Ok(f) => Ok((f, "O_DIRECT")),
        Err(_) => {
            drop_cache(&target.file);
            let f = File::open(&target.path)
                .map_err(|e| Error::build(format!("reopening {} to verify: {e}", target.path.display())))?;
            drop_cache(&f);
            Ok((f, "fdatasync + fadvise(DONTNEED)"))
        }
    }
}
