//! `kiln-firstboot run` on a scratch root against the kubeadm model
//! (`tests/model/kubeadm`: reads the documents kubeadm reads, writes the kubelet's
//! files, applies patches, restarts kubelet through `systemctl` and waits for its
//! healthz) and the kubelet stand-in (`tests/model/kubelet`: refuses what kubelet
//! refuses). Each run is in its own network namespace (`unshare -rn`), so the
//! kubelet stand-in's 127.0.0.1:10248 and the port checks are the test's own.
//! modprobe and swapoff are stand-ins that do what the real ones do to `/proc`
//! and `/sys` under the root.

mod common;

use common::{model, FLEX};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

const TOKEN: &str = "abcdef.s3cr3tt0k3nvalu3";
const SECRET: &str = "s3cr3tt0k3nvalu3";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
const CERT: &str = "-----BEGIN CERTIFICATE-----\nY2VydA==\n-----END CERTIFICATE-----\n";

/// The host tools' stand-in: records each call (`$REC/NAME.calls`, one argv a line);
/// modprobe creates /sys/module/NAME (and br_netfilter its sysctls, as the kernel
/// module does); swapoff empties /proc/swaps unless the swap is stuck.
const STAND_IN: &str = r#"#!/bin/sh
rec="$REC"; name=$(basename "$0")
echo "$*" >> "$rec/$name.calls"
case "$name" in
  modprobe) mkdir -p "$ROOT/sys/module/$1"
    if [ "$1" = br_netfilter ]; then mkdir -p "$ROOT/proc/sys/net/bridge"
      for k in bridge-nf-call-iptables bridge-nf-call-ip6tables; do [ -f "$ROOT/proc/sys/net/bridge/$k" ] || echo 0 > "$ROOT/proc/sys/net/bridge/$k"; done; fi ;;
  swapoff) [ -f "$ROOT/etc/kiln-model/swap-stuck" ] && exit 255
    head -n1 "$ROOT/proc/swaps" > "$ROOT/proc/swaps.new" && mv "$ROOT/proc/swaps.new" "$ROOT/proc/swaps" ;;
esac
exit 0
"#;

struct Node {
    dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        // The kubelet stand-in outlives the run, as kubelet.service does: stop it.
        common::stop_kubelet(&self.root());
    }
}

impl Node {
    fn new(minor: u32, hostname: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let n = Node { dir };
        common::node_root(&n.root(), "flatcar", &format!("v1.{minor}.2"), hostname);
        // The cluster's kubelet-config ConfigMap as a plain kubeadm init node uploads it:
        // kubeadm's default flex dir, nothing about swap.
        n.write(
            "etc/kiln-model/kubelet-config.json",
            "{\"apiVersion\": \"kubelet.config.k8s.io/v1beta1\", \"kind\": \"KubeletConfiguration\", \"cgroupDriver\": \"systemd\", \"volumePluginDir\": \"/usr/libexec/kubernetes/kubelet-plugins/volume/exec\", \"healthzBindAddress\": \"127.0.0.1\", \"healthzPort\": 10248}\n",
        );
        // kubelet's journal, as journalctl -u kubelet -o cat prints it.
        n.write("opt/bin/journalctl", "#!/bin/sh\ncat \"$ROOT/var/lib/kiln-model/kubelet.journal\" 2>/dev/null\n");
        std::fs::set_permissions(n.root().join("opt/bin/journalctl"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(n.path("bin")).unwrap();
        std::fs::create_dir_all(n.path("rec")).unwrap();
        for tool in ["modprobe", "swapoff", "kubectl"] {
            let p = n.path(&format!("bin/{tool}"));
            std::fs::write(&p, STAND_IN).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        for tool in ["kubeadm", "systemctl"] {
            std::os::unix::fs::symlink(model(tool), n.path(&format!("bin/{tool}"))).unwrap();
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
        common::write(&self.root(), rel, text);
    }
    /// An executable `rel` under the root with `text`.
    fn exe(&self, rel: &str, text: &str) {
        self.write(rel, text);
        std::fs::set_permissions(self.root().join(rel), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root().join(rel)).unwrap_or_default()
    }
    /// kiln-firstboot in a fresh network namespace; `listen` ports are held open there.
    fn run_listening(&self, listen: &[u16], args: &[&str]) -> Output {
        let path = format!("{}:{}", self.path("bin").display(), std::env::var("PATH").unwrap_or_default());
        // Each holder creates its ready file once it listens; the run starts only when
        // every port is held (no sleep: python3 may take seconds to start under load).
        let ready = self.path("ready");
        let _ = std::fs::remove_dir_all(&ready);
        std::fs::create_dir_all(&ready).unwrap();
        let holders: String = listen
            .iter()
            .map(|p| {
                format!(
                    "python3 -c 'import socket,time;s=socket.socket();s.bind((\"0.0.0.0\",{p}));s.listen();open(\"{r}/{p}\",\"w\").close();time.sleep(60)' >/dev/null 2>&1 </dev/null & \
                     n=0; while [ ! -e {r}/{p} ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done; ",
                    r = ready.display()
                )
            })
            .collect();
        // 10.255.0.0/24 routes to lo but is no local address: what is sent there is
        // looped back and dropped (no forwarding), a silent firewall DROP, every time.
        let script = format!(
            "ip link set lo up && ip addr add 10.1.0.2/32 dev lo && ip route add 10.255.0.0/24 dev lo && {holders} exec \"$@\""
        );
        Command::new("unshare")
            .args(["-rn", "sh", "-c", &script, "sh"])
            .arg(env!("CARGO_BIN_EXE_kiln-firstboot"))
            .arg("--root")
            .arg(self.root())
            .args(["--backoff", "0", "--wait", "5"])
            .args(args)
            .env("PATH", path)
            .env("REC", self.path("rec"))
            .env("ROOT", self.root())
            .env("KILN_MODEL_ROOT", self.root())
            .env("KILN_MODEL_KUBELET_LIFETIME", "30")
            .output()
            .unwrap()
    }
    fn run(&self, args: &[&str]) -> Output {
        self.run_listening(&[], args)
    }
    /// The stand-ins' calls; for kubeadm, the model's record.
    fn calls(&self, tool: &str) -> Vec<String> {
        let f = if tool == "kubeadm" {
            self.root().join("var/lib/kiln-model/calls")
        } else {
            self.path(&format!("rec/{tool}.calls"))
        };
        std::fs::read_to_string(f).unwrap_or_default().lines().map(str::to_string).collect()
    }
    /// kubeadm's init, join and reset runs (not `kubeconfig user`, which the init node
    /// runs for its admin user after init).
    fn kubeadm_runs(&self) -> Vec<String> {
        self.calls("kubeadm").into_iter().filter(|c| !c.starts_with("kubeconfig user ")).collect()
    }
    /// The n-th --config file kubeadm received.
    fn config(&self, n: usize) -> Vec<serde_json::Value> {
        let text = self.read(&format!("var/lib/kiln-model/config-{n}.json"));
        text.split("\n---\n").map(|d| serde_json::from_str(d).unwrap()).collect()
    }
    /// What kubeadm wrote for the kubelet.
    fn kubelet_config(&self) -> serde_json::Value {
        serde_json::from_str(&self.read("var/lib/kubelet/config.yaml")).unwrap()
    }
    fn mode(&self, rel: &str) -> u32 {
        std::fs::metadata(self.root().join(rel)).unwrap().permissions().mode() & 0o777
    }
}

fn out(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
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

/// An init node `cp-1` at Kubernetes 1.34 with the cluster's PKI in its node.toml.
fn init_node() -> Node {
    let n = Node::new(34, "cp-1");
    n.write(
        "etc/kiln/node.toml",
        &format!("{}[node]\nrole = \"init\"\nnode_ip = \"10.0.0.5\"\n{}", cluster("api.example.test:6443"), pki()),
    );
    n
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
    n.write("etc/fstab", "/dev/vda1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n");
    let o = n.run(&["run"]);
    assert!(o.status.success(), "{}", out(&o));
    no_secrets(&o, &n);
    // The journal says where this node's settings came from.
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        said.lines().any(|l| l.starts_with("<6>kiln-firstboot: node node-")
            && l.contains("(init) ip 10.0.0.5; sources: ")
            && l.ends_with(&n.root().join("etc/kiln/node.toml").display().to_string())),
        "{said}"
    );
    let cfg_path = n.root().join("run/kiln/kubeadm.json");
    assert_eq!(n.kubeadm_runs(), [format!("init --config {} --skip-token-print", cfg_path.display())]);
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
        serde_json::json!([{ "name": "flex-volume-plugin-dir", "value": FLEX }])
    );
    // What the kubelet got, as kubeadm wrote it: the cluster document plus this node's patch.
    let k = n.kubelet_config();
    assert_eq!(k["volumePluginDir"], FLEX);
    assert_eq!(k["cgroupDriver"], "systemd");
    assert_eq!(k["failSwapOn"], true);
    let flags = n.read("var/lib/kubelet/kubeadm-flags.env");
    assert!(flags.contains("--node-ip=10.0.0.5") && flags.contains("--hostname-override=node-"), "{flags}");
    // kubeadm's systemd sequence ran and the restart returned (no deadlock, no failure).
    let sd: Vec<String> =
        n.read("var/lib/kiln-model/systemctl").lines().map(|l| l.split(" rc=").next().unwrap().to_string()).collect();
    assert_eq!(sd, ["stop kubelet", "daemon-reload", "restart kubelet"]);
    assert!(n.read("var/lib/kiln-model/systemctl").lines().all(|l| l.contains(" rc=0 ")));
    let kubelet: serde_json::Value = serde_json::from_str(&n.read("var/lib/kiln-model/kubelet.json")).unwrap();
    assert_eq!(kubelet["flags"]["node-ip"], "10.0.0.5");
    for key in ["ca.key", "front-proxy-ca.key", "etcd/ca.key", "sa.key"] {
        assert_eq!(n.mode(&format!("etc/kubernetes/pki/{key}")), 0o600, "{key}");
    }
    assert_eq!(n.mode("etc/kubernetes/pki/sa.pub"), 0o644);
    assert_eq!(n.read("etc/kubernetes/pki/ca.key"), KEY);
    // Host fixes: modules loaded, all three sysctls set and read back, swap off now
    // and masked for later boots (the fstab entry's unit and the Pi's swap services).
    assert_eq!(n.calls("modprobe"), ["overlay", "br_netfilter"]);
    for k in ["net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables", "net/ipv4/ip_forward"] {
        assert_eq!(n.read(&format!("proc/sys/{k}")).trim(), "1", "{k}");
    }
    assert_eq!(n.calls("swapoff"), ["-a"]);
    for unit in ["swapfile.swap", "dphys-swapfile.service", "dev-zram0.swap"] {
        let link = std::fs::read_link(n.root().join("etc/systemd/system").join(unit));
        assert_eq!(link.ok(), Some(PathBuf::from("/dev/null")), "{unit} not masked");
    }
    // zram-generator's first config location (systemd/zram-generator README), with no
    // [zramN] section: the distribution's default zram device is not created.
    let zram =
        std::fs::read_to_string(n.root().join("etc/systemd/zram-generator.conf")).expect("no zram-generator.conf");
    assert!(zram.lines().all(|l| l.is_empty() || l.starts_with('#')), "{zram}");
    let state: serde_json::Value = serde_json::from_str(&n.read("var/lib/kiln/state.json")).unwrap();
    assert_eq!(state["machine_id"], "0123456789abcdef0123456789abcdef");
    assert_eq!(state["role"], "init");
    assert!(n.root().join("run/cluster-api/bootstrap-success.complete").exists());
    assert!(!n.root().join("run/kiln/bootstrapping").exists(), "the bootstrapping marker outlived the run");
    // The pinned CNI manifest applied with the admin kubeconfig; the admin user's kubeconfig is 0600.
    let admin = n.root().join("etc/kubernetes/admin.conf");
    let rbac = n.root().join("run/kiln/admin-user-rbac.json");
    let kubectl = n.calls("kubectl");
    assert_eq!(
        kubectl.iter().filter(|c| !c.ends_with(&rbac.display().to_string())).collect::<Vec<_>>(),
        [&format!("--kubeconfig {} apply -f {}", admin.display(), n.root().join("etc/kiln/cni.yaml").display())]
    );
    assert_eq!(n.mode("home/core/.kube/config"), 0o600);
    // Row 40: the admin user's kubeconfig is its own (kubeadm kubeconfig user, CN core,
    // no group), bound to `edit` by default, never a copy of admin.conf, which stays 0600.
    let user_cfg = n.root().join("run/kiln/kubeconfig-user.json");
    assert!(
        n.calls("kubeadm").contains(&format!("kubeconfig user --client-name core --config {}", user_cfg.display())),
        "{:?}",
        n.calls("kubeadm")
    );
    let own = n.read("home/core/.kube/config");
    assert!(own.contains("    user: core\n") && own != n.read("etc/kubernetes/admin.conf"), "{own}");
    assert_eq!(n.mode("etc/kubernetes/admin.conf"), 0o600);
    assert!(kubectl.contains(&format!("--kubeconfig {} apply -f {}", admin.display(), rbac.display())), "{kubectl:?}");
    let bindings: serde_json::Value = serde_json::from_str(&n.read("run/kiln/admin-user-rbac.json")).unwrap();
    let items = bindings["items"].as_array().unwrap();
    assert_eq!(items[0]["kind"], "ClusterRoleBinding");
    assert_eq!(items[0]["roleRef"]["name"], "edit");
    assert_eq!(
        items[0]["subjects"],
        serde_json::json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "core"}])
    );
    assert!(items.iter().all(|i| i["roleRef"]["name"] != "cluster-admin"), "{bindings}");
    let st = n.run(&["status"]);
    assert!(String::from_utf8_lossy(&st.stdout).starts_with("joined: node-"), "{}", out(&st));

