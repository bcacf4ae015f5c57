//! Known kubeadm and kubelet failures, recognised in what the programs print,
//! each with its cause and the next step.
//!
//! The agent hands [`diagnose`] kubeadm's output followed by a bounded tail of
//! `journalctl -u kubelet` and `crictl ps -a`, so one text can hold kubeadm's
//! generic "the kubelet is not healthy" and the kubelet's own reason. Every known
//! failure therefore has a specificity rank, and [`diagnose`] lists the matches
//! most specific first: a cause read from the kubelet's journal always ranks above
//! kubeadm's generic wait timeouts.
//!
//! Patterns are matched line by line, case-insensitively, against texts taken from
//! the upstream sources (kubeadm >= 1.28 up to 1.35, the kubelet, crictl); the
//! fixtures in `tests/fixtures/kubeadm-texts/` hold those texts verbatim, one file
//! each, and `tests/diagnose_table.rs` checks every one of them.
//!
//! Lines that start with `[WARNING ` never match: kubeadm prints them on healthy
//! runs (swap on a node with `swap = "limited"`, firewalld, unreachable hostnames,
//! missing optional tools) and carries on. No known failure here is about a
//! warning, because kiln treats none of kubeadm's warnings as fatal: what they
//! warn about is either checked by kiln's own preflight (swap, firewall) or shows
//! up later as an error that is recognised on its own (the kubelet refusing swap).

/// A recognised failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// Stable kebab-case id (for tests and `doctor --json`).
    pub id: &'static str,
    /// What went wrong.
    pub cause: &'static str,
    /// What to do next.
    pub fix: &'static str,
}

