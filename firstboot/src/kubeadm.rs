//! kubeadm configuration, rendered as JSON documents separated by `---`.
//!
//! kubeadm decodes each document with a YAML decoder, and JSON is YAML, so no
//! YAML library is needed. API versions: `kubeadm.k8s.io/v1beta3` below
//! Kubernetes 1.31, `kubeadm.k8s.io/v1beta4` from 1.31 (kubeadm's
//! `cmd/kubeadm/app/apis/kubeadm/v1beta4`, introduced in v1.31), where every
//! `extraArgs`/`kubeletExtraArgs` is a list of `{name, value}` instead of a map.
//! The version is the image's kubeadm's: it is the program that reads the file.
//!
//! Per-node kubelet settings never travel in a KubeletConfiguration document on
//! their own: `kubeadm join` reads only the JoinConfiguration
//! (`cmd/kubeadm/app/util/config/joinconfiguration.go`,
//! `documentMapToJoinConfiguration`: "not interested in anything other than
//! JoinConfiguration") and gives a joining kubelet the cluster's `kubelet-config`
//! ConfigMap. So every node, init included, gets its settings through what both
//! commands read: `nodeRegistration.kubeletExtraArgs` (flags, written to
//! `/var/lib/kubelet/kubeadm-flags.env`) and a `kubeletconfiguration` patch in
//! `patches.directory` (kubeadm >= 1.25, kubernetes/kubernetes#110405), applied to
//! `/var/lib/kubelet/config.yaml` on this node only.

use crate::contract::node::{Role, Taint};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Everything the config needs, already resolved and validated.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// Role.
    pub role: Role,
    /// Kubernetes version (`v1.34.2`).
    pub kubernetes_version: String,
    /// Minor version of the image's kubeadm: the API version and args shape.
    pub minor: u32,
    /// Node name used everywhere (kubelet, kube-proxy).
    pub node_name: String,
    /// The node's IP.
    pub node_ip: String,
    /// `host:port` of the control plane.
    pub control_plane_endpoint: String,
    /// Cluster name.
    pub cluster_name: String,
    /// Pod CIDR.
    pub pod_subnet: String,
    /// Service CIDR.
    pub service_subnet: String,
    /// DNS domain.
    pub dns_domain: String,
    /// CRI socket.
    pub cri_socket: String,
    /// Taints: `None` keeps kubeadm's default, `Some(vec![])` means none.
    pub taints: Option<Vec<Taint>>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Bootstrap token (secret) — rendered only into the file, never logged.
    pub token: String,
    /// Token TTL for the init node.
    pub token_ttl: String,
    /// Discovery hashes.
    pub ca_cert_hashes: Vec<String>,
    /// Skip CA verification (warned about).
    pub unsafe_skip_ca_verification: bool,
    /// Writable flex-volume directory.
    pub flex_volume_dir: String,
    /// kubelet/runtime cgroup driver.
    pub cgroup_driver: String,
    /// Allow swap (`LimitedSwap`) instead of failing on it.
    pub swap_limited: bool,
    /// This node's own API server port (init and control-plane joins), which may
    /// differ from the endpoint's (a load balancer on 443 in front of 6443).
    pub bind_port: u16,
    /// Where the kubelet patch is written; rendered as `patches.directory`.
    pub patches_dir: String,
    /// Extra KubeletConfiguration fields.
    pub kubelet: BTreeMap<String, Value>,
    /// Extra kubelet flags.
    pub kubelet_extra_args: BTreeMap<String, String>,
}

/// `kubeadm.k8s.io/v1beta3` or `v1beta4`.
pub fn api_version(minor: u32) -> &'static str {
    if minor >= 31 {
        "kubeadm.k8s.io/v1beta4"
    } else {
        "kubeadm.k8s.io/v1beta3"
    }
}

