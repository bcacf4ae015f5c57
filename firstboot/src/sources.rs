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
//! file, a home directory) is resolved component by component by [`contained`],
//! so neither `..` nor a symlink can lead outside the root.

use crate::contract::image::{ImageDefaults, IMAGE_TOML_PATH};
use crate::contract::node::{Node, NodeConfig, Role, MAX_TEXT, NODE_TOML_PATH};
use crate::http::escape;
use std::path::{Component, Path, PathBuf};

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
    /// What was skipped while reading the machine (a kernel command line parameter
    /// that is not UTF-8), one line each, for the caller to print.
    pub warnings: Vec<String>,
    /// Whether preflight checks this host's ports: on the real root by default (a
    /// scratch root's ports are the host's), or when asked (`--check-ports`).
    pub check_ports: bool,
}

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
    crate::files::read_file_capped(path, max).map_err(|e| e.to_string())
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

/// Splits a kernel command line the way the kernel does (`lib/cmdline.c`,
/// `next_arg`): words separated by whitespace, double quotes group spaces
/// (`key="a b"`), and quotes around a value or a whole word are removed.
pub fn cmdline_args(cmdline: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut chars = cmdline.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return out;
        }
        let mut word = String::new();
        let mut in_quote = false;
        while let Some(c) = chars.next_if(|c| in_quote || !c.is_whitespace()) {
            if c == '"' {
                in_quote = !in_quote;
            }
            word.push(c);
        }
        let word = match word.strip_prefix('"') {
            Some(w) => w.strip_suffix('"').unwrap_or(w).to_string(),
            None => word,
        };
        out.push(match word.split_once('=') {
            Some((k, v)) => {
                let v = match v.strip_prefix('"') {
                    Some(v) => v.strip_suffix('"').unwrap_or(v),
                    None => v,
                };
                (k.to_string(), Some(v.to_string()))
            }
            None => (word, None),
        });
    }
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// The most of a kernel command line that is read. The kernel's own
/// `COMMAND_LINE_SIZE` is 2048 bytes on x86 (`arch/x86/include/asm/setup.h`) and on
/// arm64 (`arch/arm64/include/uapi/asm/setup.h`), 4096 at most on any architecture
/// (s390, `arch/s390/include/uapi/asm/setup.h`); 64 KiB leaves room for a hand-written
/// `--cmdline FILE` and refuses `/dev/zero`-sized input.
pub const MAX_CMDLINE: usize = 64 << 10;

/// Splits raw command-line bytes into parameters as [`cmdline_args`] does (whitespace
/// outside double quotes) and keeps every parameter that is UTF-8; each one that is
/// not is skipped with a warning naming its position and its bytes (escaped), so one
/// bad byte never drops the rest of the line.
pub fn decode_cmdline(bytes: &[u8]) -> (String, Vec<String>) {
    let mut words: Vec<&[u8]> = Vec::new();
    let (mut start, mut in_quote) = (None, false);
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'"' {
            in_quote = !in_quote;
        }
        if b.is_ascii_whitespace() && !in_quote {
            if let Some(s) = start.take() {
                words.push(&bytes[s..i]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        words.push(&bytes[s..]);
    }
    let mut good = Vec::new();
    let mut warnings = Vec::new();
    for (n, w) in words.iter().enumerate() {
        match std::str::from_utf8(w) {
            Ok(t) => good.push(t),
            Err(_) => warnings.push(format!(
                "kernel command line: parameter {} ({}) is not UTF-8; skipped, the other parameters are used",
                n + 1,
                escape(&String::from_utf8_lossy(w))
            )),
        }
    }
    (good.join(" "), warnings)
}

/// Reads a kernel command line from `path`: a regular file of at most
/// [`MAX_CMDLINE`] bytes (opened non-blocking: a FIFO or a device is refused, not
/// read), decoded by [`decode_cmdline`].
pub fn read_cmdline(path: &Path) -> Result<(String, Vec<String>), String> {
    let bytes = crate::files::read_file_capped(path, MAX_CMDLINE)
        .map_err(|e| format!("kernel command line: {e} (a kernel's is at most 4 KiB)"))?;
    Ok(decode_cmdline(&bytes))
}

impl Machine {
    /// Reads the machine's identity under `root`: the kernel command line from
    /// `cmdline` (`--cmdline FILE`) or `/proc/cmdline` under the root (none there: an
    /// empty one). A command line that cannot be read as one is an error.
    pub fn probe(root: &Path, cmdline: Option<&Path>, seed: Option<&Path>) -> Result<Machine, String> {
        let proc = under(root, "/proc/cmdline");
        let (cmdline, warnings) = match cmdline {
            Some(p) => read_cmdline(p)?,
            None if std::fs::symlink_metadata(&proc).is_err() => (String::new(), Vec::new()),
            None => read_cmdline(&crate::files::resolve(root, "/proc/cmdline").map_err(|e| e.to_string())?)?,
        };
        let cmdline = cmdline.trim().to_string();
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
        Ok(Machine {
            root: root.to_path_buf(),
            cmdline,
            hostname,
            machine_id,
            seed,
            warnings,
            check_ports: root == Path::new("/"),
        })
    }

    /// The value of the first `key=` on the kernel command line.
    pub fn cmdline_value(&self, key: &str) -> Option<String> {
        self.cmdline_values(key).into_iter().next()
    }

    /// Every value of `key=` on the kernel command line, in order.
    pub fn cmdline_values(&self, key: &str) -> Vec<String> {
        cmdline_args(&self.cmdline).into_iter().filter(|(k, _)| k == key).filter_map(|(_, v)| v).collect()
    }

    /// The one value of `key=`, or an error when it is given more than once
    /// (which one wins would be a guess).
    pub fn cmdline_once(&self, key: &str) -> Result<Option<String>, SourceError> {
        let v = self.cmdline_values(key);
        if v.len() > 1 {
            let all: Vec<String> = v.iter().map(|x| escape(x)).collect();
            return Err(SourceError(format!(
                "kernel command line: {key}= is given more than once ({}); give it once",
                all.join(", ")
            )));
        }
        Ok(v.into_iter().next())
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
    // Another kiln-firstboot (kubelet's gate starts alongside first boot) may have
    // mounted it a moment earlier: `mount` then fails with "already mounted", and the
    // seed is there all the same.
    (ok || target.join("user-data").is_file()).then_some(target)
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
    m.cmdline_once("kiln.platform")?;
    if let Some(r) = m.cmdline_once("kiln.role")? {
        node.role = Some(Role::parse(&r).ok_or_else(|| {
            SourceError(format!("kernel command line: kiln.role={} is not init, control-plane or join", escape(&r)))
        })?);
    }
    if let Some(n) = m.cmdline_once("kiln.node-name")? {
        if n.is_empty() || n.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"') {
            return Err(SourceError(format!(
                "kernel command line: kiln.node-name={}: a node name has no spaces, quotes or control characters; use e.g. kiln.node-name=worker-1",
                escape(&n)
            )));
        }
        node.name = Some(n);
    }
    if let Some(ip) = m.cmdline_once("kiln.node-ip")? {
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
