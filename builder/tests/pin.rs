//! `kiln pin`: reads checksum files from a loopback mirror and edits profiles in place.

mod common;

use common::*;
use kiln::profile::{Arch, Install, Profile};
use kiln_testkit::standin;

#[test]
fn pin_moves_to_a_new_version_keeping_layout_and_fails_closed() {
    let s = Scratch::new(&["flatcar-1.34"]);
    let path = s.profile("flatcar-1.34");
    let original = std::fs::read_to_string(&path).unwrap();
    // Publish v1.34.3 of the Kubernetes binaries on the mirror.
    let mut published = std::collections::BTreeMap::new();
    for name in ["kubeadm", "kubelet", "kubectl"] {
        let data = standin_for(name, Arch::Amd64, "v1.34.3", &Install::File { name: name.into() });
        let h = standin::publish(s.mirror.root(), &format!("/release/v1.34.3/bin/linux/amd64/{name}"), &data, false);
        published.insert(name, h);
    }

    // --dry-run prints the diff and writes nothing.
    let o = run(kiln()
        .args(["pin", "--dry-run", "--version", "v1.34.3", "--base-url", s.mirror.url(), "--profile"])
        .arg(&path));
    assert!(o.status.success(), "{}", stderr(&o));
    let diff = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(diff.contains("-kubernetes_version = \"v1.34.2\"\n+kubernetes_version = \"v1.34.3\""), "{diff}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), original);

    let o = run(kiln().args(["pin", "--version", "v1.34.3", "--base-url", s.mirror.url(), "--profile"]).arg(&path));
    assert!(o.status.success(), "{}", stderr(&o));
    let p = Profile::load(&path).unwrap();
    assert_eq!(p.version.to_string(), "v1.34.3");
    for a in p.artifacts_for(Arch::Amd64).unwrap() {
        match a.name.as_str() {
            "kubeadm" | "kubelet" | "kubectl" => {
                assert_eq!(a.version, "v1.34.3");
                assert_eq!(&a.sha256, &published[a.name.as_str()], "{}", a.name);
            }
            "crictl" => assert_eq!(a.version, "v1.34.0"),
            "cni-plugins" => {
                // CNI publishes `hash  filename`; the hash is what was taken.
                let file = s.mirror.root().join(kiln::fetch::url_path(&a.url).trim_start_matches('/'));
                assert_eq!(a.sha256, standin::sha256(&std::fs::read(file).unwrap()));
            }
            _ => {}
        }
    }
    // Only values changed (plus a pinned size per checksum): every comment in place.
    let now = std::fs::read_to_string(&path).unwrap();
    let without_sizes: Vec<&str> = now.lines().filter(|l| !l.starts_with("size.")).collect();
    assert_eq!(without_sizes.len(), original.lines().count());
    assert_eq!(
        now.lines().filter(|l| l.starts_with("size.")).count(),
        now.lines().filter(|l| l.starts_with("sha256.")).count(),
        "{now}"
    );
    for a in p.artifacts_for(Arch::Amd64).unwrap() {
        let file = s.mirror.root().join(kiln::fetch::url_path(&a.url).trim_start_matches('/'));
        assert_eq!(a.size, Some(std::fs::metadata(file).unwrap().len()), "{}", a.name);
    }
    for (a, b) in original.lines().zip(without_sizes) {
        if a.starts_with('#') || a.starts_with('[') {
            assert_eq!(a, b);
        }
    }

    // A missing checksum file: exit 1, the profile is left exactly as it was.
    let o = run(kiln().args(["pin", "--version", "v1.34.9", "--base-url", s.mirror.url(), "--profile"]).arg(&path));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("v1.34.9") && stderr(&o).contains("404"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), now);

    // A checksum file that is not one (an HTML error page) is refused.
    let sums = s.mirror.root().join("release/v1.34.3/bin/linux/amd64/kubelet.sha256");
    std::fs::write(&sums, "<html>oops</html>\n").unwrap();
    let o = run(kiln().args(["pin", "--base-url", s.mirror.url(), "--profile"]).arg(&path));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not start with a sha256"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), now);
}
