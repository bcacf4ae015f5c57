//! `node.toml`: the node contract between `kiln userdata` and `kiln-firstboot`.
//!
//! Every key is optional because a node's description is merged from several
//! sources (baked defaults, platform user-data, `/etc/kiln/node.toml`, a file
//! on the boot partition, the kernel command line), later wins, key by key.
//! The text may be gzip-compressed (EC2 caps user-data at 16 KiB); the gzip
//! magic bytes are detected, and every gzip member is read. Text (after
//! gunzip) is at most [`MAX_TEXT`] (1 MiB); more is an error naming the limit.
//! Parsing is strict: unknown keys are errors, and values that reach kubelet's
//! command line (`node_ip`, `labels`, `taints`) are validated where they are
//! parsed, with the line and column of the bad value.
//!
//! ```toml
//! [cluster]
//! name = "prod"
//! kubernetes_version = "v1.34.2"
//! control_plane_endpoint = "api.prod.example:6443"   # IPv6: "[2001:db8::1]:6443"
//! pod_subnet = "10.244.0.0/16"
//! service_subnet = "10.96.0.0/12"
//! dns_domain = "cluster.local"
//! ca_cert_hashes = ["sha256:…"]
//! bootstrap_token = "abcdef.0123456789abcdef"        # secret
//! token_ttl = "24h"
//!
//! [node]
//! role = "join"            # init | control-plane | join
//! name = "worker-1"
//! labels = { "node.kubernetes.io/pool" = "edge" }
//! taints = []              # an explicit empty list means no taints at all
//! node_ip = "10.0.0.12"
//! swap = "off"             # off | limited
//! image_pull_policy = "Never"                        # Always | IfNotPresent | Never
//! kubeadm_timeouts = { controlPlaneComponentHealthCheck = "10m" }
//! static_pod_patches = { "kube-apiserver" = { spec = { containers = [
//!   { name = "kube-apiserver", livenessProbe = { failureThreshold = 30 } } ] } } }
//!
//! [pki]                    # PEM inline, or a path to a PEM file on the node
//! ca_cert = "/etc/kiln/pki/ca.crt"
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;

/// The pod subnet kubeadm gets when node.toml sets none (kubeadm's own default
/// is empty; kiln's matches flannel's `Network`, the guide's example).
pub const DEFAULT_POD_SUBNET: &str = "10.244.0.0/16";

/// Where Ignition or cloud-init put the node's description.
pub const NODE_TOML_PATH: &str = "/etc/kiln/node.toml";
/// Directory for PKI files written next to `node.toml` by Ignition or cloud-init.
pub const PKI_DIR: &str = "/etc/kiln/pki";

/// A value that must never be printed: Debug and Display show `<redacted>`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret value, for the few places that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What the node does when it first boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// `kubeadm init`: exactly one node per cluster.
    Init,
    /// `kubeadm join --control-plane` with the CA material it was given.
    ControlPlane,
    /// `kubeadm join` as a worker.
    Join,
}

impl Role {
    /// The spelling used in node.toml and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Init => "init",
            Role::ControlPlane => "control-plane",
            Role::Join => "join",
        }
    }
    /// Parses the node.toml spelling.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "init" => Some(Role::Init),
            "control-plane" => Some(Role::ControlPlane),
            "join" | "worker" => Some(Role::Join),
            _ => None,
        }
    }
    /// Whether this role runs control-plane components (and so needs the CA keys).
    pub fn is_control_plane(self) -> bool {
        matches!(self, Role::Init | Role::ControlPlane)
    }
}

/// How the node treats swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwapPolicy {
    /// Swap is turned off before kubeadm runs (kubelet's default expectation).
    Off,
    /// Swap stays on; kubelet runs with `failSwapOn: false` and `LimitedSwap`.
    Limited,
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Optional value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// `[cluster]`: facts shared by every node of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Cluster name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Control-plane Kubernetes version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
    /// `host:port` (IPv6 as `[addr]:port`) of the API server or its load balancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<String>,
    /// Pod network CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_subnet: Option<String>,
    /// Service network CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_subnet: Option<String>,
    /// Cluster DNS domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_domain: Option<String>,
    /// `sha256:<hex>` of the cluster CA's SubjectPublicKeyInfo, for discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_hashes: Option<Vec<String>>,
    /// Bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}` (secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_token: Option<Secret>,
    /// Lifetime of the bootstrap token the init node creates (Go duration, e.g. `24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ttl: Option<String>,
    /// A CNI manifest on the node (path) the init node applies after `kubeadm init`
    /// (CoreDNS stays Pending until a pod network exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_manifest: Option<String>,
    /// A local user who gets a kubeconfig of their own (`~/.kube/config`, 0600) on the
    /// init node: a client certificate for that user name, bound to `admin_role`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_user: Option<String>,
    /// What `admin_user` may do in the cluster (default [`AdminRole::Edit`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_role: Option<AdminRole>,
    /// `false`: the init node skips kubeadm's `addon/kube-proxy` phase, for a pod
    /// network that replaces kube-proxy (Cilium, kube-router) or a cluster without
    /// Services. Default `true` (kubeadm installs kube-proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_proxy: Option<bool>,
}

