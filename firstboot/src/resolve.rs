//! Resolve: the machine's metadata and every node.toml source merged into one
//! validated node ([`Resolved`]), or every reason it cannot be. Nothing here acts
//! on the machine; `plan` and `run` start from what this returns.

use crate::contract::image::ImageDefaults;
use crate::contract::node::DEFAULT_POD_SUBNET;
use crate::contract::node::{self, AdminRole, NodeConfig, Role, SwapPolicy};
use crate::identity;
use crate::kubeadm;
use crate::machine::Machine;
use crate::options::Options;
use crate::providers::{self, Metadata};
use crate::sources;
use crate::validate;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Where the per-node kubelet patch lives (`patches.directory`); kept after boot so
/// `kubeadm upgrade node --patches` can use it again.
pub const PATCHES_DIR: &str = "/etc/kiln/kubeadm-patches";

/// What stands in for a value a dry run could not resolve.
pub const UNRESOLVED: &str = "<unresolved>";

/// A resolved node: everything `run` needs, validated.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Image defaults.
    pub image: ImageDefaults,
    /// Sources that contributed, in order.
    pub sources: Vec<String>,
    /// kubeadm inputs.
    pub kubeadm: kubeadm::Inputs,
    /// CA material to write (kubeadm file name under /etc/kubernetes/pki → PEM).
    pub pki: BTreeMap<&'static str, String>,
    /// Swap policy.
    pub swap: SwapPolicy,
    /// Platform, if known.
    pub platform: Option<String>,
    /// Platform instance id, if known.
    pub instance_id: Option<String>,
    /// Init node: CNI manifest to apply.
    pub cni_manifest: Option<String>,
    /// Init node: user who gets a kubeconfig of their own, bound to `admin_role`.
    pub admin_user: Option<String>,
    /// What `admin_user` may do ([`AdminRole::Edit`] unless node.toml says otherwise).
    pub admin_role: AdminRole,
    /// What a dry run ([`resolve_for_plan`]) could not resolve, one line each with the
    /// cause; the value is [`UNRESOLVED`] in the plan. Always empty for `run`.
    pub unresolved: Vec<String>,
    /// The bound on one `kubeadm init|join` attempt: `--kubeadm-timeout` when given,
    /// else [`kubeadm::attempt_bound`] (kubeadm's own waits with node.toml's
    /// `kubeadm_timeouts`, plus a margin), so a raised kubeadm timeout is never cut short.
    pub attempt_bound: Duration,
    /// How long a join waits for the endpoint before kubeadm runs: `--wait`, or
    /// node.toml's `kubeadm_timeouts.discovery` when that is longer (the operator said
    /// the control plane may take that long to answer).
    pub endpoint_wait: Duration,
}

/// Reads the platform's metadata, if the platform is known and has a provider.
pub fn metadata(m: &Machine, opts: &Options) -> Result<Option<(String, Metadata)>, String> {
    let Some(platform) = providers::detect(m) else { return Ok(None) };
    let Some(p) = providers::for_platform(&platform, opts.metadata_url.as_deref(), m) else { return Ok(None) };
    let md = p.fetch(&opts.http).map_err(|e| format!("{platform} metadata: {e}"))?;
    Ok(Some((platform, md)))
}

/// Resolves the node or lists everything that is missing or wrong.
pub fn resolve(m: &Machine, opts: &Options) -> Result<Resolved, Vec<String>> {
    resolve_as(m, opts, false)
}

/// [`resolve`] for a dry run (`plan`): what only the node itself can find out — its IP
/// from the route to an endpoint whose name does not resolve here — is left
/// unresolved ([`Resolved::unresolved`] says what and why) instead of an error.
pub fn resolve_for_plan(m: &Machine, opts: &Options) -> Result<Resolved, Vec<String>> {
    resolve_as(m, opts, true)
}