    // Second boot: a no-op.
    let o = n.run(&["run"]);
    assert!(o.status.success());
    assert_eq!(n.kubeadm_runs().len(), 1, "kubeadm ran again");
    // A cloned disk on another machine runs again.
    n.write("etc/machine-id", "ffffffffffffffffffffffffffffffff\n");
    let o = n.run(&["run"]);
    assert!(o.status.success(), "{}", out(&o));
    let calls = n.kubeadm_runs();
    // The clone carries the first machine's admin.conf: reset, then init. kubeadm reset
    // deleted /etc/kubernetes/pki; kiln wrote the cluster's CA again, so kubeadm did not
    // generate a new one.
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls[1] == "reset -f" && calls[2].starts_with("init "), "{calls:?}");
    assert_eq!(n.read("etc/kubernetes/pki/ca.key"), KEY);
    assert_eq!(n.read("var/lib/kiln-model/generated"), "", "kubeadm generated a CA of its own");
    // `reset` removes kiln's state and stale CNI state so `run` starts over.
    n.write("etc/cni/net.d/10-flannel.conflist", "{}");
    n.write("run/flannel/subnet.env", "X=1");
    let o = n.run(&["reset"]);
    assert!(o.status.success(), "{}", out(&o));
    for gone in
        ["var/lib/kiln/state.json", "etc/cni/net.d", "run/flannel", "run/cluster-api/bootstrap-success.complete"]
    {
        assert!(!n.root().join(gone).exists(), "{gone} survived reset");
    }
    assert_eq!(n.calls("kubeadm").last().map(String::as_str), Some("reset -f"));
}

#[test]
fn worker_v1beta3_joins_with_discovery_and_no_keys() {
    // The endpoint is an address of the test's network namespace (see run_listening).
    let endpoint = "10.1.0.2:6443".to_string();
    let n = Node::new(30, "worker-7");
    n.write(
        "var/lib/cloud/seed/nocloud/user-data",
        &format!("{}[node]\nrole = \"join\"\n[pki]\nca_cert = \"\"\"\n{CERT}\"\"\"\n", cluster(&endpoint)),
    );
    n.write("var/lib/cloud/seed/nocloud/meta-data", "instance-id: iid-worker-7\n");
    let o = n.run_listening(&[6443], &["run"]);
    assert!(o.status.success(), "{}", out(&o));
    no_secrets(&o, &n);
    assert!(n.calls("kubeadm")[0].starts_with("join --config "));
    let d = n.config(0);
    assert_eq!(d.len(), 1, "kubeadm join reads only the JoinConfiguration");
    assert_eq!(d[0]["apiVersion"], "kubeadm.k8s.io/v1beta3");
    assert_eq!(d[0]["kind"], "JoinConfiguration");
    let bt = &d[0]["discovery"]["bootstrapToken"];
    assert_eq!(bt["token"], TOKEN);
    assert_eq!(bt["apiServerEndpoint"], endpoint);
    assert_eq!(bt["caCertHashes"][0], "sha256:2515a0c0418253eff7778e3355b8834092a8cf745376caa71d47b96d11c54194");
    assert!(bt.get("unsafeSkipCAVerification").is_none());
    assert_eq!(d[0]["nodeRegistration"]["name"], "worker-7");
    // v1beta3: a map; node IP from the route to the endpoint.
    assert_eq!(d[0]["nodeRegistration"]["kubeletExtraArgs"]["node-ip"], "10.1.0.2");
    assert!(d[0].get("controlPlane").is_none());
    assert!(!n.root().join("etc/kubernetes/pki/ca.key").exists());
    // The cluster's ConfigMap carried kubeadm's default flex dir; this node's patch wins.
    assert_eq!(n.kubelet_config()["volumePluginDir"], FLEX);
    let state: serde_json::Value = serde_json::from_str(&n.read("var/lib/kiln/state.json")).unwrap();
    assert_eq!(state["instance_id"], "iid-worker-7");
}

