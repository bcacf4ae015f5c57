//! The kubeadm model (`tests/model/kubeadm`) against the real kubeadm, built from
//! its Go module by `tests/k8s/build` (issue 21, item 3).
//!
//! For every role (init, worker join, control-plane join) × pinned Kubernetes
//! version × IP family × swap policy, `kiln-firstboot run` on a scratch root
//! hands its `--config` file to the model (which records it as
//! `/var/lib/kiln-model/config-0.json` and writes the kubelet's files); then
//!
//! 1. the real `kubeadm config validate --config FILE` must accept that file;
//! 2. the real kubeadm's own `kubelet-start` phase, run with `--dry-run` on the
//!    same file (`kubeadm init phase kubelet-start` / `kubeadm join phase
//!    kubelet-start`: `cmd/kubeadm/app/cmd/phases/{init,join}/kubelet.go`; in
//!    dry-run both write into `$KUBEADM_{INIT,JOIN}_DRYRUN_DIR` instead of
//!    `/var/lib/kubelet`, `cmd/kubeadm/app/constants/constants.go`
//!    `EnvVarInitDryRunDir`/`EnvVarJoinDryRunDir`), must write the same
//!    `config.yaml` (after kiln's `kubeletconfiguration` patch) and the same
//!    `kubeadm-flags.env` as the model.
//!
//! The one change made to kiln's file for the real kubeadm: `patches.directory`
//! (`/etc/kiln/kubeadm-patches`) points into the scratch root, where kiln wrote
//! the patch. The real kubeadm runs with the scratch root's hostname (a UTS
//! namespace; kubeadm compares the node name with `os.Hostname` for
//! `--hostname-override`), the scratch `systemctl` first on `PATH` (kubeadm asks
//! it whether systemd-resolved is active, `componentconfigs/kubelet.go`
//! `mutateResolverConfig`), no network (its own network namespace: kubeadm asks
//! dl.k8s.io for a version when a config names none) and the host's `/`
//! read-only (a private mount namespace), so it can write nowhere but the test's
//! directory.
//!
//! A join in dry-run talks to kubeadm's fake cluster (`util/apiclient/dryrun.go`):
//! its `cluster-info` is signed for the token `abcdef.abcdef0123456789` and
//! carries a fixed CA, and its `kubelet-config` ConfigMap is the one the model is
//! given here as the cluster's (`/etc/kiln-model/kubelet-config.json`), so both
//! start from the same base.
//!
//! Where the binaries are: `KILN_K8S_BIN_V1_34_2` (and `_V1_33_6`), set by
//! `scripts/test` from `tests/k8s/build --dir VERSION amd64 node`. Without them
//! the tests fail and print the commands that build them; they never fall back
//! to the model.

mod common;
mod real_bins;

use common::model;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The token whose JWS signature kubeadm's fake `cluster-info` carries
/// (`cmd/kubeadm/app/util/apiclient/dryrun.go`, `getClusterInfoConfigMap`: the
/// `jws-kubeconfig-abcdef` signature is HS256 of its kubeconfig with this secret,
/// in v1.33.6 and v1.34.2).
const DRYRUN_TOKEN: &str = "abcdef.abcdef0123456789";
/// sha256 of the public key of the CA in that fake `cluster-info` (computed with
/// `openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256sum`).
const DRYRUN_CA_PIN: &str = "sha256:3b793efefe27a19f93b0fbe6e637e9c41d0dde8a377d6ab1c0f656bf1136dd8a";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
const CERT: &str = "-----BEGIN CERTIFICATE-----\nY2VydA==\n-----END CERTIFICATE-----\n";

/// kubeadm's fake `kubelet-config` ConfigMap in dry-run
/// (`util/apiclient/dryrun.go`, `getKubeletConfigMap`; the same in v1.33.6 and
/// v1.34.2), as the model's cluster ConfigMap.
fn dryrun_cluster_kubelet_config() -> Value {
    json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": { "enabled": false },
            "webhook": { "enabled": true },
            "x509": { "clientCAFile": "/etc/kubernetes/pki/ca.crt" }
        },
        "authorization": { "mode": "Webhook" },
        "cgroupDriver": "systemd",
        "clusterDNS": ["10.96.0.10"],
        "clusterDomain": "cluster.local",
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "memorySwap": {},
        "resolvConf": "/run/systemd/resolve/resolv.conf",
        "rotateCertificates": true,
        "staticPodPath": "/etc/kubernetes/manifests"
    })
}

/// Every Kubernetes version the shipped profiles pin (`profiles/*.toml`
/// `kubernetes_version`): v1.33.6 and v1.34.2 today, both `kubeadm.k8s.io/v1beta4`
/// (kubeadm >= 1.31).
fn versions() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.strip_prefix("kubernetes_version = \"")?.strip_suffix('"').map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect();
    v.sort();
    v.dedup();
    assert!(!v.is_empty(), "no kubernetes_version in {}", dir.display());
    v
}

/// The directory holding the real kubeadm, kubelet and kubectl for `version`.
fn bin_dir(version: &str) -> PathBuf {
    real_bins::node(version)
}

fn out(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    Init,
    Join,
    ControlPlane,
}

#[derive(Clone, Copy, Debug)]
enum Family {
    V4,
    V6,
}

#[derive(Clone, Copy, Debug)]
enum Swap {
    /// The default: swap off, `failSwapOn: true`.
    Off,
    /// `swap = "limited"`: `failSwapOn: false`, `LimitedSwap`.
    Limited,
}

/// A scratch root for one case, with what `kiln-firstboot run` needs there.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // The kubelet stand-in outlives the run, as kubelet.service does: stop it.
        common::stop_kubelet(&self.root());
    }
}

