//! Where the programs kiln-firstboot runs are found: kubeadm and kubectl in the
//! image's bin dir (then `PATH`), the host's own tools (journal, runtime, network)
//! only under the root a test gives.

use crate::machine::paths::under;
use std::path::{Path, PathBuf};

/// Finds an executable: the image's bin dir (under root) first, then `PATH`.
pub fn which(root: &Path, bin_dir: &str, name: &str) -> PathBuf {
    let mut dirs = vec![under(root, bin_dir)];
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file()).unwrap_or_else(|| PathBuf::from(name))
}

/// A helper program for the host itself (journal, runtime, network): on the real
/// root from the image's bin dir or `PATH`; on a scratch root only from the root's
/// own directories, so a test never reads or changes the host through it.
pub fn host_tool(root: &Path, bin_dir: &str, name: &str) -> Option<PathBuf> {
    if root == Path::new("/") {
        let p = which(root, bin_dir, name);
        return p.is_absolute().then_some(p);
    }
    [bin_dir, "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| under(root, d).join(name))
        .find(|p| p.is_file())
}
