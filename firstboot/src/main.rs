//! `kiln-firstboot`: reads machine metadata on first boot and runs kubeadm.

use kiln_firstboot::http::escape;
use kiln_firstboot::machine::paths::under;
use kiln_firstboot::machine::Machine;
use kiln_firstboot::options::Options;
use kiln_firstboot::run::{self, exit};
use kiln_firstboot::sources;
use kiln_firstboot::{plan, resolve, state};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// `--help`: the first line is also what a usage error prints.
const USAGE: &str = "usage: kiln-firstboot [OPTIONS] [run|plan|status|doctor|reset|host|kubelet-gate|approve-csrs]

Joins this machine to its Kubernetes cluster, once per machine, unattended.

Commands:
  run      resolve the node, fix and check the host, run kubeadm init|join (default)
  plan     print the resolved node, its sources, the steps `run` would take (in order) and
           the kubeadm config (secrets redacted); changes nothing
  status   print the state of this machine's bootstrap: joined, failed (and why), or not yet
  doctor   preflight report (with which baked images containerd holds and which kubeadm
           would pull) and a scan of the last kubeadm output and its evidence for known failures
  reset    kubeadm reset -f (bounded by --reset-timeout), iptables/IPVS rules, CNI interfaces
           and files, kiln's state, so `run` starts over
  host     fix and check what kubelet needs on every boot (modules, sysctls, swap); kubelet's
           ExecStartPre: exit 1 with a one-line reason when the host is still wrong
  kubelet-gate  kubelet's ExecCondition: exit 0 when kubelet may start (this machine is
           bootstrapping or joined), 1 to skip the start (not yet, or a disk from another machine)
  approve-csrs  on a control plane: approve the pending kubelet serving-certificate CSRs
           (serverTLSBootstrap) whose node, names and addresses match; leave the rest, saying why

