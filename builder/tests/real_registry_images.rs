//! kiln's image fetch against the REAL registry (issue 23): distribution v3
//! (`kiln_testkit::registry`: Bearer token auth, blob downloads redirected to a
//! second host, as registry.k8s.io serves them) holding the real programs'
//! images (`tests/k8s/images`: kube-apiserver, kube-controller-manager,
//! kube-scheduler, kube-proxy, etcd, CoreDNS and pause, built from their Go
//! modules).
//!
//! - `kiln pin` writes each image index digest the registry holds, `kiln build`
//!   fetches, verifies and bakes them (a second build in another directory,
//!   with another cache, gives the same bytes), and the real containerd imports the
//!   archive taken out of the built tarball with every reference at its pinned
//!   digest;
//! - each hostile registry (a corrupt layer, another manifest under the pinned
//!   digest, a body shorter or longer than declared, an index without the
//!   architecture, a trickle) fails closed, with nothing of it cached.
//!
//! Needs root, `KILN_K8S_BIN_REGISTRY`, `KILN_K8S_BIN_CONTAINERD` and the
//! built programs (`./scripts/test` builds them); without them each test fails
//! naming the build command, it never skips.

mod common;

use common::{kiln, run, stderr, Scratch};
use kiln::error::Kind;
use kiln::inputs::cache::Cache;
use kiln::inputs::fetch::FetchOptions;
use kiln::inputs::image_pins::ImagePin;
use kiln::inputs::images::fetch_images;
use kiln::inputs::profile::Arch;
use kiln::progress::Progress;
use kiln_testkit::registry::{self, Auth, Config, Fault, Registry, TestImage, Via};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const PROFILE: &str = "flatcar-1.34";

fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// The real registry with the real programs' images pushed, as registry.k8s.io serves them.
fn registry_with_images(dir: &Path) -> (Registry, Vec<TestImage>) {
    ok(registry::with_test_images(dir, Config { auth: Auth::Token, redirect_blobs: true }))
}

fn image<'a>(images: &'a [TestImage], repository: &str) -> &'a TestImage {
    images.iter().find(|i| i.repository == repository).unwrap_or_else(|| panic!("no {repository} test image"))
}

#[test]
fn kiln_pins_builds_and_bakes_the_real_registry_s_images_and_the_real_containerd_imports_them() {
    let bin = ok(kiln_testkit::containerd::bin_dir());
    let s = Scratch::new(&[PROFILE]);
    let (reg, images) = registry_with_images(&s.path("registry-kit"));
    // By tag: `kiln pin` resolves each through the registry.
    let p = s.with_images(PROFILE, &images.iter().map(|i| i.reference.clone()).collect::<Vec<_>>());
    let o =
        run(kiln().arg("pin").arg(&p).arg("--base-url").arg(s.mirror.url()).arg("--registry-mirror").arg(reg.url()));
    assert!(o.status.success(), "kiln pin: {}", stderr(&o));
    let text = std::fs::read_to_string(&p).unwrap();
    for i in &images {
        let pin = format!("{:?}", i.pin());
        assert!(text.contains(&pin), "kiln pin did not write {pin}:\n{text}");
    }
    let o = run(kiln().arg("check").arg(&p));
    assert!(o.status.success(), "kiln check: {}", stderr(&o));
    let t = Instant::now();
    let o = run(s.build_cmd_path(&p, "cache", "dist").args(["--format", "tar", "--registry-mirror", &reg.url()]));
    assert!(o.status.success(), "kiln build: {}", stderr(&o));
    eprintln!("kiln build (7 images from the real registry, cold): {:.1} s", t.elapsed().as_secs_f64());
    // Through the token challenge, and the layers from the blob host the registry redirected to.
    let hits = reg.hits();
    assert!(hits.iter().any(|h| h.via == Via::Front && h.status == 401), "no token challenge: {hits:?}");
    for i in &images {
        let layer = i.layer_digest.trim_start_matches("sha256:");
        assert!(
            hits.iter().any(|h| h.via == Via::BlobHost && h.target.contains(layer) && h.status == 200),
            "{}'s layer {layer} did not come from the blob host: {hits:?}",
            i.reference
        );
    }

    // The same bytes from a second build in another directory, with another cache.
    let tgz = s.path(&format!("dist/{PROFILE}-amd64.tar.gz"));
    let s2 = Scratch::new(&[PROFILE]);
    std::fs::copy(&p, s2.profile(PROFILE)).unwrap();
    let o = run(s2.build_cmd_path(&s2.profile(PROFILE), "other-cache", "other-dist").args([
        "--format",
        "tar",
        "--registry-mirror",
        &reg.url(),
    ]));
    assert!(o.status.success(), "the second kiln build: {}", stderr(&o));
    let tgz2 = s2.path(&format!("other-dist/{PROFILE}-amd64.tar.gz"));
    assert!(std::fs::read(&tgz).unwrap() == std::fs::read(&tgz2).unwrap(), "two builds gave different tarballs");
    let manifest = |d: &Path| std::fs::read(d.join("manifest.json")).unwrap();
    assert_eq!(manifest(&s.path("dist")), manifest(&s2.path("other-dist")), "two builds gave different manifest.json");

    // The archive the image carries, imported by the real containerd.
    let archive = s.path("images.oci.tar");
    let member = kiln::outputs::oci_layout::ARCHIVE_PATH.trim_start_matches('/');
    let out = Command::new("tar").arg("-xzOf").arg(&tgz).arg(member).output().unwrap();
    assert!(out.status.success(), "tar -xzOf {} {member}: {}", tgz.display(), String::from_utf8_lossy(&out.stderr));
    std::fs::write(&archive, &out.stdout).unwrap();
    let c = ok(kiln_testkit::containerd::Containerd::start(&bin, &s.path("containerd"), &[]));
    let o =
        c.ctr().args(["-n", "k8s.io", "images", "import", "--platform", "linux/amd64"]).arg(&archive).output().unwrap();
    assert!(o.status.success(), "ctr images import: {}", String::from_utf8_lossy(&o.stderr));
    let o = c.ctr().args(["-n", "k8s.io", "images", "ls"]).output().unwrap();
    let listed = String::from_utf8_lossy(&o.stdout);
    for i in &images {
        let line = listed.lines().find(|l| l.split_whitespace().next() == Some(i.reference.as_str()));
        let line = line.unwrap_or_else(|| panic!("ctr images ls has no {}:\n{listed}", i.reference));
        assert!(line.contains(&i.index_digest), "ctr images ls: {} is not at {}:\n{line}", i.reference, i.index_digest);
    }
}

