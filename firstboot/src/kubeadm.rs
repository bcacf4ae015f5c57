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
    /// kubeadm's `Timeouts` (v1beta4 field name → Go duration), rendered only when
    /// set; the unset ones keep kubeadm's defaults.
    pub timeouts: BTreeMap<String, String>,
    /// `nodeRegistration.imagePullPolicy`, rendered only when set.
    pub image_pull_policy: Option<String>,
    /// Static pod patches: file name in `patches.directory` (`kube-apiserver+strategic.json`)
    /// → the patch.
    pub static_pod_patches: BTreeMap<String, Value>,
    /// `[cluster] kube_proxy` (default true); false disables kube-proxy on init.
    pub kube_proxy: bool,
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
    // v1beta3 and v1beta4 `NodeRegistrationOptions.ImagePullPolicy`; unset is kubeadm's
    // own default (IfNotPresent), so only a policy node.toml sets is written.
    if let Some(p) = &i.image_pull_policy {
        reg.insert("imagePullPolicy".into(), json!(p));
    }
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
    let mut doc = json!({
        "apiVersion": api_version(i.minor),
        "kind": "ClusterConfiguration",
        "kubernetesVersion": i.kubernetes_version,
        "clusterName": i.cluster_name,
        // Always set, so control planes can be added later (seed item 16).
        "controlPlaneEndpoint": i.control_plane_endpoint,
        "networking": { "podSubnet": i.pod_subnet, "serviceSubnet": i.service_subnet, "dnsDomain": i.dns_domain },
        "controllerManager": { "extraArgs": args(i.minor, &cm) },
    });
    // `[cluster] kube_proxy = false` on v1beta4: `proxy.disabled`, which every kubeadm
    // command reads (`kubeadm config images list|pull` leave kube-proxy out,
    // app/images/images.go GetControlPlaneImages; `init` skips addon/kube-proxy,
    // app/cmd/init.go manageSkippedAddons, v1.34.2). v1beta3 has no such field: the
    // InitConfiguration's skipPhases does it there (see `documents`).
    if !i.kube_proxy && i.minor >= 31 {
        if let Some(d) = doc.as_object_mut() {
            d.insert("proxy".into(), json!({ "disabled": true }));
        }
    }
    doc
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

/// Every static pod patch file kiln may write in `patches.directory`
/// (`validate::kubeadm::STATIC_POD_TARGETS` × `PATCH_TYPES`): `run` writes the ones
/// node.toml asks for and removes the others, left by an earlier node.toml.
pub fn static_pod_patch_files() -> Vec<String> {
    use crate::validate::kubeadm::{static_pod_patch_file, PATCH_TYPES, STATIC_POD_TARGETS};
    STATIC_POD_TARGETS.iter().flat_map(|t| PATCH_TYPES.iter().map(move |p| static_pod_patch_file(t, p))).collect()
}

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
            let mut init = json!({
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
            });
            if let Some(doc) = init.as_object_mut() {
                insert_timeouts(doc, i);
                // `[cluster] kube_proxy = false` on v1beta3 (no `proxy.disabled`,
                // see `cluster_configuration`): InitConfiguration.skipPhases; `init`
                // then disables the proxy itself and leaves it out of preflight's
                // pulls (app/cmd/init.go manageSkippedAddons, v1.34.2), though
                // `kubeadm config images list` still names it.
                if !i.kube_proxy && i.minor < 31 {
                    doc.insert("skipPhases".into(), json!(["addon/kube-proxy"]));
                }
            }
            vec![init, cluster_configuration(i), kubelet_configuration(i)]
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
            insert_timeouts(&mut doc, i);
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

/// `timeouts` (v1beta4's `Timeouts`, in both `InitConfiguration` and
/// `JoinConfiguration`) when node.toml sets any; `resolve` refuses them for a
/// kubeadm that reads only v1beta3, which has no such field.
fn insert_timeouts(doc: &mut Map<String, Value>, i: &Inputs) {
    if !i.timeouts.is_empty() {
        let t: Map<String, Value> = i.timeouts.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        doc.insert("timeouts".into(), Value::Object(t));
    }
}

/// The waits `kubeadm init|join` makes one after another for this node's role, each
/// bounded by one of kubeadm's `Timeouts` (node.toml's value, else kubeadm's default):
///
/// * init: `kubeletHealthCheck`, then `controlPlaneComponentHealthCheck`
///   (`cmd/kubeadm/app/cmd/phases/init/waitcontrolplane.go`), then the API calls of
///   the upload and addon phases (`kubernetesAPICall` each; one counted);
/// * join: `discovery` (`cmd/kubeadm/app/discovery/discovery.go`), then
///   `kubeletHealthCheck` and `tlsBootstrap` (`cmd/phases/join/kubelet.go`);
/// * control-plane join: a join's, plus `etcdAPICall` (the new etcd member,
///   `util/etcd/etcd.go`) and `controlPlaneComponentHealthCheck`
///   (`cmd/phases/join/waitcontrolplane.go`).
///
/// With kubeadm's defaults: 9m (init), 14m (join), 20m (control-plane join).
pub fn kubeadm_waits(i: &Inputs) -> std::time::Duration {
    use crate::validate::kubeadm::{timeout_default, timeout_value};
    let t = |name: &str| {
        i.timeouts
            .get(name)
            .and_then(|v| timeout_value(name, v).ok())
            .or_else(|| timeout_default(name))
            .unwrap_or_default()
    };
    let join = t("discovery") + t("kubeletHealthCheck") + t("tlsBootstrap");
    match i.role {
        Role::Init => t("kubeletHealthCheck") + t("controlPlaneComponentHealthCheck") + t("kubernetesAPICall"),
        Role::Join => join,
        Role::ControlPlane => join + t("etcdAPICall") + t("controlPlaneComponentHealthCheck"),
    }
}

