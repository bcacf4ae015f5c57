//! Benchmark (not a test) for a sceptic: `kiln build` of a realistic tree
//! against the tools a user would pick instead, interleaved, with medians,
//! ranges, load and peak RSS, in one run:
//!
//! * tarball: `kiln build --format tar` (all cores, and one thread) against
//!   `tar | pigz` on all cores at the level giving kiln's output size; kiln at
//!   the level giving pigz -6's size against `pigz -6`; `--format tar.zst`
//!   against `tar | zstd -T0 -3`; and `tar | gzip -6`;
//! * sysext: `kiln build --format sysext` against `mksquashfs` with kiln's
//!   settings (gzip level 9, 128 KiB blocks, all root) and `mkfs.erofs -zlz4hc`;
//! * the no-op rebuild, and peak RSS with the tree at 1×, 2× and 4×.
//!
//! Stand-in artifacts have upstream's sizes (kubelet, kubeadm, kubectl, crictl,
//! CNI plugins of Kubernetes v1.34) and compress like real Go binaries
//! ([`standin::go_like`]); the run prints their ratio next to a real Go binary
//! from a Debian package when one is installed.
//!
//! Run with `./scripts/bench` (builds release binaries and installs the tools
//! first). `KILN_BENCH_SCALE` scales every artifact (default 1.0: a 324 MB
//! tree, a few minutes on 2 cores; 0.05 for a quick look); `KILN_BENCH_ROUNDS`
//! sets the interleaved rounds (at least and by default 5).

mod common;

use common::kiln_bin;
use kiln::inputs::profile::{Arch, Profile};
use kiln_testkit::standin;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Approximate sizes of the v1.34 amd64 release files (bytes).
const SIZES: [(&str, usize); 3] = [("kubelet", 59 << 20), ("kubeadm", 72 << 20), ("kubectl", 57 << 20)];
const CRICTL: usize = 40 << 20;
const CNI: usize = 4 << 20;
const CNI_COUNT: u64 = 20;
const PROFILE: &str = "flatcar-1.34";
/// Goals from issue 14.
const GOAL_TAR_VS_PIGZ: f64 = 0.6;
const GOAL_SYSEXT_VS_MKSQUASHFS: f64 = 0.5;
const GOAL_NOOP_S: f64 = 0.5;
const GOAL_RSS_MB: f64 = 100.0;
/// "Flat": peak RSS at 4× the tree at most this much above 1×.
const GOAL_RSS_GROWTH: f64 = 1.25;

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// One run: wall time (s) and peak RSS (MB) of the command and its children.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    secs: f64,
    rss_mb: f64,
}

/// Runs a command under GNU time(1) for its peak RSS.
///
/// getrusage/wait4 from this process would report the bench's own pre-exec
/// high-water mark (ru_maxrss survives exec), so time(1) forks a small parent.
/// For a `bash -c` pipeline it reports the largest process of the pipeline.
fn measure(cmd: &Command) -> Sample {
    let out = tempfile::NamedTempFile::new().expect("tempfile");
    let mut c = Command::new("/usr/bin/time");
    c.arg("-f").arg("%M").arg("-o").arg(out.path()).arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let t = Instant::now();
    let st = c.status().expect("spawn /usr/bin/time (apt-get install time)");
    let secs = t.elapsed().as_secs_f64();
    assert!(st.success(), "command failed: {cmd:?}");
    let kib: f64 = std::fs::read_to_string(out.path())
        .ok()
        .and_then(|s| s.trim().lines().last()?.trim().parse().ok())
        .unwrap_or(0.0);
    Sample { secs, rss_mb: kib / 1024.0 }
}

fn bash(script: &str) -> Command {
    let mut c = Command::new("bash");
    c.arg("-c").arg(format!("set -o pipefail; {script}"));
    c
}

fn run_ok(c: &mut Command) -> String {
    let o = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(o.status.success(), "{c:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn file_mb(p: &Path) -> f64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64 / 1e6
}

/// 1-minute load average from /proc/loadavg.
fn load() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// (busy, total) jiffies of all CPUs from the first line of /proc/stat.
fn cpu_jiffies() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> =
        text.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0); // idle + iowait
    (total - idle, total)
}

