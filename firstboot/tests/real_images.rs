//! Issue 23: the images an image carries, imported by the real `kiln-firstboot run`
//! into the REAL containerd (v2.1.5, built by `tests/k8s/build`) before kubeadm,
//! then read back through the real crictl as the kubelet sees them.
//!
//! The archive is what `kiln build` bakes (contract C2): `tests/k8s/merge-images`
//! merges the single-image archives `tests/k8s/images` makes from the real programs
//! into one OCI layout, one descriptor per image. Each scratch root is a kiln image
//! whose `runtime_socket` is that containerd's socket (`<root>/run/containerd/`),
//! with the real `ctr` in its bin dir and a kubeadm stand-in (this file is about
//! what happens before kubeadm; `real_kubeadm.rs` holds the config to the real one).
//!
//! Needs root, `KILN_K8S_BIN_CONTAINERD`, `KILN_K8S_BIN_RUNC`, `KILN_K8S_BIN_CRICTL`
//! and `KILN_K8S_BIN_V1_34_2` (tests/k8s/images asks the real kubeadm for the list),
//! as `./scripts/test` exports them.

// Shared with the other tests, which use the rest of them.
#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod real_bins;

use kiln_testkit::containerd::Containerd;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ARCHIVE: &str = "/opt/kiln/images/images.oci.tar";

