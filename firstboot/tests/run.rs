//! `kiln-firstboot run` on a scratch root, with stand-ins for kubeadm,
//! modprobe and swapoff that record exactly what they were given.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

const TOKEN: &str = "abcdef.s3cr3tt0k3nvalu3";
const SECRET: &str = "s3cr3tt0k3nvalu3";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
const CERT: &str = "-----BEGIN CERTIFICATE-----\nY2VydA==\n-----END CERTIFICATE-----\n";

struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new(minor: u32, hostname: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let n = Node { dir };
        n.write("etc/kiln/image.toml", &format!(
            "schema = 1\nprofile = \"t\"\nfamily = \"flatcar\"\narch = \"amd64\"\nkubernetes_version = \"v1.{minor}.2\"\nkubeadm_version = \"v1.{minor}.2\"\nkubelet_version = \"v1.{minor}.2\"\nbin_dir = \"/opt/bin\"\ncni_bin_dir = \"/opt/cni/bin\"\nflex_volume_dir = \"/opt/libexec/kubernetes/kubelet-plugins/volume/exec/\"\nruntime = \"containerd\"\nruntime_socket = \"unix:///run/containerd/containerd.sock\"\ncgroup_driver = \"systemd\"\n"
        ));
        n.write("etc/machine-id", "0123456789abcdef0123456789abcdef\n");
        n.write("etc/hostname", &format!("{hostname}\n"));
        for k in ["net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables", "net/ipv4/ip_forward"] {
            n.write(&format!("proc/sys/{k}"), "0\n");
        }
        n.write("proc/swaps", "Filename Type Size Used Priority\n/swapfile file 1024 0 -2\n");
        // What preflight reads: cgroup v2 with memory, the runtime socket,
        // kubeadm's helper executables, 2 CPUs and 4 GB, a host route.
        n.write("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n");
        n.write("run/containerd/containerd.sock", "");
        for t in ["conntrack", "ip", "iptables", "mount", "nsenter", "ethtool", "socat", "tc"] {
            n.write(&format!("usr/sbin/{t}"), "");
        }
        n.write("proc/cpuinfo", "processor\t: 0\nprocessor\t: 1\n");
        n.write("proc/meminfo", "MemTotal:        4000000 kB\n");
        n.write("proc/net/route", "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\neth0\t0000000A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n");
        // Stand-ins: record argv (and kubeadm's --config file), fail on demand.
        let script = r#"#!/bin/sh
rec="$REC"; name=$(basename "$0")
echo "$*" >> "$rec/$name.calls"
if [ "$name" = swapoff ]; then head -n1 "$ROOT/proc/swaps" > "$ROOT/proc/swaps.new" && mv "$ROOT/proc/swaps.new" "$ROOT/proc/swaps"; fi
if [ "$name" = kubeadm ]; then
  while [ $# -gt 0 ]; do
    if [ "$1" = --config ]; then n=$(ls "$rec" | grep -c '^config-'); cp "$2" "$rec/config-$n.json"; fi
    shift
  done
  case "$(cat "$rec/kubeadm.calls" | tail -n1)" in reset*) exit 0 ;; esac
  if [ -f "$rec/fail" ]; then cat "$rec/fail" >&2; exit 1; fi
  # A successful init leaves an admin kubeconfig, as kubeadm does.
  if [ -f "$ROOT/etc/kubernetes/admin.conf.kubeadm" ]; then cp "$ROOT/etc/kubernetes/admin.conf.kubeadm" "$ROOT/etc/kubernetes/admin.conf"; fi
  echo "[init] Using Kubernetes version; your join command: kubeadm join --token abcdef.s3cr3tt0k3nvalu3"
fi
exit 0
"#;
        std::fs::create_dir_all(n.path("bin")).unwrap();
        std::fs::create_dir_all(n.path("rec")).unwrap();
        for tool in ["kubeadm", "modprobe", "swapoff", "kubectl"] {
            let p = n.path(&format!("bin/{tool}"));
            std::fs::write(&p, script).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        n
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn root(&self) -> PathBuf {
        self.path("root")
    }
    fn write(&self, rel: &str, text: &str) {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    fn run(&self, args: &[&str]) -> Output {
        let path = format!("{}:{}", self.path("bin").display(), std::env::var("PATH").unwrap_or_default());
        Command::new(env!("CARGO_BIN_EXE_kiln-firstboot"))
            .arg("--root")
            .arg(self.root())
            .args(["--backoff", "0", "--wait", "5"])
            .args(args)
            .env("PATH", path)
            .env("REC", self.path("rec"))
            .env("ROOT", self.root())
            .output()
            .unwrap()
    }
    fn calls(&self, tool: &str) -> Vec<String> {
        std::fs::read_to_string(self.path(&format!("rec/{tool}.calls")))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
    fn config(&self, n: usize) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.path(&format!("rec/config-{n}.json"))).unwrap();
        text.split("\n---\n").map(|d| serde_json::from_str(d).unwrap()).collect()
    }
    fn mode(&self, rel: &str) -> u32 {
        std::fs::metadata(self.root().join(rel)).unwrap().permissions().mode() & 0o777
    }
}

fn cluster(endpoint: &str) -> String {
    format!(
        "[cluster]\nname = \"prod\"\ncontrol_plane_endpoint = \"{endpoint}\"\nca_cert_hashes = [\"sha256:2515a0c0418253eff7778e3355b8834092a8cf745376caa71d47b96d11c54194\"]\nbootstrap_token = \"{TOKEN}\"\ntoken_ttl = \"48h\"\n"
    )
}

fn pki() -> String {
    let mut s = String::from("[pki]\n");
    for (k, v) in [
        ("ca_cert", CERT),
        ("ca_key", KEY),
        ("front_proxy_ca_cert", CERT),
        ("front_proxy_ca_key", KEY),
        ("etcd_ca_cert", CERT),
        ("etcd_ca_key", KEY),
        ("sa_key", KEY),
        ("sa_pub", CERT),
    ] {
        s.push_str(&format!("{k} = \"\"\"\n{v}\"\"\"\n"));
    }
    s
}

fn no_secrets(o: &Output, n: &Node) {
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!all.contains(SECRET), "token secret in output:\n{all}");
    assert!(!all.contains("c2VjcmV0LWtleS1tYXRlcmlhbA"), "key material in output");
    for f in ["var/lib/kiln/state.json", "run/kiln/bootstrap-failed"] {
        let t = std::fs::read_to_string(n.root().join(f)).unwrap_or_default();
        assert!(!t.contains(SECRET), "secret in {f}");
    }
}

