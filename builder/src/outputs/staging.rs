//! Atomic output: every build writes into a staging directory and the output
//! directory changes as one unit.
//!
//! Layout, for `--out dist`:
//!
//! ```text
//! dist -> dist.gen/7          a symlink: what readers use (dist/SHA256SUMS, …)
//! dist.gen/7/                 the current generation: every output + manifest.json + SHA256SUMS
//! dist.gen/6/                 the previous one, kept for readers in the middle of it
//! dist.gen/lock               flock(2): one build commits at a time
//! dist.gen/staging-<pid>/     a build in progress
//! ```
//!
//! A build packs into its staging directory without any lock. To commit it
//! takes the lock, merges its section into the current `manifest.json`,
//! hard-links the other profiles' outputs from the current generation, renames
//! the staging directory to the next generation number and swaps the `dist`
//! symlink with one `rename(2)`. A reader of `dist/` therefore sees the old set
//! or the new set, never a mix; a build killed at any point leaves `dist`
//! pointing at a complete generation, and the next build removes the debris.

use crate::error::{Error, IoContext, Result};
use std::fs;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// A staging directory that is removed when dropped (unless committed).
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    out: PathBuf,
    gens: PathBuf,
}

/// The exclusive commit lock of one output directory; released when dropped.
#[derive(Debug)]
pub struct CommitLock {
    _file: fs::File,
}