impl Scratch {
    fn new(version: &str, hostname: &str) -> Scratch {
        let s = Scratch { dir: tempfile::tempdir().expect("a temporary directory") };
        common::node_root(&s.root(), "debian", version, hostname);
        s.write("etc/kiln-model/kubelet-config.json", &dryrun_cluster_kubelet_config().to_string());
        // modprobe and swapoff do to the scratch /proc and /sys what the real ones do.
        let script = r#"#!/bin/sh
case "$(basename "$0")" in
  modprobe) mkdir -p "$ROOT/sys/module/$1"
    if [ "$1" = br_netfilter ]; then mkdir -p "$ROOT/proc/sys/net/bridge"
      for k in bridge-nf-call-iptables bridge-nf-call-ip6tables; do echo 0 > "$ROOT/proc/sys/net/bridge/$k"; done; fi ;;
  swapoff) head -n1 "$ROOT/proc/swaps" > "$ROOT/proc/swaps.new" && mv "$ROOT/proc/swaps.new" "$ROOT/proc/swaps" ;;
esac
exit 0
"#;
        std::fs::create_dir_all(s.path("bin")).expect("bin");
        for tool in ["modprobe", "swapoff", "kubectl", "journalctl"] {
            let p = s.path(&format!("bin/{tool}"));
            std::fs::write(&p, script).expect("stand-in");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        for tool in ["kubeadm", "systemctl"] {
            std::os::unix::fs::symlink(model(tool), s.path(&format!("bin/{tool}"))).expect("symlink");
        }
        s
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn root(&self) -> PathBuf {
        self.path("root")
    }
    fn write(&self, rel: &str, text: &str) {
        common::write(&self.root(), rel, text);
    }
    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root().join(rel)).unwrap_or_default()
    }
    fn env_path(&self) -> String {
        format!("{}:{}", self.path("bin").display(), std::env::var("PATH").unwrap_or_default())
    }
    /// `kiln-firstboot run` against the model in its own network namespace, with
    /// `endpoint`'s address on its loopback and its port held open (joins wait for it).
    fn run_firstboot(&self, family: Family) -> Output {
        let (addr, holder) = match family {
            Family::V4 => ("ip addr add 10.1.0.2/32 dev lo", "socket.AF_INET,socket.SOCK_STREAM);s.bind((\"10.1.0.2\""),
            Family::V6 => {
                ("ip -6 addr add fd00::2/128 dev lo nodad", "socket.AF_INET6,socket.SOCK_STREAM);s.bind((\"fd00::2\"")
            }
        };
        let ready = self.path("ready");
        let script = format!(
            "ip link set lo up && {addr} && \
             python3 -c 'import socket,time;s=socket.socket({holder},6443));s.listen();open(\"{r}\",\"w\").close();time.sleep(60)' >/dev/null 2>&1 </dev/null & \
             n=0; while [ ! -e {r} ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done; exec \"$@\"",
            r = ready.display()
        );
        Command::new("unshare")
            .args(["-rn", "sh", "-c", &script, "sh"])
            .arg(env!("CARGO_BIN_EXE_kiln-firstboot"))
            .arg("--root")
            .arg(self.root())
            .args(["--backoff", "0", "--wait", "5", "run"])
            .env("PATH", self.env_path())
            .env("ROOT", self.root())
            .env("KILN_MODEL_ROOT", self.root())
            .env("KILN_MODEL_KUBELET_LIFETIME", "30")
            .output()
            .expect("unshare runs")
    }
    /// The real kubeadm with this root's hostname, the scratch systemctl first on
    /// PATH and the host's `/` read-only: only the test's directory is writable.
    fn real_kubeadm(&self, kubeadm: &Path, args: &[&str], envs: &[(&str, &Path)]) -> Output {
        let hostname = self.read("etc/hostname");
        let script = "mount --make-rprivate / && mount --bind \"$D\" \"$D\" && mount -o remount,bind,ro / && hostname \"$H\" && exec \"$@\"";
        let mut c = Command::new("unshare");
        c.args(["-rmun", "sh", "-c", script, "sh"])
            .arg(kubeadm)
            .args(args)
            .env("D", self.dir.path())
            .env("H", hostname.trim())
            .env("PATH", self.env_path())
            .env("KILN_MODEL_ROOT", self.root())
            .env("HOME", self.path("home"));
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().expect("unshare runs")
    }
}

/// What kubeadm writes as YAML, read back as JSON with python3-yaml (a package
/// `scripts/test` installs; kubeadm's YAML is plain).
fn yaml_to_json(path: &Path) -> Value {
    let o = Command::new("python3")
        .args(["-c", "import json,sys,yaml;print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"])
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(o.status.success(), "{}: {}", path.display(), out(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The real kubeadm marshals every non-pointer field of the KubeletConfiguration,
/// so fields nobody set appear at their Go zero value (`0s`, `""`, `0`, `{}`,
/// the `"0"` of an empty quantity), which the kubelet reads as unset and
/// defaults. They are dropped before comparing; `false` is kept (kiln's
/// `failSwapOn: false` is a pointer kubeadm writes only when set).
fn drop_zero_values(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.into_iter().map(|(k, v)| (k, drop_zero_values(v))).filter(|(_, v)| !is_zero(v)).collect())
        }
        other => other,
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty() || s == "0s" || s == "0",
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Bool(_) => false,
    }
}

/// `KUBELET_KUBEADM_ARGS="--a=b --c=d"` as its flags.
fn flags(env: &str) -> Vec<String> {
    let line = env.lines().find(|l| l.starts_with("KUBELET_KUBEADM_ARGS=")).unwrap_or_default();
    line.trim_start_matches("KUBELET_KUBEADM_ARGS=").trim_matches('"').split_whitespace().map(str::to_string).collect()
}

