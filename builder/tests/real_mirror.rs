//! An image of the REAL Kubernetes programs: `tests/k8s/mirror` publishes what
//! `tests/k8s/build` built at the upstream paths of `profiles/debian-1.34.toml`
//! (amd64), `kiln pin --base-url file://MIRROR` pins their sha256s and
//! `kiln build --mirror MIRROR` bakes them; the image's `/opt/bin/kubelet`,
//! `containerd`, `runc`, `crictl` and `/opt/cni/bin/bridge` are byte for byte
//! the built programs.
//!
//! Where the built programs are: `KILN_K8S_BIN_V1_34_2`, `KILN_K8S_BIN_CONTAINERD`,
//! `KILN_K8S_BIN_RUNC`, `KILN_K8S_BIN_CRICTL`, `KILN_K8S_BIN_CNI` (set by
//! `scripts/test` from `tests/k8s/build --dir`). Without them the test fails
//! and prints the commands that build them.

mod common;

use common::*;
use kiln::hash::sha256_hex;
use kiln_testkit::standin;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory a `KILN_K8S_BIN_*` variable names, or a panic with the
/// commands that build TARGET and set it.
fn built(var: &str, target: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "{var} is not set: build {target} and say where it is, from the workspace root:\n  \
             tests/k8s/build v1.34.2 amd64 {target} && export {var}=$(tests/k8s/build --dir v1.34.2 amd64 {target})\n\
             (./scripts/test does this)"
        )
    })
}

/// The sha256 of a file.
fn sha_of(path: &Path) -> String {
    sha256_hex(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// The sha256 of the member `name` of the gzip tarball `tarball`.
fn sha_in(tarball: &Path, name: &str) -> String {
    let o = Command::new("tar").arg("-xzOf").arg(tarball).arg(name).output().expect("spawn tar");
    assert!(o.status.success(), "tar -xzOf {} {name}: {}", tarball.display(), String::from_utf8_lossy(&o.stderr));
    sha256_hex(&o.stdout)
}

/// debian-1.34 for amd64 only: the arm64 programs are not built here, and
/// `kiln pin` pins every architecture a profile lists or has a sha256 for.
fn amd64_only(text: &str) -> String {
    let mut out: String = text
        .lines()
        .filter(|l| !l.starts_with("sha256.arm64") && !l.starts_with("size.arm64"))
        .map(|l| if l.starts_with("architectures = ") { "architectures = [\"amd64\"]" } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    out
}

#[test]
fn an_image_built_from_the_real_programs_mirror_carries_them() {
    let node = built("KILN_K8S_BIN_V1_34_2", "node");
    let containerd = built("KILN_K8S_BIN_CONTAINERD", "containerd");
    let runc = built("KILN_K8S_BIN_RUNC", "runc");
    let crictl = built("KILN_K8S_BIN_CRICTL", "crictl");
    let cni = built("KILN_K8S_BIN_CNI", "cni-plugins");
    let dir = tempfile::tempdir().expect("tempdir");
    copy_repo(dir.path());
    let profile = dir.path().join("profiles/debian-1.34.toml");
    fs::write(&profile, amd64_only(&fs::read_to_string(&profile).unwrap())).unwrap();
    let mirror = dir.path().join("mirror");

    let o = run(Command::new(repo().join("tests/k8s/mirror")).arg(&profile).arg(&mirror).arg("amd64"));
    assert!(o.status.success(), "tests/k8s/mirror: {}", stderr(&o));
    let o = run(kiln()
        .arg("pin")
        .arg("--profile")
        .arg(&profile)
        .arg("--base-url")
        .arg(format!("file://{}", mirror.display())));
    assert!(o.status.success(), "kiln pin: {}", stderr(&o));
    let pinned = fs::read_to_string(&profile).unwrap();
    assert!(pinned.contains(&sha_of(&node.join("kubelet"))), "kiln pin did not pin the built kubelet:\n{pinned}");

    let firstboot = dir.path().join("kiln-firstboot-amd64");
    fs::write(&firstboot, standin::elf(kiln::inputs::profile::Arch::Amd64.elf_machine(), 1 << 20, 7)).unwrap();
    let o = run(kiln()
        .arg("build")
        .arg(&profile)
        .arg("--mirror")
        .arg(&mirror)
        .arg("--offline")
        .arg("--cache")
        .arg(dir.path().join("cache"))
        .arg("--out")
        .arg(dir.path().join("dist"))
        .args(["--format", "tar", "--arch", "amd64"])
        .arg("--firstboot-bin")
        .arg(format!("amd64={}", firstboot.display())));
    assert!(o.status.success(), "kiln build: {}", stderr(&o));

    let image = dir.path().join("dist/debian-1.34-amd64.tar.gz");
    let want = [
        ("opt/bin/kubelet", node.join("kubelet")),
        ("opt/bin/kubeadm", node.join("kubeadm")),
        ("opt/bin/containerd", containerd.join("containerd")),
        ("opt/bin/containerd-shim-runc-v2", containerd.join("containerd-shim-runc-v2")),
        ("opt/bin/runc", runc.join("runc")),
        ("opt/bin/crictl", crictl.join("crictl")),
        ("opt/cni/bin/bridge", cni.join("bridge")),
    ];
    for (member, program) in want {
        assert_eq!(sha_in(&image, member), sha_of(&program), "{member} in the image is not {}", program.display());
    }
}

/// `tests/k8s/mirror` never publishes something other than what the profile
/// pins: a program not built (an empty `KILN_K8S_CACHE`), or built at another
/// version than the profile's pin, fails it (exit 1) with the command to run.
#[test]
fn the_real_programs_mirror_refuses_what_was_not_built() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_repo(dir.path());
    let profile = dir.path().join("profiles/debian-1.34.toml");
    let mirror = dir.path().join("mirror");
    let mirror_cmd = |profile: &Path, cache: Option<&Path>| {
        let mut c = Command::new(repo().join("tests/k8s/mirror"));
        c.arg(profile).arg(&mirror).arg("amd64");
        if let Some(cache) = cache {
            c.env("KILN_K8S_CACHE", cache);
        }
        run(&mut c)
    };

    let empty = dir.path().join("empty-cache");
    fs::create_dir(&empty).unwrap();
    let o = mirror_cmd(&profile, Some(&empty));
    assert_eq!(o.status.code(), Some(1), "an empty cache: {}", stderr(&o));
    assert!(
        stderr(&o).contains("is not built") && stderr(&o).contains("run tests/k8s/build v1.34.2 amd64 containerd"),
        "an empty cache: {}",
        stderr(&o)
    );

    let text = fs::read_to_string(&profile).unwrap();
    let repinned =
        text.replacen("[artifacts.containerd]\nversion = \"2.1.5\"", "[artifacts.containerd]\nversion = \"2.1.4\"", 1);
    assert_ne!(repinned, text, "debian-1.34.toml no longer pins containerd 2.1.5 right after [artifacts.containerd]");
    let other = dir.path().join("profiles/other-containerd.toml");
    fs::write(&other, repinned).unwrap();
    let o = mirror_cmd(&other, None);
    assert_eq!(o.status.code(), Some(1), "containerd 2.1.4: {}", stderr(&o));
    assert!(
        stderr(&o).contains("pins containerd 2.1.4, but tests/k8s/build builds containerd-v2.1.5-"),
        "containerd 2.1.4: {}",
        stderr(&o)
    );
}
