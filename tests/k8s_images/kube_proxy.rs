//! kube-proxy's image held to the real containerd and runc: kube-proxy runs from
//! where kubeadm's DaemonSet runs it, and the host's Debian iptables (nft
//! backend) the image carries runs from the container's own root, in the network
//! namespace of a pause container as in a pod (never the host's): a library,
//! an extension or a link the image lacks fails here.

use super::{made, make_images, ok, run, runc, start_detached, stop, text, VERSION};
use kiln_testkit::containerd::{self, Containerd};
use serde_json::Value;
use std::path::Path;

/// Rules in the shape kube-proxy's iptables mode writes (pkg/proxy/iptables/proxier.go:
/// the jumps from the built-in chains with their comments, KUBE-MARK-MASQ,
/// KUBE-SVC-/KUBE-SEP- chains), using the extensions it loads: comment, tcp,
/// statistic, DNAT, MARK, mark, addrtype, MASQUERADE, conntrack.
const RULES_V4: &str = r#"*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-NPX46M4PTMTKRN6Y - [0:0]
:KUBE-SEP-KILNTESTENDPOINT - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "default/kubernetes:https cluster IP" -m tcp --dport 443 -j KUBE-SVC-NPX46M4PTMTKRN6Y
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-NPX46M4PTMTKRN6Y -m comment --comment "default/kubernetes:https -> 10.0.2.15:6443" -m statistic --mode random --probability 0.5 -j KUBE-SEP-KILNTESTENDPOINT
-A KUBE-SEP-KILNTESTENDPOINT -s 10.0.2.15/32 -m comment --comment "default/kubernetes:https" -j KUBE-MARK-MASQ
-A KUBE-SEP-KILNTESTENDPOINT -p tcp -m comment --comment "default/kubernetes:https" -m tcp -j DNAT --to-destination 10.0.2.15:6443
COMMIT
*filter
:KUBE-FORWARD - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
COMMIT
"#;

/// The IPv6 twin (ip6tables-restore: the IPv6 family's code paths and extensions).
const RULES_V6: &str = r#"*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-KILNTESTSERVICE6 - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d fd00:10:96::1/128 -p tcp -m comment --comment "default/kubernetes:https cluster IP" -m tcp --dport 443 -j KUBE-SVC-KILNTESTSERVICE6
-A KUBE-SVC-KILNTESTSERVICE6 -p tcp -m tcp -j DNAT --to-destination [fd00::15]:6443
COMMIT
"#;

/// What `iptables-save` prints for RULES_V4 (its canonical spelling of each rule).
const SAVED_V4: [&str; 6] = [
    "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
    "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully",
    "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
    "-A KUBE-SVC-NPX46M4PTMTKRN6Y -m comment --comment \"default/kubernetes:https -> 10.0.2.15:6443\" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-KILNTESTENDPOINT",
    "-A KUBE-SEP-KILNTESTENDPOINT -p tcp -m comment --comment \"default/kubernetes:https\" -m tcp -j DNAT --to-destination 10.0.2.15:6443",
    "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
];

/// A pod: the pause container holding a network namespace, and the image the
/// test runs in it.
struct Pod<'a> {
    c: &'a Containerd,
    image: String,
    netns: String,
    rules: &'a Path,
}

