//! `run`: once per machine, unattended. The state file says whether to start
//! ([`plan::begin`]), the node is resolved, then the steps [`plan::steps`] lists
//! are executed in that order, each logged by name as it starts.

use crate::after_init;
use crate::contract::node::SwapPolicy;
use crate::diagnose;
use crate::evidence::{self, EVIDENCE_LOG, KUBEADM_LOG};
use crate::files;
use crate::host;
use crate::journal::{log, redact};
use crate::kubeadm;
use crate::machine::paths::under;
use crate::machine::Machine;
use crate::options::Options;
use crate::plan::{self, Action, Halt, Step, CONFIG_PATH};
use crate::preflight;
use crate::resolve::{self, Resolved, PATCHES_DIR};
use crate::runner::run_bounded;
use crate::state::{State, CAPI_SENTINEL, FAILED_PATH, STARTED_PATH, STATE_PATH};
use crate::tools::which;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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

/// The bootstrap failed ([`exit::FAILED`]): the reason in the journal and in the
/// failure marker.
fn fail(root: &Path, reason: &str) -> u8 {
    log(3, &format!("kiln-firstboot: bootstrap failed: {reason}"));
    let _ = files::write(root, FAILED_PATH, format!("{reason}\n").as_bytes(), 0o644);
    exit::FAILED
}

/// A [`Halt`] as `run` ends on it.
fn halt(m: &Machine, h: &Halt) -> u8 {
    match h {
        Halt::Joined(_) => {
            log(6, &format!("kiln-firstboot: {}", h.line()));
            exit::OK
        }
        Halt::Refuse(why) => refuse(&m.root, why),
    }
}

/// `run`: once per machine, unattended.
pub fn run(m: &Machine, opts: &Options) -> u8 {
    let root = &m.root;
    let state = match plan::begin(m) {
        Ok(s) => s,
        Err(h) => return halt(m, &h),
    };
    if state.is_some() {
        log(4, "kiln-firstboot: state from another machine (a cloned disk or snapshot): bootstrapping this one");
    }
    let r = match resolve::resolve(m, opts) {
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
    let steps = match plan::steps(m, &r, state.as_ref()) {
        Ok(s) => s,
        Err(h) => return halt(m, &h),
    };
    let code = Executor::new(m, opts, &r).all(&steps);
    if code == exit::OK {
        log(6, &format!("kiln-firstboot: {} joined the cluster as {}", r.kubeadm.node_name, r.kubeadm.role.as_str()));
    }
    code
}

/// Executes a plan's steps on one machine.
struct Executor<'a> {
    m: &'a Machine,
    opts: &'a Options,
    r: &'a Resolved,
    /// The image's kubeadm.
    kubeadm_bin: PathBuf,
    /// Where the kubeadm config was written (`write-config`).
    config: PathBuf,
}

