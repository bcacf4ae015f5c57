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
//! Every path is read under `--root`.

use crate::image::{ImageDefaults, IMAGE_TOML_PATH};
use crate::node::{Node, NodeConfig, Role, NODE_TOML_PATH};
use std::path::{Path, PathBuf};

/// The machine as seen under `--root`.
#[derive(Debug, Clone)]
pub struct Machine {
    /// The root everything is read and written under.
    pub root: PathBuf,
    /// Kernel command line.
    pub cmdline: String,
    /// Current hostname.
    pub hostname: String,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// NoCloud seed directory.
    pub seed: PathBuf,
    /// Whether preflight checks this host's ports: on the real root by default (a
    /// scratch root's ports are the host's), or when asked (`--check-ports`).
    pub check_ports: bool,
}

/// `root` + an absolute path.
pub fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

impl Machine {
    /// Reads the machine's identity under `root`.
    pub fn probe(root: &Path, cmdline: Option<&Path>, seed: Option<&Path>) -> Machine {
        let cmdline = match cmdline {
            Some(p) => read_trim(p),
            None => read_trim(&under(root, "/proc/cmdline")),
        }
        .unwrap_or_default();
        let hostname = read_trim(&under(root, "/etc/hostname"))
            .or_else(|| read_trim(&under(root, "/proc/sys/kernel/hostname")))
            .unwrap_or_else(|| "localhost".into());
        let machine_id = read_trim(&under(root, "/etc/machine-id")).unwrap_or_default();
        let seed = seed.map(Path::to_path_buf).unwrap_or_else(|| {
            let dir = under(root, "/var/lib/cloud/seed/nocloud");
            if dir.join("user-data").is_file() {
                return dir;
            }
            mount_cidata(root).unwrap_or(dir)
        });
        Machine { root: root.to_path_buf(), cmdline, hostname, machine_id, seed, check_ports: root == Path::new("/") }
    }

    /// The value of `key=` on the kernel command line.
    pub fn cmdline_value(&self, key: &str) -> Option<String> {
        self.cmdline.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
    }

    /// The platform from `kiln.platform=` or `ignition.platform.id=`.
    pub fn platform(&self) -> Option<String> {
        self.cmdline_value("kiln.platform").or_else(|| self.cmdline_value("ignition.platform.id"))
    }

    /// The NoCloud instance id (`meta-data`), if any.
    pub fn instance_id(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.seed.join("meta-data")).ok()?;
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "instance-id").then(|| v.trim().trim_matches('"').trim_matches('\'').to_string())
        })
    }
}

/// Mounts a NoCloud seed filesystem (label `cidata` or `CIDATA`, cloud-init's
/// NoCloud datasource) read-only under `/run/kiln/cidata`. Only on the real
/// root: a scratch `--root` has no block devices of its own.
fn mount_cidata(root: &Path) -> Option<PathBuf> {
    if root != Path::new("/") {
        return None;
    }
    let target = PathBuf::from("/run/kiln/cidata");
    if target.join("user-data").is_file() {
        return Some(target);
    }
    let dev = ["/dev/disk/by-label/cidata", "/dev/disk/by-label/CIDATA"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())?;
    std::fs::create_dir_all(&target).ok()?;
    let ok = std::process::Command::new("mount").arg("-o").arg("ro").arg(&dev).arg(&target).status().ok()?.success();
    ok.then_some(target)
}

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
    let Ok(bytes) = std::fs::read(path) else { return Ok(None) };
    NodeConfig::parse(&bytes).map(Some).map_err(|e| SourceError(format!("{}:{e}", path.display())))
}

/// Reads the baked defaults.
pub fn image_defaults(root: &Path) -> Result<ImageDefaults, SourceError> {
    let p = under(root, IMAGE_TOML_PATH);
    let text = std::fs::read_to_string(&p).map_err(|e| {
        SourceError(format!("{}: {e}; this image was not built by `kiln build`, or --root is wrong", p.display()))
    })?;
    ImageDefaults::from_toml(&text).map_err(|e| SourceError(format!("{}: {e}", p.display())))
}

/// Gathers every source in order. A source that exists but does not parse is
/// an error (a typo must not silently turn a control plane into a worker).
pub fn gather(m: &Machine, meta: Option<(&str, &crate::provider::Metadata)>) -> Result<Vec<Source>, SourceError> {
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
    if let Ok(bytes) = std::fs::read(&ud) {
        let cloud_config = bytes.starts_with(b"#cloud-config") || bytes.starts_with(b"#!");
        if !cloud_config {
            let config = NodeConfig::parse(&bytes).map_err(|e| SourceError(format!("{}:{e}", ud.display())))?;
            out.push(Source { name: ud.display().to_string(), config });
        }
    }
    for p in [NODE_TOML_PATH, "/boot/firmware/kiln/node.toml", "/boot/kiln/node.toml"] {
        let path = under(&m.root, p);
        if let Some(config) = parse_file(&path)? {
            out.push(Source { name: path.display().to_string(), config });
        }
    }
    let mut node = Node::default();
    if let Some(r) = m.cmdline_value("kiln.role") {
        node.role = Some(Role::parse(&r).ok_or_else(|| {
            SourceError(format!("kernel command line: kiln.role={r} is not init, control-plane or join"))
        })?);
    }
    node.name = m.cmdline_value("kiln.node-name");
    node.node_ip = m.cmdline_value("kiln.node-ip");
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