/// Renders an args map in the version's shape: a map (v1beta3) or a list of
/// `{name, value}` (v1beta4), sorted by name either way.
pub fn args(minor: u32, m: &BTreeMap<String, String>) -> Value {
    if minor >= 31 {
        Value::Array(m.iter().map(|(k, v)| json!({ "name": k, "value": v })).collect())
    } else {
        Value::Object(m.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
    }
}

fn node_registration(i: &Inputs) -> Value {
    let mut kubelet_args = i.kubelet_extra_args.clone();
    // One node IP and one name everywhere (seed items 10, 30).
    kubelet_args.insert("node-ip".into(), i.node_ip.clone());
    if !i.labels.is_empty() {
        let labels: Vec<String> = i.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        kubelet_args.insert("node-labels".into(), labels.join(","));
    }
    let mut reg = Map::new();
    reg.insert("name".into(), json!(i.node_name));
    reg.insert("criSocket".into(), json!(i.cri_socket));
    reg.insert("kubeletExtraArgs".into(), args(i.minor, &kubelet_args));
    // An explicitly empty list must be rendered: kubeadm reads a missing
    // `taints` as "use the default control-plane taint" (seed item 15).
    if let Some(t) = &i.taints {
        reg.insert("taints".into(), serde_json::to_value(t).unwrap_or_else(|_| json!([])));
    }
    Value::Object(reg)
}

fn cluster_configuration(i: &Inputs) -> Value {
    let mut cm = BTreeMap::new();
    // kube-controller-manager's flex-volume dir must be writable when /usr is
    // read-only (kubeadm troubleshooting, "/usr is mounted read-only on nodes").
    cm.insert("flex-volume-plugin-dir".to_string(), i.flex_volume_dir.clone());
    json!({
        "apiVersion": api_version(i.minor),
        "kind": "ClusterConfiguration",
        "kubernetesVersion": i.kubernetes_version,
        "clusterName": i.cluster_name,
        // Always set, so control planes can be added later (seed item 16).
        "controlPlaneEndpoint": i.control_plane_endpoint,
        "networking": { "podSubnet": i.pod_subnet, "serviceSubnet": i.service_subnet, "dnsDomain": i.dns_domain },
        "controllerManager": { "extraArgs": args(i.minor, &cm) },
    })
}

/// The cluster-wide KubeletConfiguration (init only): kubeadm uploads it as the
/// `kubelet-config` ConfigMap every joining kubelet starts from. `resolvConf` is
/// left to kubeadm, which sets it per node when systemd-resolved is active
/// (`cmd/kubeadm/app/componentconfigs/kubelet.go`, `mutateResolverConfig`).
fn kubelet_configuration(i: &Inputs) -> Value {
    json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": i.cgroup_driver,
        "volumePluginDir": i.flex_volume_dir,
    })
}

/// File name of the kubelet patch: target `kubeletconfiguration`, JSON merge patch
/// (`cmd/kubeadm/app/util/patches/patches.go`: `target[suffix][+patchtype].json`).
pub const KUBELET_PATCH_FILE: &str = "kubeletconfiguration+merge.json";

/// This node's kubelet settings as a JSON merge patch (RFC 7386) of the
/// KubeletConfiguration: the image's driver and flex dir, the node's swap policy
/// and its `[node] kubelet` fields. The same patch on init and join nodes.
pub fn kubelet_patch(i: &Inputs) -> Value {
    let mut k = Map::new();
    k.insert("cgroupDriver".into(), json!(i.cgroup_driver));
    k.insert("volumePluginDir".into(), json!(i.flex_volume_dir));
    if i.swap_limited {
        k.insert("failSwapOn".into(), json!(false));
        k.insert("memorySwap".into(), json!({ "swapBehavior": "LimitedSwap" }));
    } else {
        k.insert("failSwapOn".into(), json!(true));
    }
    for (key, v) in &i.kubelet {
        k.insert(key.clone(), v.clone());
    }
    Value::Object(k)
}

