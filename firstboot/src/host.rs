//! The host as kubelet needs it, on every boot, not only the first.
//!
//! `run` fixes the host before kubeadm; `kiln-firstboot host` (kubelet's
//! `ExecStartPre=`) fixes and re-checks it before every kubelet start, so a
//! swap partition that an fstab entry or zram brings back on a reboot, or a
//! sysctl another package reset, is caught with a one-line reason in the
//! journal instead of a kubelet that silently stops starting. `kubelet-gate`
//! (kubelet's `ExecCondition=`) keeps kubelet from starting before this
//! machine's bootstrap, without ordering kubelet after first boot — kubeadm
//! restarts kubelet synchronously from inside first boot, so that ordering
//! would deadlock (kubeadm `util/initsystem/initsystem_unix.go`,
//! `ServiceRestart`: `systemctl daemon-reload` then `systemctl restart kubelet`,
//! waited for).

use crate::machine::paths::under;
use crate::machine::Machine;
use std::path::{Path, PathBuf};

/// The sysctls kubeadm's preflight requires to be 1 (`cmd/kubeadm/app/preflight/checks.go`,
/// `FileContentCheck` on `/proc/sys/net/bridge/bridge-nf-call-iptables` and
/// `/proc/sys/net/ipv4/ip_forward`; the install guide adds `bridge-nf-call-ip6tables`).
pub const SYSCTLS: [&str; 3] =
    ["net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables", "net/ipv4/ip_forward"];

/// Kernel modules the container runtime and kube-proxy need (install guide).
pub const MODULES: [&str; 2] = ["overlay", "br_netfilter"];

/// Written by `run` while kubeadm runs: the machine id that is bootstrapping.
pub const BOOTSTRAPPING: &str = "/run/kiln/bootstrapping";

/// kubelet's config file, as kubeadm writes it.
pub const KUBELET_CONFIG: &str = "/var/lib/kubelet/config.yaml";

/// One thing fixed or found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// True when the host is still wrong after fixing.
    pub fatal: bool,
    /// One line: what, and what to do.
    pub message: String,
}

/// Runs a helper program, bounded; returns (success, output).
pub type Runner<'a> = &'a dyn Fn(&str, &[&str]) -> (bool, String);

