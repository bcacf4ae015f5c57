//! `[cni_manifest]`: pinned by path or URL like every artifact, written by
//! `kiln pin`, verified before it reaches the image (exit 3), and held against
//! `pod_subnet` by `kiln check` (a path) and `kiln build` (a URL, once fetched).

mod common;

use common::*;
use kiln_testkit::standin;

const FLANNEL: &str = "---\nkind: ConfigMap\napiVersion: v1\nmetadata:\n  name: kube-flannel-cfg\n  namespace: kube-flannel\ndata:\n  net-conf.json: |\n    {\n      \"Network\": \"10.244.0.0/16\",\n      \"Backend\": {\n        \"Type\": \"vxlan\"\n      }\n    }\n";
const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const URL_PATH: &str = "/flannel-io/flannel/releases/download/v0.27.4/kube-flannel.yml";

fn add_manifest(s: &Scratch, table: &str) {
    let p = s.profile("debian-1.34");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, format!("{text}\n[cni_manifest]\n{table}")).unwrap();
}

fn check(s: &Scratch) -> std::process::Output {
    run(kiln().arg("check").arg(s.profile("debian-1.34")))
}

fn tar_entry(s: &Scratch, out: &str) -> serde_json::Value {
    manifest_entry(&s.path(out), "debian-1.34", "amd64", "/etc/kiln/cni.yaml")
}

#[test]
fn a_manifest_by_path_is_pinned_verified_and_baked() {
    let s = Scratch::new(&["debian-1.34"]);
    std::fs::create_dir_all(s.path("profiles/cni")).unwrap();
    std::fs::write(s.path("profiles/cni/kube-flannel.yml"), FLANNEL).unwrap();
    add_manifest(&s, &format!("path = \"cni/kube-flannel.yml\"\nsha256 = \"{ZEROS}\"\n"));

    // A wrong pin fails closed: exit 3 (as a download that fails its sha256), in check and build.
    let o = check(&s);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("checksum mismatch for cni_manifest")
            && stderr(&o).contains(&standin::sha256(FLANNEL.as_bytes())),
        "{}",
        stderr(&o)
    );
    let o = run(&mut s.build_cmd("debian-1.34", "cache", "dist"));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));

    // `kiln pin` writes the manifest's sha256; then it checks and builds into the image.
    s.pin("debian-1.34");
    let text = std::fs::read_to_string(s.profile("debian-1.34")).unwrap();
    assert!(text.contains(&format!("sha256 = \"{}\"", standin::sha256(FLANNEL.as_bytes()))), "{text}");
    let o = check(&s);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&mut s.build_cmd("debian-1.34", "cache", "dist"));
    assert!(o.status.success(), "{}", stderr(&o));
    let e = tar_entry(&s, "dist");
    assert_eq!(e["sha256"], standin::sha256(FLANNEL.as_bytes()), "{e}");

    // The file changed after pinning: refused again.
    std::fs::write(s.path("profiles/cni/kube-flannel.yml"), FLANNEL.replace("vxlan", "host-gw")).unwrap();
    let o = run(&mut s.build_cmd("debian-1.34", "cache", "dist2"));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

#[test]
fn a_manifest_by_path_must_configure_pod_subnet() {
    let s = Scratch::new(&["debian-1.34"]);
    std::fs::create_dir_all(s.path("profiles/cni")).unwrap();
    std::fs::write(s.path("profiles/cni/kube-flannel.yml"), FLANNEL).unwrap();
    let sha = standin::sha256(FLANNEL.as_bytes());
    add_manifest(&s, &format!("path = \"cni/kube-flannel.yml\"\nsha256 = \"{sha}\"\npod_subnet = \"10.42.0.0/16\"\n"));
    let o = check(&s);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("flannel's net-conf.json \"Network\" is 10.244.0.0/16 but pod_subnet is 10.42.0.0/16"),
        "{err}"
    );
    assert!(err.contains(&format!("{}:", s.profile("debian-1.34").display())), "not located: {err}");

    // A manifest that sets no pod CIDR is a warning saying so.
    let none = "kind: DaemonSet\nmetadata:\n  name: some-cni\n";
    std::fs::write(s.path("profiles/cni/kube-flannel.yml"), none).unwrap();
    let p = s.profile("debian-1.34");
    let text = std::fs::read_to_string(&p).unwrap().replace(&sha, &standin::sha256(none.as_bytes()));
    std::fs::write(&p, text).unwrap();
    let o = check(&s);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("the CNI manifest sets no pod CIDR kiln can read"), "{}", stderr(&o));
}

