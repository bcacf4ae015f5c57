//! Failures printed by the REAL kubeadm, kubelet and containerd (built from their
//! Go modules by `tests/k8s/build`), each diagnosed by kiln-firstboot as `doctor`
//! diagnoses it (`kiln_firstboot::diagnose::diagnose`, the function `doctor` and
//! `run` call), and each the text of a fixture in `tests/fixtures/kubeadm-texts/`
//! (issue 21, item 5).
//!
//! Every scenario runs in a sandbox (`SANDBOX`) that writes nothing to the host's
//! `/`: its own mount, network, UTS and PID namespaces (`unshare -mnupf`); the
//! host's `/` read-only; `/etc`, `/var/lib` and `/opt` are overlays whose upper
//! layers are a tmpfs, `/run` a tmpfs; a veth with 10.0.0.10/24 and a default
//! route to nowhere (kubeadm needs a default route to pick the API server's
//! address, `util/config/initconfiguration.go` via `ChooseBindAddress`); the
//! hostname `node-1` in `/etc/hosts` and `nameserver 127.0.0.1` (lookups fail at
//! once instead of timing out); `ip_forward` on in its network namespace; a
//! scratch `systemctl` first on `PATH` that says `kubelet.service` is enabled and
//! that no other unit exists (so preflight's `Service-Kubelet` and `Firewalld`
//! checks see a kiln image, not this host). The program runs under `timeout`;
//! `unshare --kill-child` and the PID namespace end everything the scenario
//! started (containerd, listeners) when it ends.
//!
//! Each scenario asserts the diagnosis of the live text, then that the fixture's
//! body equals it after `normalise` (klog's time and pid, ephemeral ports, CA
//! pins, the scratch path, and the one host-dependent warning line). `KILN_CAPTURE=1`
//! rewrites the fixtures from the live capture instead (after a version bump:
//! `KILN_CAPTURE=1 cargo nextest run -p kiln-firstboot --test real_failures`),
//! keeping their `# source:`, `# note:` and `# not:` headers.
//!
//! Where the binaries are: `KILN_K8S_BIN_V1_34_2`, `KILN_K8S_BIN_V1_33_6`,
//! `KILN_K8S_BIN_CONTAINERD`, and for the joins `KILN_K8S_BIN_ETCD` and
//! `KILN_K8S_BIN_CONTROL_PLANE_V1_34_2` (set by `scripts/test`); without them the
//! tests fail with the command that builds them. One scenario is not a failure:
//! kube-proxy's image (`tests/k8s/images`: the `kube-proxy` target and the host's
//! `iptables` package) routing the `kubernetes` Service of the joins' control plane.

mod real_bins;

use kiln_firstboot::diagnose::diagnose;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The sandbox, `sh -c SANDBOX sh LIMIT PROGRAM ARGS...` inside `unshare -mnupf
/// --mount-proc --kill-child`, with `$S` the scratch directory: sets the node up
/// as the module doc says, sources `$S/setup` (its output to stderr), then runs
/// the program for at most LIMIT seconds with stdout and stderr interleaved on
/// stdout, as a terminal shows them.
const SANDBOX: &str = r#"set -e
limit=$1; shift
mount --make-rprivate /
mount -t tmpfs tmpfs "$S/ov"
for d in etc var/lib opt; do
  n=$(printf %s "$d" | tr / -)
  mkdir -p "$S/ov/$n-up" "$S/ov/$n-work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$S/ov/$n-up,workdir=$S/ov/$n-work" "/$d"
done
mount -t tmpfs tmpfs /run
mount --bind "$S" "$S"
mount -o remount,bind,ro /
ip link set lo up
ip link add eth0 type veth peer name eth1
ip link set eth1 up
ip addr add 10.0.0.10/24 dev eth0
ip link set eth0 up
ip route add default via 10.0.0.1
hostname node-1
echo "10.0.0.10 node-1" >> /etc/hosts
echo "nameserver 127.0.0.1" > /etc/resolv.conf
sysctl -qw net.ipv4.ip_forward=1
export PATH="$S/bin:$PATH"
. "$S/setup" >&2
: > "$S/started"
set +e
timeout -k 5 "$limit" "$@" 2>&1
"#;

/// The scratch `systemctl` (`util/initsystem/initsystem_unix.go`: `is-enabled`
/// must succeed for `Service-Kubelet`, `status` saying "could not be found"
/// makes `ServiceExists` false, so the firewalld check is skipped).
const SYSTEMCTL: &str = r#"#!/bin/sh
case "$1 $2" in
  "is-enabled kubelet"|"is-enabled kubelet.service") exit 0 ;;
  "status kubelet"|"status kubelet.service") echo "Loaded: loaded"; exit 3 ;;
  status*) echo "Unit $2 could not be found."; exit 4 ;;
esac
exit 1
"#;

/// Lines whose presence depends on the host, not on the scenario: kubeadm's
/// `SystemVerification` warns on a cgroup v1 host (`preflight/checks.go`
/// `SystemVerificationCheck`, from `k8s.io/system-validators`). Dropped from both
/// sides before comparing; kept in the fixture as captured.
const HOST_LINES: &[&str] = &["[WARNING SystemVerification]: cgroups v1 support is in maintenance mode"];

/// One scenario's sandbox: a scratch directory with `bin/` (the scratch
/// `systemctl`, the kubelet kubeadm finds on `PATH`) and the setup script.
struct Sandbox {
    dir: tempfile::TempDir,
    setup: String,
}

/// What the real program printed, and how it ended.
struct Capture {
    text: String,
    code: Option<i32>,
}