/// The cluster role `[cluster] admin_user` is bound to (a ClusterRoleBinding to one
/// of the API server's default user-facing roles; plus reading Nodes below
/// cluster-admin). The user never gets `/etc/kubernetes/admin.conf`: that is
/// `kubeadm:cluster-admins`, the superuser the kubeadm guide says not to share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdminRole {
    /// Read most objects in every namespace (not Secrets, not RBAC).
    View,
    /// `view` plus creating, changing and deleting workloads, Services, ConfigMaps and
    /// Secrets in every namespace; not RBAC, not cluster-scoped objects. The default:
    /// the least that lets the user run and debug applications.
    Edit,
    /// `edit` plus Roles and RoleBindings in every namespace (can grant itself any
    /// namespaced right).
    Admin,
    /// Everything: the superuser. Only when the user must change cluster-scoped
    /// objects (CRDs, RBAC, Nodes); `sudo` with admin.conf does the same for root.
    ClusterAdmin,
}

impl AdminRole {
    /// The ClusterRole's name.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::View => "view",
            AdminRole::Edit => "edit",
            AdminRole::Admin => "admin",
            AdminRole::ClusterAdmin => "cluster-admin",
        }
    }
}

/// `[node]`: facts about this machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// The node's role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Node name (otherwise from metadata or the hostname).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Node labels.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "de_labels")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Taints; `Some(vec![])` means "no taints", unlike `None` (kubeadm's default).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "de_taints")]
    pub taints: Option<Vec<Taint>>,
    /// The node's IP for kubelet (otherwise from metadata or the route to the endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "de_node_ip")]
    pub node_ip: Option<String>,
    /// Swap policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<SwapPolicy>,
    /// Extra KubeletConfiguration fields (`maxPods = 50`), each checked against the
    /// field's type (`validate::kubelet::kubelet_setting`) where it is written.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "de_kubelet")]
    pub kubelet: Option<BTreeMap<String, toml::Value>>,
    /// Extra kubelet flags as name → value (written as a list, never a comma string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_extra_args: Option<BTreeMap<String, String>>,
    /// Join without verifying the CA (discouraged; kiln warns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsafe_skip_ca_verification: Option<bool>,
    /// Port this node's own API server binds (init and control-plane joins; default
    /// 6443), separate from the endpoint's port (a load balancer on 443 in front).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "de_port")]
    pub api_server_bind_port: Option<u16>,
    /// kubeadm's own waits, `Timeouts` field name → Go duration
    /// (`kubeletHealthCheck = "8m"`), each checked by `validate::kubeadm` where it is
    /// written; rendered as `InitConfiguration.timeouts` / `JoinConfiguration.timeouts`
    /// (kubeadm.k8s.io/v1beta4, kubeadm >= 1.31).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "de_kubeadm_timeouts")]
    pub kubeadm_timeouts: Option<BTreeMap<String, String>>,
    /// `nodeRegistration.imagePullPolicy`: whether kubeadm pulls the control-plane
    /// images (kubeadm's default, when unset, is `IfNotPresent`).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "de_pull_policy")]
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// Patches of this node's control-plane static pods, `TARGET[+merge]` → the patch
    /// as a table (a strategic merge patch unless `+merge`), written to
    /// `patches.directory` as kubeadm's `TARGET+TYPE.json`; targets are checked by
    /// `validate::kubeadm::static_pod_target` where they are written.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "de_static_pod_patches")]
    pub static_pod_patches: Option<BTreeMap<String, toml::Value>>,
}

