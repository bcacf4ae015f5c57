//! The containerd config kiln writes, read by the real containerd and
//! compared with the real kubeadm.
//!
//! `containerd --config FILE config dump` loads and migrates a config exactly as
//! containerd starts with it (containerd v2.1.5, `cmd/containerd/command/config.go`)
//! and prints the result as version 3, where the runc runtime's options live
//! under `plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options`
//! and the sandbox image under `plugins."io.containerd.cri.v1.images".pinned_images`.
//! The pause image kubeadm uses is what `kubeadm config images list` prints.
//!
//! Where the binaries are: `KILN_K8S_BIN_CONTAINERD` (containerd, ctr, the shim)
//! and `KILN_K8S_BIN_V1_34_2` / `_V1_33_6` (kubeadm), set by `./scripts/test`
//! from `tests/k8s/build`. Unset is a failure, never a skip.

use kiln::image::assemble::{assemble, Pins};
use kiln::image::containerd::{self, V2_CRI, V3_IMAGES, V3_RUNTIME};
use kiln::image::tree::{Content, Node};
use kiln::inputs::profile::{CgroupDriver, Profile};
use std::path::{Path, PathBuf};
use std::process::Command;

fn containerd_bin() -> PathBuf {
    let build = "tests/k8s/build v1.34.2 amd64 containerd && export KILN_K8S_BIN_CONTAINERD=$(tests/k8s/build --dir v1.34.2 amd64 containerd)";
    let dir = std::env::var_os("KILN_K8S_BIN_CONTAINERD").map(PathBuf::from).unwrap_or_else(|| {
        panic!("KILN_K8S_BIN_CONTAINERD is not set: the real containerd is needed. Build it and say where it is, from the workspace root:\n  {build}\n(./scripts/test does this)")
    });
    let bin = dir.join("containerd");
    assert!(bin.is_file(), "KILN_K8S_BIN_CONTAINERD={} has no containerd; build it:\n  {build}", dir.display());
    bin
}

fn kubeadm_bin(version: &str) -> PathBuf {
    let var = format!("KILN_K8S_BIN_{}", version.to_uppercase().replace('.', "_"));
    let build =
        format!("tests/k8s/build {version} amd64 && export {var}=$(tests/k8s/build --dir {version} amd64 node)");
    let dir = std::env::var_os(&var).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{var} is not set: the real kubeadm {version} is needed. Build it and say where it is, from the workspace root:\n  {build}\n(./scripts/test does this)")
    });
    let bin = dir.join("kubeadm");
    assert!(bin.is_file(), "{var}={} has no kubeadm; build it:\n  {build}", dir.display());
    bin
}

/// The pause image the real kubeadm `version` lists.
fn kubeadm_pause(version: &str) -> String {
    let o = Command::new(kubeadm_bin(version))
        .args(["config", "images", "list", "--kubernetes-version", version])
        .output()
        .unwrap_or_else(|e| panic!("kubeadm {version}: {e}"));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "kubeadm config images list: {text}{}", String::from_utf8_lossy(&o.stderr));
    let pause: Vec<&str> = text.lines().filter(|l| l.contains("/pause:")).collect();
    assert_eq!(pause.len(), 1, "kubeadm {version} listed {text}");
    pause[0].trim().to_string()
}

/// What the real containerd makes of `config` (written to a scratch file).
fn dump(config: &str) -> toml::Table {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, config).unwrap();
    // Its root and state stay in the scratch dir; `config dump` starts nothing.
    let o = Command::new(containerd_bin())
        .arg("--config")
        .arg(&file)
        .args(["--root"])
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .args(["config", "dump"])
        .output()
        .unwrap_or_else(|e| panic!("containerd: {e}"));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "containerd config dump of\n{config}\nfailed: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out.parse().unwrap_or_else(|e| panic!("containerd's dump is not TOML: {e}\n{out}"))
}

fn at<'a>(t: &'a toml::Table, path: &[&str]) -> Option<&'a toml::Value> {
    let (last, inner) = path.split_last()?;
    let mut t = t;
    for k in inner {
        t = t.get(*k)?.as_table()?;
    }
    t.get(*last)
}

/// (runc SystemdCgroup, sandbox image) as the running containerd would use them.
fn effective(config: &str) -> (Option<bool>, Option<String>) {
    let d = dump(config);
    let systemd = at(&d, &["plugins", V3_RUNTIME, "containerd", "runtimes", "runc", "options", "SystemdCgroup"])
        .and_then(|v| v.as_bool());
    let sandbox =
        at(&d, &["plugins", V3_IMAGES, "pinned_images", "sandbox"]).and_then(|v| v.as_str()).map(str::to_string);
    (systemd, sandbox)
}

