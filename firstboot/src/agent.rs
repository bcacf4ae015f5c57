//! Resolve, then act: the node is resolved from every source first; `plan`
//! prints it, `run` executes it.

use crate::contract::image::ImageDefaults;
use crate::contract::node::{AdminRole, NodeConfig, Role, SwapPolicy, DEFAULT_POD_SUBNET};
use crate::contract::unit::APPROVE_TIMEOUT;
use crate::diagnose;
use crate::files;
use crate::identity;
use crate::kubeadm;
use crate::machine::paths::{self, under};
use crate::machine::Machine;
use crate::providers::{self, Metadata};
pub use crate::runner::run_bounded;
use crate::sources;
use crate::validate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where the success state lives.
pub const STATE_PATH: &str = "/var/lib/kiln/state.json";
/// Written on failure, with the reason.
pub const FAILED_PATH: &str = "/run/kiln/bootstrap-failed";
/// Cluster API's bootstrap success sentinel.
pub const CAPI_SENTINEL: &str = "/run/cluster-api/bootstrap-success.complete";
/// The kubeadm config file.
pub const CONFIG_PATH: &str = "/run/kiln/kubeadm.json";
/// kubeadm's output of the last attempt (redacted), for `doctor`.
pub const KUBEADM_LOG: &str = "/var/log/kiln/kubeadm.log";
/// Where the per-node kubelet patch lives (`patches.directory`); kept after boot so
/// `kubeadm upgrade node --patches` can use it again.
pub const PATCHES_DIR: &str = "/etc/kiln/kubeadm-patches";

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

/// How `run` behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// kubeadm attempts before giving up.
    pub attempts: u32,
    /// How long a join waits for the endpoint to answer.
    pub wait: Duration,
    /// Delay between attempts (doubles).
    pub backoff: Duration,
    /// Metadata service base URL (tests point it at loopback).
    pub metadata_url: Option<String>,
    /// Metadata HTTP policy.
    pub http: crate::http::Policy,
    /// Bound on `kubeadm reset` (a stuck runtime blocks it; seed item 22), in `run`'s
    /// retry path and in `kiln-firstboot reset` alike.
    pub reset_timeout: Duration,
    /// Bound on one `kubeadm init|join` attempt.
    pub kubeadm_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            attempts: 3,
            wait: Duration::from_secs(600),
            backoff: Duration::from_secs(10),
            metadata_url: None,
            http: crate::http::Policy::default(),
            reset_timeout: Duration::from_secs(120),
            kubeadm_timeout: Duration::from_secs(900),
        }
    }
}

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

/// What stands in for a value a dry run could not resolve.
pub const UNRESOLVED: &str = "<unresolved>";