/// `[node] image_pull_policy`: kubeadm's `NodeRegistrationOptions.ImagePullPolicy`
/// (`corev1.PullPolicy`; `cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go`, and
/// v1beta3 since v1.22), for `kubeadm init` and `join`'s image pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImagePullPolicy {
    /// Pull every image, even when it is present.
    Always,
    /// Pull only images that are not present (kubeadm's default): on an air-gapped
    /// node whose images were imported, preflight finds them all and pulls nothing, and
    /// a missing one fails at once as `[ERROR ImagePull]`.
    IfNotPresent,
    /// Never pull: kubeadm skips its image preflight altogether
    /// (`cmd/kubeadm/app/preflight/checks.go`, `ImagePullCheck.Check`, v1.34.2: it also
    /// skips the sandbox-image consistency warning), so a missing image shows only
    /// later, as a static pod the kubelet cannot start and kubeadm's wait timing out.
    Never,
}

/// `[node] image_pull_policy`: one of `validate::kubeadm::PULL_POLICIES`, spelled as
/// kubeadm spells it (its validation is case-sensitive).
fn de_pull_policy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ImagePullPolicy>, D::Error> {
    let v = toml::Value::deserialize(d)?;
    let found = match &v {
        toml::Value::String(s) => ImagePullPolicy::ALL.into_iter().find(|p| p.as_str() == s),
        _ => None,
    };
    found.map(Some).ok_or_else(|| {
        let names = crate::validate::kubeadm::PULL_POLICIES;
        let hint = match v.as_str().and_then(|s| crate::validate::suggest::did_you_mean(s, names)) {
            Some(s) => format!(" (did you mean `{s}`?)"),
            None => String::new(),
        };
        let shown = match &v {
            toml::Value::String(s) => crate::validate::quote(s),
            other => format!("{} `{other}`", other.type_str()),
        };
        serde::de::Error::custom(format!(
            "image_pull_policy: {shown} is not a pull policy{hint}; write one of \"{}\"",
            names.join("\", \"")
        ))
    })
}

impl ImagePullPolicy {
    /// Every policy, in [`crate::validate::kubeadm::PULL_POLICIES`]'s order.
    pub const ALL: [ImagePullPolicy; 3] =
        [ImagePullPolicy::Always, ImagePullPolicy::IfNotPresent, ImagePullPolicy::Never];

    /// The spelling kubeadm and node.toml use.
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// `api_server_bind_port`, checked by `validate::endpoint::bind_port` (kubeadm's `ValidatePort`:
/// 1-65535) where it is written.
fn de_port<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let v = i64::deserialize(d)?;
    crate::validate::endpoint::bind_port(v)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("api_server_bind_port: {e}")))
}

/// A TOML table whose keys and values are checked one at a time, so an error carries
/// the line and column of the bad key or value: `what` names the table in errors,
/// `key` checks a key, `value` checks (and converts) the value of a key.
struct Checked<T> {
    what: &'static str,
    key: fn(&str) -> Result<(), String>,
    value: fn(&str, toml::Value) -> Result<T, String>,
}

impl<'de, T> serde::de::Visitor<'de> for Checked<T> {
    type Value = BTreeMap<String, T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a table ({})", self.what)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::{DeserializeSeed, Error};
        struct Key(&'static str, fn(&str) -> Result<(), String>);
        impl<'de> DeserializeSeed<'de> for Key {
            type Value = String;
            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
                let k = String::deserialize(d)?;
                (self.1)(&k).map_err(|e| D::Error::custom(format!("{}: {e}", self.0)))?;
                Ok(k)
            }
        }
        struct Value<'a, T>(&'static str, &'a str, fn(&str, toml::Value) -> Result<T, String>);
        impl<'de, T> DeserializeSeed<'de> for Value<'_, T> {
            type Value = T;
            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
                let v = toml::Value::deserialize(d)?;
                (self.2)(self.1, v).map_err(|e| D::Error::custom(format!("{}: {e}", self.0)))
            }
        }
        let mut out = BTreeMap::new();
        while let Some(k) = map.next_key_seed(Key(self.what, self.key))? {
            let v = map.next_value_seed(Value(self.what, &k, self.value))?;
            out.insert(k, v);
        }
        Ok(out)
    }
}

