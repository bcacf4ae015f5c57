//! The profile's `images` through the real `kiln` binary (issue 23, C1/C3):
//! `kiln check` refuses what a build could not bake, `kiln pin` writes the
//! digests, `kiln build` fetches and verifies every blob (exit 3 and nothing
//! in dist/ on a corrupt one), `kiln mirror` fills an OCI layout that
//! `kiln build --mirror DIR --offline` and `kiln pin --base-url DIR` read.

mod common;
mod images_kit;

use common::{kiln, run, stderr, Scratch};
use images_kit::{Fault, Registry};
use std::path::Path;

const PROFILE: &str = "flatcar-1.34";

/// `kiln pin` of the scratch profile: its artifacts from the stand-in mirror, its images from `reg`.
fn pin(s: &Scratch, p: &Path, reg: &Registry) {
    let o = run(kiln().arg("pin").arg(p).arg("--base-url").arg(s.mirror.url()).arg("--registry-mirror").arg(reg.url()));
    assert!(o.status.success(), "{}", stderr(&o));
}

fn line_of(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path).unwrap().lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn kiln_check_refuses_an_unpinned_a_duplicate_and_a_missing_kubeadm_image_at_file_line_col() {
    let s = Scratch::new(&[]);
    let images = images_kit::kubeadm_v1_34(&["amd64"], 16);
    let mut entries: Vec<String> = images.iter().filter(|i| i.repo != "etcd").map(|i| i.pin()).collect();
    entries[0] = "registry.k8s.io/kube-apiserver:v1.34.2".into();
    entries.push(images[5].pin());
    let p = s.with_images(PROFILE, &entries);
    let o = run(kiln().arg("check").arg(&p));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let shown = p.display().to_string();
    let api = line_of(&p, "kube-apiserver:v1.34.2\"");
    assert!(err.contains(&format!("{shown}:{api}:3: image `registry.k8s.io/kube-apiserver:v1.34.2` is not pinned by digest; run `kiln pin {shown}`")), "{err}");
    let dup = line_of(&p, "pause") + 1;
    assert!(err.contains(&format!("{shown}:{dup}:3: image `registry.k8s.io/pause:3.10.1` is listed twice")), "{err}");
    assert!(err.contains("`images` lacks registry.k8s.io/etcd:3.6.5-0, which kubeadm v1.34.2 runs"), "{err}");
    // A malformed entry is refused where the profile is parsed.
    let p = s.with_images(PROFILE, &["pause:3.10.1".to_string()]);
    let o = run(kiln().arg("check").arg(&p));
    let at = line_of(&p, "\"pause:3.10.1\"");
    assert!(
        stderr(&o).contains(&format!("{}:{at}:3: images: image `pause:3.10.1` is not fully qualified", p.display())),
        "{}",
        stderr(&o)
    );
}

#[test]
fn kiln_pin_writes_each_index_digest_and_adds_kubeadms_missing_images() {
    let s = Scratch::new(&[PROFILE]);
    let images = images_kit::kubeadm_v1_34(&["amd64", "arm64"], 1024);
    let reg = Registry::start(&images, true, true);
    let p = s.with_images(
        PROFILE,
        &["registry.k8s.io/kube-apiserver:v1.34.2".into(), "registry.k8s.io/etcd:3.5.0-0".into()],
    );
    pin(&s, &p, &reg);
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains("# The cluster's images.\nimages = [\n"), "{text}");
    for img in images.iter().filter(|i| i.repo != "kube-proxy") {
        assert!(text.contains(&format!("  \"{}\",\n", img.pin())), "{} missing:\n{text}", img.pin());
    }
    assert!(!text.contains("kube-proxy"), "kube-proxy is left to the profile: {text}");
    assert!(!text.contains("3.5.0-0"), "etcd follows kubeadm's tag: {text}");
    let o = run(kiln().arg("check").arg(&p));
    assert!(o.status.success(), "{}", stderr(&o));
    // An image without a build for the profile's architecture is refused, the profile unchanged.
    let amd_only = images_kit::Image::synthetic("pause", "3.10.1", &["arm64"], 1, 10, None);
    reg.push(&amd_only);
    let o =
        run(kiln().arg("pin").arg(&p).arg("--base-url").arg(s.mirror.url()).arg("--registry-mirror").arg(reg.url()));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("registry.k8s.io/pause:3.10.1")
            && stderr(&o).contains("has no build for linux/amd64 (it has linux/arm64/v8)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
}

