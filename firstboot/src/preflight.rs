//! Preflight: fix what can be fixed, then check what kubeadm and kubelet need,
//! the kubeadm install and troubleshooting guides' list. Every failure is one
//! line: what, why, and the fix. All reads go under `--root`.

use crate::contract::node::Role;
use crate::machine::paths::under;
use crate::machine::Machine;
use crate::resolve::Resolved;
use crate::routes;
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::Path;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// kubeadm would fail or the node would not work: `run` stops.
    Error,
    /// Worth fixing; kubeadm may only warn.
    Warning,
    /// Checked and fine.
    Ok,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable id.
    pub id: &'static str,
    /// Result.
    pub level: Level,
    /// What was found (and, when not ok, why it matters and the fix).
    pub message: String,
}

fn ok(id: &'static str, m: impl Into<String>) -> Check {
    Check { id, level: Level::Ok, message: m.into() }
}
fn err(id: &'static str, m: impl Into<String>) -> Check {
    Check { id, level: Level::Error, message: m.into() }
}
fn warn(id: &'static str, m: impl Into<String>) -> Check {
    Check { id, level: Level::Warning, message: m.into() }
}

fn read(root: &Path, p: &str) -> Option<String> {
    std::fs::read_to_string(under(root, p)).ok()
}

/// Why an executable is looked for, and so how bad its absence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// kubeadm's own `InPathCheck{mandatory: true}` (v1.34.2 `cmd/kubeadm/app/preflight/
    /// checks_linux.go`, `addExecChecks`: losetup, mount, cp): kubeadm fails without it.
    Kubeadm,
    /// Mandatory for kubeadm below 1.32 only (conntrack: `addExecChecks` checks it for
    /// `k8sVersion < 1.32.0`; kube-proxy no longer runs it, kubernetes PR 126952).
    KubeadmBelow132,
    /// Not checked by kubeadm 1.34 but used on the node (ip, iptables and tc by kube-proxy
    /// and CNI plugins, nsenter and socat by kubelet's port-forward, ethtool by CNI
    /// plugins): a warning, as older kubeadm releases gave.
    Used,
}

/// The executables preflight looks for, and why.
const TOOLS: [(&str, Need); 10] = [
    ("losetup", Need::Kubeadm),
    ("mount", Need::Kubeadm),
    ("cp", Need::Kubeadm),
    ("conntrack", Need::KubeadmBelow132),
    ("ip", Need::Used),
    ("iptables", Need::Used),
    ("nsenter", Need::Used),
    ("ethtool", Need::Used),
    ("socat", Need::Used),
    ("tc", Need::Used),
];

/// The distribution family, from `/etc/os-release` (os-release(5): `ID`, the space-separated
/// `ID_LIKE`, `VARIANT_ID`; `/usr/lib/os-release` when `/etc` has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distro {
    /// Debian, Ubuntu, Raspberry Pi OS (`ID_LIKE=debian`): apt.
    Debian,
    /// Fedora, RHEL, CentOS, Rocky, Alma (`ID_LIKE` fedora/rhel): dnf.
    Fedora,
    /// Fedora CoreOS (`ID=fedora`, `VARIANT_ID=coreos`): an image-based OS, rpm-ostree.
    FedoraCoreos,
    /// Flatcar (`ID=flatcar`): no package manager, tools ship in the OS or a sysext.
    Flatcar,
    /// Alpine: apk.
    Alpine,
    /// Arch: pacman.
    Arch,
    /// openSUSE, SLES (`ID_LIKE` suse): zypper.
    Suse,
    /// Anything else, with its `ID` (empty without an os-release).
    Other(String),
}

/// The family `os_release` (the file's text) names.
pub fn distro(os_release: &str) -> Distro {
    let field = |k: &str| {
        os_release
            .lines()
            .find_map(|l| l.trim().strip_prefix(k)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_ascii_lowercase())
            .unwrap_or_default()
    };
    let (id, variant) = (field("ID"), field("VARIANT_ID"));
    let like = field("ID_LIKE");
    let is = |name: &str| id == name || like.split_whitespace().any(|w| w == name);
    if id == "flatcar" {
        Distro::Flatcar
    } else if id == "fedora" && variant == "coreos" {
        Distro::FedoraCoreos
    } else if is("debian") || is("ubuntu") {
        Distro::Debian
    } else if is("fedora") || is("rhel") || is("centos") {
        Distro::Fedora
    } else if is("alpine") {
        Distro::Alpine
    } else if is("arch") {
        Distro::Arch
    } else if is("suse") || is("opensuse") || id.starts_with("opensuse") || id == "sles" {
        Distro::Suse
    } else {
        Distro::Other(id)
    }
}

/// The package that provides `tool` on `d` (Debian's from `dpkg -S`: losetup and mount are
/// in `mount`, nsenter in `util-linux`), `None` where the family has no package manager.
fn package(d: &Distro, tool: &str) -> Option<&'static str> {
    Some(match (d, tool) {
        (Distro::Flatcar, _) | (Distro::Other(_), _) => return None,
        (_, "cp") => "coreutils",
        (_, "ethtool") => "ethtool",
        (_, "socat") => "socat",
        (_, "iptables") if *d == Distro::Fedora || *d == Distro::FedoraCoreos => "iptables-nft",
        (_, "iptables") => "iptables",
        (Distro::Debian, "conntrack") => "conntrack",
        (_, "conntrack") => "conntrack-tools",
        (Distro::Debian, "losetup" | "mount") => "mount",
        (Distro::Alpine, "losetup") => "losetup",
        (Distro::Alpine, "mount" | "nsenter") => "util-linux-misc",
        (_, "losetup" | "mount" | "nsenter") => "util-linux",
        (Distro::Fedora | Distro::FedoraCoreos, "ip") => "iproute",
        (Distro::Fedora | Distro::FedoraCoreos, "tc") => "iproute-tc",
        (_, "ip" | "tc") => "iproute2",
        _ => return None,
    })
}

/// How to install `tools` on `d`: the package manager's command with the packages.
fn install_hint(d: &Distro, tools: &[&str]) -> String {
    let mut pkgs: Vec<&str> = Vec::new();
    for p in tools.iter().filter_map(|t| package(d, t)) {
        if !pkgs.contains(&p) {
            pkgs.push(p);
        }
    }
    let pkgs = pkgs.join(" ");
    match d {
        Distro::Debian => format!("install them: `apt-get install {pkgs}`"),
        Distro::Fedora => format!("install them: `dnf install {pkgs}`"),
        Distro::FedoraCoreos => {
            format!("Fedora CoreOS ships them in the OS: layer them with `rpm-ostree install {pkgs}` and reboot, or add a systemd-sysext")
        }
        Distro::Flatcar => "Flatcar ships them in the OS image and has no package manager: the image is not a stock Flatcar one; rebuild it, or add them with a systemd-sysext".into(),
        Distro::Alpine => format!("install them: `apk add {pkgs}`"),
        Distro::Arch => format!("install them: `pacman -S {pkgs}`"),
        Distro::Suse => format!("install them: `zypper install {pkgs}`"),
        Distro::Other(id) if id.is_empty() => {
            "install the packages that provide them (no /etc/os-release to tell the distribution)".into()
        }
        Distro::Other(id) => format!("install the packages that provide them on {id}"),
    }
}

