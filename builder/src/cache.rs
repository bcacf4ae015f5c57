//! Content-addressed download cache (`$XDG_CACHE_HOME/kiln`).
//!
//! Layout: `sha256/<hex>` holds verified downloads; `extract/<hex>/` holds the
//! regular files of a verified tarball plus `index.json`; `tmp/` holds work in
//! progress. Entries appear only by `rename(2)` after verification, so
//! concurrent builds and killed builds never leave a poisoned entry: the worst
//! case is an orphaned file under `tmp/`, which is never read.
//!
//! Nothing on disk is trusted twice: every build re-hashes the blobs it uses
//! ([`Cache::check`]; a corrupt one is removed and fetched again), lists a
//! tarball's members from the verified blob itself and re-extracts when the
//! extraction on disk differs ([`Cache::extract`]), and the writers hash every
//! file again as they pack it.

use crate::error::{Error, IoContext, Result};
use crate::hash;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// The state of a cache entry, after hashing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Present and its bytes hash to its name.
    Valid(PathBuf),
    /// Not in the cache.
    Missing,
    /// Present with other bytes (this sha256): it has been removed.
    Corrupt(String),
}

/// One regular file extracted from a tarball.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Base name of the member.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the content.
    pub sha256: String,
    /// Mode bits recorded in the tarball.
    pub mode: u32,
    /// Location of the extracted file in the cache.
    #[serde(skip)]
    pub path: PathBuf,
}

impl Cache {
    /// Opens (creating) the cache at `dir`, or `$XDG_CACHE_HOME/kiln`, or `~/.cache/kiln`.
    pub fn open(dir: Option<&Path>) -> Result<Cache> {
        let root = match dir {
            Some(d) => d.to_path_buf(),
            None => default_dir()?,
        };
        for sub in ["sha256", "extract", "tmp"] {
            fs::create_dir_all(root.join(sub)).io_ctx(format!("creating cache {}", root.join(sub).display()))?;
        }
        Ok(Cache { root })
    }

    /// The cache's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a verified download with this digest lives.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(sha256)
    }

    /// The verified download with this digest, if cached.
    pub fn lookup(&self, sha256: &str) -> Option<PathBuf> {
        let p = self.blob_path(sha256);
        p.is_file().then_some(p)
    }

    /// Hashes the entry `sha256`; a corrupt entry (and its extraction) is
    /// removed so that it can be fetched again.
    pub fn check(&self, sha256: &str) -> Result<Entry> {
        let p = self.blob_path(sha256);
        if fs::symlink_metadata(&p).is_err() {
            return Ok(Entry::Missing);
        }
        let actual = crate::fetch::open_regular(&p)
            .and_then(|mut f| hash::copy_hashed(&mut f, &mut io::sink(), |_| {}))
            .map(|(_, h)| h)
            .unwrap_or_else(|e| format!("unreadable ({e})"));
        if actual == sha256 {
            return Ok(Entry::Valid(p));
        }
        self.remove(sha256)?;
        Ok(Entry::Corrupt(actual))
    }

    /// Removes the entry `sha256` and its extraction.
    fn remove(&self, sha256: &str) -> Result<()> {
        let p = self.blob_path(sha256);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(&p).io_ctx(format!("removing corrupt cache entry {}", p.display()))?
            }
            Ok(_) => fs::remove_file(&p).io_ctx(format!("removing corrupt cache entry {}", p.display()))?,
            Err(_) => {}
        }
        self.discard_extraction(sha256);
        Ok(())
    }

    /// Moves `extract/<sha256>` out of the way (atomically) and deletes it.
    fn discard_extraction(&self, sha256: &str) {
        let dir = self.root.join("extract").join(sha256);
        let aside = self.tmp_path("discard");
        if fs::rename(&dir, &aside).is_ok() {
            let _ = fs::remove_dir_all(&aside);
        }
    }

    /// A fresh temporary path under `tmp/` (same filesystem as the entries).
    pub fn tmp_path(&self, label: &str) -> PathBuf {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let label: String = label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        self.root.join("tmp").join(format!("{}-{n}-{label}", std::process::id()))
    }

    /// Moves a verified temporary file into place as the entry for `sha256`.
    pub fn commit(&self, tmp: &Path, sha256: &str) -> Result<PathBuf> {
        let dest = self.blob_path(sha256);
        fs::rename(tmp, &dest).io_ctx(format!("adding {} to the cache", dest.display()))?;
        Ok(dest)
    }

    /// The regular files of the cached tarball `sha256`, extracting it once.
    ///
    /// The member list always comes from the tarball itself, re-hashed while it
    /// is read: a cache entry altered on disk is caught here (exit 3) and
    /// removed. An existing extraction is used only when every member file on
    /// disk hashes to what the tarball holds (whatever `index.json` says);
    /// otherwise it is replaced by a fresh one.
    pub fn extract(&self, sha256: &str) -> Result<Vec<Member>> {
        let dir = self.root.join("extract").join(sha256);
        let blob = self.blob_path(sha256);
        let on_verify_error = |e: Error| {
            if e.kind == crate::error::Kind::Verify {
                let _ = self.remove(sha256);
            }
            e
        };
        if dir.is_dir() {
            let truth = extract_into(&blob, None, sha256).map_err(on_verify_error)?;
            let intact = truth.iter().all(|m| {
                crate::fetch::open_regular(&dir.join(&m.name))
                    .and_then(|mut f| hash::copy_hashed(&mut f, &mut io::sink(), |_| {}))
                    .is_ok_and(|(n, h)| n == m.size && h == m.sha256)
            });
            if intact {
                return Ok(with_paths(truth, &dir));
            }
            self.discard_extraction(sha256);
        }
        let tmp = self.tmp_path("extract");
        fs::create_dir_all(&tmp).io_ctx(tmp.display())?;
        let members = match extract_into(&blob, Some(&tmp), sha256) {
            Ok(m) => m,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(on_verify_error(e));
            }
        };
        let index = serde_json::to_string_pretty(&members).map_err(|e| Error::build(e.to_string()))?;
        fs::write(tmp.join("index.json"), index).io_ctx(tmp.display())?;
        match fs::rename(&tmp, &dir) {
            Ok(()) => {}
            // Another build extracted the same tarball first; theirs is identical
            // (and is checked the same way when it is used).
            Err(_) if dir.join("index.json").is_file() => {
                let _ = fs::remove_dir_all(&tmp);
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(Error::build(format!("{}: {e}", dir.display())));
            }
        }
        Ok(with_paths(members, &dir))
    }

    /// Removes temporary files left by builds that no longer run.
    pub fn clean_stale_tmp(&self) {
        let Ok(rd) = fs::read_dir(self.root.join("tmp")) else { return };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                    let p = e.path();
                    let _ = if p.is_dir() { fs::remove_dir_all(p) } else { fs::remove_file(p) };
                }
            }
        }
    }
}