/// The `--config` file kiln-firstboot gave the model (recorded as
/// `var/lib/kiln-model/config-0.json`), copied next to the scratch root with
/// `patches.directory` pointing into it, where kiln wrote its patches.
fn kilns_config(s: &Scratch, what: &str) -> PathBuf {
    let text = s.read("var/lib/kiln-model/config-0.json");
    assert!(!text.is_empty(), "{what}: the model recorded no --config file");
    let mut docs: Vec<Value> = text
        .split("\n---\n")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{what}: config-0.json: {e}")))
        .collect();
    for d in &mut docs {
        if let Some(dir) = d.pointer_mut("/patches/directory") {
            let rel = dir.as_str().unwrap_or_default().trim_start_matches('/').to_string();
            *dir = json!(s.root().join(rel).display().to_string());
        }
    }
    let cfg = s.path("kubeadm.json");
    let rendered: Vec<String> = docs.iter().map(|d| serde_json::to_string_pretty(d).unwrap_or_default()).collect();
    std::fs::write(&cfg, rendered.join("\n---\n") + "\n").expect("write config");
    cfg
}

/// One case: kiln-firstboot against the model, then the real kubeadm on the same
/// file. Returns a description of every disagreement (empty: none).
fn case(version: &str, role: Role, family: Family, swap: Swap) -> Vec<String> {
    let bin = bin_dir(version);
    let kubeadm = bin.join("kubeadm");
    let what = format!("{version} {role:?} {family:?} swap {swap:?}");
    let s = Scratch::new(version, "kiln-contract-host");
    let (node_ip, endpoint, pod, svc) = match family {
        Family::V4 => ("10.1.0.2", "10.1.0.2:6443", "10.244.0.0/16", "10.96.0.0/12"),
        Family::V6 => ("fd00::2", "[fd00::2]:6443", "fd00:10:244::/56", "fd00:10:96::/112"),
    };
    let role_name = match role {
        Role::Init => "init",
        Role::Join => "join",
        Role::ControlPlane => "control-plane",
    };
    let mut toml = format!(
        "[cluster]\nname = \"prod\"\ncontrol_plane_endpoint = \"{endpoint}\"\npod_subnet = \"{pod}\"\nservice_subnet = \"{svc}\"\nca_cert_hashes = [\"{DRYRUN_CA_PIN}\"]\nbootstrap_token = \"{DRYRUN_TOKEN}\"\ntoken_ttl = \"48h\"\n[node]\nrole = \"{role_name}\"\nname = \"node-{role_name}\"\nnode_ip = \"{node_ip}\"\n"
    );
    // What node.toml can add to the kubelet's files, in every case: labels
    // (`--node-labels`) and taints (`--register-with-taints` on worker joins only);
    // with limited swap also `[node] kubelet` fields (the patch), extra kubelet
    // flags, and systemd-resolved active (kubeadm then sets `resolvConf`).
    toml.push_str(
        "labels = { \"node.kubernetes.io/pool\" = \"edge\" }\ntaints = [{ key = \"dedicated\", value = \"edge\", effect = \"NoSchedule\" }]\n",
    );
    if let Swap::Limited = swap {
        // serverTLSBootstrap: kubelet serving certificates from the cluster CA (row 37), approved by `approve-csrs`.
        toml.push_str("swap = \"limited\"\nkubelet = { maxPods = 42, serverTLSBootstrap = true }\nkubelet_extra_args = { \"v\" = \"2\" }\n");
        s.write("etc/kiln-model/active-systemd-resolved", "");
    }
    if role != Role::Join {
        toml.push_str("[pki]\n");
        for k in ["ca_cert", "front_proxy_ca_cert", "etcd_ca_cert", "sa_pub"] {
            toml.push_str(&format!("{k} = \"\"\"\n{CERT}\"\"\"\n"));
        }
        for k in ["ca_key", "front_proxy_ca_key", "etcd_ca_key", "sa_key"] {
            toml.push_str(&format!("{k} = \"\"\"\n{KEY}\"\"\"\n"));
        }
    } else {
        toml.push_str(&format!("[pki]\nca_cert = \"\"\"\n{CERT}\"\"\"\n"));
    }
    s.write("etc/kiln/node.toml", &toml);
    let o = s.run_firstboot(family);
    assert!(o.status.success(), "{what}: kiln-firstboot run against the model failed:\n{}", out(&o));

    let cfg = kilns_config(&s, &what);
    let cfg_s = cfg.display().to_string();

    let mut problems = Vec::new();
    let v = s.real_kubeadm(&kubeadm, &["config", "validate", "--config", &cfg_s], &[]);
    if !v.status.success() {
        problems.push(format!(
            "{what}: the real `kubeadm config validate` REJECTS kiln's config:\n{}\n{}",
            out(&v),
            s.read("var/lib/kiln-model/config-0.json")
        ));
        return problems;
    }
    // Accepted without a warning (deprecated fields, defaults overridden): `ok` alone.
    if out(&v).trim() != "ok" {
        problems.push(format!("{what}: the real `kubeadm config validate` warns about kiln's config:\n{}", out(&v)));
    }

    // The real kubelet-start phase, dry-run, into its own directory.
    let dry = s.path("dry");
    std::fs::create_dir_all(&dry).expect("dry-run dir");
    let (cmd, var) =
        if role == Role::Init { ("init", "KUBEADM_INIT_DRYRUN_DIR") } else { ("join", "KUBEADM_JOIN_DRYRUN_DIR") };
    let r = s.real_kubeadm(&kubeadm, &[cmd, "phase", "kubelet-start", "--config", &cfg_s, "--dry-run"], &[(var, &dry)]);
    // A control-plane join's kubelet-start ends, in dry-run, by printing the static
    // pod manifests (`dryrunutil.PrintFilesIfDryRunning`), which only the
    // control-plane-prepare phase writes, and that phase needs an admin.conf a
    // joining node does not have yet. The kubelet's files are written before that
    // step (`cmd/phases/join/kubelet.go`), so that one error is expected there.
    let manifests_only = role == Role::ControlPlane
        && out(&r).contains("error printing files on dryrun")
        && dry.join("config.yaml").is_file()
        && dry.join("kubeadm-flags.env").is_file();
    if !r.status.success() && !manifests_only {
        problems.push(format!("{what}: the real `kubeadm {cmd} phase kubelet-start --dry-run` failed:\n{}", out(&r)));
        return problems;
    }
    let real = drop_zero_values(yaml_to_json(&dry.join("config.yaml")));
    if let Swap::Limited = swap {
        if real["serverTLSBootstrap"] != json!(true) {
            problems.push(format!("{what}: the real kubeadm's config.yaml has no serverTLSBootstrap: true"));
        }
    }
    let modelled: Value = serde_json::from_str(&s.read("var/lib/kubelet/config.yaml"))
        .unwrap_or_else(|e| panic!("{what}: model config.yaml: {e}"));
    let modelled = drop_zero_values(modelled);
    if real != modelled {
        let (Value::Object(a), Value::Object(b)) = (&real, &modelled) else {
            problems.push(format!("{what}: config.yaml is not an object"));
            return problems;
        };
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            if a.get(k) != b.get(k) {
                problems.push(format!(
                    "{what}: config.yaml {k}: real kubeadm {}, model {}",
                    a.get(k).map_or("(absent)".into(), Value::to_string),
                    b.get(k).map_or("(absent)".into(), Value::to_string)
                ));
            }
        }
    }
    let real_flags = flags(&std::fs::read_to_string(dry.join("kubeadm-flags.env")).unwrap_or_default());
    let model_flags = flags(&s.read("var/lib/kubelet/kubeadm-flags.env"));
    if real_flags != model_flags {
        problems.push(format!("{what}: kubeadm-flags.env: real kubeadm {real_flags:?}, model {model_flags:?}"));
    }
    problems
}

