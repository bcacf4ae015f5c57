//! Whether a target may be written, and opening it carefully.
//!
//! A block device is refused when it (or any of its partitions) is mounted or
//! used as swap, when it is held by device-mapper/LVM/RAID, when it is itself a
//! partition, when it is smaller than the image, and — unless `--force` — when
//! it is larger than [`MAX_CARD_BYTES`] or not removable (sysfs `removable` is
//! 0; SD slots `mmcblk*` and loop devices count as removable). It is then
//! opened with `O_EXCL`, which the kernel refuses while anything else holds it.
//! A regular file is created if missing, locked (`flock`) and resized to the
//! image; an existing non-empty one must look like a disk image (a partition
//! table) unless `--force`. Whatever the command itself reads or writes — the
//! fleet file, the image, its `.bmap`, the cluster directory ([`Protected`]) —
//! is refused always.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Largest device written without `--force`: 256 GiB. SD and microSD cards for
/// Pis are far smaller; a larger disk is more likely a backup or system disk.
pub const MAX_CARD_BYTES: u64 = 256 << 30;

/// What kind of target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A whole block device, with its sysfs name (`sdb`, `mmcblk0`, `loop3`).
    Block(String),
    /// A regular file.
    File,
}

/// An opened, checked target.
#[derive(Debug)]
pub struct Target {
    /// The path given.
    pub path: PathBuf,
    /// Block device or file.
    pub kind: Kind,
    /// Its size in bytes (a file: after resizing to the image).
    pub size: u64,
    /// Opened for writing (`O_EXCL` for a block device, `flock`ed for a file).
    pub file: File,
}

/// Refusal options.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checks {
    /// Allow a non-removable or very large device, or an existing regular
    /// file that does not look like a disk image.
    pub force: bool,
}

/// Files the command itself reads or writes, which are never a target even
/// with `--force`: compared by device and inode (hard links, other spellings)
/// and, for directories, by canonical path prefix (files not yet created).
#[derive(Debug, Clone, Default)]
pub struct Protected {
    files: Vec<(u64, u64, String)>,
    dirs: Vec<(PathBuf, String)>,
}

impl Protected {
    /// Protects the file at `path` (if it exists), described as `what`.
    pub fn file(&mut self, path: &Path, what: impl Into<String>) {
        if let Ok(m) = std::fs::metadata(path) {
            self.files.push((m.dev(), m.ino(), what.into()));
        }
    }

    /// Protects the directory `dir` and everything under it, described as `what`.
    pub fn dir(&mut self, dir: &Path, what: impl Into<String>) {
        let what = what.into();
        if let Ok(c) = std::fs::canonicalize(dir) {
            self.dirs.push((c, what.clone()));
        }
        // Hard links to its files elsewhere are the same inodes.
        let mut stack = vec![dir.to_path_buf()];
        let mut seen = 0usize;
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                seen += 1;
                if seen > 100_000 {
                    return;
                }
                let Ok(m) = std::fs::symlink_metadata(e.path()) else { continue };
                if m.is_dir() {
                    stack.push(e.path());
                } else if m.is_file() {
                    self.files.push((m.dev(), m.ino(), format!("{what} ({})", e.path().display())));
                }
            }
        }
    }

    /// Why `path` must not be written, if it is protected.
    fn hit(&self, path: &Path) -> Option<String> {
        if let Ok(m) = std::fs::metadata(path) {
            if let Some((_, _, w)) = self.files.iter().find(|(d, i, _)| *d == m.dev() && *i == m.ino()) {
                return Some(w.clone());
            }
        }
        // A path that does not exist yet: where it would be created.
        let canon = std::fs::canonicalize(path).ok().or_else(|| {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            std::fs::canonicalize(parent).ok().map(|p| p.join(path.file_name().unwrap_or_default()))
        })?;
        self.dirs.iter().find(|(d, _)| canon.starts_with(d)).map(|(d, w)| format!("{w} ({}) holds it", d.display()))
    }
}

fn refuse(path: &Path, msg: impl AsRef<str>) -> Error {
    Error::config(format!("refusing to write {}: {}", path.display(), msg.as_ref()))
}

fn read_sys(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

fn dev_of(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// `(major, minor)` of the device itself and of every partition on it.
fn device_numbers(name: &str, rdev: u64) -> Vec<(u64, u64)> {
    let mut v = vec![(libc::major(rdev) as u64, libc::minor(rdev) as u64)];
    let dir = Path::new("/sys/class/block").join(name);
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            if e.path().join("partition").exists() {
                if let Some(d) = read_sys(&e.path().join("dev")).as_deref().and_then(dev_of) {
                    v.push(d);
                }
            }
        }
    }
    v
}