fn resolve_as(m: &Machine, opts: &Options, dry: bool) -> Result<Resolved, Vec<String>> {
    let image = sources::image_defaults(&m.root).map_err(|e| vec![e.0])?;
    let meta = metadata(m, opts).map_err(|e| vec![e])?;
    let gathered = sources::gather(m, meta.as_ref().map(|(p, md)| (p.as_str(), md))).map_err(|e| vec![e.0])?;
    let md = meta.as_ref().map(|(_, md)| md.clone()).unwrap_or_default();
    let cfg: NodeConfig = sources::merge(&gathered);
    let mut errs = Vec::new();
    let c = cfg.cluster.clone().unwrap_or_default();
    let n = cfg.node.clone().unwrap_or_default();
    let need = |v: &Option<String>, key: &str, errs: &mut Vec<String>| -> String {
        v.clone().unwrap_or_else(|| {
            errs.push(format!("[cluster] {key} is not set by any source; regenerate user-data with `kiln userdata`"));
            String::new()
        })
    };
    let role = n.role.unwrap_or_else(|| {
        errs.push("no role: set [node] role (init, control-plane or join) in user-data, or kiln.role= on the kernel command line".into());
        Role::Join
    });
    let endpoint = need(&c.control_plane_endpoint, "control_plane_endpoint", &mut errs);
    // Normalised (IPv6 bracketed, port always present) or refused.
    let endpoint = if endpoint.is_empty() {
        endpoint
    } else {
        match validate::endpoint::parse(&endpoint) {
            Ok(e) => e.to_string(),
            Err(e) => {
                errs.push(format!("[cluster] control_plane_endpoint: {e}"));
                String::new()
            }
        }
    };
    let version = c.kubernetes_version.clone().unwrap_or_else(|| image.kubernetes_version.clone());
    // The config's API version is chosen by the program that reads it: the image's kubeadm.
    let mut minor = 0;
    match versions(&image, &version, role) {
        Ok(m) => minor = m,
        Err(e) => errs.push(e),
    }
    let token = c.bootstrap_token.clone().map(|t| t.0).unwrap_or_else(|| {
        errs.push("[cluster] bootstrap_token is not set; regenerate user-data with `kiln userdata`".into());
        String::new()
    });
    if !token.is_empty() && !crate::contract::node::is_bootstrap_token(&token) {
        errs.push("[cluster] bootstrap_token is not [a-z0-9]{6}.[a-z0-9]{16}".into());
    }
    let hashes = c.ca_cert_hashes.clone().unwrap_or_default();
    let skip = n.unsafe_skip_ca_verification.unwrap_or(false);
    if role != Role::Init && hashes.is_empty() && !skip {
        errs.push("[cluster] ca_cert_hashes is empty: a joining node cannot verify the control plane; regenerate user-data with `kiln userdata`".into());
    }
    let node_name = identity::node_name(n.name.as_deref(), md.hostname.as_deref(), &m.hostname, &m.machine_id);
    if let Err(e) = validate::names::node_name(&node_name) {
        errs.push(format!("node name: {e}"));
    }
    // explicit > metadata private address (never an anchor/public IP) > route to the endpoint
    let mut unresolved = Vec::new();
    let node_ip = match n.node_ip.clone().or(md.private_ipv4.clone()) {
        Some(ip) => ip,
        None if endpoint.is_empty() => String::new(),
        None => match identity::route_source_or_why(&endpoint) {
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
    let node_ip = if node_ip.is_empty() || node_ip == UNRESOLVED {
        node_ip
    } else {
        match validate::endpoint::node_ip(&node_ip) {
            Ok(ip) => ip.to_string(),
            Err(e) => {
                errs.push(format!("node IP: {e}"));
                String::new()
            }
        }
    };
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
    if let Some(u) = &c.admin_user {
        if let Err(e) = validate::names::admin_user(u) {
            errs.push(format!("[cluster] admin_user: {e}"));
        }
    }
    let token_ttl = c.token_ttl.clone().unwrap_or_else(|| "24h".into());
    if let Err(e) = validate::duration::token_ttl(&token_ttl) {
        errs.push(format!("[cluster] token_ttl: {e}"));
    }
    let mut pki = BTreeMap::new();
    let p = cfg.pki.clone().unwrap_or_default();
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
        match v.map(|v| pem(&m.root, &v)) {
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
    if role == Role::Init {
        if let Some(e) = manifest_mismatch(&m.root, c.cni_manifest.as_deref(), c.pod_subnet.as_deref()) {
            errs.push(e);
        }
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
    };
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
    })
}

/// Row 35 at the point of use: the CNI manifest the init node applies after
/// `kubeadm init` must give pods addresses inside the `networking.podSubnet`
/// kubeadm gets ([`crate::contract::cni::check`]); a mismatch is refused before
/// kubeadm runs, so nothing is half-done. A manifest that cannot be read is
/// left to `after_init`, which says so and does not apply it.
fn manifest_mismatch(root: &Path, manifest: Option<&str>, pod_subnet: Option<&str>) -> Option<String> {
    let manifest = manifest?;
    let path = paths::contained(root, manifest).ok()?;
    let text = std::fs::read_to_string(&path).ok()?;
    let subnet = pod_subnet.unwrap_or(DEFAULT_POD_SUBNET);
    let errors = crate::contract::cni::check(&text, subnet).err()?;
    Some(format!(
        "[cluster] cni_manifest {manifest}: {}; the pod network would not match [cluster] pod_subnet {subnet}: fix the manifest (and `kiln pin` it again) or set pod_subnet (`kiln cluster --pod-subnet`), then regenerate user-data with `kiln userdata`",
        crate::contract::cni::at(manifest, &errors)
    ))
}

/// PEM text inline, or read from a path on the node: resolved under root
/// (`paths::contained`: no `..` or symlink leads out of it), at most 1 MiB.
fn pem(root: &Path, v: &str) -> Result<String, String> {
    if v.trim_start().starts_with("-----BEGIN") {
        return Ok(v.to_string());
    }
    let path = paths::contained(root, v).map_err(|e| format!("[pki] {e}"))?;
    let bytes = paths::read_capped(&path, crate::contract::node::MAX_TEXT).map_err(|e| format!("[pki] {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("[pki] {}: not PEM text", crate::http::escape(v)))
}

/// The success state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// `/etc/machine-id` of the machine that bootstrapped.
    pub machine_id: String,
    /// Platform instance id, when known.
    pub instance_id: Option<String>,
    /// Role.
    pub role: String,
    /// Node name.
    pub node_name: String,
    /// Kubernetes version.
    pub kubernetes_version: String,
    /// Seconds since the epoch when it succeeded.
    pub time: u64,
}

/// The largest state file read: kiln writes about 300 bytes.
pub const MAX_STATE: usize = 64 << 10;

/// Written before the first kubeadm attempt on a machine (the machine id) and kept:
/// kubeadm's files beside it and no [`STATE_PATH`] are kiln's own interrupted attempt
/// (reset and retry), without it someone else's bootstrap (left alone).
pub const STARTED_PATH: &str = "/var/lib/kiln/started";

/// Reads the state file: `Ok(None)` when there is none; an error when it is there
/// but is not kiln's state (empty, garbage, larger than [`MAX_STATE`], not a file):
/// then whether this machine joined is unknown.
pub fn load_state(root: &Path) -> Result<Option<State>, String> {
    let path = files::resolve(root, STATE_PATH).map_err(|e| format!("{STATE_PATH}: {e}"))?;
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let bytes = paths::read_file_capped(&path, MAX_STATE).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            format!("{}: empty", path.display())
        } else {
            format!("{}: not kiln's state ({e})", path.display())
        }
    })
}

/// The state file, if there is one and it is kiln's ([`load_state`]).
pub fn read_state(root: &Path) -> Option<State> {
    load_state(root).ok().flatten()
}

/// Finds an executable: the image's bin dir (under root) first, then `PATH`.
pub fn which(root: &Path, bin_dir: &str, name: &str) -> PathBuf {
    let mut dirs = vec![under(root, bin_dir)];
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file()).unwrap_or_else(|| PathBuf::from(name))
}