impl Sandbox {
    /// A sandbox whose `PATH` has `kubelet` (the kubelet kubeadm's preflight
    /// asks for its version).
    fn new(kubelet: &Path) -> Sandbox {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for d in ["ov", "bin"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        let systemctl = dir.path().join("bin/systemctl");
        std::fs::write(&systemctl, SYSTEMCTL).expect("systemctl");
        std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::symlink(kubelet, dir.path().join("bin/kubelet")).expect("kubelet link");
        Sandbox { dir, setup: String::new() }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    /// Adds shell lines to the setup (run inside the sandbox before the program).
    fn setup(mut self, lines: &str) -> Sandbox {
        self.setup.push_str(lines);
        self.setup.push('\n');
        self
    }
    /// Starts the real containerd with every path under the scratch directory
    /// (its root and state on a tmpfs there; its socket kubeadm's default,
    /// `/run/containerd/containerd.sock`, on the sandbox's `/run`), its CRI plugin
    /// on unless `cri` is false, and waits until it has booted.
    fn containerd(self, cri: bool) -> Sandbox {
        let bin = real_bins::containerd();
        let disabled = if cri { "" } else { "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]" };
        self.setup(&format!(
            r#"mkdir -p "$S/ctd" && mount -t tmpfs tmpfs "$S/ctd"
printf 'version = 3\nroot = "%s/ctd/root"\nstate = "%s/ctd/state"\n{disabled}\n[grpc]\n  address = "/run/containerd/containerd.sock"\n' "$S" "$S" > "$S/ctd/config.toml"
'{}' --config "$S/ctd/config.toml" > "$S/containerd.log" 2>&1 &
n=0; until grep -q 'containerd successfully booted' "$S/containerd.log"; do
  n=$((n+1)); [ $n -lt 600 ] || {{ cat "$S/containerd.log"; exit 1; }}; sleep 0.05
done"#,
            bin.join("containerd").display()
        ))
    }
    /// Runs `argv` in the sandbox for at most `limit` seconds; it must fail.
    fn run(&self, argv: &[&str], limit: u32) -> Capture {
        let (c, stderr) = self.capture(argv, limit);
        assert!(
            !matches!(c.code, Some(0 | 124 | 137) | None),
            "{argv:?} did not fail as the scenario needs (exit {:?}); it printed:\n{}\nsandbox: {stderr}",
            c.code,
            c.text
        );
        c
    }
    /// Runs `argv` in the sandbox for at most `limit` seconds; it must succeed.
    fn run_ok(&self, argv: &[&str], limit: u32) -> Capture {
        let (c, stderr) = self.capture(argv, limit);
        assert_eq!(c.code, Some(0), "{argv:?} failed; it printed:\n{}\nsandbox: {stderr}", c.text);
        c
    }
    /// Runs `argv` in the sandbox: what it printed, and the sandbox's own stderr.
    fn capture(&self, argv: &[&str], limit: u32) -> (Capture, String) {
        std::fs::write(self.path().join("setup"), &self.setup).expect("setup");
        let o = Command::new("timeout")
            .args(["-k", "5", &(limit + 60).to_string(), "unshare", "-mnupf", "--mount-proc", "--kill-child"])
            .args(["sh", "-c", SANDBOX, "sh", &limit.to_string()])
            .args(argv)
            .env("S", self.path())
            .output()
            .expect("timeout and unshare run");
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let code = o.status.code();
        assert!(
            self.path().join("started").exists(),
            "the sandbox's setup failed (exit {code:?}) before {argv:?} ran:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        (Capture { text, code }, String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// A fixture this file captures: its name, the id it must be diagnosed as, and
/// the headers a new file gets (an existing file keeps its `# source:`).
struct Fixture {
    name: &'static str,
    expect: &'static str,
    source: &'static str,
    printed_by: &'static str,
}

/// `# origin:` of a fixture captured from `program` at `version`.
fn origin(program: &str, version: &str) -> String {
    format!("captured from {program} {version} built in tests/k8s")
}

/// klog's header `Lmmdd hh:mm:ss.uuuuuu PID file:line]` with the time and pid
/// replaced, or `None` when `line` does not start with one.
fn klog_header(line: &str) -> Option<String> {
    let b = line.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r.clone()).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let shape = b.len() > 22
        && b"IWEF".contains(&b[0])
        && digits(1..5)
        && b[5] == b' '
        && digits(6..8)
        && b[8] == b':'
        && digits(9..11)
        && b[11] == b':'
        && digits(12..14)
        && b[14] == b'.'
        && digits(15..21);
    if !shape {
        return None;
    }
    let rest = line[21..].trim_start_matches(' ');
    let pid_end = rest.find(|c: char| !c.is_ascii_digit())?;
    if pid_end == 0 || !rest[pid_end..].starts_with(' ') {
        return None;
    }
    Some(format!("{}MMDD hh:mm:ss.uuuuuu PID{}", &line[..1], &rest[pid_end..]))
}

/// `a.b.c.d:PORT->` for every ephemeral local port of a connection (`udp
/// 127.0.0.1:38626->127.0.0.1:53`).
fn ephemeral_ports(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find("->") {
        let head = &rest[..i];
        let digits = head.len() - head.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 && head[..head.len() - digits].ends_with(':') {
            out.push_str(&head[..head.len() - digits]);
            out.push_str("PORT");
        } else {
            out.push_str(head);
        }
        out.push_str("->");
        rest = &rest[i + 2..];
    }
    out.push_str(rest);
    out
}

/// `sha256:HASH` for every `sha256:` and 64 hex digits (a CA pin: the CA is
/// made anew in every run).
fn sha256_pins(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find("sha256:") {
        let (head, tail) = rest.split_at(i + 7);
        out.push_str(head);
        let hex = tail.bytes().take_while(u8::is_ascii_hexdigit).count();
        if hex == 64 {
            out.push_str("HASH");
            rest = &tail[64..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// `TIME` for every RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SSZ` (Go's x509 errors:
/// "current time … is after …", of certificates made in the run).
fn rfc3339_times(line: &str) -> String {
    const SHAPE: &[u8] = b"0000-00-00T00:00:00Z";
    let fits = |w: &[u8]| w.iter().zip(SHAPE).all(|(c, s)| if *s == b'0' { c.is_ascii_digit() } else { c == s });
    let b = line.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b.len() - i >= SHAPE.len() && fits(&b[i..i + SHAPE.len()]) {
            out.push_str("TIME");
            i += SHAPE.len();
        } else {
            let c = line[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The text with only its volatile parts made constant: klog's time and pid,
/// ephemeral ports, sha256 pins, RFC 3339 times, the scratch directory, host-dependent lines (`HOST_LINES`),
/// trailing newlines. Everything else — every word, path, port 6443 — must match.
fn normalise(text: &str, scratch: &Path) -> String {
    let text = text.replace(&*scratch.to_string_lossy(), "$SCRATCH");
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !HOST_LINES.iter().any(|h| l.contains(h)))
        .map(|l| rfc3339_times(&sha256_pins(&ephemeral_ports(&klog_header(l).unwrap_or_else(|| l.to_string())))))
        .collect();
    lines.join("\n").trim_end().to_string()
}

/// The kubelet's error lines (klog severity E or F), as `journalctl -u kubelet
/// -p err` lists them: its info lines name the host (its cgroups, its memory).
fn kubelet_errors(text: &str) -> String {
    text.lines().filter(|l| klog_header(l).is_some() && (l.starts_with('E') || l.starts_with('F'))).fold(
        String::new(),
        |mut s, l| {
            s.push_str(l);
            s.push('\n');
            s
        },
    )
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/kubeadm-texts").join(format!("{name}.txt"))
}

/// The fixture's headers for a capture by `test` from `program`: the existing
/// `# source:` (or `f`'s), the new origin, expect and printed-by, then the
/// existing `# note:`/`# not:` and any other headers.
fn headers(f: &Fixture, origin: &str, test: &str, existing: &str) -> String {
    let keep = |key: &str| existing.lines().find(|l| l.starts_with(&format!("# {key}:"))).map(str::to_string);
    let mut h = vec![
        keep("source").unwrap_or_else(|| format!("# source: {}", f.source)),
        format!("# origin: {origin}"),
        format!("# expect: {}", f.expect),
        format!("# printed-by: {}", f.printed_by),
        format!("# captured-by: firstboot/tests/real_failures.rs {test}"),
    ];
    let ours = ["source", "origin", "expect", "printed-by", "captured-by"];
    h.extend(
        existing
            .lines()
            .filter(|l| l.starts_with("# ") && !ours.iter().any(|k| l.starts_with(&format!("# {k}:"))))
            .map(str::to_string),
    );
    h.join("\n")
}

/// Asserts `text` (what the real program printed in `sandbox`) is diagnosed as
/// `f.expect` and is the fixture's body; with `KILN_CAPTURE=1` writes the fixture.
fn check(f: &Fixture, origin: &str, test: &str, text: &str, sandbox: &Path) {
    let found: Vec<&str> = diagnose(text).into_iter().map(|d| d.id).collect();
    assert_eq!(found.first().copied(), Some(f.expect), "{}: the real text is diagnosed as {found:?}:\n{text}", f.name);
    let path = fixture_path(f.name);
    let raw = std::fs::read_to_string(&path).unwrap_or_default();
    let (head, body) = raw.split_once("\n\n").unwrap_or((raw.as_str(), ""));
    if std::env::var_os("KILN_CAPTURE").is_some_and(|v| v == "1") {
        let file = format!("{}\n\n{}\n", headers(f, origin, test, head), text.trim_end());
        std::fs::write(&path, file).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    assert!(!raw.is_empty(), "{} is missing: capture it with KILN_CAPTURE=1", path.display());
    assert!(head.lines().any(|l| l == format!("# origin: {origin}")), "{}: its origin is not `{origin}`", f.name);
    assert!(head.lines().any(|l| l == format!("# expect: {}", f.expect)), "{}: not `# expect: {}`", f.name, f.expect);
    assert_eq!(
        normalise(body, sandbox),
        normalise(text, sandbox),
        "{} is not what the real program prints now (re-capture with KILN_CAPTURE=1 if the change is upstream's)",
        path.display()
    );
}

/// The real `kubeadm init --kubernetes-version V` in `sandbox`; its text.
fn kubeadm_init(sandbox: &Sandbox, prefix: &[&str], version: &str) -> String {
    let kubeadm = real_bins::node(version).join("kubeadm");
    let kubeadm = kubeadm.to_string_lossy();
    let mut argv = prefix.to_vec();
    argv.extend([kubeadm.as_ref(), "init", "--kubernetes-version", version]);
    sandbox.run(&argv, 60).text
}

const V34: &str = "v1.34.2";
const V33: &str = "v1.33.6";

fn kubelet(version: &str) -> PathBuf {
    real_bins::node(version).join("kubelet")
}

/// Scenario 1: something listens on 6443 and 10250 (a previous install's API
/// server and kubelet) → `[ERROR Port-6443]`, `[ERROR Port-10250]`.
#[test]
fn port_in_use_from_the_real_kubeadm() {
    let s = Sandbox::new(&kubelet(V34)).containerd(true).setup(
        "python3 -c 'import socket,time\nfor p in (6443, 10250):\n  s=socket.socket(); s.bind((\"0.0.0.0\", p)); s.listen(); globals()[str(p)]=s\nopen(\"/run/held\",\"w\").close()\ntime.sleep(600)' &\nuntil [ -e /run/held ]; do sleep 0.05; done",
    );
    let f = Fixture {
        name: "port-in-use",
        expect: "port-in-use",
        source: "kubernetes/kubernetes cmd/kubeadm/app/preflight/checks.go PortOpenCheck",
        printed_by: "kubeadm init",
    };
    init_case("port_in_use_from_the_real_kubeadm", &f, &s, V34, &[]);
}

/// Scenario 2: a previous init's static-pod manifests are still there →
/// `[ERROR FileAvailable--etc-kubernetes-manifests-…]`.
#[test]
fn leftover_files_from_the_real_kubeadm() {
    let s = Sandbox::new(&kubelet(V34)).containerd(true).setup(
        "mkdir -p /etc/kubernetes/manifests && for c in kube-apiserver kube-controller-manager kube-scheduler etcd; do echo 'kind: Pod' > /etc/kubernetes/manifests/$c.yaml; done",
    );
    let f = Fixture {
        name: "file-available",
        expect: "leftover-files",
        source: "kubernetes/kubernetes cmd/kubeadm/app/preflight/checks.go FileAvailableCheck",
        printed_by: "kubeadm init",
    };
    init_case("leftover_files_from_the_real_kubeadm", &f, &s, V34, &[]);
}

/// Scenario 3: no container runtime (no socket): kubeadm v1.34 only warns in
/// the checks (`addCommonChecks`: "Couldn't create the interface used for
/// talking to the container runtime") and fails when it pulls the images.
#[test]
fn runtime_not_running_from_the_real_kubeadm() {
    let s = Sandbox::new(&kubelet(V34));
    let f = Fixture {
        name: "runtime-not-running-1.34",
        expect: "runtime-not-running",
        source: "kubernetes/kubernetes cmd/kubeadm/app/preflight/checks.go addCommonChecks (the warning) and RunPullImagesCheck, cmd/kubeadm/app/util/runtime/runtime.go Connect \"failed to create new CRI runtime service\" (v1.34)",
        printed_by: "kubeadm init",
    };
    check(
        &f,
        &origin("kubeadm", V34),
        "runtime_not_running_from_the_real_kubeadm",
        &kubeadm_init(&s, &[], V34),
        s.path(),
    );
}

/// Scenario 4: containerd runs with its CRI plugin but no registry is reachable
/// and no image is imported → `[ERROR ImagePull]` for every image.
#[test]
fn image_pull_from_the_real_kubeadm_and_containerd() {
    let s = Sandbox::new(&kubelet(V34)).containerd(true);
    let f = Fixture {
        name: "image-pull",
        expect: "image-pull",
        source: "kubernetes/kubernetes cmd/kubeadm/app/preflight/checks.go ImagePullCheck",
        printed_by: "kubeadm init",
    };
    init_case("image_pull_from_the_real_kubeadm_and_containerd", &f, &s, V34, &[]);
}

/// Scenario 5: containerd with `disabled_plugins = ["io.containerd.grpc.v1.cri"]`
/// (Docker's containerd.io package ships that) → kubeadm's CRI error.
#[test]
fn cri_plugin_disabled_from_the_real_kubeadm_and_containerd() {
    let s = Sandbox::new(&kubelet(V34)).containerd(false);
    let f = Fixture {
        name: "cri-plugin-disabled-1.34",
        expect: "cri-plugin-disabled",
        source: "kubernetes/kubernetes cmd/kubeadm/app/util/runtime/runtime.go Connect \"failed to create new CRI runtime service\" wrapping k8s.io/cri-client remote_runtime.go validateServiceConnection (v1.34)",
        printed_by: "kubeadm init",
    };
    init_case("cri_plugin_disabled_from_the_real_kubeadm_and_containerd", &f, &s, V34, &[]);
}

/// Scenario 6: kubeadm v1.33.6 with the v1.34.2 kubelet on `PATH` →
/// `[ERROR KubeletVersion]`.
#[test]
fn kubelet_version_skew_from_the_real_kubeadm() {
    let s = Sandbox::new(&kubelet(V34)).containerd(true);
    let f = Fixture {
        name: "kubelet-version",
        expect: "kubelet-version-skew",
        source: "kubernetes/kubernetes cmd/kubeadm/app/preflight/checks.go KubeletVersionCheck",
        printed_by: "kubeadm init",
    };
    check(
        &f,
        &origin("kubeadm", V33),
        "kubelet_version_skew_from_the_real_kubeadm",
        &kubeadm_init(&s, &[], V33),
        s.path(),
    );
}

/// Scenario 7: one CPU (`taskset -c 0`: Go's `runtime.NumCPU` counts the
/// affinity mask) → `[ERROR NumCPU]`.
#[test]
fn not_enough_cpus_from_the_real_kubeadm() {
    let s = Sandbox::new(&kubelet(V34)).containerd(true);
    let f = Fixture {
        name: "numcpu",
        expect: "not-enough-cpus",
        source: "kubernetes/kubernetes cmd/kubeadm/app/preflight/checks.go NumCPUCheck",
        printed_by: "kubeadm init",
    };
    init_case("not_enough_cpus_from_the_real_kubeadm", &f, &s, V34, &["taskset", "-c", "0"]);
}

/// A KubeletConfiguration the kubelet can run standalone with (no API server:
/// webhook authentication and authorization need one, `cmd/kubelet/app/server.go`
/// "no client provided, cannot use webhook authentication").
const STANDALONE_KUBELET: &str = "mkdir -p /var/lib/kubelet && printf 'apiVersion: kubelet.config.k8s.io/v1beta1\\nkind: KubeletConfiguration\\nfailSwapOn: true\\ncgroupDriver: cgroupfs\\nauthentication:\\n  webhook:\\n    enabled: false\\nauthorization:\\n  mode: AlwaysAllow\\ncontainerRuntimeEndpoint: unix:///run/containerd/containerd.sock\\n' > /var/lib/kubelet/config.yaml";

/// The real kubelet standalone on `/var/lib/kubelet/config.yaml`: its error lines.
fn kubelet_run(s: &Sandbox) -> String {
    let bin = kubelet(V34);
    let o = s.run(&[&bin.to_string_lossy(), "--config", "/var/lib/kubelet/config.yaml"], 60);
    assert_eq!(o.code, Some(1), "{}", o.text);
    kubelet_errors(&o.text)
}

/// Scenario 8: the kubelet v1.34.2 with `failSwapOn: true` and `/proc/swaps`
/// listing a swap file (a file bound over the sandbox's `/proc/swaps`; the
/// kubelet reads it, `pkg/kubelet/cm/swap_util.go`) refuses to run.
#[test]
fn swap_on_from_the_real_kubelet() {
    let s = Sandbox::new(&kubelet(V34)).containerd(true).setup(&format!(
        "printf 'Filename\\t\\t\\t\\tType\\t\\tSize\\t\\tUsed\\t\\tPriority\\n/swapfile                               file\\t\\t4194300\\t\\t0\\t\\t-2\\n' > \"$S/swaps\" && mount --bind \"$S/swaps\" /proc/swaps\n{STANDALONE_KUBELET}"
    ));
    let f = Fixture {
        name: "kubelet-swap",
        expect: "swap-on",
        source: "kubernetes/kubernetes pkg/kubelet/cm/container_manager_linux.go NewContainerManager \"running with swap on is not supported, please disable swap or set --fail-swap-on flag to false\", wrapped by cmd/kubelet/app/server.go run \"failed to run Kubelet: %w\", logged by component-base/cli run.go \"command failed\" (v1.34)",
        printed_by: "kubelet (its error lines, as journalctl -u kubelet -p err lists them)",
    };
    let text = kubelet_run(&s);
    check(&f, &origin("kubelet", V34), "swap_on_from_the_real_kubelet", &text, s.path());
    check_journal_line("kubelet-swap-journal", &text, s.path());
}

/// Scenario 8b: the kubelet's `--config` names a file that does not exist. Alone
/// this is no failure: on a kiln image the kubelet crash-loops so until kubeadm
/// writes its configuration (`healthy-kubelet-before-kubeadm.txt`), so it is
/// diagnosed only after kubeadm said it wrote the file (`kubelet-config-missing.txt`).
/// Both fixtures' journal line is the real kubelet's.
#[test]
fn kubelet_config_missing_from_the_real_kubelet() {
    let s = Sandbox::new(&kubelet(V34));
    let text = kubelet_run(&s);
    let found: Vec<&str> = diagnose(&text).into_iter().map(|d| d.id).collect();
    assert!(found.is_empty(), "the kubelet alone before kubeadm ran is diagnosed as {found:?}:\n{text}");
    for name in ["kubelet-config-missing", "healthy-kubelet-before-kubeadm"] {
        check_journal_line(name, &text, s.path());
    }
}

/// The journal line of fixture `name` (`… kubelet[PID]: <klog line>`) whose
/// source location is that of `captured` (one klog line) says what `captured` says.
fn check_journal_line(name: &str, captured: &str, sandbox: &Path) {
    let captured = captured.trim_end();
    let at = captured.split_whitespace().nth(3).expect("klog's file:line]");
    let path = fixture_path(name);
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let line = raw
        .lines()
        .filter(|l| l.contains(" kubelet["))
        .find_map(|l| l.split_once("]: ").map(|(_, klog)| klog).filter(|k| k.split_whitespace().nth(3) == Some(at)))
        .unwrap_or_else(|| {
            panic!("{}: no kubelet journal line from {at}; the real kubelet printed:\n{captured}", path.display())
        });
    assert_eq!(
        normalise(line, sandbox),
        normalise(captured, sandbox),
        "{}: the kubelet's line is not the real one",
        path.display()
    );
}

/// Scenario 8c: the kubelet with no container runtime behind its endpoint.
#[test]
fn runtime_not_running_from_the_real_kubelet() {
    let s = Sandbox::new(&kubelet(V34)).setup(STANDALONE_KUBELET);
    let f = Fixture {
        name: "kubelet-runtime-not-running",
        expect: "runtime-not-running",
        source: "kubernetes/kubernetes cmd/kubelet/app/server.go run \"failed to run Kubelet: %w\" wrapping k8s.io/cri-client remote_runtime.go validateServiceConnection \"validate CRI v1 runtime API for endpoint %q\" (v1.34)",
        printed_by: "kubelet (its error lines, as journalctl -u kubelet -p err lists them)",
    };
    check(&f, &origin("kubelet", V34), "runtime_not_running_from_the_real_kubelet", &kubelet_run(&s), s.path());
}

/// Scenario 9: sockets at two of kubeadm's known CRI endpoints
/// (`util/runtime/runtime.go` `defaultKnownCRISockets`: containerd, CRI-O,
/// cri-dockerd) and no `--cri-socket`.
#[test]
fn multiple_cri_endpoints_from_the_real_kubeadm() {
    let s = Sandbox::new(&kubelet(V34)).setup(
        "mkdir -p /run/containerd /run/crio && python3 -c 'import socket,sys,time\nheld=[]\nfor p in sys.argv[1:]:\n  s=socket.socket(socket.AF_UNIX); s.bind(p); s.listen(); held.append(s)\nopen(\"/run/held\",\"w\").close()\ntime.sleep(600)' /run/containerd/containerd.sock /run/crio/crio.sock &\nuntil [ -e /run/held ]; do sleep 0.05; done",
    );
    let f = Fixture {
        name: "multiple-cri",
        expect: "multiple-cri-endpoints",
        source: "kubernetes/kubernetes cmd/kubeadm/app/util/runtime/runtime.go detectCRISocketImpl",
        printed_by: "kubeadm init",
    };
    init_case("multiple_cri_endpoints_from_the_real_kubeadm", &f, &s, V34, &[]);
}

/// A `kubeadm init` scenario: kubeadm `version` run with `prefix` in `s`, its
/// text checked against fixture `f` as captured by `test`.
fn init_case(test: &str, f: &Fixture, s: &Sandbox, version: &str, prefix: &[&str]) {
    check(f, &origin("kubeadm", version), test, &kubeadm_init(s, prefix, version), s.path());
}

/// Scenario 10: `ip_forward` off (kiln's sysctl drop-in missing) →
/// `[ERROR FileContent--proc-sys-net-ipv4-ip_forward]`.
#[test]
fn ip_forward_off_from_the_real_kubeadm() {
    let s = Sandbox::new(&kubelet(V34)).containerd(true).setup("sysctl -qw net.ipv4.ip_forward=0");
    let f = Fixture {
        name: "ip-forward",
        expect: "ip-forward",
        source: "kubernetes/kubernetes cmd/kubeadm/app/preflight/checks_linux.go addIPv4Checks",
        printed_by: "kubeadm init",
    };
    init_case("ip_forward_off_from_the_real_kubeadm", &f, &s, V34, &[]);
}

/// Scenario 11: a previous etcd's data left in `/var/lib/etcd` →
/// `[ERROR DirAvailable--var-lib-etcd]`.
#[test]
fn etcd_data_left_from_the_real_kubeadm() {
    let s = Sandbox::new(&kubelet(V34))
        .containerd(true)
        .setup("mkdir -p /var/lib/etcd/member && : > /var/lib/etcd/member/wal");
    let f = Fixture {
        name: "dir-available",
        expect: "leftover-files",
        source: "kubernetes/kubernetes cmd/kubeadm/app/preflight/checks.go DirAvailableCheck",
        printed_by: "kubeadm init",
    };
    init_case("etcd_data_left_from_the_real_kubeadm", &f, &s, V34, &[]);
}

/// Scenario 12: kubeadm v1.34.2 asked for a v1.32 control plane (node.toml's
/// `kubernetes_version` older than the image's kubeadm supports).
#[test]
fn control_plane_version_skew_from_the_real_kubeadm() {
    let s = Sandbox::new(&kubelet(V34));
    let f = Fixture {
        name: "version-skew-init",
        expect: "control-plane-version-skew",
        source: "kubernetes/kubernetes cmd/kubeadm/app/util/config/common.go NormalizeKubernetesVersion",
        printed_by: "kubeadm init",
    };
    let kubeadm = real_bins::node(V34).join("kubeadm");
    let text = s.run(&[&kubeadm.to_string_lossy(), "init", "--kubernetes-version", "v1.32.4"], 60).text;
    check(&f, &origin("kubeadm", V34), "control_plane_version_skew_from_the_real_kubeadm", &text, s.path());
}

/// A control plane of the real etcd v3.6.5, kube-apiserver v1.34.2 and
/// kube-controller-manager v1.34.2 (only its `bootstrapsigner` controller, which
/// signs `cluster-info` for each token, `controller/bootstrap/bootstrapsigner.go`;
/// the node lifecycle controller would mark the Node below NotReady) on
/// 10.0.0.10, made as `kubeadm init` makes one (its own `certs all`, `kubeconfig
/// super-admin`, `etcd local` and `control-plane` phases; the three run
/// as plain processes with the commands of the manifests kubeadm wrote, which
/// are then moved out of `/etc/kubernetes/manifests`; its files under
/// `$S/cp`, so a join on the same sandbox finds none of them), then `upload-config
/// all`, `bootstrap-token` with the token `abcdef.0123456789abcdef` and `addon
/// kube-proxy` (a joining kubeadm reads its ConfigMap), and a second token
/// `ghijkl.0123456789abcdef` for signing only (a Secret with only
/// `usage-bootstrap-signing`, `kubeadm token create` refuses one: cluster-info is
/// signed for it, the API server does not authenticate it); both signatures are
/// awaited; `$PIN` is
/// its CA's pin, a Node `node-1` is Ready.
fn cluster(s: Sandbox) -> Sandbox {
    let node = real_bins::node(V34);
    let cp =
        real_bins::target("CONTROL_PLANE_V1_34_2", "control-plane", &["kube-apiserver", "kube-controller-manager"]);
    let etcd = real_bins::target("ETCD", "etcd", &["etcd"]);
    s.setup(&format!(
        r#"K='{kubeadm}'; C='{kubectl}' A="$S/cp/super-admin.conf"
mkdir -p "$S/cp"
printf 'apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nbootstrapTokens:\n- token: abcdef.0123456789abcdef\nlocalAPIEndpoint:\n  advertiseAddress: 10.0.0.10\nnodeRegistration:\n  name: node-1\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: v1.34.2\ncertificatesDir: %s/cp/pki\netcd:\n  local:\n    dataDir: %s/cp/etcd\n' "$S" "$S" > "$S/cp/kubeadm.yaml"
"$K" init phase certs all --config "$S/cp/kubeadm.yaml"
"$K" init phase kubeconfig super-admin --config "$S/cp/kubeadm.yaml" --kubeconfig-dir "$S/cp"
"$K" init phase etcd local --config "$S/cp/kubeadm.yaml"
"$K" init phase control-plane apiserver --config "$S/cp/kubeadm.yaml"
"$K" init phase kubeconfig controller-manager --config "$S/cp/kubeadm.yaml" --kubeconfig-dir "$S/cp"
"$K" init phase control-plane controller-manager --config "$S/cp/kubeadm.yaml"
sed -i "s|/etc/kubernetes/controller-manager.conf|$S/cp/controller-manager.conf|g" /etc/kubernetes/manifests/kube-controller-manager.yaml
mv /etc/kubernetes/manifests "$S/cp/manifests"
start() {{ log=$1; bin=$2; eval "set -- $(python3 -c 'import sys,yaml,shlex; print(" ".join(shlex.quote("--controllers=bootstrapsigner" if a.startswith("--controllers=") else a) for a in yaml.safe_load(open(sys.argv[1]))["spec"]["containers"][0]["command"][1:]))' "$3")"; "$bin" "$@" > "$log" 2>&1 & }}
start "$S/etcd.log" '{etcd}' "$S/cp/manifests/etcd.yaml"
start "$S/apiserver.log" '{apiserver}' "$S/cp/manifests/kube-apiserver.yaml"
start "$S/controller-manager.log" '{controller_manager}' "$S/cp/manifests/kube-controller-manager.yaml"
n=0; until "$C" --kubeconfig "$A" get --raw /readyz >/dev/null 2>&1; do
  n=$((n+1)); [ $n -lt 480 ] || {{ tail -20 "$S/etcd.log" "$S/apiserver.log"; exit 1; }}; sleep 0.25
done
"$K" init phase upload-config all --config "$S/cp/kubeadm.yaml" --kubeconfig "$A"
"$K" init phase bootstrap-token --config "$S/cp/kubeadm.yaml" --kubeconfig "$A"
"$K" init phase addon kube-proxy --config "$S/cp/kubeadm.yaml" --kubeconfig "$A"
echo '{{"apiVersion":"v1","kind":"Secret","type":"bootstrap.kubernetes.io/token","metadata":{{"name":"bootstrap-token-ghijkl","namespace":"kube-system"}},"stringData":{{"token-id":"ghijkl","token-secret":"0123456789abcdef","usage-bootstrap-signing":"true"}}}}' | "$C" --kubeconfig "$A" create -f - >/dev/null
for id in abcdef ghijkl; do
  n=0; until "$C" --kubeconfig "$A" -n kube-public get configmap cluster-info -o "jsonpath={{.data.jws-kubeconfig-$id}}" | grep -q .; do
    n=$((n+1)); [ $n -lt 240 ] || {{ echo "cluster-info was never signed for $id"; tail -20 "$S/controller-manager.log"; exit 1; }}; sleep 0.25
  done
done
export C A
PIN=sha256:$(openssl x509 -pubkey -noout -in "$S/cp/pki/ca.crt" | openssl pkey -pubin -outform der | sha256sum | cut -d' ' -f1)
echo '{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"node-1"}}}}' | "$C" --kubeconfig "$A" create -f -
"$C" --kubeconfig "$A" patch node node-1 --subresource=status --type=merge -p '{{"status":{{"conditions":[{{"type":"Ready","status":"True","reason":"KubeletReady","message":"kubelet is posting ready status","lastHeartbeatTime":"2026-01-01T00:00:00Z","lastTransitionTime":"2026-01-01T00:00:00Z"}}]}}}}'
export PIN"#,
        kubeadm = node.join("kubeadm").display(),
        kubectl = node.join("kubectl").display(),
        etcd = etcd.join("etcd").display(),
        apiserver = cp.join("kube-apiserver").display(),
        controller_manager = cp.join("kube-controller-manager").display(),
    ))
}

/// `join NAME TOKEN PIN [ENDPOINT]`: prints `=== NAME`, runs the real
/// `kubeadm join --config` ($1) with that token, CA pin and endpoint
/// (10.0.0.10:6443 unless given), node name `node-1` and a 10 s discovery
/// timeout, then removes what it wrote; `$rc` is its exit code.
const JOIN_FN: &str = r#"K=$1
join() {
  echo "=== $1"
  printf 'apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\ndiscovery:\n  bootstrapToken:\n    apiServerEndpoint: %s\n    token: %s\n    caCertHashes:\n    - %s\ntimeouts:\n  discovery: 10s\nnodeRegistration:\n  name: node-1\n' "${4:-10.0.0.10:6443}" "$2" "$3" > "$S/join.yaml"
  "$K" join --config "$S/join.yaml"; rc=$?
  rm -rf /etc/kubernetes/pki /etc/kubernetes/bootstrap-kubelet.conf /etc/kubernetes/kubelet.conf /var/lib/kubelet
}
"#;

/// Runs `calls` (lines of `join …`, see `JOIN_FN`) in `s` and checks each
/// `(fixture, expect, source)` against the text its `join` printed.
fn joins(s: &Sandbox, test: &str, calls: &str, cases: &[(&'static str, &'static str, &'static str)]) {
    let kubeadm = real_bins::node(V34).join("kubeadm");
    let script = format!("{JOIN_FN}{calls}\nexit $rc\n");
    let text = s.run(&["sh", "-c", &script, "sh", &kubeadm.to_string_lossy()], 240).text;
    for &(name, expect, source) in cases {
        let part = text
            .split("=== ")
            .find_map(|p| p.strip_prefix(name).and_then(|p| p.strip_prefix('\n')))
            .unwrap_or_else(|| panic!("no `=== {name}` in:\n{text}"));
        let f = Fixture { name, expect, source, printed_by: "kubeadm join" };
        check(&f, &origin("kubeadm", V34), test, part, s.path());
    }
}

/// A TLS-terminating proxy on 10.0.0.10:PORT to the API server, presenting a
/// certificate for 10.0.0.10 signed by the cluster CA that has expired
/// (`expired`) or is not valid yet (`future`): python3 with `cryptography`
/// makes it, `asyncio` with `ssl` serves it (`tls_proxy MODE PORT`, in the background).
const TLS_PROXY: &str = r#"tls_proxy() {
python3 -c 'import asyncio,datetime,ipaddress,ssl,sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
pki, mode, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
ca = x509.load_pem_x509_certificate(open(pki + "/ca.crt", "rb").read())
ca_key = serialization.load_pem_private_key(open(pki + "/ca.key", "rb").read(), None)
key = ec.generate_private_key(ec.SECP256R1())
now = datetime.datetime.now(datetime.timezone.utc)
start, end = (now - datetime.timedelta(days=2), now - datetime.timedelta(days=1)) if mode == "expired" else (now + datetime.timedelta(days=1), now + datetime.timedelta(days=2))
cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
  .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
  .not_valid_before(start).not_valid_after(end)
  .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("10.0.0.10"))]), False)
  .sign(ca_key, hashes.SHA256()))
d = sys.argv[4]
open(d + "/p.crt", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(d + "/p.key", "wb").write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
srv_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); srv_ctx.load_cert_chain(d + "/p.crt", d + "/p.key")
up_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); up_ctx.check_hostname = False; up_ctx.verify_mode = ssl.CERT_NONE
async def pipe(r, w):
  try:
    while True:
      data = await r.read(65536)
      if not data: break
      w.write(data); await w.drain()
  except Exception: pass
  finally: w.close()
async def handle(cr, cw):
  try: ur, uw = await asyncio.open_connection("10.0.0.10", 6443, ssl=up_ctx)
  except Exception: cw.close(); return
  await asyncio.gather(pipe(cr, uw), pipe(ur, cw))
async def main():
  srv = await asyncio.start_server(handle, "10.0.0.10", port, ssl=srv_ctx)
  open(d + "/ready", "w").close()
  await srv.serve_forever()
asyncio.run(main())' "$S/cp/pki" "$1" "$2" "$3" >/dev/null 2>&1 &
until [ -e "$3/ready" ]; do sleep 0.05; done
}
mkdir -p "$S/expired" "$S/future"
tls_proxy expired 6444 "$S/expired"
tls_proxy future 6445 "$S/future"
join cert-expired abcdef.0123456789abcdef "$PIN" 10.0.0.10:6444
join clock-behind abcdef.0123456789abcdef "$PIN" 10.0.0.10:6445
"#;

/// Puts another CA into `cluster-info` (as a TLS-terminating load balancer
/// would show the node another certificate), waits until the bootstrapsigner
/// has signed the edited ConfigMap again, and joins pinning that CA: kubeadm's
/// second, verified request then fails on the API server's certificate.
const X509: &str = r#"openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca -keyout "$S/other.key" -out "$S/other.crt" 2>/dev/null
other=sha256:$(openssl x509 -pubkey -noout -in "$S/other.crt" | openssl pkey -pubin -outform der | sha256sum | cut -d' ' -f1)
sig() { "$C" --kubeconfig "$A" -n kube-public get configmap cluster-info -o 'jsonpath={.data.jws-kubeconfig-abcdef}'; }
old=$(sig)
"$C" --kubeconfig "$A" -n kube-public get configmap cluster-info -o json | python3 -c 'import base64,json,sys,yaml
cm=json.load(sys.stdin); kc=yaml.safe_load(cm["data"]["kubeconfig"])
kc["clusters"][0]["cluster"]["certificate-authority-data"]=base64.b64encode(open(sys.argv[1],"rb").read()).decode()
cm["data"]["kubeconfig"]=yaml.safe_dump(kc); print(json.dumps(cm))' "$S/other.crt" | "$C" --kubeconfig "$A" replace -f - >/dev/null
n=0; while [ "$(sig)" = "$old" ] && [ $n -lt 240 ]; do n=$((n+1)); sleep 0.25; done
join x509-unknown-authority-join abcdef.0123456789abcdef "$other""#;

/// A CA pin no cluster here has.
const OTHER_PIN: &str = "sha256:$(printf 'not the cluster CA' | sha256sum | cut -d' ' -f1)";

/// Scenarios 13-17, against one real control plane (`cluster`; starting it
/// takes most of the time): `kubeadm join` v1.34.2 with a token the cluster
/// does not know, a known token ID with the wrong secret, a CA pin that is not
/// the cluster's, the name of a Ready Node, a token that signs but does not
/// authenticate (discovery passes, reading `kubeadm-config` is refused), and (after the cluster's
/// `kubeadm-config` is edited to say v1.32.4) a control plane too old for it,
/// (`TLS_PROXY`) an API server certificate that has expired or is not valid
/// yet, and (`X509`) an API server certificate the CA it pinned did not sign.
#[test]
fn join_failures_against_a_real_control_plane() {
    let s = cluster(Sandbox::new(&kubelet(V34)).containerd(true));
    let calls = format!(
        r#"join token-unknown zzzzzz.0123456789abcdef "$PIN"
join token-bad-secret abcdef.ffffffffffffffff "$PIN"
join ca-pin-mismatch abcdef.0123456789abcdef "{OTHER_PIN}"
join node-name-taken abcdef.0123456789abcdef "$PIN"
join unauthorized ghijkl.0123456789abcdef "$PIN"
{TLS_PROXY}"$C" --kubeconfig "$A" -n kube-system get configmap kubeadm-config -o yaml | sed 's/kubernetesVersion: v1.34.2/kubernetesVersion: v1.32.4/' | "$C" --kubeconfig "$A" replace -f - >/dev/null
join version-skew abcdef.0123456789abcdef "$PIN"
{X509}"#
    );
    let token = "kubernetes/kubernetes cmd/kubeadm/app/discovery/token/token.go";
    joins(
        &s,
        "join_failures_against_a_real_control_plane",
        &calls,
        &[
            ("token-unknown", "token-unknown", token),
            ("token-bad-secret", "token-unknown", token),
            ("ca-pin-mismatch", "ca-pin-mismatch", token),
            ("node-name-taken", "node-name-taken", "kubernetes/kubernetes cmd/kubeadm/app/cmd/phases/join/kubelet.go"),
            (
                "unauthorized",
                "unauthorized",
                "kubernetes/kubernetes cmd/kubeadm/app/cmd/join.go fetchInitConfiguration",
            ),
            (
                "version-skew",
                "control-plane-version-skew",
                "kubernetes/kubernetes cmd/kubeadm/app/util/config/common.go",
            ),
            ("x509-unknown-authority-join", "x509-unknown-authority", token),
            ("cert-expired", "cert-expired", token),
            ("clock-behind", "certificate-not-yet-valid", token),
        ],
    );
}

/// Scenarios 18-20, with no control plane: nothing listens on the endpoint's
/// port (10.0.0.10:6443, the node's own address), the endpoint's address has no
/// host (10.0.0.20 on the node's link: ARP fails), and a node that joined
/// before (`/etc/kubernetes/kubelet.conf` and `pki/ca.crt` left).
#[test]
fn join_failures_without_a_control_plane() {
    let s = Sandbox::new(&kubelet(V34)).containerd(true);
    let calls = format!(
        r#"join api-refused abcdef.0123456789abcdef "{OTHER_PIN}"
join api-no-route abcdef.0123456789abcdef "{OTHER_PIN}" 10.0.0.20:6443
mkdir -p /etc/kubernetes/pki && echo 'kind: Config' > /etc/kubernetes/kubelet.conf && echo cert > /etc/kubernetes/pki/ca.crt
join leftover-join abcdef.0123456789abcdef "{OTHER_PIN}""#
    );
    let discovery = "kubernetes/kubernetes cmd/kubeadm/app/discovery/token/token.go getClusterInfo";
    joins(
        &s,
        "join_failures_without_a_control_plane",
        &calls,
        &[
            ("api-refused", "api-server-unreachable", discovery),
            ("api-no-route", "api-server-unreachable", discovery),
            (
                "leftover-join",
                "leftover-files",
                "kubernetes/kubernetes cmd/kubeadm/app/preflight/checks.go FileAvailableCheck",
            ),
        ],
    );
}

/// kube-proxy's image (`tests/k8s/images --only kube-proxy`: the real kube-proxy
/// and the host's Debian iptables, nft backend) in the sandbox's network
/// namespace, its root the image's layer (`chroot`, `/dev` and `/proc` bound in,
/// as a container has them), configured from the ConfigMap kubeadm's `addon
/// kube-proxy` phase wrote (its kubeconfig swapped for the super-admin's, and
/// conntrack left alone: `nf_conntrack_max` is the host's, global), against the
/// real control plane of [`cluster`]: it programs the `kubernetes` Service
/// (`KUBE-SVC-NPX46M4PTMTKRN6Y`, 10.96.0.1:443 → 10.0.0.10:6443) with the
/// image's iptables, and the API server answers `/readyz` through the Service's
/// cluster IP (what CoreDNS needs before it becomes Ready).
#[test]
fn kube_proxy_from_its_image_routes_the_kubernetes_service_of_a_real_control_plane() {
    let s = Sandbox::new(&kubelet(V34));
    let images = s.path().join("images");
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let o = Command::new(repo.join("tests/k8s/images"))
        .args(["--only", "kube-proxy", V34, "amd64"])
        .arg(&images)
        .output()
        .expect("tests/k8s/images (python3) runs");
    assert!(o.status.success(), "tests/k8s/images --only kube-proxy:\n{}", String::from_utf8_lossy(&o.stderr));
    let s = cluster(s).setup(KUBE_PROXY_ROOT);
    let out = s.run_ok(&["sh", "-c", KUBE_PROXY_RUN], 180).text;
    let nat = out.split("=== nat\n").nth(1).unwrap_or_default();
    for rule in [
        "-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment \"default/kubernetes:https cluster IP\" -m tcp --dport 443 -j KUBE-SVC-NPX46M4PTMTKRN6Y",
        "-j DNAT --to-destination 10.0.0.10:6443",
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully",
    ] {
        assert!(nat.contains(rule), "kube-proxy's rules lack {rule:?}:\n{out}");
    }
    assert!(out.contains("# Generated by iptables-save v1.8.9 (nf_tables)"), "not the image's nft iptables:\n{out}");
    assert!(out.contains("=== readyz\nok"), "/readyz through 10.96.0.1:443:\n{out}");
}

/// The kube-proxy image's layer as a root under `$S/kp` (setup, after [`cluster`]).
const KUBE_PROXY_ROOT: &str = r#"R="$S/kp"; mkdir -p "$R"
L=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["images"][0]["layer_digest"][7:])' "$S/images/images.json")
tar -xOf "$S"/images/kube-proxy_*.tar "blobs/sha256/$L" | tar -C "$R" -x
mkdir -p "$R/dev" "$R/proc" "$R/var/lib/kube-proxy" "$R/run"
mount --rbind /dev "$R/dev"; mount --rbind /proc "$R/proc"
"$C" --kubeconfig "$A" -n kube-system get configmap kube-proxy -o 'jsonpath={.data.config\.conf}' |
  python3 -c 'import sys,yaml; c=yaml.safe_load(sys.stdin); c["clientConnection"]["kubeconfig"]="/var/lib/kube-proxy/admin.conf"; c["conntrack"]={"maxPerCore":0,"min":0,"tcpEstablishedTimeout":"0s","tcpCloseWaitTimeout":"0s"}; print(yaml.safe_dump(c))' > "$R/var/lib/kube-proxy/config.conf"
cp "$A" "$R/var/lib/kube-proxy/admin.conf""#;

/// kubeadm's DaemonSet's command in that root, until the `kubernetes` Service's
/// rules are in; then its nat table and `/readyz` through the cluster IP.
const KUBE_PROXY_RUN: &str = r#"R="$S/kp"
chroot "$R" /usr/local/bin/kube-proxy --config=/var/lib/kube-proxy/config.conf --hostname-override=node-1 > "$S/kube-proxy.log" 2>&1 &
n=0; until chroot "$R" iptables-save -t nat | grep -q -- '-j KUBE-SVC-NPX46M4PTMTKRN6Y'; do
  n=$((n+1)); [ $n -lt 480 ] || { echo "kube-proxy did not program the kubernetes Service"; cat "$S/kube-proxy.log"; exit 1; }; sleep 0.25
done
echo "=== readyz"; "$C" --kubeconfig "$A" --server https://10.96.0.1:443 get --raw /readyz; echo
echo "=== nat"; chroot "$R" iptables-save -t nat"#;

/// The normaliser hides klog's time and pid, ephemeral ports, the scratch path,
/// sha256 pins, RFC 3339 times and the host's cgroup warning, and nothing else: a changed word, port or
/// source line still differs.
#[test]
fn the_normaliser_hides_only_the_volatile_parts() {
    let scratch = Path::new("/tmp/.tmpAbC");
    let a = "W1207 12:17:03.961800      73 checks.go:1046] x\nread udp 127.0.0.1:38626->127.0.0.1:53: refused\n\t[WARNING SystemVerification]: cgroups v1 support is in maintenance mode, please migrate to cgroups v2\n/tmp/.tmpAbC/ctd\n";
    let b = "W0101 01:02:03.000001 9 checks.go:1046] x\nread udp 127.0.0.1:1->127.0.0.1:53: refused\n/tmp/.tmpAbC/ctd";
    assert_eq!(normalise(a, scratch), normalise(b, scratch));
    let pin = |h: &str, t: &str| normalise(&format!("keys \"sha256:{h}\" at {t}"), scratch);
    let (h1, h2) = ("0".repeat(64), "a".repeat(64));
    assert_eq!(pin(&h1, "2026-12-07T12:55:24Z"), pin(&h2, "1970-01-01T00:01:12Z"));
    assert_ne!(pin(&h1, "2026-12-07T12:55:24Z"), pin(&h1[..63], "2026-12-07T12:55:24Z"));
    assert_ne!(pin(&h1, "2026-12-07T12:55:24Z"), pin(&h1, "2026-12-07 12:55:24Z"));
    for changed in [
        "W0101 01:02:03.000001 9 checks.go:1047] x\nread udp 127.0.0.1:1->127.0.0.1:53: refused\n/tmp/.tmpAbC/ctd",
        "E0101 01:02:03.000001 9 checks.go:1046] x\nread udp 127.0.0.1:1->127.0.0.1:53: refused\n/tmp/.tmpAbC/ctd",
        "W0101 01:02:03.000001 9 checks.go:1046] x\nread udp 127.0.0.1:1->127.0.0.1:54: refused\n/tmp/.tmpAbC/ctd",
        "W0101 01:02:03.000001 9 checks.go:1046] x\nread udp 127.0.0.1:1->127.0.0.1:53: refused!\n/tmp/.tmpAbC/ctd",
        "W0101 01:02:03.000001 9 checks.go:1046] x\nread udp 127.0.0.1:1->127.0.0.1:53: refused\n/tmp/.tmpXyZ/ctd",
        "W0101 01:02:03.000001 9 checks.go:1046] x\n\nread udp 127.0.0.1:1->127.0.0.1:53: refused\n/tmp/.tmpAbC/ctd",
    ] {
        assert_ne!(normalise(a, scratch), normalise(changed, scratch), "{changed}");
    }
}
