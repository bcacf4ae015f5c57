//! Benchmark (not a test) of issue 23's image fetch: the seven test images
//! (`tests/k8s/images`: the real kube-apiserver, kube-controller-manager,
//! kube-scheduler, kube-proxy, etcd, CoreDNS and pause, 466 MB of archives) pulled from
//! the real registry (`kiln_testkit::registry`: distribution v3, token auth,
//! blob downloads redirected to a second host, as registry.k8s.io serves
//! them) by the baseline, `crane pull --format oci` of the real crane
//! (go-containerregistry, built by `tests/k8s/build`), and by kiln (the fetch
//! `kiln build` runs), in interleaved rounds, printing medians, ranges and the
//! per-round ratio.
//!
//! Both go through the kit's front (a loopback proxy, no faults) at the same
//! URL; each round starts cold (a fresh output directory; crane has no cache
//! unless asked, kiln gets a fresh `--cache`).
//!
//! Needs `KILN_K8S_BIN_REGISTRY`, `KILN_K8S_BIN_CRANE` and the test images'
//! programs (`./scripts/test` builds them). `KILN_BENCH_ROUNDS` sets the
//! rounds (default 5). Run: `cargo bench -p kiln --bench bench_images`.

use kiln::inputs::cache::Cache;
use kiln::inputs::fetch::FetchOptions;
use kiln::inputs::image_pins::ImagePin;
use kiln::inputs::images::fetch_images;
use kiln::inputs::profile::Arch;
use kiln::progress::Progress;
use kiln_testkit::registry::{self, Auth, Config, Registry, TestImage};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// One round of a contender, writing under `out`: `Err` says what failed.
type Round = Box<dyn Fn(&Path) -> Result<(), String>>;

/// One contender: a label and one cold round.
struct Contender {
    label: String,
    round: Round,
    secs: Vec<f64>,
}

/// Runs `c`; `Err` with its stderr when it fails.
fn status(mut c: Command) -> Result<(), String> {
    let o = c.output().map_err(|e| format!("{c:?}: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("{c:?}: {}", String::from_utf8_lossy(&o.stderr)))
    }
}

/// `crane pull --format oci` of every image into one OCI layout at `out`.
fn crane_contender(reg: &Registry, images: &[TestImage]) -> Contender {
    let crane = ok(registry::crane());
    let refs: Vec<String> = images.iter().map(|i| format!("{}/{}:{}", reg.host(), i.repository, i.tag)).collect();
    Contender {
        label: format!("crane pull --format oci ({} images)", refs.len()),
        round: Box::new(move |out| {
            let mut c = Command::new(&crane);
            c.args(["pull", "--insecure", "--format", "oci"]).args(&refs).arg(out.join("layout"));
            status(c)
        }),
        secs: Vec::new(),
    }
}

/// kiln's side: what `kiln build` runs for a profile's pinned `images`
/// (`kiln::inputs::images::fetch_images`: the image index by its pinned digest,
/// the amd64 manifest, config and layers, each verified as it streams and
/// committed to the cache by digest), through `--registry-mirror` at the kit's
/// front, into a fresh cache under the round's directory.
fn kiln_image_fetch_contender(reg: &Registry, images: &[TestImage]) -> Contender {
    let pins: Vec<ImagePin> = images.iter().map(|i| ok(ImagePin::parse(&i.pin()).map_err(|e| e.to_string()))).collect();
    let opts = FetchOptions { registry_mirror: Some(reg.url().to_string()), ..FetchOptions::default() };
    Contender {
        label: format!("kiln build's image fetch ({} images)", pins.len()),
        round: Box::new(move |out| {
            let cache = Cache::open(Some(&out.join("cache"))).map_err(|e| e.to_string())?;
            fetch_images(&cache, &opts, &pins, Arch::Amd64, &Progress::quiet()).map(|_| ()).map_err(|e| e.to_string())
        }),
        secs: Vec::new(),
    }
}

fn median(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => (f64::NAN, f64::NAN, f64::NAN),
        n => (if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 }, s[0], s[n - 1]),
    }
}

fn du(p: &Path) -> u64 {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p).into_iter().flatten().flatten().map(|e| du(&e.path())).sum(),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

fn main() {
    let rounds: usize = std::env::var("KILN_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    let (reg, images) = ok(registry::with_test_images(dir.path(), Config { auth: Auth::Token, redirect_blobs: true }));
    let bytes: u64 = images.iter().map(|i| du(&i.archive)).sum();
    println!(
        "{} test images, {:.1} MB of archives, made and pushed in {:.1} s",
        images.len(),
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let mut cs = [kiln_image_fetch_contender(&reg, &images), crane_contender(&reg, &images)];
    let mut pulled = vec![0u64; cs.len()];
    for r in 0..rounds {
        let order: Vec<usize> = if r % 2 == 0 { (0..cs.len()).collect() } else { (0..cs.len()).rev().collect() };
        for i in order {
            let out: PathBuf = dir.path().join(format!("round-{r}-{i}"));
            std::fs::create_dir_all(&out).expect("round dir");
            let t = Instant::now();
            ok((cs[i].round)(&out));
            cs[i].secs.push(t.elapsed().as_secs_f64());
            pulled[i] = du(&out);
            std::fs::remove_dir_all(&out).expect("round dir");
        }
    }
    println!("{rounds} interleaved cold rounds through the front (token auth, blobs redirected):");
    for (c, b) in cs.iter().zip(&pulled) {
        let (m, lo, hi) = median(&c.secs);
        println!("  {:<48} {m:>7.2} s [{lo:.2}-{hi:.2}]  {:>7.1} MB written", c.label, *b as f64 / 1e6);
    }
    let per: Vec<f64> = cs[0].secs.iter().zip(&cs[1].secs).map(|(a, b)| a / b).collect();
    let (m, lo, hi) = median(&per);
    println!("  {} / {}: {m:.2}x [{lo:.2}-{hi:.2}] per round", cs[0].label, cs[1].label);
}
