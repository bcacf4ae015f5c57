//! `kiln mirror`: every pinned artifact of some profiles, verified, in a
//! directory laid out as upstream's URL paths — what `kiln build --mirror DIR`
//! (with or without `--offline`) reads.
//!
//! The download path is `kiln build`'s: [`fetch::fetch_each`] fills the
//! content-addressed [`Cache`] (mirror, retries, deadline, streaming sha256),
//! then each file is copied from the cache into the directory, hashed again
//! on the way, into a temporary file beside its destination and renamed into
//! place. A file that already holds the pinned bytes is kept; any other file
//! at the path is replaced. Nothing is ever written outside the directory:
//! every path comes from [`fetch::mirror_path`] (which refuses `..` and
//! friends), and every directory on the way must be a real directory, not a
//! symbolic link.
//!
//! The profiles' container images go into the same directory as an OCI
//! image layout, `oci/` (`crate::inputs::image_mirror`, which drives this
//! module's [`mirror`] first).
//!
//! [`mirror`] takes a plain [`MirrorOptions`]; `kiln mirror`'s driver
//! (`commands/mirror.rs`) builds it from the command line.

use crate::error::{Error, IoContext, Result};
use crate::hash;
use crate::inputs::cache::Cache;
use crate::inputs::fetch::{self, FetchOptions};
use crate::inputs::profile::{Arch, Artifact, Profile};
use crate::progress::{human_bytes, Progress};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Options for [`mirror`].
#[derive(Debug, Clone)]
pub struct MirrorOptions {
    /// The mirror directory to fill.
    pub out: PathBuf,
    /// Only these architectures (empty: every one each profile lists).
    pub archs: Vec<Arch>,
    /// Download cache (default `$XDG_CACHE_HOME/kiln`).
    pub cache_dir: Option<PathBuf>,
    /// Where to fetch from, and how.
    pub fetch: FetchOptions,
}

/// What happened to one file of the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    /// It was not there and has been written.
    #[serde(rename = "downloaded")]
    Downloaded,
    /// It was there with the pinned sha256 and was left alone.
    #[serde(rename = "already present")]
    AlreadyPresent,
    /// Something else was at its path (other bytes, a link, a FIFO); it has been replaced.
    #[serde(rename = "replaced")]
    Replaced,
}

impl Status {
    /// The status as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Downloaded => "downloaded",
            Status::AlreadyPresent => "already present",
            Status::Replaced => "replaced",
        }
    }
}

/// One file of the mirror.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// Artifact name (`kubelet`, `base-image`, …).
    pub name: String,
    /// Upstream version.
    pub version: String,
    /// Architecture (the first one needing it, when several share the file).
    pub arch: String,
    /// Upstream URL.
    pub url: String,
    /// Path inside the mirror directory, `/`-separated.
    pub path: String,
    /// Pinned sha256.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// What kiln did.
    pub status: Status,
    /// Profiles that need the file.
    pub profiles: Vec<String>,
}

/// What [`mirror`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The mirror directory.
    pub dir: PathBuf,
    /// Every file the profiles need, sorted by path.
    pub files: Vec<Item>,
}

impl Report {
    /// Files with this status.
    pub fn count(&self, status: Status) -> usize {
        self.files.iter().filter(|f| f.status == status).count()
    }

    /// Bytes written into the directory by this run.
    pub fn written(&self) -> u64 {
        self.files.iter().filter(|f| f.status != Status::AlreadyPresent).map(|f| f.size).sum()
    }

    /// One aligned line per file (name, version, arch, size, status, path), then the totals.
    pub fn table(&self) -> String {
        let rows: Vec<[String; 6]> = self
            .files
            .iter()
            .map(|f| {
                [
                    f.name.clone(),
                    f.version.clone(),
                    f.arch.clone(),
                    human_bytes(f.size),
                    f.status.as_str().to_string(),
                    f.path.clone(),
                ]
            })
            .collect();
        let mut widths = [0usize; 5];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &rows {
            for (w, cell) in widths.iter().zip(row) {
                out.push_str(&format!("{cell:<w$}  "));
            }
            out.push_str(&row[5]);
            out.push('\n');
        }
        out.push_str(&self.totals());
        out.push('\n');
        out
    }