/// Share of all CPUs busy over the next `secs` seconds (nothing of the bench runs meanwhile).
fn busy_now(secs: f64) -> f64 {
    let (b0, t0) = cpu_jiffies();
    std::thread::sleep(std::time::Duration::from_secs_f64(secs));
    let (b1, t1) = cpu_jiffies();
    if t1 > t0 {
        (b1 - b0) as f64 / (t1 - t0) as f64
    } else {
        f64::NAN
    }
}

/// Prints the load before or after a block, with a warning when other work
/// is running. The 1-minute load average still counts the bench's own work
/// of the last minute, so what decides the warning is how busy the CPUs are
/// over 2 s while the bench itself waits.
fn note_load(when: &str, block: &str) -> f64 {
    let l = load();
    let busy = busy_now(2.0);
    if busy > 0.15 {
        println!(
            "  WARNING: the CPUs were {:.0}% busy {when} the {block} block while the bench waited: other work is running, figures are suspect",
            busy * 100.0
        );
    }
    println!("  load {when} {block}: 1-minute average {l:.2} (counts the bench's own last minute), CPUs {:.0}% busy with other work", busy * 100.0);
    l
}

/// (median, min, max)
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let med = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
    (med, s[0], s[n - 1])
}

/// One contender of an interleaved block.
struct Contender {
    label: String,
    cmd: Command,
    output: PathBuf,
    samples: Vec<Sample>,
}

impl Contender {
    fn new(label: impl Into<String>, cmd: Command, output: PathBuf) -> Contender {
        Contender { label: label.into(), cmd, output, samples: Vec::new() }
    }
}

/// Runs every contender once per round, in alternating order (forward on
/// even rounds, backward on odd ones), so drift and order effects hit all
/// alike; prints the load before and after, and one row per contender.
fn interleave(block: &str, rounds: usize, cs: &mut [Contender]) {
    let before = note_load("before", block);
    for r in 0..rounds {
        let order: Vec<usize> = if r % 2 == 0 { (0..cs.len()).collect() } else { (0..cs.len()).rev().collect() };
        for i in order {
            let s = measure(&cs[i].cmd);
            cs[i].samples.push(s);
        }
    }
    let after = note_load("after", block);
    println!("{block}: {rounds} interleaved rounds, load {before:.2} before, {after:.2} after ({} cores)", cores());
    println!("  {:<54} {:>22} {:>10} {:>10}", "", "median [min-max] s", "output MB", "peak RSS");
    for c in cs.iter() {
        let (m, lo, hi) = stats(&c.samples.iter().map(|s| s.secs).collect::<Vec<_>>());
        let rss = c.samples.iter().map(|s| s.rss_mb).fold(0.0, f64::max);
        println!("  {:<54} {m:>8.2} [{lo:.2}-{hi:.2}] {:>10.1} {rss:>7.1} MB", c.label, file_mb(&c.output));
    }
}

/// Per-round ratio a/b: (median, min, max).
fn ratio(a: &Contender, b: &Contender) -> (f64, f64, f64) {
    stats(&a.samples.iter().zip(&b.samples).map(|(x, y)| x.secs / y.secs).collect::<Vec<_>>())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn print_ratio(a: &Contender, b: &Contender, goal: Option<f64>) {
    let (m, lo, hi) = ratio(a, b);
    let goal = match goal {
        Some(g) => format!("goal <= {g:.1}x: {}", verdict(hi <= g)),
        None => "no goal".to_string(),
    };
    println!("  {:<38} / {:<42} {m:.2}x [{lo:.2}-{hi:.2}]  {goal}", a.label, b.label);
}

/// A Go executable installed from a Debian package, if any: (path, package).
fn real_go_binary() -> Result<(PathBuf, String), String> {
    let mut candidates: Vec<PathBuf> = [
        "/usr/bin/kubectl",
        "/usr/bin/containerd",
        "/usr/sbin/runc",
        "/usr/bin/runc",
        "/usr/bin/crictl",
        "/usr/bin/dockerd",
        "/usr/bin/docker",
        "/usr/bin/ctr",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            let mut more: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            more.sort();
            candidates.extend(more);
        }
    }
    let is_go = |p: &Path| -> bool {
        // Go's linker puts an ELF note (name "Go", type 4: GO BUILDID) in the
        // first page of the executable.
        let Ok(meta) = std::fs::metadata(p) else { return false };
        if !meta.is_file() || meta.len() < (4 << 20) {
            return false;
        }
        let mut head = vec![0u8; 64 << 10];
        let Ok(n) = std::fs::File::open(p).and_then(|mut f| std::io::Read::read(&mut f, &mut head)) else {
            return false;
        };
        head[..4] == *b"\x7fELF"
            && head[..n].windows(16).any(|w| w[..4] == [4, 0, 0, 0] && w[8..] == *b"\x04\0\0\0Go\0\0")
    };
    for p in candidates {
        if !is_go(&p) {
            continue;
        }
        let o = Command::new("dpkg").arg("-S").arg(&p).output();
        if let Ok(o) = o {
            if o.status.success() {
                let pkg = String::from_utf8_lossy(&o.stdout).split(':').next().unwrap_or("").trim().to_string();
                let ver = Command::new("dpkg-query")
                    .args(["-W", "-f=${Version}", &pkg])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                return Ok((p, format!("{pkg} {ver}")));
            }
        }
    }
    Err("no Go executable from a Debian package in /usr/bin, /usr/sbin, /usr/local/bin \
         (tried kubectl, containerd, runc, crictl, docker, ctr first); `apt-get install runc` gives one"
        .to_string())
}