/// Removes secrets from text before it is printed or stored.
pub fn redact(text: &str, r: &Resolved) -> String {
    let mut t = text.to_string();
    if let Some((_, secret)) = r.kubeadm.token.split_once('.') {
        if !secret.is_empty() {
            t = t.replace(secret, "<redacted>");
        }
    }
    t
}

/// A syslog-priority line for journald (`<3>` error, `<4>` warning, `<6>` info).
/// Control characters other than the line ends are escaped; a closed stdout
/// is ignored (logging never stops a bootstrap).
pub fn log(prio: u8, msg: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for line in msg.lines() {
        let _ = writeln!(out, "<{prio}>{}", crate::http::escape(line));
    }
}

/// `plan`: the resolved node and what `run` would do, secrets redacted.
pub fn plan(m: &Machine, r: &Resolved) -> String {
    let k = &r.kubeadm;
    let verb = if k.role == Role::Init { "init" } else { "join" };
    let mut s = format!(
        "node {name} ({role}) ip {ip}\n  sources   {src}\n  platform  {plat}\n  cluster   {cl} at {ep}, Kubernetes {v} ({api})\n  runtime   {sock} (cgroup driver {cg})\n  swap      {swap:?}\n  machine   {mid}\n",
        name = k.node_name,
        role = k.role.as_str(),
        ip = k.node_ip,
        src = if r.sources.is_empty() { "(baked defaults only)".to_string() } else { r.sources.join(" < ") },
        plat = r.platform.as_deref().unwrap_or("none"),
        cl = k.cluster_name,
        ep = k.control_plane_endpoint,
        v = k.kubernetes_version,
        api = kubeadm::api_version(k.minor),
        sock = k.cri_socket,
        cg = k.cgroup_driver,
        swap = r.swap,
        mid = if m.machine_id.is_empty() { "(no /etc/machine-id)" } else { &m.machine_id },
    );
    for u in &r.unresolved {
        s.push_str(&format!("  unresolved {u}\n"));
    }
    s.push_str("commands:\n");
    for c in commands(r) {
        s.push_str(&format!("  {c}\n"));
    }
    let patch = format!("{PATCHES_DIR}/{}", kubeadm::KUBELET_PATCH_FILE);
    s.push_str("\nkubeadm config:\n");
    s.push_str(&kubeadm::render_redacted(k));
    s.push_str(&format!(
        "\nkubelet settings of this node ({patch}; kubeadm {verb} applies it to /var/lib/kubelet/config.yaml):\n{}\n",
        serde_json::to_string_pretty(&kubeadm::kubelet_patch(k)).unwrap_or_default()
    ));
    s.push_str(&format!(
        "kubelet flags (kubeletExtraArgs -> /var/lib/kubelet/kubeadm-flags.env): {}\n",
        kubelet_flags(k).join(" ")
    ));
    s
}

/// What `run` would do, one step a line (file names only, never their contents).
fn commands(r: &Resolved) -> Vec<String> {
    let verb = if r.kubeadm.role == Role::Init { "init" } else { "join" };
    let mut c: Vec<String> = r.pki.keys().map(|f| format!("write /etc/kubernetes/pki/{f}")).collect();
    c.push(format!("write {CONFIG_PATH} (0600)"));
    c.push(format!("write {PATCHES_DIR}/{}", kubeadm::KUBELET_PATCH_FILE));
    c.push(format!("kubeadm {verb} --config {CONFIG_PATH}"));
    c
}

/// The kubelet flags kubeadm writes to `kubeadm-flags.env`, as `--name=value`.
fn kubelet_flags(k: &kubeadm::Inputs) -> Vec<String> {
    match kubeadm::documents(k).first().map(|d| d["nodeRegistration"]["kubeletExtraArgs"].clone()) {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|x| format!("--{}={}", x["name"].as_str().unwrap_or(""), x["value"].as_str().unwrap_or("")))
            .collect(),
        Some(serde_json::Value::Object(o)) => {
            o.iter().map(|(n, v)| format!("--{n}={}", v.as_str().unwrap_or(""))).collect()
        }
        _ => Vec::new(),
    }
}

/// `plan --json` for a node that did not resolve: the keys of [`plan_json`], `ok`
/// false, `resolve_errors` saying why, every other key null.
pub fn plan_json_unresolved(errors: &[String]) -> serde_json::Value {
    let mut v = serde_json::json!({ "ok": false, "resolve_errors": errors });
    for key in PLAN_KEYS {
        v[key] = serde_json::Value::Null;
    }
    v
}

/// `plan --json`: the same as [`plan`] as one JSON document, secrets redacted, with
/// the same keys whether or not the node resolves (see [`plan_json_unresolved`]).
pub fn plan_json(m: &Machine, r: &Resolved) -> serde_json::Value {
    use serde_json::json;
    let k = &r.kubeadm;
    json!({
        "ok": true,
        "resolve_errors": [],
        "unresolved": r.unresolved,
        "node": { "name": k.node_name, "role": k.role.as_str(), "ip": k.node_ip },
        "sources": r.sources,
        "platform": r.platform,
        "instance_id": r.instance_id,
        "machine_id": (!m.machine_id.is_empty()).then_some(&m.machine_id),
        "cluster": {
            "name": k.cluster_name,
            "control_plane_endpoint": k.control_plane_endpoint,
            "kubernetes_version": k.kubernetes_version,
            "kubeadm_api_version": kubeadm::api_version(k.minor),
            "pod_subnet": k.pod_subnet,
            "service_subnet": k.service_subnet,
            "dns_domain": k.dns_domain,
        },
        "runtime": { "socket": k.cri_socket, "cgroup_driver": k.cgroup_driver },
        "swap": r.swap,
        "commands": commands(r),
        "kubeadm_config": kubeadm::documents_redacted(k),
        "kubelet_patch": {
            "path": format!("{PATCHES_DIR}/{}", kubeadm::KUBELET_PATCH_FILE),
            "settings": kubeadm::kubelet_patch(k),
        },
        "kubelet_flags": kubelet_flags(k),
    })
}