/// Unescapes `/proc/self/mounts` octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where any of `devs` is mounted or used as swap: `(source, mount point)`.
pub fn mounts_of(devs: &[(u64, u64)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let hit = |src: &str| -> bool {
        std::fs::metadata(src)
            .ok()
            .filter(|m| m.file_type().is_block_device())
            .is_some_and(|m| devs.contains(&(libc::major(m.rdev()) as u64, libc::minor(m.rdev()) as u64)))
    };
    if let Ok(t) = std::fs::read_to_string("/proc/self/mounts") {
        for line in t.lines() {
            let mut w = line.split_whitespace();
            let (Some(src), Some(dst)) = (w.next(), w.next()) else { continue };
            let src = unescape(src);
            if src.starts_with('/') && hit(&src) {
                out.push((src, unescape(dst)));
            }
        }
    }
    if let Ok(t) = std::fs::read_to_string("/proc/swaps") {
        for line in t.lines().skip(1) {
            if let Some(src) = line.split_whitespace().next() {
                let src = unescape(src);
                if hit(&src) {
                    out.push((src, "[swap]".into()));
                }
            }
        }
    }
    out
}

fn blk_size(f: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    // SAFETY: BLKGETSIZE64 writes one u64 into `size`.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// Checks `path` and opens it for writing an image of `image_size` bytes.
/// A target in `protected` (the image itself, the fleet file, …) is always
/// refused; an existing non-empty regular file that does not look like a
/// disk image is refused unless `--force`.
pub fn open(path: &Path, image_size: u64, protected: &Protected, checks: Checks) -> Result<Target> {
    if let Some(what) = protected.hit(path) {
        return Err(refuse(
            path,
            format!("it is {what}, which this command reads or writes; give the card's device (`lsblk -o NAME,SIZE,RM,TRAN,MODEL`) or a new file"),
        ));
    }
    let meta = std::fs::metadata(path);
    match meta {
        Ok(m) if m.file_type().is_block_device() => open_block(path, m.rdev(), image_size, checks),
        Ok(m) if m.is_file() => {
            if m.len() > 0 && !checks.force && !looks_like_disk_image(path) {
                return Err(refuse(
                    path,
                    format!("it is an existing {}-byte file that does not look like a disk image (no partition table); pass --force to overwrite it, or give a new file name", m.len()),
                ));
            }
            open_file(path, image_size)
        }
        Ok(_) => Err(refuse(path, "not a block device or a regular file")),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !path.starts_with("/dev") => open_file(path, image_size),
        Err(e) => Err(refuse(path, format!("{e}; list cards with `lsblk -o NAME,SIZE,RM,TRAN,MODEL`"))),
    }
}

/// Whether the file at `path` starts like a disk image: an MBR (or GPT's
/// protective MBR) boot signature `55 AA` at byte 510.
fn looks_like_disk_image(path: &Path) -> bool {
    use std::os::unix::fs::FileExt;
    let mut s = [0u8; 512];
    File::open(path).and_then(|f| f.read_exact_at(&mut s, 0)).is_ok() && s[510..512] == [0x55, 0xaa]
}

fn open_file(path: &Path, image_size: u64) -> Result<Target> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| refuse(path, e.to_string()))?;
    if !crate::io::try_lock(&file) {
        return Err(refuse(path, "another program holds a lock on it (another kiln flash?)"));
    }
    // A file target becomes exactly the image: unmapped ranges read as zeros.
    file.set_len(0).and_then(|()| file.set_len(image_size)).map_err(|e| refuse(path, e.to_string()))?;
    Ok(Target { path: path.to_path_buf(), kind: Kind::File, size: image_size, file })
}

fn open_block(path: &Path, rdev: u64, image_size: u64, checks: Checks) -> Result<Target> {
    let (maj, min) = (libc::major(rdev), libc::minor(rdev));
    let sys = std::fs::canonicalize(format!("/sys/dev/block/{maj}:{min}"))
        .map_err(|e| refuse(path, format!("no sysfs entry for {maj}:{min}: {e}")))?;
    let name = sys.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    if sys.join("partition").exists() {
        let parent = sys.parent().and_then(|p| p.file_name()).map(|s| s.to_string_lossy().into_owned());
        return Err(refuse(
            path,
            format!("it is a partition; give the whole card, e.g. /dev/{}", parent.unwrap_or_else(|| "sdX".into())),
        ));
    }
    let mounted = mounts_of(&device_numbers(&name, rdev));
    if let Some((src, dst)) = mounted.first() {
        return Err(refuse(
            path,
            format!("{src} is mounted on {dst}; unmount every partition of it first (`umount {src}`), or pick another device"),
        ));
    }
    let holders: Vec<String> = std::fs::read_dir(sys.join("holders"))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    if !holders.is_empty() {
        return Err(refuse(path, format!("it is in use by {} (device-mapper, LVM or RAID)", holders.join(", "))));
    }
    let removable = read_sys(&sys.join("removable")).as_deref() == Some("1")
        || name.starts_with("mmcblk")
        || (name.starts_with("loop") && sys.join("loop/backing_file").exists());
    if !removable && !checks.force {
        return Err(refuse(
            path,
            format!("/sys/block/{name}/removable is 0: this may be a system disk; check `lsblk -o NAME,SIZE,RM,TRAN,MODEL` and pass --force if it really is the card"),
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                refuse(path, "the device is in use (opened exclusively elsewhere, mounted, or a swap/RAID/LVM member)")
            } else {
                refuse(path, format!("{e}; run as root or add yourself to the `disk` group"))
            }
        })?;
    let size = blk_size(&file).map_err(|e| refuse(path, format!("cannot read its size: {e}")))?;
    if size < image_size {
        return Err(refuse(
            path,
            format!(
                "it holds {size} bytes, less than the image's {image_size}; use a card of at least {} MB",
                image_size.div_ceil(1_000_000)
            ),
        ));
    }
    if size > MAX_CARD_BYTES && !checks.force {
        return Err(refuse(
            path,
            format!(
                "it holds {} GB, more than kiln's {} GiB limit for a card; pass --force if it really is the card",
                size / 1_000_000_000,
                MAX_CARD_BYTES >> 30
            ),
        ));
    }
    Ok(Target { path: path.to_path_buf(), kind: Kind::Block(name), size, file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_escapes() {
        assert_eq!(unescape("/media/my\\040card"), "/media/my card");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