    /// The totals line.
    pub fn totals(&self) -> String {
        let total: u64 = self.files.iter().map(|f| f.size).sum();
        format!(
            "{}: {} file(s), {}: {} downloaded, {} already present, {} replaced ({} written)",
            self.dir.display(),
            self.files.len(),
            human_bytes(total),
            self.count(Status::Downloaded),
            self.count(Status::AlreadyPresent),
            self.count(Status::Replaced),
            human_bytes(self.written())
        )
    }

    /// The report as JSON (`files` plus `totals`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "dir": self.dir,
            "files": self.files,
            "totals": {
                "files": self.files.len(),
                "bytes": self.files.iter().map(|f| f.size).sum::<u64>(),
                "downloaded": self.count(Status::Downloaded),
                "already_present": self.count(Status::AlreadyPresent),
                "replaced": self.count(Status::Replaced),
                "bytes_written": self.written(),
            },
        })
    }
}

/// One file the profiles need: the artifact, its path in the directory and who needs it.
#[derive(Debug, Clone)]
pub(crate) struct Wanted {
    /// The file, as an artifact (its sha256 and size are the pin).
    pub(crate) artifact: Artifact,
    /// Its path in the mirror directory.
    pub(crate) rel: PathBuf,
    /// The profiles that need it.
    pub(crate) profiles: Vec<String>,
}

/// Fills `opts.out` with every artifact (and `[base_image]`) of `profiles`
/// for the chosen architectures. Files already holding their pinned bytes
/// are kept. When some artifacts cannot be fetched, the others are still
/// written and the error lists every failure.
pub fn mirror(profiles: &[Profile], opts: &MirrorOptions, progress: &Progress) -> Result<Report> {
    let wanted = plan(profiles, &opts.archs)?;
    prepare_dir(&opts.out)?;
    let mut found = Vec::with_capacity(wanted.len());
    for w in &wanted {
        found.push(inspect(&opts.out, w)?);
    }
    let todo: Vec<Artifact> = wanted
        .iter()
        .zip(&found)
        .filter(|(_, f)| !matches!(f, Found::Right(_)))
        .map(|(w, _)| w.artifact.clone())
        .collect();
    progress.step(format!(
        "mirror {}: {} file(s) needed, {} already present, {} to fetch",
        opts.out.display(),
        wanted.len(),
        wanted.len() - todo.len(),
        todo.len()
    ));
    let (blobs, failure) = fetch_into_cache(opts, &todo, progress)?;
    let mut files = Vec::with_capacity(wanted.len());
    for (w, f) in wanted.iter().zip(found) {
        let (status, size) = match f {
            Found::Right(size) => (Status::AlreadyPresent, size),
            other => {
                let blob = match blobs.get(&w.artifact.sha256) {
                    Some(b) => b,
                    None if failure.is_some() => continue, // listed in the error
                    None => {
                        return Err(Error::build(format!("{} vanished from the cache; run again", w.artifact.sha256)))
                    }
                };
                let size = install(&opts.out, &w.rel, blob, &w.artifact, opts)?;
                let status = if other == Found::Absent { Status::Downloaded } else { Status::Replaced };
                (status, size)
            }
        };
        files.push(item(w, status, size));
    }
    let report = Report { dir: opts.out.clone(), files };
    match failure {
        Some(e) => {
            progress.step(format!(
                "{} of {} file(s) in place in {}; the others could not be fetched:",
                report.files.len(),
                wanted.len(),
                opts.out.display()
            ));
            Err(e)
        }
        None => Ok(report),
    }
}