/// `[node] kubelet`: every key a KubeletConfiguration field, every value of its type.
fn de_kubelet<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<String, toml::Value>>, D::Error> {
    d.deserialize_map(Checked {
        what: "[node] kubelet",
        key: |k| crate::validate::kubelet::kubelet_field(k).map(|_| ()),
        value: |k, v| crate::validate::kubelet::kubelet_setting(k, &v).map(|()| v),
    })
    .map(Some)
}

/// `[node] kubeadm_timeouts`: every key a field of kubeadm's `Timeouts`, every value a
/// positive Go duration string (`validate::kubeadm`).
fn de_kubeadm_timeouts<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    d.deserialize_map(Checked {
        what: "[node] kubeadm_timeouts",
        key: crate::validate::kubeadm::timeout_field,
        value: |k, v| match v {
            toml::Value::String(s) => crate::validate::kubeadm::timeout_value(k, &s).map(|_| s),
            other => Err(format!(
                "{k} is a Go duration string such as \"{}\", not {} `{other}`",
                crate::validate::kubeadm::humanize(crate::validate::kubeadm::timeout_default(k).unwrap_or_default()),
                other.type_str()
            )),
        },
    })
    .map(Some)
}

/// `[node] static_pod_patches`: every key `TARGET[+TYPE]` of a static pod kubeadm
/// patches, every value a table (the patch).
fn de_static_pod_patches<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, toml::Value>>, D::Error> {
    d.deserialize_map(Checked {
        what: "[node] static_pod_patches",
        key: |k| crate::validate::kubeadm::static_pod_target(k).map(|_| ()),
        value: |k, v| match v {
            toml::Value::Table(_) => Ok(v),
            other => Err(format!(
                "{k} is a patch of the Pod as a table (`{k} = {{ spec = {{ containers = [{{ name = \"…\", … }}] }} }}`), not {}",
                other.type_str()
            )),
        },
    })
    .map(Some)
}

/// `node_ip`, checked by `validate::endpoint::node_ip` (it becomes kubelet's `--node-ip`).
fn de_node_ip<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = String::deserialize(d)?;
    crate::validate::endpoint::node_ip(&v).map_err(|e| serde::de::Error::custom(format!("node_ip: {e}")))?;
    Ok(Some(v))
}

/// `labels`, each checked by `validate::labels::label` (a `,` would inject labels).
fn de_labels<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    let v = BTreeMap::<String, String>::deserialize(d)?;
    for (k, val) in &v {
        crate::validate::labels::label(k, val).map_err(|e| serde::de::Error::custom(format!("labels: {e}")))?;
    }
    Ok(Some(v))
}

/// `taints`, each checked by `validate::labels::taint`.
fn de_taints<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<Taint>>, D::Error> {
    let v = Vec::<Taint>::deserialize(d)?;
    for t in &v {
        crate::validate::labels::taint(&t.key, t.value.as_deref(), &t.effect)
            .map_err(|e| serde::de::Error::custom(format!("taints: {e}")))?;
    }
    Ok(Some(v))
}

/// `[pki]`: PEM text inline (starts with `-----BEGIN`) or a path on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pki {
    /// Cluster CA certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// Cluster CA key (control planes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_key: Option<Secret>,
    /// Front-proxy CA certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front_proxy_ca_cert: Option<String>,
    /// Front-proxy CA key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front_proxy_ca_key: Option<Secret>,
    /// etcd CA certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_ca_cert: Option<String>,
    /// etcd CA key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_ca_key: Option<Secret>,
    /// Service-account signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sa_key: Option<Secret>,
    /// Service-account public key (PKIX).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sa_pub: Option<String>,
}

impl Pki {
    /// Whether any private key is present (workers must have none).
    pub fn has_private_key(&self) -> bool {
        self.ca_key.is_some()
            || self.front_proxy_ca_key.is_some()
            || self.etcd_ca_key.is_some()
            || self.sa_key.is_some()
    }
}

/// A whole `node.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Cluster facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cluster>,
    /// Node facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    /// CA material.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pki: Option<Pki>,
}

