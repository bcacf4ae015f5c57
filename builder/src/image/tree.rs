//! The image tree: an ordered map from absolute path to entry.
//!
//! Every input (rendered files, artifacts, overlays) is added here and every
//! output format writes from here. Paths are stored without the leading `/`
//! (`opt/bin/kubelet`) so that sorted iteration gives parents before children.

use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

/// Where an entry came from; recorded in `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Origin {
    /// Rendered by kiln from the profile.
    Rendered,
    /// A parent directory kiln created implicitly.
    Implicit,
    /// A pinned download (or a member extracted from it).
    Artifact {
        /// Artifact name.
        name: String,
        /// Artifact version.
        version: String,
        /// Upstream URL.
        url: String,
    },
    /// A file from an overlay.
    Overlay {
        /// Overlay name.
        overlay: String,
        /// Path inside the overlay.
        path: String,
    },
    /// The `kiln-firstboot` binary, from the named source.
    Firstboot {
        /// Where the binary came from (a path or a pinned artifact).
        source: String,
    },
    /// The OCI image archive of the profile's pinned `images`
    /// ([`crate::outputs::oci_layout`]).
    Images,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Rendered => f.write_str("rendered by kiln"),
            Origin::Implicit => f.write_str("implicit parent directory"),
            Origin::Artifact { name, version, .. } => write!(f, "artifact {name} {version}"),
            Origin::Overlay { overlay, path } => write!(f, "overlay {overlay} ({path})"),
            Origin::Firstboot { source } => write!(f, "kiln-firstboot from {source}"),
            Origin::Images => f.write_str("the profile's images (an OCI image archive)"),
        }
    }
}

/// Bytes of a file entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Small rendered content held in memory.
    Inline(Vec<u8>),
    /// A file on disk (cache entry, overlay file), streamed when written.
    Disk {
        /// Location on the build machine.
        path: PathBuf,
        /// Size in bytes.
        size: u64,
        /// sha256 the bytes must have, verified while the output is written.
        expect_sha256: Option<String>,
    },
    /// Bytes kiln generates from files on disk while it writes (the OCI image
    /// archive): streamed afresh by each writer, never held in memory.
    Generated(Generated),
}

impl Content {
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Content::Inline(b) => b.len() as u64,
            Content::Disk { size, .. } => *size,
            Content::Generated(g) => g.size,
        }
    }
}

/// What generates a [`Content::Generated`] file.
pub trait Generate: Send + Sync + std::fmt::Debug {
    /// A new stream of the file's bytes. A read fails with an `io::Error`
    /// whose inner error is a kiln [`Error`] (exit 3 for an input that is not
    /// what it was planned to be) when an input is wrong.
    fn open(self: Arc<Self>) -> Box<dyn Read + Send>;
}

/// A generated file: its size and sha256, fixed when the tree was assembled
/// (the writers check every stream against both), and its generator.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Size in bytes.
    pub size: u64,
    /// sha256 (hex) of the bytes.
    pub sha256: String,
    /// What streams the bytes.
    pub source: Arc<dyn Generate>,
}

impl PartialEq for Generated {
    /// Equal bytes: the same size and sha256.
    fn eq(&self, other: &Generated) -> bool {
        self.size == other.size && self.sha256 == other.sha256
    }
}

impl Eq for Generated {}

/// What a path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A regular file.
    File(Content),
    /// A directory.
    Dir,
    /// A symbolic link with this target.
    Symlink(String),
}

/// One path in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Kind and content.
    pub node: Node,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Provenance.
    pub origin: Origin,
}

