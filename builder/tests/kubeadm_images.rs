//! kiln's list of the images kubeadm runs (`kiln::inputs::kubeadm_images`)
//! held to the REAL kubeadm, and the shipped profiles' `images` held to that
//! list.
//!
//! For every `kubernetes_version` in `profiles/*.toml`, the real kubeadm of
//! that version (built by `tests/k8s/build` from k8s.io/kubernetes, found
//! through `KILN_K8S_BIN_V1_34_2`, `KILN_K8S_BIN_V1_33_6`, ...) prints
//! `kubeadm config images list --kubernetes-version V`, and kiln must name the
//! same images in the same order. Without the variable the test fails and
//! prints the commands that build the program; it never falls back to kiln's
//! own table.
//!
//! Every shipped profile that has an `images` key must pin exactly that list,
//! each entry `name:tag@sha256:<64 hex>`, and two profiles must not pin one
//! `name:tag` at two digests. A profile without the key is skipped with a note.

mod common;

use common::repo;
use kiln::inputs::kubeadm_images::kubeadm_images;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the real `kubeadm config images list` may take (it reads no
/// network and no files; it answers in well under a second).
const KUBEADM_TIMEOUT: Duration = Duration::from_secs(60);

/// One shipped profile, read as a plain TOML table (not kiln's parser, so the
/// test reads the file as it is, `images` or not).
struct Shipped {
    path: PathBuf,
    version: String,
    images: Option<Vec<String>>,
}

/// `profiles/*.toml`, sorted by file name.
fn shipped() -> Vec<Shipped> {
    let dir = repo().join("profiles");
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("profiles/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no profiles in {}", dir.display());
    paths.into_iter().map(|p| read_profile(&p)).collect()
}

fn read_profile(path: &Path) -> Shipped {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let table: toml::Table = text.parse().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let version = table
        .get("kubernetes_version")
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("{}: no kubernetes_version string", path.display()))
        .to_string();
    let images = table.get("images").map(|v| {
        let list = v.as_array().unwrap_or_else(|| panic!("{}: `images` is not an array", path.display()));
        list.iter()
            .map(|i| i.as_str().unwrap_or_else(|| panic!("{}: an `images` entry is not a string: {i}", path.display())))
            .map(str::to_string)
            .collect()
    });
    Shipped { path: path.to_path_buf(), version, images }
}

/// The profile's path relative to the repository, for messages.
fn name(p: &Shipped) -> String {
    p.path.strip_prefix(repo()).unwrap_or(&p.path).display().to_string()
}

/// The real kubeadm of `version`, or a panic naming the commands that build it
/// and the one this test runs.
fn real_kubeadm(version: &str) -> PathBuf {
    let var = format!("KILN_K8S_BIN_{}", version.to_uppercase().replace('.', "_"));
    let build =
        format!("tests/k8s/build {version} amd64 node && export {var}=$(tests/k8s/build --dir {version} amd64 node)");
    let run = format!("${var}/kubeadm config images list --kubernetes-version {version}");
    let dir = std::env::var_os(&var).map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "{var} is not set: this test runs the real kubeadm {version} (`{run}`), with no fallback to kiln's \
             table. Build it and say where it is, from the workspace root:\n  {build}\n(./scripts/test does this)"
        )
    });
    let kubeadm = dir.join("kubeadm");
    assert!(kubeadm.is_file(), "{var}={} has no kubeadm; build it:\n  {build}", dir.display());
    kubeadm
}

/// What `kubeadm config images list --kubernetes-version VERSION` prints, one
/// image per line, after checking that the kubeadm is VERSION's: the etcd,
/// CoreDNS and pause tags are the binary's constants, not the flag's.
fn real_list(kubeadm: &Path, version: &str) -> Vec<String> {
    let own = run_kubeadm(kubeadm, &["version", "-o", "short"]);
    assert_eq!(own, [version], "{} is not kubeadm {version}", kubeadm.display());
    run_kubeadm(kubeadm, &["config", "images", "list", "--kubernetes-version", version])
}

