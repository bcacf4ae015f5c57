//! Every file kiln-firstboot writes, removes or reads at a fixed place, under `--root`.
//!
//! A path is resolved with the same resolver as the paths that come from input,
//! [`contained`]: component by component, an absolute symlink read from the
//! root as in a chroot, a `..` or a link that would leave the root an error. So a root
//! holding `etc/kubernetes/pki -> /elsewhere/pki` gets its CA keys in
//! `ROOT/elsewhere/pki`, never in the build host's `/elsewhere/pki` (issue 24, B15).
//!
//! Only the parent directory is resolved; the last component is never followed: a
//! file is written to a new temporary file in that directory (`O_CREAT|O_EXCL|
//! O_NOFOLLOW`), synced and renamed over the name, which replaces a symlink there
//! instead of writing through it. Missing directories are created one at a time, and
//! one that turns out to be a symlink (created since it was resolved) is an error.

use crate::machine::paths::{contained, read_file_capped};
use std::io::{Error, ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// The resolver's refusal as an I/O error (`InvalidInput`).
fn refused(e: String) -> Error {
    Error::new(ErrorKind::InvalidInput, e)
}

/// The node path (`/etc/...`) of `path`, a path under `root` as [`contained`] returns
/// it (the admin kubeconfig's place).
pub fn node_path(root: &Path, path: &Path) -> Result<String, Error> {
    let rel =
        path.strip_prefix(root).map_err(|_| refused(format!("{}: not under {}", path.display(), root.display())))?;
    let s = rel.to_str().ok_or_else(|| refused(format!("{}: not a UTF-8 path", path.display())))?;
    Ok(format!("/{s}"))
}

/// Resolves the node path `path` under `root` ([`contained`]), following every symlink within the
/// root: for reading.
pub fn resolve(root: &Path, path: &str) -> Result<PathBuf, Error> {
    contained(root, path).map_err(refused)
}

/// Resolves the directory of `path` under `root` and returns it with the last
/// component, which is not followed: for writing, removing and linking.
pub fn resolve_parent(root: &Path, path: &str) -> Result<(PathBuf, std::ffi::OsString), Error> {
    let p = Path::new(path);
    let name = match p.components().next_back() {
        Some(Component::Normal(n)) => n.to_os_string(),
        _ => return Err(refused(format!("{}: names no file", crate::http::escape(path)))),
    };
    let parent = p.parent().and_then(Path::to_str).unwrap_or("/");
    Ok((contained(root, parent).map_err(refused)?, name))
}

/// Creates `dir` (a path [`resolve`]d under `root`) one component at a time, mode
/// 0755; an existing component must be a directory, not a symlink.
pub fn create_dirs(root: &Path, dir: &Path) -> Result<(), Error> {
    let rel =
        dir.strip_prefix(root).map_err(|_| refused(format!("{}: not under {}", dir.display(), root.display())))?;
    let mut here = root.to_path_buf();
    for c in rel.components() {
        here.push(c);
        match std::fs::symlink_metadata(&here) {
            Ok(md) if md.is_dir() => continue,
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("{} is not a directory (a symlink or file appeared while writing)", here.display()),
                ))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::new(e.kind(), format!("{}: {e}", here.display()))),
        }
        match std::fs::DirBuilder::new().mode(0o755).create(&here) {
            Ok(()) => {}
            // Created by someone else since: checked like any existing component.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                if !std::fs::symlink_metadata(&here).map(|m| m.is_dir()).unwrap_or(false) {
                    return Err(Error::new(ErrorKind::AlreadyExists, format!("{} is not a directory", here.display())));
                }
            }
            Err(e) => return Err(Error::new(e.kind(), format!("{}: {e}", here.display()))),
        }
    }
    Ok(())
}

/// Resolves the directory `path` under `root` and creates what is missing of it
/// ([`create_dirs`]); returns where it is.
pub fn make_dir(root: &Path, path: &str) -> Result<PathBuf, Error> {
    let dir = resolve(root, path)?;
    create_dirs(root, &dir)?;
    Ok(dir)
}