/// How one known failure is recognised.
struct Known {
    id: &'static str,
    /// Higher is more specific; [`diagnose`] lists matches highest first.
    rank: u8,
    /// Alternatives: each is a set of lower-case substrings that must all appear on one line.
    lines: &'static [&'static [&'static str]],
    /// A line that contains any of these lower-case substrings never matches this failure.
    unless: &'static [&'static str],
    /// Context: each group needs at least one of its lower-case substrings somewhere in the text.
    requires: &'static [&'static [&'static str]],
    cause: &'static str,
    fix: &'static str,
}

/// Prefix of kubeadm's preflight warnings (after the leading tab), lower-cased.
const WARNING: &str = "[warning ";

/// kubeadm join's wrapper around every discovery error (discovery/discovery.go), lower-cased.
const DISCOVERY: &str = "couldn't validate the identity of the api server";

/// The issuer the kubelet gives its self-signed serving certificate, `<host>-ca@<unix
/// time>` (client-go util/cert/cert.go: `fmt.Sprintf("%s-ca@%d", host, ...)`), lower-cased.
const SELF_SIGNED_KUBELET_CA: &str = "-ca@";

const KNOWN: &[Known] = &[
    Known {
        id: "token-unknown",
        rank: 100,
        lines: &[
            &["could not find a jws signature in the cluster-info configmap"],
            &["is invalid for this cluster or it has expired"],
            &["failed to verify jws signature of received cluster info object"],
        ],
        unless: &[],
        requires: &[],
        cause: "the cluster does not know this node's bootstrap token: it expired (default TTL 24h) and was deleted, it was never created on the control plane, or its secret differs from the one in user-data",
        fix: "create a fresh token with `kiln cluster rotate-token` (or `kubeadm token create` on a control plane), regenerate this node's user-data with `kiln userdata`, then `kiln-firstboot reset` and `kiln-firstboot run`",
    },
    Known {
        id: "ca-pin-mismatch",
        rank: 100,
        lines: &[
            &["cluster ca found in cluster-info configmap is invalid"],
            &["none of the public keys", "are pinned"],
            &["invalid discovery token ca certificate hash"],
        ],
        unless: &[],
        requires: &[],
        cause: "the cluster CA the endpoint serves does not match `ca_cert_hashes` in node.toml (or the hash is malformed): the endpoint belongs to another cluster, or the user-data was made from another cluster directory",
        fix: "print the right pin with `kiln cluster show` (sha256 of the CA's public key) and regenerate the user-data from the cluster directory the control plane was built from (`kiln userdata`); check that `control_plane_endpoint` points at this cluster; then `kiln-firstboot reset` and `run`",
    },
    Known {
        id: "node-name-taken",
        rank: 100,
        lines: &[&["a node with name", "already exists in the cluster"]],
        unless: &[],
        requires: &[],
        cause: "a Ready Node with this node's name already exists: the machine was rebuilt or cloned, or another machine got the same name",
        fix: "if the old machine is gone, run `kubectl delete node <name>` on a control plane; otherwise give this node a unique `name` in node.toml `[node]`; then `kiln-firstboot reset` and `run`",
    },
    Known {
        id: "bootstrap-rbac-forbidden",
        rank: 100,
        lines: &[&["is forbidden: user \"system:bootstrap:", "cannot get resource \"nodes\""]],
        unless: &[],
        requires: &[],
        cause: "this node's kubeadm is newer than the control plane: since v1.18 `kubeadm join` reads the Node object, which an older cluster's bootstrap token may not (kubeadm troubleshooting: joining a v1.18 node to a v1.17 cluster)",
        fix: "use an image whose kubeadm/kubelet are not newer than the control plane, or on a control plane run `kubeadm init phase bootstrap-token` with the newer kubeadm (or apply the kubeadm:get-nodes ClusterRole and binding from the guide); then `kiln-firstboot reset` and `run`",
    },
    Known {
        id: "kubelet-cert-rotation",
        rank: 98,
        lines: &[&["part of the existing bootstrap client certificate in", "is expired"]],
        unless: &[],
        requires: &[],
        cause: "the kubelet's client certificate in /etc/kubernetes/kubelet.conf expired without being rotated (the node was off for too long, or rotation failed), so the kubelet cannot authenticate",
        fix: "follow the kubeadm guide (kubelet client certificate rotation fails): move away /etc/kubernetes/kubelet.conf and /var/lib/kubelet/pki/kubelet-client*, create a new kubelet.conf with `kubeadm kubeconfig user --org system:nodes --client-name system:node:<name>` on a control plane, copy it here and `systemctl restart kubelet`; or `kubectl delete node <name>`, then `kiln-firstboot reset` and `run` to join afresh",
    },
    Known {
        id: "control-plane-version-skew",
        rank: 96,
        lines: &[&["only supports deploying clusters with the control plane version"]],
        unless: &[],
        requires: &[],
        cause: "this image's kubeadm is too new for the cluster's Kubernetes version: kubeadm supports its own minor version and the one before",
        fix: "build the image for the cluster's version (the profile's kubernetes version and pins), or set `kubernetes_version` in node.toml `[cluster]` to a version this kubeadm supports; then `kiln-firstboot reset` and `run`",
    },
    Known {
        id: "kubelet-version-skew",
        rank: 96,
        lines: &[&["[error kubeletversion]:"]],
        unless: &[],
        requires: &[],
        cause: "the kubelet in the image is newer (or older than kubeadm supports) than the control-plane version being deployed",
        fix: "use an image whose kubelet matches `kubernetes_version` in node.toml `[cluster]` (same minor, never newer than the control plane), or change that version to match the image; then `kiln-firstboot reset` and `run`",
    },
    Known {
        id: "cgroup-v1-refused",
        rank: 96,
        lines: &[&["configured to not run on a host using cgroup v1"]],
        unless: &[],
        requires: &[],
        cause: "the host boots with cgroup v1 and the kubelet refuses it (failCgroupV1 defaults to true from Kubernetes 1.35)",
        fix: "boot the host with cgroup v2 (kernel command line `systemd.unified_cgroup_hierarchy=1`, on Flatcar and Fedora CoreOS the default) and reboot; only as a stopgap set `failCgroupV1 = false` under node.toml `[node.kubelet]`",
    },
    Known {
        id: "multiple-cri-endpoints",
        rank: 96,
        lines: &[&["found multiple cri endpoints on the host"], &["found multiple cri sockets"]],
        unless: &[],
        requires: &[],
        cause: "more than one container runtime socket exists (containerd, CRI-O, cri-dockerd) and kubeadm will not guess which one to use",
        fix: "set `cri_socket` in /etc/kiln/image.toml to the runtime the image is built for (kiln passes it as nodeRegistration.criSocket), or stop and disable the other runtime; then `kiln-firstboot run`",
    },
    Known {
        id: "unauthorized",
        rank: 94,
        lines: &[
            &["unable to fetch the kubeadm-config configmap", "unauthorized"],
            &["failed to get config map: unauthorized"],
            &["cannot create certificate signing request: unauthorized"],
        ],
        unless: &["[reset]"],
        requires: &[],
        cause: "the API server rejected the bootstrap token: it expired or was deleted after discovery read cluster-info",
        fix: "issue a new token with `kiln cluster rotate-token`, regenerate this node's user-data (`kiln userdata`), then `kiln-firstboot reset` and `run`; choose `token_ttl` in `[cluster]` to cover how long nodes may take to boot",
    },
    Known {
        id: "cri-plugin-disabled",
        rank: 94,
        lines: &[
            &["unknown service runtime.v1.runtimeservice"],
            &["unknown service runtime.v1alpha2.runtimeservice"],
            &["cri v1 runtime api is not implemented for endpoint"],
        ],
        unless: &[],
        requires: &[],
        cause: "containerd runs but its CRI plugin is disabled (Docker's containerd.io package ships config.toml with `disabled_plugins = [\"cri\"]`), so Kubernetes cannot talk to it",
        fix: "write a full configuration with `containerd config default > /etc/containerd/config.toml`, set `SystemdCgroup = true` for runc when the cgroup driver is systemd, `systemctl restart containerd`; then `kiln-firstboot run`",
    },
    Known {
        id: "cgroup-driver-mismatch",
        rank: 92,
        lines: &[
            &["kubelet cgroup driver:", "is different from"],
            // runc via containerd; in the kubelet's journal the quotes inside are escaped.
            &["expected cgroupspath to be of format", "for systemd cgroups"],
        ],
        unless: &[],
        requires: &[],
        cause: "kubelet and the container runtime use different cgroup drivers, so the control-plane pods never start and `kubeadm init` waits for a control plane that never comes",
        fix: "use one driver for both: set the image's cgroup_driver and the runtime's (containerd: SystemdCgroup = true with systemd) to the same value, rebuild, or fix /etc/containerd/config.toml and run `kiln-firstboot reset` then `run`",
    },
    Known {
        id: "certificate-not-yet-valid",
        rank: 90,
        lines: &[
            &["certificate has expired or is not yet valid", "is before"],
            &["the certificate is not valid yet"],
        ],
        unless: &[],
        requires: &[],
        cause: "this machine's clock is behind (a Raspberry Pi without an RTC boots in 1970), so certificates look not yet valid",
        fix: "enable time sync (systemd-timesyncd or chrony) and make kiln-firstboot start after time-sync.target; check with `timedatectl`; then `kiln-firstboot reset` and `run`",
    },
    Known {
        id: "cert-expired",
        rank: 89,
        lines: &[&["certificate has expired or is not yet valid"], &["the certificate has expired:"]],
        unless: &["is before"],
        requires: &[],
        cause: "a certificate has expired: the control plane's (kubeadm issues them for one year) or, if this machine's clock is ahead, it only looks expired",
        fix: "check the clock with `timedatectl`; on a control plane run `kubeadm certs check-expiration` and `kubeadm certs renew all`, restart the control-plane pods; then `kiln-firstboot reset` and `run` here",
    },
    Known {
        id: "kubelet-serving-cert",
        rank: 88,
        lines: &[
            &["failed to scrape node", "x509"],
            &[":10250", "x509: cannot validate certificate"],
            &[":10250", "x509: certificate is valid for"],
            &[":10250", "x509: certificate signed by unknown authority"],
            // The kubelet's self-signed serving certificate is issued by `<host>-ca@<unix
            // time>` (client-go util/cert/cert.go GenerateSelfSignedCertKeyWithFixtures,
            // called by cmd/kubelet/app/server.go InitializeTLS when no serving
            // certificate is configured), named in Go's UnknownAuthorityError hint
            // ("candidate authority certificate %q", crypto/x509/verify.go).
            &["x509: certificate signed by unknown authority", SELF_SIGNED_KUBELET_CA],
        ],
        unless: &[],
        requires: &[],
        cause: "the kubelet serves a self-signed certificate (kubeadm's default), which metrics-server and other clients of port 10250 cannot verify; the cluster CA is fine",
        fix: "enable signed serving certificates: set `serverTLSBootstrap = true` under node.toml `[node.kubelet]` on every node and run `kiln-firstboot approve-csrs` on a control plane (it approves each node's own kubelet-serving CSR, nothing else), or run metrics-server with `--kubelet-insecure-tls` for testing only",
    },
    Known {
        id: "x509-unknown-authority",
        rank: 86,
        lines: &[&["x509: certificate signed by unknown authority"]],
        // Port 10250 and the `<host>-ca@` issuer are the kubelet's own serving
        // certificate (kubelet-serving-cert above): the cluster CA is not at fault.
        unless: &[":10250", "scrape node", SELF_SIGNED_KUBELET_CA],
        requires: &[],
        cause: "the API server's certificate is not signed by the CA this client trusts: the CA in the user-data belongs to another cluster, something in between (a TLS-terminating load balancer, a proxy) presents its own certificate, or a stale kubeconfig is in use",
        fix: "regenerate this node's user-data from the cluster directory the control plane was built from (`kiln userdata`), make the load balancer pass TLS through, and do not mix KUBECONFIG files from earlier clusters",
    },
    Known {
        id: "image-pull",
        rank: 86,
        lines: &[
            &["[error imagepull]:"],
            &["failed to pull and unpack image"],
            &["failed to get sandbox image"],
        ],
        unless: &[],
        requires: &[],
        cause: "a control-plane or pause image could not be pulled: the registry is unreachable from this node and the image is not in the image",
        fix: "bake or mirror the control-plane and pause images (by digest) into the image, or make the registry reachable (proxy settings, DNS, firewall); check with `kubeadm config images pull`; then `kiln-firstboot run`",
    },
    Known {
        id: "baked-images-import-failed",
        rank: 95,
        lines: &[&["import-images: ctr could not import"]],
        unless: &[],
        requires: &[],
        cause: "containerd could not import the container images baked into this image (the archive is damaged, truncated or not the OCI archive kiln wrote), so kubeadm did not run: it would have pulled them",
        fix: "reinstall or reflash the image (`kiln build` writes the archive again, byte for byte; its manifest.json lists the archive and every image's digest); `kiln-firstboot doctor` shows which images containerd holds; then `kiln-firstboot run`",
    },
    Known {
        id: "baked-images-not-as-pinned",
        rank: 95,
        lines: &[
            &["import-images:", "but image.toml pins"],
            &["import-images:", " is not in /"],
            &["import-images:", "was imported incomplete"],
        ],
        unless: &[],
        requires: &[],
        cause: "the baked archive does not hold the images /etc/kiln/image.toml pins (another image's archive, or a damaged one): a reference with another digest was removed from containerd, and kubeadm did not run",
        fix: "rebuild the image with `kiln build` so the archive and image.toml come from the same profile (manifest.json lists both), reinstall it, then `kiln-firstboot run`; `kiln-firstboot doctor` shows what containerd holds",
    },
    Known {
        id: "not-enough-cpus",
        rank: 86,
        lines: &[&["[error numcpu]:"]],
        unless: &[],
        requires: &[],
        cause: "control-plane nodes need at least 2 CPUs",
        fix: "give the machine 2 or more CPUs, or make it a worker (`role = \"join\"`)",
    },
    Known {
        id: "not-enough-memory",
        rank: 85,
        lines: &[&["[error mem]:"]],
        unless: &[],
        requires: &[],
        cause: "control-plane nodes need at least 1700 MB of memory",
        fix: "give the machine more memory, or make it a worker",
    },
    Known {
        id: "bridge-netfilter",
        rank: 85,
        lines: &[&["[error filecontent--proc-sys-net-bridge-bridge-nf-call-ip"]],
        unless: &[],
        requires: &[],
        cause: "the br_netfilter module is not loaded or bridge-nf-call-iptables is 0, so bridged pod traffic bypasses iptables",
        fix: "load it now and at boot: `modprobe br_netfilter`, /etc/modules-load.d/ with br_netfilter and net.bridge.bridge-nf-call-iptables = 1 in /etc/sysctl.d/ (kiln images carry both); then `kiln-firstboot run`",
    },
    Known {
        id: "ip-forward",
        rank: 85,
        lines: &[
            &["[error filecontent--proc-sys-net-ipv4-ip_forward]"],
            &["[error filecontent--proc-sys-net-ipv6-conf-default-forwarding]"],
        ],
        unless: &[],
        requires: &[],
        cause: "IP forwarding is off, so this node cannot route pod traffic",
        fix: "set net.ipv4.ip_forward = 1 (and net.ipv6.conf.default.forwarding = 1 for IPv6) in /etc/sysctl.d/ and `sysctl --system` (kiln images carry the file; something on the host overrides it); then `kiln-firstboot run`",
    },
    Known {
        id: "leftover-files",
        rank: 84,
        lines: &[&["[error fileavailable--"], &["[error diravailable--"]],
        unless: &[],
        requires: &[],
        cause: "files from an earlier kubeadm run are still here (manifests, kubelet.conf, the CA, etcd data): a previous attempt failed half-way, or the disk was cloned from a node",
        fix: "run `kiln-firstboot reset` (kubeadm reset plus kiln's state), then `kiln-firstboot run`",
    },
    Known {
        id: "port-in-use",
        rank: 80,
        lines: &[&["[error port-"]],
        unless: &[],
        requires: &[],
        cause: "a port kubeadm needs is taken, often by a previous control plane, another kubelet or a different Kubernetes (k3s)",
        fix: "find what listens (`ss -ltnp`) and stop it, or run `kiln-firstboot reset` to remove a previous attempt, then `run`",
    },
    Known {
        id: "runtime-not-running",
        rank: 80,
        lines: &[
            &["[error cri]:"],
            &["container runtime is not running"],
            &["could not connect to the container runtime"],
            &["couldn't create the interface used for talking to the container runtime"],
            // The kubelet's own refusal (`failed to run Kubelet: validate service connection:
            // validate CRI v1 runtime API for endpoint %q: %w`, k8s.io/cri-client
            // pkg/remote_runtime.go validateServiceConnection, v0.34.2) when nothing answers.
            &["validate cri v1 runtime api for endpoint", "error while dialing"],
            // kiln-firstboot's own, when ctr cannot list containerd's images.
            &["import-images: asking containerd which images it holds"],
        ],
        unless: &[],
        requires: &[],
        cause: "the container runtime does not answer on its CRI socket",
        fix: "start the runtime (`systemctl enable --now containerd`) and check `cri_socket` in /etc/kiln/image.toml; then `kiln-firstboot run`",
    },
    Known {
        id: "swap-on",
        rank: 80,
        lines: &[&["[error swap]:"], &["running with swap on is not supported"]],
        unless: &[],
        requires: &[],
        cause: "swap is on and the kubelet is configured to refuse it (failSwapOn)",
        fix: "set `swap = \"off\"` in node.toml `[node]` (kiln-firstboot turns swap off and masks dphys-swapfile/zram) or `swap = \"limited\"` to run with LimitedSwap; then `kiln-firstboot reset` and `run`",
    },
    Known {
        id: "kube-proxy-node-ip",
        rank: 78,
        lines: &[
            &["invalid nodeip, initializing kube-proxy with 127.0.0.1 as nodeip"],
            &["failed to retrieve node ip: host ip unknown"],
            &["can't determine this node's ip, assuming"],
        ],
        unless: &[],
        requires: &[],
        cause: "kube-proxy started before the node had an address (the cloud-controller-manager had not initialised it) and fell back to loopback",
        fix: "set `node_ip` in node.toml `[node]` so the kubelet registers the address itself, then `kubectl -n kube-system delete pod -l k8s-app=kube-proxy --field-selector spec.nodeName=<name>`; the guide's toleration patch for the kube-proxy DaemonSet also works",
    },
    Known {
        id: "api-server-timeout",
        rank: 70,
        lines: &[
            // Go's dialer, a context deadline, http.Client's timeout.
            &[DISCOVERY, "i/o timeout"],
            &[DISCOVERY, "deadline exceeded"],
            &[DISCOVERY, "timeout exceeded"],
            &["abort connecting to api servers after timeout"],
        ],
        unless: &[],
        requires: &[],
        cause: "requests to the control-plane endpoint time out: packets are dropped on the way (a firewall or security group, a load balancer without healthy targets, a wrong address)",
        fix: "check `control_plane_endpoint` in node.toml `[cluster]`, then open TCP 6443 from this node to the endpoint (firewalld, security groups) and check the load balancer's targets; `curl -k https://<endpoint>/livez` must answer; then `kiln-firstboot run`",
    },
    Known {
        id: "api-server-unreachable",
        rank: 70,
        lines: &[
            &[DISCOVERY, "connection refused"],
            &[DISCOVERY, "no route to host"],
            &[DISCOVERY, "network is unreachable"],
            &[DISCOVERY, "no such host"],
        ],
        unless: &[],
        requires: &[],
        cause: "the control-plane endpoint refuses or cannot be reached: the init node is not up yet, nothing listens on the port, a firewall rejects the connection, or the name does not resolve",
        fix: "check `control_plane_endpoint` in node.toml `[cluster]` (address, port, DNS name) and that the init node is up (`kiln-firstboot status` there); kiln-firstboot retries with backoff",
    },
    Known {
        id: "kubelet-config-missing",
        rank: 30,
        lines: &[&["failed to load kubelet config file"]],
        unless: &[],
        requires: &[
            &["writing kubelet configuration to file"],
            &["the kubelet is not healthy", "failed while waiting for the kubelet", "the kubelet is not running"],
        ],
        cause: "kubeadm wrote the kubelet's configuration, yet the kubelet it started cannot read /var/lib/kubelet/config.yaml (a mount over /var/lib/kubelet, a unit pointing elsewhere, wrong labels)",
        fix: "compare the kubelet unit's `--config` (`systemctl cat kubelet`) with /var/lib/kubelet/config.yaml, check mounts (`findmnt /var/lib/kubelet`) and SELinux labels (`ls -Z`); then `kiln-firstboot reset` and `run`",
    },
    Known {
        id: "control-plane-not-healthy",
        rank: 20,
        lines: &[
            &["[control-plane-check]", "is not healthy after"],
            &["failed while waiting for the control plane to start"],
            &[" exited ", " kube-apiserver "],
            &[" exited ", " etcd "],
            &[" exited ", " kube-controller-manager "],
            &[" exited ", " kube-scheduler "],
        ],
        unless: &[],
        requires: &[],
        cause: "the kubelet runs but a control-plane container (API server, etcd, controller-manager, scheduler) keeps exiting",
        fix: "read its logs: `crictl ps -a | grep kube` and `crictl logs <container>`; common causes are a wrong advertise address or certificate SANs, etcd data from an earlier cluster (`kiln-firstboot reset`), or too little memory; on a slow machine (emulated, an SD card) that is only starting, give it longer with node.toml `[node] kubeadm_timeouts = { controlPlaneComponentHealthCheck = \"10m\" }` (it also lengthens the static pods' startup probes)",
    },
    Known {
        id: "kubelet-not-healthy",
        rank: 10,
        lines: &[
            &["the kubelet is not healthy after"],
            &["failed while waiting for the kubelet to start"],
            &["the kubelet isn't running or healthy"],
            &["the kubelet is not running"],
        ],
        unless: &[],
        requires: &[],
        cause: "the kubelet did not become healthy while kubeadm waited for it",
        fix: "read `journalctl -u kubelet -b`; the usual causes are a cgroup driver mismatch, swap, cgroup v1, or a missing CNI/runtime; a slow machine whose kubelet is still starting can be given longer with node.toml `[node] kubeadm_timeouts = { kubeletHealthCheck = \"8m\" }`",
    },
];

/// The ids of every known failure, in the table's order.
pub fn ids() -> impl Iterator<Item = &'static str> {
    KNOWN.iter().map(|k| k.id)
}