fn with_paths(members: Vec<Member>, dir: &Path) -> Vec<Member> {
    members
        .into_iter()
        .map(|mut m| {
            m.path = dir.join(&m.name);
            m
        })
        .collect()
}

fn default_dir() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("kiln"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".cache").join("kiln")),
        None => Err(Error::config("no cache directory: set XDG_CACHE_HOME or HOME, or pass --cache DIR")),
    }
}

/// Hashes the tarball while extracting its regular files (flattened to base
/// names) into `dir`, or only listing and hashing them when `dir` is `None`.
fn extract_into(blob: &Path, dir: Option<&Path>, expect: &str) -> Result<Vec<Member>> {
    let file = crate::fetch::open_regular(blob).io_ctx(blob.display())?;
    let hasher = HashingReader::new(BufReader::new(file));
    let gz = flate2::read::GzDecoder::new(hasher);
    let mut archive = tar::Archive::new(gz);
    let mut members: Vec<Member> = Vec::new();
    let entries = archive.entries().map_err(|e| Error::build(format!("{}: not a tar archive: {e}", blob.display())))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::build(format!("{}: corrupt tarball: {e}", blob.display())))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(|e| Error::build(format!("{}: bad member name: {e}", blob.display())))?;
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().to_string()) else { continue };
        if members.iter().any(|m| m.name == name) {
            return Err(Error::build(format!(
                "{}: two members are named `{name}`; kiln installs tarball members by base name",
                blob.display()
            )));
        }
        let mode = entry.header().mode().unwrap_or(0o644);
        let (size, sha256, out_path) = match dir {
            Some(dir) => {
                let out_path = dir.join(&name);
                let mut out = File::create(&out_path).io_ctx(out_path.display())?;
                let (size, sha256) = hash::copy_hashed(&mut entry, &mut out, |_| {}).io_ctx(out_path.display())?;
                (size, sha256, out_path)
            }
            None => {
                let (size, sha256) = hash::copy_hashed(&mut entry, &mut io::sink(), |_| {}).io_ctx(blob.display())?;
                (size, sha256, PathBuf::new())
            }
        };
        members.push(Member { name, size, sha256, mode, path: out_path });
    }
    // Drain whatever follows the archive so the whole file is hashed.
    let mut gz = archive.into_inner();
    io::copy(&mut gz, &mut io::sink()).io_ctx(blob.display())?;
    let actual = gz.into_inner().finish();
    if actual != expect {
        return Err(Error::verify(format!(
            "cached tarball {} is corrupt: expected sha256 {expect}, found {actual}; it was removed, run the build again to fetch it",
            blob.display()
        )));
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(members)
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
        hash::hex(&self.hasher.finalize())
    }
}

impl<R: io::Read> io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
