//! `kiln fleet images`: one personalised image file per node, for people who
//! flash with other tools.
//!
//! Each image is the base image copied without copying its bytes where the
//! filesystem allows it (a reflink, `FICLONE`: btrfs, XFS, bcachefs), else a
//! sparse copy (only the base's data extents, found with `SEEK_DATA`/`SEEK_HOLE`,
//! copied in the kernel with `copy_file_range`), and then the node's few
//! personalised blocks written over it, with its own `.bmap` beside it (the
//! base's ranges plus the node's blocks, re-hashed where they changed), which
//! `bmaptool copy` reads. Every image and map is written under a temporary
//! name, the filesystem is synced once, and only then are they all renamed
//! into place: an interrupted run leaves no half-written image.

use crate::error::{Error, IoContext, Result};
use crate::fleet::personalise::{Personalised, BLOCK};
use crate::outputs::card::bmap::{self, Bmap};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How a base image was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// `FICLONE`: the copy shares the base's blocks.
    Reflink,
    /// Data extents copied, holes kept.
    Sparse,
}

impl CopyKind {
    /// A word for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            CopyKind::Reflink => "reflink",
            CopyKind::Sparse => "sparse copy",
        }
    }
}

/// `_IOW(0x94, 9, int)` from `linux/fs.h`.
const FICLONE: libc::c_ulong = 0x4004_9409;

fn lseek(f: &File, off: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: lseek on a valid descriptor has no memory effects.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENXIO) { Ok(None) } else { Err(e) };
    }
    Ok(Some(r as u64))
}

/// The data extents of `f` (`SEEK_DATA`/`SEEK_HOLE`; the whole file where unsupported).
pub fn data_extents(f: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < size {
        let start = match lseek(f, pos, libc::SEEK_DATA) {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(vec![(0, size)]),
            Err(e) => return Err(e),
        };
        let end = lseek(f, start, libc::SEEK_HOLE)?.unwrap_or(size).min(size);
        if end <= start {
            break;
        }
        out.push((start, end));
        pos = end;
    }
    Ok(out)
}

fn copy_range(src: &File, dst: &File, start: u64, end: u64) -> io::Result<()> {
    let mut off = start;
    let mut kernel = true;
    let mut buf = Vec::new();
    while off < end {
        let want = (end - off).min(1 << 30) as usize;
        if kernel {
            let mut a = off as libc::loff_t;
            let mut b = off as libc::loff_t;
            // SAFETY: both descriptors are valid; the offsets point at owned locals.
            let r = unsafe { libc::copy_file_range(src.as_raw_fd(), &mut a, dst.as_raw_fd(), &mut b, want, 0) };
            if r > 0 {
                off += r as u64;
                continue;
            }
            let e = io::Error::last_os_error();
            if r == 0 || matches!(e.raw_os_error(), Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL))
            {
                kernel = false;
                buf.resize(4 << 20, 0);
                continue;
            }
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let k = want.min(buf.len());
        let n = src.read_at(&mut buf[..k], off)?;
        if n == 0 {
            break;
        }
        dst.write_all_at(&buf[..n], off)?;
        off += n as u64;
    }
    Ok(())
}

/// Copies `src` (of `size` bytes) into the empty file `dst`: a reflink when the
/// filesystem shares blocks, else a sparse copy of the data extents.
pub fn copy_base(src: &File, dst: &File, size: u64) -> io::Result<CopyKind> {
    // SAFETY: FICLONE takes the source descriptor as its argument; both are valid.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    if r == 0 {
        return Ok(CopyKind::Reflink);
    }
    for (start, end) in data_extents(src, size)? {
        copy_range(src, dst, start, end)?;
    }
    dst.set_len(size)?;
    Ok(CopyKind::Sparse)
}

/// Writes a node's personalised blocks over an image file.
pub fn apply_blocks(dst: &File, p: &Personalised) -> io::Result<()> {
    for (idx, data) in &p.blocks {
        dst.write_all_at(data, idx * BLOCK)?;
    }
    Ok(())
}