impl Pod<'_> {
    /// `ctr run --rm` of ARGS in the pod's network namespace with CAP_NET_ADMIN
    /// (kubeadm's DaemonSet runs kube-proxy privileged, a superset), the rules
    /// directory at /rules: (exit ok, stdout + stderr).
    fn exec(&self, name: &str, args: &[&str]) -> (bool, String) {
        let (id, cg) = (format!("kiln-test-kp-{name}"), self.c.cgroup(&format!("kp-{name}")));
        let mount = format!("type=bind,src={},dst=/rules,options=rbind:ro", self.rules.display());
        let mut ctr = self.c.ctr();
        ctr.args(["-n", "k8s.io", "run", "--rm", "--runtime", "io.containerd.runc.v2", "--cgroup", &cg])
            .args(["--with-ns", &format!("network:{}", self.netns), "--cap-add", "CAP_NET_ADMIN", "--mount", &mount])
            .args([self.image.as_str(), id.as_str()])
            .args(args)
            .stdin(std::process::Stdio::null());
        let o = ctr.output().unwrap_or_else(|e| panic!("ctr run: {e}"));
        (o.status.success(), text(&o))
    }

    /// [`Pod::exec`] that must succeed.
    fn must(&self, name: &str, args: &[&str]) -> String {
        let (good, out) = self.exec(name, args);
        assert!(good, "{args:?} in the kube-proxy image failed:\n{out}\n{}", self.c.log_tail());
        out
    }
}

/// images.json's kube-proxy entry names every file it took from the host with
/// its Debian package and version; returns the iptables package's version.
fn host_files_named(entry: &Value) -> String {
    let files = entry["host_files"].as_array().unwrap_or_else(|| panic!("no host_files in {entry}"));
    let by_path = |p: &str| files.iter().find(|f| f["path"] == p).unwrap_or_else(|| panic!("no {p} in {entry}"));
    for f in files.iter().filter(|f| f["from"].as_str().is_some_and(|s| s.starts_with('/'))) {
        assert!(f["package"].is_string() && f["version"].is_string(), "no package for {f}");
        assert!(f["sha256"].is_string() || f["link"].is_string(), "neither sha256 nor link: {f}");
    }
    let multi = by_path("usr/sbin/xtables-nft-multi");
    assert_eq!(multi["package"], "iptables", "{multi}");
    for lib in ["libxtables.so.12", "libnftnl.so.11", "libmnl.so.0", "libc.so.6"] {
        let p = format!("usr/lib/x86_64-linux-gnu/{lib}");
        assert!(by_path(&p)["package"].is_string(), "{p} has no package");
    }
    assert_eq!(by_path("usr/sbin/iptables")["link"], "iptables-nft");
    multi["version"].as_str().unwrap_or_default().to_string()
}