/// `config` without the tables containerd 1.7 has no plugin for: what a
/// containerd 1.7 reads of a version-2 config.
fn without_version_3_tables(config: &str) -> String {
    let mut t: toml::Table = config.parse().unwrap();
    if let Some(toml::Value::Table(plugins)) = t.get_mut("plugins") {
        plugins.retain(|k, _| !k.starts_with("io.containerd.cri.v1."));
    }
    toml::to_string(&t).unwrap()
}

/// Checks one config kiln renders: the real containerd reads the cgroup
/// driver and sandbox image kiln meant, kiln's own reader agrees with it, and
/// a version-2 config says the same to a containerd that knows only the
/// version-2 CRI plugin (1.7), so nothing sits under a version-3 path.
fn assert_means(config: &str, systemd: bool, sandbox: &str, what: &str) {
    let (has_systemd, has_sandbox) = effective(config);
    assert_eq!(has_systemd, Some(systemd), "{what}: containerd reads SystemdCgroup = {has_systemd:?}:\n{config}");
    assert_eq!(has_sandbox.as_deref(), Some(sandbox), "{what}: containerd's sandbox image:\n{config}");
    let mine = containerd::read(config).unwrap_or_else(|e| panic!("{what}: kiln cannot read its own config: {e}"));
    assert_eq!(
        (mine.systemd_cgroup, mine.sandbox.as_deref()),
        (has_systemd, has_sandbox.as_deref()),
        "{what}: kiln's reader disagrees with containerd"
    );
    if mine.version < 3 {
        assert!(mine.misplaced.is_empty(), "{what}: version 2 with version-3 tables {:?}:\n{config}", mine.misplaced);
        let old = without_version_3_tables(config);
        assert_eq!(
            effective(&old),
            (Some(systemd), Some(sandbox.to_string())),
            "{what}: the version-2 CRI plugin alone (containerd 1.7) does not carry the settings:\n{config}"
        );
        let t: toml::Table = config.parse().unwrap();
        assert!(at(&t, &["plugins", V2_CRI]).is_some(), "{what}: no plugins.\"{V2_CRI}\":\n{config}");
    }
}

#[test]
fn containerd_reads_the_cgroup_driver_and_sandbox_of_every_config_version_kiln_writes() {
    let pause = kubeadm_pause("v1.34.2");
    for version in [2, 3] {
        for systemd in [true, false] {
            let config = kiln::image::render::containerd_config(version, systemd, Some(&pause));
            assert_means(&config, systemd, &pause, &format!("version {version}, SystemdCgroup {systemd}"));
        }
    }
}

fn shipped_profiles() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    assert!(v.len() >= 5, "{v:?}");
    v
}

#[test]
fn every_shipped_profiles_containerd_config_means_kubelets_driver_and_kubeadms_pause_to_containerd() {
    let mut checked = 0;
    for path in shipped_profiles() {
        let p = Profile::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let arch = p.architectures()[0];
        let tree =
            assemble(&p, arch, &p.formats(), Pins::Declared).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let Some(entry) = tree.get("/etc/containerd/config.toml") else {
            // The OS's containerd and its config (Flatcar): `[runtime] cgroup_driver` says which.
            assert!(
                p.doc.runtime.as_ref().is_some_and(|r| !r.manage_config),
                "{}: no containerd config",
                path.display()
            );
            continue;
        };
        let Node::File(Content::Inline(bytes)) = &entry.node else { panic!("{}: not an inline file", path.display()) };
        let config = String::from_utf8(bytes.clone()).unwrap();
        let kubeadm = p.artifact_version("kubeadm").unwrap();
        let pause = kubeadm_pause(&kubeadm);
        assert_eq!(kiln::image::render::pause_image(&p), Some(pause.as_str()), "{}", path.display());
        assert_means(&config, p.cgroup_driver() == CgroupDriver::Systemd, &pause, &path.display().to_string());
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} shipped profiles have a kiln-written containerd config");
}

#[test]
fn kilns_pause_table_is_the_real_kubeadms() {
    for version in ["v1.33.6", "v1.34.2"] {
        let v = kiln::inputs::version::kubernetes(version).unwrap();
        assert_eq!(
            containerd::kubeadm_pause_image(v.major, v.minor),
            Some(kubeadm_pause(version).as_str()),
            "kubeadm {version}"
        );
    }
}