/// One written image.
#[derive(Debug, Clone)]
pub struct Written {
    /// Node name.
    pub node: String,
    /// The image file.
    pub path: PathBuf,
    /// Its `.bmap` (`<path>.bmap`).
    pub bmap: PathBuf,
    /// How the base was copied.
    pub copy: CopyKind,
    /// Bytes that differ from the base.
    pub delta: u64,
}

/// Writes `<out>/<node>.img` and `<out>/<node>.img.bmap` for every
/// personalised node, in parallel, atomically as a set. `base_bmap` is the
/// base image's map. `done` is called once per finished image.
pub fn write_images(
    base_path: &Path,
    base_bmap: &Bmap,
    out: &Path,
    nodes: &[Personalised],
    done: &(dyn Fn(&Written) + Sync),
) -> Result<Vec<Written>> {
    std::fs::create_dir_all(out).io_ctx(out.display())?;
    let base = File::open(base_path).io_ctx(base_path.display())?;
    let size = base.metadata().io_ctx(base_path.display())?.len();
    if base_bmap.image_size != size {
        return Err(Error::config(format!(
            "{}: the image has {size} bytes but its .bmap says {}; they do not belong together — rebuild with `kiln build --format card`",
            base_path.display(),
            base_bmap.image_size
        )));
    }
    let tmp = |n: &str| out.join(format!(".{n}.img.tmp-{}", std::process::id()));
    let tmp_map = |n: &str| out.join(format!(".{n}.img.bmap.tmp-{}", std::process::id()));
    let pieces = bmap::PieceHashes::default();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads =
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 8).min(nodes.len().max(1));
    let results: std::sync::Mutex<Vec<(usize, Result<Written>)>> = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(p) = nodes.get(i) else { break };
                let t = tmp(&p.node);
                let r = (|| -> Result<Written> {
                    let _ = std::fs::remove_file(&t);
                    let f = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&t)
                        .io_ctx(t.display())?;
                    let copy = copy_base(&base, &f, size).io_ctx(format!(
                        "copying {} to {}",
                        base_path.display(),
                        t.display()
                    ))?;
                    apply_blocks(&f, p).io_ctx(t.display())?;
                    let changed: Vec<u64> = p.blocks.keys().copied().collect();
                    let map = bmap::with_changed_blocks(base_bmap, base_path, &t, &changed, &pieces)?;
                    let tm = tmp_map(&p.node);
                    // 0600 like the image: its range hashes cover the node's secrets.
                    let _ = std::fs::remove_file(&tm);
                    OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&tm)
                        .and_then(|mut m| io::Write::write_all(&mut m, map.to_xml().as_bytes()))
                        .io_ctx(tm.display())?;
                    let path = out.join(format!("{}.img", p.node));
                    let w = Written {
                        node: p.node.clone(),
                        bmap: PathBuf::from(format!("{}.bmap", path.display())),
                        path,
                        copy,
                        delta: p.delta_bytes(),
                    };
                    done(&w);
                    Ok(w)
                })();
                if r.is_err() {
                    let _ = std::fs::remove_file(&t);
                    let _ = std::fs::remove_file(tmp_map(&p.node));
                }
                if let Ok(mut v) = results.lock() {
                    v.push((i, r));
                }
            });
        }
    });
    let mut results = results.into_inner().map_err(|_| Error::build("an image writer thread panicked"))?;
    results.sort_by_key(|(i, _)| *i);
    let mut written = Vec::new();
    let mut first_err = None;
    for (_, r) in results {
        match r {
            Ok(w) => written.push(w),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        for w in &written {
            let _ = std::fs::remove_file(tmp(&w.node));
            let _ = std::fs::remove_file(tmp_map(&w.node));
        }
        return Err(e);
    }
    // One sync of the whole output filesystem, then the renames.
    let dir = File::open(out).io_ctx(out.display())?;
    // SAFETY: syncfs on a valid descriptor.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(Error::build(format!("{}: syncfs: {}", out.display(), io::Error::last_os_error())));
    }
    for w in &written {
        std::fs::rename(tmp(&w.node), &w.path).io_ctx(w.path.display())?;
        std::fs::rename(tmp_map(&w.node), &w.bmap).io_ctx(w.bmap.display())?;
    }
    dir.sync_all().io_ctx(out.display())?;
    Ok(written)
}