/// The documents kubeadm reads with `--config`, in order.
pub fn documents(i: &Inputs) -> Vec<Value> {
    let port = i.bind_port;
    let patches = json!({ "directory": i.patches_dir });
    match i.role {
        Role::Init => {
            vec![
                json!({
                    "apiVersion": api_version(i.minor),
                    "kind": "InitConfiguration",
                    "bootstrapTokens": [{
                        "token": i.token,
                        "ttl": i.token_ttl,
                        "usages": ["signing", "authentication"],
                        "groups": ["system:bootstrappers:kubeadm:default-node-token"],
                        "description": "created by kiln-firstboot on the init node",
                    }],
                    "nodeRegistration": node_registration(i),
                    "localAPIEndpoint": { "advertiseAddress": i.node_ip, "bindPort": port },
                    "patches": patches,
                }),
                cluster_configuration(i),
                kubelet_configuration(i),
            ]
        }
        Role::ControlPlane | Role::Join => {
            let mut discovery = Map::new();
            discovery.insert("token".into(), json!(i.token));
            discovery.insert("apiServerEndpoint".into(), json!(i.control_plane_endpoint));
            if i.unsafe_skip_ca_verification {
                discovery.insert("unsafeSkipCAVerification".into(), json!(true));
            } else {
                discovery.insert("caCertHashes".into(), json!(i.ca_cert_hashes));
            }
            let mut doc = Map::new();
            doc.insert("apiVersion".into(), json!(api_version(i.minor)));
            doc.insert("kind".into(), json!("JoinConfiguration"));
            doc.insert("discovery".into(), json!({ "bootstrapToken": Value::Object(discovery) }));
            doc.insert("nodeRegistration".into(), node_registration(i));
            doc.insert("patches".into(), patches);
            if i.role == Role::ControlPlane {
                doc.insert(
                    "controlPlane".into(),
                    json!({ "localAPIEndpoint": { "advertiseAddress": i.node_ip, "bindPort": port } }),
                );
            }
            // Only the JoinConfiguration: kubeadm join reads nothing else.
            vec![Value::Object(doc)]
        }
    }
}