/// Active swap devices and files from `/proc/swaps`.
pub fn active_swaps(root: &Path) -> Vec<String> {
    std::fs::read_to_string(under(root, "/proc/swaps"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Whether kubelet will refuse swap: `failSwapOn` in the config kubeadm wrote
/// (JSON or YAML, top level), default `true` as in kubelet's defaults
/// (`pkg/kubelet/apis/config/v1beta1/defaults.go`). `None` when there is no config.
pub fn kubelet_fails_on_swap(root: &Path) -> Option<bool> {
    let text = std::fs::read_to_string(under(root, KUBELET_CONFIG)).ok()?;
    for line in text.lines() {
        let l = line.trim_end();
        // Only top-level keys: YAML indentation or JSON's two-space pretty print.
        let key_line = l.strip_prefix("  ").filter(|r| r.starts_with('"')).unwrap_or(l);
        let rest = key_line.strip_prefix("\"failSwapOn\":").or_else(|| key_line.strip_prefix("failSwapOn:"));
        if let Some(v) = rest {
            return Some(!v.trim().trim_end_matches(',').eq_ignore_ascii_case("false"));
        }
    }
    Some(true)
}

/// Fixes modules, sysctls and swap, then reports what is still wrong.
/// `swap_allowed`: the node runs with LimitedSwap.
pub fn fix_and_check(root: &Path, swap_allowed: bool, run: Runner<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for module in MODULES {
        let loaded = under(root, &format!("/sys/module/{module}")).is_dir();
        if !loaded {
            let (ok, o) = run("modprobe", &[module]);
            if !ok {
                out.push(Finding { fatal: false, message: format!("modprobe {module} failed: {}", o.trim()) });
            }
        }
    }
    for key in SYSCTLS {
        let node_path = format!("/proc/sys/{key}");
        let p = under(root, &node_path);
        let name = key.replace('/', ".");
        let got = std::fs::read_to_string(&p).map(|s| s.trim().to_string());
        match got.as_deref() {
            Ok("1") => {}
            Ok(v) => {
                let _ = crate::files::overwrite(root, &node_path, b"1");
                let now = std::fs::read_to_string(&p).map(|s| s.trim().to_string()).unwrap_or_default();
                out.push(if now == "1" {
                    Finding { fatal: false, message: format!("{name} was {v}; set it to 1 (something reset it after /etc/sysctl.d was applied)") }
                } else {
                    Finding { fatal: true, message: format!("{name} is {now} and cannot be set to 1: kubeadm and kube-proxy need it; check /etc/sysctl.d and `sysctl --system`") }
                });
            }
            Err(_) => out.push(Finding {
                fatal: true,
                message: format!("/proc/sys/{key} is missing: br_netfilter is not loaded; `modprobe br_netfilter` and list it in /etc/modules-load.d/"),
            }),
        }
    }
    if !swap_allowed {
        let swaps = active_swaps(root);
        if !swaps.is_empty() {
            let (ok, o) = run("swapoff", &["-a"]);
            let left = active_swaps(root);
            out.push(if left.is_empty() {
                Finding { fatal: false, message: format!("swap was on ({}); turned it off", swaps.join(", ")) }
            } else {
                Finding {
                    fatal: true,
                    message: format!(
                        "swap is on ({}) and `swapoff -a` {}: kubelet refuses to start with swap unless the node sets swap = \"limited\"",
                        left.join(", "),
                        if ok { "left it on".to_string() } else { format!("failed: {}", o.trim()) }
                    ),
                }
            });
        }
    }
    out
}

/// systemd's unit name for a path (`systemd-escape --path`, systemd `unit_name_from_path`):
/// slashes become `-`, other bytes outside `[A-Za-z0-9:_.]` (and a leading `.`) become `\xNN`.
pub fn escape_path(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return "-".into();
    }
    let mut s = String::new();
    for (i, b) in trimmed.bytes().enumerate() {
        match b {
            b'/' => s.push('-'),
            b'.' if i == 0 => s.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b == b':' || b == b'_' || b == b'.' => s.push(b as char),
            b => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// Units that bring swap back on a later boot: a `.swap` unit for every active
/// swap and every fstab swap entry (systemd-fstab-generator makes them), zram
/// swap (zram-generator's `dev-zramN.swap` and `systemd-zram-setup@zramN.service`),
/// and the Raspberry Pi OS services (`dphys-swapfile.service` up to bookworm,
/// `rpi-zram-writeback.timer`/zram from `rpi-swap` in trixie).
pub fn swap_units(root: &Path) -> Vec<String> {
    let mut units: Vec<String> = Vec::new();
    let mut add = |u: String| {
        if !units.contains(&u) {
            units.push(u);
        }
    };
    for s in active_swaps(root) {
        add(format!("{}.swap", escape_path(&s)));
        if let Some(z) = s.strip_prefix("/dev/zram") {
            add(format!("systemd-zram-setup@zram{z}.service"));
        }
    }
    for line in std::fs::read_to_string(under(root, "/etc/fstab")).unwrap_or_default().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 3 && !f[0].starts_with('#') && f[2] == "swap" {
            let what = f[0];
            let dev = if let Some(l) = what.strip_prefix("LABEL=") {
                format!("/dev/disk/by-label/{l}")
            } else if let Some(u) = what.strip_prefix("UUID=") {
                format!("/dev/disk/by-uuid/{u}")
            } else if let Some(u) = what.strip_prefix("PARTUUID=") {
                format!("/dev/disk/by-partuuid/{u}")
            } else {
                what.to_string()
            };
            add(format!("{}.swap", escape_path(&dev)));
        }
    }
    for u in crate::contract::unit::DISTRO_SWAP_UNITS {
        add(u.to_string());
    }
    units
}

/// Masks `units` under `/etc/systemd/system` (a link to `/dev/null` there wins over
/// generator output in `/run/systemd/generator`, systemd.unit(5) "unit file load path"),
/// and disables zram-generator with an empty `/etc/systemd/zram-generator.conf`
/// (zram-generator.conf(5): a config that defines no devices creates none).
/// Returns the units newly masked.
pub fn mask_swap(root: &Path) -> std::io::Result<Vec<String>> {
    let dir = crate::files::make_dir(root, "/etc/systemd/system")?;
    let mut masked = Vec::new();
    for u in swap_units(root) {
        let link: PathBuf = dir.join(&u);
        if std::fs::symlink_metadata(&link).is_ok() {
            if std::fs::read_link(&link).map(|t| t == Path::new("/dev/null")).unwrap_or(false) {
                continue;
            }
            std::fs::remove_file(&link)?;
        }
        crate::files::symlink(root, &format!("/etc/systemd/system/{u}"), Path::new("/dev/null"))?;
        masked.push(u);
    }
    let zram = "/etc/systemd/zram-generator.conf";
    if std::fs::symlink_metadata(crate::files::make_dir(root, "/etc/systemd")?.join("zram-generator.conf")).is_err() {
        crate::files::write(
            root,
            zram,
            b"# Written by kiln-firstboot: swap off (node.toml swap = \"off\"); no zram devices.\n",
            0o644,
        )?;
    }
    Ok(masked)
}

/// SELinux as the kernel reports it through selinuxfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selinux {
    /// No selinuxfs (`/sys/fs/selinux/enforce` absent): not enabled.
    Disabled,
    /// `enforce` is 0: denials are logged, not enforced.
    Permissive,
    /// `enforce` is 1.
    Enforcing,
}

impl Selinux {
    /// The mode's name as `getenforce` prints it, lowercased.
    pub fn as_str(self) -> &'static str {
        match self {
            Selinux::Disabled => "disabled",
            Selinux::Permissive => "permissive",
            Selinux::Enforcing => "enforcing",
        }
    }
}

/// The SELinux mode from `/sys/fs/selinux/enforce` under `root` (selinuxfs, where
/// libselinux's `security_getenforce` reads it: "1" enforcing, "0" permissive); no file
/// is disabled, as libselinux's `is_selinux_enabled` finds no selinuxfs mounted.
pub fn selinux(root: &Path) -> Selinux {
    match std::fs::read_to_string(under(root, "/sys/fs/selinux/enforce")).map(|s| s.trim().to_string()) {
        Ok(v) if v == "1" => Selinux::Enforcing,
        Ok(_) => Selinux::Permissive,
        Err(_) => Selinux::Disabled,
    }
}

/// The directories kiln-firstboot creates or writes that kubelet and the control plane's
/// containers use: the flex-volume plugin directory, `/etc/kubernetes` (the CA kiln
/// writes, kubeadm's manifests), kiln's kubeadm patches, state and logs.
pub fn kiln_paths(flex_volume_dir: &str) -> Vec<String> {
    [flex_volume_dir, "/etc/kubernetes", "/etc/kiln/kubeadm-patches", "/var/lib/kiln", "/var/log/kiln"]
        .iter()
        .map(|p| p.to_string())
        .collect()
}

/// Whether `path` carries an SELinux label: the `security.selinux` extended attribute
/// (what `ls -Z` shows), read without following a final link.
fn labelled(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: both pointers are NUL-terminated strings that outlive the call; a null
    // value buffer with size 0 asks only for the attribute's size and writes nothing.
    let n = unsafe { libc::lgetxattr(c.as_ptr(), c"security.selinux".as_ptr(), std::ptr::null_mut(), 0) };
    n > 0
}

/// Which of `paths` exist under `root` without an SELinux label.
pub fn unlabelled(root: &Path, paths: &[String]) -> Vec<String> {
    paths
        .iter()
        .filter(|p| std::fs::symlink_metadata(under(root, p)).is_ok() && !labelled(&under(root, p)))
        .cloned()
        .collect()
}

/// With SELinux enabled, creates the `paths` kiln writes into and relabels them with
/// `restorecon -R` (the policy's default contexts for them), bounded by the runner;
/// `None` when SELinux is disabled or none of them can be made. The finding says what was relabelled, or why not.
pub fn relabel(root: &Path, paths: &[String], run: Runner<'_>) -> Option<Finding> {
    if selinux(root) == Selinux::Disabled {
        return None;
    }
    // Created first (kiln writes into each of them): new files inherit their label.
    let existing: Vec<String> =
        paths.iter().filter_map(|p| crate::files::make_dir(root, p).ok()).map(|p| p.display().to_string()).collect();
    if existing.is_empty() {
        return None;
    }
    let mut args = vec!["-R"];
    args.extend(existing.iter().map(String::as_str));
    let (ok, o) = run("restorecon", &args);
    Some(if ok {
        Finding { fatal: false, message: format!("SELinux: relabelled {} with restorecon -R", existing.join(", ")) }
    } else {
        Finding {
            fatal: false,
            message: format!(
                "SELinux: `restorecon -R {}` failed ({}): label them by hand, or install restorecon (policycoreutils)",
                existing.join(" "),
                o.trim()
            ),
        }
    })
}

/// What `kubelet-gate` decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Start kubelet.
    Go(String),
    /// Skip this start (systemd `ExecCondition=` exit 1: not a failure, no restart loop).
    Skip(String),
}

/// Whether kubelet may start now: during this machine's bootstrap (kubeadm restarts
/// it), after it (state for this machine), or on a machine joined by hand (a kubelet
/// config and no kiln state); not on a disk cloned from another machine whose
/// bootstrap has not run here yet, and not before any config exists.
pub fn gate(m: &Machine, state_machine_id: Option<&str>) -> Gate {
    let marker = std::fs::read_to_string(under(&m.root, BOOTSTRAPPING)).unwrap_or_default();
    if !m.machine_id.is_empty() && marker.trim() == m.machine_id {
        return Gate::Go("kiln-firstboot is bootstrapping this machine".into());
    }
    match state_machine_id {
        Some(id) if !m.machine_id.is_empty() && id == m.machine_id => Gate::Go("this machine has joined".into()),
        Some(id) => Gate::Skip(format!(
            "the kubelet files on this disk belong to machine {id}, not this one ({}); kiln-firstboot bootstraps this machine first",
            if m.machine_id.is_empty() { "no machine id" } else { &m.machine_id }
        )),
        None if under(&m.root, KUBELET_CONFIG).is_file() => Gate::Go("kubelet config present (not bootstrapped by kiln)".into()),
        None => Gate::Skip(format!("no {KUBELET_CONFIG} yet: kubelet starts when kiln-firstboot runs kubeadm")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_systemd_escape_path() {
        // Values from `systemd-escape --path`.
        assert_eq!(escape_path("/swapfile"), "swapfile");
        assert_eq!(escape_path("/dev/sda2"), "dev-sda2");
        assert_eq!(escape_path("/var/swap"), "var-swap");
        assert_eq!(escape_path("/dev/disk/by-uuid/1234-ab"), "dev-disk-by\\x2duuid-1234\\x2dab");
        assert_eq!(escape_path("/.swap file"), "\\x2eswap\\x20file");
    }

    #[test]
    fn fail_swap_on_is_read_from_json_and_yaml() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("var/lib/kubelet");
        std::fs::create_dir_all(&p).unwrap();
        assert_eq!(kubelet_fails_on_swap(d.path()), None);
        std::fs::write(p.join("config.yaml"), "{\n  \"failSwapOn\": false,\n  \"x\": 1\n}\n").unwrap();
        assert_eq!(kubelet_fails_on_swap(d.path()), Some(false));
        std::fs::write(p.join("config.yaml"), "apiVersion: x\nfailSwapOn: false\n").unwrap();
        assert_eq!(kubelet_fails_on_swap(d.path()), Some(false));
        std::fs::write(p.join("config.yaml"), "apiVersion: x\nnested:\n  failSwapOn: false\n").unwrap();
        assert_eq!(kubelet_fails_on_swap(d.path()), Some(true));
    }
}
