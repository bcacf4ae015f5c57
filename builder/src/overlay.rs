//! Overlays (`overlays/<name>/`): plain file trees merged into the image in profile order.
//!
//! Git carries only the executable bit, so modes and owners that matter live in
//! an optional `.kiln-overlay.toml` at the overlay's root:
//!
//! ```toml
//! [paths."etc/kubernetes/audit-policy.yaml"]
//! mode = "0600"
//! uid = 0
//! gid = 0
//! override = true   # may replace a file an earlier source wrote
//! ```
//!
//! Files named `.gitkeep` are skipped (they only keep empty directories in git).

use crate::error::{Error, IoContext, Result};
use crate::location;
use crate::profile::{parse_mode, Profile};
use crate::tree::{self, Content, Entry, Origin, Tree};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Name of the per-overlay manifest.
pub const MANIFEST: &str = ".kiln-overlay.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default)]
    paths: BTreeMap<String, PathMeta>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathMeta {
    mode: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
    #[serde(rename = "override", default)]
    replace: bool,
}

/// Merges the profile's overlays into `tree`, in order. Errors name the
/// profile line that lists the overlay (exit 2).
pub fn apply(profile: &Profile, tree: &mut Tree) -> Result<()> {
    let root = profile.overlays_root();
    for entry in &profile.doc.overlays {
        let name = entry.get_ref();
        let at = |msg: &str| Error::config(profile.at(entry.span(), &format!("overlay `{name}`: {msg}")));
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(at("overlay names are directory names under overlays/"));
        }
        let dir = root.join(name);
        if !dir.is_dir() {
            return Err(at(&format!("{} is not a directory; create it or remove the name", dir.display())));
        }
        apply_one(name, &dir, tree).map_err(|e| match e.kind {
            crate::error::Kind::Config => at(&e.message),
            _ => e,
        })?;
    }
    Ok(())
}

fn load_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let Ok(text) = fs::read_to_string(&path) else { return Ok(Manifest::default()) };
    toml::from_str(&text)
        .map_err(|e| Error::config(location::at(&path, &text, e.span(), &location::explain_toml_message(e.message()))))
}

fn apply_one(name: &str, dir: &Path, tree: &mut Tree) -> Result<()> {
    let manifest = load_manifest(dir)?;
    let mut files = Vec::new();
    walk(dir, Path::new(""), &mut files)?;
    let mut used = std::collections::BTreeSet::new();
    for rel in files {
        let rel_str = rel.to_string_lossy().to_string();
        let full = dir.join(&rel);
        let meta = fs::symlink_metadata(&full).io_ctx(full.display())?;
        let m = manifest.paths.get(&rel_str);
        if m.is_some() {
            used.insert(rel_str.clone());
        }
        let origin = Origin::Overlay { overlay: name.to_string(), path: rel_str.clone() };
        let ft = meta.file_type();
        let mut entry = if ft.is_symlink() {
            let target = fs::read_link(&full).io_ctx(full.display())?;
            check_link(&rel, &target)?;
            Entry::symlink(target.to_string_lossy().to_string(), origin)
        } else if ft.is_dir() {
            Entry::dir(0o755, origin)
        } else if ft.is_file() {
            let exec = meta.permissions().mode() & 0o111 != 0;
            let content = Content::Disk { path: full.clone(), size: meta.len(), expect_sha256: None };
            Entry::file(content, if exec { 0o755 } else { 0o644 }, origin)
        } else {
            return Err(Error::config(format!(
                "{rel_str} is not a file, directory or symlink; images carry no device nodes, fifos or sockets"
            )));
        };
        let mut replace = false;
        if let Some(m) = m {
            if let Some(mode) = &m.mode {
                entry.mode = parse_mode(mode).ok_or_else(|| {
                    Error::config(format!("{MANIFEST}: mode `{mode}` for {rel_str} is not octal like \"0644\""))
                })?;
            }
            entry.uid = m.uid.unwrap_or(0);
            entry.gid = m.gid.unwrap_or(0);
            replace = m.replace;
        }
        tree.insert(&format!("/{rel_str}"), entry, replace)?;
    }
    for p in manifest.paths.keys() {
        tree::key(p)?;
        if !used.contains(p.trim_matches('/')) {
            return Err(Error::config(format!("{MANIFEST} names `{p}`, which is not in the overlay")));
        }
    }
    Ok(())
}

/// Lists every path below `dir` (relative, sorted), skipping the manifest and `.gitkeep`.
fn walk(base: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = base.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir).io_ctx(dir.display())?.filter_map(|e| e.ok()).collect();
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let name = e.file_name();
        if (rel.as_os_str().is_empty() && name == MANIFEST) || name == ".gitkeep" {
            continue;
        }
        let r = rel.join(&name);
        out.push(r.clone());
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(base, &r, out)?;
        }
    }
    Ok(())
}

/// A relative symlink must stay inside the image root once resolved from its
/// directory; an absolute one may not use `..` (it resolves inside the image
/// root at runtime, but `..` makes that depend on the host's layout).
fn check_link(link: &Path, target: &Path) -> Result<()> {
    let escape = || {
        Error::config(format!(
            "symlink {} -> {} escapes the image root; point it inside the image",
            link.display(),
            target.display()
        ))
    };
    if target.is_absolute() {
        if target.components().any(|c| c == Component::ParentDir) {
            return Err(escape());
        }
        return Ok(());
    }
    let mut depth: i64 = link.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return Err(escape());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_must_stay_inside() {
        assert!(check_link(Path::new("etc/a"), Path::new("../usr/x")).is_ok());
        assert!(check_link(Path::new("etc/a"), Path::new("../../x")).is_err());
        assert!(check_link(Path::new("etc/a"), Path::new("/usr/lib/x")).is_ok());
        assert!(check_link(Path::new("etc/a"), Path::new("/usr/../../x")).is_err());
    }
}
