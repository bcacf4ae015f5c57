//! `kiln pin`: reads checksum files from a loopback mirror and edits profiles in place.

mod common;

use common::*;
use kiln::inputs::profile::{Arch, Install, Profile};
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
                let file = s.mirror.root().join(kiln::mirror_path::url_path(&a.url).trim_start_matches('/'));
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
        let file = s.mirror.root().join(kiln::mirror_path::url_path(&a.url).trim_start_matches('/'));
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

/// The profile's `[base_image]` as (version, sha256).
fn base_image(path: &std::path::Path) -> (String, String) {
    let p = Profile::load(path).unwrap();
    let b = p.doc.base_image.as_ref().unwrap().get_ref();
    (b.version.get_ref().clone(), b.sha256.get_ref().clone())
}

/// Publishes a stand-in base image at the URL `profile`'s `[base_image]` has for `version`.
fn publish_base(s: &Scratch, profile: &str, version: &str, with_sha256_file: bool) -> (String, String) {
    let p = Profile::load(&s.profile(profile)).unwrap();
    let b = p.doc.base_image.as_ref().unwrap().get_ref();
    let url = kiln::inputs::profile::expand_url(b.url.get_ref(), version, Arch::Arm64);
    let path = kiln::mirror_path::url_path(&url).to_string();
    let data = format!("{profile} {version} base image (stand-in)\n").into_bytes();
    let h = standin::publish(s.mirror.root(), &path, &data, true);
    if !with_sha256_file {
        std::fs::remove_file(s.mirror.root().join(format!("{}.sha256", path.trim_start_matches('/')))).unwrap();
    }
    (path, h)
}

/// `kiln pin --base-image-version` moves a card profile to a new OS release and
/// pins it from the publisher's checksum file: Raspberry Pi OS's `URL.sha256`,
/// Ubuntu's `SHA256SUMS` (`HASH *FILE`); `--base-image` re-pins the current
/// version; a placeholder sha256 is pinned without a flag; a missing checksum
/// names every URL tried and leaves the profile unchanged; the flags on a
/// profile without `[base_image]` are a usage error.
#[test]
fn pin_repins_the_base_image_from_the_publishers_checksum_file() {
    let s = Scratch::new(&["rpi-raspios-1.34", "rpi-ubuntu-1.34", "flatcar-1.34"]);
    let pin = |name: &str, extra: &[&str]| {
        run(kiln().arg("pin").arg(s.profile(name)).args(["--base-url", s.mirror.url()]).args(extra))
    };
    // Raspberry Pi OS: `URL.sha256` holding `HASH  FILE`.
    let raspios = s.profile("rpi-raspios-1.34");
    let (_, h) = publish_base(&s, "rpi-raspios-1.34", "2025-10-01", true);
    let o = pin("rpi-raspios-1.34", &["--base-image-version", "2025-10-01"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(base_image(&raspios), ("2025-10-01".to_string(), h.clone()));
    let diff = String::from_utf8_lossy(&o.stdout);
    assert!(diff.contains("+version = \"2025-10-01\"") && diff.contains(&format!("+sha256 = \"{h}\"")), "{diff}");

    // Ubuntu: no `.sha256`; `SHA256SUMS` in the release directory, binary-mode lines.
    let ubuntu = s.profile("rpi-ubuntu-1.34");
    let (path, h) = publish_base(&s, "rpi-ubuntu-1.34", "24.04.4", false);
    let (dir, file) = path.trim_start_matches('/').rsplit_once('/').unwrap();
    let other = "0".repeat(64);
    let sums = format!("{other} *ubuntu-24.04.4-live-server-amd64.iso\n{h} *{file}\n");
    std::fs::write(s.mirror.root().join(dir).join("SHA256SUMS"), sums).unwrap();
    let before = std::fs::read_to_string(&ubuntu).unwrap();
    let o = pin("rpi-ubuntu-1.34", &["--base-image-version", "24.04.4", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&ubuntu).unwrap(), before, "--dry-run wrote");
    let o = pin("rpi-ubuntu-1.34", &["--base-image-version", "24.04.4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(base_image(&ubuntu), ("24.04.4".to_string(), h.clone()));

    // --base-image at the current version reads the checksum again.
    let text = std::fs::read_to_string(&ubuntu).unwrap().replace(&h, &"a".repeat(64));
    std::fs::write(&ubuntu, text).unwrap();
    let o = pin("rpi-ubuntu-1.34", &["--base-image"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(base_image(&ubuntu).1, h);
    // A placeholder sha256 is pinned by a plain `kiln pin`.
    let text = std::fs::read_to_string(&ubuntu).unwrap().replace(&h, "TODO");
    std::fs::write(&ubuntu, text).unwrap();
    let o = pin("rpi-ubuntu-1.34", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(base_image(&ubuntu).1, h);

    // A release nobody published: both checksum files named, nothing written.
    let before = std::fs::read_to_string(&ubuntu).unwrap();
    let o = pin("rpi-ubuntu-1.34", &["--base-image-version", "24.04.9"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("24.04.9") && err.contains(".img.xz.sha256") && err.contains("SHA256SUMS"), "{err}");
    assert_eq!(std::fs::read_to_string(&ubuntu).unwrap(), before);

    // No [base_image]: the flag is a usage error.
    let o = pin("flatcar-1.34", &["--base-image"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no [base_image]"), "{}", stderr(&o));
}

/// A `--version` nobody published: the error names every missing checksum
/// (kubeadm, kubelet and kubectl for each architecture), not only the first.
#[test]
fn pin_names_every_missing_checksum() {
    let s = Scratch::new(&["flatcar-1.34"]);
    let path = s.profile("flatcar-1.34");
    let before = std::fs::read_to_string(&path).unwrap();
    let o = run(kiln().args(["pin", "--version", "v1.34.9", "--base-url", s.mirror.url()]).arg(&path));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    let p = Profile::load(&path).unwrap();
    for arch in p.architectures() {
        for name in ["kubeadm", "kubelet", "kubectl"] {
            let want = format!("/release/v1.34.9/bin/linux/{arch}/{name}.sha256");
            assert!(err.contains(&want), "{want} not named:\n{err}");
        }
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    // A version without `v` is refused with the spelling, as in profiles and cluster init.
    let o = run(kiln().args(["pin", "--version", "1.34.3", "--base-url", s.mirror.url()]).arg(&path));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("write \"v1.34.3\""), "{}", stderr(&o));
}
