//! systemd-sysext images and Ignition image configs, checked by unsquashfs,
//! systemd-dissect, systemd-sysext and ignition-validate.

mod common;

use common::*;
use kiln_testkit::standin::sha256;
use std::path::Path;
use std::process::Command;

fn build(s: &Scratch, name: &str, out: &str, extra: &[&str]) {
    build_with_cache(s, name, "cache", out, extra)
}

fn build_with_cache(s: &Scratch, name: &str, cache: &str, out: &str, extra: &[&str]) {
    let o = run(s.build_cmd_bare(name, cache, out).args(extra));
    assert!(o.status.success(), "{}", stderr(&o));
}

fn ok(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn validate(ign: &Path) {
    ok(Command::new("ignition-validate").arg(ign));
}

#[test]
fn sysext_image_lists_dissects_merges_and_is_reproducible() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    build(&s, "flatcar-1.34", "a", &["--format", "sysext"]);
    build_with_cache(&s, "flatcar-1.34", "cache-b", "b", &["--format", "sysext"]);
    let raw = "kubernetes-v1.34.2-flatcar-1.34-amd64.raw";
    let a = std::fs::read(s.path(&format!("a/{raw}"))).unwrap();
    assert!(a == std::fs::read(s.path(&format!("b/{raw}"))).unwrap(), "two sysext builds differ");
    assert_eq!(files_in(&s.path("a")), ["SHA256SUMS", "kubernetes-v1.34.2-flatcar-1.34-amd64.raw", "manifest.json"]);

    // unsquashfs lists the expected tree, all owned by root.
    let listing = ok(Command::new("unsquashfs").args(["-lln", "-d", ""]).arg(s.path(&format!("a/{raw}"))));
    for path in [
        "/usr/bin/kubelet",
        "/usr/bin/kubeadm",
        "/usr/bin/kubectl",
        "/usr/bin/crictl",
        "/usr/bin/kiln-firstboot",
        "/usr/libexec/kiln/cni/bridge",
        "/usr/lib/systemd/system/kubelet.service",
        "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
        "/usr/lib/systemd/system/multi-user.target.d/10-kiln-kubelet.conf",
        "/usr/lib/extension-release.d/extension-release.kubernetes",
        "/usr/lib/extension-release.d/extension-release.kubernetes-v1.34.2-flatcar-1.34-amd64",
    ] {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(" {path}")))
            .unwrap_or_else(|| panic!("{path} missing:\n{listing}"));
        assert!(line.contains(" 0/0 "), "{line}");
        if path.starts_with("/usr/bin/") {
            assert!(line.starts_with("-rwxr-xr-x"), "{line}");
        }
    }
    assert!(!listing.contains("/etc/") && !listing.contains("/opt/") && !listing.contains("os-release"), "{listing}");
    // The binaries are the pinned artifacts, byte for byte.
    let x = s.path("x");
    ok(Command::new("unsquashfs").arg("-q").arg("-d").arg(&x).arg(s.path(&format!("a/{raw}"))));
    let p = kiln::inputs::profile::Profile::load(&s.profile("flatcar-1.34")).unwrap();
    let kubelet =
        p.artifacts_for(kiln::inputs::profile::Arch::Amd64).unwrap().into_iter().find(|a| a.name == "kubelet").unwrap();
    assert_eq!(sha256(&std::fs::read(x.join("usr/bin/kubelet")).unwrap()), kubelet.sha256);
    let unit = std::fs::read_to_string(x.join("usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS"), "{unit}");
    let release = std::fs::read_to_string(x.join("usr/lib/extension-release.d/extension-release.kubernetes")).unwrap();
    assert_eq!(release, "ID=_any\nARCHITECTURE=x86-64\nEXTENSION_RELOAD_MANAGER=1\n");

    // systemd-dissect recognises a system extension with kiln's release fields
    // under its deployed name (/etc/extensions/kubernetes.raw) and under its own
    // file name, as served from dist/.
    let link = s.path("kubernetes.raw");
    std::os::unix::fs::symlink(s.path(&format!("a/{raw}")), &link).unwrap();
    for image in [link.clone(), s.path(&format!("a/{raw}"))] {
        let j: serde_json::Value =
            serde_json::from_str(&ok(Command::new("systemd-dissect").arg("--json=short").arg(&image))).unwrap();
        assert_eq!(j["useSystemExtension"], true, "{}: {j}", image.display());
        let fields: Vec<&str> = j["extensionRelease"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
        assert_eq!(fields, ["ID=_any", "ARCHITECTURE=x86-64", "EXTENSION_RELOAD_MANAGER=1"], "{}", image.display());
        assert_eq!(j["mounts"][0]["fstype"], "squashfs");
    }

    // Merge it for real over a scratch root in a private mount namespace.
    let root = s.path("root");
    for d in ["usr/lib", "usr/bin", "etc/extensions", "opt/extensions/kubernetes"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/etc/os-release", root.join("usr/lib/os-release")).unwrap();
    // Deployed under its extension name. (The Ignition config links
    // /etc/extensions/kubernetes.raw to the versioned file; Debian 12's
    // systemd 252 does not list symlinked images under --root, so the test
    // copies the file to that name instead.)
    std::fs::copy(s.path(&format!("a/{raw}")), root.join("etc/extensions/kubernetes.raw")).unwrap();
    let r = root.display();
    let script = format!(
        "set -e; mount -t tmpfs tmpfs /run; mount --bind {r} {r}; mount --make-shared {r}; \
         mount --bind {r}/usr {r}/usr; mount --make-shared {r}/usr; \
         systemd-sysext --root={r} merge; sha256sum {r}/usr/bin/kubelet; cat {r}/usr/lib/extension-release.d/extension-release.kubernetes; \
         if touch {r}/usr/bin/x 2>/dev/null; then echo usr-writable; fi"
    );
    let o = Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "merge failed: {out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains(&kubelet.sha256), "{out}");
    assert!(out.contains("EXTENSION_RELOAD_MANAGER=1"), "{out}");
    assert!(!out.contains("usr-writable"), "merged /usr is writable: {out}");
    // Outside the namespace nothing was changed.
    assert!(!root.join("usr/bin/kubelet").exists());
}

#[test]
fn ignition_image_configs_validate_in_both_modes_and_per_machine() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let base = "https://images.example.test/kiln";
    build(&s, "flatcar-1.34", "sx", &["--format", "sysext", "--format", "ignition", "--base-url", base]);
    build(&s, "flatcar-1.34", "fm", &["--format", "ignition", "--ignition-mode", "files", "--base-url", base]);
    let p = kiln::inputs::profile::Profile::load(&s.profile("flatcar-1.34")).unwrap();
    let arts = p.artifacts_for(kiln::inputs::profile::Arch::Amd64).unwrap();

    // sysext mode: the image from --base-url with its hash, the extensions link, units.
    let ign = s.path("sx/flatcar-1.34-amd64.ign");
    validate(&ign);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&ign).unwrap()).unwrap();
    let raw = s.path("sx/kubernetes-v1.34.2-flatcar-1.34-amd64.raw");
    let files = v["storage"]["files"].as_array().unwrap();
    let image = files
        .iter()
        .find(|f| f["path"] == "/opt/extensions/kubernetes/kubernetes-v1.34.2-flatcar-1.34-amd64.raw")
        .expect("sysext file");
    assert_eq!(image["contents"]["source"], format!("{base}/kubernetes-v1.34.2-flatcar-1.34-amd64.raw"));
    assert_eq!(image["contents"]["verification"]["hash"], format!("sha256-{}", sha256(&std::fs::read(&raw).unwrap())));
    let link = &v["storage"]["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["path"] == "/etc/extensions/kubernetes.raw")
        .cloned()
        .unwrap();
    assert_eq!(link["target"], "/opt/extensions/kubernetes/kubernetes-v1.34.2-flatcar-1.34-amd64.raw");
    let units: Vec<(String, bool)> = v["systemd"]["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["name"].as_str().unwrap().to_string(), u["enabled"] == true))
        .collect();
    assert!(
        units.contains(&("systemd-sysext.service".into(), true))
            && units.contains(&("kiln-firstboot.service".into(), true)),
        "{units:?}"
    );
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    for want in [
        "/etc/kiln/image.toml",
        "/etc/sysctl.d/90-kiln-kubernetes.conf",
        "/etc/modules-load.d/kiln-kubernetes.conf",
        "/etc/systemd/system/kiln-firstboot.service",
        "/etc/systemd/system/kiln-approve-csrs.service",
        "/etc/systemd/system/kiln-approve-csrs.timer",
    ] {
        assert!(paths.contains(&want), "{want} not in {paths:?}");
    }
    // Row 37: the serving-CSR approval, from the extension's /usr/bin, enabled at boot.
    let approve = decode(files.iter().find(|f| f["path"] == "/etc/systemd/system/kiln-approve-csrs.service").unwrap());
    assert!(approve.contains("ExecStart=/usr/bin/kiln-firstboot approve-csrs\n"), "{approve}");
    assert!(
        v["storage"]["links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["path"] == "/etc/systemd/system/timers.target.wants/kiln-approve-csrs.timer"
                && l["target"] == "/etc/systemd/system/kiln-approve-csrs.timer"),
        "{}",
        v["storage"]["links"]
    );
    assert!(!paths.iter().any(|p| p.starts_with("/opt/bin/") || p.starts_with("/usr/")), "{paths:?}");
    // Inline files decode to what the sysext layout needs: firstboot from /usr/bin.
    let unit = files.iter().find(|f| f["path"] == "/etc/systemd/system/kiln-firstboot.service").unwrap();
    let text = decode(unit);
    assert!(text.contains("ExecStart=/usr/bin/kiln-firstboot run"), "{text}");
    assert!(
        decode(files.iter().find(|f| f["path"] == "/etc/kiln/image.toml").unwrap()).contains("bin_dir = \"/usr/bin\"")
    );
    for f in files.iter().filter(|f| f["contents"]["source"].as_str().unwrap().starts_with("data:")) {
        assert_eq!(
            f["contents"]["verification"]["hash"],
            format!("sha256-{}", sha256(decode(f).as_bytes())),
            "{}",
            f["path"]
        );
    }

    // files mode: every binary from the mirror URL the build used (upstream
    // otherwise) with its pin; tarballs unpacked by a unit.
    let ign = s.path("fm/flatcar-1.34-amd64.ign");
    validate(&ign);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&ign).unwrap()).unwrap();
    let files = v["storage"]["files"].as_array().unwrap();
    for a in &arts {
        let url = kiln::mirror_path::rebase_url(s.mirror.url(), &a.url);
        let f = files.iter().find(|f| f["contents"]["source"] == url).unwrap_or_else(|| panic!("{url} not downloaded"));
        assert_eq!(f["contents"]["verification"]["hash"], format!("sha256-{}", a.sha256));
        // The pin is the hash of the real bytes the mirror serves.
        let served =
            std::fs::read(s.mirror.root().join(kiln::mirror_path::url_path(&a.url).trim_start_matches('/'))).unwrap();
        assert_eq!(sha256(&served), a.sha256);
        if a.name == "kubelet" {
            assert_eq!(f["path"], "/opt/bin/kubelet");
            assert_eq!(f["mode"], 0o755);
        }
    }
    let fb = files.iter().find(|f| f["path"] == "/opt/bin/kiln-firstboot").unwrap();
    assert_eq!(fb["contents"]["source"], format!("{base}/flatcar-1.34-kiln-firstboot-amd64"));
    assert_eq!(
        fb["contents"]["verification"]["hash"],
        format!("sha256-{}", sha256(&std::fs::read(s.path("fm/flatcar-1.34-kiln-firstboot-amd64")).unwrap()))
    );
    let unpack = v["systemd"]["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "kiln-unpack-artifacts.service")
        .unwrap();
    let c = unpack["contents"].as_str().unwrap();
    assert!(
        c.contains(
            "tar -xzf /opt/kiln/artifacts/crictl-v1.34.0-amd64.tar.gz -C /opt/bin --no-same-owner --no-anchored crictl"
        ),
        "{c}"
    );
    assert!(c.contains("-C /opt/cni/bin"), "{c}");

    // One config per machine: image config + node user-data, for every role.
    let cluster = s.path("cluster");
    let o = run(kiln()
        .args(["cluster", "init", "t", "--endpoint", "api.t.test", "--kubernetes-version", "v1.34.2", "--out"])
        .arg(&cluster));
    assert!(o.status.success(), "{}", stderr(&o));
    for mode in ["sx", "fm"] {
        for role in ["init", "control-plane", "join"] {
            let out = s.path(&format!("{mode}-{role}.ign"));
            let o = run(kiln()
                .args(["userdata", "--cluster"])
                .arg(&cluster)
                .args(["--role", role, "--image"])
                .arg(s.path(&format!("{mode}/flatcar-1.34-amd64.ign")))
                .arg("--out")
                .arg(&out));
            assert!(o.status.success(), "{}", stderr(&o));
            validate(&out);
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
            let paths: Vec<&str> =
                v["storage"]["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
            assert!(paths.contains(&"/etc/kiln/node.toml") && paths.contains(&"/etc/kiln/image.toml"), "{paths:?}");
            assert_eq!(paths.contains(&"/etc/kiln/pki/ca.key"), role != "join");
            let n = v["systemd"]["units"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|u| u["name"] == "kiln-firstboot.service")
                .count();
            assert_eq!(n, 1, "units merged by name");
        }
    }
}

fn decode(f: &serde_json::Value) -> String {
    use base64::Engine;
    let src = f["contents"]["source"].as_str().unwrap().strip_prefix("data:;base64,").unwrap();
    let b = base64::engine::general_purpose::STANDARD.decode(src).unwrap();
    if f["contents"]["compression"] == "gzip" {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&b[..]), &mut out).unwrap();
        out
    } else {
        String::from_utf8(b).unwrap()
    }
}

