//! Where a node's description comes from, merged in one order, later wins:
//!
//! 1. baked defaults — `/etc/kiln/image.toml` (versions, dirs, socket);
//! 2. platform user-data — the NoCloud seed (`/var/lib/cloud/seed/nocloud/user-data`
//!    or `--seed DIR`) when it is a node.toml (a `#cloud-config` is cloud-init's);
//! 3. `/etc/kiln/node.toml` — written by Ignition or cloud-init;
//! 4. the boot partition — `/boot/firmware/kiln/node.toml` or `/boot/kiln/node.toml`
//!    (Raspberry Pi: edit it on the SD card from any computer);
//! 5. the kernel command line — `kiln.role=`, `kiln.node-name=`, `kiln.node-ip=`.
//!
//! Every path is read under `--root`; a path that comes from input (a `[pki]`
//! file, a home directory) is resolved component by component by
//! [`contained`], so neither `..` nor a symlink can lead outside the root. The
//! machine itself (command line, seed, paths) is [`crate::machine`]'s.

use crate::contract::image::{ImageDefaults, IMAGE_TOML_PATH};
use crate::contract::node::{Node, NodeConfig, Role, MAX_TEXT, NODE_TOML_PATH};
use crate::http::escape;
use crate::machine::paths::{contained, read_capped, under};
use crate::machine::Machine;
use std::path::{Path, PathBuf};

/// One source that contributed.
#[derive(Debug, Clone)]
pub struct Source {
    /// Human name (a path or `kernel command line`).
    pub name: String,
    /// What it said.
    pub config: NodeConfig,
}

/// Why gathering failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError(pub String);

fn parse_file(path: &Path) -> Result<Option<NodeConfig>, SourceError> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = read_capped(path, MAX_TEXT).map_err(SourceError)?;
    NodeConfig::parse(&bytes).map(Some).map_err(|e| SourceError(format!("{}:{e}", path.display())))
}

/// Reads the baked defaults.
pub fn image_defaults(root: &Path) -> Result<ImageDefaults, SourceError> {
    if let Some(why) = not_a_kiln_image(root) {
        return Err(SourceError(why));
    }
    let p = under(root, IMAGE_TOML_PATH);
    let text = std::fs::read_to_string(&p).map_err(|e| SourceError(format!("{}: {e}", p.display())))?;
    ImageDefaults::from_toml(&text).map_err(|e| SourceError(format!("{}: {e}", p.display())))
}

/// Why `root` is not a kiln image, with what to do, or `None` when it is one: every
/// image kiln builds carries [`IMAGE_TOML_PATH`], so a root without it is the wrong
/// `--root` (or a machine that did not boot a kiln image).
pub fn not_a_kiln_image(root: &Path) -> Option<String> {
    let p = under(root, IMAGE_TOML_PATH);
    if p.is_file() {
        return None;
    }
    let found = if !root.is_dir() {
        format!("{} is not a directory", root.display())
    } else if p.exists() {
        format!("{} is not a file", p.display())
    } else {
        format!("{} does not exist", p.display())
    };
    Some(format!(
        "{} is not a kiln image: {found} (every image kiln builds carries {IMAGE_TOML_PATH}); pass the image's root with --root DIR (an unpacked or mounted image), or build an image with `kiln build`",
        root.display()
    ))
}

/// The boot partition's node.toml: `/boot/firmware/kiln/node.toml` (Raspberry Pi OS
/// from bookworm, Ubuntu on a Pi) or `/boot/kiln/node.toml` (older images), `None`
/// when neither exists. Both existing as different files is an error naming both
/// (which one the user edited would be a guess); one file reached by both names (a
/// `/boot/firmware -> /boot` link) is one file.
pub fn boot_node_toml(root: &Path) -> Result<Option<&'static str>, SourceError> {
    use std::os::unix::fs::MetadataExt;
    let found: Vec<(&'static str, PathBuf, std::fs::Metadata)> = BOOT_NODE_TOML
        .iter()
        .filter_map(|p| {
            let path = contained(root, p).ok()?;
            let md = std::fs::metadata(&path).ok()?;
            Some((*p, path, md))
        })
        .collect();
    match found.as_slice() {
        [] => Ok(None),
        [(p, ..)] => Ok(Some(p)),
        [(p, _, ma), (_, _, mb), ..] if (ma.dev(), ma.ino()) == (mb.dev(), mb.ino()) => Ok(Some(p)),
        [(_, a, _), (_, b, _), ..] => Err(SourceError(format!(
            "two boot-partition node.toml files: {} and {}; keep one (delete or rename the other) so it is clear which settings this node gets",
            a.display(),
            b.display()
        ))),
    }
}