fn all_cases(role: Role) {
    let mut problems = Vec::new();
    for version in versions() {
        let version = version.as_str();
        for family in [Family::V4, Family::V6] {
            for swap in [Swap::Off, Swap::Limited] {
                problems.extend(case(version, role, family, swap));
            }
        }
    }
    assert!(problems.is_empty(), "{} disagreement(s):\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn init_configs_are_valid_for_the_real_kubeadm_and_the_model_writes_what_it_writes() {
    all_cases(Role::Init);
}

#[test]
fn worker_join_configs_are_valid_for_the_real_kubeadm_and_the_model_writes_what_it_writes() {
    all_cases(Role::Join);
}

#[test]
fn control_plane_join_configs_are_valid_for_the_real_kubeadm_and_the_model_writes_what_it_writes() {
    all_cases(Role::ControlPlane);
}

/// Every YAML document kubeadm printed, as JSON (python3-yaml, as [`yaml_to_json`]).
fn yaml_docs_to_json(text: &str, what: &str) -> Vec<Value> {
    let mut c = Command::new("python3");
    c.args(["-c", "import json,sys,yaml;print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))"]);
    let mut child =
        c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().expect("python3");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), text.as_bytes()).expect("write yaml");
    let o = child.wait_with_output().expect("python3 runs");
    assert!(o.status.success(), "{what}: not YAML: {text}");
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// What the knobs case's node.toml adds under `[node]`: kubeadm's `Timeouts` (two
/// raised, one for joins; the others left to kubeadm), `imagePullPolicy: Never` (an
/// air-gapped node) and, for control planes, a strategic merge patch of the API
/// server's liveness probe and a JSON merge patch of the scheduler's annotations.
fn knobs_toml(role: Role) -> String {
    let mut t = String::from(
        "image_pull_policy = \"Never\"\nkubeadm_timeouts = { controlPlaneComponentHealthCheck = \"10m0s\", kubeletHealthCheck = \"8m\", discovery = \"7m\" }\n",
    );
    if role != Role::Join {
        t.push_str("[node.static_pod_patches.kube-apiserver.spec]\ncontainers = [{ name = \"kube-apiserver\", livenessProbe = { failureThreshold = 30 } }]\n");
        t.push_str("[node.static_pod_patches.\"kube-scheduler+merge\".metadata]\nannotations = { \"kiln.test/patched\" = \"yes\" }\n");
    }
    t
}

