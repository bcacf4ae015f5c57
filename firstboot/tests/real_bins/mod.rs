//! Where the real Kubernetes programs built by `tests/k8s/build` are, for the
//! tests that run them (`real_kubeadm.rs`, `real_failures.rs`). Without the
//! environment variable a test fails and prints the command that builds them;
//! it never falls back to the model.

use std::path::PathBuf;

/// The directory holding the real kubeadm, kubelet and kubectl for `version`
/// (`KILN_K8S_BIN_V1_34_2` for v1.34.2).
pub fn node(version: &str) -> PathBuf {
    let var = format!("KILN_K8S_BIN_{}", version.to_uppercase().replace('.', "_"));
    let build =
        format!("tests/k8s/build {version} amd64 && export {var}=$(tests/k8s/build --dir {version} amd64 node)");
    let dir = std::env::var_os(&var).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{var} is not set: the real kubeadm {version} is needed (no fallback to the model). Build it and say where it is, from the workspace root:\n  {build}\n(./scripts/test does this)")
    });
    for p in ["kubeadm", "kubelet", "kubectl"] {
        assert!(dir.join(p).is_file(), "{var}={} has no {p}; build it:\n  {build}", dir.display());
    }
    dir
}

/// The directory holding the real containerd, its shim and ctr (`KILN_K8S_BIN_CONTAINERD`).
pub fn containerd() -> PathBuf {
    target("CONTAINERD", "containerd", &["containerd", "containerd-shim-runc-v2", "ctr"])
}

/// The directory `KILN_K8S_BIN_<var>` names, built by `tests/k8s/build
/// v1.34.2 amd64 <target>`, holding `programs`.
pub fn target(var: &str, target: &str, programs: &[&str]) -> PathBuf {
    let var = format!("KILN_K8S_BIN_{var}");
    let build = format!(
        "tests/k8s/build v1.34.2 amd64 {target} && export {var}=$(tests/k8s/build --dir v1.34.2 amd64 {target})"
    );
    let dir = std::env::var_os(&var).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{var} is not set: build {target} and say where it is, from the workspace root:\n  {build}\n(./scripts/test does this)")
    });
    for p in programs {
        assert!(dir.join(p).is_file(), "{var}={} has no {p}; build it:\n  {build}", dir.display());
    }
    dir
}