/// Fetches `todo` into the cache: the verified blob of each artifact that
/// could be fetched (by sha256) and the error summarising the others.
fn fetch_into_cache(
    opts: &MirrorOptions,
    todo: &[Artifact],
    progress: &Progress,
) -> Result<(BTreeMap<String, PathBuf>, Option<Error>)> {
    if todo.is_empty() {
        return Ok((BTreeMap::new(), None));
    }
    let cache = Cache::open(opts.cache_dir.as_deref())?;
    cache.clean_stale_tmp();
    let outcome = fetch::fetch_each(&cache, &opts.fetch, todo, progress)?;
    let failure =
        (!outcome.failures.is_empty()).then(|| fetch::failure_report(&outcome.failures, outcome.fetched, &opts.fetch));
    let blobs = todo.iter().zip(outcome.blobs).filter_map(|(a, b)| Some((a.sha256.clone(), b?))).collect();
    Ok((blobs, failure))
}

pub(crate) fn item(w: &Wanted, status: Status, size: u64) -> Item {
    let a = &w.artifact;
    let path: Vec<String> = w.rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    Item {
        name: a.name.clone(),
        version: a.version.clone(),
        arch: a.arch.to_string(),
        url: a.url.clone(),
        path: path.join("/"),
        sha256: a.sha256.clone(),
        size,
        status,
        profiles: w.profiles.clone(),
    }
}

/// Every file the profiles need, one per path, sorted by path. Two pins
/// for one path (the host is dropped, so two hosts can collide) are refused.
fn plan(profiles: &[Profile], archs: &[Arch]) -> Result<Vec<Wanted>> {
    let mut by_path: BTreeMap<PathBuf, Wanted> = BTreeMap::new();
    for p in profiles {
        for arch in archs_of(p, archs)? {
            for a in artifacts_of(p, arch)? {
                add(&mut by_path, p, a)?;
            }
        }
    }
    Ok(by_path.into_values().collect())
}

/// The architectures of `p` to mirror: `wanted` ∩ the profile's (all of them when `wanted` is empty).
pub(crate) fn archs_of(p: &Profile, wanted: &[Arch]) -> Result<Vec<Arch>> {
    let listed = p.architectures();
    if wanted.is_empty() {
        return Ok(listed);
    }
    let chosen: Vec<Arch> = listed.iter().copied().filter(|a| wanted.contains(a)).collect();
    if chosen.is_empty() {
        let names = |v: &[Arch]| v.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ");
        return Err(Error::config(format!(
            "{}: profile {} lists only {}, none of --arch {}; drop the profile or add one of its architectures",
            p.path.display(),
            p.name(),
            names(&listed),
            names(wanted)
        )));
    }
    Ok(chosen)
}

/// The profile's artifacts for `arch`, and its `[base_image]` if it has one.
fn artifacts_of(p: &Profile, arch: Arch) -> Result<Vec<Artifact>> {
    let mut all = p.artifacts_for(arch)?;
    if let Some(base) = &p.doc.base_image {
        all.push(base.get_ref().artifact(p, arch)?);
    }
    Ok(all)
}

fn add(by_path: &mut BTreeMap<PathBuf, Wanted>, p: &Profile, a: Artifact) -> Result<()> {
    let rel = fetch::mirror_path(&a.url)
        .map_err(|why| Error::config(format!("{}: artifact `{}`: {why}", p.path.display(), a.name)))?;
    match by_path.get_mut(&rel) {
        None => {
            by_path.insert(rel.clone(), Wanted { artifact: a, rel, profiles: vec![p.name().to_string()] });
        }
        Some(w) if w.artifact.sha256 == a.sha256 => {
            if !w.profiles.iter().any(|n| n == p.name()) {
                w.profiles.push(p.name().to_string());
            }
        }
        Some(w) => {
            let b = &w.artifact;
            return Err(Error::config(format!(
                "{} needs two different files: {} {} ({}) from {} pinned sha256 {} (profile {}) and {} {} ({}) from {} pinned sha256 {} (profile {}); a mirror directory holds one file per path: mirror these profiles into separate directories",
                rel.display(),
                b.name, b.version, b.arch, b.url, b.sha256, w.profiles.join(", "),
                a.name, a.version, a.arch, a.url, a.sha256, p.name()
            )));
        }
    }
    Ok(())
}

