//! Plan: a resolved node → the ordered steps `run` takes ([`steps`]), each a
//! name, a line for a person and what `run` does for it ([`Action`]). `plan`
//! prints them (with the node and its kubeadm config, secrets redacted); `run`
//! executes the very same list, logging each step's name as it starts. A step that
//! will not run on this node (no preflight fixes for swap that stays, no CNI apply
//! on a joining node) is not in the list.

use crate::contract::node::{Role, SwapPolicy};
use crate::evidence::EVIDENCE_LOG;
use crate::host::{self, Selinux, BOOTSTRAPPING};
use crate::kubeadm;
use crate::machine::Machine;
use crate::resolve::{Resolved, PATCHES_DIR};
use crate::state::{self, State, CAPI_SENTINEL, FAILED_PATH, STARTED_PATH, STATE_PATH};
use crate::validate::kubeadm::humanize;

/// The kubeadm config file.
pub const CONFIG_PATH: &str = "/run/kiln/kubeadm.json";

/// kubeadm's files that an earlier attempt (or another bootstrap) leaves behind.
const LEFTOVERS: [&str; 3] =
    ["/etc/kubernetes/kubelet.conf", "/etc/kubernetes/admin.conf", "/etc/kubernetes/manifests/kube-apiserver.yaml"];

/// What `run` does for a step (the `run` module executes each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `kubeadm reset -f`: kiln's own interrupted attempt left kubeadm's files.
    ResetLeftovers,
    /// An earlier run's failure marker removed.
    ClearFailure,
    /// Kernel modules, sysctls and (unless swap is allowed) swap, fixed now.
    FixHost,
    /// The units that would turn swap on at a later boot, masked.
    MaskSwap,
    /// kubeadm's preflight checks and kiln's own; an error stops the run.
    Preflight,
    /// The image's baked container images imported into containerd (when it carries
    /// any), each checked against its pinned digest.
    ImportImages,
    /// The kubeadm config written.
    WriteConfig,
    /// This node's kubelet patch written.
    WritePatch,
    /// A joining node waits for the control plane to answer.
    WaitForEndpoint,
    /// The marker that lets kubelet start while this machine bootstraps.
    MarkBootstrapping,
    /// The record that kiln ran kubeadm on this disk.
    MarkStarted,
    /// SELinux labels on kiln's directories.
    Relabel,
    /// The CA material, then `kubeadm init|join`, retried with a reset between.
    Kubeadm,
    /// The success state, Cluster API's sentinel; an earlier attempt's evidence removed.
    RecordSuccess,
    /// The init node keeps admin.conf root's alone (0600).
    ProtectAdminConf,
    /// The init node applies the pinned CNI manifest.
    ApplyCni,
    /// The init node gives the admin user a kubeconfig of their own.
    AdminKubeconfig,
    /// The bootstrapping marker removed.
    ClearBootstrapping,
}

impl Action {
    /// The step's name, as `plan` prints it and `run` logs it.
    pub fn name(self) -> &'static str {
        match self {
            Action::ResetLeftovers => "reset-leftovers",
            Action::ClearFailure => "clear-failure",
            Action::FixHost => "fix-host",
            Action::MaskSwap => "mask-swap",
            Action::Preflight => "preflight",
            Action::ImportImages => "import-images",
            Action::WriteConfig => "write-config",
            Action::WritePatch => "write-patch",
            Action::WaitForEndpoint => "wait-for-endpoint",
            Action::MarkBootstrapping => "mark-bootstrapping",
            Action::MarkStarted => "mark-started",
            Action::Relabel => "relabel",
            Action::Kubeadm => "kubeadm",
            Action::RecordSuccess => "record-success",
            Action::ProtectAdminConf => "protect-admin-conf",
            Action::ApplyCni => "apply-cni",
            Action::AdminKubeconfig => "admin-kubeconfig",
            Action::ClearBootstrapping => "clear-bootstrapping",
        }
    }

    /// `Some(a)`: this step runs even when an earlier step failed, once step `a` had
    /// started (the bootstrapping marker is removed however kubeadm ends).
    pub fn after_failure_of(self) -> Option<Action> {
        match self {
            Action::ClearBootstrapping => Some(Action::Kubeadm),
            _ => None,
        }
    }
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What `run` does.
    pub action: Action,
    /// What it does, for a person: files by name, never their contents.
    pub line: String,
}

