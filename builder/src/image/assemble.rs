//! The one assembly of the image tree, which `kiln check` and `kiln build`
//! both run: kiln's rendered files ([`render::render`]), the pinned downloads
//! and `kiln-firstboot` ([`Pins`]), the profile's overlays in order, then the
//! rendered files that yield to an overlay's ([`render::runtime::render`]: the
//! containerd unit, a card's swap masks), for the formats being built. The
//! profile's container images are one entry, the OCI image archive
//! ([`oci_layout`]), added with the pinned files.
//!
//! `kiln check` assembles with the artifacts as the profile declares them
//! ([`Pins::Declared`]: their paths, modes and origins, no bytes), `kiln
//! build` with the fetched files ([`Pins::Fetched`]); both give the same
//! paths, kinds, modes and rendered contents.

use crate::error::{Error, IoContext, Kind, Result};
use crate::image::render;
use crate::image::tree::{Content, Entry, Node, Origin, Tree};
use crate::inputs::cache::Cache;
use crate::inputs::firstboot_bin::FirstbootBin;
use crate::inputs::image_blobs::FetchedImage;
use crate::inputs::overlay;
use crate::inputs::profile::{Arch, Artifact, Install, OutputFormat, Profile};
use crate::outputs::oci_layout;
use std::path::{Path, PathBuf};

/// What fills the tree's pinned files.
#[derive(Debug, Clone, Copy)]
pub enum Pins<'a> {
    /// `kiln check`: nothing fetched. Every pinned file as declared, with its
    /// path, mode and origin and empty content; members of an `extract =
    /// ["*"]` tarball are known only after the download and left out, and
    /// `kiln-firstboot` (unless pinned) is a placeholder too.
    Declared,
    /// `kiln build`: the fetched, verified files.
    Fetched {
        /// The cache the artifacts were fetched into (tarballs are extracted there).
        cache: &'a Cache,
        /// Every fetched artifact (of every architecture) with its blob in the cache.
        artifacts: &'a [(Artifact, PathBuf)],
        /// The `kiln-firstboot` chosen for this architecture, unless pinned.
        firstboot: Option<&'a FirstbootBin>,
        /// The profile's `images`, fetched for this architecture, in profile order.
        images: &'a [FetchedImage],
        /// The mtime of every member of the image archive.
        epoch: u64,
    },
}

/// The image tree of `arch` for an image of `formats`, in the order every
/// build assembles it: kiln's rendered files, the pinned files ([`Pins`]),
/// the profile's overlays in order, then kiln's files that yield to an
/// overlay's ([`render::runtime`]). A conflict among rendered files is
/// located at the profile's name. With [`Pins::Fetched`] every file read from
/// disk has its size and sha256 fixed (`plan`).
pub fn assemble(profile: &Profile, arch: Arch, formats: &[OutputFormat], pins: Pins) -> Result<Tree> {
    let mut tree = Tree::new();
    render::render(profile, arch, &mut tree).map_err(|e| match e.kind {
        Kind::Config => Error::config(
            profile
                .at(profile.doc.name.span(), &format!("{}; check bin_dir, cni_bin_dir and flex_volume_dir", e.message)),
        ),
        _ => e,
    })?;
    match pins {
        Pins::Declared => {
            placeholders(profile, arch, &mut tree)?;
            oci_layout::add_declared(&mut tree, profile)?;
        }
        Pins::Fetched { cache, artifacts, firstboot, images, epoch } => {
            for (a, blob) in artifacts.iter().filter(|(a, _)| a.arch == arch) {
                add_artifact(&mut tree, cache, profile, a, blob)?;
            }
            if let Some(fb) = firstboot {
                let content =
                    Content::Disk { path: fb.path.clone(), size: fb.size, expect_sha256: Some(fb.sha256.clone()) };
                let source = format!("{} (sha256 {})", fb.source, fb.sha256);
                tree.insert(
                    &format!("{}/kiln-firstboot", profile.bin_dir()),
                    Entry::file(content, 0o755, Origin::Firstboot { source }),
                    false,
                )?;
            }
            oci_layout::add(&mut tree, profile, images, epoch)?;
        }
    }
    overlay::apply(profile, &mut tree)?;
    render::runtime::render(profile, formats, &mut tree)?;
    match pins {
        Pins::Declared => Ok(tree),
        Pins::Fetched { .. } => plan(tree),
    }
}

