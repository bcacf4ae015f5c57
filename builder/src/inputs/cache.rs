//! Content-addressed download cache (`$XDG_CACHE_HOME/kiln`).
//!
//! Layout: `sha256/<hex>` holds verified downloads; `extract/<hex>/` holds the
//! regular files of a verified tarball plus `index.json`; `tmp/` holds work in
//! progress. Entries appear only by `rename(2)` after verification, so
//! concurrent builds and killed builds never leave a poisoned entry: the worst
//! case is an orphaned file under `tmp/`, which is never read.
//!
//! Nothing on disk reaches an output unchecked: the writers hash every file
//! as they pack it and fail (exit 3) on a byte that differs from its pin.
//! Before that, [`Cache::check`] hashes a blob and [`Cache::extract`] lists a
//! tarball's members from the verified blob itself, so that a corrupt entry is
//! removed and fetched again before the build starts. Those two passes are
//! skipped for an entry whose **verified stamp** still matches: `verified/`
//! records, for each file that hashed right, its device, inode, size, mtime
//! and ctime (nanoseconds). Any write to the file, a `touch`, or a rename over
//! it changes one of them (ctime cannot be set back), so a changed file is
//! hashed again; a file changed less than [`RACY`] before it was stamped is
//! not stamped (git's "racy" rule: a write in the same clock tick would not
//! show). What a stamp cannot see (bits rotting under an unchanged inode) the
//! pack-time hash still catches, and then the build removes every stamp
//! ([`Cache::forget_verified`]) so the next build hashes and heals everything.

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

/// How a valid cache entry was found valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// Its bytes were hashed now.
    Hashed,
    /// Its verified stamp still matches: unchanged since it was hashed.
    Stamp,
}