#[test]
fn init_node_v1beta4_runs_once_per_machine() {
    let n = Node::new(34, "raspberrypi");
    n.write(
        "etc/kiln/node.toml",
        &format!(
            "{}cni_manifest = \"/etc/kiln/cni.yaml\"\nadmin_user = \"core\"\n[node]\nrole = \"init\"\nnode_ip = \"10.0.0.5\"\ntaints = []\n{}",
            cluster("api.example.test:6443"),
            pki()
        ),
    );
    n.write("etc/passwd", "root:x:0:0::/root:/bin/sh\ncore:x:0:0::/home/core:/bin/sh\n");
    n.write("etc/kubernetes/admin.conf.kubeadm", "apiVersion: v1\nkind: Config\n");
    let o = n.run(&["run"]);
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    no_secrets(&o, &n);
    let cfg_path = n.root().join("run/kiln/kubeadm.json");
    assert_eq!(n.calls("kubeadm"), [format!("init --config {} --skip-token-print", cfg_path.display())]);
    assert_eq!(n.mode("run/kiln/kubeadm.json"), 0o600);
    let d = n.config(0);
    assert_eq!(d[0]["apiVersion"], "kubeadm.k8s.io/v1beta4");
    assert_eq!(d[0]["kind"], "InitConfiguration");
    let reg = &d[0]["nodeRegistration"];
    // "raspberrypi" is a default hostname: replaced by a name from the machine id.
    assert!(reg["name"].as_str().unwrap().starts_with("node-"), "{reg}");
    assert_eq!(reg["criSocket"], "unix:///run/containerd/containerd.sock");
    assert_eq!(reg["taints"], serde_json::json!([]));
    assert_eq!(reg["kubeletExtraArgs"], serde_json::json!([{ "name": "node-ip", "value": "10.0.0.5" }]));
    assert_eq!(d[0]["bootstrapTokens"][0]["token"], TOKEN);
    assert_eq!(d[0]["bootstrapTokens"][0]["ttl"], "48h");
    assert_eq!(d[0]["localAPIEndpoint"]["advertiseAddress"], "10.0.0.5");
    assert_eq!(d[1]["kind"], "ClusterConfiguration");
    assert_eq!(d[1]["controlPlaneEndpoint"], "api.example.test:6443");
    assert_eq!(
        d[1]["controllerManager"]["extraArgs"],
        serde_json::json!([{ "name": "flex-volume-plugin-dir", "value": "/opt/libexec/kubernetes/kubelet-plugins/volume/exec" }])
    );
    assert_eq!(d[2]["volumePluginDir"], "/opt/libexec/kubernetes/kubelet-plugins/volume/exec");
    assert_eq!(d[2]["cgroupDriver"], "systemd");
    assert_eq!(d[2]["failSwapOn"], true);
    for key in ["ca.key", "front-proxy-ca.key", "etcd/ca.key", "sa.key"] {
        assert_eq!(n.mode(&format!("etc/kubernetes/pki/{key}")), 0o600, "{key}");
    }
    assert_eq!(n.mode("etc/kubernetes/pki/sa.pub"), 0o644);
    assert_eq!(std::fs::read_to_string(n.root().join("etc/kubernetes/pki/ca.key")).unwrap(), KEY);
    // Host fixes: modules loaded, sysctls set and read back, swap off.
    assert_eq!(n.calls("modprobe"), ["overlay", "br_netfilter"]);
    assert_eq!(std::fs::read_to_string(n.root().join("proc/sys/net/bridge/bridge-nf-call-iptables")).unwrap(), "1");
    assert_eq!(n.calls("swapoff"), ["-a"]);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(n.root().join("var/lib/kiln/state.json")).unwrap()).unwrap();
    assert_eq!(state["machine_id"], "0123456789abcdef0123456789abcdef");
    assert_eq!(state["role"], "init");
    assert!(n.root().join("run/cluster-api/bootstrap-success.complete").exists());
    // The pinned CNI manifest applied with the admin kubeconfig; the admin user's kubeconfig is 0600.
    let admin = n.root().join("etc/kubernetes/admin.conf");
    assert_eq!(n.calls("kubectl").len(), 1, "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(
        n.calls("kubectl"),
        [format!("--kubeconfig {} apply -f {}", admin.display(), n.root().join("etc/kiln/cni.yaml").display())]
    );
    assert_eq!(n.mode("home/core/.kube/config"), 0o600);
    let st = n.run(&["status"]);
    assert!(
        String::from_utf8_lossy(&st.stdout).starts_with("joined: node-"),
        "{}",
        String::from_utf8_lossy(&st.stdout)
    );

    // Second boot: a no-op.
    let o = n.run(&["run"]);
    assert!(o.status.success());
    assert_eq!(n.calls("kubeadm").len(), 1, "kubeadm ran again");
    // A cloned disk on another machine runs again.
    n.write("etc/machine-id", "ffffffffffffffffffffffffffffffff\n");
    let o = n.run(&["run"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let calls = n.calls("kubeadm");
    // The clone carries the first machine's admin.conf: reset, then init.
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls[1] == "reset -f" && calls[2].starts_with("init "), "{calls:?}");
    // `reset` removes kiln's state and stale CNI state so `run` starts over.
    n.write("etc/cni/net.d/10-flannel.conflist", "{}");
    n.write("run/flannel/subnet.env", "X=1");
    let o = n.run(&["reset"]);
    assert!(o.status.success());
    for gone in
        ["var/lib/kiln/state.json", "etc/cni/net.d", "run/flannel", "run/cluster-api/bootstrap-success.complete"]
    {
        assert!(!n.root().join(gone).exists(), "{gone} survived reset");
    }
    assert_eq!(n.calls("kubeadm").last().map(String::as_str), Some("reset -f"));
}

