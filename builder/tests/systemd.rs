//! The rendered units pass `systemd-analyze verify` with the built tree as root.

mod common;

use common::*;
use std::process::Command;

#[test]
fn rendered_units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        panic!("systemd-analyze is missing: run ./scripts/test, which installs systemd");
    }
    let s = Scratch::new(&["flatcar-1.34", "rpi-1.34"]);
    for (name, arch) in [("flatcar-1.34", "amd64"), ("rpi-1.34", "arm64")] {
        s.pin(name);
        let o = run(&mut s.build_cmd(name, "cache", "dist"));
        assert!(o.status.success(), "{}", stderr(&o));
        let root = s.path(&format!("root-{name}"));
        std::fs::create_dir_all(&root).unwrap();
        let st = Command::new("tar")
            .arg("-xzf")
            .arg(s.path(&format!("dist/{name}-{arch}.tar.gz")))
            .arg("-C")
            .arg(&root)
            .status()
            .unwrap();
        assert!(st.success());
        // The image tree is layered on a distro: give the scratch root the
        // distro's units (this machine's systemd) and a containerd stand-in.
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        let st = Command::new("cp").args(["-a", "/usr/lib/systemd"]).arg(root.join("usr/lib/")).status().unwrap();
        assert!(st.success());
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::write(root.join("usr/bin/containerd"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(root.join("usr/bin/containerd"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::write(
            root.join("usr/lib/systemd/system/containerd.service"),
            "[Unit]\nDescription=containerd stand-in\n[Service]\nExecStart=/usr/bin/containerd\n",
        )
        .unwrap();
        let verify = || {
            Command::new("systemd-analyze")
                .arg("verify")
                .arg(format!("--root={}", root.display()))
                .args(
                    [
                        "kubelet.service",
                        "kiln-firstboot.service",
                        "kiln-approve-csrs.service",
                        "kiln-approve-csrs.timer",
                    ]
                    .iter()
                    .map(|u| format!("/etc/systemd/system/{u}")),
                )
                .output()
                .unwrap()
        };
        let o = verify();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "systemd-analyze verify failed for {name}:\n{err}");
        // verify resolves ExecStart inside the root: without our kubelet it fails,
        // so the pass above really checked /opt/bin/kubelet.
        std::fs::remove_file(root.join("opt/bin/kubelet")).unwrap();
        let o = verify();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains("/opt/bin/kubelet"), "{err}");
    }
}