#[test]
fn a_sysext_build_refuses_writable_paths_under_usr() {
    let s = Scratch::new(&[]);
    let p = s.profile("rpi-1.34");
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "flex_volume_dir = \"/opt/libexec/kubernetes/kubelet-plugins/volume/exec/\"",
        "flex_volume_dir = \"/usr/libexec/kubernetes/kubelet-plugins/volume/exec/\"",
    );
    std::fs::write(&p, text).unwrap();
    // Fine as a tarball on a writable-/usr distro…
    let o = run(kiln().arg("check").arg(&p));
    assert!(o.status.success(), "{}", stderr(&o));
    // …refused as a sysext, which makes /usr read-only.
    let o = run(s.build_cmd_upstream(&[&p], "c", "d").args(["--offline", "--format", "sysext"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("[sysext-writable]") && stderr(&o).contains("rpi-1.34.toml:"), "{}", stderr(&o));
}

/// The build's log says the Ignition mode in the words of its flag, not Rust's
/// debug spelling (`(Sysext mode, …)`).
#[test]
fn the_build_log_names_the_ignition_mode_in_words() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let o = run(s.build_cmd_bare("flatcar-1.34", "cache", "dist").args([
        "--format",
        "ignition",
        "--base-url",
        "https://images.example.test/kiln",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("flatcar-1.34-amd64.ign (--ignition-mode sysext, Ignition spec 3.3.0)"), "{err}");
    assert!(!err.contains("Sysext mode"), "{err}");
}