impl<'a> Executor<'a> {
    fn new(m: &'a Machine, opts: &'a Options, r: &'a Resolved) -> Executor<'a> {
        let kubeadm_bin = which(&m.root, &r.image.bin_dir, "kubeadm");
        Executor { m, opts, r, kubeadm_bin, config: under(&m.root, CONFIG_PATH) }
    }

    /// Every step in order, each logged as it starts. The first that fails ends the
    /// run with its exit code; after it only a step whose
    /// [`Action::after_failure_of`] had started still runs.
    fn all(&mut self, steps: &[Step]) -> u8 {
        let mut code = exit::OK;
        let mut started: Vec<Action> = Vec::new();
        for step in steps {
            let cleanup = step.action.after_failure_of().is_some_and(|a| started.contains(&a));
            if code != exit::OK && !cleanup {
                continue;
            }
            log(6, &format!("kiln-firstboot: step {}: {}", step.name(), step.line));
            started.push(step.action);
            if let Err(c) = self.step(step.action) {
                code = c;
            }
        }
        code
    }

    /// One step; `Err` is the run's exit code (the reason already logged and marked).
    fn step(&mut self, action: Action) -> Result<(), u8> {
        let (m, r) = (self.m, self.r);
        let root = &m.root;
        let write = |path: &str, text: &[u8], mode: u32| {
            files::write(root, path, text, mode).map_err(|e| fail(root, &format!("writing {path}: {e}")))
        };
        match action {
            Action::ResetLeftovers => self.reset("an earlier attempt left kubeadm state behind"),
            Action::ClearFailure => {
                let _ = files::remove(root, FAILED_PATH);
            }
            Action::FixHost => fix_host(m, r),
            Action::MaskSwap => mask_swap(root),
            Action::Preflight => check(m, r)?,
            Action::ImportImages => match crate::images::import::import(m, r) {
                Ok(done) => log(6, &format!("kiln-firstboot: import-images: {done}")),
                Err(why) => return Err(fail(root, &why)),
            },
            Action::WriteConfig => self.config = write(CONFIG_PATH, kubeadm::render(&r.kubeadm).as_bytes(), 0o600)?,
            Action::WritePatch => {
                let patch = kubeadm::kubelet_patch(&r.kubeadm);
                let text = serde_json::to_string_pretty(&patch).unwrap_or_default() + "\n";
                write(&format!("{PATCHES_DIR}/{}", kubeadm::KUBELET_PATCH_FILE), text.as_bytes(), 0o644)?;
                // Static pod patches: this node.toml's, and none left from an earlier one.
                for file in kubeadm::static_pod_patch_files() {
                    let path = format!("{PATCHES_DIR}/{file}");
                    match r.kubeadm.static_pod_patches.get(&file) {
                        Some(p) => {
                            let text = serde_json::to_string_pretty(p).unwrap_or_default() + "\n";
                            write(&path, text.as_bytes(), 0o644)?;
                        }
                        None => {
                            let _ = files::remove(root, &path);
                        }
                    }
                }
            }
            Action::WaitForEndpoint => {
                preflight::wait_for_endpoint(&r.kubeadm.control_plane_endpoint, r.endpoint_wait)
                    .map_err(|e| fail(root, &e))?;
            }
            // kubelet's ExecCondition lets kubelet start while this marker names this
            // machine: kubeadm restarts kubelet from inside this run.
            Action::MarkBootstrapping => {
                write(host::BOOTSTRAPPING, format!("{}\n", m.machine_id).as_bytes(), 0o644)?;
            }
            Action::MarkStarted => {
                write(STARTED_PATH, format!("{}\n", m.machine_id).as_bytes(), 0o644)?;
            }
            Action::Relabel => relabel(m, r),
            Action::Kubeadm => self.attempts()?,
            Action::RecordSuccess => {
                let state = State {
                    machine_id: m.machine_id.clone(),
                    instance_id: r.instance_id.clone(),
                    role: r.kubeadm.role.as_str().into(),
                    node_name: r.kubeadm.node_name.clone(),
                    kubernetes_version: r.kubeadm.kubernetes_version.clone(),
                    time: now(),
                };
                write(STATE_PATH, serde_json::to_string_pretty(&state).unwrap_or_default().as_bytes(), 0o644)?;
                let _ = files::write(root, CAPI_SENTINEL, b"", 0o644);
                // An earlier attempt's evidence no longer describes this node (`doctor` reads it).
                let _ = files::remove(root, EVIDENCE_LOG);
            }
            Action::ProtectAdminConf => after_init::protect_admin_conf(m),
            Action::ApplyCni => after_init::apply_cni(m, r),
            Action::AdminKubeconfig => after_init::admin_kubeconfig(m, r),
            Action::ClearBootstrapping => {
                let _ = files::remove(root, host::BOOTSTRAPPING);
            }
        }
        Ok(())
    }

    /// `kubeadm reset -f`, bounded, its output logged (redacted).
    fn reset(&self, why: &str) {
        log(6, &format!("kiln-firstboot: kubeadm reset -f ({why})"));
        let (_, out) = run_bounded(Command::new(&self.kubeadm_bin).args(["reset", "-f"]), self.opts.reset_timeout);
        log(6, &redact(&out, self.r));
    }

    /// kubeadm init|join, bounded attempts with a reset between them; `Err` is the
    /// run's exit code once every attempt failed.
    fn attempts(&self) -> Result<(), u8> {
        let (m, r, opts) = (self.m, self.r, self.opts);
        let root = &m.root;
        let verb = plan::verb(r);
        let mut delay = opts.backoff;
        let mut last = String::new();
        for attempt in 1..=opts.attempts.max(1) {
            // Written every attempt: `kubeadm reset` deletes /etc/kubernetes/pki, and an
            // init without the cluster's CA would generate a new one.
            for (file, text) in &r.pki {
                let mode = if file.ends_with(".key") { 0o600 } else { 0o644 };
                if let Err(e) = files::write(root, &format!("/etc/kubernetes/pki/{file}"), text.as_bytes(), mode) {
                    return Err(fail(root, &format!("writing /etc/kubernetes/pki/{file}: {e}")));
                }
            }
            log(6, &format!("kiln-firstboot: kubeadm {verb} (attempt {attempt} of {})", opts.attempts.max(1)));
            let mut cmd = Command::new(&self.kubeadm_bin);
            cmd.arg(verb).arg("--config").arg(&self.config);
            if verb == "init" {
                cmd.arg("--skip-token-print");
            }
            let started = now();
            let (ok, out) = run_bounded(&mut cmd, r.attempt_bound);
            let out = redact(&out, r);
            let _ = files::write(root, KUBEADM_LOG, out.as_bytes(), 0o600);
            for line in out.lines() {
                log(6, &format!("kubeadm: {line}"));
            }
            if ok {
                return Ok(());
            }
            // kubeadm only says the kubelet is unhealthy; the cause is in kubelet's journal
            // and the containers (troubleshooting guide: journalctl -u kubelet, crictl ps -a).
            let more = evidence::evidence(m, r, started);
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
                self.reset("before retrying");
                std::thread::sleep(delay);
                delay = delay.saturating_mul(2);
            }
        }
        Err(fail(root, &last))
    }
}