#[test]
fn kiln_build_fetches_the_images_and_fails_closed_on_a_corrupt_layer() {
    let s = Scratch::new(&[PROFILE]);
    let images = images_kit::kubeadm_v1_34(&["amd64"], 256 << 10);
    let reg = Registry::start(&images, true, true);
    let p = s.with_images(PROFILE, &images.iter().map(|i| i.pin()).collect::<Vec<_>>());
    pin(&s, &p, &reg);
    let bad = images[6].archs["amd64"].2[1].clone();
    reg.fault(&bad, Fault::Corrupt);
    let o = run(s.build_cmd_path(&p, "cache", "dist").args(["--format", "tar", "--registry-mirror", reg.url()]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("checksum mismatch for registry.k8s.io/etcd:3.6.5-0 (amd64) layer"), "{}", stderr(&o));
    assert!(!s.path("dist").exists(), "a failed build left dist/");
    assert!(!s.path("cache/sha256").join(bad.trim_start_matches("sha256:")).exists(), "the corrupt layer was cached");
    reg.clear();
    let o = run(s.build_cmd_path(&p, "cache", "dist").args(["--format", "tar", "--registry-mirror", reg.url()]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("images (amd64): 7 image(s)"), "{}", stderr(&o));
    assert!(s.path("cache/sha256").join(bad.trim_start_matches("sha256:")).exists());
}

#[test]
fn kiln_mirror_fills_an_oci_layout_that_an_offline_build_and_pin_read() {
    let s = Scratch::new(&[PROFILE]);
    let images = images_kit::kubeadm_v1_34(&["amd64", "arm64"], 4096);
    let p = s.with_images(PROFILE, &images.iter().map(|i| i.pin()).collect::<Vec<_>>());
    let m = s.path("site-mirror");
    {
        let reg = Registry::start(&images, true, true);
        pin(&s, &p, &reg);
        let o = run(kiln()
            .arg("mirror")
            .arg(&p)
            .arg("--out")
            .arg(&m)
            .arg("--mirror")
            .arg(s.mirror.url())
            .arg("--registry-mirror")
            .arg(reg.url())
            .arg("--cache")
            .arg(s.path("mcache")));
        assert!(o.status.success(), "{}", stderr(&o));
        let table = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(table.contains("oci/blobs/sha256/"), "{table}");
    }
    assert_eq!(std::fs::read_to_string(m.join("oci/oci-layout")).unwrap(), r#"{"imageLayoutVersion":"1.0.0"}"#);
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(m.join("oci/index.json")).unwrap()).unwrap();
    let listed = index["manifests"].as_array().unwrap();
    assert_eq!(listed.len(), 7);
    assert_eq!(listed[0]["annotations"]["io.containerd.image.name"], "registry.k8s.io/coredns/coredns:v1.12.1");
    assert_eq!(listed[0]["annotations"]["org.opencontainers.image.ref.name"], "v1.12.1");
    // Every architecture the profile lists (amd64 only), not the others the index names.
    let blob = |d: &str| m.join("oci/blobs/sha256").join(d.trim_start_matches("sha256:"));
    for img in &images {
        let (manifest, config, layers) = &img.archs["amd64"];
        for d in [&img.index, manifest, config].into_iter().chain(layers) {
            assert!(blob(d).is_file(), "{d}");
        }
        assert!(!blob(&img.archs["arm64"].0).exists());
    }
    // No registry now: a fresh cache, the mirror directory only.
    let o =
        run(s.build_cmd_upstream(&[&p], "cache2", "dist").args(["--format", "tar", "--offline", "--mirror"]).arg(&m));
    assert!(o.status.success(), "{}", stderr(&o));
    let profile = kiln::inputs::profile::Profile::load(&p).unwrap();
    let mut doc: toml_edit::DocumentMut = profile.text.parse().unwrap();
    let fetch = kiln::inputs::fetch::FetchOptions::default();
    let agent = kiln::inputs::fetch::agent(fetch.timeout);
    let base = m.to_str().unwrap();
    let resolve = kiln::inputs::image_pin::Resolve {
        version: None,
        base_url: Some(base),
        registry_mirror: None,
        fetch: &fetch,
        agent: &agent,
    };
    kiln::inputs::image_pin::pin_images(&profile, &mut doc, &resolve, &kiln::progress::Progress::quiet()).unwrap();
    assert_eq!(doc.to_string(), profile.text, "pinning from the mirror's layout changed the pins");
}

/// Measured, not asserted on time: `kiln build` of a profile pinning the real
/// programs' images (`tests/k8s/images v1.34.2 amd64 DIR`, named by
/// `KILN_K8S_IMAGES_DIR`) from the loopback registry (token auth, blob
/// redirects), cold (empty cache) and warm (`--force`, every blob cached).
#[test]
fn the_real_program_images_are_fetched_cold_and_warm() {
    let Some(dir) = std::env::var_os("KILN_K8S_IMAGES_DIR") else {
        println!("NOT CHECKED: set KILN_K8S_IMAGES_DIR to a `tests/k8s/images v1.34.2 amd64 DIR` output");
        return;
    };
    let mut images = images_kit::from_archives(Path::new(&dir));
    if !images.iter().any(|i| i.repo == "coredns/coredns") {
        println!("coredns is not built: a synthetic 75 MB single-layer stand-in takes its place");
        images.push(images_kit::Image::synthetic("coredns/coredns", "v1.12.1", &["amd64"], 1, 75 << 20, None));
    }
    let s = Scratch::new(&[PROFILE]);
    let reg = Registry::start(&images, true, true);
    pin(&s, &s.profile(PROFILE), &reg);
    let p = s.with_images(PROFILE, &images.iter().map(|i| i.pin()).collect::<Vec<_>>());
    for (run_name, cache) in [("cold", "cache"), ("warm", "cache")] {
        let o = run(s.build_cmd_path(&p, cache, "dist").args([
            "--format",
            "tar",
            "--force",
            "--registry-mirror",
            reg.url(),
        ]));
        let err = stderr(&o);
        assert!(o.status.success(), "{err}");
        let line = err.lines().find(|l| l.contains("images (amd64):")).unwrap_or_default();
        println!("{run_name}: {line}");
    }
}