/// Every source gathered and merged, then each value checked in turn; every
/// problem is collected, in the same order each time, before any is returned.
fn resolve_as(m: &Machine, opts: &Options, dry: bool) -> Result<Resolved, Vec<String>> {
    let image = sources::image_defaults(&m.root).map_err(|e| vec![e.0])?;
    let meta = metadata(m, opts).map_err(|e| vec![e])?;
    let gathered = sources::gather(m, meta.as_ref().map(|(p, md)| (p.as_str(), md))).map_err(|e| vec![e.0])?;
    let md = meta.as_ref().map(|(_, md)| md.clone()).unwrap_or_default();
    let cfg: NodeConfig = sources::merge(&gathered);
    let mut errs = Vec::new();
    let c = cfg.cluster.clone().unwrap_or_default();
    let n = cfg.node.clone().unwrap_or_default();
    let role = n.role.unwrap_or_else(|| {
        errs.push("no role: set [node] role (init, control-plane or join) in user-data, or kiln.role= on the kernel command line".into());
        Role::Join
    });
    let endpoint = endpoint(&c, &mut errs);
    let version = c.kubernetes_version.clone().unwrap_or_else(|| image.kubernetes_version.clone());
    // The config's API version is chosen by the program that reads it: the image's kubeadm.
    let minor = versions(&image, &version, role).unwrap_or_else(|e| {
        errs.push(e);
        0
    });
    let token = token(&c, &mut errs);
    let hashes = c.ca_cert_hashes.clone().unwrap_or_default();
    let skip = n.unsafe_skip_ca_verification.unwrap_or(false);
    if role != Role::Init && hashes.is_empty() && !skip {
        errs.push("[cluster] ca_cert_hashes is empty: a joining node cannot verify the control plane; regenerate user-data with `kiln userdata`".into());
    }
    let node_name = identity::node_name(n.name.as_deref(), md.hostname.as_deref(), &m.hostname, &m.machine_id);
    if let Err(e) = validate::names::node_name(&node_name) {
        errs.push(format!("node name: {e}"));
    }
    let mut unresolved = Vec::new();
    let node_ip = node_ip(n.node_ip.clone().or(md.private_ipv4.clone()), &endpoint, dry, &mut errs, &mut unresolved);
    check_node(&n, &mut errs);
    check_kubeadm_knobs(&n, role, minor, &image.kubeadm_version, &mut errs);
    if let Some(u) = &c.admin_user {
        if let Err(e) = validate::names::admin_user(u) {
            errs.push(format!("[cluster] admin_user: {e}"));
        }
    }
    let token_ttl = c.token_ttl.clone().unwrap_or_else(|| "24h".into());
    if let Err(e) = validate::duration::token_ttl(&token_ttl) {
        errs.push(format!("[cluster] token_ttl: {e}"));
    }
    let p = cfg.pki.clone().unwrap_or_default();
    let pki = pki(&m.root, role, &p, &mut errs);
    if role == Role::Init {
        if let Some(e) = manifest_mismatch(&m.root, c.cni_manifest.as_deref(), c.pod_subnet.as_deref()) {
            errs.push(e);
        }
    }
    if let Err(e) = crate::images::pins(&image.images) {
        errs.push(e);
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let kubelet: BTreeMap<String, serde_json::Value> = n
        .kubelet
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| serde_json::to_value(v).ok().map(|v| (k, v)))
        .collect();
    let swap = n.swap.unwrap_or(SwapPolicy::Off);
    let inputs = kubeadm::Inputs {
        role,
        kubernetes_version: version,
        minor,
        node_name,
        node_ip,
        control_plane_endpoint: endpoint,
        cluster_name: c.name.clone().unwrap_or_else(|| "kubernetes".into()),
        pod_subnet: c.pod_subnet.clone().unwrap_or_else(|| DEFAULT_POD_SUBNET.into()),
        service_subnet: c.service_subnet.clone().unwrap_or_else(|| "10.96.0.0/12".into()),
        dns_domain: c.dns_domain.clone().unwrap_or_else(|| "cluster.local".into()),
        cri_socket: image.runtime_socket.clone(),
        taints: n.taints.clone(),
        labels: n.labels.clone().unwrap_or_default(),
        token,
        token_ttl,
        ca_cert_hashes: hashes,
        unsafe_skip_ca_verification: skip,
        flex_volume_dir: image.flex_volume_dir.trim_end_matches('/').to_string(),
        cgroup_driver: image.cgroup_driver.clone(),
        swap_limited: swap == SwapPolicy::Limited,
        bind_port: n.api_server_bind_port.unwrap_or(6443),
        patches_dir: PATCHES_DIR.into(),
        kubelet,
        kubelet_extra_args: n.kubelet_extra_args.clone().unwrap_or_default(),
        timeouts: n.kubeadm_timeouts.clone().unwrap_or_default(),
        image_pull_policy: pull_policy(&n, &image),
        static_pod_patches: static_pod_patches(&n),
        kube_proxy: c.kube_proxy.unwrap_or(true),
    };
    let attempt_bound = opts.kubeadm_timeout.unwrap_or_else(|| kubeadm::attempt_bound(&inputs));
    let discovery =
        inputs.timeouts.get("discovery").and_then(|v| validate::kubeadm::timeout_value("discovery", v).ok());
    let endpoint_wait = discovery.map_or(opts.wait, |d| d.max(opts.wait));
    Ok(Resolved {
        image,
        sources: gathered.into_iter().map(|s| s.name).collect(),
        kubeadm: inputs,
        pki,
        swap,
        platform: meta.as_ref().map(|(p, _)| p.clone()).or_else(|| m.platform()),
        instance_id: md.instance_id.clone().or_else(|| m.instance_id()),
        cni_manifest: c.cni_manifest.clone(),
        admin_user: c.admin_user.clone(),
        admin_role: c.admin_role.unwrap_or(AdminRole::Edit),
        unresolved,
        attempt_bound,
        endpoint_wait,
    })
}