/// The preflight checks, each warning and error logged; `Err` (the run fails) on
/// any error.
fn check(m: &Machine, r: &Resolved) -> Result<(), u8> {
    let checks = preflight::checks(m, r);
    for c in &checks {
        match c.level {
            preflight::Level::Error => log(3, &format!("kiln-firstboot: preflight [{}]: {}", c.id, c.message)),
            preflight::Level::Warning => log(4, &format!("kiln-firstboot: preflight [{}]: {}", c.id, c.message)),
            preflight::Level::Ok => {}
        }
    }
    if !preflight::has_errors(&checks) {
        return Ok(());
    }
    let reasons: Vec<String> = checks
        .iter()
        .filter(|c| c.level == preflight::Level::Error)
        .map(|c| format!("[{}] {}", c.id, c.message))
        .collect();
    Err(fail(&m.root, &format!("preflight: {}", reasons.join("; "))))
}

/// With SELinux enabled, the directories kiln writes get the policy's labels before
/// kubeadm runs (`restorecon -R`, bounded), logged.
fn relabel(m: &Machine, r: &Resolved) {
    let (root, bin) = (&m.root, &r.image.bin_dir);
    let runner = |name: &str, args: &[&str]| {
        run_bounded(Command::new(which(root, bin, name)).args(args), Duration::from_secs(60))
    };
    if let Some(f) = host::relabel(root, &host::kiln_paths(&r.kubeadm.flex_volume_dir), &runner) {
        log(4, &format!("kiln-firstboot: {}", f.message));
    }
}

/// Fixes what the image can before the checks: modules, sysctls, swap (now; unless
/// [`SwapPolicy::Limited`] allows it).
fn fix_host(m: &Machine, r: &Resolved) {
    let root = &m.root;
    let bin = r.image.bin_dir.clone();
    let runner = |name: &str, args: &[&str]| {
        run_bounded(Command::new(which(root, &bin, name)).args(args), Duration::from_secs(60))
    };
    let limited = r.swap == SwapPolicy::Limited;
    for f in host::fix_and_check(root, limited, &runner) {
        log(if f.fatal { 3 } else { 4 }, &format!("kiln-firstboot: {}", f.message));
    }
}

/// Swap stays off on every later boot: what would turn it back on is masked.
fn mask_swap(root: &Path) {
    match host::mask_swap(root) {
        Ok(units) if !units.is_empty() => {
            log(6, &format!("kiln-firstboot: swap stays off on later boots: masked {}", units.join(", ")))
        }
        Ok(_) => {}
        Err(e) => log(4, &format!("kiln-firstboot: masking swap units: {e}")),
    }
}
