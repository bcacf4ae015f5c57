//! Benchmark (not a test): `kiln build` from a warm cache against `tar -c | gzip -6`
//! of the same tree, the no-op rebuild, and kiln's peak RSS.
//!
//! Run with `./scripts/bench` (builds release binaries first). Stand-in
//! artifacts have upstream's sizes (kubelet, kubeadm, kubectl, crictl, CNI
//! plugins of Kubernetes v1.34) and binary-like compressibility.

use kiln::profile::{Arch, Profile};
use kiln_testkit::standin;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Approximate sizes of the v1.34 amd64 release files (bytes).
const SIZES: [(&str, usize); 3] = [("kubelet", 59 << 20), ("kubeadm", 72 << 20), ("kubectl", 57 << 20)];
const CRICTL: usize = 40 << 20;
const CNI: usize = 4 << 20;
const CNI_COUNT: u64 = 20;

fn kiln_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("kiln");
    assert!(bin.is_file(), "{} missing: run `cargo build --release --workspace` first", bin.display());
    bin
}

/// Runs a command under GNU time(1), returning wall time and peak RSS in KiB.
///
/// getrusage/wait4 from this process would report the bench's own pre-exec
/// high-water mark (ru_maxrss survives exec), so time(1) forks a small parent.
fn measure(cmd: &mut Command) -> (Duration, u64) {
    let out = tempfile::NamedTempFile::new().expect("tempfile");
    let mut c = Command::new("/usr/bin/time");
    c.arg("-f").arg("%M").arg("-o").arg(out.path()).arg(cmd.get_program()).args(cmd.get_args());
    let t = Instant::now();
    let st = c.status().expect("spawn /usr/bin/time (apt-get install time)");
    let elapsed = t.elapsed();
    assert!(st.success(), "command failed: {cmd:?}");
    let kib = std::fs::read_to_string(out.path())
        .ok()
        .and_then(|s| s.trim().lines().last()?.trim().parse().ok())
        .unwrap_or(0);
    (elapsed, kib)
}