/// The `executables` check: what of [`TOOLS`] is in none of `dirs` under `root`, for a
/// kubeadm of `minor`, with the package names of the root's distribution.
fn executables_check(root: &Path, dirs: &[&str], minor: u32) -> Check {
    const ID: &str = "executables";
    let missing: Vec<(&str, bool)> = TOOLS
        .iter()
        .filter(|(t, _)| !dirs.iter().any(|d| under(root, &format!("{d}/{t}")).exists()))
        .map(|(t, need)| (*t, *need == Need::Kubeadm || (*need == Need::KubeadmBelow132 && minor < 32)))
        .collect();
    if missing.is_empty() {
        let all: Vec<&str> = TOOLS.iter().map(|(t, _)| *t).collect();
        return ok(ID, format!("{} found", all.join(", ")));
    }
    let d = distro(&read(root, "/etc/os-release").or_else(|| read(root, "/usr/lib/os-release")).unwrap_or_default());
    let named: Vec<String> = missing
        .iter()
        .map(|(t, _)| match package(&d, t) {
            Some(p) => format!("{t} (package {p})"),
            None => t.to_string(),
        })
        .collect();
    let tools: Vec<&str> = missing.iter().map(|(t, _)| *t).collect();
    let hint = install_hint(&d, &tools);
    let required: Vec<&str> = missing.iter().filter(|(_, r)| *r).map(|(t, _)| *t).collect();
    if required.is_empty() {
        warn(
            ID,
            format!(
                "missing: {}; {hint} (kubeadm does not check them, but kubelet, kube-proxy or CNI plugins use them)",
                named.join(", ")
            ),
        )
    } else {
        err(
            ID,
            format!(
                "missing: {}; {hint} (kubeadm's preflight fails without {})",
                named.join(", "),
                required.join(", ")
            ),
        )
    }
}

/// kubeadm's `ControlPlaneNumCPU` (`cmd/kubeadm/app/constants/constants.go`), checked by
/// `NumCPUCheck` in `cmd/kubeadm/app/preflight/checks.go` (`numCPU < ncc.NumCPU` is an error).
const CONTROL_PLANE_CPUS: usize = 2;

/// kubeadm's `ControlPlaneMem`, in MB (`cmd/kubeadm/app/constants/constants.go`), checked by
/// `MemCheck` (`cmd/kubeadm/app/preflight/checks_linux.go`: `actual < mc.Mem` is an error).
const CONTROL_PLANE_MEM_MB: u64 = 1700;

/// The RAM in MB as kubeadm's `MemCheck` computes it: `Totalram * Unit / 1024 / 1024` from
/// sysinfo(2), integer division. `/proc/meminfo`'s `MemTotal` is the same `totalram`, in
/// kB (the kernel's `si_meminfo`, printed by `meminfo_proc_show` as pages << (PAGE_SHIFT - 10)),
/// so the MB are `MemTotal / 1024`, rounded down. `None` without a parsable `MemTotal:`.
pub fn memory_mb(meminfo: &str) -> Option<u64> {
    let kb =
        meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.split_whitespace().next()?.parse::<u64>().ok()?;
    Some(kb / 1024)
}

/// The TCP ports kubeadm's preflight requires free on a node of `role` (kubeadm v1.34.2,
/// `cmd/kubeadm/app/preflight/checks.go`): `InitNodeChecks` (init, and `join --control-plane`
/// through `RunInitNodeChecks`) holds `PortOpenCheck` on `LocalAPIEndpoint.BindPort` (this
/// node's `api_server_bind_port`, not the endpoint's port, which may be a load balancer's),
/// `KubeSchedulerPort` 10259 and `KubeControllerManagerPort` 10257, and with a local etcd (kiln's
/// only kind) `EtcdListenClientPort` 2379 and `EtcdListenPeerPort` 2380; `addCommonChecks`
/// adds `KubeletPort` 10250 on every node.
pub fn required_ports(role: Role, bind_port: u16) -> Vec<(u16, &'static str)> {
    let mut ports = Vec::new();
    if role != Role::Join {
        ports.extend([
            (bind_port, "kube-apiserver"),
            (10259, "kube-scheduler"),
            (10257, "kube-controller-manager"),
            (2379, "etcd clients"),
            (2380, "etcd peers"),
        ]);
    }
    ports.push((10250, "kubelet"));
    ports
}

/// Whether the running system's directory `dir` (`/proc`, `/run`) can be seen: always
/// on the real root; under a scratch `--root` only when it holds anything (an unpacked
/// image has none of a running system's `/proc` or `/run`, a copied one has).
fn visible(root: &Path, dir: &str) -> bool {
    root == Path::new("/") || std::fs::read_dir(under(root, dir)).map(|mut d| d.next().is_some()).unwrap_or(false)
}

/// The warning for a check whose evidence a scratch root does not have: not an error
/// (nothing is known to be wrong), and how to check it on the node.
fn not_visible(id: &'static str, root: &Path, what: &str) -> Check {
    warn(
        id,
        format!(
            "{what} not visible under --root {r}: an unpacked image has no running system's state; check on the node itself (`kiln-firstboot doctor` without --root)",
            r = root.display()
        ),
    )
}

/// What every check reads: the machine, the resolved node, and whether the running
/// system's `/proc` is visible under the root.
struct Ctx<'a> {
    /// The machine checked.
    m: &'a Machine,
    /// The node resolved for it.
    r: &'a Resolved,
    /// `m.root`.
    root: &'a Path,
    /// `r.kubeadm`: what kubeadm will be given.
    k: &'a crate::kubeadm::Inputs,
    /// Whether a running system's `/proc` is visible ([`visible`]).
    proc: bool,
}