fn parent(out: &Path) -> PathBuf {
    match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The output directory's own name (`dist`), refusing `.`, `..` and `/`.
fn out_name(out: &Path) -> Result<String> {
    match out.components().next_back() {
        Some(std::path::Component::Normal(n)) => Ok(n.to_string_lossy().into_owned()),
        _ => Err(Error::config(format!(
            "--out {}: name a directory of its own (e.g. dist); kiln makes it a link to the current generation of outputs",
            out.display()
        ))),
    }
}

/// `dist.gen` beside `dist`: generations, staging directories and the lock.
pub fn generations_dir(out: &Path) -> Result<PathBuf> {
    Ok(parent(out).join(format!("{}.gen", out_name(out)?)))
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn remove_any(p: &Path) {
    let _ = match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(_) => Ok(()),
    };
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Generation numbers present in `gens`, ascending.
fn generations(gens: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = fs::read_dir(gens)
        .map(|rd| rd.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect())
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// What `out` is now.
enum Current {
    /// Nothing there yet.
    Absent,
    /// Our symlink to generation `n`.
    Generation(u64),
    /// A plain directory (written by an older kiln, or made by hand).
    Directory,
}

fn current(out: &Path, name: &str) -> Result<Current> {
    let meta = match fs::symlink_metadata(out) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Current::Absent),
        Err(e) => return Err(Error::build(format!("{}: {e}", out.display()))),
    };
    if meta.is_dir() {
        return Ok(Current::Directory);
    }
    if meta.file_type().is_symlink() {
        let target = fs::read_link(out).io_ctx(out.display())?;
        let prefix = format!("{name}.gen/");
        if let Some(n) = target.to_str().and_then(|t| t.strip_prefix(&prefix)).and_then(|n| n.parse().ok()) {
            return Ok(Current::Generation(n));
        }
        return Err(Error::config(format!(
            "{} is a symlink to {} that kiln did not make; kiln keeps {0} as a link to {name}.gen/<N>: remove the link (serve {0} itself) or choose another --out",
            out.display(),
            target.display()
        )));
    }
    Err(Error::config(format!("{} exists and is not a directory; remove it or choose another --out", out.display())))
}

impl Staging {
    /// Creates `dist.gen/staging-<pid>` for output directory `out`, after
    /// removing staging directories of builds that are no longer running.
    pub fn new(out: &Path) -> Result<Staging> {
        let gens = generations_dir(out)?;
        fs::create_dir_all(&gens).io_ctx(format!("creating {}", gens.display()))?;
        if let Ok(rd) = fs::read_dir(&gens) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let pid = name
                    .strip_prefix("staging-")
                    .or_else(|| name.strip_prefix(".link-"))
                    .and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| p != std::process::id() && !pid_alive(p)) {
                    remove_any(&e.path());
                }
            }
        }
        let dir = gens.join(format!("staging-{}", std::process::id()));
        remove_any(&dir);
        fs::create_dir(&dir).io_ctx(dir.display())?;
        Ok(Staging { dir, out: out.to_path_buf(), gens })
    }

    /// Path of a file being staged.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Takes the commit lock of the output directory, waiting for another
    /// build's commit to finish; `waiting` is called once if it has to wait.
    pub fn lock(&self, waiting: impl FnOnce()) -> Result<CommitLock> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.gens.join("lock");
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .io_ctx(path.display())?;
        let fd = file.as_raw_fd();
        // SAFETY: flock(2) on a descriptor this function owns; no memory is shared.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            waiting();
            loop {
                // SAFETY: as above.
                if unsafe { libc::flock(fd, libc::LOCK_EX) } == 0 {
                    break;
                }
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(Error::build(format!("locking {}: {e}", path.display())));
                }
            }
        }
        Ok(CommitLock { _file: file })
    }

    /// Makes the staged files (this build's outputs, `manifest.json` and
    /// `SHA256SUMS`), plus `carried` (other profiles' outputs, linked from the
    /// current generation), the new contents of the output directory in one
    /// step. Holding `_lock` proves the caller took the commit lock.
    pub fn commit(self, _lock: &CommitLock, carried: &[String]) -> Result<()> {
        let name = out_name(&self.out)?;
        let now = current(&self.out, &name)?;
        if matches!(now, Current::Directory) {
            self.check_legacy(carried)?;
        }
        for f in carried {
            let from = self.out.join(f);
            let to = self.dir.join(f);
            if fs::hard_link(&from, &to).is_err() {
                fs::copy(&from, &to).io_ctx(format!("copying {} into the new generation", from.display()))?;
            }
        }
        // Everything staged reaches the disk before the switch makes it visible.
        for e in fs::read_dir(&self.dir).io_ctx(self.dir.display())?.flatten() {
            fs::File::open(e.path()).and_then(|f| f.sync_all()).io_ctx(e.path().display())?;
        }
        sync_dir(&self.dir);
        let n = generations(&self.gens).last().copied().unwrap_or(0).max(match now {
            Current::Generation(g) => g,
            _ => 0,
        }) + 1;
        let gen = self.gens.join(n.to_string());
        fs::rename(&self.dir, &gen).io_ctx(format!("moving {} to {}", self.dir.display(), gen.display()))?;
        sync_dir(&self.gens);
        failpoint("commit-after-first-rename");
        let link = self.gens.join(format!(".link-{}", std::process::id()));
        remove_any(&link);
        std::os::unix::fs::symlink(format!("{name}.gen/{n}"), &link).io_ctx(link.display())?;
        failpoint("commit-before-switch");
        let legacy = self.gens.join(format!("legacy-{}", std::process::id()));
        if matches!(now, Current::Directory) {
            // Once, from the layout of older kiln versions: the plain directory
            // moves aside (its files are already linked into the generation).
            fs::rename(&self.out, &legacy).io_ctx(format!("moving the old {} aside", self.out.display()))?;
        }
        fs::rename(&link, &self.out).io_ctx(format!("switching {} to {}", self.out.display(), gen.display()))?;
        sync_dir(&parent(&self.out));
        failpoint("commit-after-switch");
        // Keep the previous generation for readers still inside it; drop older ones.
        let keep = match now {
            Current::Generation(g) => Some(g),
            _ => None,
        };
        for g in generations(&self.gens) {
            if g != n && Some(g) != keep {
                remove_any(&self.gens.join(g.to_string()));
            }
        }
        remove_any(&legacy);
        Ok(())
    }

    /// An old-layout `dist/` is replaced only when it holds nothing but kiln's files.
    fn check_legacy(&self, carried: &[String]) -> Result<()> {
        let known = |n: &str| {
            carried.iter().any(|c| c == n)
                || n == crate::outputs::manifest::MANIFEST_NAME
                || n == crate::outputs::manifest::SUMS_NAME
                || self.dir.join(n).exists()
                || crate::outputs::manifest::Manifest::read(&self.out)
                    .profiles
                    .values()
                    .any(|p| p.outputs.iter().any(|o| o.file == n))
        };
        let strangers: Vec<String> = fs::read_dir(&self.out)
            .io_ctx(self.out.display())?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !known(n))
            .collect();
        if strangers.is_empty() {
            return Ok(());
        }
        Err(Error::config(format!(
            "{} holds files kiln did not write ({}); kiln now keeps {0} as a link to the current generation of outputs and would move them aside: move them elsewhere or choose another --out",
            self.out.display(),
            strangers.join(", ")
        )))
    }
}

/// Test-only failpoints, so tests can stop kiln at an exact step instead of
/// racing it. Never set `KILN_FAILPOINT` outside tests.
///
/// * `KILN_FAILPOINT=<name>`: the process aborts (like `kill -9`) when it
///   reaches failpoint `name` (e.g. `commit-after-first-rename`).
/// * `KILN_FAILPOINT=<name>:<path>`: at `name`, kiln creates the file `path`
///   and waits (at most two minutes) until something removes it.
pub fn failpoint(name: &str) {
    let Some(value) = std::env::var_os("KILN_FAILPOINT") else { return };
    let value = value.to_string_lossy();
    if value == name {
        std::process::abort();
    }
    if let Some(path) = value.strip_prefix(name).and_then(|r| r.strip_prefix(':')) {
        let path = Path::new(path);
        if fs::write(path, b"").is_ok() {
            let start = std::time::Instant::now();
            while path.exists() && start.elapsed() < std::time::Duration::from_secs(120) {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