/// `nodeRegistration.imagePullPolicy`: node.toml's, else `IfNotPresent` when the image
/// carries its images (kubeadm's own default, written out: preflight finds every baked
/// image and pulls nothing, while a missing one still fails at once as
/// `[ERROR ImagePull]`, where `Never` would only show as a static pod that never
/// starts; `NodeRegistrationOptions.ImagePullPolicy`, kubeadm.k8s.io v1beta3 and
/// v1beta4 `cmd/kubeadm/app/apis/kubeadm/{v1beta3,v1beta4}/types.go`, v1.33.6), else unset.
fn pull_policy(n: &node::Node, image: &ImageDefaults) -> Option<String> {
    let baked = (!image.images.is_empty()).then_some(node::ImagePullPolicy::IfNotPresent);
    n.image_pull_policy.or(baked).map(|p| p.as_str().to_string())
}

/// The image's kubeadm and kubelet against the cluster's version (kubeadm's skew
/// rules, `validate::version::skew`), and the kubeadm minor the config is rendered for.
fn versions(image: &ImageDefaults, cluster: &str, role: Role) -> Result<u32, String> {
    let v = |what: &str, s: &str| validate::version::parse(s).map_err(|e| format!("{what}: {e}"));
    let kubeadm = v("the image's kubeadm_version (rebuild the image)", &image.kubeadm_version)?;
    let kubelet = v("the image's kubelet_version (rebuild the image)", &image.kubelet_version)?;
    let cluster = v("[cluster] kubernetes_version", cluster)?;
    validate::version::skew(&kubeadm, &kubelet, &cluster, role != Role::Init)?;
    validate::version::api_version_for_kubeadm(&kubeadm)?;
    if !validate::version::supports_kubelet_patches(&kubeadm) {
        return Err(format!(
            "kubeadm {kubeadm} cannot apply kubeletconfiguration patches (kubeadm >= 1.25), which carry this node's kubelet settings; build the image with a newer kubeadm"
        ));
    }
    u32::try_from(kubeadm.minor).map_err(|_| format!("kubeadm {kubeadm}: minor version out of range"))
}

/// `[cluster] control_plane_endpoint`, normalised (IPv6 bracketed, port always
/// present), or empty with the reason in `errs`.
fn endpoint(c: &node::Cluster, errs: &mut Vec<String>) -> String {
    let Some(endpoint) = c.control_plane_endpoint.clone() else {
        errs.push(
            "[cluster] control_plane_endpoint is not set by any source; regenerate user-data with `kiln userdata`"
                .into(),
        );
        return String::new();
    };
    if endpoint.is_empty() {
        return endpoint;
    }
    match validate::endpoint::parse(&endpoint) {
        Ok(e) => e.to_string(),
        Err(e) => {
            errs.push(format!("[cluster] control_plane_endpoint: {e}"));
            String::new()
        }
    }
}

/// `[cluster] bootstrap_token`, or empty with the reason in `errs`.
fn token(c: &node::Cluster, errs: &mut Vec<String>) -> String {
    let token = c.bootstrap_token.clone().map(|t| t.0).unwrap_or_else(|| {
        errs.push("[cluster] bootstrap_token is not set; regenerate user-data with `kiln userdata`".into());
        String::new()
    });
    if !token.is_empty() && !node::is_bootstrap_token(&token) {
        errs.push("[cluster] bootstrap_token is not [a-z0-9]{6}.[a-z0-9]{16}".into());
    }
    token
}