/// One named check: its name (for readers of [`CHECKS`]) and what it finds, in order.
type NamedCheck = (&'static str, fn(&Ctx) -> Vec<Check>);

/// Every check, in the order its findings are printed.
const CHECKS: &[NamedCheck] = &[
    ("not visible", check_not_visible),
    ("swap", check_swap),
    ("br_netfilter", check_br_netfilter),
    ("sysctl", check_sysctls),
    ("cgroups", check_cgroups),
    ("runtime", check_runtime),
    ("cgroup-driver", check_cgroup_driver),
    ("executables", check_executables),
    ("ports", check_ports),
    ("firewall", check_firewall),
    ("subnets", check_subnets),
    ("iptables", check_iptables),
    ("selinux", check_selinux),
    ("routes", check_routes),
    ("cpus", check_cpus),
    ("memory", check_memory),
    ("machine-id", check_machine_id),
    ("identity", check_identity),
    ("clock", check_clock),
];

/// Runs every check for `r` on machine `m` (`CHECKS`, in order). Under a scratch
/// `--root` without a running system's `/proc` (or `/run`), what only a running system
/// shows (modules, sysctls, swap, the runtime socket, the machine id) is "not visible",
/// a warning, as cgroups are.
pub fn checks(m: &Machine, r: &Resolved) -> Vec<Check> {
    let root = m.root.as_path();
    let cx = Ctx { m, r, root, k: &r.kubeadm, proc: visible(root, "/proc") };
    CHECKS.iter().flat_map(|(_, check)| check(&cx)).collect()
}

/// Without a running system's `/proc`, the checks that read it say so up front.
fn check_not_visible(cx: &Ctx) -> Vec<Check> {
    if cx.proc {
        return Vec::new();
    }
    let root = cx.root;
    vec![
        not_visible("swap", root, "swap (/proc/swaps)"),
        not_visible("br_netfilter", root, "loaded modules (/proc/sys/net/bridge for br_netfilter)"),
        not_visible("sysctl", root, "sysctls (/proc/sys)"),
        not_visible("routes", root, "the routing table (/proc/net/route, /proc/net/ipv6_route)"),
    ]
}

/// Swap (kubeadm install guide: "Swap disabled").
fn check_swap(cx: &Ctx) -> Vec<Check> {
    let swaps = read(cx.root, "/proc/swaps").unwrap_or_default();
    let swap_on = swaps.lines().skip(1).any(|l| !l.trim().is_empty());
    if !cx.proc {
        return Vec::new();
    }
    vec![match (swap_on, cx.k.swap_limited) {
        (true, false) => err("swap", "swap is on and the policy is `off`: kubelet refuses to start; set swap = \"limited\" or remove swap (dphys-swapfile, zram-generator)"),
        (true, true) => ok("swap", "swap is on; kubelet runs with LimitedSwap"),
        _ => ok("swap", "swap is off"),
    }]
}

/// br_netfilter (install guide, container runtime prerequisites).
fn check_br_netfilter(cx: &Ctx) -> Vec<Check> {
    if !cx.proc {
        return Vec::new();
    }
    vec![if under(cx.root, "/proc/sys/net/bridge").is_dir() {
        ok("br_netfilter", "br_netfilter is loaded")
    } else {
        err("br_netfilter", "br_netfilter is not loaded: bridged pod traffic bypasses iptables; `modprobe br_netfilter` and list it in /etc/modules-load.d/")
    }]
}

/// The sysctls (install guide, container runtime prerequisites).
fn check_sysctls(cx: &Ctx) -> Vec<Check> {
    let mut out = Vec::new();
    for key in ["net/bridge/bridge-nf-call-iptables", "net/ipv4/ip_forward"].into_iter().filter(|_| cx.proc) {
        let v = read(cx.root, &format!("/proc/sys/{key}")).map(|s| s.trim().to_string());
        let name = key.replace('/', ".");
        out.push(match v.as_deref() {
            Some("1") => ok("sysctl", format!("{name} = 1")),
            Some(other) => err(
                "sysctl",
                format!("{name} = {other}, kubeadm requires 1: set it in /etc/sysctl.d/ and `sysctl --system`"),
            ),
            None => err("sysctl", format!("{name} is missing (br_netfilter not loaded?)")),
        });
    }
    out
}

/// cgroups: v2 with the memory controller; kubelet refuses v1 from 1.35
/// (KEP-5573, kubelet failCgroupV1 defaults to true in v1.35).
fn check_cgroups(cx: &Ctx) -> Vec<Check> {
    vec![cgroup_check(&cgroups(cx.root), cx.root, cx.k.minor)]
}

/// The runtime: found by socket; several without a configured one is kubeadm's error.
fn check_runtime(cx: &Ctx) -> Vec<Check> {
    let root = cx.root;
    let configured = cx.k.cri_socket.trim_start_matches("unix://").to_string();
    let known = [
        "/run/containerd/containerd.sock",
        "/var/run/crio/crio.sock",
        "/run/crio/crio.sock",
        "/var/run/cri-dockerd.sock",
    ];
    let found: Vec<&str> = known.iter().copied().filter(|s| under(root, s).exists()).collect();
    vec![if under(root, &configured).exists() {
        ok("runtime", format!("container runtime socket {configured} exists"))
    } else if found.is_empty() && !visible(root, "/run") {
        not_visible("runtime", root, &format!("the container runtime socket ({configured}; /run is empty)"))
    } else if found.is_empty() {
        err("runtime", format!("no container runtime socket ({configured} is missing): start the runtime (`systemctl enable --now containerd`)"))
    } else {
        err(
            "runtime",
            format!(
                "{configured} is missing but {} exist(s): set runtime_socket in the profile to the runtime you use",
                found.join(", ")
            ),
        )
    }]
}

/// One cgroup driver for kubelet and containerd (troubleshooting: init hangs).
fn check_cgroup_driver(cx: &Ctx) -> Vec<Check> {
    let Some(cfg) = read(cx.root, "/etc/containerd/config.toml") else { return Vec::new() };
    let k = cx.k;
    let systemd = cfg.lines().map(str::trim).find_map(|l| {
        let (a, b) = l.split_once('=')?;
        (a.trim() == "SystemdCgroup").then(|| b.trim() == "true")
    });
    let want = k.cgroup_driver == "systemd";
    vec![match systemd {
        Some(s) if s != want => err(
            "cgroup-driver",
            format!("containerd has SystemdCgroup = {s} but kubelet uses the {} driver: `kubeadm init` would hang; make them agree", k.cgroup_driver),
        ),
        _ => ok("cgroup-driver", format!("kubelet and containerd agree on {}", k.cgroup_driver)),
    }]
}

/// Executables kubeadm, kubelet and kube-proxy run.
fn check_executables(cx: &Ctx) -> Vec<Check> {
    let dirs =
        ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin", cx.r.image.bin_dir.as_str()];
    vec![executables_check(cx.root, &dirs, cx.k.minor)]
}

/// Ports (kubeadm's `PortOpenCheck`, [`required_ports`]), on the real root or when
/// asked: a scratch root's ports are the host's.
fn check_ports(cx: &Ctx) -> Vec<Check> {
    if !cx.m.check_ports {
        return Vec::new();
    }
    let busy: Vec<String> = required_ports(cx.k.role, cx.k.bind_port)
        .into_iter()
        .filter(|(p, _)| std::net::TcpListener::bind(("0.0.0.0", *p)).is_err())
        .map(|(p, what)| format!("{p} ({what})"))
        .collect();
    vec![if busy.is_empty() {
        ok("ports", "required ports are free")
    } else {
        err(
            "ports",
            format!(
                "port(s) {} in use: stop what listens there (`ss -ltnp`) or run `kiln-firstboot reset`",
                busy.join(", ")
            ),
        )
    }]
}

/// A host firewall that does not accept the required ports (kubeadm: FirewalldCheck).
fn check_firewall(cx: &Ctx) -> Vec<Check> {
    if !cx.proc {
        return Vec::new();
    }
    firewall_checks(cx.root, &cx.r.image.bin_dir, cx.k)
}

/// Pod/service subnets must not overlap the host's networks.
fn check_subnets(cx: &Ctx) -> Vec<Check> {
    let k = cx.k;
    let mut out = Vec::new();
    let table = read(cx.root, "/proc/net/route").unwrap_or_default();
    for (name, cidr) in [("pod_subnet", &k.pod_subnet), ("service_subnet", &k.service_subnet)] {
        if let Some(c) = parse_v4(cidr) {
            let routes =
                if name == "pod_subnet" { host_networks_beside_pods(&table, c) } else { host_networks(&table) };
            if let Some(h) = routes.iter().find(|h| overlaps(c, **h)) {
                out.push(err(
                    "subnets",
                    format!(
                        "{name} {cidr} overlaps the host network {}/{}: pick a range the hosts do not use",
                        h.0, h.1
                    ),
                ));
                continue;
            }
            out.push(ok("subnets", format!("{name} {cidr} does not overlap host networks")));
        }
    }
    out
}

/// The iptables backend kube-proxy will follow, and rules left in the other one.
fn check_iptables(cx: &Ctx) -> Vec<Check> {
    if !cx.proc {
        return Vec::new();
    }
    iptables_check(cx.root, &cx.r.image.bin_dir).into_iter().collect()
}

/// SELinux: the mode, and kiln's paths without a label when it is enforcing.
fn check_selinux(cx: &Ctx) -> Vec<Check> {
    vec![if cx.proc {
        selinux_check(cx.root, &cx.k.flex_volume_dir)
    } else {
        not_visible("selinux", cx.root, "SELinux (/sys/fs/selinux)")
    }]
}

/// Multi-NIC nodes: a default route, and the service CIDR via the node IP's adapter.
fn check_routes(cx: &Ctx) -> Vec<Check> {
    if !cx.proc {
        return Vec::new();
    }
    route_checks(cx.root, cx.k)
}

/// Control planes: 2 CPUs (kubeadm preflight NumCPU).
fn check_cpus(cx: &Ctx) -> Vec<Check> {
    if cx.k.role == Role::Join {
        return Vec::new();
    }
    let cpus =
        read(cx.root, "/proc/cpuinfo").map(|c| c.lines().filter(|l| l.starts_with("processor")).count()).unwrap_or(0);
    if cpus == 0 {
        return Vec::new();
    }
    vec![if cpus >= CONTROL_PLANE_CPUS {
        ok("cpus", format!("{cpus} CPUs"))
    } else {
        err("cpus", format!("{cpus} CPU: control planes need {CONTROL_PLANE_CPUS}; give it more or make it a worker"))
    }]
}

/// Control planes: 1700 MB (kubeadm preflight Mem, [`memory_mb`]).
fn check_memory(cx: &Ctx) -> Vec<Check> {
    if cx.k.role == Role::Join {
        return Vec::new();
    }
    let Some(mb) = read(cx.root, "/proc/meminfo").as_deref().and_then(memory_mb) else { return Vec::new() };
    vec![if mb >= CONTROL_PLANE_MEM_MB {
        ok("memory", format!("{mb} MB"))
    } else {
        err(
            "memory",
            format!("the system RAM ({mb} MB) is less than the minimum {CONTROL_PLANE_MEM_MB} MB kubeadm requires on control planes; give it more or make it a worker"),
        )
    }]
}

/// Unique identity (install guide: unique hostname, MAC and product_uuid): the machine id.
fn check_machine_id(cx: &Ctx) -> Vec<Check> {
    vec![if cx.m.machine_id.is_empty() && !cx.proc {
        // An image ships it empty: systemd-machine-id-setup writes it on first boot.
        not_visible("machine-id", cx.root, "the machine id (an image's /etc/machine-id is empty until first boot)")
    } else if cx.m.machine_id.is_empty() {
        err(
            "machine-id",
            "/etc/machine-id is empty: systemd-machine-id-setup creates it; kiln keys its once-per-machine state on it",
        )
    } else {
        ok("machine-id", "machine id present")
    }]
}

/// Unique identity (install guide: unique hostname, MAC and product_uuid): the rest.
fn check_identity(cx: &Ctx) -> Vec<Check> {
    identity_checks(cx.root)
}

/// The clock: certificates fail on a Pi that booted in 1970.
fn check_clock(_: &Ctx) -> Vec<Check> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    vec![if now < 1_700_000_000 {
        err("clock", "the clock is before 2023: every certificate would fail to verify; enable systemd-timesyncd or chrony and wait for time sync")
    } else {
        ok("clock", "the clock is plausible")
    }]
}