/// Every known failure recognised in `output`, most specific first, each id at
/// most once; `.first()` is the best explanation.
pub fn diagnose(output: &str) -> Vec<Diagnosis> {
    let text = output.to_lowercase();
    let lines: Vec<&str> =
        text.lines().map(str::trim_start).filter(|l| !l.is_empty() && !l.starts_with(WARNING)).collect();
    let mut found: Vec<&Known> = KNOWN
        .iter()
        .filter(|k| k.requires.iter().all(|group| group.iter().any(|p| text.contains(p))))
        .filter(|k| {
            lines.iter().any(|line| {
                !k.unless.iter().any(|u| line.contains(u))
                    && k.lines.iter().any(|all| all.iter().all(|p| line.contains(p)))
            })
        })
        .collect();
    // Stable: equal ranks keep the table's order.
    found.sort_by_key(|k| std::cmp::Reverse(k.rank));
    found.into_iter().map(|k| Diagnosis { id: k.id, cause: k.cause, fix: k.fix }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_toml_settings_in_fixes_are_valid_node_toml() {
        let mut seen = 0;
        for k in KNOWN {
            for snippet in k.fix.split("`[node] ").skip(1).filter_map(|r| r.split('`').next()) {
                let text = format!("[node]\n{snippet}\n");
                assert!(crate::contract::node::NodeConfig::parse_str(&text).is_ok(), "{}: {text}", k.id);
                seen += 1;
            }
        }
        assert!(seen >= 2, "the kubeadm_timeouts advice is gone");
    }

    fn ids_of(s: &str) -> Vec<&'static str> {
        diagnose(s).into_iter().map(|d| d.id).collect()
    }

    #[test]
    fn the_table_is_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for k in KNOWN {
            assert!(seen.insert(k.id), "duplicate id {}", k.id);
            assert!(
                !k.id.is_empty() && k.id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{} is not kebab-case",
                k.id
            );
            assert!(!k.lines.is_empty() && !k.cause.is_empty() && !k.fix.is_empty(), "{}", k.id);
            let patterns =
                k.lines.iter().flat_map(|a| a.iter()).chain(k.unless).chain(k.requires.iter().flat_map(|g| g.iter()));
            for p in patterns {
                assert!(!p.is_empty(), "{}: empty pattern", k.id);
                assert_eq!(*p, p.to_lowercase(), "{}: patterns are matched against lower-cased text", k.id);
            }
        }
        assert_eq!(ids().count(), KNOWN.len());
    }

    #[test]
    fn recognises_the_guides_texts() {
        assert_eq!(
            ids_of("error: failed to run Kubelet: failed to create kubelet: misconfiguration: kubelet cgroup driver: \"systemd\" is different from docker cgroup driver: \"cgroupfs\""),
            ["cgroup-driver-mismatch"]
        );
        assert_eq!(
            ids_of("nodes \"node-1\" is forbidden: User \"system:bootstrap:abcdef\" cannot get resource \"nodes\" in API group \"\" at the cluster scope"),
            ["bootstrap-rbac-forbidden"]
        );
        assert_eq!(
            ids_of("Unable to connect to the server: x509: certificate signed by unknown authority (possibly because of \"crypto/rsa: verification error\""),
            ["x509-unknown-authority"]
        );
        assert_eq!(ids_of("[ERROR Swap]: running with swap on is not supported. Please disable swap"), ["swap-on"]);
        assert!(ids_of("all fine").is_empty());
    }

    #[test]
    fn warnings_never_diagnose() {
        for w in [
            "\t[WARNING Swap]: swap is supported for cgroup v2 only. The kubelet must be properly configured to use swap. Please refer to https://kubernetes.io/docs/concepts/architecture/nodes/#swap-memory, or disable swap on the node",
            "\t[WARNING Swap]: running with swap on is not supported. Please disable swap",
            "\t[WARNING Firewalld]: firewalld is active, please ensure ports [6443 10250] are open or your cluster may not function correctly",
            "        [WARNING Port-10250]: Port 10250 is in use",
            "[WARNING FileAvailable--etc-kubernetes-kubelet.conf]: /etc/kubernetes/kubelet.conf already exists",
        ] {
            assert!(ids_of(w).is_empty(), "{w}");
        }
    }

    #[test]
    fn the_journal_outranks_kubeadms_generic_wait() {
        let text = "[kubelet-check] The kubelet is not healthy after 4m0.000580205s\n\t- The kubelet is not running\n\
                    Nov 25 10:40:58 cp-1 kubelet[2211]: E1125 10:40:58.931046    2211 run.go:72] \"command failed\" err=\"failed to run Kubelet: running with swap on is not supported, please disable swap or set --fail-swap-on flag to false\"\n";
        assert_eq!(ids_of(text), ["swap-on", "kubelet-not-healthy"]);
    }

    #[test]
    fn each_id_once_and_context_is_required() {
        let twice = "[ERROR Port-6443]: Port 6443 is in use\n[ERROR Port-10250]: Port 10250 is in use\n";
        assert_eq!(ids_of(twice), ["port-in-use"]);
        // Before kubeadm writes the kubelet's configuration the kubelet crash-loops on its absence.
        let before = "kubelet[1043]: \"command failed\" err=\"failed to load kubelet config file, path: /var/lib/kubelet/config.yaml\"";
        assert!(ids_of(before).is_empty());
    }
}