/// The keys of [`plan_json`]'s document besides `ok` and `resolve_errors`.
const PLAN_KEYS: [&str; 13] = [
    "unresolved",
    "node",
    "sources",
    "platform",
    "instance_id",
    "machine_id",
    "cluster",
    "runtime",
    "swap",
    "commands",
    "kubeadm_config",
    "kubelet_patch",
    "kubelet_flags",
];

/// Exit codes of `run`.
pub mod exit {
    /// Joined (or already joined on this machine).
    pub const OK: u8 = 0;
    /// kubeadm failed after every attempt.
    pub const FAILED: u8 = 1;
    /// The node description is incomplete or wrong.
    pub const CONFIG: u8 = 2;
    /// This machine may be in a cluster already and kiln cannot tell that it put it
    /// there (a `state.json` that is not kiln's, or kubeadm's files without kiln's
    /// state or start record): nothing was done. `kiln-firstboot reset`, then `run`,
    /// starts over.
    pub const NOT_KILNS: u8 = 3;
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Stops without touching the machine ([`exit::NOT_KILNS`]), saying why in the journal
/// and in the failure marker.
fn refuse(root: &Path, reason: &str) -> u8 {
    log(3, &format!("kiln-firstboot: nothing done: {reason}"));
    let _ = files::write(root, FAILED_PATH, format!("{reason}\n").as_bytes(), 0o644);
    exit::NOT_KILNS
}

fn fail(root: &Path, reason: &str) -> u8 {
    log(3, &format!("kiln-firstboot: bootstrap failed: {reason}"));
    let _ = files::write(root, FAILED_PATH, format!("{reason}\n").as_bytes(), 0o644);
    exit::FAILED
}

/// `run`: once per machine, unattended.
pub fn run(m: &Machine, opts: &Options) -> u8 {
    let root = &m.root;
    let state = match load_state(root) {
        Ok(s) => s,
        Err(e) => {
            return refuse(
                root,
                &format!(
                    "{e}: this machine may have joined already, so kubeadm is not run again; if it is not in a cluster (or should join afresh), `kiln-firstboot reset` removes the state with kubeadm's files, then `kiln-firstboot run`"
                ),
            )
        }
    };
    if let Some(s) = state.clone() {
        if !m.machine_id.is_empty() && s.machine_id == m.machine_id {
            log(
                6,
                &format!("kiln-firstboot: this machine joined as {} ({}) already; nothing to do", s.node_name, s.role),
            );
            return exit::OK;
        }
        log(4, "kiln-firstboot: state from another machine (a cloned disk or snapshot): bootstrapping this one");
    }
    let r = match resolve(m, opts) {
        Ok(r) => r,
        Err(errs) => {
            let errs: Vec<String> = errs.iter().map(|e| crate::http::escape(e)).collect();
            for e in &errs {
                log(3, &format!("kiln-firstboot: {e}"));
            }
            let _ = files::write(root, FAILED_PATH, errs.join("\n").as_bytes(), 0o644);
            return exit::CONFIG;
        }
    };
    // Where this node's settings came from, for whoever reads the journal.
    log(
        6,
        &format!(
            "kiln-firstboot: node {} ({}) ip {}; sources: {}",
            r.kubeadm.node_name,
            r.kubeadm.role.as_str(),
            r.kubeadm.node_ip,
            if r.sources.is_empty() { "(baked defaults only)".to_string() } else { r.sources.join(" < ") }
        ),
    );
    if r.kubeadm.unsafe_skip_ca_verification {
        log(
            4,
            "kiln-firstboot: unsafe_skip_ca_verification is set: this node will trust any API server at the endpoint",
        );
    }
    let kubeadm_bin = which(root, &r.image.bin_dir, "kubeadm");
    let reset = |why: &str| {
        log(6, &format!("kiln-firstboot: kubeadm reset -f ({why})"));
        let (_, out) = run_bounded(Command::new(&kubeadm_bin).args(["reset", "-f"]), opts.reset_timeout);
        log(6, &redact(&out, &r));
    };
    // Leftovers of an interrupted attempt (power cut) without success state: kiln's own
    // when it started kubeadm on this disk (or the state is another machine's, a clone);
    // otherwise this machine was bootstrapped without kiln and is left as it is.
    let leftover =
        ["/etc/kubernetes/kubelet.conf", "/etc/kubernetes/admin.conf", "/etc/kubernetes/manifests/kube-apiserver.yaml"]
            .into_iter()
            .find(|p| files::resolve(root, p).map(|p| std::fs::symlink_metadata(p).is_ok()).unwrap_or(false));
    if let Some(file) = leftover {
        let kilns = state.is_some()
            || files::resolve(root, STARTED_PATH).map(|p| std::fs::symlink_metadata(p).is_ok()).unwrap_or(false);
        if !kilns {
            return refuse(
                root,
                &format!(
                    "{file} exists but kiln-firstboot never ran kubeadm here (no {STATE_PATH}, no {STARTED_PATH}): this machine was bootstrapped some other way and is left alone; to bootstrap it with kiln instead, `kiln-firstboot reset` (kubeadm reset -f: it leaves its cluster), then `kiln-firstboot run`"
                ),
            );
        }
        reset("an earlier attempt left kubeadm state behind");
    }
    let _ = files::remove(root, FAILED_PATH);
    fix_host(m, &r);
    let checks = crate::preflight::checks(m, &r);
    for c in &checks {
        match c.level {
            crate::preflight::Level::Error => log(3, &format!("kiln-firstboot: preflight [{}]: {}", c.id, c.message)),
            crate::preflight::Level::Warning => log(4, &format!("kiln-firstboot: preflight [{}]: {}", c.id, c.message)),
            crate::preflight::Level::Ok => {}
        }
    }
    if crate::preflight::has_errors(&checks) {
        let reasons: Vec<String> = checks
            .iter()
            .filter(|c| c.level == crate::preflight::Level::Error)
            .map(|c| format!("[{}] {}", c.id, c.message))
            .collect();
        return fail(root, &format!("preflight: {}", reasons.join("; ")));
    }
    let config = match files::write(root, CONFIG_PATH, kubeadm::render(&r.kubeadm).as_bytes(), 0o600) {
        Ok(at) => at,
        Err(e) => return fail(root, &format!("writing {CONFIG_PATH}: {e}")),
    };
    let patch = kubeadm::kubelet_patch(&r.kubeadm);
    let patch_path = format!("{PATCHES_DIR}/{}", kubeadm::KUBELET_PATCH_FILE);
    let patch_text = serde_json::to_string_pretty(&patch).unwrap_or_default() + "\n";
    if let Err(e) = files::write(root, &patch_path, patch_text.as_bytes(), 0o644) {
        return fail(root, &format!("writing {patch_path}: {e}"));
    }
    if r.kubeadm.role != Role::Init {
        if let Err(e) = crate::preflight::wait_for_endpoint(&r.kubeadm.control_plane_endpoint, opts.wait) {
            return fail(root, &e);
        }
    }
    // kubelet's ExecCondition lets kubelet start while this marker names this machine:
    // kubeadm restarts kubelet from inside this run.
    if let Err(e) = files::write(root, crate::host::BOOTSTRAPPING, format!("{}\n", m.machine_id).as_bytes(), 0o644) {
        return fail(root, &format!("writing {}: {e}", crate::host::BOOTSTRAPPING));
    }
    if let Err(e) = files::write(root, STARTED_PATH, format!("{}\n", m.machine_id).as_bytes(), 0o644) {
        return fail(root, &format!("writing {STARTED_PATH}: {e}"));
    }
    relabel(m, &r);
    let code = attempts(m, opts, &r, &kubeadm_bin, &config, &reset);
    let _ = files::remove(root, crate::host::BOOTSTRAPPING);
    code
}

/// kubeadm init|join, bounded attempts with a reset between them.
fn attempts(m: &Machine, opts: &Options, r: &Resolved, kubeadm_bin: &Path, config: &Path, reset: &dyn Fn(&str)) -> u8 {
    let root = &m.root;
    let verb = if r.kubeadm.role == Role::Init { "init" } else { "join" };
    let mut delay = opts.backoff;
    let mut last = String::new();
    for attempt in 1..=opts.attempts.max(1) {
        // Written every attempt: `kubeadm reset` deletes /etc/kubernetes/pki, and an
        // init without the cluster's CA would generate a new one.
        for (file, text) in &r.pki {
            let mode = if file.ends_with(".key") { 0o600 } else { 0o644 };
            if let Err(e) = files::write(root, &format!("/etc/kubernetes/pki/{file}"), text.as_bytes(), mode) {
                return fail(root, &format!("writing /etc/kubernetes/pki/{file}: {e}"));
            }
        }
        log(6, &format!("kiln-firstboot: kubeadm {verb} (attempt {attempt} of {})", opts.attempts.max(1)));
        let mut cmd = Command::new(kubeadm_bin);
        cmd.arg(verb).arg("--config").arg(config);
        if verb == "init" {
            cmd.arg("--skip-token-print");
        }
        let started = now();
        let (ok, out) = run_bounded(&mut cmd, opts.kubeadm_timeout);
        let out = redact(&out, r);
        let _ = files::write(root, KUBEADM_LOG, out.as_bytes(), 0o600);
        for line in out.lines() {
            log(6, &format!("kubeadm: {line}"));
        }
        if ok {
            let state = State {
                machine_id: m.machine_id.clone(),
                instance_id: r.instance_id.clone(),
                role: r.kubeadm.role.as_str().into(),
                node_name: r.kubeadm.node_name.clone(),
                kubernetes_version: r.kubeadm.kubernetes_version.clone(),
                time: now(),
            };
            let json = serde_json::to_string_pretty(&state).unwrap_or_default();
            if let Err(e) = files::write(root, STATE_PATH, json.as_bytes(), 0o644) {
                return fail(root, &format!("writing {STATE_PATH}: {e}"));
            }
            let _ = files::write(root, CAPI_SENTINEL, b"", 0o644);
            // An earlier attempt's evidence no longer describes this node (`doctor` reads it).
            let _ = files::remove(root, EVIDENCE_LOG);
            if r.kubeadm.role == Role::Init {
                after_init(m, r);
            }
            log(
                6,
                &format!("kiln-firstboot: {} joined the cluster as {}", r.kubeadm.node_name, r.kubeadm.role.as_str()),
            );
            return exit::OK;
        }
        // kubeadm only says the kubelet is unhealthy; the cause is in kubelet's journal
        // and the containers (troubleshooting guide: journalctl -u kubelet, crictl ps -a).
        let more = evidence(m, r, started);
        let _ = files::write(root, EVIDENCE_LOG, redact(&more, r).as_bytes(), 0o600);
        let found = diagnose::diagnose(&format!("{out}\n{more}"));
        for d in &found {
            log(3, &format!("kiln-firstboot: diagnosis [{}]: {}", d.id, d.cause));
            log(3, &format!("kiln-firstboot: fix: {}", d.fix));
        }
        last = match found.first() {
            Some(d) => format!("kubeadm {verb} failed: {} (fix: {})", d.cause, d.fix),
            None => format!(
                "kubeadm {verb} failed: {}",
                out.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output")
            ),
        };
        if attempt < opts.attempts.max(1) {
            reset("before retrying");
            std::thread::sleep(delay);
            delay = delay.saturating_mul(2);
        }
    }
    fail(root, &last)
}

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

/// The most CSRs `approve-csrs` looks at in one run.
pub const APPROVE_MAX: usize = 500;

/// `kiln-firstboot approve-csrs` on a control plane (row 37, prevent): every
/// pending `kubernetes.io/kubelet-serving` CSR that [`crate::csr::check`] allows is
/// approved with `kubectl certificate approve` (admin.conf); the others are left
/// pending, each with the reason. Bounded by [`APPROVE_TIMEOUT`] as a whole and
/// [`APPROVE_MAX`] requests. Returns whether kubectl answered, and one line each.
pub fn approve_csrs(m: &Machine) -> (bool, Vec<String>) {
    let root = &m.root;
    let deadline = Instant::now() + APPROVE_TIMEOUT;
    let left = || deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(30));
    let admin = under(root, "/etc/kubernetes/admin.conf");
    if !admin.is_file() {
        return (false, vec![format!("{}: not found: approve-csrs runs on a control plane", admin.display())]);
    }
    let bin = crate::sources::image_defaults(root).map(|i| i.bin_dir).unwrap_or_else(|_| "/opt/bin".into());
    let kubectl = which(root, &bin, "kubectl");
    let get = |args: &[&str]| -> Result<serde_json::Value, String> {
        let (ok, out, err) = crate::runner::run_bounded_apart(
            Command::new(&kubectl).arg("--kubeconfig").arg(&admin).args(args).args(["-o", "json"]),
            left(),
        );
        if !ok {
            return Err(format!("kubectl {}: {}", args.join(" "), err.trim()));
        }
        serde_json::from_str(&out).map_err(|e| format!("kubectl {}: not JSON: {e}", args.join(" ")))
    };
    let list = match get(&["get", "certificatesigningrequests"]) {
        Ok(l) => l,
        Err(e) => return (false, vec![e]),
    };
    let mut report = Vec::new();
    let mut nodes: BTreeMap<String, Option<crate::csr::Addresses>> = BTreeMap::new();
    let items = list["items"].as_array().cloned().unwrap_or_default();
    for csr in items.iter().take(APPROVE_MAX) {
        let name = csr["metadata"]["name"].as_str().unwrap_or_default();
        // metadata.name is a DNS subdomain (apimachinery's IsDNS1123Subdomain,
        // `validate::names::dns1123_subdomain`): never an option to kubectl.
        let name_ok = crate::validate::names::dns1123_subdomain(name).is_ok();
        if !name_ok || csr["spec"]["signerName"] != crate::csr::KUBELET_SERVING || !crate::csr::pending(csr) {
            continue;
        }
        // The requester's Node, read once per node name.
        let requester = csr["spec"]["username"]
            .as_str()
            .and_then(|u| u.strip_prefix("system:node:"))
            .filter(|n| crate::validate::names::node_name(n).is_ok());
        if let Some(n) = requester {
            if !nodes.contains_key(n) {
                let v = get(&["get", "node", n]).ok().map(|v| crate::csr::addresses(&v));
                nodes.insert(n.to_string(), v);
            }
        }
        let verdict = crate::csr::check(csr, &|n| nodes.get(n).cloned().flatten());
        match verdict {
            Ok(node) => {
                let (ok, out) = run_bounded(
                    Command::new(&kubectl).arg("--kubeconfig").arg(&admin).args(["certificate", "approve", name]),
                    left(),
                );
                report.push(if ok {
                    format!("approved {name} (kubelet serving certificate of node {node})")
                } else {
                    format!("approving {name} failed: {}", out.trim())
                });
            }
            Err(why) => report.push(format!("left {name} pending: {why}")),
        }
        if Instant::now() >= deadline {
            report.push(format!("stopped after {} s", APPROVE_TIMEOUT.as_secs()));
            break;
        }
    }
    (true, report)
}

