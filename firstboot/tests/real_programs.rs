//! The rest of a real node and control plane, built from their Go modules (and
//! pause from its C source) by `tests/k8s/build` for the newest Kubernetes
//! version the profiles pin, report the versions kiln and kubeadm expect:
//!
//! - runc, crictl and the CNI plugins: the profiles' `[artifacts.*] version`
//!   pins for that Kubernetes version (runc also its libseccomp: kubeadm's
//!   static pods ask for the `RuntimeDefault` seccomp profile);
//! - etcd, CoreDNS and pause: the image tags the real kubeadm itself lists
//!   (`kubeadm config images list --kubernetes-version V`, from
//!   `cmd/kubeadm/app/constants/constants.go`);
//! - kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy: the Kubernetes version.
//!
//! Where the programs are: `KILN_K8S_BIN_RUNC`, `_CRICTL`, `_CNI`, `_ETCD`,
//! `_COREDNS`, `_PAUSE`, `_CONTROL_PLANE_V1_34_2`, `_KUBE_PROXY_V1_34_2` and `_V1_34_2` (kubeadm), set
//! by `scripts/test` from `tests/k8s/build --dir`. Without them the test fails
//! and prints the commands that build them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The newest `kubernetes_version` in `profiles/*.toml` and the texts of the
/// profiles that pin it.
fn newest_profiles() -> (String, Vec<String>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    let mut all: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|t| {
            let v = t.lines().find_map(|l| l.strip_prefix("kubernetes_version = \"")?.strip_suffix('"'))?.to_string();
            Some((v, t))
        })
        .collect();
    // v1.MINOR.PATCH: compare numerically.
    let key = |v: &str| -> Vec<u32> { v.trim_start_matches('v').split('.').filter_map(|n| n.parse().ok()).collect() };
    all.sort_by_key(|(v, _)| key(v));
    let newest = all.last().map(|(v, _)| v.clone()).expect("no kubernetes_version in profiles/*.toml");
    let texts = all.into_iter().filter(|(v, _)| *v == newest).map(|(_, t)| t).collect();
    (newest, texts)
}

/// The one `[artifacts.NAME] version` the profiles pin.
fn pin(profiles: &[String], name: &str) -> String {
    let mut pins: Vec<String> = profiles
        .iter()
        .filter_map(|t| {
            let section = t.split(&format!("[artifacts.{name}]\n")).nth(1)?;
            let section = section.split("\n[").next()?;
            let line = section.lines().find(|l| l.starts_with("version = \""))?;
            Some(line.trim_start_matches("version = \"").trim_end_matches('"').to_string())
        })
        .collect();
    pins.sort();
    pins.dedup();
    assert_eq!(pins.len(), 1, "the profiles pin [artifacts.{name}] at {pins:?}: expected exactly one version");
    pins.remove(0)
}

/// The directory `KILN_K8S_BIN_<var>` names: `tests/k8s/build --dir VERSION amd64 TARGET`.
fn bin(var: &str, version: &str, target: &str) -> PathBuf {
    let var = format!("KILN_K8S_BIN_{var}");
    std::env::var_os(&var).map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "{var} is not set: build {target} and say where it is, from the workspace root:\n  \
             tests/k8s/build {version} amd64 {target} && export {var}=$(tests/k8s/build --dir {version} amd64 {target})\n\
             (./scripts/test does this)"
        )
    })
}

/// Runs `dir/prog args` with `env`; its stdout and stderr, or a panic.
fn said(dir: &Path, prog: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let path = dir.join(prog);
    let o = Command::new(&path)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{prog} {args:?} failed: {text}");
    text
}

/// Asserts that one line of `text` is `want`.
fn has_line(prog: &str, text: &str, want: &str) {
    assert!(text.lines().any(|l| l.trim() == want), "{prog} printed {text:?}, not a line {want:?}");
}