/// "gzip -6 3.30:1, zstd -3 3.45:1" for a file, measured with the tools.
fn ratios(p: &Path) -> String {
    let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64;
    let q = |tool: &str| -> f64 {
        let out = run_ok(&mut bash(&format!("{tool} < '{}' | wc -c", p.display())));
        size / out.trim().parse::<f64>().unwrap_or(f64::NAN)
    };
    format!("gzip -6 {:.2}:1, zstd -3 {:.2}:1, {:.1} MB", q("gzip -6 -c"), q("zstd -3 -q -c"), size / 1e6)
}

/// A scratch copy of the profile with stand-ins scaled by `scale`, pinned
/// to a mirror directory and built once (cache warm).
struct Setup {
    dir: PathBuf,
    profile_path: PathBuf,
    profile: Profile,
    kiln: PathBuf,
    /// The kubelet stand-in in the mirror.
    kubelet: PathBuf,
}

impl Setup {
    fn new(dir: PathBuf, scale: f64) -> Setup {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::fs::create_dir_all(&dir).expect("mkdir");
        for d in ["profiles", "overlays"] {
            run_ok(Command::new("cp").arg("-a").arg(repo.join(d)).arg(&dir));
        }
        let profile_path = dir.join(format!("profiles/{PROFILE}.toml"));
        let profile = Profile::load(&profile_path).expect("profile");
        let mirror = dir.join("mirror");
        let sized = |n: usize| ((n as f64 * scale) as usize).max(4096);
        let mut kubelet = PathBuf::new();
        for (name, spec) in &profile.doc.artifacts {
            let spec = spec.get_ref();
            let url = kiln::inputs::profile::expand_url(spec.url.get_ref(), spec.version.get_ref(), Arch::Amd64);
            let seed = name.len() as u64 * 7919;
            let data = match (name.as_str(), spec.extract.is_some()) {
                ("crictl", _) => standin::tgz(&[("crictl", standin::go_elf(62, sized(CRICTL), seed))]),
                (_, true) => {
                    let m: Vec<(String, Vec<u8>)> = (0..CNI_COUNT)
                        .map(|i| (format!("plugin{i}"), standin::go_elf(62, sized(CNI), seed + i)))
                        .collect();
                    standin::tgz(&m.iter().map(|(n, d)| (n.as_str(), d.clone())).collect::<Vec<_>>())
                }
                _ => {
                    let size = SIZES.iter().find(|(n, _)| n == name).map(|(_, s)| *s).unwrap_or(1 << 20);
                    standin::go_elf(62, sized(size), seed)
                }
            };
            let path = kiln::mirror_path::url_path(&url);
            standin::publish(&mirror, path, &data, false);
            if name == "kubelet" {
                kubelet = mirror.join(path.trim_start_matches('/'));
            }
        }
        std::fs::write(dir.join("kiln-firstboot"), standin::go_elf(62, 1 << 20, 1)).expect("firstboot");
        let kiln = kiln_bin();
        run_ok(
            Command::new(&kiln)
                .args(["-q", "pin", "--profile"])
                .arg(&profile_path)
                .arg("--base-url")
                .arg(format!("file://{}", mirror.display())),
        );
        Setup { dir, profile_path, profile, kiln, kubelet }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// `kiln -q build` into `out` with one `--format`.
    fn build(&self, out: &str, format: &str, force: bool) -> Command {
        let mut c = Command::new(&self.kiln);
        c.args(["-q", "build"])
            .arg(&self.profile_path)
            .arg("--mirror")
            .arg(self.path("mirror"))
            .arg("--cache")
            .arg(self.path("cache"))
            .arg("--out")
            .arg(self.path(out))
            .arg("--firstboot-bin")
            .arg(self.path("kiln-firstboot"))
            .args(["--format", format]);
        if force {
            c.arg("--force");
        }
        c
    }

    fn tarball(&self, out: &str) -> PathBuf {
        self.path(&format!("{out}/{PROFILE}-amd64.tar.gz"))
    }

    fn sysext(&self, out: &str) -> PathBuf {
        self.path(out).join(kiln::outputs::sysext::file_name(&self.profile, Arch::Amd64))
    }
}

fn du_mb(p: &Path) -> f64 {
    run_ok(Command::new("du").arg("-sb").arg(p))
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1e6
}

fn main() {
    let scale: f64 = env_num("KILN_BENCH_SCALE", 1.0);
    let rounds: usize = env_num("KILN_BENCH_ROUNDS", 5).max(5);
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    println!(
        "machine: {} cores available to kiln (nproc {}), load {:.2}; scale {scale}, {rounds} rounds",
        cores(),
        run_ok(&mut Command::new("nproc")).trim(),
        load()
    );
    eprintln!("bench: generating Go-like stand-in artifacts of upstream size x {scale}…");
    let s = Setup::new(t.join("x1"), scale);
    let cold = measure(&s.build("dist", "tar", false));
    println!("stand-in kubelet:        {}", ratios(&s.kubelet));
    match real_go_binary() {
        Ok((p, pkg)) => println!(
            "real Go binary:          {}  ({}, package {pkg})",
            ratios(&std::fs::canonicalize(&p).unwrap_or(p.clone())),
            p.display()
        ),
        Err(why) => println!("real Go binary:          none found: {why}"),
    }
    let tgz = s.tarball("dist");
    let tree = t.join("tree");
    std::fs::create_dir_all(&tree).expect("tree");
    run_ok(Command::new("tar").arg("-xzf").arg(&tgz).arg("-C").arg(&tree));
    println!("tree: {:.1} MB uncompressed ({PROFILE}, amd64)", du_mb(&tree));
    println!("cold build (fetch from mirror dir + pack): {:.2} s", cold.secs);

    // pigz at equal output size: the fastest level whose output is no larger than kiln's.
    let kiln_size = std::fs::metadata(&tgz).map(|m| m.len()).unwrap_or(0);
    let tar_cmd = format!("tar -c --sort=name -C '{}' .", tree.display());
    let pigz_size = |level: u32| -> u64 {
        run_ok(&mut bash(&format!("{tar_cmd} | pigz -{level} -p {} | wc -c", cores()))).trim().parse().unwrap_or(0)
    };
    let mut level = 6;
    let mut size = pigz_size(level);
    if size > kiln_size {
        while size > kiln_size && level < 9 {
            level += 1;
            size = pigz_size(level);
        }
    } else {
        while level > 1 {
            let smaller = pigz_size(level - 1);
            if smaller > kiln_size {
                break;
            }
            level -= 1;
            size = smaller;
        }
    }
    println!(
        "equal size: pigz -{level} gives {:.2} MB, kiln {:.2} MB (fastest pigz level no larger than kiln's{})",
        size as f64 / 1e6,
        kiln_size as f64 / 1e6,
        if size > kiln_size { "; none is, -9 used" } else { "" }
    );
    // The other way round: the fastest kiln level whose output is no larger than pigz -6's.
    let pigz6 = if level == 6 { size } else { pigz_size(6) };
    let mut kiln_level = kiln::outputs::tarball::Compression::GZIP_DEFAULT;
    for l in 1..kiln::outputs::tarball::Compression::GZIP_DEFAULT {
        let mut c = s.build("lvl", "tar", true);
        c.arg("--gzip-level").arg(l.to_string());
        measure(&c);
        if file_mb(&s.tarball("lvl")) * 1e6 <= pigz6 as f64 {
            kiln_level = l;
            break;
        }
    }
    println!(
        "equal size: kiln --gzip-level {kiln_level} is the fastest kiln level no larger than pigz -6 ({:.2} MB)",
        pigz6 as f64 / 1e6
    );

    println!();
    let out = |name: &str| t.join(name);
    let mut one = s.build("one", "tar", true);
    one.env(kiln::outputs::pgzip::THREADS_ENV, "1");
    let mut all = s.build("dist", "tar", true);
    all.env_remove(kiln::outputs::pgzip::THREADS_ENV);
    let mut matched = s.build("lvl", "tar", true);
    matched.arg("--gzip-level").arg(kiln_level.to_string());
    let n = cores();
    let mut tar_block = vec![
        Contender::new(format!("kiln build --format tar ({n} threads)"), all, tgz.clone()),
        Contender::new("kiln build --format tar (KILN_THREADS=1)", one, s.tarball("one")),
        Contender::new(
            format!("tar | pigz -{level} -p {n} (kiln's size)"),
            bash(&format!("{tar_cmd} | pigz -{level} -p {n} > '{}'", out("eq.tar.gz").display())),
            out("eq.tar.gz"),
        ),
        Contender::new(format!("kiln build --gzip-level {kiln_level} (pigz -6's size)"), matched, s.tarball("lvl")),
        Contender::new(
            format!("tar | pigz -6 -p {n}"),
            bash(&format!("{tar_cmd} | pigz -6 -p {n} > '{}'", out("p6.tar.gz").display())),
            out("p6.tar.gz"),
        ),
        Contender::new(
            "kiln build --format tar.zst (zstd -3)",
            s.build("zst", "tar.zst", true),
            s.path(&format!("zst/{PROFILE}-amd64.tar.zst")),
        ),
        Contender::new(
            "tar | zstd -T0 -3",
            bash(&format!("{tar_cmd} | zstd -q -T0 -3 > '{}'", out("z.tar.zst").display())),
            out("z.tar.zst"),
        ),
        Contender::new(
            "tar | gzip -6 (1 thread)",
            bash(&format!("{tar_cmd} | gzip -6 > '{}'", out("g6.tar.gz").display())),
            out("g6.tar.gz"),
        ),
    ];
    interleave("tarball", rounds, &mut tar_block);
    assert!(
        std::fs::read(&tgz).ok() == std::fs::read(s.tarball("one")).ok(),
        "kiln's tarball differs between 1 and {n} threads"
    );
    println!("  (kiln's tarball is byte-identical on 1 and {n} threads)");
    println!("ratios, per round (median [min-max]); a goal is met when the worst round meets it:");
    print_ratio(&tar_block[0], &tar_block[1], None);
    print_ratio(&tar_block[0], &tar_block[2], Some(GOAL_TAR_VS_PIGZ));
    print_ratio(&tar_block[3], &tar_block[4], Some(GOAL_TAR_VS_PIGZ));
    print_ratio(&tar_block[0], &tar_block[4], None);
    print_ratio(&tar_block[5], &tar_block[6], None);
    print_ratio(&tar_block[0], &tar_block[7], None);
    let noop = measure(&s.build("dist", "tar", false));
    println!("no-op rebuild: {:.3} s (goal < {GOAL_NOOP_S} s: {})", noop.secs, verdict(noop.secs < GOAL_NOOP_S));
    let rss = tar_block[0].samples.iter().map(|x| x.rss_mb).fold(0.0, f64::max);
    println!("peak RSS of kiln build: {rss:.1} MB (goal < {GOAL_RSS_MB} MB: {})", verdict(rss < GOAL_RSS_MB));

    // systemd-sysext: kiln's squashfs writer against mksquashfs (same
    // settings: gzip level 9, 128 KiB blocks, all root) and mkfs.erofs on the
    // same /usr tree, extracted from kiln's own image.
    println!();
    measure(&s.build("sx", "sysext", true)); // warm
    let raw = s.sysext("sx");
    let usr = t.join("usr-tree");
    run_ok(Command::new("unsquashfs").arg("-q").arg("-d").arg(&usr).arg(&raw));
    let erofs_version = run_ok(&mut bash("dpkg-query -W -f='${Version}' erofs-utils 2>/dev/null || true"));
    let mut sx_block = vec![
        Contender::new(format!("kiln build --format sysext ({n} threads)"), s.build("sx", "sysext", true), raw),
        Contender::new(
            "mksquashfs -comp gzip -b 128K (kiln's settings)",
            bash(&format!(
                "mksquashfs '{}' '{}' -comp gzip -Xcompression-level 9 -b 131072 -noappend -all-root \
                 -processors {n} -quiet -no-progress >/dev/null",
                usr.display(),
                out("base.sqfs").display()
            )),
            out("base.sqfs"),
        ),
        Contender::new(
            // -T is erofs' fixed timestamp (like kiln's epoch), not a thread count:
            // mkfs.erofs before 1.8 compresses on one thread.
            format!("mkfs.erofs -zlz4hc -T 0 (erofs-utils {erofs_version})"),
            bash(&format!(
                "rm -f '{0}' && mkfs.erofs -zlz4hc -T 0 --all-root --quiet '{0}' '{1}' >/dev/null",
                out("base.erofs").display(),
                usr.display()
            )),
            out("base.erofs"),
        ),
    ];
    interleave("sysext", rounds, &mut sx_block);
    println!("  /usr tree {:.1} MB uncompressed", du_mb(&usr));
    println!("ratios, per round (median [min-max]):");
    print_ratio(&sx_block[0], &sx_block[1], Some(GOAL_SYSEXT_VS_MKSQUASHFS));
    print_ratio(&sx_block[0], &sx_block[2], None);
    println!(
        "  erofs is not offered as a sysext format: its image here is {:.2}x kiln's squashfs (Flatcar's \
         kernel reads erofs with LZ4 only, see README)",
        file_mb(&sx_block[2].output) / file_mb(&sx_block[0].output)
    );

    // Peak RSS as the tree grows: one warm build of each format at 1×, 2×, 4×.
    println!();
    let before = note_load("before", "scaling");
    let mut rows = Vec::new();
    for f in [1u32, 2, 4] {
        let extra = (f > 1).then(|| Setup::new(t.join(format!("x{f}")), scale * f as f64));
        let st = extra.as_ref().unwrap_or(&s);
        if extra.is_some() {
            measure(&st.build("dist", "tar", false)); // fills the cache
                                                      // Let the downloads age past the cache's racy window, then one
                                                      // untimed warm build stamps them, as for the 1x tree.
            std::thread::sleep(kiln::inputs::cache::RACY + std::time::Duration::from_millis(200));
            measure(&st.build("dist", "tar", true));
        }
        let tar = measure(&st.build("dist", "tar", true));
        let sx = measure(&st.build("sx", "sysext", true));
        let tree_mb = tar_tree_mb(&st.tarball("dist"));
        rows.push((f, tree_mb, tar, sx));
        if let Some(st) = extra {
            let _ = std::fs::remove_dir_all(&st.dir);
        }
    }
    let after = note_load("after", "scaling");
    println!("scaling: one warm build each, load {before:.2} before, {after:.2} after");
    for (f, tree_mb, tar, sx) in &rows {
        println!(
            "  tree {f}x ({tree_mb:>7.1} MB): tar {:>6.2} s, peak RSS {:>6.1} MB;  sysext {:>6.2} s, peak RSS {:>6.1} MB",
            tar.secs, tar.rss_mb, sx.secs, sx.rss_mb
        );
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        for (what, a, b) in [("tar", first.2.rss_mb, last.2.rss_mb), ("sysext", first.3.rss_mb, last.3.rss_mb)] {
            println!(
                "  peak RSS {what} 4x/1x: {:.2} (goal <= {GOAL_RSS_GROWTH}, flat: {})",
                b / a,
                verdict(b <= a * GOAL_RSS_GROWTH)
            );
        }
    }
}

/// Uncompressed size of a tarball's members (MB), read through gzip.
fn tar_tree_mb(tgz: &Path) -> f64 {
    run_ok(&mut bash(&format!("gzip -dc '{}' | wc -c", tgz.display()))).trim().parse::<f64>().unwrap_or(0.0) / 1e6
}