/// Issue 21 item 4 with the real kubeadm: kiln's config with `[node]
/// kubeadm_timeouts`, `image_pull_policy` and `static_pod_patches` is accepted by
/// the real `kubeadm config validate` (and by the model, which ran it), and the
/// values arrive: the real `kubeadm config migrate` prints them as kubeadm read them
/// (the unset timeouts at kubeadm's defaults), and on an init node the real `kubeadm
/// init phase control-plane all --dry-run` writes manifests whose startup probes
/// follow the raised `controlPlaneComponentHealthCheck` (10m / 10s periods = 60
/// failures, `util/staticpod/utils.go` `StartupProbe`) and which carry kiln's
/// patches. Returns every problem (empty: none).
fn knobs_case(version: &str, role: Role) -> Vec<String> {
    let kubeadm = bin_dir(version).join("kubeadm");
    let what = format!("{version} {role:?} with kubeadm knobs");
    let s = Scratch::new(version, "kiln-contract-host");
    let role_name = match role {
        Role::Init => "init",
        Role::Join => "join",
        Role::ControlPlane => "control-plane",
    };
    let mut toml = format!(
        "[cluster]\nname = \"prod\"\ncontrol_plane_endpoint = \"10.1.0.2:6443\"\nca_cert_hashes = [\"{DRYRUN_CA_PIN}\"]\nbootstrap_token = \"{DRYRUN_TOKEN}\"\n[node]\nrole = \"{role_name}\"\nname = \"node-{role_name}\"\nnode_ip = \"10.1.0.2\"\n{}[pki]\n",
        knobs_toml(role)
    );
    if role == Role::Init {
        toml = toml.replacen("[node]\n", "kube_proxy = false\n[node]\n", 1);
    }
    for k in ["ca_cert", "front_proxy_ca_cert", "etcd_ca_cert", "sa_pub"] {
        toml.push_str(&format!("{k} = \"\"\"\n{CERT}\"\"\"\n"));
    }
    for k in ["ca_key", "front_proxy_ca_key", "etcd_ca_key", "sa_key"].iter().filter(|_| role != Role::Join) {
        toml.push_str(&format!("{k} = \"\"\"\n{KEY}\"\"\"\n"));
    }
    s.write("etc/kiln/node.toml", &toml);
    let o = s.run_firstboot(Family::V4);
    assert!(o.status.success(), "{what}: kiln-firstboot run against the model failed:\n{}", out(&o));
    let cfg = kilns_config(&s, &what);
    let cfg_s = cfg.display().to_string();
    let mut problems = Vec::new();
    let v = s.real_kubeadm(&kubeadm, &["config", "validate", "--config", &cfg_s], &[]);
    if !v.status.success() || out(&v).trim() != "ok" {
        problems.push(format!(
            "{what}: the real `kubeadm config validate` says:\n{}\n{}",
            out(&v),
            s.read("var/lib/kiln-model/config-0.json")
        ));
        return problems;
    }
    if role == Role::Init {
        // `[cluster] kube_proxy = false`: the real kubeadm leaves kube-proxy out of the
        // images it would pull, and keeps the rest.
        let l = s.real_kubeadm(&kubeadm, &["config", "images", "list", "--config", &cfg_s], &[]);
        let listed = String::from_utf8_lossy(&l.stdout).to_string();
        if !l.status.success() || listed.contains("kube-proxy") || !listed.contains("kube-apiserver") {
            problems.push(format!(
                "{what}: with kube_proxy = false the real `kubeadm config images list` says:\n{}",
                out(&l)
            ));
        }
    }
    let m = s.real_kubeadm(&kubeadm, &["config", "migrate", "--old-config", &cfg_s], &[]);
    if !m.status.success() {
        problems.push(format!("{what}: the real `kubeadm config migrate` failed:\n{}", out(&m)));
        return problems;
    }
    let kind = if role == Role::Init { "InitConfiguration" } else { "JoinConfiguration" };
    let docs = yaml_docs_to_json(&String::from_utf8_lossy(&m.stdout), &what);
    let doc = docs.iter().find(|d| d["kind"] == kind).cloned().unwrap_or_default();
    let mut want = json!({
        "controlPlaneComponentHealthCheck": "10m0s", "kubeletHealthCheck": "8m0s", "discovery": "7m0s",
        "etcdAPICall": "2m0s", "kubernetesAPICall": "1m0s", "tlsBootstrap": "5m0s", "upgradeManifests": "5m0s",
    });
    if role == Role::Init {
        // `kubeadm config migrate` itself sets an InitConfiguration's
        // controlPlaneComponentHealthCheck from v1beta3's apiServer.timeoutForControlPlane,
        // zero for a v1beta4 file (`cmd/kubeadm/app/util/config/common.go`,
        // `defaultMigrateMutators`, v1.33.6 and v1.34.2): it prints 0s. `kubeadm init` does
        // not (`initconfiguration.go` only copies a non-zero one), and the init manifests
        // below show 10m arriving.
        want["controlPlaneComponentHealthCheck"] = json!("0s");
    }
    if doc["timeouts"] != want {
        problems.push(format!("{what}: the real kubeadm read timeouts {}, not {want}", doc["timeouts"]));
    }
    if doc["nodeRegistration"]["imagePullPolicy"] != "Never" {
        problems.push(format!(
            "{what}: the real kubeadm read imagePullPolicy {}",
            doc["nodeRegistration"]["imagePullPolicy"]
        ));
    }
    if role == Role::Init {
        problems.extend(init_manifests_follow_the_knobs(&s, &kubeadm, &cfg_s, &what));
    }
    problems
}

/// The real `kubeadm init phase control-plane all --dry-run` on kiln's config: the
/// raised `controlPlaneComponentHealthCheck` in every startup probe, kiln's strategic
/// merge patch in the API server's liveness probe, its merge patch in the scheduler's
/// annotations.
fn init_manifests_follow_the_knobs(s: &Scratch, kubeadm: &Path, cfg: &str, what: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let dry = s.path("dry-manifests");
    std::fs::create_dir_all(&dry).expect("dry-run dir");
    let r = s.real_kubeadm(
        kubeadm,
        &["init", "phase", "control-plane", "all", "--config", cfg, "--dry-run"],
        &[("KUBEADM_INIT_DRYRUN_DIR", &dry)],
    );
    if !r.status.success() {
        return vec![format!("{what}: the real `kubeadm init phase control-plane all --dry-run` failed:\n{}", out(&r))];
    }
    let manifest = |name: &str| yaml_to_json(&dry.join(format!("{name}.yaml")));
    for name in ["kube-apiserver", "kube-controller-manager", "kube-scheduler"] {
        let c = &manifest(name)["spec"]["containers"][0];
        if c["startupProbe"]["failureThreshold"] != 60 {
            problems.push(format!("{what}: {name}'s startupProbe {}: not 10m of 10s periods", c["startupProbe"]));
        }
    }
    let api = manifest("kube-apiserver");
    if api["spec"]["containers"][0]["livenessProbe"]["failureThreshold"] != 30 {
        problems.push(format!(
            "{what}: kiln's kube-apiserver patch did not arrive: {}",
            api["spec"]["containers"][0]["livenessProbe"]
        ));
    }
    if api["spec"]["containers"][0]["command"].as_array().is_none_or(|c| c.len() < 10) {
        problems.push(format!("{what}: the strategic merge patch replaced the API server's container: {api}"));
    }
    if manifest("kube-scheduler")["metadata"]["annotations"]["kiln.test/patched"] != "yes" {
        problems.push(format!("{what}: kiln's kube-scheduler+merge patch did not arrive: {}", out(&r)));
    }
    problems
}

