//! `kiln pin` against the real OCI registry (distribution v3, built by
//! `tests/k8s/build`; `kiln_testkit::registry`) with token auth as
//! registry.k8s.io, ghcr.io and Docker Hub do it: the images of the profile's
//! `[cni_manifest]` (the test images `tests/k8s/images` makes, and one
//! amd64+arm64 index) resolve to the digests the registry stores, through the
//! 401 challenge and the kit's token server; `kiln check` then refuses the
//! architecture an image lacks, also when the registry drops it from an index.
//!
//! Needs `KILN_K8S_BIN_REGISTRY` and the programs of the test images (see
//! tests/registry_kit.rs), set by `./scripts/test`; missing, the test fails
//! with the build commands.

mod common;

use common::*;
use kiln_testkit::registry::{self, Auth, Config, Fault, Via};
use sha2::{Digest, Sha256};

fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn manifest(images: &[String]) -> String {
    let mut y =
        String::from("apiVersion: apps/v1\nkind: DaemonSet\nspec:\n  template:\n    spec:\n      containers:\n");
    for (i, img) in images.iter().enumerate() {
        y.push_str(&format!("      - name: c{i}\n        image: \"{img}\"\n"));
    }
    y
}

#[test]
fn kiln_pin_resolves_the_cni_manifests_images_against_the_real_registry_with_token_auth() {
    let s = Scratch::new(&["debian-1.34"]);
    let (reg, images) =
        ok(registry::with_test_images(&s.path("kit"), Config { auth: Auth::Token, redirect_blobs: true }));
    let pause = images.iter().find(|i| i.repository == "pause").expect("the pause image");
    let arm64 = ok(registry::tiny_archive(&s.path("arm64.tar"), "arm64"));
    let multi_digest = ok(reg.push_multi_platform(&[&pause.archive, &arm64], "cni/multi:v1"));
    let refs: Vec<String> = images.iter().map(|i| format!("{}/{}:{}", reg.host(), i.repository, i.tag)).collect();
    let multi = format!("{}/cni/multi:v1", reg.host());

    std::fs::create_dir_all(s.path("profiles/cni")).expect("cni dir");
    let file = s.path("profiles/cni/cni.yaml");
    let p = s.profile("debian-1.34");
    let base = std::fs::read_to_string(&p).expect("profile");
    let with_manifest = |images: &[String]| {
        let text = manifest(images);
        let sha = kiln::hash::hex(&Sha256::digest(text.as_bytes()));
        std::fs::write(&file, &text).expect("manifest");
        std::fs::write(&p, format!("{base}\n[cni_manifest]\npath = \"cni/cni.yaml\"\nsha256 = \"{sha}\"\n"))
            .expect("profile");
    };
    let pin = || run(kiln().arg("pin").arg("--profile").arg(&p).arg("--base-url").arg(s.mirror.url()));
    let check = || run(kiln().arg("check").arg(&p));

    let mut all = refs.clone();
    all.push(multi.clone());
    with_manifest(&all);
    let o = pin();
    assert!(o.status.success(), "{}\n{}", stderr(&o), reg.log_text());
    let text = std::fs::read_to_string(&p).expect("profile");
    let doc: toml::Table = toml::from_str(&text).expect("pinned profile");
    for (i, r) in images.iter().zip(&refs) {
        let rec = &doc["cni_images"][r.as_str()];
        assert_eq!(rec["digest"].as_str(), Some(i.index_digest.as_str()), "{r}:\n{text}");
        assert_eq!(rec["platforms"].as_array().map(|a| a.len()), Some(1), "{r}: {rec}");
        assert_eq!(rec["platforms"][0].as_str(), Some("linux/amd64"), "{r}");
    }
    assert_eq!(doc["cni_images"][multi.as_str()]["digest"].as_str(), Some(multi_digest.as_str()));
    let hits = reg.hits();
    let tokens = hits.iter().filter(|h| h.via == Via::TokenServer && h.status == 200).count();
    assert!(tokens >= all.len(), "one token per repository through the challenge: {hits:?}");
    assert!(hits.iter().any(|h| h.via == Via::Front && h.status == 401 && !h.authorization), "{hits:?}");
    assert!(hits.iter().all(|h| h.status != 200 || h.via != Via::Front || h.authorization), "{hits:?}");

    // Every test image is amd64 only: the arm64 half of the profile is refused, the multi-platform image is not.
    let o = check();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let bad: Vec<&str> = err.lines().filter(|l| l.contains("cni-image-arch")).collect();
    assert_eq!(bad.len(), refs.len(), "{err}");
    for r in &refs {
        assert!(bad.iter().any(|l| l.contains(&format!("`{r}` has no linux/arm64 build"))), "{r}: {err}");
    }

    // Only the multi-platform image: clean; then the registry publishes it without arm64, and the re-pin is refused.
    with_manifest(std::slice::from_ref(&multi));
    assert!(pin().status.success());
    let o = check();
    assert!(o.status.success(), "{}", stderr(&o));
    reg.fault(Fault::DropPlatform("arm64".into()));
    let o = pin();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = check();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("`{multi}` has no linux/arm64 build")), "{err}");
}