/// What kubelet's journal and the runtime say, bounded in time and size.
pub const EVIDENCE_LOG: &str = "/var/log/kiln/evidence.log";

/// A helper program for the host itself (journal, runtime, network): on the real
/// root from the image's bin dir or `PATH`; on a scratch root only from the root's
/// own directories, so a test never reads or changes the host through it.
pub fn host_tool(root: &Path, bin_dir: &str, name: &str) -> Option<PathBuf> {
    if root == Path::new("/") {
        let p = which(root, bin_dir, name);
        return p.is_absolute().then_some(p);
    }
    [bin_dir, "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| under(root, d).join(name))
        .find(|p| p.is_file())
}

/// How many lines of a container's log [`evidence`] reads (`crictl logs --tail`).
pub const CONTAINER_LOG_LINES: u32 = 100;

/// The bound on each evidence program's run and on the text kept of it.
const EVIDENCE_TIME: Duration = Duration::from_secs(10);
const EVIDENCE_BYTES: usize = 64 << 10;

/// The last [`EVIDENCE_BYTES`] of `s` (the newest lines are at the end).
fn tail(s: String) -> String {
    if s.len() <= EVIDENCE_BYTES {
        return s;
    }
    let mut cut = s.len() - EVIDENCE_BYTES;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    s[cut..].to_string()
}

/// A container id as `crictl ps -q` prints it (hex; a full id is 64 characters):
/// anything else is not passed on as an argument.
fn container_id(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then_some(s)
}

/// What the troubleshooting guide reads when kubeadm only says "the kubelet is not
/// healthy" (row 42): kubelet's journal since `since` (seconds since the epoch: this
/// attempt's start, not an earlier attempt or boot), `crictl ps -a`, and the log tail
/// of the newest kube-proxy container (`crictl ps -a --name kube-proxy -q`, then
/// `crictl logs --tail` [`CONTAINER_LOG_LINES`]: kube-proxy falling back to
/// loopback before the node has an address is only in its own log, row 25). Each
/// program is bounded to 10 s, each text to its last 64 KiB.
pub fn evidence(m: &Machine, r: &Resolved, since: u64) -> String {
    let mut out = String::new();
    let bin = &r.image.bin_dir;
    let run = |cmd: &mut Command| tail(run_bounded(cmd, EVIDENCE_TIME).1);
    if let Some(j) = host_tool(&m.root, bin, "journalctl") {
        let o = run(Command::new(j)
            .args(["-u", "kubelet", "--no-pager", "-n", "200", "-o", "cat", "--since"])
            .arg(format!("@{since}")));
        out.push_str(&format!("--- journalctl -u kubelet --since @{since} (last 200 lines)\n{o}\n"));
    }
    if let Some(c) = host_tool(&m.root, bin, "crictl") {
        let crictl = || {
            let mut cmd = Command::new(&c);
            cmd.arg("--runtime-endpoint").arg(&r.kubeadm.cri_socket);
            cmd
        };
        let o = run(crictl().args(["ps", "-a"]));
        out.push_str(&format!("--- crictl ps -a\n{o}\n"));
        // Newest first (cri-tools cmd/crictl/container.go containerByCreated sorts by
        // CreatedAt, descending): the current kube-proxy.
        let (ok, ids) = run_bounded(crictl().args(["ps", "-a", "--name", "kube-proxy", "-q"]), EVIDENCE_TIME);
        if let Some(id) = ids.lines().next().filter(|_| ok).and_then(container_id) {
            let o = run(crictl().args(["logs", "--tail", &CONTAINER_LOG_LINES.to_string(), id]));
            out.push_str(&format!("--- crictl logs --tail {CONTAINER_LOG_LINES} {id} (kube-proxy)\n{o}\n"));
        }
    }
    out
}

/// Where the init node keeps the `kubeadm kubeconfig user` config and the admin
/// user's RBAC objects (0600, on tmpfs: nothing of it is needed after boot).
pub const USER_CONFIG_PATH: &str = "/run/kiln/kubeconfig-user.json";
/// The admin user's ClusterRoleBindings, applied with admin.conf.
pub const USER_RBAC_PATH: &str = "/run/kiln/admin-user-rbac.json";

/// On the init node: `/etc/kubernetes/admin.conf` stays root's alone (0600), the
/// configured user gets a kubeconfig of their own (row 40), and the pinned CNI
/// manifest is applied (CoreDNS stays Pending until a pod network exists).
fn after_init(m: &Machine, r: &Resolved) {
    let root = &m.root;
    let admin = under(root, "/etc/kubernetes/admin.conf");
    // kubeadm writes it 0600 (kubeconfig phase); nothing kiln does widens it.
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o600)) {
        log(4, &format!("kiln-firstboot: {}: {e}", admin.display()));
    }
    if let Some(manifest) = &r.cni_manifest {
        match paths::contained(root, manifest) {
            Ok(path) => {
                let kubectl = which(root, &r.image.bin_dir, "kubectl");
                let (ok, out) = run_bounded(
                    Command::new(kubectl).arg("--kubeconfig").arg(&admin).arg("apply").arg("-f").arg(path),
                    Duration::from_secs(300),
                );
                log(if ok { 6 } else { 4 }, &format!("kiln-firstboot: kubectl apply -f {manifest}: {}", out.trim()));
            }
            Err(e) => log(4, &format!("kiln-firstboot: cni_manifest {e}; not applied")),
        }
    }
    if let Some(user) = &r.admin_user {
        match user_kubeconfig(m, r, user, &admin) {
            Ok(()) => log(
                6,
                &format!(
                    "kiln-firstboot: wrote ~{user}/.kube/config (0600): client certificate CN={user}, bound to ClusterRole {} ([cluster] admin_role)",
                    r.admin_role.as_str()
                ),
            ),
            Err(e) => log(4, &format!("kiln-firstboot: {e}")),
        }
    }
}