Options (before or after the command; a value as `--root DIR` or `--root=DIR`):
  --root DIR       act on DIR instead of / (every read and write goes under it); DIR must
                   be a kiln image's root: it has /etc/kiln/image.toml
  --json           plan, status and doctor: one JSON document on stdout instead of text
                   (the same keys every time); the other commands refuse it (exit 2)
  --check-ports    check ports 6443, 2379-2380, 10250, 10257, 10259 even with --root
  --cmdline FILE   read the kernel command line from FILE (default: /proc/cmdline)
  --seed DIR       NoCloud seed directory (default: /var/lib/cloud/seed/nocloud)
  --attempts N     kubeadm attempts before giving up (default 3)
  --wait SECS      how long a join waits for the control plane (default 600; longer when
                   node.toml's kubeadm_timeouts.discovery is)
  --backoff SECS   delay before the second attempt, doubling (default 10)
  --reset-timeout SECS    bound on `kubeadm reset` and on `reset` as a whole (default 120)
  --kubeadm-timeout SECS  bound on one kubeadm init|join attempt (default: kubeadm's own
                          waits for the role, with node.toml's kubeadm_timeouts, plus 5m;
                          at least 900)
  --metadata-url URL        metadata service base URL (default http://169.254.169.254)
  --metadata-timeout SECS   bound on one metadata request: connect, send, the whole answer (default 5)
  --metadata-total SECS     bound on every metadata request and retry of the run (default 180)
  -h, --help       print this text (also `kiln-firstboot help`)
  -V, --version    print the version

Examples:
  # What an image does on first boot, changing nothing: unpack its tarball into /tmp/img,
  # put its user-data (`kiln userdata --format toml`) at /tmp/img/etc/kiln/node.toml, then
  kiln-firstboot --root /tmp/img plan
  kiln-firstboot --root /tmp/img plan --json           # the same as one JSON document
  kiln-firstboot --root /tmp/img --cmdline cmdline.txt plan   # with a kernel command line
  # On a node:
  kiln-firstboot status                   # joined, failed and why, or not yet
  kiln-firstboot doctor                   # what stops kubeadm on this host, each with its fix
  kiln-firstboot status --json            # for scripts (so do plan and doctor)
  kiln-firstboot reset                    # start over once the cause is fixed, then:
  kiln-firstboot run                      # what kiln-firstboot.service runs on every boot

Metadata answers are capped: status line and headers 64 KiB, a body 1 MiB (user-data is
KiB; EC2 allows 16 KiB), an IMDSv2 token 4 KiB; more is an error naming the limit.

Platforms (kiln.platform= or ignition.platform.id=, else DMI): aws (IMDSv2), gcp,
azure, digitalocean, hetzner, openstack (config drive, then HTTP), nocloud (seed).

Sources, later wins: /etc/kiln/image.toml < platform user-data and kiln-role tag
< NoCloud user-data < /etc/kiln/node.toml
< /boot/firmware/kiln/node.toml < kernel command line (kiln.role=, kiln.node-name=, kiln.node-ip=).

Exit codes: 0 done (run: joined, or already joined on this machine; doctor: nothing wrong;
kubelet-gate: kubelet may start; approve-csrs: the requests were read); 1 run: kubeadm failed
(see /run/kiln/bootstrap-failed); doctor: something is wrong; reset: kubeadm reset did not
finish; host: the host is still wrong; kubelet-gate: skip this start; approve-csrs: no
admin.conf, or kubectl did not answer; 2 a usage error, a root that is not a kiln image
(no /etc/kiln/image.toml under --root; every command refuses it), a kernel command line
that cannot be read (not a regular file, over 64 KiB), or a node description that is
incomplete or wrong; 3 run: nothing done, this machine may be in a cluster already and
kiln cannot tell it put it there (/var/lib/kiln/state.json empty or not kiln's, or
kubeadm's /etc/kubernetes/kubelet.conf without kiln's state: bootstrapped some other
way) — `kiln-firstboot reset`, then `run`, starts over.";

/// Every command, as the usage line lists them.
const COMMANDS: [&str; 8] = ["run", "plan", "status", "doctor", "reset", "host", "kubelet-gate", "approve-csrs"];

/// The commands that print one JSON document on stdout with `--json`; the others
/// write journal lines and refuse it.
const JSON_COMMANDS: [&str; 3] = ["plan", "status", "doctor"];

/// `println!` that ignores a closed stdout (`kiln-firstboot plan | head -c1`):
/// no panic, no backtrace, the command's own exit code.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

/// `eprintln!` that ignores a closed stderr.
macro_rules! err {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

/// A usage error: what is wrong, the usage line and where the rest is; exit 2.
fn usage(msg: &str) -> ExitCode {
    let line = USAGE.lines().next().unwrap_or_default();
    err!("kiln-firstboot: {}\n{line}\n`kiln-firstboot --help` lists the commands, options and examples.", escape(msg));
    ExitCode::from(exit::CONFIG)
}

/// An option's value: inline (`--root=DIR`) or the next argument, which must be there,
/// must not be empty and must not be another option (`--root --json` is a mistake).
fn value(name: &str, inline: &mut Option<String>, args: &mut impl Iterator<Item = String>) -> Result<String, String> {
    let v = match inline.take() {
        Some(v) => v,
        None => match args.next() {
            Some(v) if v.starts_with("--") => {
                return Err(format!("{name} needs a value, but the next argument is the option {v}"))
            }
            Some(v) => v,
            None => return Err(format!("{name} needs a value")),
        },
    };
    if v.is_empty() {
        return Err(format!("{name} needs a value, not an empty one"));
    }
    Ok(v)
}

/// A whole number for option `name` (`what` says of what, for the error).
fn number(name: &str, what: &str, v: Result<String, String>) -> Result<u64, String> {
    let v = v?;
    v.parse::<u64>().map_err(|_| format!("{name} expects {what}, got '{v}'"))
}

/// What the command line asks for.
struct Cli {
    /// `--root`.
    root: PathBuf,
    /// `--cmdline`.
    cmdline: Option<PathBuf>,
    /// `--seed`.
    seed: Option<PathBuf>,
    /// How `run` and `reset` behave.
    opts: Options,
    /// The command (`run` when none is given).
    cmd: String,
    /// `--json`.
    json: bool,
    /// `--check-ports`.
    check_ports: bool,
}

/// Reads the command line; `Err` is the exit code once `--help`, `--version` or a
/// usage error has been printed.
fn parse() -> Result<Cli, ExitCode> {
    let mut cli = Cli {
        root: PathBuf::from("/"),
        cmdline: None,
        seed: None,
        opts: Options::default(),
        cmd: String::new(),
        json: false,
        check_ports: false,
    };
    let mut cmd = None;
    // Arguments that are not UTF-8 are refused, not a panic of std::env::args.
    let args: Result<Vec<String>, _> = std::env::args_os().skip(1).map(|a| a.into_string()).collect();
    let mut args = match args {
        Ok(a) => a.into_iter(),
        Err(a) => return Err(usage(&format!("argument '{}' is not valid UTF-8", a.to_string_lossy()))),
    };
    while let Some(arg) = args.next() {
        // `--name=value` is `--name value`.
        let (a, mut inline) = match arg.split_once('=') {
            Some((name, v)) if name.starts_with("--") => (name.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut val = |name: &str| value(name, &mut inline, &mut args);
        let secs = "a number of seconds";
        let opts = &mut cli.opts;
        let r: Result<(), String> = match a.as_str() {
            "--root" => val("--root").map(|v| cli.root = PathBuf::from(v)),
            "--cmdline" => val("--cmdline").map(|v| cli.cmdline = Some(PathBuf::from(v))),
            "--seed" => val("--seed").map(|v| cli.seed = Some(PathBuf::from(v))),
            "--attempts" => {
                number(&a, "a whole number", val(&a)).map(|n| opts.attempts = n.clamp(1, u64::from(u32::MAX)) as u32)
            }
            "--wait" => number(&a, secs, val(&a)).map(|n| opts.wait = Duration::from_secs(n)),
            "--backoff" => number(&a, secs, val(&a)).map(|n| opts.backoff = Duration::from_secs(n)),
            "--metadata-url" => val("--metadata-url").map(|v| opts.metadata_url = Some(v)),
            "--metadata-timeout" => {
                number(&a, secs, val(&a)).map(|n| opts.http.timeout = Duration::from_secs(n.max(1)))
            }
            "--reset-timeout" => number(&a, secs, val(&a)).map(|n| opts.reset_timeout = Duration::from_secs(n)),
            "--kubeadm-timeout" => {
                number(&a, secs, val(&a)).map(|n| opts.kubeadm_timeout = Some(Duration::from_secs(n.max(1))))
            }
            "--metadata-total" => number(&a, secs, val(&a)).map(|n| opts.http.total = Duration::from_secs(n)),
            "--json" | "--check-ports" | "--version" | "--help" if inline.is_some() => {
                Err(format!("{a} takes no value"))
            }
            "--json" => {
                cli.json = true;
                Ok(())
            }
            "--check-ports" => {
                cli.check_ports = true;
                Ok(())
            }
            "--version" | "-V" => {
                out!("kiln-firstboot {}", env!("CARGO_PKG_VERSION"));
                return Err(ExitCode::SUCCESS);
            }
            "--help" | "-h" => {
                out!("{USAGE}");
                return Err(ExitCode::SUCCESS);
            }
            other if other.starts_with('-') => Err(format!("unknown option '{other}'")),
            other => match &cmd {
                None => {
                    cmd = Some(other.to_string());
                    Ok(())
                }
                Some(c) => Err(format!("unexpected argument '{other}' after the command '{c}': one command at a time")),
            },
        };
        if let Err(e) = r {
            return Err(usage(&e));
        }
    }
    cli.cmd = cmd.unwrap_or_else(|| "run".into());
    Ok(cli)
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (cmd, json, root) = (cli.cmd.as_str(), cli.json, &cli.root);
    if cmd == "help" {
        out!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if !COMMANDS.contains(&cmd) {
        return usage(&format!("unknown command '{cmd}'; the commands are {}", COMMANDS.join(", ")));
    }
    if json && !JSON_COMMANDS.contains(&cmd) {
        return usage(&format!(
            "`{cmd}` has no JSON output (it prints lines for the journal); --json is for plan, status and doctor: drop --json"
        ));
    }
    // Every command acts on a kiln image; anything else is the wrong --root (and must
    // not be probed, mounted or reset).
    if let Some(why) = sources::not_a_kiln_image(root) {
        match cmd {
            "doctor" => print_doctor(json, &[why], &[], &[]),
            "status" => print_status(json, &Status::not_a_kiln_image(why)),
            "plan" if json => print_json(&plan::plan_json_unresolved(&[why])),
            _ => err!("kiln-firstboot: {}", escape(&why)),
        }
        return ExitCode::from(exit::CONFIG);
    }
    // kubelet's gate and host check need no user-data: they never mount the NoCloud
    // seed, so they cannot race first boot's own mount of it.
    let local_only = matches!(cmd, "kubelet-gate" | "host");
    let seed = match cli.seed.clone() {
        None if local_only => Some(under(root, "/var/lib/cloud/seed/nocloud")),
        s => s,
    };
    let mut machine = match Machine::probe(root, cli.cmdline.as_deref(), seed.as_deref()) {
        Ok(m) => m,
        Err(why) => {
            match cmd {
                "doctor" => print_doctor(json, std::slice::from_ref(&why), &[], &[]),
                "plan" if json => print_json(&plan::plan_json_unresolved(std::slice::from_ref(&why))),
                _ => err!("kiln-firstboot: {}", escape(&why)),
            }
            return ExitCode::from(exit::CONFIG);
        }
    };
    for w in &machine.warnings {
        err!("kiln-firstboot: warning: {}", escape(w));
    }
    machine.check_ports |= cli.check_ports;
    let opts = &cli.opts;
    match cmd {
        "run" => ExitCode::from(run::run(&machine, opts)),
        "plan" => plan(&machine, opts, json),
        "status" => {
            print_status(json, &Status::of(&machine));
            ExitCode::SUCCESS
        }
        "doctor" => doctor(&machine, opts, json),
        "reset" => reset(&machine, opts),
        "approve-csrs" => approve_csrs(&machine),
        "host" => host(&machine),
        "kubelet-gate" => kubelet_gate(&machine),
        other => usage(&format!("unknown command '{other}'")),
    }
}

/// `plan`: the resolved node and the steps `run` would take, as text or one JSON
/// document; exit 2 when the node does not resolve.
fn plan(machine: &Machine, opts: &Options, json: bool) -> ExitCode {
    match resolve::resolve_for_plan(machine, opts) {
        Ok(r) if json => {
            print_json(&plan::plan_json(machine, &r));
            ExitCode::SUCCESS
        }
        Ok(r) => {
            use std::io::Write;
            let _ = write!(std::io::stdout().lock(), "{}", plan::plan(machine, &r));
            for u in &r.unresolved {
                err!("kiln-firstboot: plan: unresolved {}", escape(u));
            }
            ExitCode::SUCCESS
        }
        Err(errs) => {
            if json {
                print_json(&plan::plan_json_unresolved(&errs));
            } else {
                for e in errs {
                    err!("kiln-firstboot: {}", escape(&e));
                }
            }
            ExitCode::from(exit::CONFIG)
        }
    }
}

fn doctor(m: &Machine, opts: &Options, json: bool) -> ExitCode {
    use kiln_firstboot::preflight;
    // A dry run, as plan: what only the node can resolve is a warning, not an error.
    let (checks, resolve_errors) = match resolve::resolve_for_plan(m, opts) {
        Ok(r) => {
            let mut checks = preflight::checks(m, &r);
            // Which baked images containerd holds, and which kubeadm would pull.
            checks.extend(kiln_firstboot::images::import::doctor(m, &r));
            checks.extend(r.unresolved.iter().map(|u| preflight::Check {
                id: "node-ip",
                level: preflight::Level::Warning,
                message: format!("unresolved {u}"),
            }));
            (checks, Vec::new())
        }
        Err(e) => (Vec::new(), e),
    };
    let log = read_text(&m.root, kiln_firstboot::evidence::KUBEADM_LOG).unwrap_or_default();
    let failed = read_text(&m.root, state::FAILED_PATH).unwrap_or_default();
    // The failed attempt's journal, containers and kube-proxy log (removed on success).
    let evidence = read_text(&m.root, kiln_firstboot::evidence::EVIDENCE_LOG).unwrap_or_default();
    let known = kiln_firstboot::diagnose::diagnose(&format!("{log}\n{evidence}\n{failed}"));
    let bad = !resolve_errors.is_empty() || preflight::has_errors(&checks) || !known.is_empty();
    print_doctor(json, &resolve_errors, &checks, &known);
    ExitCode::from(if bad { 1 } else { 0 })
}

/// `doctor`'s report: one JSON document, or one line per finding.
fn print_doctor(
    json: bool,
    resolve_errors: &[String],
    checks: &[kiln_firstboot::preflight::Check],
    known: &[kiln_firstboot::diagnose::Diagnosis],
) {
    use kiln_firstboot::preflight::{self, Level};
    let bad = !resolve_errors.is_empty() || preflight::has_errors(checks) || !known.is_empty();
    if json {
        let v = serde_json::json!({
            "ok": !bad,
            "resolve_errors": resolve_errors,
            "checks": checks,
            "known_failures": known.iter().map(|d| serde_json::json!({"id": d.id, "cause": d.cause, "fix": d.fix})).collect::<Vec<_>>(),
        });
        print_json(&v);
    } else {
        for e in resolve_errors {
            out!("error   [resolve] {}", escape(e));
        }
        for c in checks {
            let tag = match c.level {
                Level::Error => "error  ",
                Level::Warning => "warning",
                Level::Ok => "ok     ",
            };
            out!("{tag} [{}] {}", c.id, c.message);
        }
        for d in known {
            out!("known failure [{}]: {}\n  fix: {}", d.id, d.cause, d.fix);
        }
    }
}

/// One of kiln-firstboot's own files under the root (resolved there: no link leads
/// out of it), at most 1 MiB (kubeadm's log is capped well below), as text.
fn read_text(root: &std::path::Path, path: &str) -> Option<String> {
    let bytes = kiln_firstboot::files::read_capped(root, path, 1 << 20).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// One JSON document on stdout (a closed stdout is ignored).
fn print_json(v: &serde_json::Value) {
    out!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// `status`: the state of this machine's bootstrap. As JSON the keys are always the
/// same, null when they do not apply.
#[derive(serde::Serialize)]
struct Status {
    /// `joined`, `other-machine`, `failed`, `not-joined`, `state-corrupt` or `not-a-kiln-image`.
    status: &'static str,
    /// The human line.
    message: String,
    /// This machine's id (`/etc/machine-id`), if known.
    machine_id: Option<String>,
    /// The success state on disk, from this machine or another.
    state: Option<state::State>,
    /// Why the last bootstrap failed (`/run/kiln/bootstrap-failed`).
    failure: Option<String>,
}

impl Status {
    fn of(m: &Machine) -> Status {
        let machine_id = (!m.machine_id.is_empty()).then(|| m.machine_id.clone());
        let failure = read_text(&m.root, state::FAILED_PATH).map(|r| r.trim().to_string());
        let loaded = state::load_state(&m.root);
        if let Err(e) = &loaded {
            let message = format!("state unreadable: {e}; `kiln-firstboot reset` clears it");
            return Status { status: "state-corrupt", message, machine_id, state: None, failure };
        }
        let state = loaded.ok().flatten();
        let (status, message) = match (&state, &failure) {
            (Some(s), _) if s.machine_id == m.machine_id => (
                "joined",
                format!("joined: {} as {} (Kubernetes {}) at {}", s.node_name, s.role, s.kubernetes_version, s.time),
            ),
            (Some(s), _) => {
                ("other-machine", format!("not joined on this machine (state is from machine {})", s.machine_id))
            }
            (None, Some(reason)) => ("failed", format!("failed: {reason}")),
            (None, None) => ("not-joined", "not joined yet".to_string()),
        };
        Status { status, message, machine_id, state, failure }
    }

    fn not_a_kiln_image(why: String) -> Status {
        Status { status: "not-a-kiln-image", message: why, machine_id: None, state: None, failure: None }
    }
}

fn print_status(json: bool, s: &Status) {
    if json {
        print_json(&serde_json::to_value(s).unwrap_or_default());
    } else if s.status == "not-a-kiln-image" {
        err!("kiln-firstboot: {}", escape(&s.message));
    } else {
        out!("{}", s.message);
    }
}

fn reset(m: &Machine, opts: &Options) -> ExitCode {
    let report = kiln_firstboot::reset::reset_node(m, opts);
    for line in &report {
        out!("reset: {line}");
    }
    if report.first().is_some_and(|l| l.ends_with(": done")) {
        out!("reset: done; `kiln-firstboot run` starts over");
        ExitCode::SUCCESS
    } else {
        out!("reset: kubeadm reset did not finish; the rest was cleaned. Fix the runtime and reset again");
        ExitCode::from(1)
    }
}

/// `approve-csrs`: exit 0 when kubectl answered (whatever was approved), 1 when not.
fn approve_csrs(m: &Machine) -> ExitCode {
    let (ok, report) = kiln_firstboot::approve::approve_csrs(m);
    for line in &report {
        out!("approve-csrs: {}", escape(line));
    }
    if report.is_empty() {
        out!("approve-csrs: no pending kubelet serving-certificate requests");
    }
    ExitCode::from(if ok { 0 } else { 1 })
}

/// Before every kubelet start: the host as kubelet needs it, or one line why not.
fn host(m: &Machine) -> ExitCode {
    use kiln_firstboot::host;
    let bin = kiln_firstboot::sources::image_defaults(&m.root).map(|i| i.bin_dir).unwrap_or_else(|_| "/opt/bin".into());
    // kubelet refuses swap unless the config kubeadm wrote says failSwapOn: false.
    let swap_allowed = host::kubelet_fails_on_swap(&m.root) == Some(false);
    let runner = |name: &str, args: &[&str]| -> (bool, String) {
        kiln_firstboot::runner::run_bounded(
            std::process::Command::new(kiln_firstboot::tools::which(&m.root, &bin, name)).args(args),
            std::time::Duration::from_secs(60),
        )
    };
    let findings = host::fix_and_check(&m.root, swap_allowed, &runner);
    let mut fatal = false;
    for f in &findings {
        fatal |= f.fatal;
        out!("<{}>kiln-firstboot host: {}", if f.fatal { 3 } else { 4 }, f.message);
    }
    if fatal {
        return ExitCode::from(1);
    }
    out!("kiln-firstboot host: modules, sysctls and swap are as kubelet needs them");
    ExitCode::SUCCESS
}

fn kubelet_gate(m: &Machine) -> ExitCode {
    use kiln_firstboot::host::{gate, Gate};
    let state = state::read_state(&m.root).map(|s| s.machine_id);
    match gate(m, state.as_deref()) {
        Gate::Go(why) => {
            out!("kiln-firstboot kubelet-gate: start kubelet: {why}");
            ExitCode::SUCCESS
        }
        Gate::Skip(why) => {
            out!("kiln-firstboot kubelet-gate: kubelet not started: {why}");
            ExitCode::from(1)
        }
    }
}