/// Writes `data` to `path` under `root` atomically with `mode` (and `owner`, uid and
/// gid, when given): a new temporary file beside it, synced, renamed over it.
/// Returns where it went.
pub fn write_owned(
    root: &Path,
    path: &str,
    data: &[u8],
    mode: u32,
    owner: Option<(Option<u32>, Option<u32>)>,
) -> Result<PathBuf, Error> {
    let (dir, name) = resolve_parent(root, path)?;
    create_dirs(root, &dir)?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(&name);
    tmp_name.push(format!(".kiln-tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    // A temp of an earlier, killed run with the same pid: the name, never its target.
    let _ = std::fs::remove_file(&tmp);
    let dest = dir.join(&name);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(data)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, uid, gid)?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, &dest)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::new(e.kind(), format!("{}: {e}", dest.display())));
    }
    // The rename on disk, too (a power cut after `run` said it succeeded).
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(dest)
}

/// [`write_owned`] without changing the owner.
pub fn write(root: &Path, path: &str, data: &[u8], mode: u32) -> Result<PathBuf, Error> {
    write_owned(root, path, data, mode, None)
}

/// Removes `path` under `root`: a file or symlink itself (never a link's target), or a
/// directory with everything in it (`remove_dir_all` does not follow links inside).
/// `Ok(false)` when there was nothing to remove.
pub fn remove(root: &Path, path: &str) -> Result<bool, Error> {
    let (dir, name) = resolve_parent(root, path)?;
    let p = dir.join(name);
    let gone = match std::fs::symlink_metadata(&p) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => Err(e),
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(&p),
        Ok(_) => std::fs::remove_file(&p),
    };
    gone.map(|()| true).map_err(|e| Error::new(e.kind(), format!("{}: {e}", p.display())))
}

/// Creates the symlink `path -> target` under `root` (the link itself is not
/// followed; an existing entry of that name is an error, as `symlink(2)`).
pub fn symlink(root: &Path, path: &str, target: &Path) -> Result<(), Error> {
    let (dir, name) = resolve_parent(root, path)?;
    create_dirs(root, &dir)?;
    std::os::unix::fs::symlink(target, dir.join(name))
}

/// Overwrites an existing file in place (a `/proc/sys` setting, which cannot be
/// renamed over): resolved under `root`, opened without following a last symlink,
/// never created.
pub fn overwrite(root: &Path, path: &str, data: &[u8]) -> Result<(), Error> {
    let (dir, name) = resolve_parent(root, path)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.join(name))?;
    f.write_all(data)
}

/// Reads at most `max` bytes of the regular file `path` under `root` (links within
/// the root followed). Opened non-blocking, so a FIFO there cannot hang the read;
/// anything but a regular file, or a larger one, is an error naming the limit.
pub fn read_capped(root: &Path, path: &str, max: usize) -> Result<Vec<u8>, Error> {
    let p = resolve(root, path)?;
    read_file_capped(&p, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_through_an_absolute_link_stay_under_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let decoy = d.path().join("decoy");
        std::fs::create_dir_all(root.join("etc/kubernetes")).unwrap();
        std::fs::create_dir_all(&decoy).unwrap();
        std::os::unix::fs::symlink(&decoy, root.join("etc/kubernetes/pki")).unwrap();
        let at = write(&root, "/etc/kubernetes/pki/etcd/ca.key", b"k", 0o600).unwrap();
        assert!(at.starts_with(&root), "{}", at.display());
        assert_eq!(std::fs::read_dir(&decoy).unwrap().count(), 0);
        // A last component that is a link is replaced, not written through.
        std::fs::write(decoy.join("f"), "keep").unwrap();
        std::os::unix::fs::symlink(decoy.join("f"), root.join("etc/f")).unwrap();
        write(&root, "/etc/f", b"new", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(decoy.join("f")).unwrap(), "keep");
        assert!(remove(&root, "/etc/f").unwrap());
        assert!(decoy.join("f").exists());
        // Climbing out is refused.
        std::os::unix::fs::symlink("../..", root.join("etc/up")).unwrap();
        assert!(write(&root, "/etc/up/x", b"", 0o644).is_err());
    }
}