/// The cgroup hierarchy as seen under a root at `/sys/fs/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    /// The unified hierarchy: `cgroup.controllers` is there; its controllers.
    V2(Vec<String>),
    /// A v1 hierarchy (a tmpfs of controller directories, also the hybrid layout with
    /// `unified/`): the controller directories found.
    V1(Vec<String>),
    /// Neither: nothing mounted there, or a scratch `--root` that has no copy of it.
    NotVisible,
}

/// v1 controller hierarchies systemd mounts under `/sys/fs/cgroup` (`cpu` and
/// `cpuacct` are often links to `cpu,cpuacct`; `systemd` is the named hierarchy).
const V1_HIERARCHIES: [&str; 11] =
    ["memory", "cpu", "cpuacct", "cpu,cpuacct", "cpuset", "blkio", "devices", "freezer", "pids", "net_cls", "systemd"];

/// Which cgroup hierarchy `root` has: v2 when `/sys/fs/cgroup/cgroup.controllers`
/// exists (the unified mount's own file), v1 when controller directories such as
/// `memory/` are there instead, otherwise [`Cgroups::NotVisible`] — never a guess.
pub fn cgroups(root: &Path) -> Cgroups {
    if let Some(c) = read(root, "/sys/fs/cgroup/cgroup.controllers") {
        return Cgroups::V2(c.split_whitespace().map(str::to_string).collect());
    }
    let v1: Vec<String> = V1_HIERARCHIES
        .iter()
        .filter(|h| under(root, &format!("/sys/fs/cgroup/{h}")).is_dir())
        .map(|h| h.to_string())
        .collect();
    if v1.is_empty() {
        Cgroups::NotVisible
    } else {
        Cgroups::V1(v1)
    }
}

/// The `cgroups` check for what [`cgroups`] found, for a kubeadm of `minor`.
fn cgroup_check(c: &Cgroups, root: &Path, minor: u32) -> Check {
    const ID: &str = "cgroups";
    match c {
        Cgroups::V2(c) if c.iter().any(|x| x == "memory") => ok(ID, "cgroup v2 with the memory controller"),
        Cgroups::V2(_) => err(
            ID,
            "cgroup v2 without the memory controller: kubelet cannot enforce limits; on a Raspberry Pi add `cgroup_enable=memory cgroup_memory=1` to /boot/firmware/cmdline.txt and reboot",
        ),
        Cgroups::V1(dirs) => {
            let found = format!("controller directories {} in /sys/fs/cgroup, no cgroup.controllers", dirs.join(", "));
            if minor >= 35 {
                err(ID, format!("cgroup v1 ({found}): kubelet refuses cgroup v1 from Kubernetes 1.35; boot with systemd.unified_cgroup_hierarchy=1"))
            } else {
                warn(ID, format!("cgroup v1 ({found}): deprecated, and refused by kubelet from 1.35; boot with systemd.unified_cgroup_hierarchy=1"))
            }
        }
        Cgroups::NotVisible if root == Path::new("/") => err(
            ID,
            "no cgroup hierarchy at /sys/fs/cgroup (no cgroup.controllers, no controller directories): kubelet cannot run; mount cgroup2 there (systemd does at boot; a container needs the host's /sys/fs/cgroup)",
        ),
        Cgroups::NotVisible => warn(
            ID,
            format!(
                "cgroups not visible under --root {r}: no sys/fs/cgroup/cgroup.controllers (v2) or controller directories (v1) there, so v1 and v2 cannot be told apart; check on the node itself (`kiln-firstboot doctor` without --root), or copy the node's /sys/fs/cgroup/cgroup.controllers to {r}/sys/fs/cgroup/",
                r = root.display()
            ),
        ),
    }
}