/// Creates the mirror directory; refuses a file, and the root directory.
fn prepare_dir(dir: &Path) -> Result<()> {
    if dir.as_os_str().is_empty() || dir.parent().is_none() {
        return Err(Error::config(format!(
            "--out `{}`: name a directory of its own for the mirror, such as /srv/kiln-mirror",
            dir.display()
        )));
    }
    fs::create_dir_all(dir).io_ctx(format!("creating the mirror directory {}", dir.display()))?;
    let meta = fs::metadata(dir).io_ctx(dir.display())?;
    if !meta.is_dir() {
        return Err(Error::config(format!("--out {} is not a directory", dir.display())));
    }
    Ok(())
}

/// What is at a file's path in the mirror directory now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// A regular file with the pinned sha256 (its size).
    Right(u64),
    /// Something else: other bytes, a symbolic link, a FIFO.
    Wrong,
    /// Nothing.
    Absent,
}

/// Looks at `dir/rel` (reading nothing but a regular file, hashed against
/// the pin), removing temporary files a killed kiln left beside it.
pub(crate) fn inspect(dir: &Path, w: &Wanted) -> Result<Found> {
    if !walk_parents(dir, &w.rel, false)? {
        return Ok(Found::Absent);
    }
    let path = dir.join(&w.rel);
    remove_stale_temps(&path);
    let meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Absent),
        Err(e) => return Err(Error::build(format!("{}: {e}", path.display()))),
    };
    if meta.is_dir() {
        return Err(Error::build(format!(
            "{} is a directory, where the mirror needs {} {} ({}); move it away",
            path.display(),
            w.artifact.name,
            w.artifact.version,
            w.artifact.arch
        )));
    }
    if !meta.is_file() || w.artifact.size.is_some_and(|s| s != meta.len()) {
        return Ok(Found::Wrong);
    }
    let (n, sha) = crate::io::hash_regular(&path).io_ctx(path.display())?;
    Ok(if sha == w.artifact.sha256 { Found::Right(n) } else { Found::Wrong })
}

/// Checks that every directory between `dir` and `dir/rel` is a real
/// directory (never a symbolic link, which could lead outside `dir`),
/// creating the missing ones when `create`. Returns whether they all exist.
pub(crate) fn walk_parents(dir: &Path, rel: &Path, create: bool) -> Result<bool> {
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Error::build(format!("refusing mirror path `{}`: not a plain relative path", rel.display())));
    }
    let mut at = dir.to_path_buf();
    for c in rel.parent().map(Path::components).into_iter().flatten() {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::build(format!(
                    "{} is a symbolic link; kiln mirror writes only into real directories under {}: replace the link by a directory",
                    at.display(),
                    dir.display()
                )))
            }
            Ok(_) => {
                return Err(Error::build(format!(
                    "{} is not a directory, but {} needs it to be one; move it away",
                    at.display(),
                    rel.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => match fs::create_dir(&at) {
                Ok(()) => {}
                // Created meanwhile (another kiln): check it again.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return walk_parents(dir, rel, create),
                Err(e) => return Err(Error::build(format!("creating {}: {e}", at.display()))),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::build(format!("{}: {e}", at.display()))),
        }
    }
    Ok(true)
}

/// Copies the verified cache entry `blob` to `dir/rel`: into a temporary
/// file beside it (hashed against the pin on the way, synced), then renamed
/// over whatever was there. Returns the size.
pub(crate) fn install(dir: &Path, rel: &Path, blob: &Path, a: &Artifact, opts: &MirrorOptions) -> Result<u64> {
    walk_parents(dir, rel, true)?;
    let target = dir.join(rel);
    let tmp = temp_beside(&target);
    // The temporary file stays open (and locked) until it is renamed.
    let result = copy_verified(blob, &tmp, a).and_then(|(n, _locked)| {
        fs::rename(&tmp, &target).io_ctx(format!("renaming {} to {}", tmp.display(), target.display()))?;
        Ok(n)
    });
    if let Err(e) = &result {
        let _ = fs::remove_file(&tmp);
        if e.kind == crate::error::Kind::Verify {
            // The entry was trusted by its stamp: make the next run hash and heal the cache.
            if let Ok(cache) = Cache::open(opts.cache_dir.as_deref()) {
                cache.forget_verified();
            }
        }
    }
    result
}

/// Copies `blob` to a new file `tmp` (mode 0644), holding a `flock(2)` on it
/// that marks its writer alive for [`remove_stale_temps`], and checks its
/// sha256 against the pin. Returns the size and the (still locked) file.
fn copy_verified(blob: &Path, tmp: &Path, a: &Artifact) -> Result<(u64, File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut src = crate::io::open_regular(blob).io_ctx(blob.display())?;
    let file: File = fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(tmp).io_ctx(tmp.display())?;
    if !crate::io::try_lock(&file) {
        return Err(Error::build(format!("{}: locked by another process", tmp.display())));
    }
    let mut out = BufWriter::new(file);
    let (n, sha) = hash::copy_hashed(&mut src, &mut out, |_| {}).io_ctx(tmp.display())?;
    let file = out.into_inner().map_err(|e| Error::build(format!("{}: {}", tmp.display(), e.error())))?;
    file.sync_all().io_ctx(tmp.display())?;
    if sha != a.sha256 {
        return Err(Error::verify(format!(
            "cache entry {} of {} {} ({}) changed on disk: sha256 {sha}, pinned {}; nothing was written to the mirror; run again (the next run hashes the cache and fetches it again)",
            blob.display(),
            a.name,
            a.version,
            a.arch,
            a.sha256
        )));
    }
    Ok((n, file))
}

/// Prefix of the temporary files written beside `target`.
fn temp_prefix(target: &Path) -> String {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    format!(".{name}.kiln-tmp-")
}

/// A fresh temporary path beside `target`: `.NAME.kiln-tmp-PID-N`.
fn temp_beside(target: &Path) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    target.with_file_name(format!("{}{}-{n}", temp_prefix(target), std::process::id()))
}