/// The node's IP: `given` (explicit, else the metadata's private address, never an
/// anchor/public IP), else the source address of the route to the endpoint. A dry
/// run leaves a route it cannot find for want of DNS as [`UNRESOLVED`].
fn node_ip(
    given: Option<String>,
    endpoint: &str,
    dry: bool,
    errs: &mut Vec<String>,
    unresolved: &mut Vec<String>,
) -> String {
    let node_ip = match given {
        Some(ip) => ip,
        None if endpoint.is_empty() => String::new(),
        None => match identity::route_source_or_why(endpoint) {
            Ok(ip) => ip,
            Err(why @ identity::NoSource::Dns(_)) if dry => {
                unresolved.push(format!(
                    "node IP: no [node] node_ip, and the route to the endpoint {endpoint} cannot be found here: {why}; on the node it comes from the route (or set [node] node_ip)"
                ));
                UNRESOLVED.to_string()
            }
            Err(why) => {
                let fix = match why {
                    identity::NoSource::Dns(_) => "fix the node's DNS for that name, or set [node] node_ip",
                    identity::NoSource::NoRoute(_) => "check the node's network, or set [node] node_ip",
                };
                errs.push(format!(
                    "cannot find this node's IP: no [node] node_ip, and for the endpoint {endpoint} {why}; {fix}"
                ));
                String::new()
            }
        },
    };
    // It becomes kubelet's --node-ip: one address, nothing else (no flag injection).
    if node_ip.is_empty() || node_ip == UNRESOLVED {
        return node_ip;
    }
    match validate::endpoint::node_ip(&node_ip) {
        Ok(ip) => ip.to_string(),
        Err(e) => {
            errs.push(format!("node IP: {e}"));
            String::new()
        }
    }
}

/// `[node]`'s labels, taints and extra kubelet flags, each against its rule.
fn check_node(n: &node::Node, errs: &mut Vec<String>) {
    for (k, v) in n.labels.clone().unwrap_or_default() {
        if let Err(e) = validate::labels::label(&k, &v) {
            errs.push(format!("[node] labels: {e}"));
        }
    }
    for t in n.taints.clone().unwrap_or_default() {
        if let Err(e) = validate::labels::taint(&t.key, t.value.as_deref(), &t.effect) {
            errs.push(format!("[node] taints: {e}"));
        }
    }
    for (k, v) in n.kubelet_extra_args.clone().unwrap_or_default() {
        // kubeadm-flags.env is split on whitespace by systemd: one flag per entry.
        let name_ok = !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok || v.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"') {
            errs.push(format!(
                "[node] kubelet_extra_args: {k:?} = {v:?}: flag names are [a-z0-9-], values have no spaces, quotes or control characters; put structured settings in [node] kubelet"
            ));
        }
    }
}

/// `[node]`'s kubeadm knobs against what this node's kubeadm and role can take:
/// `kubeadm_timeouts` exist only in kubeadm.k8s.io/v1beta4 (kubeadm >= 1.31; v1beta3
/// has no `timeouts` and kubeadm's strict decoding would refuse the file), and
/// static pod patches only on a node that runs the control plane's static pods.
/// `minor` is 0 when the versions did not resolve (that error is already listed).
fn check_kubeadm_knobs(n: &node::Node, role: Role, minor: u32, kubeadm_version: &str, errs: &mut Vec<String>) {
    if n.kubeadm_timeouts.as_ref().is_some_and(|t| !t.is_empty()) && minor > 0 && minor < 31 {
        errs.push(format!(
            "[node] kubeadm_timeouts: the image's kubeadm {kubeadm_version} reads kubeadm.k8s.io/v1beta3, which has no timeouts (added with v1beta4 in kubeadm v1.31); build the image with kubeadm v1.31 or newer, or remove kubeadm_timeouts"
        ));
    }
    let keys: Vec<&String> = n.static_pod_patches.iter().flat_map(|p| p.keys()).collect();
    for (i, a) in keys.iter().enumerate() {
        let file = |k: &str| {
            validate::kubeadm::static_pod_target(k).ok().map(|(t, p)| validate::kubeadm::static_pod_patch_file(t, p))
        };
        if let Some(b) = keys[..i].iter().find(|b| file(b).is_some() && file(b) == file(a)) {
            errs.push(format!(
                "[node] static_pod_patches: `{b}` and `{a}` are the same patch file (a target without `+TYPE` is `+strategic`); merge them into one"
            ));
        }
    }
    if role == Role::Join && !keys.is_empty() {
        errs.push(
            "[node] static_pod_patches: a join (worker) node runs no control-plane static pods; remove them from this node's user-data, or make it role = \"control-plane\"".into(),
        );
    }
}