fn sh(script: &str) -> Duration {
    let t = Instant::now();
    let st = Command::new("bash").arg("-c").arg(script).status().expect("bash");
    assert!(st.success(), "{script}");
    t.elapsed()
}

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    for d in ["profiles", "overlays"] {
        assert!(Command::new("cp").arg("-a").arg(repo.join(d)).arg(t).status().expect("cp").success());
    }
    let profile_path = t.join("profiles/flatcar-1.34.toml");
    let profile = Profile::load(&profile_path).expect("profile");
    let mirror = t.join("mirror");
    eprintln!("bench: generating stand-in artifacts of upstream size…");
    for (name, spec) in &profile.doc.artifacts {
        let spec = spec.get_ref();
        let arch = Arch::Amd64;
        let url = kiln::profile::expand_url(spec.url.get_ref(), spec.version.get_ref(), arch);
        let seed = name.len() as u64 * 7919;
        let data = match (name.as_str(), spec.extract.is_some()) {
            ("crictl", _) => standin::tgz(&[("crictl", standin::elf(62, CRICTL, seed))]),
            (_, true) => {
                let m: Vec<(String, Vec<u8>)> =
                    (0..CNI_COUNT).map(|i| (format!("plugin{i}"), standin::elf(62, CNI, seed + i))).collect();
                standin::tgz(&m.iter().map(|(n, d)| (n.as_str(), d.clone())).collect::<Vec<_>>())
            }
            _ => {
                let size = SIZES.iter().find(|(n, _)| n == name).map(|(_, s)| *s).unwrap_or(1 << 20);
                standin::elf(62, size, seed)
            }
        };
        standin::publish(&mirror, kiln::fetch::url_path(&url), &data, false);
    }
    std::fs::write(t.join("kiln-firstboot"), standin::elf(62, 1 << 20, 1)).expect("firstboot");
    let kiln = kiln_bin();
    let st = Command::new(&kiln)
        .args(["-q", "pin", "--profile"])
        .arg(&profile_path)
        .arg("--base-url")
        .arg(format!("file://{}", mirror.display()))
        .stdout(std::process::Stdio::null())
        .status()
        .expect("pin");
    assert!(st.success());
    let build_to = |force: bool, out: &str, sysext: bool| {
        let mut c = Command::new(&kiln);
        c.args(["-q", "build"])
            .arg(&profile_path)
            .arg("--mirror")
            .arg(&mirror)
            .arg("--cache")
            .arg(t.join("cache"))
            .arg("--out")
            .arg(t.join(out))
            .arg("--firstboot-bin")
            .arg(t.join("kiln-firstboot"));
        if force {
            c.arg("--force");
        }
        if sysext {
            c.args(["--format", "sysext"]);
        }
        c
    };
    let build = |force: bool| build_to(force, "dist", false);
    let (cold, _) = measure(&mut build(false));
    let tgz = t.join("dist/flatcar-1.34-amd64.tar.gz");
    let tree = t.join("tree");
    std::fs::create_dir_all(&tree).expect("tree");
    sh(&format!("tar -xzf {} -C {}", tgz.display(), tree.display()));
    let raw: u64 = String::from_utf8_lossy(&Command::new("du").args(["-sb"]).arg(&tree).output().expect("du").stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut kiln_times = Vec::new();
    let mut base_times = Vec::new();
    let mut rss = 0;
    // Alternate the two, three rounds each, and take the best of each.
    for _ in 0..3 {
        let (d, r) = measure(&mut build(true));
        kiln_times.push(d);
        rss = rss.max(r);
        base_times.push(sh(&format!("tar -c -C {} . | gzip -6 > {}/baseline.tar.gz", tree.display(), t.display())));
    }
    let (noop, _) = measure(&mut build(false));

    // systemd-sysext: kiln's squashfs writer against mksquashfs and mkfs.erofs
    // on the same /usr tree (extracted from kiln's own image), same run.
    measure(&mut build_to(true, "sx", true)); // warm
    let raw_img = t.join("sx/kubernetes-v1.34.2-amd64.raw");
    let usr = t.join("usr-tree");
    sh(&format!("unsquashfs -q -d {} {}", usr.display(), raw_img.display()));
    let mut sx_kiln = Vec::new();
    let mut sx_mksq = Vec::new();
    let mut sx_erofs = Vec::new();
    let mut sx_rss = 0;
    for _ in 0..3 {
        let (d, r) = measure(&mut build_to(true, "sx", true));
        sx_kiln.push(d);
        sx_rss = sx_rss.max(r);
        sx_mksq.push(sh(&format!(
            "mksquashfs {} {}/base.sqfs -comp gzip -b 131072 -noappend -all-root -quiet -no-progress >/dev/null",
            usr.display(),
            t.display()
        )));
        sx_erofs.push(sh(&format!("mkfs.erofs -zlz4hc -T0 {}/base.erofs {} >/dev/null", t.display(), usr.display())));
    }
    let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    let best = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    let (k, b) = (best(&kiln_times), best(&base_times));
    let kiln_size = std::fs::metadata(&tgz).map(|m| m.len()).unwrap_or(0);
    let base_size = std::fs::metadata(t.join("baseline.tar.gz")).map(|m| m.len()).unwrap_or(0);
    println!("tree: {:.1} MB uncompressed ({} profile, amd64)", raw as f64 / 1e6, profile.name());
    println!("cold build (fetch from mirror dir + pack): {:.2} s", cold.as_secs_f64());
    println!(
        "warm build, kiln build --force: {:.2} s  (best of 3; output {:.1} MB)",
        k.as_secs_f64(),
        kiln_size as f64 / 1e6
    );
    println!(
        "baseline, tar -c | gzip -6:      {:.2} s  (best of 3; output {:.1} MB)",
        b.as_secs_f64(),
        base_size as f64 / 1e6
    );
    println!("ratio kiln/baseline: {:.2} (goal <= 1.0)", k.as_secs_f64() / b.as_secs_f64());
    println!("no-op rebuild: {:.3} s (goal < 0.5 s)", noop.as_secs_f64());
    println!("peak RSS of kiln build: {:.1} MB (goal < 100 MB)", rss as f64 / 1024.0);
    let (k, m, e) = (best(&sx_kiln), best(&sx_mksq), best(&sx_erofs));
    println!(
        "sysext, kiln build --format sysext: {:.2} s ({:.1} MB, peak RSS {:.1} MB)",
        k.as_secs_f64(),
        size(raw_img.clone()),
        sx_rss as f64 / 1024.0
    );
    println!("baseline, mksquashfs -comp gzip:   {:.2} s ({:.1} MB)", m.as_secs_f64(), size(t.join("base.sqfs")));
    println!("baseline, mkfs.erofs -zlz4hc:      {:.2} s ({:.1} MB)", e.as_secs_f64(), size(t.join("base.erofs")));
    println!(
        "ratio kiln/mksquashfs: {:.2}, kiln/mkfs.erofs: {:.2} (goal <= 1.0)",
        k.as_secs_f64() / m.as_secs_f64(),
        k.as_secs_f64() / e.as_secs_f64()
    );
}