/// Where a node.toml on the boot partition may be, newest layout first.
pub const BOOT_NODE_TOML: [&str; 2] = ["/boot/firmware/kiln/node.toml", "/boot/kiln/node.toml"];

/// Gathers every source in order. A source that exists but does not parse is
/// an error (a typo must not silently turn a control plane into a worker).
pub fn gather(m: &Machine, meta: Option<(&str, &crate::providers::Metadata)>) -> Result<Vec<Source>, SourceError> {
    let mut out = Vec::new();
    if let Some((platform, md)) = meta {
        if let Some(role) = md.role {
            let node = Node { role: Some(role), ..Node::default() };
            out.push(Source {
                name: format!("{platform} kiln-role tag"),
                config: NodeConfig { node: Some(node), ..Default::default() },
            });
        }
        if let Some(ud) = &md.user_data {
            // Ignition JSON and #cloud-config belong to Ignition and cloud-init.
            let foreign = ud.starts_with(b"#cloud-config") || ud.starts_with(b"#!") || ud.first() == Some(&b'{');
            if !foreign {
                let config = NodeConfig::parse(ud).map_err(|e| SourceError(format!("{platform} user-data:{e}")))?;
                out.push(Source { name: format!("{platform} user-data"), config });
            }
        }
    }
    let ud = m.seed.join("user-data");
    if ud.exists() {
        let bytes = read_capped(&ud, MAX_TEXT).map_err(SourceError)?;
        let cloud_config = bytes.starts_with(b"#cloud-config") || bytes.starts_with(b"#!");
        if !cloud_config {
            let config = NodeConfig::parse(&bytes).map_err(|e| SourceError(format!("{}:{e}", ud.display())))?;
            out.push(Source { name: ud.display().to_string(), config });
        }
    }
    let boot = boot_node_toml(&m.root)?;
    for p in [Some(NODE_TOML_PATH), boot].into_iter().flatten() {
        let path = contained(&m.root, p).map_err(SourceError)?;
        if let Some(config) = parse_file(&path)? {
            out.push(Source { name: path.display().to_string(), config });
        }
    }
    let mut node = Node::default();
    m.cmdline_once("kiln.platform").map_err(SourceError)?;
    if let Some(r) = m.cmdline_once("kiln.role").map_err(SourceError)? {
        node.role = Some(Role::parse(&r).ok_or_else(|| {
            SourceError(format!("kernel command line: kiln.role={} is not init, control-plane or join", escape(&r)))
        })?);
    }
    if let Some(n) = m.cmdline_once("kiln.node-name").map_err(SourceError)? {
        if n.is_empty() || n.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"') {
            return Err(SourceError(format!(
                "kernel command line: kiln.node-name={}: a node name has no spaces, quotes or control characters; use e.g. kiln.node-name=worker-1",
                escape(&n)
            )));
        }
        node.name = Some(n);
    }
    if let Some(ip) = m.cmdline_once("kiln.node-ip").map_err(SourceError)? {
        let ip = crate::validate::endpoint::node_ip(&ip)
            .map_err(|e| SourceError(format!("kernel command line: kiln.node-ip: {e}")))?;
        node.node_ip = Some(ip.to_string());
    }
    if node != Node::default() {
        out.push(Source {
            name: "kernel command line".into(),
            config: NodeConfig { node: Some(node), ..Default::default() },
        });
    }
    Ok(out)
}

/// Merges sources in order (later wins).
pub fn merge(sources: &[Source]) -> NodeConfig {
    sources.iter().fold(NodeConfig::default(), |acc, s| acc.merge(s.config.clone()))
}
