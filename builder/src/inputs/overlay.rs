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
use crate::image::tree::{Content, Entry, Origin, Tree};
use crate::inputs::location;
use crate::inputs::profile::{parse_mode, Profile};
use crate::inputs::validate;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use toml::Spanned;

/// Name of the per-overlay manifest.
pub const MANIFEST: &str = ".kiln-overlay.toml";

/// Largest `.kiln-overlay.toml` kiln reads (they are a few hundred bytes).
pub const MANIFEST_MAX_BYTES: u64 = 1 << 20;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestDoc {
    #[serde(default)]
    paths: BTreeMap<String, Spanned<PathMeta>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathMeta {
    mode: Option<Spanned<String>>,
    uid: Option<Spanned<u32>>,
    gid: Option<Spanned<u32>>,
    #[serde(rename = "override", default)]
    replace: bool,
}

/// What `.kiln-overlay.toml` says about one path, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    mode: Option<u32>,
    uid: u32,
    gid: u32,
    replace: bool,
}

/// A parsed and validated `.kiln-overlay.toml`: metadata by relative path
/// (no leading `/`), and where each entry was written, for errors.
#[derive(Debug, Default)]
struct Manifest {
    path: PathBuf,
    text: String,
    paths: BTreeMap<String, (Meta, std::ops::Range<usize>)>,
}

impl Manifest {
    fn at(&self, span: std::ops::Range<usize>, msg: &str) -> Error {
        Error::config(location::at(&self.path, &self.text, Some(span), msg))
    }
}

/// Parses `.kiln-overlay.toml` text read from `path`: strict keys, and each
/// path, mode and owner checked where it is written (`file:line:col`).
/// Never panics, whatever `text` holds (fuzzed in `tests/fuzz.rs`).
pub fn parse_manifest(path: &Path, text: &str) -> Result<()> {
    parse_manifest_doc(path, text.to_string()).map(drop)
}

fn parse_manifest_doc(path: &Path, text: String) -> Result<Manifest> {
    let doc: ManifestDoc = toml::from_str(&text).map_err(|e| {
        Error::config(location::at(path, &text, e.span(), &location::explain_toml_message(e.message())))
    })?;
    let mut m = Manifest { path: path.to_path_buf(), text, paths: BTreeMap::new() };
    for (key, meta) in doc.paths {
        let span = meta.span();
        let meta = meta.into_inner();
        validate::overlay_path(key.as_str()).map_err(|e| m.at(span.clone(), &e))?;
        let mode = match &meta.mode {
            Some(mode) => Some(parse_mode(mode.get_ref()).ok_or_else(|| {
                m.at(
                    mode.span(),
                    &format!(
                        "mode {} for {key} is not octal like \"0644\" (at most 4 digits: permission bits, setuid/setgid/sticky)",
                        validate::show(mode.get_ref())
                    ),
                )
            })?),
            None => None,
        };
        let owner = |what: &str, id: &Option<Spanned<u32>>| -> Result<u32> {
            match id {
                Some(id) => {
                    validate::owner(what, *id.get_ref()).map(|()| *id.get_ref()).map_err(|e| m.at(id.span(), &e))
                }
                None => Ok(0),
            }
        };
        let uid = owner("uid", &meta.uid)?;
        let gid = owner("gid", &meta.gid)?;
        let rel = key.strip_prefix('/').unwrap_or(&key).to_string();
        if m.paths.contains_key(&rel) {
            return Err(m.at(span, &format!("{key} is listed twice (with and without a leading `/`); keep one")));
        }
        m.paths.insert(rel, (Meta { mode, uid, gid, replace: meta.replace }, span));
    }
    Ok(m)
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
    use std::io::Read;
    let path = dir.join(MANIFEST);
    let meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Manifest::default()),
        Err(e) => return Err(Error::config(format!("{}: {e}", path.display()))),
    };
    if !meta.is_file() {
        return Err(Error::config(format!("{}: not a regular file; make it a plain TOML file", path.display())));
    }
    let mut bytes = Vec::new();
    fs::File::open(&path)
        .and_then(|f| f.take(MANIFEST_MAX_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
    if bytes.len() as u64 > MANIFEST_MAX_BYTES {
        return Err(Error::config(format!("{}: larger than {MANIFEST_MAX_BYTES} bytes", path.display())));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let good = e.utf8_error().valid_up_to();
        let text = String::from_utf8_lossy(&e.as_bytes()[..good]).into_owned();
        Error::config(location::at(&path, &text, Some(good..good), "not UTF-8 here; save the file as UTF-8"))
    })?;
    parse_manifest_doc(&path, text)
}

/// An overlay path as UTF-8 without control characters (so it can be named
/// in units, manifests and messages), or an error naming it escaped.
fn clean_name(name: &str, rel: &Path) -> Result<String> {
    match rel.to_str() {
        Some(s) if !s.chars().any(char::is_control) => Ok(s.to_string()),
        _ => Err(Error::config(format!(
            "overlays/{name}/{} has a file name that is not UTF-8 or has control characters; rename it (image paths are UTF-8 text)",
            validate::show(&rel.to_string_lossy())
        ))),
    }
}

fn apply_one(name: &str, dir: &Path, tree: &mut Tree) -> Result<()> {
    let manifest = load_manifest(dir)?;
    let mut files = Vec::new();
    walk(dir, Path::new(""), &mut files)?;
    let mut used = std::collections::BTreeSet::new();
    for rel in files {
        let rel_str = clean_name(name, &rel)?;
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
            let target = match target.to_str() {
                Some(t) if !t.is_empty() && !t.chars().any(char::is_control) => t.to_string(),
                _ => {
                    return Err(Error::config(format!(
                        "symlink overlays/{name}/{rel_str} has a target that is empty, not UTF-8 or has control characters; point it at a plain path"
                    )))
                }
            };
            Entry::symlink(target, origin)
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
        if let Some((m, _)) = m {
            if let Some(mode) = m.mode {
                entry.mode = mode;
            }
            entry.uid = m.uid;
            entry.gid = m.gid;
            replace = m.replace;
        }
        tree.insert(&format!("/{rel_str}"), entry, replace)?;
    }
    for (p, (_, span)) in &manifest.paths {
        if !used.contains(p) {
            return Err(manifest.at(
                span.clone(),
                &format!("names {}, which is not in the overlay; fix the path or remove the entry", validate::show(p)),
            ));
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