impl Entry {
    /// A root-owned file.
    pub fn file(content: Content, mode: u32, origin: Origin) -> Entry {
        Entry { node: Node::File(content), mode, uid: 0, gid: 0, origin }
    }
    /// A root-owned inline text file.
    pub fn text(text: impl Into<String>, mode: u32) -> Entry {
        Entry::file(Content::Inline(text.into().into_bytes()), mode, Origin::Rendered)
    }
    /// A root-owned directory.
    pub fn dir(mode: u32, origin: Origin) -> Entry {
        Entry { node: Node::Dir, mode, uid: 0, gid: 0, origin }
    }
    /// A symlink.
    pub fn symlink(target: impl Into<String>, origin: Origin) -> Entry {
        Entry { node: Node::Symlink(target.into()), mode: 0o777, uid: 0, gid: 0, origin }
    }
}

/// Normalises an absolute or relative image path to the tree's key form.
/// Rejects `..`, empty names and NUL (they would escape or corrupt the root).
pub fn key(path: &str) -> Result<String> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(Error::config(format!("path `{path}` escapes the image root (`..`)"))),
            p if p.contains('\0') => return Err(Error::config(format!("path `{path}` contains NUL"))),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(Error::config(format!("path `{path}` names the image root itself")));
    }
    Ok(parts.join("/"))
}

/// One path whose earlier entry a later source replaced by declaring
/// `override = true` (an overlay's `.kiln-overlay.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Override {
    /// Absolute image path (`/opt/bin/kubelet`).
    pub path: String,
    /// Where the replaced entry came from.
    pub replaced: Origin,
    /// Where the entry that replaced it came from.
    pub by: Origin,
}

impl Override {
    /// Whether the replaced entry was pinned and verified: a downloaded
    /// artifact (or a member of one) or the `kiln-firstboot` binary.
    pub fn replaces_pinned(&self) -> bool {
        matches!(self.replaced, Origin::Artifact { .. } | Origin::Firstboot { .. })
    }
}

