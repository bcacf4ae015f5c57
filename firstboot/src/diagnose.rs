//! Known kubeadm/kubelet failures from the kubeadm troubleshooting guide,
//! recognised in kubeadm's output, each with its cause and fix.

/// A recognised failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// Stable id (for tests and `doctor --json`).
    pub id: &'static str,
    /// What went wrong.
    pub cause: &'static str,
    /// What to do.
    pub fix: &'static str,
}

/// (id, substrings that must all appear, cause, fix)
const KNOWN: &[(&str, &[&str], &str, &str)] = &[
    (
        "cgroup-driver-mismatch",
        &["kubelet cgroup driver", "is different from"],
        "kubelet and the container runtime use different cgroup drivers, so kubelet exits and `kubeadm init` waits for a control plane that never starts",
        "use one driver for both: set the image's cgroup_driver and the runtime's (containerd: SystemdCgroup = true with systemd) to the same value, rebuild, or fix /etc/containerd/config.toml and run `kiln-firstboot reset` then `run`",
    ),
    (
        "bootstrap-rbac-forbidden",
        &["is forbidden: User \"system:bootstrap:", "cannot get resource \"nodes\""],
        "this node's kubeadm is newer than the control plane: since v1.18 `kubeadm join` reads the Node object, which an older cluster's bootstrap token may not (kubeadm troubleshooting: joining a v1.18 node to a v1.17 cluster)",
        "use an image whose kubeadm/kubelet are not newer than the control plane, or on a control plane run `kubeadm init phase bootstrap-token` with the newer kubeadm (or apply the kubeadm:get-nodes ClusterRole and binding from the guide)",
    ),
    (
        "x509-unknown-authority",
        &["x509: certificate signed by unknown authority"],
        "the API server's certificate is not signed by the CA this node trusts: the CA hash or CA in the user-data belongs to another cluster, or a stale kubeconfig is in use",
        "regenerate this node's user-data from the cluster directory the control plane was built from (`kiln userdata --cluster DIR`), and do not mix KUBECONFIG files from earlier clusters",
    ),
    (
        "certificate-not-yet-valid",
        &["x509: certificate has expired or is not yet valid"],
        "the clock is wrong (a Raspberry Pi without an RTC boots in 1970) or certificates expired",
        "enable time sync (systemd-timesyncd or chrony) so the clock is right before kiln-firstboot runs; then `kiln-firstboot reset` and `run`",
    ),
    (
        "swap-on",
        &["swap"],
        "swap is on and kubelet is configured to refuse it",
        "set `swap = \"off\"` in node.toml (kiln-firstboot turns swap off and masks dphys-swapfile/zram) or `swap = \"limited\"` to run with LimitedSwap",
    ),
    (
        "bridge-netfilter",
        &["bridge-nf-call-iptables"],
        "the br_netfilter module is not loaded, so bridged pod traffic bypasses iptables",
        "load it now and at boot: `modprobe br_netfilter`, /etc/modules-load.d/ with br_netfilter and net.bridge.bridge-nf-call-iptables = 1 in /etc/sysctl.d/ (kiln images carry both)",
    ),
    (
        "port-in-use",
        &["[ERROR Port-"],
        "a port kubeadm needs is taken, often by a previous control plane or another kubelet",
        "stop what listens there (`ss -ltnp`), or run `kiln-firstboot reset` to remove a previous attempt, then `run`",
    ),
    (
        "runtime-not-running",
        &["container runtime is not running"],
        "the CRI socket does not answer",
        "start the runtime (`systemctl enable --now containerd`) and check criSocket in /etc/kiln/image.toml",
    ),
    (
        "api-server-unreachable",
        &["connection refused"],
        "the control-plane endpoint does not answer (the init node is not up yet, or a firewall/load balancer is in the way)",
        "check that the endpoint in node.toml is right and port 6443 is reachable from this node; kiln-firstboot retries with backoff",
    ),
    (
        "kubelet-not-healthy",
        &["The kubelet is not running"],
        "kubelet did not come up while kubeadm waited for the control plane",
        "read `journalctl -u kubelet`; the usual causes are a cgroup driver mismatch, swap, or a missing CNI/runtime",
    ),
    (
        "not-enough-cpus",
        &["[ERROR NumCPU]"],
        "control-plane nodes need at least 2 CPUs",
        "give the machine 2 or more CPUs, or make it a worker (`role = \"join\"`)",
    ),
    (
        "not-enough-memory",
        &["[ERROR Mem]"],
        "control-plane nodes need at least 1700 MB of memory",
        "give the machine more memory, or make it a worker",
    ),
];

/// Every known failure whose pattern appears in `output`.
pub fn diagnose(output: &str) -> Vec<Diagnosis> {
    let lower = output.to_lowercase();
    KNOWN
        .iter()
        .filter(|(_, pats, _, _)| pats.iter().all(|p| lower.contains(&p.to_lowercase())))
        .map(|(id, _, cause, fix)| Diagnosis { id, cause, fix })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(s: &str) -> Vec<&'static str> {
        diagnose(s).into_iter().map(|d| d.id).collect()
    }

    #[test]
    fn recognises_the_guides_texts() {
        assert_eq!(
            ids("error: failed to run Kubelet: failed to create kubelet: misconfiguration: kubelet cgroup driver: \"systemd\" is different from docker cgroup driver: \"cgroupfs\""),
            ["cgroup-driver-mismatch"]
        );
        assert_eq!(
            ids("nodes \"node-1\" is forbidden: User \"system:bootstrap:abcdef\" cannot get resource \"nodes\" in API group \"\" at the cluster scope"),
            ["bootstrap-rbac-forbidden"]
        );
        assert_eq!(
            ids("Unable to connect to the server: x509: certificate signed by unknown authority (possibly because of \"crypto/rsa: verification error\""),
            ["x509-unknown-authority"]
        );
        assert_eq!(ids("[ERROR Swap]: running with swap on is not supported. Please disable swap"), ["swap-on"]);
        assert!(ids("all fine").is_empty());
    }
}