#[test]
fn kubeadm_knobs_reach_the_real_kubeadm_for_every_role() {
    let mut problems = Vec::new();
    for version in versions() {
        for role in [Role::Init, Role::Join, Role::ControlPlane] {
            problems.extend(knobs_case(&version, role));
        }
    }
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
}

/// `tests/k8s/build` set the version ldflags: each program reports the pinned
/// version (without them kubeadm is `v1.0.0-placeholder-version`).
#[test]
fn the_built_programs_report_the_pinned_versions() {
    for version in versions() {
        let version = version.as_str();
        let bin = bin_dir(version);
        for (prog, args, want) in [
            ("kubeadm", &["version", "-o", "short"][..], version.to_string()),
            ("kubelet", &["--version"][..], format!("Kubernetes {version}")),
            ("kubectl", &["version", "--client"][..], format!("Client Version: {version}")),
        ] {
            let o = Command::new(bin.join(prog)).args(args).output().expect("runs");
            assert!(o.status.success(), "{prog} {args:?}: {}", out(&o));
            let said = String::from_utf8_lossy(&o.stdout).to_string();
            assert!(said.lines().any(|l| l.trim() == want), "{prog} {args:?} printed {said:?}, not {want:?}");
        }
    }
}

/// containerd built by `tests/k8s/build VERSION amd64 containerd` reports the
/// version the profiles pin (`[artifacts.containerd] version`), and so do its shim and ctr.
#[test]
fn the_built_containerd_reports_the_pinned_version() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    let pins: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|t| {
            let section = t.split("[artifacts.containerd]").nth(1)?;
            let line = section.lines().find(|l| l.starts_with("version = \""))?;
            Some(line.trim_start_matches("version = \"").trim_end_matches('"').to_string())
        })
        .collect();
    assert!(!pins.is_empty(), "no [artifacts.containerd] version in {}", dir.display());
    let build = "tests/k8s/build v1.34.2 amd64 containerd && export KILN_K8S_BIN_CONTAINERD=$(tests/k8s/build --dir v1.34.2 amd64 containerd)";
    let bin = real_bins::containerd();
    for pin in &pins {
        // The shim's flag is `-v` (`pkg/shim/shim.go`: "show the shim version and exit").
        for (prog, flag) in [("containerd", "--version"), ("containerd-shim-runc-v2", "-v"), ("ctr", "--version")] {
            let o = Command::new(bin.join(prog))
                .arg(flag)
                .output()
                .unwrap_or_else(|e| panic!("{}: {e}; build it:\n  {build}", bin.join(prog).display()));
            let said = String::from_utf8_lossy(&o.stdout).to_string();
            assert!(
                o.status.success() && said.split_whitespace().any(|w| w == format!("v{pin}")),
                "{prog} {flag} printed {said:?}, not containerd v{pin}: {}",
                out(&o)
            );
        }
    }
}

/// The table `[node] kubelet` is type-checked against (`firstboot/src/kubelet_fields.rs`)
/// is what its generator makes of the pinned k8s.io/kubelet's `types.go` — the
/// source the real kubelet above was built from (tests/k8s/build's module cache):
/// a hand edit, or a kubelet re-pin without regenerating, fails here.
#[test]
fn the_kubelet_field_table_is_generated_from_the_pinned_kubelet_source() {
    let table = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/kubelet_fields.rs");
    let committed = std::fs::read_to_string(&table).expect("kubelet_fields.rs");
    let pin = committed
        .lines()
        .next()
        .and_then(|l| l.split("k8s.io/kubelet ").nth(1))
        .and_then(|r| r.split(',').next())
        .expect("the table's first line names the k8s.io/kubelet version it was generated from");
    // k8s.io/kubelet v0.X.Y is released with Kubernetes v1.X.Y.
    let cache = bin_dir(&format!("v1.{}", pin.strip_prefix("v0.").expect("a v0.X.Y module version")));
    let types = cache
        .ancestors()
        .nth(2)
        .expect("the k8s cache root")
        .join(format!("gomod/k8s.io/kubelet@{pin}/config/v1beta1/types.go"));
    assert!(
        types.is_file(),
        "{} is missing: tests/k8s/build downloads k8s.io/kubelet {pin} with kubelet",
        types.display()
    );
    let tool = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/kubelet_fields.py");
    let o = Command::new("python3").arg(&tool).arg(&types).output().expect("python3");
    assert!(o.status.success(), "{}: {}", tool.display(), String::from_utf8_lossy(&o.stderr));
    // rustfmt aligns the comments; the entries and their order are what count.
    let squeeze = |s: &str| s.split_whitespace().collect::<String>();
    assert_eq!(
        squeeze(&String::from_utf8_lossy(&o.stdout)),
        squeeze(&committed),
        "{} is not what {} makes of {}: regenerate it",
        table.display(),
        tool.display(),
        types.display()
    );
}