/// The image tree.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
    overrides: Vec<Override>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Tree {
        Tree::default()
    }

    /// Adds `entry` at `path`, creating parent directories (0755, root).
    ///
    /// A second writer of the same path is an error naming both sources,
    /// unless `replace` is set (an overlay's declared override). Directories
    /// merge: adding a directory where one exists keeps the first one's mode
    /// unless `replace` is set.
    pub fn insert(&mut self, path: &str, entry: Entry, replace: bool) -> Result<()> {
        let k = key(path)?;
        self.ensure_parents(&k)?;
        match self.entries.get(&k) {
            Some(old) if matches!(old.node, Node::Dir) && matches!(entry.node, Node::Dir) => {
                if old.origin == Origin::Implicit {
                    self.entries.insert(k, entry);
                } else if replace {
                    let replaced = old.origin.clone();
                    self.record_override(&k, replaced, &entry);
                    self.entries.insert(k, entry);
                }
                Ok(())
            }
            Some(old) if !replace => {
                let fix = match entry.origin {
                    Origin::Overlay { .. } => {
                        "declare `override = true` for it in the later overlay's .kiln-overlay.toml to replace it"
                    }
                    _ => "give one of them another file_name or dest",
                };
                Err(Error::config(format!(
                    "/{k} is written by two sources: {} and {}; {fix}",
                    old.origin, entry.origin
                )))
            }
            _ => {
                if !matches!(entry.node, Node::Dir) {
                    let prefix = format!("{k}/");
                    if self.entries.range(prefix.clone()..).next().is_some_and(|(p, _)| p.starts_with(&prefix)) {
                        return Err(Error::config(format!(
                            "/{k} from {} would replace a directory that has contents",
                            entry.origin
                        )));
                    }
                }
                if let Some(replaced) =
                    self.entries.get(&k).filter(|o| o.origin != Origin::Implicit).map(|o| o.origin.clone())
                {
                    self.record_override(&k, replaced, &entry);
                }
                self.entries.insert(k, entry);
                Ok(())
            }
        }
    }

    /// Records that the entry at `k` (from `replaced`) is replaced by `by`.
    fn record_override(&mut self, k: &str, replaced: Origin, by: &Entry) {
        self.overrides.push(Override { path: format!("/{k}"), replaced, by: by.origin.clone() });
    }

    fn ensure_parents(&mut self, k: &str) -> Result<()> {
        let mut idx = 0;
        while let Some(pos) = k[idx..].find('/') {
            let parent = &k[..idx + pos];
            match self.entries.get(parent) {
                None => {
                    self.entries.insert(parent.to_string(), Entry::dir(0o755, Origin::Implicit));
                }
                Some(e) if matches!(e.node, Node::Dir) => {}
                Some(e) => {
                    return Err(Error::config(format!(
                        "/{parent} is not a directory (it comes from {}), but /{k} needs it to be one",
                        e.origin
                    )))
                }
            }
            idx += pos + 1;
        }
        Ok(())
    }

    /// An empty tree that keeps this tree's [`Tree::overrides`], for
    /// rebuilding a tree entry by entry without losing what was overridden.
    pub fn without_entries(&self) -> Tree {
        Tree { entries: BTreeMap::new(), overrides: self.overrides.clone() }
    }

    /// Every replacement an `override = true` caused, in the order they
    /// happened: what `manifest.json` records and `kiln build` warns about
    /// (loudly for [`Override::replaces_pinned`]).
    pub fn overrides(&self) -> &[Override] {
        &self.overrides
    }

    /// Looks up an entry by image path.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        key(path).ok().and_then(|k| self.entries.get(&k))
    }

    /// Entries in sorted path order (parents before children).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.entries.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_created_and_sorted_first() {
        let mut t = Tree::new();
        t.insert("/opt/bin/kubelet", Entry::text("x", 0o755), false).unwrap();
        let keys: Vec<_> = t.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["opt", "opt/bin", "opt/bin/kubelet"]);
    }

    #[test]
    fn second_writer_conflicts_unless_override() {
        let mut t = Tree::new();
        t.insert("/etc/a", Entry::text("1", 0o644), false).unwrap();
        let e = t.insert("/etc/a", Entry::text("2", 0o644), false).unwrap_err();
        assert!(e.message.contains("two sources"), "{}", e.message);
        assert!(t.overrides().is_empty());
        t.insert("/etc/a", Entry::text("2", 0o600), true).unwrap();
        assert_eq!(t.get("/etc/a").unwrap().mode, 0o600);
        assert_eq!(t.overrides().len(), 1);
        assert_eq!(t.overrides()[0].path, "/etc/a");
        assert!(!t.overrides()[0].replaces_pinned());
    }

    #[test]
    fn overriding_an_artifact_is_recorded_as_pinned() {
        let mut t = Tree::new();
        let art =
            Origin::Artifact { name: "kubelet".into(), version: "v1.34.2".into(), url: "https://x/kubelet".into() };
        t.insert("/opt/bin/kubelet", Entry::file(Content::Inline(vec![1]), 0o755, art.clone()), false).unwrap();
        let by = Origin::Overlay { overlay: "o".into(), path: "opt/bin/kubelet".into() };
        t.insert("/opt/bin/kubelet", Entry::file(Content::Inline(vec![2]), 0o755, by.clone()), true).unwrap();
        assert_eq!(t.overrides(), [Override { path: "/opt/bin/kubelet".into(), replaced: art, by }]);
        assert!(t.overrides()[0].replaces_pinned());
        // Rebuilding a tree keeps the record.
        assert_eq!(t.without_entries().overrides().len(), 1);
        assert!(t.without_entries().is_empty());
        // Implicit parents are not overrides.
        t.insert("/opt", Entry::dir(0o700, Origin::Rendered), true).unwrap();
        assert_eq!(t.overrides().len(), 1);
    }

    #[test]
    fn escaping_paths_are_rejected() {
        assert!(key("/etc/../../x").is_err());
        assert_eq!(key("//etc/./a/").unwrap(), "etc/a");
        assert!(key("/").is_err());
    }

    #[test]
    fn file_under_file_is_rejected() {
        let mut t = Tree::new();
        t.insert("/etc/a", Entry::text("1", 0o644), false).unwrap();
        assert!(t.insert("/etc/a/b", Entry::text("1", 0o644), false).is_err());
    }
}