/// The images the real kubeadm `version` lists: image name (after the last
/// `/`) → tag.
fn kubeadm_images(version: &str) -> BTreeMap<String, String> {
    let node = bin(&version.to_uppercase().replace('.', "_"), version, "node");
    let list = said(&node, "kubeadm", &["config", "images", "list", "--kubernetes-version", version], &[]);
    list.lines()
        .filter_map(|l| {
            let (image, tag) = l.trim().rsplit_once(':')?;
            Some((image.rsplit('/').next()?.to_string(), tag.to_string()))
        })
        .collect()
}

#[test]
fn the_built_node_and_control_plane_programs_report_the_versions_kiln_and_kubeadm_expect() {
    let (k8s, profiles) = newest_profiles();
    let k8s = k8s.as_str();
    let images = kubeadm_images(k8s);
    let image = |name: &str| images.get(name).cloned().unwrap_or_else(|| panic!("kubeadm lists no {name}: {images:?}"));

    let runc = said(&bin("RUNC", k8s, "runc"), "runc", &["--version"], &[]);
    has_line("runc", &runc, &format!("runc version {}", pin(&profiles, "runc").trim_start_matches('v')));
    assert!(runc.lines().any(|l| l.starts_with("libseccomp: ")), "runc is built without seccomp: {runc:?}");

    has_line(
        "crictl",
        &said(&bin("CRICTL", k8s, "crictl"), "crictl", &["--version"], &[]),
        &format!("crictl version {}", pin(&profiles, "crictl")),
    );

    // A plugin run with no CNI_COMMAND prints its `about` (pkg/utils/buildversion:
    // "CNI NAME plugin VERSION"); CNI_COMMAND=VERSION prints the spec versions it speaks.
    let cni = bin("CNI", k8s, "cni-plugins");
    let cni_pin = pin(&profiles, "cni-plugins");
    for p in ["bridge", "host-local", "loopback", "portmap"] {
        has_line(p, &said(&cni, p, &[], &[]), &format!("CNI {p} plugin {cni_pin}"));
    }
    let spec = said(&cni, "bridge", &[], &[("CNI_COMMAND", "VERSION")]);
    assert!(
        spec.contains("\"supportedVersions\"") && spec.contains("\"1.0.0\""),
        "bridge CNI_COMMAND=VERSION printed {spec:?}"
    );

    // etcd's image tag is VERSION-REVISION (3.6.5-0).
    let etcd = bin("ETCD", k8s, "etcd");
    let tag = image("etcd");
    let etcd_version = tag.rsplit_once('-').map(|(v, _)| v).unwrap_or(&tag);
    has_line("etcd", &said(&etcd, "etcd", &["--version"], &[]), &format!("etcd Version: {etcd_version}"));
    has_line("etcdctl", &said(&etcd, "etcdctl", &["version"], &[]), &format!("etcdctl version: {etcd_version}"));

    // CoreDNS prints CoreDNS-1.12.1 (coremain/version.go: CoreName + "-" + CoreVersion).
    let coredns = said(&bin("COREDNS", k8s, "coredns"), "coredns", &["-version"], &[]);
    has_line("coredns", &coredns, &format!("CoreDNS-{}", image("coredns").trim_start_matches('v')));

    // pause.c: printf("pause.c %s\n", VERSION) with VERSION=vTAG-REV.
    let pause = said(&bin("PAUSE", k8s, "pause"), "pause", &["-v"], &[]);
    assert!(
        pause.starts_with(&format!("pause.c v{}-", image("pause"))),
        "pause -v printed {pause:?}, not pause {}",
        image("pause")
    );

    let version = k8s.to_uppercase().replace('.', "_");
    let cp = bin(&format!("CONTROL_PLANE_{version}"), k8s, "control-plane");
    let proxy = bin(&format!("KUBE_PROXY_{version}"), k8s, "kube-proxy");
    for (dir, p) in
        [(&cp, "kube-apiserver"), (&cp, "kube-controller-manager"), (&cp, "kube-scheduler"), (&proxy, "kube-proxy")]
    {
        assert_eq!(image(p), k8s, "kubeadm {k8s} runs {p} {}", image(p));
        has_line(p, &said(dir, p, &["--version"], &[]), &format!("Kubernetes {k8s}"));
    }
}