/// The non-empty lines kubeadm prints for `args`; the run is bounded by [`KUBEADM_TIMEOUT`].
fn run_kubeadm(kubeadm: &Path, args: &[&str]) -> Vec<String> {
    let scratch = tempfile::tempdir().expect("tempdir");
    let cmd = format!("{} {}", kubeadm.display(), args.join(" "));
    // A clean environment: no proxy, no KUBECONFIG, HOME in a scratch directory.
    let mut child = Command::new(kubeadm)
        .args(args)
        .env_clear()
        .env("HOME", scratch.path())
        .current_dir(scratch.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    // Drained while kubeadm runs, so a full pipe cannot stall it.
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for kubeadm") {
            break s;
        }
        if start.elapsed() > KUBEADM_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd}: no answer after {KUBEADM_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().expect("stdout reader").expect("kubeadm stdout");
    let err = err.join().expect("stderr reader").expect("kubeadm stderr");
    assert!(status.success(), "{cmd}: {status}\n{err}");
    out.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// Reads a pipe to its end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<std::io::Result<String>> {
    std::thread::spawn(move || {
        let mut text = String::new();
        pipe.read_to_string(&mut text).map(|_| text)
    })
}

/// Each distinct `kubernetes_version` of the shipped profiles, with the profiles that use it.
fn versions() -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in shipped() {
        out.entry(p.version.clone()).or_default().push(name(&p));
    }
    out
}

#[test]
fn kiln_lists_what_the_real_kubeadm_lists_for_every_shipped_version() {
    for (version, profiles) in versions() {
        let real = real_list(&real_kubeadm(&version), &version);
        let kiln: Vec<String> = kubeadm_images(&version)
            .unwrap_or_else(|e| panic!("{} use {version}: {e}", profiles.join(", ")))
            .iter()
            .map(|i| i.reference())
            .collect();
        assert_eq!(
            kiln,
            real,
            "kiln's kubeadm image list for {version} (builder/src/inputs/kubeadm_images.rs, left) differs from \
             the real `kubeadm config images list --kubernetes-version {version}` (right); used by {}",
            profiles.join(", ")
        );
        eprintln!("kubeadm {version}: {} images, as kiln lists them", real.len());
    }
}

/// Splits `name:tag@sha256:<hex>` into `name:tag` and the hex, or says what is wrong.
fn pinned(entry: &str) -> Result<(&str, &str), String> {
    let (reference, digest) =
        entry.split_once("@sha256:").ok_or_else(|| format!("{entry:?} has no `@sha256:` digest"))?;
    let hex_ok = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex_ok {
        return Err(format!("{entry:?}: the digest is not 64 lowercase hex digits"));
    }
    Ok((reference, digest))
}

#[test]
fn every_shipped_profile_that_pins_images_pins_exactly_kubeadms_by_digest() {
    // name:tag -> (digest, the profile that pinned it first)
    let mut digests: BTreeMap<String, (String, String)> = BTreeMap::new();
    let (mut checked, mut skipped) = (0, 0);
    for p in shipped() {
        let file = name(&p);
        let Some(images) = &p.images else {
            eprintln!("note: {file} has no `images` key yet: skipped (its node pulls kubeadm's images)");
            skipped += 1;
            continue;
        };
        let want: Vec<String> = kubeadm_images(&p.version)
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .iter()
            .map(|i| i.reference())
            .collect();
        let mut got = Vec::new();
        for entry in images {
            let (reference, digest) = pinned(entry).unwrap_or_else(|e| panic!("{file}: {e}"));
            let (first, by) = digests.entry(reference.to_string()).or_insert((digest.to_string(), file.clone()));
            assert_eq!(first, digest, "{file} pins {reference} at sha256:{digest}, {by} at sha256:{first}");
            got.push(reference.to_string());
        }
        assert_eq!(
            got, want,
            "{file}: `images` (left) must name exactly the images kubeadm {} runs (right), in its order",
            p.version
        );
        checked += 1;
    }
    eprintln!("{checked} profiles pin kubeadm's images, {skipped} have no `images` key");
}

#[test]
fn a_malformed_pin_is_told_apart() {
    let hex = "0123456789abcdef".repeat(4);
    assert_eq!(
        pinned(&format!("registry.k8s.io/pause:3.10.1@sha256:{hex}")),
        Ok(("registry.k8s.io/pause:3.10.1", hex.as_str()))
    );
    for bad in [
        "registry.k8s.io/pause:3.10.1".to_string(),
        format!("registry.k8s.io/pause:3.10.1@sha256:{}", &hex[1..]),
        format!("registry.k8s.io/pause:3.10.1@sha256:{}", hex.to_uppercase()),
        format!("registry.k8s.io/pause:3.10.1@sha512:{hex}"),
    ] {
        assert!(pinned(&bad).is_err(), "{bad}");
    }
}