/// The iptables backend `iptables --version` names: `(nf_tables)` or `(legacy)`, as
/// iptables 1.8 prints it (`iptables/xtables-multi`: `"%s v%s (%s)"` with the mode).
pub fn iptables_backend(version: &str) -> Option<&'static str> {
    if version.contains("(nf_tables)") {
        Some("nf_tables")
    } else if version.contains("(legacy)") {
        Some("legacy")
    } else {
        None
    }
}

/// Issue 25, row 28: which iptables backend the host uses, against the kube-proxy kiln
/// configures. kiln writes no `KubeProxyConfiguration`, so kube-proxy runs kubeadm's
/// default mode, iptables (kube-proxy `cmd/kube-proxy/app/server_linux.go`: an empty
/// `Mode` becomes `ProxyModeIPTables`). Its image's iptables-wrapper picks the backend
/// kubelet's chains are in (kubernetes-sigs/iptables-wrappers `pkg/xtables/detect.go`,
/// `DetectMode`: `KUBE-IPTABLES-HINT` or `KUBE-KUBELET-CANARY` in nft's mangle table, else in
/// legacy's, else nft), and kubelet makes them with the host's `iptables`: one backend
/// on a consistent host. The real failure is rules in both: packets pass both rule sets.
/// Legacy tables in use are listed in `/proc/net/ip_tables_names` (`net/ipv4/netfilter/
/// ip_tables.c`, readable without root); with an nf_tables host that is a warning.
/// `None` when `iptables --version` cannot be run (the executables check names it).
fn iptables_check(root: &Path, bin_dir: &str) -> Option<Check> {
    const ID: &str = "iptables";
    let bin = crate::tools::which(root, bin_dir, "iptables");
    let (ran, version) =
        crate::runner::run_bounded(std::process::Command::new(bin).arg("--version"), std::time::Duration::from_secs(5));
    let version = version.trim().lines().next().unwrap_or_default().to_string();
    let backend = iptables_backend(&version).filter(|_| ran);
    let legacy: Vec<String> = ["/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"]
        .iter()
        .flat_map(|f| read(root, f).unwrap_or_default().lines().map(str::trim).map(str::to_string).collect::<Vec<_>>())
        .filter(|t| !t.is_empty())
        .collect();
    let proxy = "kube-proxy mode iptables (kubeadm's default), whose iptables-wrapper follows the backend kubelet's chains are in";
    Some(match backend? {
        "nf_tables" if !legacy.is_empty() => warn(
            ID,
            format!(
                "the host's iptables is nf_tables ({version}) but legacy iptables tables are in use ({} in /proc/net/ip_tables_names): something (an old Docker, a firewall script, iptables-legacy) writes legacy rules, and packets pass both rule sets; {proxy}, so its rules and those can disagree: move that tool to nf_tables (`update-alternatives --set iptables /usr/sbin/iptables-nft`) or flush the legacy rules (`iptables-legacy -F`)",
                legacy.join(", ")
            ),
        ),
        b => ok(ID, format!("iptables backend {b} ({version}); {proxy}")),
    })
}

/// SMBIOS system UUIDs that firmware ships instead of a machine's own, so many machines
/// report the same one: all 0x00 (SMBIOS "not settable"; QEMU without `-uuid`) and all
/// 0xFF ("not present"), which systemd refuses as a product UUID (`src/basic/id128-util.c`,
/// `id128_get_product`: `sd_id128_is_null || sd_id128_is_allf`, "Recognizable error"), and
/// the AMI Aptio "To Be Filled By O.E.M." default and its byte-swapped spelling, shipped
/// on many boards (dmidecode on them prints it; inventory tools refuse it as generic).
const PLACEHOLDER_UUIDS: [&str; 2] = ["03000200-0400-0500-0006-000700080009", "00020003-0004-0005-0006-000700080009"];

/// Whether `uuid` is one every machine of its make may carry: a `PLACEHOLDER_UUIDS`
/// entry, or one byte repeated (all 0, all F, `fefefefe-…`).
pub fn placeholder_uuid(uuid: &str) -> bool {
    let u = uuid.trim().to_ascii_lowercase();
    let digits: Vec<char> = u.chars().filter(|c| *c != '-').collect();
    PLACEHOLDER_UUIDS.contains(&u.as_str()) || digits.chunks(2).all(|b| b == &digits[..2.min(digits.len())])
}

/// The install guide's "unique MAC address and product_uuid for every node": the
/// firmware's product UUID (`/sys/class/dmi/id/product_uuid`; absent is only a warning,
/// normal on a Raspberry Pi) must not be a placeholder, and no two physical NICs (a
/// `device` link in `/sys/class/net/IF/`; virtual ones have none) that are not enslaved
/// to a bond (`master`: a bond gives its slaves its own MAC) may share a MAC.
fn identity_checks(root: &Path) -> Vec<Check> {
    let mut out = Vec::new();
    match read(root, "/sys/class/dmi/id/product_uuid").map(|u| u.trim().to_string()).filter(|u| !u.is_empty()) {
        None => out.push(warn(
            "product-uuid",
            "no /sys/class/dmi/id/product_uuid (normal on a Raspberry Pi); node names come from the machine id",
        )),
        Some(u) if placeholder_uuid(&u) => out.push(err(
            "product-uuid",
            format!(
                "/sys/class/dmi/id/product_uuid is {u}, a placeholder the firmware ships instead of this machine's own: every machine with it reports the same product_uuid, which kubeadm's install guide requires unique (kubelet reports it as the node's systemUUID); set a unique one in the firmware or the hypervisor (QEMU `-uuid`, libvirt `<uuid>`, the vendor's DMI tool)"
            ),
        )),
        Some(u) => out.push(ok("product-uuid", format!("product_uuid {u}"))),
    }
    let Ok(dir) = std::fs::read_dir(under(root, "/sys/class/net")) else { return out };
    let mut nics: Vec<(String, String)> = dir
        .filter_map(Result::ok)
        .filter(|e| e.path().join("device").exists() && std::fs::symlink_metadata(e.path().join("master")).is_err())
        .filter_map(|e| {
            let mac = std::fs::read_to_string(e.path().join("address")).ok()?.trim().to_ascii_lowercase();
            let name = e.file_name().to_string_lossy().into_owned();
            (!mac.is_empty() && mac.chars().any(|c| c != '0' && c != ':')).then_some((name, mac))
        })
        .collect();
    nics.sort();
    let mut clashes = Vec::new();
    for (i, (a, mac)) in nics.iter().enumerate() {
        for (b, other) in &nics[i + 1..] {
            if mac == other {
                clashes.push(format!("{a} and {b} both have {mac}"));
            }
        }
    }
    out.push(if clashes.is_empty() {
        ok("mac", format!("{} physical NIC(s), each with its own MAC", nics.len()))
    } else {
        err(
            "mac",
            format!(
                "{}: the install guide requires a unique MAC per NIC (ARP, DHCP leases and the CNI's neighbour entries would clash); give one its own address in the firmware or the hypervisor, or set it (`ip link set IF address ...`, persisted in the network configuration)",
                clashes.join("; ")
            ),
        )
    });
    out
}