/// The admin user's own kubeconfig (row 40; the kubeadm guide: admin.conf is the
/// superuser, hand out per-user credentials): `kubeadm kubeconfig user --client-name
/// <user>` signs a client certificate with CN `<user>` and no organisation (so no
/// group: not `kubeadm:cluster-admins`, not `system:masters`) with the cluster CA on
/// disk, kubectl binds that user to [`Resolved::admin_role`] with admin.conf, and
/// the kubeconfig lands in the user's home (from `/etc/passwd`, under the root),
/// 0600 and theirs. Each program bounded to 60 s.
fn user_kubeconfig(m: &Machine, r: &Resolved, user: &str, admin: &Path) -> Result<(), String> {
    let root = &m.root;
    // The home directory comes from /etc/passwd: resolved under root, never out of it.
    let passwd = std::fs::read_to_string(under(root, "/etc/passwd")).unwrap_or_default();
    let (dest, uid, gid) = paths::admin_kubeconfig(root, &passwd, user)?;
    let pki = under(root, "/etc/kubernetes/pki");
    let config = kubeadm::user_kubeconfig_config(&r.kubeadm, &pki.to_string_lossy());
    let config = files::write(root, USER_CONFIG_PATH, config.as_bytes(), 0o600)
        .map_err(|e| format!("writing {USER_CONFIG_PATH}: {e}"))?;
    let kubeadm_bin = which(root, &r.image.bin_dir, "kubeadm");
    let (ok, conf, err) = crate::runner::run_bounded_apart(
        Command::new(kubeadm_bin).args(["kubeconfig", "user", "--client-name", user, "--config"]).arg(&config),
        Duration::from_secs(60),
    );
    let last = |t: &str| t.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output").trim().to_string();
    // kubeadm prints the kubeconfig on stdout (kubeconfig phase, WriteKubeConfigWithClientCert).
    // Its stdout may hold a private key: only stderr is ever quoted.
    if !ok || !conf.starts_with("apiVersion: v1") || !conf.contains("client-key-data:") {
        let why = if ok { "it printed no kubeconfig with a client key".to_string() } else { last(&err) };
        return Err(format!(
            "admin_user {user}: `kubeadm kubeconfig user --client-name {user}` failed ({why}); no kubeconfig written: on this node run it by hand with {USER_CONFIG_PATH} and copy the output to ~{user}/.kube/config"
        ));
    }
    let rbac = serde_json::to_string_pretty(&kubeadm::admin_user_rbac(user, r.admin_role)).unwrap_or_default();
    let rbac = files::write(root, USER_RBAC_PATH, rbac.as_bytes(), 0o600)
        .map_err(|e| format!("writing {USER_RBAC_PATH}: {e}"))?;
    let kubectl = which(root, &r.image.bin_dir, "kubectl");
    let (ok, out) = run_bounded(
        Command::new(kubectl).arg("--kubeconfig").arg(admin).arg("apply").arg("-f").arg(&rbac),
        Duration::from_secs(60),
    );
    if !ok {
        // The kubeconfig is still written: the user authenticates, and the binding can
        // be applied again by hand.
        log(
            4,
            &format!(
                "kiln-firstboot: admin_user {user}: binding to ClusterRole {} failed ({}): run `kubectl --kubeconfig /etc/kubernetes/admin.conf apply -f {USER_RBAC_PATH}` as root",
                r.admin_role.as_str(),
                last(&out)
            ),
        );
    }
    let dest = files::node_path(root, &dest).map_err(|e| format!("admin_user {user}: {e}"))?;
    files::write_owned(root, &dest, conf.as_bytes(), 0o600, Some((uid, gid)))
        .map(|_| ())
        .map_err(|e| format!("admin_user {user}: {e}"))
}

