//! The profile's container images fetched by digest (issue 23, C3), against
//! a loopback registry with Bearer token auth and blob redirects
//! (`images_kit`): the happy path, the cache, the mirror layout, and each
//! hostile registry failing closed.

mod common;
mod images_kit;

use images_kit::{Fault, Image, Registry};
use kiln::error::Kind;
use kiln::inputs::cache::Cache;
use kiln::inputs::fetch::{FetchOptions, Mirror};
use kiln::inputs::image_pins::ImagePin;
use kiln::inputs::images::fetch_images;
use kiln::inputs::profile::Arch;
use kiln::progress::Progress;
use std::time::{Duration, Instant};

fn pins(images: &[Image]) -> Vec<ImagePin> {
    images.iter().map(|i| ImagePin::parse(&i.pin()).unwrap()).collect()
}

fn opts(reg: &Registry) -> FetchOptions {
    FetchOptions {
        registry_mirror: Some(reg.url().to_string()),
        attempts: 2,
        backoff: Duration::from_millis(50),
        ..FetchOptions::default()
    }
}

/// Nothing half-written is left in the cache's tmp/.
fn tmp_is_empty(cache: &Cache) {
    assert_eq!(std::fs::read_dir(cache.root().join("tmp")).unwrap().count(), 0, "tmp/ not empty");
}

#[test]
fn the_pinned_images_are_fetched_by_digest_through_token_auth_and_redirects_and_cached_once() {
    let images = images_kit::kubeadm_v1_34(&["amd64", "arm64"], 64 << 10);
    let reg = Registry::start(&images, true, true);
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(Some(dir.path())).unwrap();
    let got = fetch_images(&cache, &opts(&reg), &pins(&images), Arch::Amd64, &Progress::quiet()).unwrap();
    assert_eq!(got.len(), 7);
    for (img, f) in images.iter().zip(&got) {
        let (m, c, ls) = &img.archs["amd64"];
        assert_eq!(f.reference, format!("registry.k8s.io/{}:{}", img.repo, img.tag));
        assert_eq!((&f.index.digest, &f.manifest.digest, &f.config.digest), (&img.index, m, c));
        assert_eq!(f.layers.iter().map(|l| &l.digest).collect::<Vec<_>>(), ls.iter().collect::<Vec<_>>());
        assert_eq!(f.index.media_type, "application/vnd.oci.image.index.v1+json");
        assert_eq!(f.layers[0].media_type, "application/vnd.oci.image.layer.v1.tar");
        for b in [&f.index, &f.manifest, &f.config].into_iter().chain(&f.layers) {
            let bytes = std::fs::read(&b.path).unwrap();
            assert_eq!((images_kit::digest(&bytes), bytes.len() as u64), (b.digest.clone(), b.size));
        }
        // The other architecture's blobs are not fetched.
        assert_eq!(reg.gets_of(&img.archs["arm64"].0), 0);
    }
    // The layer three images share is fetched once; storage never saw a token (it answers 400 to one).
    assert_eq!(reg.gets_of(&got[0].layers[0].digest), 1);
    assert!(reg.storage.log().iter().all(|(r, _)| r.header("authorization").is_none()));
    assert!(reg.server.log().iter().any(|(_, code)| *code == 401), "no token challenge was answered");
    tmp_is_empty(&cache);
    // Warm: everything from the cache, not one request.
    let before = reg.server.log().len();
    let again = fetch_images(&cache, &opts(&reg), &pins(&images), Arch::Amd64, &Progress::quiet()).unwrap();
    assert_eq!(again, got);
    assert_eq!(reg.server.log().len(), before);
}

#[test]
fn arm64_takes_the_linux_arm64_v8_manifest() {
    let img = Image::synthetic("pause", "3.10.1", &["amd64", "arm64"], 1, 1000, None);
    let reg = Registry::start(std::slice::from_ref(&img), false, false);
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(Some(dir.path())).unwrap();
    let got =
        fetch_images(&cache, &opts(&reg), &pins(std::slice::from_ref(&img)), Arch::Arm64, &Progress::quiet()).unwrap();
    assert_eq!(got[0].manifest.digest, img.archs["arm64"].0);
}

#[test]
fn an_index_without_the_architecture_names_the_platforms_it_has() {
    let img = Image::synthetic("pause", "3.10.1", &["amd64"], 1, 1000, None);
    let reg = Registry::start(std::slice::from_ref(&img), false, false);
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(Some(dir.path())).unwrap();
    let e = fetch_images(&cache, &opts(&reg), &pins(&[img]), Arch::Arm64, &Progress::quiet()).unwrap_err();
    assert_eq!(e.kind, Kind::Config, "{e}");
    assert!(e.message.contains("has no linux/arm64 manifest (it has linux/amd64)"), "{e}");
}