#[test]
fn the_kube_proxy_image_runs_iptables_nft_and_kube_proxy_cleans_its_rules_in_a_pods_network_namespace() {
    let bin = ok(containerd::bin_dir());
    let Some(runc) = runc("the kube-proxy image under the real runc") else { return };
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let out = tmp.path().join("images");
    let images = made(&make_images(&out, &["kube-proxy", "pause"]));
    let find = |n: &str| images.iter().find(|(_, i)| i["name"] == n).map(|(r, _)| r.clone());
    let (kp, pause) = (find("kube-proxy").expect("no kube-proxy image"), find("pause").expect("no pause image"));
    let doc: Value = serde_json::from_slice(&std::fs::read(out.join("images.json")).unwrap_or_default())
        .unwrap_or_else(|e| panic!("images.json: {e}"));
    let entry = doc["images"].as_array().and_then(|a| a.iter().find(|i| i["name"] == "kube-proxy")).cloned();
    let iptables_version = host_files_named(&entry.unwrap_or_default());
    let upstream = iptables_version.split('-').next().unwrap_or_default().to_string();

    let c = ok(Containerd::start(&bin, &tmp.path().join("containerd"), &[&runc]));
    for i in images.values() {
        run(c.ctr().args(["-n", "k8s.io", "images", "import"]).arg(out.join(&i["archive"])));
    }
    let pid = start_detached(&c, &pause, "pause");
    let netns = format!("/proc/{pid}/ns/net");
    let own = std::fs::read_link("/proc/self/ns/net").unwrap_or_else(|e| panic!("/proc/self/ns/net: {e}"));
    let theirs = std::fs::read_link(&netns).unwrap_or_else(|e| panic!("{netns}: {e}"));
    assert_ne!(own, theirs, "the pause container shares the host's network namespace: nothing may run there");
    let rules = tmp.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap_or_else(|e| panic!("{}: {e}", rules.display()));
    std::fs::write(rules.join("v4"), RULES_V4).unwrap_or_else(|e| panic!("rules: {e}"));
    std::fs::write(rules.join("v6"), RULES_V6).unwrap_or_else(|e| panic!("rules: {e}"));
    let pod = Pod { c: &c, image: kp, netns, rules: &rules };

    // Where kubeadm's DaemonSet runs it (phases/addons/proxy/manifests.go).
    let v = pod.must("version", &["/usr/local/bin/kube-proxy", "--version"]);
    assert!(v.lines().any(|l| l.trim() == format!("Kubernetes {VERSION}")), "kube-proxy --version: {v:?}");
    // The nft backend, by its own name and by the names kube-proxy runs.
    for (name, prog, family) in
        [("nft-v", "iptables-nft", "iptables"), ("v", "iptables", "iptables"), ("v6", "ip6tables", "ip6tables")]
    {
        let said = pod.must(name, &[prog, "-V"]);
        assert_eq!(said.trim(), format!("{family} v{upstream} (nf_tables)"), "{prog} -V (iptables {iptables_version})");
    }
    pod.must("restore", &["iptables-restore", "/rules/v4"]);
    pod.must("restore6", &["ip6tables-restore", "/rules/v6"]);
    let saved = pod.must("save", &["iptables-save"]);
    assert!(saved.contains(&format!("# Generated by iptables-save v{upstream} (nf_tables)")), "{saved}");
    for rule in SAVED_V4 {
        assert!(saved.lines().any(|l| l == rule), "iptables-save lacks {rule:?}:\n{saved}");
    }
    let saved6 = pod.must("save6", &["ip6tables-save"]);
    assert!(saved6.contains("-j DNAT --to-destination [fd00::15]:6443"), "ip6tables-save:\n{saved6}");

    // kube-proxy itself runs the image's iptables-save/-restore and ip6tables ones
    // (iptables mode's CleanupLeftovers) and removes every rule it owns.
    let log = pod.must("cleanup", &["/usr/local/bin/kube-proxy", "--cleanup", "--v=4"]);
    for cmd in ["iptables-save", "iptables-restore", "ip6tables-save", "ip6tables-restore"] {
        assert!(log.contains(&format!("command=\"{cmd}\"")), "kube-proxy --cleanup did not run {cmd}:\n{log}");
    }
    assert!(!log.contains("Failed to execute") && !log.contains("Error"), "kube-proxy --cleanup:\n{log}");
    for (name, prog) in [("after", "iptables-save"), ("after6", "ip6tables-save")] {
        let left = pod.must(name, &[prog]);
        assert!(!left.contains("KUBE-"), "{prog} after kube-proxy --cleanup still has kube-proxy's chains:\n{left}");
    }
    stop(&c, "pause", pid);
    eprintln!(
        "kube-proxy {VERSION} and iptables {iptables_version} (nf_tables) ran in pause {pid}'s network namespace"
    );
}

#[test]
fn the_kube_proxy_image_fails_without_the_hosts_iptables_package() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    // The real dpkg-query, on a dpkg database where nothing is installed.
    let admin = tmp.path().join("dpkg");
    std::fs::create_dir_all(admin.join("info")).unwrap_or_else(|e| panic!("{}: {e}", admin.display()));
    std::fs::write(admin.join("status"), "").unwrap_or_else(|e| panic!("{}: {e}", admin.display()));
    let o = std::process::Command::new(super::repo().join("tests/k8s/images"))
        .args(["--only", "kube-proxy", VERSION, "amd64"])
        .arg(tmp.path().join("out"))
        .env("DPKG_ADMINDIR", &admin)
        .output()
        .unwrap_or_else(|e| panic!("tests/k8s/images: {e}"));
    let err = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("iptables is not installed: apt-get install iptables"), "{err}");
    assert!(!tmp.path().join(format!("out/kube-proxy_{VERSION}.tar")).exists(), "a kube-proxy image without iptables");
}