impl Step {
    /// The step's name ([`Action::name`]).
    pub fn name(&self) -> &'static str {
        self.action.name()
    }
}

/// Why a run takes no step at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Halt {
    /// This machine joined already (its state): nothing to do.
    Joined(Box<State>),
    /// kiln cannot tell it did not put this machine in a cluster: nothing is done.
    Refuse(String),
}

impl Halt {
    /// One line saying why.
    pub fn line(&self) -> String {
        match self {
            Halt::Joined(s) => format!("this machine joined as {} ({}) already; nothing to do", s.node_name, s.role),
            Halt::Refuse(why) => format!("nothing done: {why}"),
        }
    }
}

/// Where a run starts, from the state file alone (before the node is resolved):
/// the state of another machine (a cloned disk), none, or a reason to stop.
pub fn begin(m: &Machine) -> Result<Option<State>, Halt> {
    let state = state::load_state(&m.root).map_err(|e| {
        Halt::Refuse(format!(
            "{e}: this machine may have joined already, so kubeadm is not run again; if it is not in a cluster (or should join afresh), `kiln-firstboot reset` removes the state with kubeadm's files, then `kiln-firstboot run`"
        ))
    })?;
    match state {
        Some(s) if !m.machine_id.is_empty() && s.machine_id == m.machine_id => Err(Halt::Joined(Box::new(s))),
        s => Ok(s),
    }
}

/// [`begin`], then [`steps`]: what `run` would do on this machine now.
pub fn for_machine(m: &Machine, r: &Resolved) -> Result<Vec<Step>, Halt> {
    let state = begin(m)?;
    steps(m, r, state.as_ref())
}