/// Per-node kubelet settings reach a joining kubelet through what kubeadm join reads:
/// the swap policy, the flex dir and `[node] kubelet` through the kubeletconfiguration
/// patch, `kubelet_extra_args` through kubeletExtraArgs. With swap on and
/// `swap = "limited"`, the kubelet stand-in (which refuses swap unless failSwapOn is
/// false, as kubelet does) starts.
#[test]
fn join_node_kubelet_gets_its_own_settings() {
    let n = Node::new(34, "worker-9");
    n.write(
        "etc/kiln/node.toml",
        &format!(
            "{}[node]\nrole = \"join\"\nnode_ip = \"10.0.0.9\"\nswap = \"limited\"\nkubelet = {{ maxPods = 42 }}\nkubelet_extra_args = {{ \"v\" = \"2\" }}\n",
            cluster("10.1.0.2:6443")
        ),
    );
    let o = n.run_listening(&[6443], &["run"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(n.calls("swapoff").is_empty(), "swap turned off on a limited-swap node");
    assert!(!n.root().join("etc/systemd/zram-generator.conf").exists(), "zram disabled on a limited-swap node");
    let k = n.kubelet_config();
    assert_eq!(k["failSwapOn"], false);
    assert_eq!(k["memorySwap"]["swapBehavior"], "LimitedSwap");
    assert_eq!(k["maxPods"], 42);
    assert_eq!(k["volumePluginDir"], FLEX);
    let flags = n.read("var/lib/kubelet/kubeadm-flags.env");
    assert!(flags.contains("--node-ip=10.0.0.9") && flags.contains("--v=2"), "{flags}");
    let kubelet: serde_json::Value = serde_json::from_str(&n.read("var/lib/kiln-model/kubelet.json")).unwrap();
    assert_eq!(kubelet["config"]["failSwapOn"], false, "the kubelet did not start from kubeadm's file");
    // plan shows the settings where kubeadm reads them.
    let plan = String::from_utf8_lossy(&n.run(&["plan"]).stdout).to_string();
    assert!(plan.contains("kubeletconfiguration+merge.json") && plan.contains("\"maxPods\": 42"), "{plan}");
    assert!(plan.contains("--v=2"), "{plan}");

    // The same node with swap = "off" on a host whose swap cannot be turned off: stopped
    // before kubeadm with the reason.
    let m = Node::new(34, "worker-10");
    m.write(
        "etc/kiln/node.toml",
        &format!("{}[node]\nrole = \"join\"\nnode_ip = \"10.0.0.10\"\n", cluster("10.1.0.2:6443")),
    );
    m.write("etc/kiln-model/swap-stuck", "");
    let o = m.run_listening(&[6443], &["run"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("[swap]"), "{}", out(&o));
    assert!(m.calls("kubeadm").is_empty());
}

#[test]
fn control_plane_join_and_cmdline_override() {
    let n = Node::new(34, "localhost");
    n.write(
        "etc/kiln/node.toml",
        &format!("{}[node]\nrole = \"join\"\napi_server_bind_port = 6444\n{}", cluster("10.1.0.2:6443"), pki()),
    );
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
    let o = n.run_listening(&[6443], &["--cmdline", cmdline.to_str().unwrap(), "run"]);
    assert!(o.status.success(), "{}", out(&o));
    let d = n.config(0);
    assert_eq!(d[0]["controlPlane"]["localAPIEndpoint"]["advertiseAddress"], "10.1.0.2");
    assert_eq!(d[0]["controlPlane"]["localAPIEndpoint"]["bindPort"], 6444);
    assert_eq!(d[0]["nodeRegistration"]["name"], "cp-2");
    assert_eq!(n.mode("etc/kubernetes/pki/etcd/ca.key"), 0o600);
    // The model refuses a control-plane join without the shared CA files: they were there.
    assert!(n.root().join("etc/kubernetes/manifests/kube-apiserver.yaml").exists());
}

#[test]
fn failures_are_diagnosed_retried_with_reset_and_marked() {
    let n = init_node();
    // The runtime uses cgroupfs, the kubelet systemd: the kubelet stand-in exits with
    // kubelet's text in its journal; kubeadm only says the kubelet is not healthy.
    n.write("etc/kiln-model/runtime-cgroup-driver", "cgroupfs\n");
    let o = n.run(&["--attempts", "2", "run"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    no_secrets(&o, &n);
    let calls = n.calls("kubeadm");
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls[0].starts_with("init ") && calls[1] == "reset -f" && calls[2].starts_with("init "), "{calls:?}");
    let log = n.read("var/log/kiln/kubeadm.log");
    assert!(log.contains("[kubelet-check] The kubelet is not healthy"), "{log}");
    assert!(!log.contains("cgroup driver"), "kubeadm's own output must not carry the cause: {log}");
    let so = String::from_utf8_lossy(&o.stdout);
    assert!(so.contains("<3>kiln-firstboot: diagnosis [cgroup-driver-mismatch]"), "{so}");
    let failed = n.read("run/kiln/bootstrap-failed");
    assert!(failed.contains("cgroup"), "{failed}");
    assert!(!n.root().join("var/lib/kiln/state.json").exists());
    std::fs::remove_file(n.root().join("etc/kiln-model/runtime-cgroup-driver")).unwrap();
    // A new boot: the journal stand-in has no --since; start it afresh.
    std::fs::remove_file(n.root().join("var/lib/kiln-model/kubelet.journal")).unwrap();

    // The bootstrap-token RBAC error (kubeadm troubleshooting, v1.18 into v1.17).
    n.write("etc/kiln-model/fail", "rbac-forbidden-1.17\n");
    let o = n.run(&["--attempts", "1", "run"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("[bootstrap-rbac-forbidden]"), "{}", out(&o));

    // One failed attempt, then success: kubeadm reset deleted /etc/kubernetes/pki in
    // between, and the cluster's CA is on disk again for the second init.
    std::fs::remove_file(n.root().join("etc/kiln-model/fail")).unwrap();
    n.write("etc/kiln-model/fail-once", "image-pull\n");
    let o = n.run(&["--attempts", "2", "run"]);
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(n.read("etc/kubernetes/pki/ca.key"), KEY);
    assert_eq!(n.read("var/lib/kiln-model/generated"), "", "kubeadm generated a CA of its own");
    assert!(!n.root().join("run/kiln/bootstrap-failed").exists());

    // Power cut: kubeadm files without success state converge (reset, then init).
    std::fs::remove_file(n.root().join("var/lib/kiln/state.json")).unwrap();
    let before = n.calls("kubeadm").len();
    let o = n.run(&["run"]);
    assert!(o.status.success(), "{}", out(&o));
    let calls = n.calls("kubeadm");
    assert_eq!(&calls[before..].iter().map(|c| c.split(' ').next().unwrap()).collect::<Vec<_>>(), &["reset", "init"]);
}

/// The body of a fixture in `tests/fixtures/kubeadm-texts/` (its headers dropped).
fn fixture_text(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/fixtures/kubeadm-texts/{name}.txt"));
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    raw.split_once("\n\n").map(|(_, t)| t.to_string()).unwrap_or_else(|| panic!("{name}: no headers"))
}

/// Rows 42 and 25: after a failed attempt the evidence is kubelet's journal of *this*
/// attempt, `crictl ps -a` and the newest kube-proxy container's log tail, each
/// bounded, and each can carry the diagnosis. The journal stand-in honours `--since
/// @EPOCH` over timestamped lines: an earlier boot's swap failure and the first
/// attempt's line are older than the second attempt, so a read from the start (or
/// from the run's start) shows up in the evidence and as a wrong diagnosis. kubeadm
/// says only that the kubelet is not healthy; the exited API server is only in
/// `crictl ps -a` (padded past 64 KiB, newest at the end), the loopback fallback only
/// in kube-proxy's log (`cmd/kube-proxy/app/server.go` detectNodeIPs, v1.34.2).
#[test]
fn failure_evidence_is_this_attempts_journal_crictl_and_kube_proxy() {
    let n = init_node();
    n.write("etc/kiln-model/fail", "kubelet-not-healthy\n");
    // An earlier boot, an hour ago: the kubelet refused swap then.
    let hour_ago = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 3600;
    n.write(
        "var/lib/kiln-model/journal.ts",
        &format!("{hour_ago} E1125 09:40:58.931046 2211 run.go:72] \"command failed\" err=\"failed to run Kubelet: running with swap on is not supported, please disable swap\" earlier-boot\n"),
    );
    n.exe(
        "opt/bin/journalctl",
        "#!/bin/sh\necho \"$*\" >> \"$REC/journalctl.calls\"\nsince=0\nwhile [ $# -gt 0 ]; do [ \"$1\" = --since ] && { since=${2#@}; shift; }; shift; done\n\
         case \"$since\" in ''|*[!0-9]*) since=0 ;; esac\n\
         while read -r ts line; do [ \"$ts\" -ge \"$since\" ] && echo \"$line\"; done < \"$ROOT/var/lib/kiln-model/journal.ts\"\nexit 0\n",
    );
    // Each kubeadm attempt logs a kubelet line at its start, then takes over a second.
    let kubeadm = n.path("bin/kubeadm");
    std::fs::remove_file(&kubeadm).unwrap();
    std::fs::write(
        &kubeadm,
        format!(
            "#!/bin/sh\ncase \"$1\" in init|join) a=$(( $(cat \"$REC/attempts\" 2>/dev/null || echo 0) + 1 )); echo $a > \"$REC/attempts\"\n\
             echo \"$(date +%s) I1125 kubelet.go:1] attempt-$a-line\" >> \"$ROOT/var/lib/kiln-model/journal.ts\"; sleep 1.2 ;; esac\nexec {} \"$@\"\n",
            model("kubeadm").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&kubeadm, std::fs::Permissions::from_mode(0o755)).unwrap();
    let padding =
        "0000000000000   registry.k8s.io/pause:3.10   2 hours ago   Exited   old   0   0000000000000   old   default\n";
    n.write(
        "var/lib/kiln-model/crictl/ps.txt",
        &format!("{}{}", padding.repeat((1 << 20) / padding.len()), fixture_text("crictl-apiserver-exited")),
    );
    n.write("var/lib/kiln-model/crictl/kube-proxy.log", &fixture_text("kube-proxy-node-ip-current"));
    n.exe(
        "opt/bin/crictl",
        "#!/bin/sh\necho \"$*\" >> \"$REC/crictl.calls\"\nd=\"$ROOT/var/lib/kiln-model/crictl\"\ncase \"$*\" in\n\
         *'ps -a --name kube-proxy -q') echo 3f2a9c1b7d6e40a1; echo 0a1b2c3d4e5f6071 ;;\n\
         *'ps -a') cat \"$d/ps.txt\" ;;\n\
         *'logs --tail '*' 3f2a9c1b7d6e40a1') cat \"$d/kube-proxy.log\" >&2 ;;\n\
         *) echo \"crictl stand-in: unexpected $*\" >&2; exit 1 ;;\nesac\n",
    );
    let o = n.run(&["--attempts", "2", "run"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let so = String::from_utf8_lossy(&o.stdout);
    // The journal: read from each attempt's start.
    let calls = n.calls("journalctl");
    assert_eq!(calls.len(), 2, "{calls:?}");
    for c in &calls {
        assert!(c.starts_with("-u kubelet ") && c.contains(" --since @"), "{c}");
    }
    let evidence = n.read("var/log/kiln/evidence.log");
    assert!(evidence.contains("attempt-2-line"), "this attempt's journal is missing:\n{evidence}");
    assert!(!evidence.contains("attempt-1-line"), "the first attempt's journal in the second's evidence:\n{evidence}");
    assert!(!evidence.contains("earlier-boot"), "an earlier boot's journal in the evidence:\n{evidence}");
    assert!(!so.contains("diagnosis [swap-on]"), "an earlier boot's failure diagnosed:\n{so}");
    // crictl ps -a, bounded, carrying the cause kubeadm does not print.
    assert!(n.calls("crictl").iter().any(|c| c.ends_with(" ps -a")), "{:?}", n.calls("crictl"));
    assert!(evidence.contains("--- crictl ps -a\n") && evidence.contains("kube-apiserver-cp-1"), "{evidence}");
    assert!(evidence.len() < 4 * (64 << 10), "evidence is {} bytes: not bounded", evidence.len());
    assert!(so.contains("<3>kiln-firstboot: diagnosis [control-plane-not-healthy]"), "{so}");
    // kube-proxy's log: the newest container's tail, and its diagnosis first.
    assert!(
        n.calls("crictl").iter().any(|c| c.ends_with(" logs --tail 100 3f2a9c1b7d6e40a1")),
        "{:?}",
        n.calls("crictl")
    );
    assert!(evidence.contains("Can't determine this node's IP, assuming loopback"), "{evidence}");
    let first = so.lines().find(|l| l.contains("kiln-firstboot: diagnosis [")).unwrap_or_default();
    assert!(first.contains("[kube-proxy-node-ip]"), "{so}");
    assert!(n.read("run/kiln/bootstrap-failed").contains("kube-proxy"), "{}", n.read("run/kiln/bootstrap-failed"));
    // `doctor` reads the same evidence afterwards.
    let o = n.run(&["doctor"]);
    assert!(out(&o).contains("known failure [kube-proxy-node-ip]"), "{}", out(&o));
    // A later success removes it: it no longer describes this node.
    std::fs::remove_file(n.root().join("etc/kiln-model/fail")).unwrap();
    let o = n.run(&["--attempts", "1", "run"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(!n.root().join("var/log/kiln/evidence.log").exists());
}

/// `kubeadm reset` blocks when the runtime is stuck (seed item 22): both the retry path
/// and `kiln-firstboot reset` give up at the bound.
#[test]
fn reset_against_a_hanging_kubeadm_ends_within_its_bound() {
    let n = init_node();
    n.write("etc/kiln-model/hang", "reset\n");
    n.write("etc/cni/net.d/10-flannel.conflist", "{}");
    let t = std::time::Instant::now();
    let o = n.run(&["--reset-timeout", "2", "reset"]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(took.as_secs() < 8, "reset took {took:?} with a 2 s bound");
    assert!(out(&o).contains("did not finish"), "{}", out(&o));
    assert!(!n.root().join("etc/cni/net.d").exists(), "the rest was not cleaned");
    // The retry path: init fails, the reset between attempts hangs, the run still ends.
    n.write("etc/kiln-model/fail", "image-pull\n");
    let t = std::time::Instant::now();
    let o = n.run(&["--reset-timeout", "2", "--attempts", "2", "run"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(t.elapsed().as_secs() < 15, "run took {:?}", t.elapsed());
    assert!(String::from_utf8_lossy(&o.stdout).contains("timed out after 2 s"), "{}", out(&o));
}

/// Rows 29 and 36: `kubeadm reset` leaves "CNI plugin configuration, network
/// filtering rules" behind (its closing text, cmd/kubeadm/app/cmd/reset.go
/// manualCleanupInstructions, v1.34.2); `kiln-firstboot reset` flushes and deletes
/// the chains of every iptables and ip6tables table, clears IPVS, deletes the CNI
/// links and removes the CNI state, so a re-join starts without the old pod subnet
/// (flannel's /run/flannel/subnet.env), its IP allocations (/var/lib/cni) or its rules.
#[test]
fn reset_flushes_packet_filters_and_removes_cni_state() {
    let n = Node::new(34, "worker-1");
    for tool in ["iptables", "ip6tables", "ipvsadm", "ip"] {
        n.exe(&format!("usr/sbin/{tool}"), STAND_IN);
    }
    for link in ["cni0", "flannel.1"] {
        n.write(&format!("sys/class/net/{link}/ifindex"), "7\n");
    }
    n.write("var/lib/cni/networks/cbr0/10.244.1.5", "4b1e0a0c\n");
    n.write("var/lib/cni/results/cbr0-4b1e0a0c-eth0", "{}");
    n.write("etc/cni/net.d/10-flannel.conflist", "{}");
    n.write("run/flannel/subnet.env", "FLANNEL_SUBNET=10.244.1.1/24\n");
    let o = n.run(&["reset"]);
    assert!(o.status.success(), "{}", out(&o));
    for ipt in ["iptables", "ip6tables"] {
        let calls = n.calls(ipt);
        for table in ["filter", "nat", "mangle", "raw"] {
            for op in ["-F", "-X"] {
                let want = format!("-t {table} {op}");
                assert!(calls.contains(&want), "{ipt} {want} not run: {calls:?}\n{}", out(&o));
            }
        }
    }
    assert_eq!(n.calls("ipvsadm"), ["--clear"], "{}", out(&o));
    assert_eq!(n.calls("ip"), ["link delete cni0", "link delete flannel.1"], "{}", out(&o));
    for gone in ["var/lib/cni", "etc/cni/net.d", "run/flannel"] {
        assert!(!n.root().join(gone).exists(), "{gone} survived reset:\n{}", out(&o));
    }
    let so = String::from_utf8_lossy(&o.stdout);
    assert!(so.contains("iptables -t nat -F: done") && so.contains("removed /var/lib/cni"), "{so}");
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

/// Row 35 at the point of use: the init node refuses (exit 2, before kubeadm) a CNI
/// manifest whose pod network does not match node.toml's pod_subnet, naming both
/// values, the manifest and the fix; a matching one is applied after init.
#[test]
fn a_cni_manifest_outside_pod_subnet_is_refused_before_kubeadm() {
    let n = Node::new(34, "cp-1");
    let flannel = "kind: ConfigMap\nmetadata:\n  name: kube-flannel-cfg\ndata:\n  net-conf.json: |\n    {\n      \"Network\": \"10.244.0.0/16\",\n      \"Backend\": { \"Type\": \"vxlan\" }\n    }\n";
    n.write("etc/kiln/cni.yaml", flannel);
    let node = |subnet: &str| {
        format!(
            "{}cni_manifest = \"/etc/kiln/cni.yaml\"\n{subnet}[node]\nrole = \"init\"\nnode_ip = \"10.0.0.5\"\n{}",
            cluster("api.example.test:6443"),
            pki()
        )
    };
    n.write("etc/kiln/node.toml", &node("pod_subnet = \"10.42.0.0/16\"\n"));
    let o = n.run(&["run"]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(n.calls("kubeadm").is_empty(), "kubeadm ran with a mismatched CNI manifest");
    assert!(n.calls("kubectl").is_empty(), "the mismatched manifest was applied");
    let failed = n.read("run/kiln/bootstrap-failed");
    for want in [
        "/etc/kiln/cni.yaml:7: flannel's net-conf.json \"Network\" is 10.244.0.0/16 but pod_subnet is 10.42.0.0/16",
        "kiln cluster --pod-subnet",
    ] {
        assert!(failed.contains(want), "{want:?} missing:\n{failed}");
    }
    // Matching (here kiln's default pod_subnet, 10.244.0.0/16): init runs and the manifest is applied.
    n.write("etc/kiln/node.toml", &node(""));
    let o = n.run(&["run"]);
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(n.kubeadm_runs().len(), 1);
    let cni = n.root().join("etc/kiln/cni.yaml").display().to_string();
    assert!(n.calls("kubectl").iter().any(|c| c.ends_with(&format!("apply -f {cni}"))), "{:?}", n.calls("kubectl"));
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
    m.write("etc/kiln-model/fail", "x509-unknown-authority\n");
    assert_eq!(m.run(&["--attempts", "1", "run"]).status.code(), Some(1));
    let o = m.run(&["doctor"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("known failure [x509-unknown-authority]"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// Checks that would otherwise be deletable with every test green: each must stop or
/// warn on a host that has the problem.
#[test]
fn preflight_checks_each_catch_their_problem() {
    let node = || {
        let n = Node::new(34, "cp-1");
        n.write(
            "etc/kiln/node.toml",
            &format!("{}[node]\nrole = \"init\"\nnode_ip = \"10.0.0.5\"\n{}", cluster("api.example.test:6443"), pki()),
        );
        n
    };
    let errors = findings;
    // Ports: something holds 10250 in this network namespace.
    let n = node();
    let o = n.run_listening(&[10250], &["--check-ports", "--json", "doctor"]);
    let e = errors(&o);
    assert!(e.iter().any(|m| m.starts_with("ports ") && m.contains("10250")), "{e:?}\n{}", out(&o));
    let o = n.run(&["--check-ports", "--json", "doctor"]);
    assert!(!errors(&o).iter().any(|m| m.starts_with("ports ")), "{:?}", errors(&o));
    // Executables kubeadm's preflight looks for.
    std::fs::remove_file(n.root().join("usr/sbin/socat")).unwrap();
    let o = n.run(&["--json", "doctor"]);
    assert!(errors(&o).iter().any(|m| m.starts_with("executables ") && m.contains("socat")), "{:?}", errors(&o));
    // containerd with the other cgroup driver: stopped before kubeadm.
    let n = node();
    n.write("etc/containerd/config.toml", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = false\n");
    let o = n.run(&["run"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("[cgroup-driver]"), "{}", out(&o));
    assert!(n.calls("kubeadm").is_empty());
    // No machine id: the once-per-machine state cannot work.
    let n = node();
    n.write("etc/machine-id", "");
    let o = n.run(&["run"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("[machine-id]"), "{}", out(&o));
    assert!(n.calls("kubeadm").is_empty());
}

/// `doctor`'s findings that are not ok, as `"id message"`.
fn findings(o: &Output) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v["checks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|c| c["level"] != "ok")
        .map(|c| format!("{} {}", c["id"].as_str().unwrap_or(""), c["message"].as_str().unwrap_or("")))
        .collect()
}

/// `doctor --json`'s one check `id`: (level, message); a panic when there is none.
fn doctor_check(n: &Node, id: &str) -> (String, String) {
    let o = n.run(&["--json", "doctor"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let c = v["checks"].as_array().and_then(|c| c.iter().find(|c| c["id"] == id).cloned());
    let c = c.unwrap_or_else(|| panic!("no {id} check:\n{}", out(&o)));
    (c["level"].as_str().unwrap_or("").into(), c["message"].as_str().unwrap_or("").into())
}

/// Issue 25, row 13: every port kubeadm's preflight holds `PortOpenCheck` on (v1.34.2
/// `cmd/kubeadm/app/preflight/checks.go`) is reported when something listens there: the
/// control plane's API server bind port (from node.toml, not a fixed 6443), 10259, 10257,
/// 2379, 2380 and 10250; a worker only 10250.
#[test]
fn preflight_reports_every_port_kubeadm_checks_per_role() {
    let all = [6443, 6444, 10259, 10257, 2379, 2380, 10250];
    let ports_finding = |role: &str, extra: &str| -> String {
        let n = Node::new(34, "cp-1");
        let secrets = if role == "join" { String::new() } else { pki() };
        n.write(
            "etc/kiln/node.toml",
            &format!(
                "{}[node]\nrole = \"{role}\"\nnode_ip = \"10.0.0.5\"\n{extra}{secrets}",
                cluster("api.example.test:6443")
            ),
        );
        let o = n.run_listening(&all, &["--check-ports", "--json", "doctor"]);
        let f = findings(&o);
        f.iter()
            .find(|m| m.starts_with("ports "))
            .cloned()
            .unwrap_or_else(|| panic!("no ports finding: {f:?}\n{}", out(&o)))
    };
    let busy = |m: &str| -> Vec<u16> {
        let list = m.split_once(" in use").map(|(l, _)| l).unwrap_or("");
        all.iter().copied().filter(|p| list.contains(&format!(" {p} ("))).collect()
    };
    for role in ["init", "control-plane"] {
        let m = ports_finding(role, "");
        assert_eq!(busy(&m), [6443, 10259, 10257, 2379, 2380, 10250], "{role}: {m}");
        assert!(m.contains("6443 (kube-apiserver)"), "{m}");
    }
    // The API server's own port is the node's api_server_bind_port.
    let m = ports_finding("init", "api_server_bind_port = 6444\n");
    assert_eq!(busy(&m), [6444, 10259, 10257, 2379, 2380, 10250], "{m}");
    let m = ports_finding("join", "");
    assert_eq!(busy(&m), [10250], "{m}");
}

/// Issue 25, row 27: kubeadm's `NumCPUCheck` (2) and `MemCheck` (1700 MB, sysinfo's total
/// RAM / 1024 / 1024, rounded down; `MemTotal` kB / 1024 here) stop a control plane at the
/// same boundary kubeadm does; a worker is not held to them.
#[test]
fn control_plane_memory_and_cpus_stop_at_kubeadm_boundaries() {
    let n = Node::new(34, "cp-1");
    let node = |role: &str| {
        let secrets = if role == "join" { String::new() } else { pki() };
        n.write(
            "etc/kiln/node.toml",
            &format!(
                "{}[node]\nrole = \"{role}\"\nnode_ip = \"10.0.0.5\"\n{secrets}",
                cluster("api.example.test:6443")
            ),
        );
    };
    let about = |id: &str| -> Vec<String> {
        let o = n.run(&["--json", "doctor"]);
        findings(&o).into_iter().filter(|m| m.starts_with(&format!("{id} "))).collect()
    };
    node("init");
    // 1740799 kB is 1699.99 MB: kubeadm says 1699 MB, below 1700.
    n.write("proc/meminfo", "MemTotal:        1740799 kB\nMemFree:  100 kB\n");
    let m = about("memory");
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(m[0].contains("the system RAM (1699 MB) is less than the minimum 1700 MB"), "{m:?}");
    let o = n.run(&["run"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("[memory]"), "{}", out(&o));
    assert!(n.calls("kubeadm").is_empty());
    n.write("proc/meminfo", "MemTotal:        1740800 kB\n");
    assert_eq!(about("memory"), Vec::<String>::new());
    node("control-plane");
    n.write("proc/meminfo", "MemTotal:        1740799 kB\n");
    assert_eq!(about("memory").len(), 1);
    // One CPU stops a control plane; two do not.
    n.write("proc/meminfo", "MemTotal:        4000000 kB\n");
    n.write("proc/cpuinfo", "processor\t: 0\n");
    let c = about("cpus");
    assert!(c.len() == 1 && c[0].contains("1 CPU: control planes need 2"), "{c:?}");
    n.write("proc/cpuinfo", "processor\t: 0\nprocessor\t: 1\n");
    assert_eq!(about("cpus"), Vec::<String>::new());
    // A worker with 1 CPU and 1 GB is fine.
    node("join");
    n.write("proc/meminfo", "MemTotal:        1000000 kB\n");
    n.write("proc/cpuinfo", "processor\t: 0\n");
    assert_eq!([about("memory"), about("cpus")].concat(), Vec::<String>::new());
}

/// Issue 25, row 45: on a node with several NICs, doctor (and run's preflight) requires
/// the service CIDR to leave by the node IP's adapter, and a default route (an error
/// without a node IP, a warning with one), read from the kernel's `/proc/net/route`.
#[test]
fn multi_nic_routes_must_use_the_node_ips_interface() {
    let n = Node::new(34, "w-1");
    n.write(
        "etc/kiln/node.toml",
        &format!("{}[node]\nrole = \"join\"\nnode_ip = \"10.0.0.5\"\n", cluster("10.0.0.2:6443")),
    );
    let head = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n";
    // eth0 10.0.0.0/16 (the node IP's), eth1 192.168.1.0/24; defaults as given.
    let table = |defaults: &str| {
        n.write(
            "proc/net/route",
            &format!("{head}{defaults}eth0\t0000000A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\neth1\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"),
        );
    };
    let via_eth0 = |metric: u32| format!("eth0\t00000000\t0100000A\t0003\t0\t0\t{metric}\t00000000\t0\t0\t0\n");
    let via_eth1 = |metric: u32| format!("eth1\t00000000\t0101A8C0\t0003\t0\t0\t{metric}\t00000000\t0\t0\t0\n");
    let routes = |n: &Node| doctor_check(n, "routes");
    // No default route: with the node IP given kubeadm needs none, but ClusterIPs are
    // unreachable from host-network pods: a warning naming the node IP's interface.
    table("");
    let (level, m) = routes(&n);
    assert_eq!(level, "warning", "{m}");
    assert!(m.starts_with("no default IPv4 route and no route for service_subnet 10.96.0.0/12"), "{m}");
    assert!(m.contains("ip route add default via GATEWAY dev eth0"), "{m}");
    // Without a node IP kubeadm and kubelet pick the address from the default route: an
    // error (doctor: the endpoint's name does not resolve here, so the IP is unresolved).
    n.write("etc/kiln/node.toml", &format!("{}[node]\nrole = \"join\"\n", cluster("api.example.test:6443")));
    let (level, m) = routes(&n);
    assert_eq!(level, "error", "{m}");
    assert!(m.starts_with("no default IPv4 route and no route for service_subnet 10.96.0.0/12"), "{m}");
    assert!(m.contains("kubeadm and kubelet pick the node's address from the default route"), "{m}");
    n.write(
        "etc/kiln/node.toml",
        &format!("{}[node]\nrole = \"join\"\nnode_ip = \"10.0.0.5\"\n", cluster("10.0.0.2:6443")),
    );
    // The winning default route is eth1's: the service CIDR leaves by the wrong adapter.
    table(&format!("{}{}", via_eth1(100), via_eth0(200)));
    let (level, m) = routes(&n);
    assert_eq!(level, "error", "{m}");
    assert!(m.starts_with("service_subnet 10.96.0.0/12 routes via eth1 but the node IP 10.0.0.5 is on eth0"), "{m}");
    assert!(m.contains("ip route add 10.96.0.0/12 dev eth0"), "{m}");
    // Two NICs, eth0's default wins: fine.
    table(&format!("{}{}", via_eth1(200), via_eth0(100)));
    let (level, m) = routes(&n);
    assert_eq!(level, "ok", "{m}");
    assert_eq!(m, "service_subnet 10.96.0.0/12 routes via eth0, the interface of the node IP 10.0.0.5; default IPv4 route via eth0");
    // A specific route for the service CIDR via eth0 wins over eth1's default.
    table(&format!("{}eth0\t0000600A\t00000000\t0001\t0\t0\t0\t0000F0FF\t0\t0\t0\n", via_eth1(100)));
    assert_eq!(routes(&n).0, "ok");
    // IPv6: the node IP's interface from /proc/net/if_inet6, the routes from ipv6_route.
    n.write(
        "etc/kiln/node.toml",
        &format!(
            "{}service_subnet = \"fd00:96::/108\"\n[node]\nrole = \"join\"\nnode_ip = \"fd00::5\"\n",
            cluster("[fd00::2]:6443")
        ),
    );
    n.write("proc/net/if_inet6", "fd000000000000000000000000000005 02 40 00 80     eth0\n");
    let v6 = |dev: &str| {
        n.write(
            "proc/net/ipv6_route",
            &format!("fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 {dev}\n\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n"),
        );
    };
    v6("eth1");
    let (level, m) = routes(&n);
    assert_eq!(level, "error", "{m}");
    assert!(m.starts_with("service_subnet fd00:96::/108 routes via eth1 but the node IP fd00::5 is on eth0"), "{m}");
    v6("eth0");
    let (level, m) = routes(&n);
    assert_eq!(level, "ok", "{m}");
    assert!(m.ends_with("default IPv6 route via eth0"), "{m}");
}

/// Issue 25, row 28: doctor names the host's iptables backend (`iptables --version`, a
/// scratch `iptables` here) and the kube-proxy mode, and warns when legacy tables are in
/// use on an nf_tables host (`/proc/net/ip_tables_names`): rules in both backends.
#[test]
fn iptables_backend_and_kube_proxy_mode_are_reported() {
    let n = Node::new(34, "w-1");
    n.write(
        "etc/kiln/node.toml",
        &format!("{}[node]\nrole = \"join\"\nnode_ip = \"10.0.0.5\"\n", cluster("10.0.0.2:6443")),
    );
    let iptables = |mode: &str| {
        let p = n.path("bin/iptables");
        std::fs::write(&p, format!("#!/bin/sh\n[ \"$1\" = --version ] && echo 'iptables v1.8.10 ({mode})'\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let check = |n: &Node| doctor_check(n, "iptables");
    iptables("nf_tables");
    let (level, m) = check(&n);
    assert_eq!(level, "ok", "{m}");
    assert!(
        m.starts_with("iptables backend nf_tables (iptables v1.8.10 (nf_tables)); kube-proxy mode iptables"),
        "{m}"
    );
    // Legacy tables in use beside an nf_tables iptables: rules in both backends.
    n.write("proc/net/ip_tables_names", "filter\nnat\n");
    let (level, m) = check(&n);
    assert_eq!(level, "warning", "{m}");
    assert!(m.contains("legacy iptables tables are in use (filter, nat in /proc/net/ip_tables_names)"), "{m}");
    assert!(m.contains("update-alternatives --set iptables /usr/sbin/iptables-nft"), "{m}");
    // A legacy host with legacy tables is consistent.
    iptables("legacy");
    let (level, m) = check(&n);
    assert_eq!(level, "ok", "{m}");
    assert!(m.starts_with("iptables backend legacy (iptables v1.8.10 (legacy))"), "{m}");
}

/// Issue 25, row 34: doctor reports the SELinux mode from `/sys/fs/selinux/enforce`
/// (absent: disabled), warns on enforcing for kiln's paths without a label, and `run`
/// relabels what it created with restorecon (a stand-in here) when SELinux is enabled.
#[test]
fn selinux_mode_is_reported_and_kiln_paths_relabelled() {
    let n = Node::new(34, "cp-1");
    n.write(
        "etc/kiln/node.toml",
        &format!("{}[node]\nrole = \"init\"\nnode_ip = \"10.0.0.5\"\n{}", cluster("api.example.test:6443"), pki()),
    );
    assert_eq!(doctor_check(&n, "selinux"), ("ok".into(), "SELinux disabled (no /sys/fs/selinux/enforce)".into()));
    n.write("sys/fs/selinux/enforce", "0");
    assert_eq!(
        doctor_check(&n, "selinux"),
        ("ok".into(), "SELinux permissive: denials are logged, not enforced".into())
    );
    // Enforcing: what kiln wrote has no label (a scratch tmpfs has none).
    std::fs::copy(n.path("bin/modprobe"), n.path("bin/restorecon")).unwrap();
    n.write("sys/fs/selinux/enforce", "1");
    n.write("etc/kubernetes/manifests/.keep", "");
    let (level, m) = doctor_check(&n, "selinux");
    assert_eq!(level, "warning", "{m}");
    assert!(m.starts_with("SELinux enforcing and /etc/kubernetes have no SELinux label"), "{m}");
    assert!(m.contains("restorecon -R /etc/kubernetes"), "{m}");
    let o = n.run(&["run"]);
    assert!(o.status.success(), "{}", out(&o));
    let root = n.root().display().to_string();
    let calls = n.calls("restorecon");
    assert_eq!(calls.len(), 1, "{calls:?}");
    for p in [FLEX, "/etc/kubernetes", "/etc/kiln/kubeadm-patches", "/var/lib/kiln", "/var/log/kiln"] {
        assert!(calls[0].contains(&format!(" {root}{p}")), "{p} not relabelled: {calls:?}");
    }
    assert!(out(&o).contains("SELinux: relabelled"), "{}", out(&o));
    // SELinux disabled: restorecon is not run.
    let m = Node::new(34, "cp-2");
    std::fs::copy(n.path("bin/restorecon"), m.path("bin/restorecon")).unwrap();
    m.write(
        "etc/kiln/node.toml",
        &format!("{}[node]\nrole = \"init\"\nnode_ip = \"10.0.0.5\"\n{}", cluster("api.example.test:6443"), pki()),
    );
    assert!(m.run(&["run"]).status.success());
    assert!(m.calls("restorecon").is_empty(), "{:?}", m.calls("restorecon"));
}

/// Issue 25, row 12: a placeholder product_uuid (all zeros, all F, the AMI default) and two
/// physical NICs with one MAC stop the node before kubeadm; no product_uuid stays a
/// warning; bond slaves and virtual interfaces do not count as clashes.
#[test]
fn placeholder_product_uuid_and_duplicate_macs_are_refused() {
    let n = Node::new(34, "w-1");
    n.write(
        "etc/kiln/node.toml",
        &format!("{}[node]\nrole = \"join\"\nnode_ip = \"10.0.0.5\"\n", cluster("10.0.0.2:6443")),
    );
    assert_eq!(doctor_check(&n, "product-uuid").0, "warning");
    for bad in [
        "00000000-0000-0000-0000-000000000000",
        "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
        "03000200-0400-0500-0006-000700080009",
    ] {
        n.write("sys/class/dmi/id/product_uuid", &format!("{bad}\n"));
        let (level, m) = doctor_check(&n, "product-uuid");
        assert_eq!(level, "error", "{bad}: {m}");
        assert!(m.contains(&format!("is {bad}, a placeholder")) && m.contains("QEMU `-uuid`"), "{m}");
    }
    let o = n.run(&["run"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("[product-uuid]"), "{}", out(&o));
    assert!(n.calls("kubeadm").is_empty());
    n.write("sys/class/dmi/id/product_uuid", "4c4c4544-0042-3510-8052-b3c04f4b4e32\n");
    assert_eq!(doctor_check(&n, "product-uuid").0, "ok");
    // NICs: eth0 and eth1 physical with one MAC; lo (zeros) and a veth (virtual) ignored.
    let nic = |name: &str, mac: &str, physical: bool| {
        n.write(&format!("sys/class/net/{name}/address"), &format!("{mac}\n"));
        if physical {
            n.write(&format!("sys/class/net/{name}/device/uevent"), "");
        }
    };
    nic("lo", "00:00:00:00:00:00", false);
    nic("eth0", "dc:a6:32:01:02:03", true);
    nic("veth1", "dc:a6:32:01:02:03", false);
    assert_eq!(doctor_check(&n, "mac"), ("ok".into(), "1 physical NIC(s), each with its own MAC".into()));
    nic("eth1", "DC:A6:32:01:02:03", true);
    let (level, m) = doctor_check(&n, "mac");
    assert_eq!(level, "error", "{m}");
    assert!(m.starts_with("eth0 and eth1 both have dc:a6:32:01:02:03: the install guide requires a unique MAC"), "{m}");
    let o = n.run(&["run"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("[mac]"), "{}", out(&o));
    // eth1 enslaved to a bond carries the bond's MAC by design.
    n.write("sys/class/net/eth1/master", "");
    assert_eq!(doctor_check(&n, "mac").0, "ok");
}

/// Issue 25, row 33: the wait for the control-plane endpoint tells a refusal (nothing
/// listens, or a firewall REJECT) from a timeout (packets dropped: a firewall DROP, or a
/// load balancer that cannot reach a control plane), in this network namespace: nothing
/// listens on 127.0.0.1:6443, and 10.255.0.9 is routed to lo and dropped there.
#[test]
fn the_endpoint_wait_tells_a_refusal_from_a_timeout() {
    let failure = |endpoint: &str| -> String {
        let n = Node::new(34, "w-1");
        n.write(
            "etc/kiln/node.toml",
            &format!("{}[node]\nrole = \"join\"\nnode_ip = \"10.0.0.5\"\n", cluster(endpoint)),
        );
        let t = std::time::Instant::now();
        let o = n.run(&["--wait", "2", "run"]);
        assert_eq!(o.status.code(), Some(1), "{}", out(&o));
        assert!(t.elapsed() < std::time::Duration::from_secs(20), "{:?}", t.elapsed());
        assert!(n.calls("kubeadm").is_empty());
        n.read("run/kiln/bootstrap-failed")
    };
    let refused = failure("127.0.0.1:6443");
    assert!(refused.contains("the control plane at 127.0.0.1:6443 did not answer within 2 s"), "{refused}");
    assert!(refused.contains("the connection was refused (ECONNREFUSED): nothing listens there yet"), "{refused}");
    assert!(refused.contains("a firewall REJECTs the port"), "{refused}");
    let dropped = failure("10.255.0.9:6443");
    assert!(dropped.contains("the control plane at 10.255.0.9:6443 did not answer within 2 s"), "{dropped}");
    assert!(dropped.contains("the connection timed out (no reply at all): packets are dropped"), "{dropped}");
    assert!(dropped.contains("open TCP 6443 from this node"), "{dropped}");
    assert!(!dropped.contains("refused"), "{dropped}");
}

/// Issue 25, row 33: with firewalld active (the scratch systemctl says so), doctor names
/// each required port its default zone's saved configuration does not accept, through
/// the zone's ports and its services' ports; an nftables ruleset that drops input is
/// read the same way.
#[test]
fn firewall_state_names_the_required_ports_it_does_not_accept() {
    let n = Node::new(34, "cp-1");
    n.write(
        "etc/kiln/node.toml",
        &format!("{}[node]\nrole = \"init\"\nnode_ip = \"10.0.0.5\"\n{}", cluster("api.example.test:6443"), pki()),
    );
    let findings_of = |n: &Node| -> Vec<String> {
        findings(&n.run(&["--json", "doctor"])).into_iter().filter(|m| m.starts_with("firewall ")).collect()
    };
    // No firewall running: no finding.
    n.write("etc/firewalld/firewalld.conf", "DefaultZone=internal\n");
    n.write("usr/lib/firewalld/zones/internal.xml", "<zone>\n  <service name=\"kube-api\"/>\n  <port port=\"2379-2380\" protocol=\"tcp\"/>\n  <port port=\"10250\" protocol=\"udp\"/>\n</zone>\n");
    n.write(
        "usr/lib/firewalld/services/kube-api.xml",
        "<service>\n  <port protocol=\"tcp\" port=\"6443\"/>\n</service>\n",
    );
    assert_eq!(findings_of(&n), Vec::<String>::new());
    n.write("etc/kiln-model/active-firewalld", "");
    let f = findings_of(&n);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(
        f[0].starts_with("firewall firewalld is active and its default zone internal does not accept 10259/tcp (kube-scheduler), 10257/tcp (kube-controller-manager), 10250/tcp (kubelet):"),
        "{f:?}"
    );
    assert!(
        f[0].contains("firewall-cmd --permanent --add-port=10259/tcp --add-port=10257/tcp --add-port=10250/tcp"),
        "{f:?}"
    );
    // The zone in /etc overrides the shipped one; everything accepted: ok.
    n.write("etc/firewalld/zones/internal.xml", "<zone target=\"ACCEPT\">\n</zone>\n");
    assert_eq!(doctor_check(&n, "firewall").0, "ok");
    std::fs::remove_file(n.root().join("etc/kiln-model/active-firewalld")).unwrap();
    // nftables: a dropping input chain accepting only 22 and 6443.
    n.write(
        "etc/nftables.conf",
        "table inet filter {\n  chain input {\n    type filter hook input priority 0; policy drop;\n    tcp dport { 22, 6443 } accept\n  }\n}\n",
    );
    assert_eq!(findings_of(&n), Vec::<String>::new(), "nftables.service is not active");
    n.write("etc/kiln-model/active-nftables", "");
    let f = findings_of(&n);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].contains("/etc/nftables.conf (nftables.service) drops input by default and accepts none of 10259/tcp (kube-scheduler), 10257/tcp (kube-controller-manager), 2379/tcp (etcd clients), 2380/tcp (etcd peers), 10250/tcp (kubelet)"), "{f:?}");
}

/// Issue 13: a scratch --root without /sys/fs/cgroup is not cgroup v1. doctor says it
/// cannot see the cgroups (and how to check them); v1 only for a v1 hierarchy's
/// controller directories, v2 for the unified mount's cgroup.controllers.
#[test]
fn doctor_says_v1_only_for_a_v1_hierarchy() {
    let n = Node::new(35, "w");
    n.write(
        "etc/kiln/node.toml",
        &format!("{}[node]\nrole = \"join\"\nnode_ip = \"10.0.0.5\"\n", cluster("10.1.0.2:6443")),
    );
    let cgroups = |n: &Node| -> (String, String) {
        let o = n.run(&["--json", "doctor"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        let c = v["checks"].as_array().and_then(|c| c.iter().find(|c| c["id"] == "cgroups").cloned());
        let c = c.unwrap_or_else(|| panic!("no cgroups check:\n{}", out(&o)));
        (c["level"].as_str().unwrap_or("").into(), c["message"].as_str().unwrap_or("").into())
    };
    std::fs::remove_dir_all(n.root().join("sys/fs/cgroup")).unwrap();
    let (level, message) = cgroups(&n);
    assert_eq!(level, "warning", "{message}");
    assert!(!message.contains("cgroup v1"), "{message}");
    let root = n.root().display().to_string();
    assert!(message.starts_with(&format!("cgroups not visible under --root {root}:")), "{message}");
    assert!(message.contains(&format!("copy the node's /sys/fs/cgroup/cgroup.controllers to {root}/sys/fs/cgroup/")));
    // A v1 hierarchy: a tmpfs of controller directories (and a hybrid unified/).
    for d in ["memory", "cpu,cpuacct", "unified"] {
        std::fs::create_dir_all(n.root().join("sys/fs/cgroup").join(d)).unwrap();
    }
    let (level, message) = cgroups(&n);
    assert_eq!(level, "error", "{message}");
    assert!(
        message.starts_with("cgroup v1 (controller directories memory, cpu,cpuacct in /sys/fs/cgroup"),
        "{message}"
    );
    // The unified mount.
    std::fs::remove_dir_all(n.root().join("sys/fs/cgroup")).unwrap();
    n.write("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n");
    assert_eq!(cgroups(&n), ("ok".to_string(), "cgroup v2 with the memory controller".to_string()));
}

/// Issue 13: on a root that is not a kiln image (no /etc/kiln/image.toml), `status` says
/// so — naming the file and what to do — and exits 2 instead of "not joined yet"; every
/// other command refuses it the same way before it reads, mounts, writes or runs anything.
#[test]
fn a_root_that_is_not_a_kiln_image_is_refused_with_exit_2() {
    let n = Node::new(34, "w");
    std::fs::remove_file(n.root().join("etc/kiln/image.toml")).unwrap();
    let root = n.root().display().to_string();
    let want = format!("{root} is not a kiln image: {root}/etc/kiln/image.toml does not exist");
    for cmd in ["status", "plan", "doctor", "run", "reset", "host", "kubelet-gate"] {
        let o = n.run(&[cmd]);
        let said = out(&o);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {said}");
        assert!(said.contains(&want), "{cmd}: {said}");
        assert!(
            said.contains("pass the image's root with --root DIR") && said.contains("`kiln build`"),
            "{cmd}: {said}"
        );
        assert!(!said.contains("not joined"), "{cmd}: {said}");
    }
    assert!(!n.root().join("run/kiln").exists(), "a command wrote kiln state into a root that is not an image");
    assert!(n.calls("kubeadm").is_empty() && n.calls("modprobe").is_empty() && n.calls("swapoff").is_empty());
    // A --root that does not exist at all.
    let o = n.run(&["--root", &format!("{root}/nowhere"), "status"]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(out(&o).contains(&format!("{root}/nowhere is not a directory")), "{}", out(&o));
}

/// Issue 13: --json is honoured by plan, status and doctor — one JSON document on stdout
/// with the same keys whatever the outcome, secrets redacted — and refused with exit 2
/// by the commands that print text, before they do anything.
#[test]
fn json_is_one_document_for_plan_status_and_doctor_and_refused_elsewhere() {
    let n = Node::new(34, "cp-1");
    let init =
        format!("{}[node]\nrole = \"init\"\nnode_ip = \"10.0.0.5\"\n{}", cluster("api.example.test:6443"), pki());
    n.write("etc/kiln/node.toml", &init);
    let doc = |args: &[&str]| -> (Option<i32>, serde_json::Value) {
        let o = n.run(args);
        no_secrets(&o, &n);
        let v = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: stdout is not one JSON document ({e}):\n{}", out(&o)));
        (o.status.code(), v)
    };
    let keys = |v: &serde_json::Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };

    let (code, plan) = doc(&["plan", "--json"]);
    assert_eq!(code, Some(0), "{plan}");
    assert_eq!(
        (&plan["ok"], &plan["node"]["role"], &plan["node"]["ip"]),
        (&true.into(), &"init".into(), &"10.0.0.5".into())
    );
    assert_eq!(plan["cluster"]["kubeadm_api_version"], "kubeadm.k8s.io/v1beta4");
    assert_eq!(plan["kubeadm_config"][0]["kind"], "InitConfiguration");
    assert_eq!(plan["kubeadm_config"][0]["bootstrapTokens"][0]["token"], "abcdef.<redacted>");
    assert_eq!(plan["commands"].as_array().unwrap().last().unwrap(), "kubeadm init --config /run/kiln/kubeadm.json");
    assert_eq!(plan["swap"], "off");
    // A node that does not resolve: the same keys, ok false, the reasons, exit 2.
    n.write("etc/kiln/node.toml", "[node]\nrole = \"init\"\n");
    let (code, unresolved) = doc(&["--json", "plan"]);
    assert_eq!(code, Some(2));
    assert_eq!(keys(&unresolved), keys(&plan));
    assert_eq!((&unresolved["ok"], &unresolved["node"]), (&false.into(), &serde_json::Value::Null));
    assert!(unresolved["resolve_errors"].to_string().contains("bootstrap_token is not set"), "{unresolved}");
    n.write("etc/kiln/node.toml", &init);

    // status: not joined, failed, joined; the same keys each time.
    let (code, not_joined) = doc(&["status", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(not_joined["status"], "not-joined");
    assert_eq!(not_joined["machine_id"], "0123456789abcdef0123456789abcdef");
    n.write("run/kiln/bootstrap-failed", "kubeadm init failed: x\n");
    let (_, failed) = doc(&["--json", "status"]);
    assert_eq!((&failed["status"], &failed["failure"]), (&"failed".into(), &"kubeadm init failed: x".into()));
    n.write("var/lib/kiln/state.json", "{\"machine_id\": \"0123456789abcdef0123456789abcdef\", \"instance_id\": null, \"role\": \"init\", \"node_name\": \"cp-1\", \"kubernetes_version\": \"v1.34.2\", \"time\": 1}");
    let (_, joined) = doc(&["--json", "status"]);
    assert_eq!((&joined["status"], &joined["state"]["node_name"]), (&"joined".into(), &"cp-1".into()));
    assert_eq!(keys(&not_joined), keys(&joined));
    assert_eq!(keys(&failed), keys(&joined));
    // The text stays text.
    let o = n.run(&["status"]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("joined: cp-1 as init"), "{}", out(&o));

    let (_, doctor) = doc(&["doctor", "--json"]);
    assert_eq!(keys(&doctor), ["checks", "known_failures", "ok", "resolve_errors"]);

    // Commands without JSON output refuse --json instead of ignoring it.
    for cmd in ["run", "reset", "host", "kubelet-gate"] {
        let o = n.run(&[cmd, "--json"]);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", out(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("`{cmd}` has no JSON output"))
                && err.contains("--json is for plan, status and doctor"),
            "{cmd}: {err}"
        );
        assert!(o.stdout.is_empty(), "{cmd}: {}", out(&o));
    }
    assert!(n.calls("kubeadm").is_empty() && n.calls("modprobe").is_empty(), "a refused command ran");
}

/// The lines of `--help`'s section `name` (after `name:`, up to the next blank line).
fn help_section<'a>(help: &'a str, name: &str) -> Vec<&'a str> {
    help.lines().skip_while(|l| !l.starts_with(name)).skip(1).take_while(|l| !l.trim().is_empty()).collect()
}

/// Issue 13: the usage line and --help list every command (doctor included), every
/// command listed is one the binary takes, and --help ends its options with examples
/// that are real invocations: only listed commands and options, and the read-only
/// ones run on an image root without a usage error.
#[test]
fn help_lists_every_command_and_examples_that_run() {
    let all = ["run", "plan", "status", "doctor", "reset", "host", "kubelet-gate", "approve-csrs"];
    let n = init_node();
    let o = n.run(&["--help"]);
    assert!(o.status.success(), "{}", out(&o));
    let help = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(help, String::from_utf8_lossy(&n.run(&["help"]).stdout), "`help` is not --help");
    assert_eq!(help.lines().next(), Some(format!("usage: kiln-firstboot [OPTIONS] [{}]", all.join("|")).as_str()));
    let commands: Vec<&str> = help_section(&help, "Commands:")
        .iter()
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(commands, all);
    for cmd in all {
        // Each is a command the binary takes (--json makes the text-only ones stop at once).
        let o = n.run(&[cmd, "--json"]);
        assert!(!out(&o).contains("unknown command"), "{cmd}: {}", out(&o));
    }
    let options: Vec<String> = help_section(&help, "Options")
        .iter()
        .flat_map(|l| l.trim_start().split([' ', ',']).filter(|w| w.starts_with('-')).map(str::to_string).take(2))
        .collect();
    for o in ["--root", "--json", "--cmdline", "--help", "-h", "--version"] {
        assert!(options.iter().any(|x| x == o), "{o} not under Options: {options:?}");
    }
    let examples: Vec<Vec<&str>> = help_section(&help, "Examples:")
        .iter()
        .map(|l| l.split(" #").next().unwrap_or("").split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.first() == Some(&"kiln-firstboot"))
        .collect();
    assert!(examples.len() >= 5, "too few examples:\n{help}");
    let cmdline = n.path("cmdline.txt");
    std::fs::write(&cmdline, "ro kiln.role=init\n").unwrap();
    let mut ran = 0;
    for words in &examples {
        let args: Vec<&str> = words[1..].to_vec();
        for w in args.iter().filter(|w| w.starts_with('-')) {
            assert!(
                options.iter().any(|o| o == w.split('=').next().unwrap()),
                "example {words:?}: {w} is not an option"
            );
        }
        let cmd = args.iter().find(|w| all.contains(w)).unwrap_or_else(|| panic!("example {words:?}: no command"));
        if !["plan", "status", "doctor"].contains(cmd) {
            continue;
        }
        // Read-only: run it on this image's root (and a real command-line file).
        let mut real: Vec<String> = Vec::new();
        let mut it = args.iter();
        while let Some(w) = it.next() {
            real.push(w.to_string());
            match *w {
                "--root" => real.push(n.root().display().to_string()),
                "--cmdline" => real.push(cmdline.display().to_string()),
                _ => continue,
            }
            it.next();
        }
        let real: Vec<&str> = real.iter().map(String::as_str).collect();
        let o = n.run(&real);
        assert!(matches!(o.status.code(), Some(0) | Some(1)), "example {words:?}: {}", out(&o));
        assert!(!out(&o).contains("usage:"), "example {words:?}: {}", out(&o));
        if real.contains(&"--json") {
            assert!(serde_json::from_slice::<serde_json::Value>(&o.stdout).is_ok(), "example {words:?}: {}", out(&o));
        }
        ran += 1;
    }
    assert!(ran >= 4, "only {ran} examples ran");
}

/// Issue 13: what a new user types wrong is one clear line, the usage line and where
/// the rest is, exit 2 — not the whole --help text, not a panic, not a guess.
#[test]
fn cli_mistakes_are_named_with_exit_2() {
    let n = Node::new(34, "w");
    let cases: [(&[&str], &str); 9] = [
        (&["--bogus"], "unknown option '--bogus'"),
        (&["status", "--root"], "--root needs a value"),
        (&["--root", "--json", "status"], "--root needs a value, but the next argument is the option --json"),
        (&["--root=", "status"], "--root needs a value, not an empty one"),
        (&["--attempts", "x", "plan"], "--attempts expects a whole number, got 'x'"),
        (&["--wait=10s", "plan"], "--wait expects a number of seconds, got '10s'"),
        (&["plan", "extra"], "unexpected argument 'extra' after the command 'plan': one command at a time"),
        (
            &["stauts"],
            "unknown command 'stauts'; the commands are run, plan, status, doctor, reset, host, kubelet-gate, approve-csrs",
        ),
        (&["--json=yes", "plan"], "--json takes no value"),
    ];
    for (args, want) in cases {
        let o = n.run(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", out(&o));
        assert!(
            err.starts_with(&format!("kiln-firstboot: {want}\nusage: kiln-firstboot [OPTIONS] [")),
            "{args:?}: {err}"
        );
        assert!(err.contains("`kiln-firstboot --help` lists") && !err.contains("Options"), "{args:?}: {err}");
    }
    // `--name=value` is `--name value`.
    let o = n.run(&[&format!("--root={}", n.root().display()), "status"]);
    assert_eq!(
        (o.status.code(), String::from_utf8_lossy(&o.stdout).trim()),
        (Some(0), "not joined yet"),
        "{}",
        out(&o)
    );
    // An argument that is not UTF-8 is a usage error, not a panic.
    use std::os::unix::ffi::OsStrExt;
    let o = Command::new(env!("CARGO_BIN_EXE_kiln-firstboot"))
        .arg("--root")
        .arg(std::ffi::OsStr::from_bytes(b"/tmp/\xff"))
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not valid UTF-8"), "{}", out(&o));
}

/// resolvConf is kubeadm's to set, per node, when systemd-resolved is active
/// (componentconfigs/kubelet.go mutateResolverConfig); kiln must not set it cluster-wide.
#[test]
fn resolv_conf_is_left_to_kubeadm() {
    let n = init_node();
    n.write("etc/resolv.conf", "nameserver 127.0.0.53\n");
    n.write("run/systemd/resolve/resolv.conf", "nameserver 10.0.0.1\n");
    n.write("etc/kiln-model/active-systemd-resolved", "");
    let o = n.run(&["run"]);
    assert!(o.status.success(), "{}", out(&o));
    let d = n.config(0);
    assert!(d.iter().all(|doc| doc.get("resolvConf").is_none()), "kiln set resolvConf cluster-wide");
    assert_eq!(n.kubelet_config()["resolvConf"], "/run/systemd/resolve/resolv.conf");
    let uploaded: serde_json::Value =
        serde_json::from_str(&n.read("var/lib/kiln-model/uploaded-kubelet-config.json")).unwrap();
    assert!(uploaded.get("resolvConf").is_none(), "{uploaded}");
}

/// kubelet's ExecCondition: kubelet starts while this machine bootstraps or after it
/// did, not from a cloned disk's config, not before any config exists.
#[test]
fn kubelet_gate_follows_this_machines_bootstrap() {
    let n = Node::new(34, "w");
    let gate = |n: &Node| n.run(&["kubelet-gate"]).status.code();
    assert_eq!(gate(&n), Some(1), "no config yet");
    n.write("run/kiln/bootstrapping", "0123456789abcdef0123456789abcdef\n");
    assert_eq!(gate(&n), Some(0), "bootstrapping");
    std::fs::remove_file(n.root().join("run/kiln/bootstrapping")).unwrap();
    n.write("var/lib/kubelet/config.yaml", "{}");
    assert_eq!(gate(&n), Some(0), "joined by hand");
    n.write("var/lib/kiln/state.json", "{\"machine_id\": \"ffffffffffffffffffffffffffffffff\", \"instance_id\": null, \"role\": \"join\", \"node_name\": \"w\", \"kubernetes_version\": \"v1.34.2\", \"time\": 1}");
    let o = n.run(&["kubelet-gate"]);
    assert_eq!(o.status.code(), Some(1), "a clone's stale config");
    assert!(String::from_utf8_lossy(&o.stdout).contains("belong to machine ffff"), "{}", out(&o));
    n.write("var/lib/kiln/state.json", "{\"machine_id\": \"0123456789abcdef0123456789abcdef\", \"instance_id\": null, \"role\": \"join\", \"node_name\": \"w\", \"kubernetes_version\": \"v1.34.2\", \"time\": 1}");
    assert_eq!(gate(&n), Some(0), "joined");
}

/// kubelet's ExecStartPre on every boot: swap that came back is turned off (unless the
/// kubelet's config allows it), sysctls that were reset are set again, and what cannot be
/// fixed is one line in the journal and a failed start.
#[test]
fn host_check_runs_before_every_kubelet_start() {
    let n = Node::new(34, "w");
    n.write("sys/module/overlay/x", "");
    n.write("sys/module/br_netfilter/x", "");
    for k in ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables"] {
        n.write(&format!("proc/sys/net/bridge/{k}"), "0\n");
    }
    n.write("var/lib/kubelet/config.yaml", "{\n  \"failSwapOn\": true\n}\n");
    let o = n.run(&["host"]);
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(n.calls("swapoff"), ["-a"]);
    assert!(n.calls("modprobe").is_empty(), "modules already loaded were loaded again");
    assert_eq!(n.read("proc/sys/net/bridge/bridge-nf-call-ip6tables").trim(), "1");
    assert!(String::from_utf8_lossy(&o.stdout).contains("turned it off"), "{}", out(&o));
    // LimitedSwap in the kubelet's config: swap stays.
    n.write("proc/swaps", "Filename Type Size Used Priority\n/swapfile file 1024 0 -2\n");
    n.write("var/lib/kubelet/config.yaml", "failSwapOn: false\n");
    assert!(n.run(&["host"]).status.success());
    assert_eq!(n.calls("swapoff").len(), 1);
    // Swap that will not turn off: exit 1 and the reason.
    n.write("var/lib/kubelet/config.yaml", "failSwapOn: true\n");
    n.write("etc/kiln-model/swap-stuck", "");
    let o = n.run(&["host"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("<3>kiln-firstboot host: swap is on (/swapfile)"),
        "{}",
        out(&o)
    );
}

/// Seed row 4, "Check at boot": `doctor` (which changes nothing) reports br_netfilter not
/// loaded and each kubeadm sysctl that is not 1 (kubeadm's preflight `FileContentCheck`s
/// on `/proc/sys/net/bridge/bridge-nf-call-iptables` and `/proc/sys/net/ipv4/ip_forward`),
/// and is clean once the module and sysctls are right.
#[test]
fn doctor_reports_br_netfilter_and_kubeadms_sysctls() {
    let n = Node::new(34, "w");
    n.write(
        "etc/kiln/node.toml",
        &format!("{}[node]\nrole = \"join\"\nnode_ip = \"10.0.0.5\"\n", cluster("10.1.0.2:6443")),
    );
    let findings = |n: &Node| -> Vec<String> {
        let o = n.run(&["--json", "doctor"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        let checks = v["checks"].as_array().cloned().unwrap_or_default();
        let mine = checks.iter().filter(|c| c["id"] == "br_netfilter" || c["id"] == "sysctl");
        mine.map(|c| {
            format!(
                "{} {} {}",
                c["level"].as_str().unwrap_or(""),
                c["id"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            )
        })
        .collect()
    };
    // The scratch root as booted: no /proc/sys/net/bridge, ip_forward = 0.
    let f = findings(&n);
    assert!(f.iter().any(|m| m.starts_with("error br_netfilter br_netfilter is not loaded")), "{f:?}");
    assert!(f.iter().any(|m| m.starts_with("error sysctl net.ipv4.ip_forward = 0, kubeadm requires 1")), "{f:?}");
    // The module loaded, one bridge sysctl still 0.
    n.write("proc/sys/net/bridge/bridge-nf-call-iptables", "0\n");
    n.write("proc/sys/net/bridge/bridge-nf-call-ip6tables", "1\n");
    n.write("proc/sys/net/ipv4/ip_forward", "1\n");
    let f = findings(&n);
    assert!(!f.iter().any(|m| m.starts_with("error br_netfilter")), "{f:?}");
    assert!(f.iter().any(|m| m.starts_with("error sysctl net.bridge.bridge-nf-call-iptables = 0")), "{f:?}");
    // Everything right: only ok findings.
    n.write("proc/sys/net/bridge/bridge-nf-call-iptables", "1\n");
    let f = findings(&n);
    assert!(f.len() >= 3 && f.iter().all(|m| m.starts_with("ok ")), "{f:?}");
}

/// What a node is told is checked before kubeadm: versions against kubeadm's skew
/// rules, the endpoint, the node IP (it becomes a kubelet flag), labels, taints, the
/// token TTL and flag values. Each is exit 2 with the rule, and kubeadm never runs.
#[test]
fn bad_values_exit_2_with_the_rule_before_kubeadm() {
    let cases: [(&str, &str, &str); 7] = [
        ("kubernetes_version = \"v1.33.1\"\n", "", "kubelet v1.34.2 is newer than the v1.33.1 control plane"),
        ("kubernetes_version = \"v1.36.0\"\n", "", "build the image with kubeadm v1.36.x"),
        ("", "node_ip = \"10.0.0.5 --anonymous-auth=true\"\n", "node IP"),
        ("", "labels = { \"node-role.kubernetes.io/worker\" = \"\" }\n", "labels"),
        ("", "labels = { \"pool\" = \"a,b=c\" }\n", "labels"),
        ("token_ttl = \"forever\"\n", "", "token_ttl"),
        ("", "kubelet_extra_args = { \"v\" = \"2 --anonymous-auth=true\" }\n", "kubelet_extra_args"),
    ];
    for (cluster_extra, node_extra, want) in cases {
        let n = Node::new(34, "w");
        let base = cluster("api.example.test:6443");
        let base =
            if cluster_extra.starts_with("token_ttl") { base.replace("token_ttl = \"48h\"\n", "") } else { base };
        let text = format!(
            "{base}{cluster_extra}[node]\nrole = \"init\"\n{}{node_extra}{}",
            if node_extra.contains("node_ip") { "" } else { "node_ip = \"10.0.0.5\"\n" },
            pki()
        );
        n.write("etc/kiln/node.toml", &text);
        let o = n.run(&["run"]);
        assert_eq!(o.status.code(), Some(2), "{want}: {}", out(&o));
        assert!(out(&o).contains(want), "{want}: {}", out(&o));
        assert!(n.calls("kubeadm").is_empty(), "{want}: kubeadm ran");
    }
    // IPv6 endpoints are bracketed for kubeadm.
    let n = Node::new(34, "w");
    n.write(
        "etc/kiln/node.toml",
        &format!("{}[node]\nrole = \"init\"\nnode_ip = \"2001:db8::5\"\n{}", cluster("2001:db8::1"), pki()),
    );
    let plan = String::from_utf8_lossy(&n.run(&["plan"]).stdout).to_string();
    assert!(plan.contains("\"controlPlaneEndpoint\": \"[2001:db8::1]:6443\""), "{plan}");
}

/// Seed row 9, "check version skew before join": a worker and a control plane whose
/// kubelet (v1.34.2) is newer than the cluster they join (v1.33.1) are refused with the
/// version skew policy's rule before kubeadm runs (kubeadm join itself does not check it).
#[test]
fn a_join_into_an_older_control_plane_is_refused_before_kubeadm() {
    for role in ["join", "control-plane"] {
        let n = Node::new(34, "w");
        let keys = if role == "join" { String::new() } else { pki() };
        n.write(
            "etc/kiln/node.toml",
            &format!(
                "{}kubernetes_version = \"v1.33.1\"\n[node]\nrole = \"{role}\"\nnode_ip = \"10.0.0.5\"\n{keys}",
                cluster("10.1.0.2:6443")
            ),
        );
        let o = n.run(&["run"]);
        assert_eq!(o.status.code(), Some(2), "{role}: {}", out(&o));
        let want = "kubelet v1.34.2 is newer than the v1.33.1 control plane (the version skew policy: kubelet must not be newer than kube-apiserver)";
        assert!(out(&o).contains(want), "{role}: {}", out(&o));
        assert!(n.calls("kubeadm").is_empty(), "{role}: kubeadm ran");
    }
}

/// Init and join nodes get the same effective kubelet settings from the same [node]
/// table: kubeadm init writes the KubeletConfiguration document plus the patch, kubeadm
/// join the cluster's ConfigMap plus the same patch.
#[test]
fn init_and_join_get_the_same_kubelet_settings() {
    let node = "swap = \"limited\"\nkubelet = { maxPods = 42, serializeImagePulls = false }\nkubelet_extra_args = { \"v\" = \"2\" }\n";
    let init = Node::new(34, "cp-1");
    init.write(
        "etc/kiln/node.toml",
        &format!(
            "{}[node]\nrole = \"init\"\nnode_ip = \"10.1.0.2\"\n{node}{}",
            cluster("api.example.test:6443"),
            pki()
        ),
    );
    let o = init.run(&["run"]);
    assert!(o.status.success(), "{}", out(&o));
    let join = Node::new(34, "w-1");
    join.write(
        "etc/kiln/node.toml",
        &format!("{}[node]\nrole = \"join\"\nnode_ip = \"10.1.0.2\"\n{node}", cluster("10.1.0.2:6443")),
    );
    // The cluster's ConfigMap is what the init node's kubeadm uploaded.
    join.write("etc/kiln-model/kubelet-config.json", &init.read("var/lib/kiln-model/uploaded-kubelet-config.json"));
    let o = join.run_listening(&[6443], &["run"]);
    assert!(o.status.success(), "{}", out(&o));
    let (a, b) = (init.kubelet_config(), join.kubelet_config());
    for key in ["failSwapOn", "memorySwap", "maxPods", "serializeImagePulls", "volumePluginDir", "cgroupDriver"] {
        assert_eq!(a[key], b[key], "{key}: init {} vs join {}", a[key], b[key]);
        assert!(!a[key].is_null(), "{key} missing");
    }
    for n in [&init, &join] {
        assert!(n.read("var/lib/kubelet/kubeadm-flags.env").contains("--v=2"));
    }
}

impl Node {
    /// An init node (CA material, a fixed IP) whose kubeadm is `script`, at the image's
    /// bin dir (found before the model on PATH).
    fn init_with_kubeadm(script: &str) -> Node {
        let n = Node::new(34, "cp-1");
        n.write(
            "etc/kiln/node.toml",
            &format!("{}[node]\nrole = \"init\"\nnode_ip = \"10.0.0.5\"\n{}", cluster("api.example.test:6443"), pki()),
        );
        n.write("opt/bin/kubeadm", script);
        std::fs::set_permissions(n.root().join("opt/bin/kubeadm"), std::fs::Permissions::from_mode(0o755)).unwrap();
        n
    }
    /// Whether the process whose pid the fake kubeadm wrote to `rel` is still alive;
    /// kills it if so (a test leaves nothing running).
    fn still_running(&self, rel: &str) -> bool {
        let pid = self.read(rel).trim().to_string();
        assert!(!pid.is_empty(), "the fake kubeadm did not record its child");
        // A killed process that nobody reaped yet (a container's init may never) is a
        // zombie: dead, though `kill -0` still finds it.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let alive = stat.rsplit(')').next().is_some_and(|r| !r.trim_start().starts_with(['Z', 'X']) && !r.is_empty());
        let _ = Command::new("kill").args(["-9", &pid]).output();
        alive
    }
}

/// B19: a kubeadm that prints 200 MB (more than a pipe holds) and succeeds: `run`
/// succeeds promptly, and kubeadm's log keeps its head and tail, not all of it.
#[test]
fn b19_a_kubeadm_that_prints_200_mb_succeeds_promptly() {
    let n = Node::init_with_kubeadm(
        "#!/bin/sh\ncase \"$1\" in init|join) echo first line; yes 'kubeadm says a lot' | head -c 200000000; echo; echo last line ;; esac\nexit 0\n",
    );
    let t = std::time::Instant::now();
    let o = n.run(&["--kubeadm-timeout", "60", "--attempts", "1", "run"]);
    let took = t.elapsed();
    assert!(o.status.success(), "{}", &out(&o)[..2000.min(out(&o).len())]);
    assert!(took.as_secs() < 30, "run took {took:?}");
    let log = n.read("var/log/kiln/kubeadm.log");
    assert!(log.starts_with("first line") && log.trim_end().ends_with("last line"), "head or tail lost");
    assert!(log.len() < 1 << 20, "kubeadm.log holds {} bytes", log.len());
    assert!(n.root().join("var/lib/kiln/state.json").is_file());
}

/// B19: a kubeadm that leaves a child holding its output and exits 0: `run` succeeds
/// within `--kubeadm-timeout` + 5 s and the child (same process group) is gone; one
/// that hangs with such a child: exit 1 within the bound + 5 s, the group killed.
#[test]
fn b19_a_kubeadm_whose_child_holds_the_pipe_ends_within_the_bound() {
    let n = Node::init_with_kubeadm(
        "#!/bin/sh\ncase \"$1\" in init|join) sleep 60 & echo $! > \"$ROOT/child.pid\"; echo started a child ;; esac\nexit 0\n",
    );
    let t = std::time::Instant::now();
    let o = n.run(&["--kubeadm-timeout", "5", "--attempts", "1", "run"]);
    let took = t.elapsed();
    assert!(o.status.success(), "{}", out(&o));
    assert!(took.as_secs() < 10, "run took {took:?} with a 5 s bound");
    assert!(!n.still_running("child.pid"), "kubeadm's child outlived the run");

    let n = Node::init_with_kubeadm(
        "#!/bin/sh\ncase \"$1\" in init|join) sleep 60 & echo $! > \"$ROOT/child.pid\"; sleep 60 ;; esac\nexit 0\n",
    );
    let t = std::time::Instant::now();
    let o = n.run(&["--kubeadm-timeout", "3", "--attempts", "1", "run"]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(took.as_secs() < 8, "run took {took:?} with a 3 s bound");
    assert!(n.read("run/kiln/bootstrap-failed").contains("timed out after 3 s"), "{}", out(&o));
    assert!(!n.still_running("child.pid"), "kubeadm's child outlived the kill");
}

/// B19: `reset` against a `kubeadm reset` that hangs with a child holding its output:
/// exit 1 within `--reset-timeout` + 5 s.
#[test]
fn b19_reset_whose_kubeadm_child_holds_the_pipe_ends_within_the_bound() {
    let n = Node::init_with_kubeadm(
        "#!/bin/sh\ncase \"$1\" in reset) sleep 60 & echo $! > \"$ROOT/child.pid\"; sleep 60 ;; esac\nexit 0\n",
    );
    let t = std::time::Instant::now();
    let o = n.run(&["--reset-timeout", "2", "reset"]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(took.as_secs() < 7, "reset took {took:?} with a 2 s bound");
    assert!(out(&o).contains("did not finish"), "{}", out(&o));
    assert!(!n.still_running("child.pid"), "kubeadm's child outlived the kill");
}

/// Issue 24 partials: a state.json that is empty, garbage or 200 MB does not make
/// `run` bootstrap again (exit 3, kubeadm never called, the fix named), and is refused
/// at once; `status` says the state is unreadable.
#[test]
fn a_state_file_that_is_not_kilns_stops_run_before_kubeadm() {
    let n = Node::init_with_kubeadm("#!/bin/sh\necho \"$*\" >> \"$ROOT/kubeadm.calls\"\nexit 0\n");
    for (what, content) in [("empty", Some("")), ("garbage", Some("{ not json")), ("200 MB", None)] {
        let p = n.root().join("var/lib/kiln/state.json");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        match content {
            Some(c) => std::fs::write(&p, c).unwrap(),
            None => std::fs::File::create(&p).unwrap().set_len(200 << 20).unwrap(),
        }
        let t = std::time::Instant::now();
        let o = n.run(&["run"]);
        assert_eq!(o.status.code(), Some(3), "{what}: {}", out(&o));
        assert!(t.elapsed().as_secs() < 5, "{what}: {:?}", t.elapsed());
        assert!(out(&o).contains("kiln-firstboot reset"), "{what}: {}", out(&o));
        assert_eq!(n.read("kubeadm.calls"), "", "{what}: kubeadm ran");
        let st = n.run(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
        assert_eq!(v["status"], "state-corrupt", "{what}");
    }
}

/// Issue 24 partial: kubeadm's kubelet.conf without kiln's state or start record is a
/// node bootstrapped some other way: `run` leaves it alone (no `kubeadm reset -f`),
/// exit 3 with the reason; after `reset` it bootstraps.
#[test]
fn a_node_joined_without_kiln_is_not_reset() {
    let n = Node::init_with_kubeadm("#!/bin/sh\necho \"$*\" >> \"$ROOT/kubeadm.calls\"\nexit 0\n");
    n.write("etc/kubernetes/kubelet.conf", "apiVersion: v1\nkind: Config\n");
    let o = n.run(&["run"]);
    assert_eq!(o.status.code(), Some(3), "{}", out(&o));
    assert!(out(&o).contains("bootstrapped some other way") && out(&o).contains("kubelet.conf"), "{}", out(&o));
    assert_eq!(n.read("kubeadm.calls"), "", "kubeadm ran on a node kiln did not bootstrap");
    assert!(n.root().join("etc/kubernetes/kubelet.conf").exists());
    let o = n.run(&["reset"]);
    assert!(o.status.success(), "{}", out(&o));
    std::fs::remove_file(n.root().join("etc/kubernetes/kubelet.conf")).unwrap();
    let o = n.run(&["run"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(n.read("kubeadm.calls").lines().last().unwrap_or("").starts_with("init "), "{}", n.read("kubeadm.calls"));
}

/// Issue 20 finding 7: on an unpacked image (no running system's /proc, /sys, /run; an
/// empty machine id) whose endpoint's name does not resolve, `plan` prints the plan
/// with the node IP unresolved and says DNS is the cause, and `doctor` reports what it
/// cannot see as "not visible under --root" warnings, exit 0.
#[test]
fn dry_runs_on_an_unpacked_image_say_what_they_cannot_see() {
    let n = Node::new(34, "localhost");
    for d in ["proc", "sys", "run"] {
        std::fs::remove_dir_all(n.root().join(d)).unwrap();
        std::fs::create_dir_all(n.root().join(d)).unwrap();
    }
    n.write("etc/machine-id", "");
    n.write("etc/kiln/node.toml", &format!("{}[node]\nrole = \"join\"\n", cluster("api.prod.example.com:6443")));
    let o = n.run(&["plan"]);
    assert!(o.status.success(), "{}", out(&o));
    let plan = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(plan.contains("(join) ip <unresolved>") && plan.contains("kubeadm config:"), "{plan}");
    assert!(out(&o).contains("does not resolve (DNS") && !out(&o).contains("no route to"), "{}", out(&o));
    let o = n.run(&["plan", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert!(v["unresolved"][0].as_str().unwrap_or("").contains("DNS"), "{v}");
    let o = n.run(&["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(0), "{v:#}");
    let checks = v["checks"].as_array().unwrap();
    for id in ["swap", "br_netfilter", "sysctl", "runtime", "machine-id", "cgroups"] {
        let c = checks.iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no {id} check: {v:#}"));
        assert_eq!(c["level"], "warning", "{id}: {c}");
        assert!(c["message"].as_str().unwrap().contains("not visible under --root"), "{id}: {c}");
    }
    assert!(checks.iter().all(|c| c["level"] != "error"), "{v:#}");
    // `run` is no dry run: the same node is refused, with DNS named as the cause.
    let o = n.run(&["run"]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(out(&o).contains("does not resolve (DNS") && out(&o).contains("set [node] node_ip"), "{}", out(&o));
}

/// The step names `plan --json` lists; the text plan lists the same, in the same order.
fn planned_steps(n: &Node) -> Vec<String> {
    let o = n.run(&["plan", "--json"]);
    assert!(o.status.success(), "{}", out(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<String> =
        v["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    let text = String::from_utf8_lossy(&n.run(&["plan"]).stdout).to_string();
    let listed: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with("steps (what `run` does, in order):"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(listed, names, "plan and plan --json list different steps:\n{text}");
    names
}

/// The step names `run` logged as each started (`<6>kiln-firstboot: step NAME: …`).
fn steps_taken(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("<6>kiln-firstboot: step "))
        .map(|l| l.split(':').next().unwrap().to_string())
        .collect()
}

/// Issue 22: `plan` lists exactly the steps `run` takes, on the same root: an init
/// node with a CNI manifest and an admin user, the same disk cloned to another
/// machine (kiln's leftovers reset first), a worker join and a limited-swap join
/// (no swap masking); a joined machine plans and takes none.
#[test]
fn plan_lists_exactly_the_steps_run_takes() {
    let init = Node::new(34, "cp-1");
    init.write(
        "etc/kiln/node.toml",
        &format!(
            "{}cni_manifest = \"/etc/kiln/cni.yaml\"\nadmin_user = \"core\"\n[node]\nrole = \"init\"\nnode_ip = \"10.0.0.5\"\n{}",
            cluster("api.example.test:6443"),
            pki()
        ),
    );
    init.write("etc/passwd", "root:x:0:0::/root:/bin/sh\ncore:x:0:0::/home/core:/bin/sh\n");
    let plan = planned_steps(&init);
    for want in ["fix-host", "mask-swap", "preflight", "kubeadm", "record-success", "apply-cni", "admin-kubeconfig"] {
        assert!(plan.iter().any(|s| s == want), "{want} not planned: {plan:?}");
    }
    assert!(!plan.iter().any(|s| s == "wait-for-endpoint" || s == "reset-leftovers"), "{plan:?}");
    let o = init.run(&["run"]);
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(steps_taken(&o), plan, "init: run did not take the planned steps:\n{}", out(&o));

    // Joined: nothing planned, nothing taken, and the plan says why.
    assert!(planned_steps(&init).is_empty());
    let v: serde_json::Value = serde_json::from_slice(&init.run(&["plan", "--json"]).stdout).unwrap();
    assert!(v["halt"].as_str().unwrap().contains("joined as"), "{v}");
    let o = init.run(&["run"]);
    assert!(o.status.success() && steps_taken(&o).is_empty(), "{}", out(&o));

    // The disk on another machine: kiln's own kubeadm files are reset first.
    init.write("etc/machine-id", "ffffffffffffffffffffffffffffffff\n");
    let plan = planned_steps(&init);
    assert_eq!(plan.first().map(String::as_str), Some("reset-leftovers"), "{plan:?}");
    let o = init.run(&["run"]);
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(steps_taken(&o), plan, "clone: run did not take the planned steps:\n{}", out(&o));

    for (name, swap) in [("worker-7", ""), ("worker-9", "swap = \"limited\"\n")] {
        let n = Node::new(34, name);
        n.write("etc/kiln/node.toml", &format!("{}[node]\nrole = \"join\"\n{swap}", cluster("10.1.0.2:6443")));
        let plan = planned_steps(&n);
        assert!(plan.iter().any(|s| s == "wait-for-endpoint"), "{plan:?}");
        assert_eq!(plan.iter().any(|s| s == "mask-swap"), swap.is_empty(), "{plan:?}");
        assert!(!plan.iter().any(|s| s == "apply-cni" || s == "admin-kubeconfig"), "{plan:?}");
        let o = n.run_listening(&[6443], &["run"]);
        assert!(o.status.success(), "{}", out(&o));
        assert_eq!(steps_taken(&o), plan, "{name}: run did not take the planned steps:\n{}", out(&o));
    }
}

/// Issue 21 item 4: node.toml's `kubeadm_timeouts` raise kiln's own bounds with
/// kubeadm's (the attempt bound `run` kills kubeadm at, shown by `plan`, which reads
/// the same resolved value; a join's endpoint wait), `--kubeadm-timeout` still sets it
/// outright, and `static_pod_patches` become kubeadm's patch files, with a file an
/// earlier node.toml asked for removed.
#[test]
fn kubeadm_knobs_set_kilns_bounds_and_patch_files() {
    let n = Node::new(34, "cp-1");
    let patch = "static_pod_patches = { \"kube-apiserver\" = { spec = { containers = [{ name = \"kube-apiserver\", startupProbe = { failureThreshold = 90 } }] } } }";
    n.write(
        "etc/kiln/node.toml",
        &format!(
            "{}[node]\nrole = \"init\"\nnode_ip = \"10.0.0.5\"\nimage_pull_policy = \"Never\"\nkubeadm_timeouts = {{ controlPlaneComponentHealthCheck = \"30m\", kubeletHealthCheck = \"8m\" }}\n{patch}\n{}",
            cluster("api.example.test:6443"),
            pki()
        ),
    );
    let plan = out(&n.run(&["plan"]));
    // 8m + 30m + kubeadm's 1m API call, plus kiln's 5m margin.
    assert!(plan.contains("each attempt bounded by 44m0s (kubeadm's own waits: 39m0s;"), "{plan}");
    assert!(plan.contains("static pod patch /etc/kiln/kubeadm-patches/kube-apiserver+strategic.json"), "{plan}");
    let v: serde_json::Value = serde_json::from_slice(&n.run(&["plan", "--json"]).stdout).unwrap();
    assert_eq!(v["kubeadm_attempt_bound_seconds"], 44 * 60, "{v}");
    assert_eq!(v["static_pod_patches"][0]["path"], "/etc/kiln/kubeadm-patches/kube-apiserver+strategic.json");
    let plan = out(&n.run(&["--kubeadm-timeout", "60", "plan"]));
    assert!(plan.contains("each attempt bounded by 1m0s"), "{plan}");
    n.write("etc/kiln/kubeadm-patches/etcd+merge.json", "{\"metadata\": {}}\n");
    let o = n.run(&["run"]);
    assert!(o.status.success(), "{}", out(&o));
    let written: serde_json::Value =
        serde_json::from_str(&n.read("etc/kiln/kubeadm-patches/kube-apiserver+strategic.json")).unwrap();
    assert_eq!(written["spec"]["containers"][0]["startupProbe"]["failureThreshold"], 90);
    assert!(!n.root().join("etc/kiln/kubeadm-patches/etcd+merge.json").exists(), "a stale patch was left");
    let init = &n.config(0)[0];
    assert_eq!(init["timeouts"]["controlPlaneComponentHealthCheck"], "30m");
    assert_eq!(init["nodeRegistration"]["imagePullPolicy"], "Never");

    // A join: the endpoint wait is at least kubeadm's discovery timeout.
    let j = Node::new(34, "worker-1");
    j.write(
        "etc/kiln/node.toml",
        &format!("{}[node]\nrole = \"join\"\nkubeadm_timeouts = {{ discovery = \"20m\" }}\n", cluster("10.1.0.2:6443")),
    );
    let plan = out(&j.run(&["plan"]));
    assert!(plan.contains("to answer, at most 20m0s"), "{plan}");
    // 20m + kubeadm's 4m kubelet and 5m TLS bootstrap waits, plus 5m.
    assert!(plan.contains("each attempt bounded by 34m0s"), "{plan}");
    let plan = out(&j.run(&["--wait", "3600", "plan"]));
    assert!(plan.contains("to answer, at most 1h0m0s"), "{plan}");
}

/// Issue 23: an image that carries its images plans `import-images` after preflight
/// and before kubeadm, tells kubeadm `IfNotPresent` (node.toml's policy still wins),
/// and a run that cannot import (no ctr here) stops before kubeadm, saying why; a
/// malformed baked list is the image's fault: nothing resolves.
#[test]
fn baked_images_are_imported_before_kubeadm_or_the_run_stops() {
    let n = init_node();
    let toml = n.read("etc/kiln/image.toml");
    let pin = format!("registry.k8s.io/pause:3.10.1@sha256:{}", "c".repeat(64));
    n.write(
        "etc/kiln/image.toml",
        &format!("{toml}images_archive = \"/opt/kiln/images/images.oci.tar\"\nimages = [\"{pin}\"]\n"),
    );
    let plan = planned_steps(&n);
    let at = |s: &str| plan.iter().position(|p| p == s).unwrap_or_else(|| panic!("{s} not planned: {plan:?}"));
    assert!(at("preflight") < at("import-images") && at("import-images") < at("write-config"), "{plan:?}");
    let text = out(&n.run(&["plan"]));
    assert!(text.contains(&format!("  images    1 baked in /opt/kiln/images/images.oci.tar, imported before kubeadm (`import-images`):\n    {pin}\n")), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&n.run(&["plan", "--json"]).stdout).unwrap();
    assert_eq!(v["images"]["baked"][0]["digest"], format!("sha256:{}", "c".repeat(64)), "{v}");
    assert_eq!(v["kubeadm_config"][0]["nodeRegistration"]["imagePullPolicy"], "IfNotPresent", "{v}");
    let o = n.run(&["run"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("import-images: no ctr in /opt/bin or on PATH"), "{}", out(&o));
    assert!(n.kubeadm_runs().is_empty(), "kubeadm ran: {:?}", n.kubeadm_runs());

    // node.toml's own policy wins; without baked images none is written.
    n.write(
        "etc/kiln/node.toml",
        &format!(
            "{}[node]\nrole = \"init\"\nnode_ip = \"10.0.0.5\"\nimage_pull_policy = \"Never\"\n{}",
            cluster("api.example.test:6443"),
            pki()
        ),
    );
    let v: serde_json::Value = serde_json::from_slice(&n.run(&["plan", "--json"]).stdout).unwrap();
    assert_eq!(v["kubeadm_config"][0]["nodeRegistration"]["imagePullPolicy"], "Never", "{v}");
    let plain = init_node();
    let v: serde_json::Value = serde_json::from_slice(&plain.run(&["plan", "--json"]).stdout).unwrap();
    assert!(v["kubeadm_config"][0]["nodeRegistration"].get("imagePullPolicy").is_none(), "{v}");
    assert!(!planned_steps(&plain).iter().any(|s| s == "import-images"));

    n.write(
        "etc/kiln/image.toml",
        &format!(
            "{toml}images_archive = \"/opt/kiln/images/images.oci.tar\"\nimages = [\"registry.k8s.io/pause:3.10.1\"]\n"
        ),
    );
    let o = n.run(&["plan"]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(
        out(&o).contains("image.toml images: `registry.k8s.io/pause:3.10.1`: not `name:tag@sha256:<64 hex>`"),
        "{}",
        out(&o)
    );
}