/// Why a node.toml was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub col: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.col) {
            (Some(l), Some(c)) => write!(f, "{l}:{c}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

/// `unknown field `rloe`, expected one of `role`, …` (serde's text; the same for an
/// `unknown variant`) with the likely key added: `(did you mean `role`?)`.
fn suggest_field(message: String) -> String {
    let rest = message.strip_prefix("unknown field `").or_else(|| message.strip_prefix("unknown variant `"));
    let Some(rest) = rest else { return message };
    let Some((word, expected)) = rest.split_once('`') else { return message };
    let candidates = expected.split('`').skip(1).step_by(2);
    match crate::validate::suggest::did_you_mean(word, candidates) {
        Some(s) => format!("{message} (did you mean `{s}`?)"),
        None => message,
    }
}

/// Whether `bytes` start with the gzip magic.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Upper bound on node.toml text (after gunzip, against gzip bombs): a node's
/// description with inline PEM is a few KiB; EC2 caps user-data at 16 KiB.
pub const MAX_TEXT: usize = 1 << 20;

impl NodeConfig {
    /// Parses node.toml bytes, gunzipping them first when they are gzip (every
    /// member, as `gzip -d` does). More than [`MAX_TEXT`] of text is an error.
    pub fn parse(bytes: &[u8]) -> Result<NodeConfig, ParseError> {
        let whole = |message: String| ParseError { line: None, col: None, message };
        let too_big = || whole(format!("node.toml is larger than kiln-firstboot's {} MiB limit", MAX_TEXT >> 20));
        let text = if is_gzip(bytes) {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(bytes)
                .take(MAX_TEXT as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| whole(format!("gzip user-data does not decompress: {e}")))?;
            if out.len() > MAX_TEXT {
                return Err(too_big());
            }
            String::from_utf8(out).map_err(|_| whole("gzip user-data does not decompress to UTF-8 text".into()))?
        } else {
            if bytes.len() > MAX_TEXT {
                return Err(too_big());
            }
            String::from_utf8(bytes.to_vec()).map_err(|_| whole("node.toml is neither gzip nor UTF-8 text".into()))?
        };
        Self::parse_str(&text)
    }

    /// Parses node.toml text.
    pub fn parse_str(text: &str) -> Result<NodeConfig, ParseError> {
        toml::from_str(text).map_err(|e| {
            let (line, col) = match e.span() {
                Some(s) => {
                    let before = &text[..s.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
                    (Some(line), Some(col))
                }
                None => (None, None),
            };
            let message = crate::http::escape(e.message().trim()).replace("\\n", " ");
            ParseError { line, col, message: suggest_field(message) }
        })
    }

    /// Renders TOML (secrets included: this is user-data, handle it as a secret).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// The role, if any source set it.
    pub fn role(&self) -> Option<Role> {
        self.node.as_ref().and_then(|n| n.role)
    }

    /// Merges `later` over `self`, key by key (later wins; lists are replaced whole).
    ///
    /// Every section is destructured without `..`, so a field added to
    /// [`Cluster`], [`Node`], [`Pki`] or [`NodeConfig`] and not merged here is a
    /// compile error, never a key silently dropped.
    pub fn merge(mut self, later: NodeConfig) -> NodeConfig {
        /// Destructures `$src` as `$ty` naming every field, then takes each one it sets.
        macro_rules! take {
            ($dst:expr, $ty:ident { $($f:ident),+ $(,)? } = $src:expr) => {{
                let $ty { $($f),+ } = $src;
                $( if $f.is_some() { $dst.$f = $f; } )+
            }};
        }
        let NodeConfig { cluster, node, pki } = later;
        if let Some(x) = cluster {
            let dst = self.cluster.get_or_insert_with(Default::default);
            take!(
                dst,
                Cluster {
                    name,
                    kubernetes_version,
                    control_plane_endpoint,
                    pod_subnet,
                    service_subnet,
                    dns_domain,
                    ca_cert_hashes,
                    bootstrap_token,
                    token_ttl,
                    cni_manifest,
                    admin_user,
                    admin_role,
                    kube_proxy,
                } = x
            );
        }
        if let Some(x) = node {
            let dst = self.node.get_or_insert_with(Default::default);
            take!(
                dst,
                Node {
                    role,
                    name,
                    labels,
                    taints,
                    node_ip,
                    swap,
                    kubelet,
                    kubelet_extra_args,
                    unsafe_skip_ca_verification,
                    api_server_bind_port,
                    kubeadm_timeouts,
                    image_pull_policy,
                    static_pod_patches,
                } = x
            );
        }
        if let Some(x) = pki {
            let dst = self.pki.get_or_insert_with(Default::default);
            take!(
                dst,
                Pki {
                    ca_cert,
                    ca_key,
                    front_proxy_ca_cert,
                    front_proxy_ca_key,
                    etcd_ca_cert,
                    etcd_ca_key,
                    sa_key,
                    sa_pub,
                } = x
            );
        }
        self
    }
}

/// Whether `s` is a bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`
/// (kubeadm `bootstraputil.BootstrapTokenRegexp`).
pub fn is_bootstrap_token(s: &str) -> bool {
    let ok = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    matches!(s.split_once('.'), Some((id, secret)) if ok(id, 6) && ok(secret, 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKER: &str = r#"
[cluster]
control_plane_endpoint = "[2001:db8::1]:6443"
ca_cert_hashes = ["sha256:0123"]
bootstrap_token = "abcdef.0123456789abcdef"

[node]
role = "join"
taints = []
"#;

    #[test]
    fn parses_plain_and_gzip_and_keeps_empty_taints() {
        let c = NodeConfig::parse(WORKER.as_bytes()).unwrap();
        assert_eq!(c.role(), Some(Role::Join));
        assert_eq!(c.node.as_ref().unwrap().taints, Some(vec![]));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, WORKER.as_bytes()).unwrap();
        let z = gz.finish().unwrap();
        assert_eq!(NodeConfig::parse(&z).unwrap(), c);
        // Round trip keeps the explicit empty list.
        let again = NodeConfig::parse_str(&c.to_toml()).unwrap();
        assert_eq!(again.node.unwrap().taints, Some(vec![]));
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let c = NodeConfig::parse(WORKER.as_bytes()).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("0123456789abcdef") && dbg.contains("<redacted>"), "{dbg}");
    }

    #[test]
    fn unknown_keys_are_located() {
        let e = NodeConfig::parse_str("[node]\nrole = \"join\"\nrloe = 1\n").unwrap_err();
        assert_eq!((e.line, e.col), (Some(3), Some(1)));
        assert!(e.message.contains("rloe"));
        let e = NodeConfig::parse_str("[node]\nrole = \"boss\"\n").unwrap_err();
        assert!(e.message.contains("boss"), "{e}");
    }

    #[test]
    fn later_sources_win_key_by_key() {
        let base = NodeConfig::parse_str(WORKER).unwrap();
        let cmdline = NodeConfig::parse_str("[node]\nrole = \"control-plane\"\nname = \"cp-2\"\n").unwrap();
        let m = base.merge(cmdline);
        assert_eq!(m.role(), Some(Role::ControlPlane));
        assert_eq!(m.node.as_ref().unwrap().taints, Some(vec![]));
        assert_eq!(m.cluster.unwrap().control_plane_endpoint.as_deref(), Some("[2001:db8::1]:6443"));
    }

    #[test]
    fn token_shape() {
        assert!(is_bootstrap_token("abcdef.0123456789abcdef"));
        for bad in
            ["ABCDEF.0123456789abcdef", "abcde.0123456789abcdef", "abcdef0123456789abcdef", "abcdef.0123456789abcde!"]
        {
            assert!(!is_bootstrap_token(bad), "{bad}");
        }
    }

    #[test]
    fn bind_port_zero_is_refused_where_it_is_written() {
        let e = NodeConfig::parse_str("[node]\nrole = \"init\"\napi_server_bind_port = 0\n").unwrap_err();
        assert_eq!((e.line, e.col), (Some(3), Some(24)), "{e}");
        assert!(e.message.contains("outside 1-65535"), "{e}");
        assert!(NodeConfig::parse_str("[node]\napi_server_bind_port = 70000\n").is_err());
        let ok = NodeConfig::parse_str("[node]\napi_server_bind_port = 6444\n").unwrap();
        assert_eq!(ok.node.and_then(|n| n.api_server_bind_port), Some(6444));
    }

    #[test]
    fn kubeadm_knobs_are_checked_where_they_are_written() {
        let ok = NodeConfig::parse_str(
            "[node]\nimage_pull_policy = \"Never\"\nkubeadm_timeouts = { controlPlaneComponentHealthCheck = \"10m0s\", kubeletHealthCheck = \"8m\" }\n[node.static_pod_patches.kube-apiserver.spec]\ncontainers = [{ name = \"kube-apiserver\", startupProbe = { failureThreshold = 60 } }]\n",
        )
        .unwrap();
        let n = ok.node.unwrap();
        assert_eq!(n.image_pull_policy, Some(ImagePullPolicy::Never));
        assert_eq!(n.kubeadm_timeouts.unwrap()["kubeletHealthCheck"], "8m");
        assert!(n.static_pod_patches.unwrap()["kube-apiserver"]["spec"]["containers"].is_array());
        for (text, at, says) in [
            ("[node]\nkubeadm_timeouts = { kubeletHealthCheck = \"8 minutes\" }\n", (2, 43), "not a Go duration"),
            ("[node]\nkubeadm_timeouts = { kubeletHealthCheck = \"-8m\" }\n", (2, 43), "negative"),
            ("[node]\nkubeadm_timeouts = { kubeletHealthCheck = 8 }\n", (2, 43), "Go duration string such as \"4m0s\""),
            (
                "[node]\nkubeadm_timeouts = { kubeletHealthChek = \"8m\" }\n",
                (2, 22),
                "did you mean `kubeletHealthCheck`?",
            ),
            ("[node]\nkubeadm_timeouts = \"8m\"\n", (2, 20), "a table"),
            ("[node]\nimage_pull_policy = \"never\"\n", (2, 21), "did you mean `Never`?"),
            ("[node]\nimage_pull_policy = 1\n", (2, 21), "integer `1` is not a pull policy"),
            ("[node]\nstatic_pod_patches = { kube-apiservr = {} }\n", (2, 24), "did you mean `kube-apiserver`?"),
            ("[node]\nstatic_pod_patches = { etcd = [] }\n", (2, 31), "a patch of the Pod as a table"),
        ] {
            let e = NodeConfig::parse_str(text).unwrap_err();
            assert_eq!((e.line, e.col), (Some(at.0), Some(at.1)), "{text}: {e}");
            assert!(e.message.contains(says), "{text}: {e}");
        }
        // Later sources win the whole table, as with [node] kubelet.
        let a = NodeConfig::parse_str("[node]\nkubeadm_timeouts = { discovery = \"9m\" }\n").unwrap();
        let b = NodeConfig::parse_str(
            "[node]\nkubeadm_timeouts = { tlsBootstrap = \"9m\" }\nimage_pull_policy = \"Always\"\n",
        )
        .unwrap();
        let m = a.merge(b).node.unwrap();
        assert_eq!(m.kubeadm_timeouts.unwrap().keys().collect::<Vec<_>>(), ["tlsBootstrap"]);
        assert_eq!(m.image_pull_policy, Some(ImagePullPolicy::Always));
    }

    #[test]
    fn kubelet_values_are_typed_and_keys_known() {
        let e = NodeConfig::parse_str("[node]\nrole = \"join\"\nkubelet = { maxPods = \"42\" }\n").unwrap_err();
        assert_eq!((e.line, e.col), (Some(3), Some(23)), "{e}");
        assert!(
            e.message.contains("maxPods") && e.message.contains("integer") && e.message.contains("maxPods = 42"),
            "{e}"
        );
        let e = NodeConfig::parse_str("[node]\n[node.kubelet]\nserializeImagePulls = true\nmaxPod = 42\n").unwrap_err();
        assert_eq!((e.line, e.col), (Some(4), Some(1)), "{e}");
        assert!(e.message.contains("did you mean `maxPods`?"), "{e}");
        for bad in [
            "maxPods = 3000000000",
            "serializeImagePulls = \"false\"",
            "syncFrequency = \"1 minute\"",
            "clusterDNS = \"10.96.0.10\"",
            "evictionHard = { \"memory.available\" = 100 }",
            "kind = \"Pod\"",
        ] {
            assert!(NodeConfig::parse_str(&format!("[node.kubelet]\n{bad}\n")).is_err(), "{bad}");
        }
        let ok = "[node.kubelet]\nmaxPods = 42\nsyncFrequency = \"1m\"\nclusterDNS = [\"10.96.0.10\"]\nevictionHard = { \"memory.available\" = \"100Mi\" }\nfeatureGates = { UserNamespacesSupport = true }\nmemoryThrottlingFactor = 0.9\nmemorySwap = { swapBehavior = \"LimitedSwap\" }\n";
        assert_eq!(NodeConfig::parse_str(ok).unwrap().node.unwrap().kubelet.unwrap().len(), 7);
        // Any node.toml key: the likely one is suggested.
        let e = NodeConfig::parse_str("[node]\nrloe = \"init\"\n").unwrap_err();
        assert!(e.message.ends_with("(did you mean `role`?)"), "{e}");
    }
}
