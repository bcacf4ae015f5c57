//! File helpers every stage uses: reading only regular files, hashing while
//! reading, atomic replacement of a file, and `flock(2)` locks that tell a
//! live writer from a dead one.
//!
//! * [`open_regular`]: a local file is read only if it is a regular file (a
//!   FIFO would block, `/dev/zero` never ends); [`hash_regular`] streams one
//!   through sha256, so that a reader can compare it with its pin;
//!   [`HashingReader`] hashes whatever is read through it (a tarball while
//!   it is unpacked).
//! * [`write_atomic`]: a temporary file beside the target, written with its
//!   mode, synced and renamed over it — a reader sees the old file or the
//!   new one, never a part.
//! * [`try_lock`], [`probe_lock`]: a writer holds the lock of its temporary
//!   file or directory for as long as it lives, so a later run removes only
//!   what a killed writer left (the kernel drops the lock with the process).
//!
//! The input stage (fetch, cache, mirror), the outputs (packers, the
//! manifest, the staging directory), the cluster and user-data writers all
//! use these; none of them reaches into another stage for a file helper.

use crate::error::{Error, IoContext, Result};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Opens a local file for reading only if it is a regular file: a FIFO is
/// opened without blocking and refused, a device (`/dev/zero`) is refused.
pub fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, device or directory is never read)",
        ));
    }
    Ok(f)
}

/// The size and sha256 (hex) of the regular file at `path`, streamed
/// ([`open_regular`]: anything else is an error).
pub fn hash_regular(path: &Path) -> io::Result<(u64, String)> {
    open_regular(path).and_then(|mut f| crate::hash::copy_hashed(&mut f, &mut io::sink(), |_| {}))
}

/// A reader that hashes everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        use sha2::Digest;
        HashingReader { inner, hasher: sha2::Sha256::new() }
    }
    /// The sha256 (hex) of everything read so far.
    pub fn finish(self) -> String {
        use sha2::Digest;
        crate::hash::hex(&self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Writes `data` to `path` through a temporary file in the same directory and
/// a rename, with `mode` set before any byte is written (narrowed by the
/// umask, as `open(2)` does).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    replace(path, data, mode, false)
}

/// [`write_atomic`] with exactly `mode`, whatever the umask: for files whose
/// mode is part of what they promise (a secret 0600, a public 0644).
pub fn write_atomic_exact(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    replace(path, data, mode, true)
}

fn replace(path: &Path, data: &[u8], mode: u32, exact: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().to_string()) else {
        return Err(Error::config(format!("{}: names a directory, not a file; give a file name", path.display())));
    };
    if path.is_dir() {
        return Err(Error::config(format!(
            "{} is a directory; give a file name inside it, e.g. {}",
            path.display(),
            path.join("out").display()
        )));
    }
    match fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::config(format!("{} is not a directory; choose another output path", dir.display())))
        }
        Err(_) => {
            return Err(Error::config(format!(
                "{}/ does not exist: create it (mkdir -p {}) or choose another output path",
                dir.display(),
                dir.display()
            )))
        }
    }
    let tmp = dir.join(format!(".{name}.kiln-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).io_ctx(tmp.display())?;
        f.write_all(data).io_ctx(tmp.display())?;
        f.sync_all().io_ctx(tmp.display())?;
        if exact {
            fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).io_ctx(tmp.display())?;
        }
        fs::rename(&tmp, path).io_ctx(path.display())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Takes an exclusive `flock(2)` on `file` without waiting: false when
/// another open file description holds it (its process is alive: the kernel
/// drops the lock with the last descriptor, whatever killed the process).
pub fn try_lock(file: &File) -> bool {
    // SAFETY: flock(2) on a descriptor `file` owns; no memory is shared.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// What [`probe_lock`] found at a lock file's path.
#[derive(Debug)]
pub enum LockState {
    /// No such file.
    Absent,
    /// A running process holds it.
    Held,
    /// Nobody holds it (its owner is gone); the lock is now ours while the file is open.
    Free(File),
}

/// Whether a running process holds the `flock(2)` lock of the file at `path`.
pub fn probe_lock(path: &Path) -> LockState {
    match File::open(path) {
        Err(_) => LockState::Absent,
        Ok(f) if try_lock(&f) => LockState::Free(f),
        Ok(_) => LockState::Held,
    }
}