/// What kiln-firstboot adds to [`kubeadm_waits`] for kubeadm's own work between its
/// waits (preflight, certificates, manifests, image pulls).
pub const KUBEADM_MARGIN: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// kiln-firstboot's bound on one `kubeadm init|join` attempt when `--kubeadm-timeout`
/// is not given: kubeadm's own waits ([`kubeadm_waits`], raised by node.toml's
/// `kubeadm_timeouts`) plus [`KUBEADM_MARGIN`], at least [`MIN_ATTEMPT_BOUND`]. So
/// kiln never cuts kubeadm off while kubeadm is still within a timeout it was given:
/// kubeadm fails first, with its own words, which `doctor` diagnoses.
pub fn attempt_bound(i: &Inputs) -> std::time::Duration {
    (kubeadm_waits(i) + KUBEADM_MARGIN).max(MIN_ATTEMPT_BOUND)
}

/// The least [`attempt_bound`]: 15 minutes, kiln-firstboot's bound before it followed
/// kubeadm's timeouts.
pub const MIN_ATTEMPT_BOUND: std::time::Duration = std::time::Duration::from_secs(15 * 60);

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
            timeouts: BTreeMap::new(),
            image_pull_policy: None,
            static_pod_patches: BTreeMap::new(),
            kube_proxy: true,
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
    fn timeouts_and_pull_policy_are_rendered_only_when_set() {
        for role in [Role::Init, Role::Join, Role::ControlPlane] {
            let d = docs(&render(&inputs(role, 34)));
            assert!(d[0].get("timeouts").is_none(), "{role:?}: kubeadm's defaults are kubeadm's to write");
            assert!(d[0]["nodeRegistration"].get("imagePullPolicy").is_none(), "{role:?}");
            let mut i = inputs(role, 34);
            i.timeouts.insert("kubeletHealthCheck".into(), "8m".into());
            i.timeouts.insert("controlPlaneComponentHealthCheck".into(), "10m0s".into());
            i.image_pull_policy = Some("Never".into());
            let d = docs(&render(&i));
            assert_eq!(
                d[0]["timeouts"],
                json!({ "controlPlaneComponentHealthCheck": "10m0s", "kubeletHealthCheck": "8m" }),
                "{role:?}"
            );
            assert_eq!(d[0]["nodeRegistration"]["imagePullPolicy"], "Never", "{role:?}");
        }
        // v1beta3 has imagePullPolicy too (resolve refuses timeouts there).
        let mut i = inputs(Role::Join, 30);
        i.image_pull_policy = Some("IfNotPresent".into());
        assert_eq!(docs(&render(&i))[0]["nodeRegistration"]["imagePullPolicy"], "IfNotPresent");
    }

    #[test]
    fn kube_proxy_false_disables_it_on_init_only() {
        for minor in [30, 34] {
            assert!(
                docs(&render(&inputs(Role::Init, minor)))[0].get("skipPhases").is_none(),
                "the default installs kube-proxy"
            );
            for role in [Role::Init, Role::Join, Role::ControlPlane] {
                let mut i = inputs(role, minor);
                i.kube_proxy = false;
                let d = docs(&render(&i));
                let init = role == Role::Init;
                let skip = if init && minor < 31 { Some(&json!(["addon/kube-proxy"])) } else { None };
                assert_eq!(d[0].get("skipPhases"), skip, "{role:?} v1.{minor}");
                let proxy = if init && minor >= 31 { Some(&json!({ "disabled": true })) } else { None };
                assert_eq!(d.get(1).and_then(|c| c.get("proxy")), proxy, "{role:?} v1.{minor}");
            }
        }
    }

    #[test]
    fn the_attempt_bound_follows_kubeadms_timeouts() {
        let min = |m: u64| std::time::Duration::from_secs(m * 60);
        // kubeadm's defaults: 9m, 14m, 20m of waits.
        assert_eq!(kubeadm_waits(&inputs(Role::Init, 34)), min(9));
        assert_eq!(kubeadm_waits(&inputs(Role::Join, 34)), min(14));
        assert_eq!(kubeadm_waits(&inputs(Role::ControlPlane, 34)), min(20));
        assert_eq!(attempt_bound(&inputs(Role::Init, 34)), min(15), "never below the old 15m");
        assert_eq!(attempt_bound(&inputs(Role::ControlPlane, 34)), min(25));
        let mut i = inputs(Role::Init, 34);
        i.timeouts.insert("kubeletHealthCheck".into(), "8m".into());
        i.timeouts.insert("controlPlaneComponentHealthCheck".into(), "30m".into());
        assert_eq!(kubeadm_waits(&i), min(39));
        assert_eq!(attempt_bound(&i), min(44));
    }

    #[test]
    fn static_pod_patch_files_are_kubeadms_names() {
        let files = static_pod_patch_files();
        assert_eq!(files.len(), 8);
        assert!(files.contains(&"kube-apiserver+strategic.json".to_string()), "{files:?}");
        assert!(files.contains(&"etcd+merge.json".to_string()), "{files:?}");
        assert!(!files.iter().any(|f| f.starts_with("kubeletconfiguration")), "{files:?}");
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