/// The steps `run` takes for `r` on this machine, in order, given the state
/// [`begin`] found: only those that will run here.
pub fn steps(m: &Machine, r: &Resolved, state: Option<&State>) -> Result<Vec<Step>, Halt> {
    let root = &m.root;
    let k = &r.kubeadm;
    let init = k.role == Role::Init;
    let mut s = Vec::new();
    let mut step = |action: Action, line: String| s.push(Step { action, line });
    // Leftovers of an interrupted attempt (power cut) without success state: kiln's own
    // when it started kubeadm on this disk (or the state is another machine's, a clone);
    // otherwise this machine was bootstrapped without kiln and is left as it is.
    if let Some(file) = LEFTOVERS.into_iter().find(|p| state::exists(root, p)) {
        if state.is_none() && !state::exists(root, STARTED_PATH) {
            return Err(Halt::Refuse(format!(
                "{file} exists but kiln-firstboot never ran kubeadm here (no {STATE_PATH}, no {STARTED_PATH}): this machine was bootstrapped some other way and is left alone; to bootstrap it with kiln instead, `kiln-firstboot reset` (kubeadm reset -f: it leaves its cluster), then `kiln-firstboot run`"
            )));
        }
        step(Action::ResetLeftovers, format!("kubeadm reset -f: an earlier attempt left {file} behind"));
    }
    step(Action::ClearFailure, format!("remove {FAILED_PATH}"));
    let limited = r.swap == SwapPolicy::Limited;
    step(
        Action::FixHost,
        format!(
            "load {}; set {} to 1; {}",
            host::MODULES.join(", "),
            host::SYSCTLS.map(|s| s.replace('/', ".")).join(", "),
            if limited { "swap may stay on ([node] swap = \"limited\")" } else { "turn swap off" }
        ),
    );
    if !limited {
        step(Action::MaskSwap, "mask the units that would turn swap on at a later boot".into());
    }
    step(Action::Preflight, "check the host as kubeadm's preflight does; an error stops here".into());
    // containerd answers (preflight found its socket) and kubeadm has not run yet.
    if let Some(line) = crate::images::import::plan_line(r) {
        step(Action::ImportImages, line);
    }
    step(Action::WriteConfig, format!("write {CONFIG_PATH} (0600)"));
    step(Action::WritePatch, format!("write {}", patch_paths(k).join(", ")));
    if !init {
        step(
            Action::WaitForEndpoint,
            format!(
                "wait for the control plane at {} to answer, at most {}",
                k.control_plane_endpoint,
                humanize(r.endpoint_wait)
            ),
        );
    }
    step(Action::MarkBootstrapping, format!("write {BOOTSTRAPPING}: kubelet may start while this machine bootstraps"));
    step(Action::MarkStarted, format!("write {STARTED_PATH}: kiln ran kubeadm on this disk"));
    let selinux = host::selinux(root);
    if selinux != Selinux::Disabled {
        step(Action::Relabel, format!("restorecon -R kiln's directories (SELinux {})", selinux.as_str()));
    }
    let pki: Vec<String> = r.pki.keys().map(|f| format!("/etc/kubernetes/pki/{f}")).collect();
    let pki = if pki.is_empty() { String::new() } else { format!("write {}; ", pki.join(", ")) };
    step(
        Action::Kubeadm,
        format!(
            "{pki}kubeadm {} --config {CONFIG_PATH}: at most --attempts times, kubeadm reset -f between; each attempt bounded by {} (kubeadm's own waits: {}; --kubeadm-timeout sets it)",
            verb(r),
            humanize(r.attempt_bound),
            humanize(kubeadm::kubeadm_waits(k)),
        ),
    );
    step(Action::RecordSuccess, format!("write {STATE_PATH} and {CAPI_SENTINEL}; remove {EVIDENCE_LOG}"));
    if init {
        step(Action::ProtectAdminConf, "keep /etc/kubernetes/admin.conf 0600 (root's alone)".into());
        if let Some(manifest) = &r.cni_manifest {
            step(Action::ApplyCni, format!("kubectl apply -f {manifest} (the pod network)"));
        }
        if let Some(user) = &r.admin_user {
            step(
                Action::AdminKubeconfig,
                format!(
                    "kubeadm kubeconfig user --client-name {user}, bound to ClusterRole {}: ~{user}/.kube/config (0600)",
                    r.admin_role.as_str()
                ),
            );
        }
    }
    step(Action::ClearBootstrapping, format!("remove {BOOTSTRAPPING}"));
    Ok(s)
}

/// The files kiln writes in `patches.directory` for this node: the kubelet patch,
/// then its static pod patches.
fn patch_paths(k: &kubeadm::Inputs) -> Vec<String> {
    std::iter::once(kubeadm::KUBELET_PATCH_FILE)
        .chain(k.static_pod_patches.keys().map(String::as_str))
        .map(|f| format!("{PATCHES_DIR}/{f}"))
        .collect()
}

/// `init` or `join`: the kubeadm command this node runs.
pub fn verb(r: &Resolved) -> &'static str {
    if r.kubeadm.role == Role::Init {
        "init"
    } else {
        "join"
    }
}

/// `plan`: the resolved node and what `run` would do, secrets redacted.
pub fn plan(m: &Machine, r: &Resolved) -> String {
    let k = &r.kubeadm;
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
    s.push_str(&images_text(r));
    s.push_str("commands:\n");
    for c in commands(r) {
        s.push_str(&format!("  {c}\n"));
    }
    match for_machine(m, r) {
        Ok(steps) => {
            s.push_str("steps (what `run` does, in order):\n");
            for st in steps {
                s.push_str(&format!("  {:<20} {}\n", st.name(), st.line));
            }
        }
        Err(h) => s.push_str(&format!("steps: none: {}\n", h.line())),
    }
    let patch = format!("{PATCHES_DIR}/{}", kubeadm::KUBELET_PATCH_FILE);
    s.push_str("\nkubeadm config:\n");
    s.push_str(&kubeadm::render_redacted(k));
    s.push_str(&format!(
        "\nkubelet settings of this node ({patch}; kubeadm {} applies it to /var/lib/kubelet/config.yaml):\n{}\n",
        verb(r),
        serde_json::to_string_pretty(&kubeadm::kubelet_patch(k)).unwrap_or_default()
    ));
    s.push_str(&format!(
        "kubelet flags (kubeletExtraArgs -> /var/lib/kubelet/kubeadm-flags.env): {}\n",
        kubelet_flags(k).join(" ")
    ));
    for (file, p) in &k.static_pod_patches {
        s.push_str(&format!(
            "static pod patch {PATCHES_DIR}/{file} (kubeadm applies it to the manifest):\n{}\n",
            serde_json::to_string_pretty(p).unwrap_or_default()
        ));
    }
    s
}