/// Adds one installed file of a pinned artifact at `dest/file`. A conflict
/// is located at the artifact's table, so `kiln check` (placeholders) and
/// `kiln build` (downloads) refuse with the same `file:line:col` and words.
pub fn install(tree: &mut Tree, profile: &Profile, a: &Artifact, file: &str, entry: Entry) -> Result<()> {
    tree.insert(&format!("{}/{file}", a.dest), entry, false).map_err(|e| {
        match (e.kind, profile.doc.artifacts.get(&a.name)) {
            (Kind::Config, Some(spec)) => {
                Error::config(profile.at(spec.span(), &format!("artifact `{}`: {}", a.name, e.message)))
            }
            _ => e,
        }
    })
}

/// Placeholder entries for what `kiln build` downloads: every pinned file with
/// its real path, mode and origin (members of an `extract = ["*"]` tarball are
/// known only after the download), and `kiln-firstboot` unless it is pinned.
fn placeholders(p: &Profile, arch: Arch, tree: &mut Tree) -> Result<()> {
    let empty = || Content::Inline(Vec::new());
    for a in p.artifacts_for(arch).unwrap_or_default() {
        let origin = Origin::Artifact { name: a.name.clone(), version: a.version.clone(), url: a.url.clone() };
        match &a.install {
            Install::File { name } => install(tree, p, &a, name, Entry::file(empty(), a.mode, origin))?,
            Install::Extract { members: Some(members) } => {
                for m in members {
                    install(tree, p, &a, m, Entry::file(empty(), a.mode, origin.clone()))?;
                }
            }
            Install::Extract { members: None } => {}
        }
    }
    if !p.doc.artifacts.contains_key("kiln-firstboot") {
        let origin = Origin::Firstboot { source: "the workspace build or --firstboot-bin".into() };
        tree.insert(&format!("{}/kiln-firstboot", p.bin_dir()), Entry::file(empty(), 0o755, origin), false)?;
    }
    Ok(())
}

/// Adds an artifact (or its extracted members) to the tree.
fn add_artifact(tree: &mut Tree, cache: &Cache, profile: &Profile, a: &Artifact, blob: &Path) -> Result<()> {
    let origin = Origin::Artifact { name: a.name.clone(), version: a.version.clone(), url: a.url.clone() };
    match &a.install {
        Install::File { name } => {
            let size = std::fs::metadata(blob).io_ctx(blob.display())?.len();
            let content = Content::Disk { path: blob.to_path_buf(), size, expect_sha256: Some(a.sha256.clone()) };
            install(tree, profile, a, name, Entry::file(content, a.mode, origin))
        }
        Install::Extract { members } => {
            let all = cache.extract(&a.sha256)?;
            let chosen: Vec<_> = match members {
                // `["*"]`: the executables. A release tarball also carries its
                // LICENSE and README.md (0644 in the CNI plugins' release),
                // which do not belong in a bin directory.
                None => all.iter().filter(|m| m.mode & 0o111 != 0).collect(),
                Some(names) => {
                    let mut v = Vec::new();
                    for n in names {
                        match all.iter().find(|m| &m.name == n) {
                            Some(m) => v.push(m),
                            None => {
                                let span = profile.doc.artifacts[&a.name].get_ref().extract.as_ref().map(|e| e.span());
                                let have: Vec<_> = all.iter().map(|m| m.name.as_str()).collect();
                                let msg = format!(
                                    "artifact `{}`: `{n}` is not in {} (it has: {})",
                                    a.name,
                                    a.url,
                                    have.join(", ")
                                );
                                return Err(Error::config(match span {
                                    Some(s) => profile.at(s, &msg),
                                    None => msg,
                                }));
                            }
                        }
                    }
                    v
                }
            };
            for m in chosen {
                let content =
                    Content::Disk { path: m.path.clone(), size: m.size, expect_sha256: Some(m.sha256.clone()) };
                install(tree, profile, a, &m.name, Entry::file(content, a.mode, origin.clone()))?;
            }
            Ok(())
        }
    }
}

/// Fixes the size and sha256 of every file read from disk that has no pin
/// yet (overlay files), by reading it now: the writers later stream exactly
/// these bytes or fail ([`crate::outputs::tarball::Planned`]). Non-regular files are refused.
fn plan(tree: Tree) -> Result<Tree> {
    let mut planned = tree.without_entries(); // keeps the record of overrides
    for (path, entry) in tree.iter() {
        let mut entry = entry.clone();
        if let Node::File(Content::Disk { path: src, size, expect_sha256 }) = &mut entry.node {
            if expect_sha256.is_none() {
                let (n, sha) = crate::io::hash_regular(src)
                    .map_err(|e| Error::config(format!("/{path}: {} ({}): {e}", src.display(), entry.origin)))?;
                *size = n;
                *expect_sha256 = Some(sha);
            }
        }
        // Sorted order: parents are inserted before their children.
        planned.insert(path, entry, true)?;
    }
    Ok(planned)
}