/// `fetch_images` of every test image through the registry, with `deadline` for each blob.
fn fetch(reg: &Registry, images: &[TestImage], cache: &Cache, deadline: Duration) -> kiln::error::Result<usize> {
    let opts = FetchOptions {
        registry_mirror: Some(reg.url().to_string()),
        attempts: 2,
        backoff: Duration::from_millis(50),
        deadline,
        ..FetchOptions::default()
    };
    let pins: Vec<ImagePin> = images.iter().map(|i| ImagePin::parse(&i.pin()).unwrap()).collect();
    fetch_images(cache, &opts, &pins, Arch::Amd64, &Progress::quiet()).map(|v| v.len())
}

#[test]
fn each_hostile_registry_fails_closed_with_nothing_of_it_cached() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, images) = registry_with_images(&dir.path().join("registry-kit"));
    let etcd = image(&images, "etcd");
    let pause = image(&images, "pause");
    let cases: Vec<(&str, Fault, String, Kind, &str)> = vec![
        (
            "a corrupt layer",
            Fault::Corrupt(etcd.layer_digest.clone()),
            etcd.layer_digest.clone(),
            Kind::Verify,
            "checksum mismatch",
        ),
        (
            "another manifest under the pinned digest",
            Fault::WrongManifest(etcd.manifest_digest.clone()),
            etcd.manifest_digest.clone(),
            Kind::Verify,
            "but the descriptor says",
        ),
        (
            "a body shorter than it declares",
            Fault::LieContentLength { target: etcd.config_digest.clone(), length: 1 << 20 },
            etcd.config_digest.clone(),
            Kind::Verify,
            "Content-Length",
        ),
        (
            "more bytes than the descriptor",
            Fault::ExtraBytes { target: etcd.config_digest.clone(), extra: 10 },
            etcd.config_digest.clone(),
            Kind::Verify,
            "Content-Length",
        ),
        (
            "an index without linux/amd64",
            Fault::DropPlatform("amd64".into()),
            etcd.index_digest.clone(),
            Kind::Verify,
            "checksum mismatch",
        ),
        ("a trickle", Fault::Trickle(pause.layer_digest.clone()), pause.layer_digest.clone(), Kind::Build, "deadline"),
    ];
    for (what, fault, target, kind, says) in cases {
        let cdir = tempfile::tempdir().unwrap();
        let cache = Cache::open(Some(cdir.path())).unwrap();
        reg.fault(fault);
        let t = Instant::now();
        let e = fetch(&reg, &images, &cache, Duration::from_secs(5)).expect_err(what);
        reg.clear_faults();
        eprintln!("{what}: {:?} after {:.1} s: {}", e.kind, t.elapsed().as_secs_f64(), e.message);
        assert_eq!(e.kind, kind, "{what}: {e}");
        assert!(e.message.contains(says), "{what}: {e}");
        assert!(cache.lookup(target.trim_start_matches("sha256:")).is_none(), "{what}: {target} was cached");
        assert_eq!(std::fs::read_dir(cache.root().join("tmp")).map(|d| d.count()).unwrap_or(0), 0, "{what}: tmp/");
        assert!(t.elapsed() < Duration::from_secs(60), "{what}: took {:?}", t.elapsed());
    }
    let cdir = tempfile::tempdir().unwrap();
    let cache = Cache::open(Some(cdir.path())).unwrap();
    assert_eq!(fetch(&reg, &images, &cache, Duration::from_secs(120)).unwrap(), images.len());
}