#[test]
fn worker_v1beta3_joins_with_discovery_and_no_keys() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = listener.local_addr().unwrap().to_string();
    let n = Node::new(30, "worker-7");
    n.write(
        "var/lib/cloud/seed/nocloud/user-data",
        &format!("{}[node]\nrole = \"join\"\n[pki]\nca_cert = \"\"\"\n{CERT}\"\"\"\n", cluster(&endpoint)),
    );
    n.write("var/lib/cloud/seed/nocloud/meta-data", "instance-id: iid-worker-7\n");
    let o = n.run(&["run"]);
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    no_secrets(&o, &n);
    assert!(n.calls("kubeadm")[0].starts_with("join --config "));
    let d = n.config(0);
    assert_eq!(d[0]["apiVersion"], "kubeadm.k8s.io/v1beta3");
    assert_eq!(d[0]["kind"], "JoinConfiguration");
    let bt = &d[0]["discovery"]["bootstrapToken"];
    assert_eq!(bt["token"], TOKEN);
    assert_eq!(bt["apiServerEndpoint"], endpoint);
    assert_eq!(bt["caCertHashes"][0], "sha256:2515a0c0418253eff7778e3355b8834092a8cf745376caa71d47b96d11c54194");
    assert!(bt.get("unsafeSkipCAVerification").is_none());
    assert_eq!(d[0]["nodeRegistration"]["name"], "worker-7");
    // v1beta3: a map; node IP from the route to the endpoint.
    assert_eq!(d[0]["nodeRegistration"]["kubeletExtraArgs"]["node-ip"], "127.0.0.1");
    assert!(d[0].get("controlPlane").is_none());
    assert!(!n.root().join("etc/kubernetes/pki/ca.key").exists());
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(n.root().join("var/lib/kiln/state.json")).unwrap()).unwrap();
    assert_eq!(state["instance_id"], "iid-worker-7");
}