/// One fault on one blob of a small image: the fetch fails with `kind`,
/// saying `says`, and the blob is not in the cache.
fn fails_closed(
    fault_on: impl Fn(&Image) -> String,
    fault: Fault,
    kind: Kind,
    says: &str,
    tune: impl Fn(&mut FetchOptions),
) {
    let img = Image::synthetic("etcd", "3.6.5-0", &["amd64"], 2, 200 << 10, None);
    let reg = Registry::start(std::slice::from_ref(&img), true, true);
    let target = fault_on(&img);
    reg.fault(&target, fault);
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(Some(dir.path())).unwrap();
    let mut o = opts(&reg);
    tune(&mut o);
    let e = fetch_images(&cache, &o, &pins(&[img]), Arch::Amd64, &Progress::quiet()).unwrap_err();
    assert_eq!(e.kind, kind, "{e}");
    assert!(e.message.contains(says), "{e}");
    assert!(cache.lookup(target.trim_start_matches("sha256:")).is_none(), "the bad blob was cached");
    tmp_is_empty(&cache);
}

#[test]
fn a_wrong_index_for_the_pinned_digest_fails_closed_with_exit_3() {
    let other = Image::synthetic("etcd", "3.6.4-0", &["amd64"], 1, 10, None);
    let index = other.blobs[&other.index].1.clone();
    fails_closed(
        |i| i.index.clone(),
        Fault::Replace(index),
        Kind::Verify,
        "checksum mismatch for registry.k8s.io/etcd:3.6.5-0 (amd64) index",
        |_| {},
    );
}

#[test]
fn a_corrupt_layer_fails_closed_with_exit_3() {
    fails_closed(
        |i| i.archs["amd64"].2[1].clone(),
        Fault::Corrupt,
        Kind::Verify,
        "checksum mismatch for registry.k8s.io/etcd:3.6.5-0 (amd64) layer",
        |_| {},
    );
}

#[test]
fn a_wrong_manifest_or_config_fails_closed_with_exit_3() {
    fails_closed(|i| i.archs["amd64"].0.clone(), Fault::Corrupt, Kind::Verify, "(amd64) manifest", |_| {});
    fails_closed(|i| i.archs["amd64"].1.clone(), Fault::Corrupt, Kind::Verify, "(amd64) config", |_| {});
}

#[test]
fn a_content_length_other_than_the_descriptors_is_refused_before_reading() {
    let size = 200 << 10;
    fails_closed(
        |i| i.archs["amd64"].2[0].clone(),
        Fault::Length(size - 1),
        Kind::Verify,
        &format!("declares Content-Length {}, but the descriptor says {size} bytes", size - 1),
        |_| {},
    );
    fails_closed(
        |i| i.archs["amd64"].2[0].clone(),
        Fault::Extra(10),
        Kind::Verify,
        &format!("Content-Length {}", size + 10),
        |_| {},
    );
}

#[test]
fn a_missing_blob_says_where_kiln_looked() {
    fails_closed(
        |i| i.archs["amd64"].2[0].clone(),
        Fault::Missing,
        Kind::Build,
        "not found (HTTP 404) at http://127.0.0.1",
        |_| {},
    );
}

#[test]
fn a_trickling_registry_meets_the_per_blob_deadline() {
    let t = Instant::now();
    fails_closed(
        |i| i.archs["amd64"].2[0].clone(),
        Fault::Trickle(Duration::from_millis(20)),
        Kind::Build,
        "deadline",
        |o| o.deadline = Duration::from_secs(2),
    );
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
}

#[test]
fn offline_reads_only_the_cache() {
    let img = Image::synthetic("pause", "3.10.1", &["amd64"], 1, 1000, None);
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(Some(dir.path())).unwrap();
    let offline = FetchOptions { offline: true, ..FetchOptions::default() };
    let e =
        fetch_images(&cache, &offline, &pins(std::slice::from_ref(&img)), Arch::Amd64, &Progress::quiet()).unwrap_err();
    assert_eq!(e.kind, Kind::Build);
    assert!(e.message.contains("not in the cache, and --offline") && e.message.contains("kiln mirror"), "{e}");
    let got = {
        let reg = Registry::start(std::slice::from_ref(&img), false, false);
        fetch_images(&cache, &opts(&reg), &pins(std::slice::from_ref(&img)), Arch::Amd64, &Progress::quiet()).unwrap()
    };
    assert_eq!(fetch_images(&cache, &offline, &pins(&[img]), Arch::Amd64, &Progress::quiet()).unwrap(), got);
}

#[test]
fn a_mirror_directory_blob_longer_than_its_descriptor_is_refused() {
    let img = Image::synthetic("pause", "3.10.1", &["amd64"], 1, 1000, None);
    let m = tempfile::tempdir().unwrap();
    let blobs = m.path().join("oci/blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for (d, (_, b)) in &img.blobs {
        let mut b = b.clone();
        if *d == img.archs["amd64"].2[0] {
            b.extend_from_slice(b"more");
        }
        std::fs::write(blobs.join(d.trim_start_matches("sha256:")), b).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(Some(dir.path())).unwrap();
    let o = FetchOptions { mirror: Some(Mirror::Dir(m.path().into())), offline: true, ..FetchOptions::default() };
    let e = fetch_images(&cache, &o, &pins(&[img]), Arch::Amd64, &Progress::quiet()).unwrap_err();
    assert_eq!(e.kind, Kind::Verify, "{e}");
    assert!(e.message.contains("declares Content-Length 1004, but the descriptor says 1000 bytes"), "{e}");
}