/// The state of a cache entry, after checking it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Present and its bytes hash to its name (hashed now, or unchanged since).
    Valid(PathBuf, Verified),
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
        for sub in ["sha256", "extract", "tmp", "verified"] {
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

    /// Hashes the entry `sha256` (unless its verified stamp still matches); a
    /// corrupt entry (and its extraction) is removed so that it can be fetched again.
    pub fn check(&self, sha256: &str) -> Result<Entry> {
        let p = self.blob_path(sha256);
        if fs::symlink_metadata(&p).is_err() {
            return Ok(Entry::Missing);
        }
        let before = Stamp::of(&p);
        if before.is_some() && self.stamp_holds(&self.blob_stamp(sha256), &[(String::new(), p.clone())]) {
            return Ok(Entry::Valid(p, Verified::Stamp));
        }
        let actual = crate::io::hash_regular(&p).map(|(_, h)| h).unwrap_or_else(|e| format!("unreadable ({e})"));
        if actual == sha256 {
            if let Some(before) = before {
                self.write_stamp(&self.blob_stamp(sha256), &[(String::new(), p.clone(), before)]);
            }
            return Ok(Entry::Valid(p, Verified::Hashed));
        }
        self.remove(sha256)?;
        Ok(Entry::Corrupt(actual))
    }

    /// Removes every verified stamp: the next build hashes every entry it
    /// uses again (and removes and fetches again what is corrupt). Called when
    /// a cached file failed its pin while it was packed.
    pub fn forget_verified(&self) {
        let dir = self.root.join("verified");
        let aside = self.tmp_path("verified");
        if fs::rename(&dir, &aside).is_ok() {
            let _ = fs::remove_dir_all(&aside);
        }
        let _ = fs::create_dir_all(&dir);
    }

    fn blob_stamp(&self, sha256: &str) -> PathBuf {
        self.root.join("verified").join(sha256)
    }

    fn extract_stamp(&self, sha256: &str) -> PathBuf {
        self.root.join("verified").join(format!("{sha256}.extract"))
    }

    /// Whether the stamp file `stamp` lists exactly `files` (name, path), each
    /// with the stamp it has now.
    fn stamp_holds(&self, stamp: &Path, files: &[(String, PathBuf)]) -> bool {
        let Ok(text) = fs::read_to_string(stamp) else { return false };
        let recorded: Vec<&str> = text.lines().collect();
        recorded.len() == files.len()
            && files
                .iter()
                .zip(recorded)
                .all(|((name, path), line)| Stamp::of(path).is_some_and(|now| line == now.line(name)))
    }

    /// Writes a stamp file for `files` (name, path, stamp taken before they
    /// were hashed), unless one changed since or was changed too recently.
    fn write_stamp(&self, stamp: &Path, files: &[(String, PathBuf, Stamp)]) {
        let mut text = String::new();
        for (name, path, before) in files {
            match Stamp::of(path) {
                Some(now) if now == *before && !now.racy() => {
                    text.push_str(&now.line(name));
                    text.push('\n');
                }
                _ => return,
            }
        }
        let tmp = self.tmp_path("stamp");
        if fs::write(&tmp, text).is_err() || fs::rename(&tmp, stamp).is_err() {
            let _ = fs::remove_file(&tmp);
        }
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
            if let Some(members) = self.stamped_extraction(sha256, &dir) {
                return Ok(members);
            }
            let index = dir.join("index.json");
            let index_before = Stamp::of(&index);
            let truth = extract_into(&blob, None, sha256).map_err(on_verify_error)?;
            let mut stamps = Vec::with_capacity(truth.len() + 2);
            let intact = truth.iter().all(|m| {
                let path = dir.join(&m.name);
                let before = Stamp::of(&path);
                let ok = crate::io::hash_regular(&path).is_ok_and(|(n, h)| n == m.size && h == m.sha256);
                if let Some(before) = before {
                    stamps.push((m.name.clone(), path, before));
                }
                ok
            });
            if intact {
                // The index must say what the tarball says, to be read next time instead of it.
                let index_ok = fs::read_to_string(&index)
                    .ok()
                    .and_then(|t| serde_json::from_str::<Vec<Member>>(&t).ok())
                    .is_some_and(|listed| listed == truth);
                match (index_ok, index_before, Stamp::of(&blob)) {
                    (true, Some(ib), Some(bb)) if stamps.len() == truth.len() => {
                        stamps.insert(0, ("index.json".to_string(), index, ib));
                        stamps.insert(0, (String::new(), blob.clone(), bb));
                        self.write_stamp(&self.extract_stamp(sha256), &stamps);
                    }
                    _ => {}
                }
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

    /// The members of an extraction whose verified stamp still matches: the
    /// blob, `index.json` and every member file unchanged since they hashed
    /// right. `None` means: list and hash them again.
    fn stamped_extraction(&self, sha256: &str, dir: &Path) -> Option<Vec<Member>> {
        let members: Vec<Member> = serde_json::from_str(&fs::read_to_string(dir.join("index.json")).ok()?).ok()?;
        let mut files =
            vec![(String::new(), self.blob_path(sha256)), ("index.json".to_string(), dir.join("index.json"))];
        files.extend(members.iter().map(|m| (m.name.clone(), dir.join(&m.name))));
        self.stamp_holds(&self.extract_stamp(sha256), &files).then(|| with_paths(members, dir))
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
    let file = crate::io::open_regular(blob).io_ctx(blob.display())?;
    let hasher = crate::io::HashingReader::new(BufReader::new(file));
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

/// How long ago a file must have changed for its stamp to be trusted: a write
/// within the same timestamp tick as the stamp would not show in it.
pub const RACY: std::time::Duration = std::time::Duration::from_secs(2);

/// What `stat(2)` says of a regular file: enough to tell it was not written,
/// truncated, touched or replaced since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::symlink_metadata(path).ok()?;
        if !m.file_type().is_file() {
            return None;
        }
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        })
    }

    /// Whether the file changed less than [`RACY`] ago (or in the future).
    fn racy(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        now - self.ctime_ns.max(self.mtime_ns) < RACY.as_nanos() as i128
    }

    /// The stamp's line in a stamp file.
    fn line(&self, name: &str) -> String {
        format!("{name:?} {} {} {} {} {}", self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns)
    }
}