#[test]
fn a_manifest_by_url_is_pinned_fetched_verified_and_checked_against_pod_subnet() {
    let s = Scratch::new(&["debian-1.34"]);
    standin::publish(s.mirror.root(), URL_PATH, FLANNEL.as_bytes(), false);
    add_manifest(&s, &format!("url = \"https://github.com{URL_PATH}\"\nsha256 = \"{ZEROS}\"\n"));

    // Pinned by the wrong sha256: the download fails its check, exit 3.
    let o = run(&mut s.build_cmd("debian-1.34", "cache", "dist"));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("cni-manifest"), "{}", stderr(&o));

    s.pin("debian-1.34");
    let text = std::fs::read_to_string(s.profile("debian-1.34")).unwrap();
    assert!(text.contains(&format!("sha256 = \"{}\"", standin::sha256(FLANNEL.as_bytes()))), "{text}");
    assert!(text.contains(&format!("size = {}", FLANNEL.len())), "{text}");
    let o = run(&mut s.build_cmd("debian-1.34", "cache", "dist"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(tar_entry(&s, "dist")["sha256"], standin::sha256(FLANNEL.as_bytes()));

    // Fetched, the manifest is held against pod_subnet before anything is written.
    let p = s.profile("debian-1.34");
    std::fs::write(&p, std::fs::read_to_string(&p).unwrap() + "pod_subnet = \"192.168.0.0/16\"\n").unwrap();
    let o = run(&mut s.build_cmd("debian-1.34", "cache", "dist3"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is 10.244.0.0/16 but pod_subnet is 192.168.0.0/16"), "{}", stderr(&o));
    assert!(!s.path("dist3/manifest.json").exists());
}

/// A manifest by url as large as the ones users apply (Calico's is ~300 KiB) is
/// pinned like one by path: the same cap ([`kiln::inputs::profile::CNI_MANIFEST_MAX`]),
/// not the 64 KiB of a checksum file.
#[test]
fn a_large_manifest_by_url_is_pinned_under_the_same_cap_as_a_path() {
    let s = Scratch::new(&["debian-1.34"]);
    let big = format!("{FLANNEL}{}", "# padding, as a long manifest's comments and CRDs are\n".repeat(6000));
    assert!(big.len() > 300 << 10);
    standin::publish(s.mirror.root(), URL_PATH, big.as_bytes(), false);
    add_manifest(&s, &format!("url = \"https://github.com{URL_PATH}\"\nsha256 = \"{ZEROS}\"\n"));
    s.pin("debian-1.34");
    let text = std::fs::read_to_string(s.profile("debian-1.34")).unwrap();
    assert!(text.contains(&format!("sha256 = \"{}\"", standin::sha256(big.as_bytes()))), "{text}");
    assert!(text.contains(&format!("size = {}", big.len())), "{text}");
}

/// The profile's `[cni_manifest] pod_subnet` is held to the rules cluster.toml's
/// `pod_subnet` is (`kiln cluster init --pod-subnet`, kubeadm's): a subnet no
/// cluster can have is refused at its `file:line:col`, not only a non-CIDR.
#[test]
fn the_profiles_pod_subnet_follows_cluster_tomls_rules() {
    let s = Scratch::new(&["debian-1.34"]);
    std::fs::create_dir_all(s.path("profiles/cni")).unwrap();
    std::fs::write(s.path("profiles/cni/kube-flannel.yml"), FLANNEL).unwrap();
    let sha = standin::sha256(FLANNEL.as_bytes());
    let base = std::fs::read_to_string(s.profile("debian-1.34")).unwrap();
    for (subnet, why) in [
        ("10.244.0.0/25", "narrower than one node's pod range (/24"),
        ("10.244.0.0/16,10.245.0.0/16", "give one CIDR, or two for dual-stack"),
        ("ten", "is not a CIDR like 10.244.0.0/16"),
    ] {
        std::fs::write(s.profile("debian-1.34"), &base).unwrap();
        add_manifest(&s, &format!("path = \"cni/kube-flannel.yml\"\nsha256 = \"{sha}\"\npod_subnet = \"{subnet}\"\n"));
        let o = check(&s);
        assert_eq!(o.status.code(), Some(2), "{subnet}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(why) && err.contains("cni_manifest: pod_subnet"), "{subnet}: {err}");
        assert!(err.contains(&format!("{}:", s.profile("debian-1.34").display())), "not located: {err}");
    }
}