/// Whether systemd unit `name` is active, by `systemctl is-active` (bounded).
fn unit_active(root: &Path, bin_dir: &str, name: &str) -> bool {
    let systemctl = crate::tools::which(root, bin_dir, "systemctl");
    let (ok, said) = crate::runner::run_bounded(
        std::process::Command::new(systemctl).args(["is-active", name]),
        std::time::Duration::from_secs(5),
    );
    ok && said.trim() == "active"
}

/// Issue 25, row 33: the required ports ([`required_ports`]) must be accepted by the host
/// firewall. kubeadm only warns that firewalld is active (`FirewalldCheck`, checks.go); this
/// reads what the active firewall's saved configuration accepts: firewalld's default zone
/// (its ports, its services' ports, `target="ACCEPT"`), an nftables ruleset with a
/// dropping input chain, an iptables rules file with `:INPUT DROP`, and names the required
/// ports none of them accepts. A warning: rules added at run time are not in the files.
fn firewall_checks(root: &Path, bin_dir: &str, k: &crate::kubeadm::Inputs) -> Vec<Check> {
    use crate::firewall as fw;
    const ID: &str = "firewall";
    let required = required_ports(k.role, k.bind_port);
    let shut = |ports: &fw::Ports| -> Vec<String> {
        required.iter().filter(|(p, _)| !fw::covers(ports, *p)).map(|(p, what)| format!("{p}/tcp ({what})")).collect()
    };
    let mut out = Vec::new();
    if unit_active(root, bin_dir, "firewalld") {
        let zone = fw::firewalld_default_zone(&read(root, "/etc/firewalld/firewalld.conf").unwrap_or_default());
        let file = |kind: &str, name: &str| {
            read(root, &format!("/etc/firewalld/{kind}/{name}.xml"))
                .or_else(|| read(root, &format!("/usr/lib/firewalld/{kind}/{name}.xml")))
        };
        let (all, mut ports, services) = fw::firewalld_zone(&file("zones", &zone).unwrap_or_default());
        for s in &services {
            ports.extend(fw::firewalld_ports(&file("services", s).unwrap_or_default()).0);
        }
        let missing = if all { Vec::new() } else { shut(&ports) };
        out.push(if missing.is_empty() {
            ok(ID, format!("firewalld is active; its default zone {zone} accepts the required ports"))
        } else {
            let adds: Vec<String> = missing.iter().map(|m| format!("--add-port={}", m.split(' ').next().unwrap_or(""))).collect();
            warn(
                ID,
                format!(
                    "firewalld is active and its default zone {zone} does not accept {}: the other nodes cannot reach them; `firewall-cmd --permanent {} && firewall-cmd --reload`",
                    missing.join(", "),
                    adds.join(" ")
                ),
            )
        });
    }
    let saved = [
        ("nftables", "/etc/nftables.conf"),
        ("nftables", "/etc/sysconfig/nftables.conf"),
        ("netfilter-persistent", "/etc/iptables/rules.v4"),
        ("iptables", "/etc/sysconfig/iptables"),
    ];
    for (unit, path) in saved {
        let Some(text) = read(root, path) else { continue };
        let (drops, ports) = if unit == "nftables" { fw::nft_input(&text) } else { fw::iptables_input(&text) };
        if !drops || !unit_active(root, bin_dir, unit) {
            continue;
        }
        let missing = shut(&ports);
        out.push(if missing.is_empty() {
            ok(ID, format!("{path} ({unit}.service) drops input by default and accepts the required ports"))
        } else {
            warn(
                ID,
                format!(
                    "{path} ({unit}.service) drops input by default and accepts none of {}: the other nodes cannot reach them; add accept rules for them to {path} and reload {unit}",
                    missing.join(", ")
                ),
            )
        });
    }
    out
}

/// Issue 25, row 34: the SELinux mode (Fedora CoreOS enforces it), and on enforcing the
/// paths kiln writes that carry no label (`run` relabels them with restorecon first).
fn selinux_check(root: &Path, flex_volume_dir: &str) -> Check {
    use crate::host::Selinux;
    const ID: &str = "selinux";
    let mode = crate::host::selinux(root);
    match mode {
        Selinux::Disabled => ok(ID, "SELinux disabled (no /sys/fs/selinux/enforce)"),
        Selinux::Permissive => ok(ID, "SELinux permissive: denials are logged, not enforced"),
        Selinux::Enforcing => {
            let bare = crate::host::unlabelled(root, &crate::host::kiln_paths(flex_volume_dir));
            if bare.is_empty() {
                ok(ID, "SELinux enforcing; the paths kiln writes are labelled")
            } else {
                warn(
                    ID,
                    format!(
                        "SELinux enforcing and {} have no SELinux label: kubelet and the control plane's containers may be denied them; `restorecon -R {}` (run does it when restorecon is installed)",
                        bare.join(", "),
                        bare.join(" ")
                    ),
                )
            }
        }
    }
}

/// Issue 25, row 45: with several NICs, cluster traffic must leave by the node IP's
/// adapter. For each family of `service_subnet`: a route for it must exist (the default
/// route, normally: kubeadm and kubelet pick the node's address from it when none is
/// given, `k8s.io/apimachinery/pkg/util/net` `ChooseHostInterface`, and host-network pods
/// reach ClusterIPs through it before kube-proxy's NAT), and the route the kernel picks
/// for the service network must use the interface the node IP is on.
fn route_checks(root: &Path, k: &crate::kubeadm::Inputs) -> Vec<Check> {
    const ID: &str = "routes";
    let v4 = read(root, "/proc/net/route").map(|t| routes::parse_v4(&t));
    let v6 = read(root, "/proc/net/ipv6_route").map(|t| routes::parse_v6(&t));
    let inet6 = routes::parse_if_inet6(&read(root, "/proc/net/if_inet6").unwrap_or_default());
    let node_ips = crate::validate::endpoint::node_ips(&k.node_ip).unwrap_or_default();
    let mut out = Vec::new();
    for cidr in k.service_subnet.split(',').map(str::trim) {
        let Some((net, _)) = routes::parse_cidr(cidr) else { continue };
        let (family, table, file) =
            if net.is_ipv4() { ("IPv4", &v4, "/proc/net/route") } else { ("IPv6", &v6, "/proc/net/ipv6_route") };
        let Some(table) = table else {
            out.push(warn(ID, format!("no {file}: how service_subnet {cidr} is routed cannot be checked; is {family} enabled on the node?")));
            continue;
        };
        let node_ip = node_ips.iter().copied().find(|ip| ip.is_ipv4() == net.is_ipv4());
        let node_if = node_ip.and_then(|ip| routes::iface_of(ip, v4.as_deref().unwrap_or_default(), &inet6));
        let default = table.iter().filter(|r| r.is_default()).min_by_key(|r| r.metric);
        let fix_dev = node_if.as_deref().unwrap_or("IFACE");
        out.push(match (routes::lookup(table, net), &node_if, node_ip) {
            (None, _, None) => err(
                ID,
                format!(
                    "no default {family} route and no route for service_subnet {cidr} ({file}): kubeadm and kubelet pick the node's address from the default route and host-network pods (kube-proxy, the CNI agent) reach ClusterIPs through it; add a default route via the node's interface (`ip route add default via GATEWAY dev {fix_dev}`, and persist it in the network configuration)"
                ),
            ),
            (None, ..) => warn(
                ID,
                format!(
                    "no default {family} route and no route for service_subnet {cidr} ({file}): kubeadm does not need one here (the node IP is given), but host-network pods (kube-proxy, the CNI agent) get `network is unreachable` for ClusterIPs; add a default route via the node's interface (`ip route add default via GATEWAY dev {fix_dev}`) or one for the service CIDR (`ip route add {cidr} dev {fix_dev}`), persisted in the network configuration"
                ),
            ),
            (Some(r), Some(ni), Some(ip)) if r.iface != *ni => err(
                ID,
                format!(
                    "service_subnet {cidr} routes via {} but the node IP {ip} is on {ni}: ClusterIP traffic would leave by the wrong adapter; make {ni}'s default route win (a lower metric, or no default route on {}), or route the service CIDR there (`ip route add {cidr} dev {ni}`, persisted in the network configuration)",
                    r.iface, r.iface
                ),
            ),
            (Some(r), ..) => {
                let on = match (&node_if, node_ip) {
                    (Some(_), Some(ip)) => format!(", the interface of the node IP {ip}"),
                    _ => String::new(),
                };
                let said = format!("service_subnet {cidr} routes via {}{on}", r.iface);
                match (default, node_ip) {
                    (Some(d), _) => ok(ID, format!("{said}; default {family} route via {}", d.iface)),
                    (None, Some(_)) => ok(ID, format!("{said}; no default {family} route (none needed: the node IP is given)")),
                    (None, None) => warn(
                        ID,
                        format!("{said}; no default {family} route and no node IP: kubeadm and kubelet pick the node's address from the default route; add one or set [node] node_ip"),
                    ),
                }
            }
        });
    }
    out
}