/// The `--config` for `kubeadm kubeconfig user` on the init node (row 40): this
/// node's InitConfiguration without the bootstrap token (the command signs a client
/// certificate with the CA on disk and talks to no API server) and the
/// ClusterConfiguration with `certificatesDir` set to `certificates_dir`, where the
/// cluster's CA is (`/etc/kubernetes/pki` on the node, under the root in tests).
/// `kubeadm kubeconfig user` loads it with `configutil.LoadOrDefaultInitConfiguration`
/// (`cmd/kubeadm/app/cmd/kubeconfig.go`, `newCmdUserKubeConfig`, v1.34.2).
pub fn user_kubeconfig_config(i: &Inputs, certificates_dir: &str) -> String {
    let init = json!({
        "apiVersion": api_version(i.minor),
        "kind": "InitConfiguration",
        "nodeRegistration": { "name": i.node_name, "criSocket": i.cri_socket },
        "localAPIEndpoint": { "advertiseAddress": i.node_ip, "bindPort": i.bind_port },
    });
    let mut cluster = cluster_configuration(i);
    cluster["certificatesDir"] = json!(certificates_dir);
    [init, cluster]
        .iter()
        .map(|d| serde_json::to_string_pretty(d).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n---\n")
        + "\n"
}

/// The ClusterRole kiln adds for a user below cluster-admin: reading Nodes (cluster
/// scoped, so in none of `view`, `edit`, `admin`), for `kubectl get nodes`.
pub const NODE_READER_ROLE: &str = "kiln:node-reader";

/// What binds `user` (the CN of its client certificate, no groups) to `role`
/// (row 40): a ClusterRoleBinding `kiln:admin-user:<user>` to that default
/// ClusterRole, and below cluster-admin [`NODE_READER_ROLE`] and its binding; one
/// `v1` List for `kubectl apply -f`.
pub fn admin_user_rbac(user: &str, role: crate::contract::node::AdminRole) -> Value {
    let rbac = "rbac.authorization.k8s.io/v1";
    let subject = json!([{ "kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user }]);
    let binding = |name: String, role: &str| {
        json!({
            "apiVersion": rbac,
            "kind": "ClusterRoleBinding",
            "metadata": { "name": name, "labels": { "app.kubernetes.io/managed-by": "kiln" } },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
            "subjects": subject,
        })
    };
    let mut items = vec![binding(format!("kiln:admin-user:{user}"), role.as_str())];
    if role != crate::contract::node::AdminRole::ClusterAdmin {
        items.push(json!({
            "apiVersion": rbac,
            "kind": "ClusterRole",
            "metadata": { "name": NODE_READER_ROLE, "labels": { "app.kubernetes.io/managed-by": "kiln" } },
            "rules": [{ "apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"] }],
        }));
        items.push(binding(format!("kiln:admin-user-nodes:{user}"), NODE_READER_ROLE));
    }
    json!({ "apiVersion": "v1", "kind": "List", "items": items })
}

/// The `--config` file: pretty JSON documents joined by `---` lines.
pub fn render(i: &Inputs) -> String {
    documents(i).iter().map(|d| serde_json::to_string_pretty(d).unwrap_or_default()).collect::<Vec<_>>().join("\n---\n")
        + "\n"
}

/// The same with the token replaced, for `plan` and logs.
pub fn render_redacted(i: &Inputs) -> String {
    render(&redacted(i))
}

/// [`documents`] with the token replaced, for `plan --json`.
pub fn documents_redacted(i: &Inputs) -> Vec<Value> {
    documents(&redacted(i))
}

/// The inputs with the token's secret half replaced by `<redacted>`.
fn redacted(i: &Inputs) -> Inputs {
    let mut r = i.clone();
    r.token = match i.token.split_once('.') {
        Some((id, _)) => format!("{id}.<redacted>"),
        None => "<redacted>".into(),
    };
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn inputs(role: Role, minor: u32) -> Inputs {
        Inputs {
            role,
            kubernetes_version: format!("v1.{minor}.0"),
            minor,
            node_name: "node-1".into(),
            node_ip: "10.0.0.5".into(),
            control_plane_endpoint: "api.example.test:6443".into(),
            cluster_name: "prod".into(),
            pod_subnet: "10.244.0.0/16".into(),
            service_subnet: "10.96.0.0/12".into(),
            dns_domain: "cluster.local".into(),
            cri_socket: "unix:///run/containerd/containerd.sock".into(),
            taints: Some(vec![]),
            labels: BTreeMap::new(),
            token: "abcdef.0123456789abcdef".into(),
            token_ttl: "24h".into(),
            ca_cert_hashes: vec!["sha256:00ff".into()],
            unsafe_skip_ca_verification: false,
            flex_volume_dir: "/opt/libexec/kubernetes/kubelet-plugins/volume/exec".into(),
            cgroup_driver: "systemd".into(),
            swap_limited: false,
            bind_port: 6443,
            patches_dir: "/etc/kiln/kubeadm-patches".into(),
            kubelet: BTreeMap::new(),
            kubelet_extra_args: BTreeMap::new(),
        }
    }

    fn docs(text: &str) -> Vec<Value> {
        text.split("\n---\n").map(|d| serde_json::from_str(d).unwrap()).collect()
    }

    #[test]
    fn init_v1beta3_below_1_31_uses_maps() {
        let d = docs(&render(&inputs(Role::Init, 30)));
        assert_eq!(d[0]["apiVersion"], "kubeadm.k8s.io/v1beta3");
        assert_eq!(d[0]["nodeRegistration"]["kubeletExtraArgs"]["node-ip"], "10.0.0.5");
        assert_eq!(
            d[1]["controllerManager"]["extraArgs"]["flex-volume-plugin-dir"],
            "/opt/libexec/kubernetes/kubelet-plugins/volume/exec"
        );
        assert_eq!(d[0]["nodeRegistration"]["taints"], json!([]));
    }

    #[test]
    fn init_v1beta4_from_1_31_uses_name_value_lists() {
        let d = docs(&render(&inputs(Role::Init, 31)));
        assert_eq!(d[0]["apiVersion"], "kubeadm.k8s.io/v1beta4");
        assert_eq!(d[0]["nodeRegistration"]["kubeletExtraArgs"], json!([{ "name": "node-ip", "value": "10.0.0.5" }]));
        assert_eq!(d[1]["controllerManager"]["extraArgs"][0]["name"], "flex-volume-plugin-dir");
        assert_eq!(d[2]["kind"], "KubeletConfiguration");
        assert_eq!(d[2]["volumePluginDir"], "/opt/libexec/kubernetes/kubelet-plugins/volume/exec");
        assert!(d[2].get("resolvConf").is_none() && d[2].get("failSwapOn").is_none(), "per-node settings leaked");
        assert_eq!(d[0]["patches"]["directory"], "/etc/kiln/kubeadm-patches");
    }

    #[test]
    fn join_sends_only_what_kubeadm_join_reads() {
        let d = docs(&render(&inputs(Role::Join, 34)));
        assert_eq!(d.len(), 1, "kubeadm join ignores every document but JoinConfiguration");
        assert_eq!(d[0]["patches"]["directory"], "/etc/kiln/kubeadm-patches");
    }

    #[test]
    fn patch_carries_swap_policy_flex_dir_and_extras() {
        let mut i = inputs(Role::Join, 34);
        i.swap_limited = true;
        i.kubelet.insert("maxPods".into(), json!(42));
        let p = kubelet_patch(&i);
        assert_eq!(p["failSwapOn"], json!(false));
        assert_eq!(p["memorySwap"]["swapBehavior"], "LimitedSwap");
        assert_eq!(p["maxPods"], 42);
        assert_eq!(p["volumePluginDir"], "/opt/libexec/kubernetes/kubelet-plugins/volume/exec");
        i.swap_limited = false;
        assert_eq!(kubelet_patch(&i)["failSwapOn"], json!(true));
    }

    #[test]
    fn bind_port_is_the_nodes_own() {
        let mut i = inputs(Role::Init, 34);
        i.control_plane_endpoint = "lb.example.test:443".into();
        let d = docs(&render(&i));
        assert_eq!(d[0]["localAPIEndpoint"]["bindPort"], 6443);
        assert_eq!(d[1]["controlPlaneEndpoint"], "lb.example.test:443");
    }

    #[test]
    fn unset_taints_are_left_to_kubeadm() {
        let mut i = inputs(Role::Init, 34);
        i.taints = None;
        let d = docs(&render(&i));
        assert!(d[0]["nodeRegistration"].get("taints").is_none());
    }

    #[test]
    fn join_carries_discovery_and_no_skip() {
        let d = docs(&render(&inputs(Role::Join, 34)));
        let bt = &d[0]["discovery"]["bootstrapToken"];
        assert_eq!(bt["caCertHashes"], json!(["sha256:00ff"]));
        assert!(bt.get("unsafeSkipCAVerification").is_none());
        assert!(d[0].get("controlPlane").is_none());
        let d = docs(&render(&inputs(Role::ControlPlane, 34)));
        assert_eq!(d[0]["controlPlane"]["localAPIEndpoint"]["advertiseAddress"], "10.0.0.5");
    }

    #[test]
    fn redaction_hides_the_secret() {
        let r = render_redacted(&inputs(Role::Init, 34));
        assert!(r.contains("abcdef.<redacted>") && !r.contains("0123456789abcdef"));
    }

    #[test]
    fn the_admin_users_bindings_never_reach_cluster_admin_unless_asked() {
        use crate::contract::node::AdminRole;
        for role in [AdminRole::View, AdminRole::Edit, AdminRole::Admin] {
            let list = admin_user_rbac("kiln", role);
            let refs: Vec<&str> =
                list["items"].as_array().into_iter().flatten().filter_map(|i| i["roleRef"]["name"].as_str()).collect();
            assert_eq!(refs, [role.as_str(), NODE_READER_ROLE], "{list}");
            let reader = &list["items"][1];
            assert_eq!(
                reader["rules"],
                json!([{ "apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"] }])
            );
        }
        let all = admin_user_rbac("kiln", AdminRole::ClusterAdmin);
        assert_eq!(all["items"].as_array().map(Vec::len), Some(1));
        assert_eq!(all["items"][0]["roleRef"]["name"], "cluster-admin");
        assert_eq!(all["items"][0]["subjects"][0]["name"], "kiln");
    }

    #[test]
    fn the_user_kubeconfig_config_carries_no_token_and_the_ca_directory() {
        let c = user_kubeconfig_config(&inputs(Role::Init, 34), "/scratch/etc/kubernetes/pki");
        assert!(!c.contains("0123456789abcdef") && !c.contains("bootstrapTokens"), "{c}");
        let docs: Vec<Value> = c.split("\n---\n").map(|d| serde_json::from_str(d).unwrap_or(Value::Null)).collect();
        assert_eq!(docs[0]["kind"], "InitConfiguration");
        assert_eq!(docs[1]["kind"], "ClusterConfiguration");
        assert_eq!(docs[1]["certificatesDir"], "/scratch/etc/kubernetes/pki");
    }
}