/// Removes temporary files beside `target` left by a kiln that was killed:
/// the ones no process holds the `flock(2)` of (a writer holds it until it
/// renames the file), exactly, whatever runs under the PID in the name now.
fn remove_stale_temps(target: &Path) {
    use crate::io::{probe_lock, LockState};
    let Some(parent) = target.parent() else { return };
    let prefix = temp_prefix(target);
    let Ok(entries) = fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(&prefix) || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if let LockState::Free(_held) = probe_lock(&e.path()) {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_parents_refuses_links_and_non_plain_paths() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("release")).unwrap();
        let e = walk_parents(d.path(), Path::new("release/v1/kubelet"), true).unwrap_err();
        assert!(e.message.contains("is a symbolic link"), "{e}");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0, "wrote through the link");
        for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
            assert!(walk_parents(d.path(), Path::new(bad), true).is_err(), "{bad}");
        }
        assert!(walk_parents(d.path(), Path::new("a/b/c"), true).unwrap());
        assert!(d.path().join("a/b").is_dir() && !d.path().join("a/b/c").exists());
        assert!(!walk_parents(d.path(), Path::new("x/y"), false).unwrap());
        assert!(!d.path().join("x").exists());
    }

    #[test]
    fn stale_temps_of_dead_processes_are_removed_and_live_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("kubelet");
        // pid_max is at most 2^22 on Linux: this process cannot exist.
        let dead = d.path().join(".kubelet.kiln-tmp-4194305-0");
        let live = temp_beside(&target);
        let other = d.path().join(".kubeadm.kiln-tmp-4194305-0");
        for p in [&dead, &live, &other] {
            fs::write(p, b"partial").unwrap();
        }
        // A live writer holds the lock of its temporary file.
        let writer = File::open(&live).unwrap();
        assert!(crate::io::try_lock(&writer));
        remove_stale_temps(&target);
        assert!(!dead.exists() && live.exists() && other.exists());
        // A temporary file whose PID runs but which nobody holds is a dead writer's.
        drop(writer);
        remove_stale_temps(&target);
        assert!(!live.exists());
    }
}