/// The baked images `plan` lists: each reference and digest, or that kubeadm pulls.
fn images_text(r: &Resolved) -> String {
    let pins = crate::images::pins(&r.image.images).unwrap_or_default();
    match r.image.images_archive.as_deref().filter(|_| !pins.is_empty()) {
        None => "  images    none baked: kubeadm and the kubelet pull what they need from its registry\n".into(),
        Some(archive) => {
            let mut s =
                format!("  images    {} baked in {archive}, imported before kubeadm (`import-images`):\n", pins.len());
            for p in &pins {
                s.push_str(&format!("    {}@{}\n", p.reference, p.digest));
            }
            s
        }
    }
}

/// kubeadm's inputs and the kubeadm command, one a line (file names only, never
/// their contents): the summary `plan` has always printed; [`steps`] is all of it.
fn commands(r: &Resolved) -> Vec<String> {
    let mut c: Vec<String> = r.pki.keys().map(|f| format!("write /etc/kubernetes/pki/{f}")).collect();
    c.push(format!("write {CONFIG_PATH} (0600)"));
    c.extend(patch_paths(&r.kubeadm).into_iter().map(|p| format!("write {p}")));
    c.push(format!("kubeadm {} --config {CONFIG_PATH}", verb(r)));
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
/// `steps` lists what `run` does (`name`, `line`); when it would do nothing, `steps`
/// is empty and `halt` says why (null otherwise).
pub fn plan_json(m: &Machine, r: &Resolved) -> serde_json::Value {
    use serde_json::json;
    let k = &r.kubeadm;
    let (steps, halt) = match for_machine(m, r) {
        Ok(steps) => (steps, None),
        Err(h) => (Vec::new(), Some(h.line())),
    };
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
        "images": {
            "archive": r.image.images_archive,
            "baked": crate::images::pins(&r.image.images).unwrap_or_default().iter().map(|p| json!({ "reference": p.reference, "digest": p.digest })).collect::<Vec<_>>(),
        },
        "commands": commands(r),
        "steps": steps.iter().map(|s| json!({ "name": s.name(), "line": s.line })).collect::<Vec<_>>(),
        "halt": halt,
        "kubeadm_config": kubeadm::documents_redacted(k),
        "kubelet_patch": {
            "path": format!("{PATCHES_DIR}/{}", kubeadm::KUBELET_PATCH_FILE),
            "settings": kubeadm::kubelet_patch(k),
        },
        "kubelet_flags": kubelet_flags(k),
        "static_pod_patches": k.static_pod_patches.iter().map(|(f, p)| json!({ "path": format!("{PATCHES_DIR}/{f}"), "patch": p })).collect::<Vec<_>>(),
        "kubeadm_attempt_bound_seconds": r.attempt_bound.as_secs(),
    })
}

/// The keys of [`plan_json`]'s document besides `ok` and `resolve_errors`.
const PLAN_KEYS: [&str; 18] = [
    "unresolved",
    "node",
    "sources",
    "platform",
    "instance_id",
    "machine_id",
    "cluster",
    "runtime",
    "swap",
    "images",
    "commands",
    "steps",
    "halt",
    "kubeadm_config",
    "kubelet_patch",
    "kubelet_flags",
    "static_pod_patches",
    "kubeadm_attempt_bound_seconds",
];
