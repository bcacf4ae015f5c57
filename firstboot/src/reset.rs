//! `kiln-firstboot reset`: kubeadm reset and what it leaves behind (packet
//! filters, IPVS, CNI links and files), then kiln's own state, so `run` starts over.

use crate::files;
use crate::machine::paths::under;
use crate::machine::Machine;
use crate::options::Options;
use crate::plan::CONFIG_PATH;
use crate::runner::run_bounded;
use crate::state::{CAPI_SENTINEL, FAILED_PATH, STARTED_PATH, STATE_PATH};
use crate::tools::{host_tool, which};
use std::process::Command;
use std::time::{Duration, Instant};

/// Network interfaces CNI plugins leave behind (flannel, calico, cilium, weave,
/// kube-router, kube-proxy IPVS): a re-join must not inherit them (seed items 29, 36).
const CNI_LINKS: [&str; 11] = [
    "cni0",
    "flannel.1",
    "flannel-v6.1",
    "cilium_host",
    "cilium_net",
    "cilium_vxlan",
    "vxlan.calico",
    "tunl0",
    "weave",
    "kube-bridge",
    "kube-ipvs0",
];

/// `kiln-firstboot reset`: `kubeadm reset -f`, then what kubeadm reset leaves
/// (its own closing words at v1.34.2, `cmd/kubeadm/app/cmd/reset.go`
/// `manualCleanupInstructions`: "The reset process does not perform cleanup of CNI
/// plugin configuration, network filtering rules and kubeconfig files", pointing at
/// the kubeadm-reset page, which lists `iptables -F && iptables -t nat -F && iptables
/// -t mangle -F && iptables -X`, `ipvsadm -C` (`--clear`) and removing
/// `/etc/cni/net.d`): every iptables table's chains flushed and deleted, and
/// ip6tables' too (dual-stack kube-proxy and CNIs write both), IPVS
/// cleared, the CNI links deleted, the CNI configuration and state removed (kiln's
/// images put nothing in `/etc/cni/net.d`: all of it is the plugin's; `/var/lib/cni`
/// holds its IP allocations, `/run/flannel` flannel's old subnet, row 29), then
/// kiln's state. Everything within `opts.reset_timeout` in total. Returns one line
/// per step.
pub fn reset_node(m: &Machine, opts: &Options) -> Vec<String> {
    let root = &m.root;
    let deadline = Instant::now() + opts.reset_timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let bin = crate::sources::image_defaults(root).map(|i| i.bin_dir).unwrap_or_else(|_| "/opt/bin".into());
    let mut report = Vec::new();
    let kubeadm = which(root, &bin, "kubeadm");
    let (ok, out) = run_bounded(Command::new(&kubeadm).args(["reset", "-f"]), left());
    report.push(if ok {
        "kubeadm reset -f: done".to_string()
    } else {
        format!(
            "kubeadm reset -f did not finish: {} (a stuck container runtime blocks it: restart the runtime, then reset again)",
            out.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output").trim()
        )
    });
    let mut step = |tool: &str, args: &[&str]| {
        if let Some(t) = host_tool(root, &bin, tool) {
            let (ok, out) = run_bounded(Command::new(t).args(args), left().min(Duration::from_secs(10)));
            let what = format!("{tool} {}", args.join(" "));
            report.push(if ok { format!("{what}: done") } else { format!("{what}: {}", out.trim()) });
        }
    };
    for ipt in ["iptables", "ip6tables"] {
        for table in ["filter", "nat", "mangle", "raw"] {
            step(ipt, &["-t", table, "-F"]);
            step(ipt, &["-t", table, "-X"]);
        }
    }
    step("ipvsadm", &["--clear"]);
    for link in CNI_LINKS {
        if under(root, &format!("/sys/class/net/{link}")).exists() {
            step("ip", &["link", "delete", link]);
        }
    }
    for p in [
        STATE_PATH,
        STARTED_PATH,
        FAILED_PATH,
        CAPI_SENTINEL,
        CONFIG_PATH,
        crate::host::BOOTSTRAPPING,
        "/etc/cni/net.d",
        "/var/lib/cni",
        "/run/flannel",
    ] {
        if let Ok(true) = files::remove(root, p) {
            report.push(format!("removed {p}"));
        }
    }
    report
}