/// `[node] static_pod_patches` as the files kiln writes in `patches.directory`:
/// kubeadm's `TARGET+TYPE.json` name → the patch as JSON.
fn static_pod_patches(n: &node::Node) -> BTreeMap<String, serde_json::Value> {
    n.static_pod_patches
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| {
            let (target, kind) = validate::kubeadm::static_pod_target(&k).ok()?;
            let file = validate::kubeadm::static_pod_patch_file(target, kind);
            Some((file, serde_json::to_value(v).ok()?))
        })
        .collect()
}

/// The CA material a control plane gets (kubeadm file name → PEM), every file of
/// it required; a join node gets none and must not be given private keys.
fn pki(root: &Path, role: Role, p: &node::Pki, errs: &mut Vec<String>) -> BTreeMap<&'static str, String> {
    let mut pki = BTreeMap::new();
    let want: Vec<(&'static str, Option<String>)> = match role {
        Role::Join => vec![],
        _ => vec![
            ("ca.crt", p.ca_cert.clone()),
            ("ca.key", p.ca_key.clone().map(|s| s.0)),
            ("front-proxy-ca.crt", p.front_proxy_ca_cert.clone()),
            ("front-proxy-ca.key", p.front_proxy_ca_key.clone().map(|s| s.0)),
            ("etcd/ca.crt", p.etcd_ca_cert.clone()),
            ("etcd/ca.key", p.etcd_ca_key.clone().map(|s| s.0)),
            ("sa.key", p.sa_key.clone().map(|s| s.0)),
            ("sa.pub", p.sa_pub.clone()),
        ],
    };
    for (file, v) in want {
        match v.map(|v| pem(root, &v)) {
            Some(Ok(text)) => {
                pki.insert(file, text);
            }
            Some(Err(e)) => errs.push(e),
            None => errs.push(format!(
                "a {} node needs [pki] {file}: control planes get the CA material so no --upload-certs window is needed; regenerate user-data with `kiln userdata --role {}`",
                role.as_str(),
                role.as_str()
            )),
        }
    }
    if role == Role::Join && p.has_private_key() {
        errs.push("a join (worker) node was given CA private keys; workers must not hold them — regenerate its user-data with --role join".into());
    }
    pki
}

/// Row 35 at the point of use: the CNI manifest the init node applies after
/// `kubeadm init` must give pods addresses inside the `networking.podSubnet`
/// kubeadm gets ([`crate::contract::cni::check`]); a mismatch is refused before
/// kubeadm runs, so nothing is half-done. A manifest that cannot be read is
/// left to the `apply-cni` step, which says so and does not apply it.
fn manifest_mismatch(root: &Path, manifest: Option<&str>, pod_subnet: Option<&str>) -> Option<String> {
    let manifest = manifest?;
    let path = crate::machine::paths::contained(root, manifest).ok()?;
    let text = std::fs::read_to_string(&path).ok()?;
    let subnet = pod_subnet.unwrap_or(DEFAULT_POD_SUBNET);
    let errors = crate::contract::cni::check(&text, subnet).err()?;
    Some(format!(
        "[cluster] cni_manifest {manifest}: {}; the pod network would not match [cluster] pod_subnet {subnet}: fix the manifest (and `kiln pin` it again) or set pod_subnet (`kiln cluster --pod-subnet`), then regenerate user-data with `kiln userdata`",
        crate::contract::cni::at(manifest, &errors)
    ))
}

/// PEM text inline, or read from a path on the node: resolved under root
/// (`crate::machine::paths::contained`: no `..` or symlink leads out of it), at most 1 MiB.
fn pem(root: &Path, v: &str) -> Result<String, String> {
    if v.trim_start().starts_with("-----BEGIN") {
        return Ok(v.to_string());
    }
    let path = crate::machine::paths::contained(root, v).map_err(|e| format!("[pki] {e}"))?;
    let bytes = crate::machine::paths::read_capped(&path, node::MAX_TEXT).map_err(|e| format!("[pki] {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("[pki] {}: not PEM text", crate::http::escape(v)))
}
