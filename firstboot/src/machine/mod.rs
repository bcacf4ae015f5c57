//! The machine as seen under `--root`: its kernel command line, hostname,
//! machine id and NoCloud seed ([`Machine`]), and how paths on it are read
//! ([`paths`]). The metadata providers and the node sources both read the
//! machine through here; this module uses neither.

pub mod cmdline;
pub mod paths;

use self::cmdline::{cmdline_args, read_cmdline};
use self::paths::{contained, under};
use crate::http::escape;
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
    /// What was skipped while reading the machine (a kernel command line parameter
    /// that is not UTF-8), one line each, for the caller to print.
    pub warnings: Vec<String>,
    /// Whether preflight checks this host's ports: on the real root by default (a
    /// scratch root's ports are the host's), or when asked (`--check-ports`).
    pub check_ports: bool,
}

/// The trimmed text of `p`, or `None` when it cannot be read or is blank.
fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
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
            None => read_cmdline(&contained(root, "/proc/cmdline")?)?,
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
    pub fn cmdline_once(&self, key: &str) -> Result<Option<String>, String> {
        let v = self.cmdline_values(key);
        if v.len() > 1 {
            let all: Vec<String> = v.iter().map(|x| escape(x)).collect();
            return Err(format!(
                "kernel command line: {key}= is given more than once ({}); give it once",
                all.join(", ")
            ));
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