/// kubeadm's stand-in: records its arguments and the config it was given, exits as
/// `kubeadm.exit` says (0 when absent).
const KUBEADM: &str = "#!/bin/sh\necho \"$*\" >> \"$0.calls\"\ncase \"$1\" in init|join) cp \"$3\" \"$0.config\";; esac\nexit $(cat \"$0.exit\" 2>/dev/null || echo 0)\n";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `tests/k8s/images [--only ..] v1.34.2 amd64 DIR`, then `tests/k8s/merge-images`
/// of every archive it wrote: the merged archive and (reference, index digest) in order.
fn baked(dir: &Path, only: &[&str], foreign: bool) -> (PathBuf, Vec<(String, String)>) {
    let singles = dir.join("singles");
    let o = Command::new(repo().join("tests/k8s/images"))
        .args(only.iter().flat_map(|n| ["--only", n]))
        .args(["v1.34.2", "amd64"])
        .arg(&singles)
        .output()
        .expect("python3 runs tests/k8s/images");
    assert!(o.status.success(), "tests/k8s/images failed:\n{}", text(&o));
    let made: Value = serde_json::from_slice(&std::fs::read(singles.join("images.json")).unwrap()).unwrap();
    for s in made["skipped"].as_array().into_iter().flatten() {
        eprintln!("NOT BAKED: {}: {}", s["reference"], s["reason"]);
    }
    let inputs: Vec<PathBuf> =
        made["images"].as_array().unwrap().iter().map(|i| singles.join(i["archive"].as_str().unwrap())).collect();
    let out = dir.join("images.oci.tar");
    let mut merge = Command::new(repo().join("tests/k8s/merge-images"));
    if foreign {
        merge.args(["--foreign-platform", "arm64"]);
    }
    let o = merge.arg(&out).args(&inputs).output().expect("python3 runs tests/k8s/merge-images");
    assert!(o.status.success(), "merge-images failed:\n{}", text(&o));
    // Hundreds of MiB: only the merged archive is kept.
    std::fs::remove_dir_all(&singles).unwrap();
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    let pins = doc["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["reference"].as_str().unwrap().to_string(), i["index_digest"].as_str().unwrap().to_string()))
        .collect();
    (out, pins)
}

/// A kiln image root with the real containerd serving `<root>/run/containerd/containerd.sock`.
struct Node {
    dir: tempfile::TempDir,
    containerd: Option<Containerd>,
}

impl Node {
    /// An init node whose image carries `archive` with `pins`; preflight passes.
    fn new(archive: &Path, pins: &[(String, String)]) -> Node {
        Node::with(archive, pins, None)
    }

    /// [`Node::new`], a worker joining `endpoint` when it is given.
    fn with(archive: &Path, pins: &[(String, String)], join: Option<&str>) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        common::node_root(&root, "flatcar", "v1.34.2", "cp-1");
        let images: Vec<String> = pins.iter().map(|(r, d)| format!("\"{r}@{d}\"")).collect();
        let toml = std::fs::read_to_string(root.join("etc/kiln/image.toml")).unwrap();
        common::write(
            &root,
            "etc/kiln/image.toml",
            &format!("{toml}images_archive = \"{ARCHIVE}\"\nimages = [{}]\n", images.join(", ")),
        );
        // The CA material an init node gets (the stand-in kubeadm reads none of it).
        let pem = |kind: &str| format!("\"\"\"\n-----BEGIN {kind}-----\nAAAA\n-----END {kind}-----\n\"\"\"");
        let pki: String = ["ca", "front_proxy_ca", "etcd_ca"]
            .iter()
            .map(|k| format!("{k}_cert = {}\n{k}_key = {}\n", pem("CERTIFICATE"), pem("PRIVATE KEY")))
            .chain([format!("sa_key = {}\nsa_pub = {}\n", pem("PRIVATE KEY"), pem("PUBLIC KEY"))])
            .collect();
        let toml = match join {
            None => format!("[cluster]\ncontrol_plane_endpoint = \"10.0.0.5:6443\"\nbootstrap_token = \"abcdef.0123456789abcdef\"\n[node]\nrole = \"init\"\nnode_ip = \"10.0.0.5\"\nswap = \"limited\"\n[pki]\n{pki}"),
            Some(endpoint) => format!("[cluster]\ncontrol_plane_endpoint = \"{endpoint}\"\nbootstrap_token = \"abcdef.0123456789abcdef\"\nca_cert_hashes = [\"sha256:{}\"]\n[node]\nrole = \"join\"\nnode_ip = \"10.0.0.9\"\nswap = \"limited\"\n", "25".repeat(32)),
        };
        common::write(&root, "etc/kiln/node.toml", &toml);
        // What fix-host would have done on a real host.
        for (rel, v) in [
            ("proc/sys/net/ipv4/ip_forward", "1\n"),
            ("proc/sys/net/bridge/bridge-nf-call-iptables", "1\n"),
            ("proc/sys/net/bridge/bridge-nf-call-ip6tables", "1\n"),
        ] {
            common::write(&root, rel, v);
        }
        std::fs::create_dir_all(root.join("sys/module/br_netfilter")).unwrap();
        std::fs::create_dir_all(root.join("sys/module/overlay")).unwrap();
        std::fs::create_dir_all(root.join("opt/kiln/images")).unwrap();
        std::fs::create_dir_all(root.join("opt/bin")).unwrap();
        // A hard link where it can be (the same file system): no second copy on disk.
        let baked = root.join(ARCHIVE.trim_start_matches('/'));
        if std::fs::hard_link(archive, &baked).is_err() {
            std::fs::copy(archive, &baked).unwrap();
        }
        std::os::unix::fs::symlink(real_bins::containerd().join("ctr"), root.join("opt/bin/ctr")).unwrap();
        common::write(&root, "opt/bin/kubeadm", KUBEADM);
        std::fs::set_permissions(root.join("opt/bin/kubeadm"), std::fs::Permissions::from_mode(0o755)).unwrap();
        // The socket's place is containerd's own now.
        std::fs::remove_file(root.join("run/containerd/containerd.sock")).unwrap();
        let runc = real_bins::target("RUNC", "runc", &["runc"]);
        let c = Containerd::start(&real_bins::containerd(), &root.join("run/containerd"), &[runc.as_path()])
            .unwrap_or_else(|e| panic!("{e}"));
        Node { dir, containerd: Some(c) }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn socket(&self) -> PathBuf {
        self.containerd.as_ref().unwrap().socket()
    }

    fn firstboot(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kiln-firstboot"))
            .arg("--root")
            .arg(self.root())
            .args(["--attempts", "1"])
            .args(args)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .unwrap()
    }

    /// The real crictl against this containerd.
    fn crictl(&self, args: &[&str]) -> String {
        let crictl = real_bins::target("CRICTL", "crictl", &["crictl"]).join("crictl");
        let o = Command::new(crictl)
            .arg("--runtime-endpoint")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "crictl {args:?}:\n{}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `ctr -n k8s.io images ls -q`.
    fn refs(&self) -> Vec<String> {
        let o = self.containerd.as_ref().unwrap().ctr().args(["-n", "k8s.io", "images", "ls", "-q"]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).lines().map(String::from).collect()
    }

    fn kubeadm_exits(&self, code: u8) {
        common::write(&self.root(), "opt/bin/kubeadm.exit", &format!("{code}\n"));
    }

    fn kubeadm_calls(&self) -> String {
        std::fs::read_to_string(self.root().join("opt/bin/kubeadm.calls")).unwrap_or_default()
    }

    fn doctor(&self) -> Value {
        serde_json::from_slice(&self.firstboot(&["doctor", "--json"]).stdout).unwrap()
    }
}

/// The step names `plan --json` lists.
fn planned(n: &Node) -> Vec<String> {
    let o = n.firstboot(&["plan", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect()
}

/// The step names a run logged as each started.
fn taken(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("<6>kiln-firstboot: step "))
        .map(|l| l.split(':').next().unwrap().to_string())
        .collect()
}

/// The one `import-images:` line a run logged.
fn import_line(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("<6>kiln-firstboot: import-images: ")).collect();
    assert_eq!(lines.len(), 1, "{out}");
    lines[0].to_string()
}

/// `doctor --json`'s known failure ids.
fn known(v: &Value) -> Vec<String> {
    v["known_failures"].as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap().to_string()).collect()
}

/// The baked images go into containerd before kubeadm, each under its reference
/// and its digest reference with the pinned digest, pinned (as crictl reports it
/// to the kubelet); a second run imports nothing; plan lists exactly what run does;
/// kubeadm is told IfNotPresent; doctor finds every image present.
#[test]
fn baked_images_are_imported_pinned_before_kubeadm_and_only_once() {
    let work = tempfile::tempdir().unwrap();
    let (archive, pins) = baked(work.path(), &[], false);
    assert!(pins.len() >= 6, "tests/k8s/images made only {pins:?}");
    let n = Node::new(&archive, &pins);
    let plan = planned(&n);
    let at = |s: &str| plan.iter().position(|p| p == s).unwrap_or_else(|| panic!("{s} not planned: {plan:?}"));
    assert!(at("preflight") < at("import-images") && at("import-images") < at("kubeadm"), "{plan:?}");
    let text_plan = text(&n.firstboot(&["plan"]));
    for (r, d) in &pins {
        assert!(text_plan.contains(&format!("    {r}@{d}\n")), "{text_plan}");
    }

    // First boot: kubeadm fails after the import (a boot that is retried).
    n.kubeadm_exits(1);
    let o = n.firstboot(&["run"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let line = import_line(&o);
    assert!(line.contains(&format!("imported {} images from {ARCHIVE}", pins.len())), "{line}");
    eprintln!("MEASURED: {line}");
    let crictl = n.crictl(&["images", "--digests"]);
    for (r, d) in &pins {
        let (repo, tag) = r.rsplit_once(':').unwrap();
        let short = &d["sha256:".len().."sha256:".len() + 13];
        assert!(
            crictl.lines().any(|l| {
                let t: Vec<&str> = l.split_whitespace().collect();
                t.len() > 3 && t[0] == repo && t[1] == tag && t[2] == short
            }),
            "crictl images --digests lacks {r} {short}:\n{crictl}"
        );
        let inspect: Value = serde_json::from_str(&n.crictl(&["inspecti", "-o", "json", r])).unwrap();
        assert_eq!(inspect["status"]["pinned"], true, "{r}: {inspect:#}");
        assert!(
            inspect["status"]["repoDigests"].as_array().unwrap().iter().any(|x| x == &format!("{repo}@{d}")),
            "{inspect:#}"
        );
    }
    let config = std::fs::read_to_string(n.root().join("opt/bin/kubeadm.config")).unwrap();
    let init: Value = serde_json::from_str(config.split("\n---\n").next().unwrap()).unwrap();
    assert_eq!(init["nodeRegistration"]["imagePullPolicy"], "IfNotPresent", "{init:#}");

    // The retry: everything present, nothing imported; the plan is exactly what ran.
    n.kubeadm_exits(0);
    let plan = planned(&n);
    let o = n.firstboot(&["run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(taken(&o), plan, "{}", text(&o));
    let line = import_line(&o);
    assert!(
        line.contains(&format!("all {} images are in containerd (k8s.io) with their pinned digests", pins.len()))
            && line.contains("nothing imported"),
        "{line}"
    );

    let v = n.doctor();
    let images: Vec<&Value> = v["checks"].as_array().unwrap().iter().filter(|c| c["id"] == "images").collect();
    for (r, _) in &pins {
        assert!(
            images
                .iter()
                .any(|c| c["level"] == "ok" && c["message"].as_str().unwrap().starts_with(&format!("{r} present"))),
            "{r}: {images:#?}"
        );
    }
    assert!(known(&v).is_empty(), "{v:#}");
}

/// A worker imports only the images a worker runs (pause, kube-proxy, CoreDNS), its
/// part of the archive streamed to the real `ctr images import -`; the control-plane
/// images stay in the archive, and neither its plan, its run nor doctor asks for them.
#[test]
fn a_worker_imports_only_what_a_worker_runs() {
    let work = tempfile::tempdir().unwrap();
    let (archive, pins) = baked(work.path(), &["pause", "etcd", "kube-apiserver", "kube-proxy", "coredns"], false);
    let cp = |r: &str| r.contains("/etcd:") || r.contains("/kube-apiserver:");
    let (cps, runs): (Vec<_>, Vec<_>) = pins.iter().cloned().partition(|(r, _)| cp(r));
    assert!(cps.len() == 2 && runs.len() >= 2, "tests/k8s/images made only {pins:?}");
    // The endpoint answers on loopback (wait-for-endpoint), and the kubeadm stand-in joins.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("127.0.0.1:{}", l.local_addr().unwrap().port());
    let n = Node::with(&archive, &pins, Some(&endpoint));
    let plan = text(&n.firstboot(&["plan"]));
    assert!(
        plan.contains(&format!("{} images: ", runs.len()))
            && plan.contains("2 control-plane images left in the archive"),
        "{plan}"
    );
    let o = n.firstboot(&["run"]);
    assert!(o.status.success(), "{}", text(&o));
    let line = import_line(&o);
    assert!(
        line.contains(&format!("imported {} images from {ARCHIVE}", runs.len()))
            && line.contains("2 control-plane images left in the archive (a worker runs none)"),
        "{line}"
    );
    eprintln!("MEASURED: {line}");
    let refs = n.refs();
    for (r, d) in &runs {
        let (repo, _) = r.rsplit_once(':').unwrap();
        assert!(refs.contains(r) && refs.contains(&format!("{repo}@{d}")), "{r} not imported: {refs:?}");
    }
    let crictl = n.crictl(&["images"]);
    for (r, _) in &cps {
        let (repo, _) = r.rsplit_once(':').unwrap();
        assert!(
            !refs.iter().any(|x| x.starts_with(repo)) && !crictl.contains(repo),
            "{r} imported on a worker: {refs:?}\n{crictl}"
        );
    }
    // The import is as pinned: nothing to do the second time; doctor is content.
    let o = n.firstboot(&["run"]);
    assert!(o.status.success(), "{}", text(&o));
    let v = n.doctor();
    let images: Vec<&Value> = v["checks"].as_array().unwrap().iter().filter(|c| c["id"] == "images").collect();
    assert!(images.iter().all(|c| c["level"] == "ok") && images.len() >= runs.len(), "{images:#?}");
    assert!(!images.iter().any(|c| cp(c["message"].as_str().unwrap())), "{images:#?}");
    drop(l);
}

/// A damaged archive and an archive whose image differs from image.toml's pin each
/// stop the run before kubeadm, with the reason in the failure marker that `doctor`
/// diagnoses; the image with another digest is not left in containerd. An image
/// index naming another platform's manifest, absent from the archive, imports.
#[test]
fn damaged_or_other_images_fail_closed_and_doctor_says_why() {
    let work = tempfile::tempdir().unwrap();
    let (archive, pins) = baked(work.path(), &["pause", "etcd"], false);

    // Damaged: one byte of the largest blob flipped (the layer, past its tar header).
    let damaged = work.path().join("damaged.tar");
    let mut bytes = std::fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&damaged, &bytes).unwrap();
    let n = Node::new(&damaged, &pins);
    let o = n.firstboot(&["run"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let failed = std::fs::read_to_string(n.root().join("run/kiln/bootstrap-failed")).unwrap();
    assert!(failed.starts_with("import-images: ctr could not import /opt/kiln/images/images.oci.tar"), "{failed}");
    assert!(n.kubeadm_calls().is_empty(), "kubeadm ran: {}", n.kubeadm_calls());
    eprintln!("CAPTURED damaged: {failed}");
    assert_eq!(known(&n.doctor()), ["baked-images-import-failed"]);
    drop(n);

    // Another digest pinned for pause: the archive's pause is refused and removed.
    let mut other = pins.clone();
    let pause = other.iter().position(|(r, _)| r.contains("/pause:")).unwrap();
    other[pause].1 = format!("sha256:{}", "5".repeat(64));
    let n = Node::new(&archive, &other);
    let o = n.firstboot(&["run"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let failed = std::fs::read_to_string(n.root().join("run/kiln/bootstrap-failed")).unwrap();
    assert!(
        failed.contains(&format!(
            "{} is {} in /opt/kiln/images/images.oci.tar, but image.toml pins {}",
            other[pause].0, pins[pause].1, other[pause].1
        )),
        "{failed}"
    );
    eprintln!("CAPTURED mismatch: {failed}");
    assert!(!n.refs().contains(&other[pause].0), "{:?}", n.refs());
    assert!(n.kubeadm_calls().is_empty(), "kubeadm ran: {}", n.kubeadm_calls());
    assert_eq!(known(&n.doctor()), ["baked-images-not-as-pinned"]);
    drop(n);

    // registry.k8s.io's indexes name every architecture; only this one's blobs are baked.
    let foreign = work.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    let (archive, pins) = baked(&foreign, &["pause", "etcd"], true);
    let n = Node::new(&archive, &pins);
    let o = n.firstboot(&["run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(import_line(&o).contains("imported 2 images"), "{}", text(&o));
}