#[test]
fn control_plane_join_and_cmdline_override() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = listener.local_addr().unwrap().to_string();
    let n = Node::new(34, "localhost");
    n.write("etc/kiln/node.toml", &format!("{}[node]\nrole = \"join\"\n{}", cluster(&endpoint), pki()));
    n.write("cmdline", "ro quiet kiln.role=control-plane kiln.node-name=CP_2 ignition.platform.id=qemu");
    let cmdline = n.root().join("cmdline");
    let o = n.run(&["--cmdline", cmdline.to_str().unwrap(), "plan"]);
    let plan = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        plan.contains("node cp-2 (control-plane)")
            && plan.contains("platform  qemu")
            && plan.contains("kernel command line"),
        "{plan}"
    );
    assert!(plan.contains("abcdef.<redacted>") && !plan.contains(SECRET), "{plan}");
    let o = n.run(&["--cmdline", cmdline.to_str().unwrap(), "run"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let d = n.config(0);
    assert_eq!(d[0]["controlPlane"]["localAPIEndpoint"]["advertiseAddress"], "127.0.0.1");
    assert_eq!(d[0]["nodeRegistration"]["name"], "cp-2");
    assert_eq!(n.mode("etc/kubernetes/pki/etcd/ca.key"), 0o600);
}

#[test]
fn failures_are_diagnosed_retried_with_reset_and_marked() {
    let n = Node::new(34, "cp-1");
    n.write(
        "etc/kiln/node.toml",
        &format!("{}[node]\nrole = \"init\"\nnode_ip = \"10.0.0.5\"\n{}", cluster("api.example.test:6443"), pki()),
    );
    std::fs::write(
        n.path("rec/fail"),
        "[kubelet-check] The kubelet is not running\nerror: failed to run Kubelet: failed to create kubelet: misconfiguration: kubelet cgroup driver: \"systemd\" is different from docker cgroup driver: \"cgroupfs\"\n",
    )
    .unwrap();
    let o = n.run(&["--attempts", "2", "run"]);
    assert_eq!(o.status.code(), Some(1));
    no_secrets(&o, &n);
    let calls = n.calls("kubeadm");
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls[0].starts_with("init ") && calls[1] == "reset -f" && calls[2].starts_with("init "), "{calls:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("<3>kiln-firstboot: diagnosis [cgroup-driver-mismatch]"), "{out}");
    let failed = std::fs::read_to_string(n.root().join("run/kiln/bootstrap-failed")).unwrap();
    assert!(failed.contains("cgroup drivers"), "{failed}");
    assert!(!n.root().join("var/lib/kiln/state.json").exists());

    // The bootstrap-token RBAC error (kubeadm troubleshooting, v1.18 into v1.17).
    std::fs::write(n.path("rec/fail"), "error execution phase preflight: nodes \"cp-1\" is forbidden: User \"system:bootstrap:abcdef\" cannot get resource \"nodes\" in API group \"\" at the cluster scope\n").unwrap();
    let o = n.run(&["--attempts", "1", "run"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("[bootstrap-rbac-forbidden]"));

    // Swap, as kubeadm's preflight reports it.
    std::fs::write(n.path("rec/fail"), "[preflight] Some fatal errors occurred:\n\t[ERROR Swap]: running with swap on is not supported. Please disable swap\n").unwrap();
    let o = n.run(&["--attempts", "1", "run"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("[swap-on]"));

    // Power cut: kubeadm files without success state converge (reset, then init).
    std::fs::remove_file(n.path("rec/fail")).unwrap();
    n.write("etc/kubernetes/admin.conf", "stale");
    let before = n.calls("kubeadm").len();
    let o = n.run(&["run"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let calls = n.calls("kubeadm");
    assert_eq!(&calls[before..].iter().map(|c| c.split(' ').next().unwrap()).collect::<Vec<_>>(), &["reset", "init"]);
    assert!(!n.root().join("run/kiln/bootstrap-failed").exists());
}

#[test]
fn incomplete_descriptions_exit_2_and_say_what_is_missing() {
    let n = Node::new(34, "x");
    let o = n.run(&["run"]);
    assert_eq!(o.status.code(), Some(2));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("no role") && out.contains("control_plane_endpoint") && out.contains("bootstrap_token"),
        "{out}"
    );
    assert!(n.calls("kubeadm").is_empty());
    // A worker handed CA keys is refused.
    n.write("etc/kiln/node.toml", &format!("{}[node]\nrole = \"join\"\n{}", cluster("127.0.0.1:1"), pki()));
    let o = n.run(&["run"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stdout).contains("workers must not hold them"));
    // A typo is an error with its line, not a silent default.
    n.write("etc/kiln/node.toml", "[node]\nrloe = \"init\"\n");
    let o = n.run(&["plan"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("node.toml:2:1"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_join_that_cannot_reach_the_endpoint_ends_within_the_bound() {
    let n = Node::new(34, "w");
    n.write(
        "etc/kiln/node.toml",
        &format!("{}[node]\nrole = \"join\"\nnode_ip = \"10.0.0.9\"\n", cluster("127.0.0.1:1")),
    );
    let t = std::time::Instant::now();
    let o = n.run(&["--wait", "1", "run"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(t.elapsed().as_secs() < 10);
    assert!(n.calls("kubeadm").is_empty());
    let failed = std::fs::read_to_string(n.root().join("run/kiln/bootstrap-failed")).unwrap();
    assert!(failed.contains("did not answer"), "{failed}");
}

#[test]
fn preflight_stops_before_kubeadm_and_doctor_reports() {
    let n = Node::new(35, "cp-1");
    n.write(
        "etc/kiln/node.toml",
        &format!("{}[node]\nrole = \"init\"\nnode_ip = \"10.0.0.5\"\n{}", cluster("api.example.test:6443"), pki()),
    );
    // A Raspberry Pi without the memory controller, no runtime, one CPU, and a
    // pod subnet that overlaps the host network.
    n.write("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io pids\n");
    std::fs::remove_file(n.root().join("run/containerd/containerd.sock")).unwrap();
    n.write("proc/cpuinfo", "processor\t: 0\n");
    n.write(
        "etc/kiln/node.toml",
        &format!(
            "{}pod_subnet = \"10.0.128.0/17\"\n[node]\nrole = \"init\"\nnode_ip = \"10.0.0.5\"\n{}",
            cluster("api.example.test:6443"),
            pki()
        ),
    );
    let o = n.run(&["run"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(n.calls("kubeadm").is_empty(), "kubeadm ran despite failed preflight");
    let out = String::from_utf8_lossy(&o.stdout);
    for want in ["[cgroups]", "cmdline.txt", "[runtime]", "[cpus]", "[subnets]", "10.0.0.0/16"] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    let failed = std::fs::read_to_string(n.root().join("run/kiln/bootstrap-failed")).unwrap();
    assert!(failed.starts_with("preflight:"), "{failed}");
    let o = n.run(&["--json", "doctor"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let errors: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["level"] == "error")
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(errors, ["cgroups", "runtime", "subnets", "cpus"]);
    // Fixed: doctor is clean, run proceeds.
    n.write("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n");
    n.write("run/containerd/containerd.sock", "");
    n.write("proc/cpuinfo", "processor\t: 0\nprocessor\t: 1\n");
    n.write(
        "etc/kiln/node.toml",
        &format!("{}[node]\nrole = \"init\"\nnode_ip = \"10.0.0.5\"\n{}", cluster("api.example.test:6443"), pki()),
    );
    let o = n.run(&["doctor"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let o = n.run(&["run"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    // After a kubeadm failure, doctor recognises it in the saved (redacted) output.
    let m = Node::new(34, "w2");
    m.write(
        "etc/kiln/node.toml",
        &format!("{}[node]\nrole = \"init\"\nnode_ip = \"10.0.0.5\"\n{}", cluster("api.example.test:6443"), pki()),
    );
    std::fs::write(m.path("rec/fail"), "x509: certificate signed by unknown authority\n").unwrap();
    assert_eq!(m.run(&["--attempts", "1", "run"]).status.code(), Some(1));
    let o = m.run(&["doctor"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("known failure [x509-unknown-authority]"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}
