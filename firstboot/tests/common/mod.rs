//! The scratch node root both `run.rs` (kiln-firstboot against the kubeadm
//! model) and `real_kubeadm.rs` (the same runs, then the real kubeadm) boot
//! kiln-firstboot in: one image description and one set of host files, so the
//! contract test checks the configs the run tests produce.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The flex-volume directory kiln images use (kubelet and controller-manager).
pub const FLEX: &str = "/opt/libexec/kubernetes/kubelet-plugins/volume/exec";

/// One of `tests/model/`'s programs (the kubeadm model, the kubelet stand-in, systemctl).
pub fn model(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/model").join(name)
}

/// Writes `text` to `root/rel`, creating its directories.
pub fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// A kiln image of `family` at Kubernetes `version` (`/etc/kiln/image.toml`),
/// and what preflight reads on its host: machine id, `hostname`, swap on,
/// cgroup v2 with memory, the runtime socket, kubeadm's helper executables,
/// 2 CPUs and 4 GB, a default route and a host network on eth0; the kubeadm model waits 5 s (not 4 min)
/// for an unhealthy kubelet.
pub fn node_root(root: &Path, family: &str, version: &str, hostname: &str) {
    write(
        root,
        "etc/kiln/image.toml",
        &format!(
            "schema = 1\nprofile = \"t\"\nfamily = \"{family}\"\narch = \"amd64\"\nkubernetes_version = \"{version}\"\nkubeadm_version = \"{version}\"\nkubelet_version = \"{version}\"\nbin_dir = \"/opt/bin\"\ncni_bin_dir = \"/opt/cni/bin\"\nflex_volume_dir = \"{FLEX}/\"\nruntime = \"containerd\"\nruntime_socket = \"unix:///run/containerd/containerd.sock\"\ncgroup_driver = \"systemd\"\n"
        ),
    );
    write(root, "etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    write(root, "etc/hostname", &format!("{hostname}\n"));
    write(root, "proc/swaps", "Filename Type Size Used Priority\n/swapfile file 1024 0 -2\n");
    write(root, "sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n");
    write(root, "run/containerd/containerd.sock", "");
    for t in ["losetup", "mount", "cp", "conntrack", "ip", "iptables", "nsenter", "ethtool", "socat", "tc"] {
        write(root, &format!("usr/sbin/{t}"), "");
    }
    write(root, "proc/cpuinfo", "processor\t: 0\nprocessor\t: 1\n");
    write(root, "proc/meminfo", "MemTotal:        4000000 kB\n");
    write(
        root,
        "proc/net/route",
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\neth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\neth0\t0000000A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n",
    );
    write(root, "proc/sys/net/ipv4/ip_forward", "0\n");
    write(root, "etc/kiln-model/kubelet-timeout", "5\n");
}

/// Stops the kubelet stand-in a run under `root` left running (it outlives
/// the run, as kubelet.service does).
pub fn stop_kubelet(root: &Path) {
    if let Ok(pid) = std::fs::read_to_string(root.join("var/lib/kiln-model/kubelet.pid")) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
}