/// Why a connection to the control-plane endpoint failed, worst-informative last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Unreached {
    /// The name did not resolve.
    Name,
    /// ECONNREFUSED: a RST came back.
    Refused,
    /// ENETUNREACH / EHOSTUNREACH / EINVAL (a blackhole route): no route.
    NoRoute,
    /// No answer at all within the attempt's bound.
    TimedOut,
}

/// Waits up to `limit` for a TCP connection to `endpoint` (`host:port`), retrying with
/// backoff; on failure the error says which failure it was, as the fix differs: a
/// refusal (ECONNREFUSED: nothing listens there yet, or a firewall REJECTs) against a
/// timeout (SYNs dropped: a firewall DROP rule or security group, or a load balancer
/// that cannot reach a control plane), no route, or a name that does not resolve.
pub fn wait_for_endpoint(endpoint: &str, limit: std::time::Duration) -> Result<(), String> {
    use std::io::ErrorKind;
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::{Duration, Instant};
    let start = Instant::now();
    let mut delay = Duration::from_millis(200);
    let mut seen = Unreached::Name;
    let mut last;
    loop {
        match endpoint.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => {
                let bound =
                    Duration::from_secs(3).min(limit.saturating_sub(start.elapsed())).max(Duration::from_millis(100));
                match TcpStream::connect_timeout(&a, bound) {
                    Ok(_) => return Ok(()),
                    Err(e) => {
                        let why = match e.kind() {
                            ErrorKind::ConnectionRefused => Unreached::Refused,
                            ErrorKind::TimedOut | ErrorKind::WouldBlock => Unreached::TimedOut,
                            _ => Unreached::NoRoute,
                        };
                        seen = seen.max(why);
                        last = e.to_string();
                    }
                }
            }
            Ok(None) => last = "no address".into(),
            Err(e) => last = e.to_string(),
        }
        if start.elapsed() >= limit {
            break;
        }
        std::thread::sleep(delay.min(limit.saturating_sub(start.elapsed())));
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    let n = limit.as_secs();
    Err(match seen {
        Unreached::Refused => format!(
            "the control plane at {endpoint} did not answer within {n} s: the connection was refused (ECONNREFUSED): nothing listens there yet (is the init node up and its kube-apiserver running?) or a firewall REJECTs the port; check `ss -ltn` and the firewall on the control plane"
        ),
        Unreached::TimedOut => format!(
            "the control plane at {endpoint} did not answer within {n} s: the connection timed out (no reply at all): packets are dropped on the way (a firewall DROP rule or a security group), or a load balancer cannot reach a control plane; open TCP {} from this node and check the load balancer's targets",
            endpoint.rsplit(':').next().unwrap_or("6443")
        ),
        Unreached::NoRoute => format!(
            "the control plane at {endpoint} did not answer within {n} s: there is no route to it ({last}); check this node's routes and addresses (`ip route get` the endpoint's address)"
        ),
        Unreached::Name => format!(
            "the control plane at {endpoint} did not answer within {n} s: its name does not resolve here ({last}); fix the node's DNS or use an address in control_plane_endpoint"
        ),
    })
}

/// Whether any check failed.
pub fn has_errors(c: &[Check]) -> bool {
    c.iter().any(|c| c.level == Level::Error)
}

fn parse_v4(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, p) = s.split_once('/')?;
    Some((a.parse().ok()?, p.parse().ok().filter(|p: &u8| *p <= 32)?))
}

fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let p = a.1.min(b.1);
    if p == 0 {
        return false; // the default route is not a host network
    }
    let mask = u32::MAX << (32 - p as u32);
    (u32::from(a.0) & mask) == (u32::from(b.0) & mask)
}

/// [`host_networks`] without the routes a pod network itself puts there: a route
/// through a gateway to a range strictly inside the pod subnet is one node's
/// pod range reached through that node, as host-gw pod networks (flannel's
/// `host-gw` backend, kube-router, Calico without an overlay) and static
/// per-node routes carry pod traffic; it is the pod network, not a host network
/// it collides with. A directly connected network inside the pod subnet, or a
/// gatewayed route as large as it or larger, still overlaps.
fn host_networks_beside_pods(route: &str, pods: (Ipv4Addr, u8)) -> Vec<(Ipv4Addr, u8)> {
    routes::parse_v4(route)
        .into_iter()
        .filter_map(|r| match r.dest {
            std::net::IpAddr::V4(a) if r.prefix > 0 => {
                let pod_range = r.gateway.is_some() && r.prefix > pods.1 && overlaps((a, r.prefix), pods);
                (!pod_range).then_some((a, r.prefix))
            }
            _ => None,
        })
        .collect()
}