/// Row 40 with the real kubeadm v1.34.2: after init (the model) the admin user's
/// `~/.kube/config` is what the real `kubeadm kubeconfig user` printed for kiln's
/// config and a real cluster CA on the scratch root: a client certificate signed by
/// that CA whose subject is CN=<user> with no organisation (so neither
/// `system:masters` nor `kubeadm:cluster-admins`), for the cluster's endpoint, 0600;
/// `admin.conf` stays 0600 and is not what the user got.
#[test]
fn the_admin_users_kubeconfig_is_a_scoped_credential_from_the_real_kubeadm() {
    let bin = bin_dir("v1.34.2");
    let s = Scratch::new("v1.34.2", "cp-1");
    let pki = s.path("ca");
    std::fs::create_dir_all(&pki).expect("ca dir");
    let o = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=kubernetes"])
        .args([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ])
        .arg("-keyout")
        .arg(pki.join("ca.key"))
        .arg("-out")
        .arg(pki.join("ca.crt"))
        .output()
        .expect("openssl runs");
    assert!(o.status.success(), "openssl req: {}", out(&o));
    let ca_crt = std::fs::read_to_string(pki.join("ca.crt")).expect("ca.crt");
    let ca_key = std::fs::read_to_string(pki.join("ca.key")).expect("ca.key");
    let mut toml = format!(
        "[cluster]\nname = \"prod\"\ncontrol_plane_endpoint = \"10.1.0.2:6443\"\nbootstrap_token = \"{DRYRUN_TOKEN}\"\nadmin_user = \"kiln\"\n[node]\nrole = \"init\"\nname = \"cp-1\"\nnode_ip = \"10.1.0.2\"\n[pki]\nca_cert = \"\"\"\n{ca_crt}\"\"\"\nca_key = \"\"\"\n{ca_key}\"\"\"\n"
    );
    for k in ["front_proxy_ca_cert", "etcd_ca_cert", "sa_pub"] {
        toml.push_str(&format!("{k} = \"\"\"\n{CERT}\"\"\"\n"));
    }
    for k in ["front_proxy_ca_key", "etcd_ca_key", "sa_key"] {
        toml.push_str(&format!("{k} = \"\"\"\n{KEY}\"\"\"\n"));
    }
    s.write("etc/kiln/node.toml", &toml);
    // uid 0: the run's user namespace maps only root.
    s.write("etc/passwd", "root:x:0:0::/root:/bin/sh\nkiln:x:0:0::/home/kiln:/bin/sh\n");
    // kubeadm: the model for init, the real one for `kubeconfig user`.
    let kubeadm = s.path("bin/kubeadm");
    std::fs::remove_file(&kubeadm).expect("the model's link");
    std::fs::write(
        &kubeadm,
        format!(
            "#!/bin/sh\nif [ \"$1\" = kubeconfig ]; then HOME=\"$ROOT/root\" exec {} \"$@\"; fi\nexec {} \"$@\"\n",
            bin.join("kubeadm").display(),
            model("kubeadm").display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(&kubeadm, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let o = s.run_firstboot(Family::V4);
    assert!(o.status.success(), "{}", out(&o));
    let conf_path = s.root().join("home/kiln/.kube/config");
    let conf =
        std::fs::read_to_string(&conf_path).unwrap_or_else(|e| panic!("{}: {e}\n{}", conf_path.display(), out(&o)));
    assert_eq!(std::fs::metadata(&conf_path).expect("config").permissions().mode() & 0o777, 0o600);
    let admin = s.root().join("etc/kubernetes/admin.conf");
    assert_eq!(std::fs::metadata(&admin).expect("admin.conf").permissions().mode() & 0o777, 0o600);
    assert_ne!(conf, s.read("etc/kubernetes/admin.conf"), "the user got admin.conf");
    assert!(conf.contains("    server: https://10.1.0.2:6443\n") && conf.contains("- name: kiln\n"), "{conf}");
    // The client certificate, as openssl reads it.
    let data = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("client-certificate-data: "))
        .unwrap_or_else(|| panic!("no client certificate: {conf}"));
    let pem = s.path("user.crt");
    let o = Command::new("sh")
        .args(["-c", "printf %s \"$1\" | base64 -d > \"$2\"", "sh", data])
        .arg(&pem)
        .output()
        .expect("base64 runs");
    assert!(o.status.success(), "{}", out(&o));
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(&pem)
        .output()
        .expect("openssl runs");
    let subject = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(subject, "subject=CN=kiln", "the user's certificate carries more than its name");
    for group in ["system:masters", "kubeadm:cluster-admins"] {
        assert!(!subject.contains(group), "{subject}");
    }
    let o = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(pki.join("ca.crt"))
        .arg(&pem)
        .output()
        .expect("openssl");
    assert!(o.status.success(), "not signed by the cluster CA: {}", out(&o));
}

/// A PEM certificate request made by openssl with `subject` and `san`, base64 as
/// `spec.request` carries it.
fn csr_request(dir: &Path, subject: &str, san: &str) -> String {
    let (key, req) = (dir.join("k.pem"), dir.join("r.pem"));
    let o = Command::new("openssl")
        .args(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", subject])
        .args(["-addext", &format!("subjectAltName={san}"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&req)
        .output()
        .expect("openssl runs");
    assert!(o.status.success(), "openssl req: {}", out(&o));
    let o = Command::new("base64").arg("-w0").arg(&req).output().expect("base64 runs");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `kiln-firstboot approve-csrs` on `s` (real kubectl v1.34.2 in its /opt/bin)
/// against the loopback API server model holding `state`: its output and the
/// file the model records approvals in.
fn approve_csrs_against(s: &Scratch, state: &Value) -> (Output, PathBuf) {
    let state_file = s.path("api-state.json");
    std::fs::write(&state_file, state.to_string()).expect("state");
    let (approvals, port_file) = (s.path("approvals"), s.path("port"));
    let _ = std::fs::remove_file(&port_file);
    let mut server =
        Command::new(model("apiserver")).arg(&state_file).arg(&approvals).arg(&port_file).spawn().expect("apiserver");
    let mut port = String::new();
    for _ in 0..400 {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            port = p;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(!port.is_empty(), "the API server model did not start");
    s.write(
        "etc/kubernetes/admin.conf",
        &format!("apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: http://127.0.0.1:{port}\n  name: k\ncontexts:\n- context:\n    cluster: k\n    user: admin\n  name: k\ncurrent-context: k\nusers:\n- name: admin\n  user: {{}}\n"),
    );
    let o = Command::new(env!("CARGO_BIN_EXE_kiln-firstboot"))
        .arg("--root")
        .arg(s.root())
        .arg("approve-csrs")
        .env("PATH", s.env_path())
        .env("HOME", s.path("home"))
        .output()
        .expect("kiln-firstboot runs");
    let _ = server.kill();
    let _ = server.wait();
    (o, approvals)
}

/// What the timer's pass does on a cluster without `serverTLSBootstrap` (no
/// kubelet asks for a serving certificate): with the REAL kubectl v1.34.2 it
/// reads the CSRs, approves nothing (a kubelet's client CSR is not its
/// business), says so and exits 0 at once — a `kiln-approve-csrs.service` pass
/// every minute is harmless.
#[test]
fn approve_csrs_without_serving_requests_approves_nothing_and_ends_at_once() {
    let bin = bin_dir("v1.34.2");
    let s = Scratch::new("v1.34.2", "cp-1");
    std::fs::create_dir_all(s.root().join("opt/bin")).expect("bin dir");
    std::os::unix::fs::symlink(bin.join("kubectl"), s.root().join("opt/bin/kubectl")).expect("kubectl link");
    let state = json!({
        "csrs": [{
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": { "name": "csr-client" },
            "spec": {
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                "username": "system:bootstrap:abcdef",
                "groups": ["system:bootstrappers"],
                "usages": ["digital signature", "client auth"],
                "request": "",
            },
            "status": {},
        }],
        "nodes": [],
    });
    let started = std::time::Instant::now();
    let (o, approvals) = approve_csrs_against(&s, &state);
    let text = out(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains("approve-csrs: no pending kubelet serving-certificate requests"), "{text}");
    assert_eq!(std::fs::read_to_string(&approvals).unwrap_or_default(), "", "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "took {:?}", started.elapsed());
}

/// Row 37, prevent: `kiln-firstboot approve-csrs` with the REAL kubectl v1.34.2
/// against a loopback model of the API server (`tests/model/apiserver`) approves
/// only the pending kubelet-serving CSR whose requester, subject, names and
/// addresses are its Node's (kube-controller-manager's `ValidateKubeletServingCSR`
/// plus kubelet-csr-approver's requester and SAN rules) and leaves every other one
/// pending with the reason.
#[test]
fn approve_csrs_approves_only_a_nodes_own_serving_certificate_with_the_real_kubectl() {
    let bin = bin_dir("v1.34.2");
    let s = Scratch::new("v1.34.2", "cp-1");
    std::fs::create_dir_all(s.root().join("opt/bin")).expect("bin dir");
    std::os::unix::fs::symlink(bin.join("kubectl"), s.root().join("opt/bin/kubectl")).expect("kubectl link");
    let work = s.path("csr");
    std::fs::create_dir_all(&work).expect("csr dir");
    let node = "/O=system:nodes/CN=system:node:worker-1";
    let good = csr_request(&work, node, "DNS:worker-1,IP:10.0.0.21");
    let csr = |name: &str, user: &str, request: &str, signer: &str, status: Value| {
        json!({
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": { "name": name },
            "spec": {
                "signerName": signer,
                "username": user,
                "groups": ["system:nodes", "system:authenticated"],
                "usages": ["digital signature", "server auth"],
                "request": request,
            },
            "status": status,
        })
    };
    let serving = "kubernetes.io/kubelet-serving";
    let w1 = "system:node:worker-1";
    let state = json!({
        "csrs": [
            csr("csr-good", w1, &good, serving, json!({})),
            csr("csr-other-ip", w1, &csr_request(&work, node, "DNS:worker-1,IP:10.0.0.99"), serving, json!({})),
            csr("csr-other-requester", "system:node:worker-2", &good, serving, json!({})),
            csr("csr-other-name", w1, &csr_request(&work, node, "DNS:api.example.com"), serving, json!({})),
            csr("csr-masters", w1, &csr_request(&work, "/O=system:nodes/O=system:masters/CN=system:node:worker-1", "DNS:worker-1"), serving, json!({})),
            csr("csr-no-node", "system:node:ghost", &csr_request(&work, "/O=system:nodes/CN=system:node:ghost", "DNS:ghost"), serving, json!({})),
            csr("csr-client", w1, &good, "kubernetes.io/kube-apiserver-client-kubelet", json!({})),
            csr("csr-done", w1, &good, serving, json!({ "conditions": [{ "type": "Approved", "status": "True" }] })),
        ],
        "nodes": [
            { "apiVersion": "v1", "kind": "Node", "metadata": { "name": "worker-1" },
              "status": { "addresses": [{ "type": "InternalIP", "address": "10.0.0.21" }, { "type": "Hostname", "address": "worker-1" }] } },
            { "apiVersion": "v1", "kind": "Node", "metadata": { "name": "worker-2" },
              "status": { "addresses": [{ "type": "InternalIP", "address": "10.0.0.22" }, { "type": "Hostname", "address": "worker-2" }] } },
        ],
    });
    let (o, approvals) = approve_csrs_against(&s, &state);
    let text = out(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert_eq!(std::fs::read_to_string(&approvals).unwrap_or_default(), "csr-good\n", "{text}");
    for (csr, why) in [
        ("csr-other-ip", "IP SAN 10.0.0.99"),
        ("csr-other-requester", "is not the requester system:node:worker-2"),
        ("csr-other-name", "DNS SAN api.example.com"),
        ("csr-masters", "is not exactly system:nodes"),
        ("csr-no-node", "no Node ghost"),
    ] {
        assert!(text.lines().any(|l| l.contains(&format!("left {csr} pending: ")) && l.contains(why)), "{csr}: {text}");
    }
    assert!(!text.contains("csr-client") && !text.contains("csr-done"), "{text}");
}