/// With SELinux enabled, the directories kiln writes get the policy's labels before
/// kubeadm runs (`restorecon -R`, bounded), logged.
fn relabel(m: &Machine, r: &Resolved) {
    let (root, bin) = (&m.root, &r.image.bin_dir);
    let runner = |name: &str, args: &[&str]| {
        run_bounded(Command::new(which(root, bin, name)).args(args), Duration::from_secs(60))
    };
    if let Some(f) = crate::host::relabel(root, &crate::host::kiln_paths(&r.kubeadm.flex_volume_dir), &runner) {
        log(4, &format!("kiln-firstboot: {}", f.message));
    }
}

/// Fixes what the image can before the checks: modules, sysctls, swap (now, and
/// on every later boot by masking what would turn swap back on).
fn fix_host(m: &Machine, r: &Resolved) {
    let root = &m.root;
    let bin = r.image.bin_dir.clone();
    let runner = |name: &str, args: &[&str]| {
        run_bounded(Command::new(which(root, &bin, name)).args(args), Duration::from_secs(60))
    };
    let limited = r.swap == SwapPolicy::Limited;
    for f in crate::host::fix_and_check(root, limited, &runner) {
        log(if f.fatal { 3 } else { 4 }, &format!("kiln-firstboot: {}", f.message));
    }
    if !limited {
        match crate::host::mask_swap(root) {
            Ok(units) if !units.is_empty() => {
                log(6, &format!("kiln-firstboot: swap stays off on later boots: masked {}", units.join(", ")))
            }
            Ok(_) => {}
            Err(e) => log(4, &format!("kiln-firstboot: masking swap units: {e}")),
        }
    }
}
