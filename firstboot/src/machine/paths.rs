//! Paths on the machine as seen under `--root`: [`under`] joins a node path to
//! the root, and [`contained`] resolves a path that comes from input (a `[pki]`
//! file, a home directory, a CNI manifest) component by component, so neither
//! `..` nor a symlink can lead outside the root.

use crate::http::escape;
use std::io::{Error, ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// `root` + an absolute path.
pub fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// Symlinks followed while resolving one path, as the kernel's `MAXSYMLINKS`.
const MAX_SYMLINKS: usize = 40;

/// Resolves `path` (absolute, as seen on the node) under `root` component by
/// component, the way the kernel resolves it inside a chroot: `.` is dropped,
/// `..` goes up one level, a symlink's target is followed (an absolute target
/// from `root`). A `..` that would leave `root` — directly or through a
/// symlink — is an error, as are control characters and symlink loops.
/// Components that do not exist yet are kept as they are (a file to create).
pub fn contained(root: &Path, path: &str) -> Result<PathBuf, String> {
    if path.is_empty() || path.chars().any(char::is_control) {
        return Err(format!("{}: an empty path or one with control characters", escape(path)));
    }
    let escapes = || format!("{}: leads outside the root ({})", escape(path), root.display());
    let mut stack: Vec<std::ffi::OsString> = Vec::new();
    let mut todo: Vec<std::ffi::OsString> = Path::new(path)
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            stack.pop().ok_or_else(escapes)?;
            continue;
        }
        let here: PathBuf = stack.iter().fold(root.to_path_buf(), |p, c| p.join(c)).join(&c);
        match std::fs::symlink_metadata(&here) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(format!("{}: too many levels of symbolic links", escape(path)));
                }
                let target = std::fs::read_link(&here).map_err(|e| format!("{}: {e}", escape(path)))?;
                if target.is_absolute() {
                    stack.clear();
                }
                for t in target.components().rev() {
                    match t {
                        Component::Normal(n) => todo.push(n.to_os_string()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => stack.push(c),
        }
    }
    Ok(stack.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
}

/// Reads a regular file of at most `max` bytes; anything larger, a FIFO or a
/// device is an error naming the limit (user-data and PKI files are KiB).
pub fn read_capped(path: &Path, max: usize) -> Result<Vec<u8>, String> {
    read_file_capped(path, max).map_err(|e| e.to_string())
}

/// Where `user`'s admin kubeconfig goes: `~/.kube/config` from `passwd` (the text
/// of `/etc/passwd`), resolved under `root` by [`contained`], with the user's
/// uid and gid. An unknown user or a home that leads outside the root is an error.
pub fn admin_kubeconfig(root: &Path, passwd: &str, user: &str) -> Result<(PathBuf, Option<u32>, Option<u32>), String> {
    let f = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 6 && f[0] == user)
        .ok_or_else(|| format!("admin_user {} is not in /etc/passwd; no kubeconfig written", escape(user)))?;
    let home = f[5];
    if !home.starts_with('/') {
        return Err(format!("admin_user {}: home {} is not an absolute path", escape(user), escape(home)));
    }
    let path = contained(root, &format!("{home}/.kube/config"))
        .map_err(|e| format!("admin_user {}: {e}; no kubeconfig written", escape(user)))?;
    Ok((path, f[2].parse().ok(), f[3].parse().ok()))
}

/// Reads at most `max` bytes of the regular file `p` as it is (an option's file,
/// `--cmdline FILE`; `files::read_capped` resolves a node path first). Opened
/// non-blocking, so a FIFO cannot hang the read; anything but a regular file, or a
/// larger one, is an error naming the limit.
pub fn read_file_capped(p: &Path, max: usize) -> Result<Vec<u8>, Error> {
    let at = |e: Error| Error::new(e.kind(), format!("{}: {e}", p.display()));
    let f =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(p).map_err(at)?;
    let md = f.metadata().map_err(at)?;
    if !md.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, format!("{}: not a regular file", p.display())));
    }
    let mut out = Vec::new();
    f.take(max as u64 + 1).read_to_end(&mut out).map_err(at)?;
    if out.len() > max {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("{}: larger than kiln-firstboot's {} KiB limit", p.display(), max >> 10),
        ));
    }
    Ok(out)
}