/// IPv4 networks the host routes directly, from `/proc/net/route` (hex, little-endian).
pub fn host_networks(route: &str) -> Vec<(Ipv4Addr, u8)> {
    routes::parse_v4(route)
        .into_iter()
        .filter_map(|r| match r.dest {
            std::net::IpAddr::V4(a) if r.prefix > 0 => Some((a, r.prefix)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_hierarchies_are_told_apart_and_never_guessed() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        assert_eq!(cgroups(root), Cgroups::NotVisible);
        // An empty mount point is not v1 either.
        std::fs::create_dir_all(root.join("sys/fs/cgroup")).unwrap();
        assert_eq!(cgroups(root), Cgroups::NotVisible);
        std::fs::create_dir_all(root.join("sys/fs/cgroup/memory")).unwrap();
        std::fs::create_dir_all(root.join("sys/fs/cgroup/unified")).unwrap();
        assert_eq!(cgroups(root), Cgroups::V1(vec!["memory".into()]));
        std::fs::write(root.join("sys/fs/cgroup/cgroup.controllers"), "cpu memory\n").unwrap();
        assert_eq!(cgroups(root), Cgroups::V2(vec!["cpu".into(), "memory".into()]));
    }

    #[test]
    fn invisible_cgroups_are_an_error_only_on_the_real_root() {
        let scratch = cgroup_check(&Cgroups::NotVisible, Path::new("/tmp/x"), 35);
        assert_eq!(scratch.level, Level::Warning);
        assert!(scratch.message.starts_with("cgroups not visible under --root /tmp/x"), "{}", scratch.message);
        let real = cgroup_check(&Cgroups::NotVisible, Path::new("/"), 34);
        assert_eq!(real.level, Level::Error);
        assert!(!real.message.contains("cgroup v1"), "{}", real.message);
        let v1 = |minor| cgroup_check(&Cgroups::V1(vec!["memory".into()]), Path::new("/"), minor).level;
        assert_eq!((v1(34), v1(35)), (Level::Warning, Level::Error));
    }

    /// Issue 25, row 6: the missing-tool check names each family's packages and its
    /// package manager, and is an error only for what kubeadm's own InPathCheck requires.
    #[test]
    fn missing_tools_name_the_package_per_distro_family() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let bin = root.join("usr/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let have = |tools: &[&str]| {
            for (t, _) in TOOLS {
                let p = bin.join(t);
                if tools.contains(&t) {
                    std::fs::write(&p, "").unwrap();
                } else {
                    let _ = std::fs::remove_file(&p);
                }
            }
        };
        let check = |os: &str, minor| {
            std::fs::create_dir_all(root.join("etc")).unwrap();
            std::fs::write(root.join("etc/os-release"), os).unwrap();
            executables_check(root, &["/usr/bin"], minor)
        };
        // Everything but ip, socat and tc: warnings, with the packages.
        have(&["losetup", "mount", "cp", "conntrack", "iptables", "nsenter", "ethtool"]);
        let cases = [
            (
                "ID=debian\n",
                "ip (package iproute2), socat (package socat), tc (package iproute2)",
                "`apt-get install iproute2 socat`",
            ),
            ("ID=ubuntu\nID_LIKE=debian\n", "ip (package iproute2)", "`apt-get install iproute2 socat`"),
            ("ID=raspbian\nID_LIKE=debian\n", "socat (package socat)", "apt-get"),
            (
                "ID=fedora\nVERSION_ID=41\n",
                "ip (package iproute), socat (package socat), tc (package iproute-tc)",
                "`dnf install iproute socat iproute-tc`",
            ),
            ("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n", "tc (package iproute-tc)", "`dnf install"),
            ("ID=fedora\nVARIANT_ID=coreos\n", "ip (package iproute)", "`rpm-ostree install iproute socat iproute-tc`"),
            ("ID=flatcar\nID_LIKE=coreos\n", "missing: ip, socat, tc;", "Flatcar ships them in the OS image"),
            ("ID=alpine\n", "ip (package iproute2)", "`apk add iproute2 socat`"),
            ("ID=arch\n", "socat (package socat)", "`pacman -S iproute2 socat`"),
            (
                "ID=\"opensuse-leap\"\nID_LIKE=\"suse opensuse\"\n",
                "ip (package iproute2)",
                "`zypper install iproute2 socat`",
            ),
            ("ID=nixos\n", "missing: ip, socat, tc;", "install the packages that provide them on nixos"),
        ];
        for (os, names, hint) in cases {
            let c = check(os, 34);
            assert_eq!(c.level, Level::Warning, "{os}: {}", c.message);
            assert!(c.message.contains(names) && c.message.contains(hint), "{os}: {}", c.message);
        }
        // kubeadm's mandatory InPathCheck tools are errors; conntrack only below 1.32.
        have(&["mount", "cp", "ip", "iptables", "nsenter", "ethtool", "socat", "tc", "conntrack"]);
        let c = check("ID=debian\n", 34);
        assert_eq!(c.level, Level::Error, "{}", c.message);
        assert!(
            c.message.contains("losetup (package mount)") && c.message.contains("fails without losetup"),
            "{}",
            c.message
        );
        have(&["losetup", "mount", "cp", "ip", "iptables", "nsenter", "ethtool", "socat", "tc"]);
        assert_eq!(check("ID=fedora\n", 34).level, Level::Warning);
        let c = check("ID=fedora\n", 31);
        assert_eq!(c.level, Level::Error, "{}", c.message);
        assert!(c.message.contains("conntrack (package conntrack-tools)"), "{}", c.message);
        have(&["losetup", "mount", "cp", "conntrack", "ip", "iptables", "nsenter", "ethtool", "socat", "tc"]);
        assert_eq!(check("", 34).level, Level::Ok);
    }

    #[test]
    fn placeholder_uuids_are_recognised() {
        for u in [
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "FEFEFEFE-FEFE-FEFE-FEFE-FEFEFEFEFEFE",
            "03000200-0400-0500-0006-000700080009",
            "00020003-0004-0005-0006-000700080009\n",
        ] {
            assert!(placeholder_uuid(u), "{u}");
        }
        assert!(!placeholder_uuid("4c4c4544-0042-3510-8052-b3c04f4b4e32"));
    }

    #[test]
    fn routes_parse_and_overlap() {
        let route = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t0000000A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let nets = host_networks(route);
        assert_eq!(nets, vec![(Ipv4Addr::new(10, 0, 0, 0), 16)]);
        assert!(overlaps((Ipv4Addr::new(10, 0, 128, 0), 17), nets[0]));
        assert!(!overlaps((Ipv4Addr::new(10, 244, 0, 0), 16), nets[0]));
    }

    #[test]
    fn a_pod_network_s_own_per_node_routes_are_not_host_networks() {
        // eth0 10.0.2.0/24; 10.244.2.0/24 via 10.0.2.16 (another node's pod range,
        // as flannel host-gw routes it); 10.244.0.0/16 via 10.0.2.1 (a route as large
        // as the pod subnet); cni0 10.244.3.0/24 directly connected.
        let route = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
eth0\t0002F40A\t1002000A\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let pods = (Ipv4Addr::new(10, 244, 0, 0), 16);
        assert_eq!(host_networks_beside_pods(route, pods), vec![(Ipv4Addr::new(10, 0, 2, 0), 24)]);
        assert_eq!(host_networks(route).len(), 2, "the service subnet check still sees every route");
        let wide = format!("{route}eth0\t0000F40A\t0102000A\t0003\t0\t0\t0\t0000FFFF\t0\t0\t0\n");
        assert!(
            host_networks_beside_pods(&wide, pods).contains(&pods),
            "a gatewayed route as large as the pod subnet overlaps"
        );
        let bridge = format!("{route}cni0\t0003F40A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n");
        assert!(
            host_networks_beside_pods(&bridge, pods).contains(&(Ipv4Addr::new(10, 244, 3, 0), 24)),
            "a directly connected network inside the pod subnet overlaps"
        );
    }
}
