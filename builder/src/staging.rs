//! Atomic output: everything is written to a staging directory next to the
//! output directory and renamed into it only when the whole build succeeded.
//!
//! A failed build removes its staging directory; a killed one leaves it next
//! to (never inside) the output directory, and the next build removes it.

use crate::error::{IoContext, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// A staging directory that is removed when dropped.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    out: PathBuf,
}

fn prefix(out: &Path) -> String {
    let name = out.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "out".into());
    format!(".{name}.kiln-staging-")
}

fn parent(out: &Path) -> PathBuf {
    match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl Staging {
    /// Creates `<parent>/.<out>.kiln-staging-<pid>` for output directory `out`,
    /// after removing staging directories of builds that are no longer running.
    pub fn new(out: &Path) -> Result<Staging> {
        let parent = parent(out);
        fs::create_dir_all(&parent).io_ctx(parent.display())?;
        let pre = prefix(out);
        if let Ok(rd) = fs::read_dir(&parent) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if let Some(pid) = name.strip_prefix(&pre).and_then(|p| p.parse::<u32>().ok()) {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        let _ = fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let dir = parent.join(format!("{pre}{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).io_ctx(dir.display())?;
        Ok(Staging { dir, out: out.to_path_buf() })
    }

    /// Path of a file being staged.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Renames the staged files, in order, into the output directory.
    /// Put the file that marks completion (`SHA256SUMS`) last.
    pub fn commit(self, names: &[String]) -> Result<()> {
        fs::create_dir_all(&self.out).io_ctx(self.out.display())?;
        for n in names {
            let from = self.dir.join(n);
            let to = self.out.join(n);
            fs::rename(&from, &to).io_ctx(format!("moving {} to {}", from.display(), to.display()))?;
            failpoint("commit-after-first-rename");
        }
        Ok(())
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

/// Writes `data` to `path` through a temporary file in the same directory and
/// a rename, with `mode` set before any byte is written.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.kiln-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).io_ctx(tmp.display())?;
        f.write_all(data).io_ctx(tmp.display())?;
        f.sync_all().io_ctx(tmp.display())?;
        fs::rename(&tmp, path).io_ctx(path.display())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
