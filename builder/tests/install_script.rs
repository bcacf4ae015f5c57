//! The cloud-config's install script (`/var/lib/kiln/install-image`) run for
//! real with `KILN_INSTALL_ROOT` against a loopback server (issue 24, B16 and
//! B17): links in the root resolve inside it as chroot would; a kill at any
//! point or a full disk leaves either nothing of kiln enabled or the whole
//! verified image, never the download or the staging directory after a rerun;
//! a trickling server is cut off at the documented bound.

use kiln::userdata::{install_script, PublishedImage};
use kiln_testkit::mirror::{Fault, Mirror};
use kiln_testkit::rng::Rng;
use kiln_testkit::standin;
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// One member of a test tarball.
enum Member {
    File(&'static str, Vec<u8>, u32),
    Dir(&'static str),
    Link(&'static str, &'static str),
}

/// A `.tar.gz` (or `.tar.zst`) of `members`, in order, owned by root.
fn tarball(members: &[Member], zstd: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        match m {
            Member::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, &data[..]).unwrap();
            }
            Member::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            Member::Link(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    let raw = b.into_inner().unwrap();
    if zstd {
        zstd::encode_all(&raw[..], 3).unwrap()
    } else {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        gz.finish().unwrap()
    }
}

/// A tarball served on loopback and the install script that pins it.
struct Served {
    _www: tempfile::TempDir,
    server: Mirror,
    script: PathBuf,
}

fn serve(data: &[u8], zstd: bool) -> Served {
    let www = tempfile::tempdir().unwrap();
    let name = if zstd { "img.tar.zst" } else { "img.tar.gz" };
    std::fs::write(www.path().join(name), data).unwrap();
    let server = Mirror::serve(www.path());
    let image = PublishedImage {
        url: format!("{}/{name}", server.url()),
        sha256: standin::sha256(data),
        size: data.len() as u64,
        zstd,
    };
    let script = www.path().join("install-image");
    std::fs::write(&script, install_script(&image)).unwrap();
    Served { _www: www, server, script }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn install(script: &Path, root: &Path, env: &[(&str, &str)]) -> Output {
    let o = Command::new("sh").arg(script).env("KILN_INSTALL_ROOT", root).envs(env.iter().copied()).output().unwrap();
    eprintln!("{}", text(&o));
    o
}

/// Every path under `dir` (relative, sorted), links not followed.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn links_in_the_root_resolve_inside_it_as_chroot_would() {
    for zstd in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let t = std::fs::canonicalize(tmp.path()).unwrap();
        let decoy_opt = t.join("decoy-opt");
        std::fs::create_dir_all(&decoy_opt).unwrap();
        // The root three levels below t: root/etc -> ../../.. is t on the host.
        let root = t.join("a/b/root");
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::os::unix::fs::symlink(&decoy_opt, root.join("opt")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("etc")).unwrap();
        // A disk image's own /var/run -> /run: legitimate, and leads to root/run.
        std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
        let unique = format!("kiln-install-test-{}", std::process::id());
        let run_path: &'static str = Box::leak(format!("var/run/{unique}/flag").into_boxed_str());
        let data = tarball(
            &[
                Member::Dir("opt/bin/"),
                Member::File("opt/bin/kiln-firstboot", b"firstboot".to_vec(), 0o755),
                Member::Dir("etc/systemd/system/"),
                Member::File("etc/systemd/system/kiln-firstboot.service", b"[Unit]\n".to_vec(), 0o644),
                Member::Link(
                    "etc/systemd/system/multi-user.target.wants/kiln-firstboot.service",
                    "/etc/systemd/system/kiln-firstboot.service",
                ),
                Member::File("etc/kiln/image.toml", b"schema = 1\n".to_vec(), 0o644),
                Member::File(run_path, b"run".to_vec(), 0o644),
            ],
            zstd,
        );
        let before_t = tree(&t);
        let s = serve(&data, zstd);
        let o = install(&s.script, &root, &[]);
        assert!(o.status.success(), "{}", text(&o));
        // Nothing outside the root: the decoy stays empty, t gained nothing
        // but what is under the root, the host's /run has no such directory.
        assert!(tree(&decoy_opt).is_empty(), "wrote through opt -> {}: {:?}", decoy_opt.display(), tree(&decoy_opt));
        let outside: Vec<_> = tree(&t).into_iter().filter(|p| !p.starts_with("a/b/root")).collect();
        let before: Vec<_> = before_t.into_iter().filter(|p| !p.starts_with("a/b/root")).collect();
        assert_eq!(outside, before, "wrote through etc -> ../../..");
        assert!(!Path::new("/run").join(&unique).exists(), "wrote through var/run -> /run on the host");
        // Where chroot(root) puts them: opt -> <decoy's path> under the root,
        // etc -> ../../.. is the root itself, var/run -> /run is root/run.
        let opt_in_root = root.join(decoy_opt.strip_prefix("/").unwrap());
        assert_eq!(std::fs::read(opt_in_root.join("bin/kiln-firstboot")).unwrap(), b"firstboot");
        assert_eq!(std::fs::read(root.join("systemd/system/kiln-firstboot.service")).unwrap(), b"[Unit]\n");
        assert_eq!(
            std::fs::read_link(root.join("systemd/system/multi-user.target.wants/kiln-firstboot.service")).unwrap(),
            Path::new("/etc/systemd/system/kiln-firstboot.service")
        );
        assert_eq!(std::fs::read(root.join("kiln/image.toml")).unwrap(), b"schema = 1\n");
        assert_eq!(std::fs::read(root.join("run").join(&unique).join("flag")).unwrap(), b"run");
        // The links themselves are untouched.
        assert_eq!(std::fs::read_link(root.join("opt")).unwrap(), decoy_opt);
        assert_eq!(std::fs::read_link(root.join("etc")).unwrap(), Path::new("../../.."));
        assert_eq!(
            std::fs::read_to_string(root.join("var/lib/kiln/image.sha256")).unwrap().trim(),
            standin::sha256(&data)
        );
    }
}

/// What the kill test's tarball holds: binaries, configs, units and the links enabling them,
/// in kiln's order (etc/ first).
fn node_image(seed: u64) -> Vec<Member> {
    let mut m = vec![Member::Dir("opt/"), Member::Dir("opt/bin/"), Member::Dir("opt/cni/bin/")];
    for (i, (p, len)) in [
        ("opt/bin/kubelet", 3 << 20),
        ("opt/bin/kubeadm", 2 << 20),
        ("opt/bin/kubectl", 2 << 20),
        ("opt/bin/kiln-firstboot", 1 << 20),
        ("opt/bin/containerd", 2 << 20),
        ("opt/bin/runc", 1 << 20),
    ]
    .into_iter()
    .enumerate()
    {
        m.push(Member::File(p, standin::bytes(len, seed + i as u64), 0o755));
    }
    for i in 0..24 {
        let p: &'static str = Box::leak(format!("opt/cni/bin/plugin-{i:02}").into_boxed_str());
        m.push(Member::File(p, standin::bytes(64 << 10, seed + 100 + i), 0o755));
    }
    for (p, body) in [
        ("etc/kiln/image.toml", "schema = 1\n"),
        ("etc/containerd/config.toml", "version = 2\n"),
        ("etc/modules-load.d/kiln.conf", "br_netfilter\n"),
        ("etc/systemd/system/containerd.service", "[Service]\nExecStart=/opt/bin/containerd\n"),
        ("etc/systemd/system/kubelet.service", "[Service]\nExecStart=/opt/bin/kubelet\n"),
        ("etc/systemd/system/kubelet.service.d/10-kubeadm.conf", "[Service]\n"),
        ("etc/systemd/system/kiln-firstboot.service", "[Service]\nExecStart=/opt/bin/kiln-firstboot run\n"),
    ] {
        m.push(Member::File(p, body.as_bytes().to_vec(), 0o644));
    }
    for u in ["containerd.service", "kubelet.service", "kiln-firstboot.service"] {
        let p: &'static str = Box::leak(format!("etc/systemd/system/multi-user.target.wants/{u}").into_boxed_str());
        let t: &'static str = Box::leak(format!("/etc/systemd/system/{u}").into_boxed_str());
        m.push(Member::Link(p, t));
    }
    // In path order, as kiln writes its tarballs: etc/ (units, links) before opt/ (binaries).
    m.sort_by_key(|e| match e {
        Member::File(p, ..) | Member::Dir(p) | Member::Link(p, _) => *p,
    });
    m
}

/// How far an install got, judged from the root alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum State {
    /// No file of the image is there.
    Nothing,
    /// Some files, nothing enabled.
    NothingEnabled,
    /// Every file (binaries and units) complete; some enabling links.
    FilesCompleteLinksPartial,
    /// Every file and link, and the sha256 recorded.
    Complete,
}

/// Checks the invariant of a kill at any point and says which state the root is in:
/// an enabling link only once every regular file is complete, a unit file only once
/// every file outside etc/systemd is complete.
fn judge(root: &Path, members: &[Member], sha: &str) -> Result<State, String> {
    let mut files = BTreeMap::new();
    let mut links = BTreeMap::new();
    for m in members {
        match m {
            Member::File(p, d, _) => {
                files.insert(*p, d);
            }
            Member::Link(p, t) => {
                links.insert(*p, *t);
            }
            Member::Dir(_) => {}
        }
    }
    let ok = |p: &str, d: &[u8]| std::fs::read(root.join(p)).map(|b| b == d).unwrap_or(false);
    let present = |p: &str| std::fs::symlink_metadata(root.join(p)).is_ok();
    let units = |p: &str| p.starts_with("etc/systemd/");
    let enabled: Vec<_> = links.keys().filter(|p| present(p)).collect();
    let unit_files: Vec<_> = files.keys().filter(|p| units(p) && present(p)).collect();
    let bad: Vec<_> = files.iter().filter(|(p, d)| !ok(p, d)).map(|(p, _)| *p).collect();
    let bad_outside: Vec<_> = bad.iter().filter(|p| !units(p)).collect();
    if !enabled.is_empty() && !bad.is_empty() {
        return Err(format!("{enabled:?} enabled while {bad:?} are missing or incomplete"));
    }
    if !unit_files.is_empty() && !bad_outside.is_empty() {
        return Err(format!("unit files {unit_files:?} in place while {bad_outside:?} are missing or incomplete"));
    }
    let marker = std::fs::read_to_string(root.join("var/lib/kiln/image.sha256")).ok();
    if marker.is_some() && (marker.as_deref().map(str::trim) != Some(sha) || enabled.len() != links.len()) {
        return Err(format!("image.sha256 is {marker:?} with {} of {} links", enabled.len(), links.len()));
    }
    for (p, t) in &links {
        if present(p) && std::fs::read_link(root.join(p)).ok().as_deref() != Some(Path::new(t)) {
            return Err(format!("{p} is not a link to {t}"));
        }
    }
    Ok(if marker.is_some() {
        State::Complete
    } else if !enabled.is_empty() {
        State::FilesCompleteLinksPartial
    } else if files.keys().any(|p| present(p)) {
        State::NothingEnabled
    } else {
        State::Nothing
    })
}

/// No process of process group `pgid` is still running (zombies aside).
fn wait_group_gone(pgid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { return false };
            let Some(after) = stat.rsplit_once(") ").map(|x| x.1) else { return false };
            let f: Vec<&str> = after.split(' ').collect();
            f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string()
        });
        if !alive {
            return;
        }
        assert!(Instant::now() < deadline, "process group {pgid} outlived SIGKILL by 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts the script in its own process group (as systemd runs cloud-final in its cgroup).
fn spawn(script: &Path, root: &Path, env: &[(&str, &str)]) -> std::process::Child {
    Command::new("sh")
        .arg(script)
        .env("KILN_INSTALL_ROOT", root)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap()
}

fn signal_group(child: &std::process::Child, sig: i32) -> i32 {
    let pgid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on the process group this test created.
    unsafe { libc::kill(-pgid, sig) };
    pgid
}

/// The line the script logs once the download's sha256 is verified.
const VERIFIED: &str = "kiln-install: sha256 ";
/// The line the script logs when it starts moving the staged image into place.
const MOVING: &str = "kiln-install: moving ";

/// Reads the child's output up to a line starting with `prefix` (`None` if it
/// ends first), then keeps draining it so the script never blocks on a full pipe.
fn wait_for_line(child: &mut std::process::Child, prefix: &str) -> Option<String> {
    use std::io::BufRead;
    let out = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line.starts_with(prefix) {
            std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
            return Some(line.trim().to_string());
        }
    }
}

fn assert_converged(root: &Path, members: &[Member], sha: &str) {
    assert_eq!(judge(root, members, sha), Ok(State::Complete));
    for left in ["var/lib/kiln/.image.download", "var/lib/kiln/.install-staging"] {
        assert!(!root.join(left).exists(), "{left} left behind");
    }
}

#[test]
fn a_kill_at_any_point_leaves_nothing_enabled_or_the_whole_image_and_a_rerun_converges() {
    let seed: u64 = std::env::var("KILN_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x6b69_6c6e_2431_3700);
    eprintln!("kill test seed {seed} (rerun with KILN_KILL_SEED={seed})");
    let members = node_image(seed);
    let data = tarball(&members, false);
    let sha = standin::sha256(&data);
    let s = serve(&data, false);
    let work = tempfile::tempdir().unwrap();
    // One uninterrupted run: how long the whole install takes here.
    let root = work.path().join("full");
    std::fs::create_dir_all(&root).unwrap();
    let t0 = Instant::now();
    let child = spawn(&s.script, &root, &[]);
    let o = child.wait_with_output().unwrap();
    let full = t0.elapsed();
    assert!(o.status.success(), "{}", text(&o));
    assert_converged(&root, &members, &sha);
    eprintln!("an uninterrupted install of {} bytes took {full:?}", data.len());
    let mut rng = Rng(seed);
    let mut seen = BTreeMap::new();
    // Kills 0-6 anywhere in the run; 7-13 once the download is verified
    // (while the image is unpacked and put into place); 14-19 once the files
    // start moving into place (a step only the staged install has), each at a
    // random point of that part of the run as the previous run timed it.
    let mut spans = BTreeMap::from([(None, full)]);
    for i in 0..20 {
        let anchor = match i {
            0..=6 => None,
            7..=13 => Some(VERIFIED),
            _ => Some(MOVING),
        };
        let root = work.path().join(format!("kill-{i}"));
        std::fs::create_dir_all(&root).unwrap();
        let mut child = spawn(&s.script, &root, &[]);
        if let Some(prefix) = anchor {
            if let std::collections::btree_map::Entry::Vacant(slot) = spans.entry(anchor) {
                // Time that part of an uninterrupted run first.
                let rerun = work.path().join(format!("time-{i}"));
                std::fs::create_dir_all(&rerun).unwrap();
                let mut timed = spawn(&s.script, &rerun, &[]);
                if wait_for_line(&mut timed, prefix).is_none() {
                    eprintln!("no {prefix:?} line: kills {i}-19 skipped");
                    let pgid = signal_group(&child, libc::SIGKILL);
                    let _ = child.wait();
                    wait_group_gone(pgid);
                    break;
                }
                let t = Instant::now();
                assert!(timed.wait().unwrap().success());
                slot.insert(t.elapsed());
            }
            assert!(wait_for_line(&mut child, prefix).is_some(), "kill {i}: no {prefix:?} line");
        }
        let span = u64::try_from(spans[&anchor].as_micros()).unwrap() * 6 / 5 + 1;
        let delay = Duration::from_micros(rng.next() % span);
        std::thread::sleep(delay);
        let pgid = signal_group(&child, libc::SIGKILL);
        let _ = child.wait();
        wait_group_gone(pgid);
        let when = match anchor {
            None => format!("{delay:?} after the start"),
            Some(VERIFIED) => format!("{delay:?} after the sha256 was verified"),
            Some(_) => format!("{delay:?} after the moves into place began"),
        };
        let state = judge(&root, &members, &sha).unwrap_or_else(|e| panic!("kill {i}, {when}: {e}"));
        eprintln!("kill {i}, {when}: {state:?}");
        *seen.entry(state).or_insert(0) += 1;
        // The next run converges from wherever the kill left it.
        let o = install(&s.script, &root, &[]);
        assert!(o.status.success(), "rerun after kill {i}: {}", text(&o));
        assert_converged(&root, &members, &sha);
    }
    eprintln!("states after 20 kills (seed {seed}): {seen:?}");
}

#[test]
fn a_full_disk_leaves_nothing_enabled_and_no_download() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0
        || !Command::new("unshare").arg("--help").output().is_ok_and(|o| o.status.success())
    {
        eprintln!("!!! SKIPPED: needs root and unshare(1) to mount a size-limited tmpfs as the install root");
        return;
    }
    let members = node_image(7);
    let data = tarball(&members, false);
    let s = serve(&data, false);
    let work = tempfile::tempdir().unwrap();
    let kib = data.len() / 1024;
    // Smaller than the download; room for the download but not its unpacked
    // copy beside it; room for both (the most the install ever needs).
    for (size_kib, fits, what) in
        [(kib / 2, false, "downloading"), (kib * 3 / 2, false, "unpacking"), (kib * 2 + 1024, true, "")]
    {
        let root = work.path().join(format!("tmpfs-{size_kib}"));
        std::fs::create_dir_all(&root).unwrap();
        // In a private mount namespace: the tmpfs vanishes with it, and the
        // checks (a listing and the files' sha256) run inside it.
        let sh = format!(
            "set -u; mount -t tmpfs -o size={size_kib}k tmpfs \"$R\" || exit 99; sh \"$S\"; echo \"rc=$?\"; \
             cd \"$R\" && find . -mindepth 1 | sort | sed 's/^/path /'"
        );
        let o = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &sh])
            .env("R", &root)
            .env("S", &s.script)
            .env("KILN_INSTALL_ROOT", &root)
            .output()
            .unwrap();
        let out = text(&o);
        eprintln!("{size_kib} KiB:\n{out}");
        let paths: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("path ./")).collect();
        if fits {
            assert!(out.contains("rc=0"), "{out}");
            for m in &members {
                if let Member::File(p, ..) | Member::Link(p, _) = m {
                    assert!(paths.contains(p), "{p} missing: {out}");
                }
            }
            assert!(paths.contains(&"var/lib/kiln/image.sha256"));
        } else {
            assert!(out.contains("rc=1"), "{out}");
            assert!(out.contains(&format!("kiln-install: no space left while {what}")), "{out}");
            assert!(out.contains("nothing was installed"), "{out}");
            // Only the state directory is left: no download, no staging, no file of the image.
            assert_eq!(paths, ["var", "var/lib", "var/lib/kiln"], "{out}");
        }
    }
}

#[test]
fn a_trickling_server_is_cut_off_at_the_deadline_and_a_stopped_run_cleans_up() {
    let data = tarball(&[Member::File("opt/bin/kubelet", standin::bytes(1 << 20, 3), 0o755)], false);
    let s = serve(&data, false);
    s.server.fault("/img.tar.gz", Fault::Throttle(40_000));
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let t0 = Instant::now();
    let o = install(&s.script, &root, &[("KILN_INSTALL_TIMEOUT", "2")]);
    let took = t0.elapsed();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // The bound is on the download; python's start on a loaded machine comes on top.
    assert!(took < Duration::from_secs(10), "took {took:?} against a 2 s bound");
    let out = text(&o);
    assert!(out.contains("kiln-install: could not download") && out.contains("within 2s"), "{out}");
    assert!(out.contains("rerun with KILN_INSTALL_TIMEOUT=SECONDS; nothing was installed"), "{out}");
    assert_eq!(tree(&root), ["var", "var/lib", "var/lib/kiln"], "a partial download was left");
    // A run stopped by SIGTERM mid-download (systemd stopping cloud-final) removes its download.
    let mut child = spawn(&s.script, &root, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !root.join("var/lib/kiln/.image.download").exists() {
        assert!(Instant::now() < deadline, "no download started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let pgid = signal_group(&child, libc::SIGTERM);
    let _ = child.wait();
    wait_group_gone(pgid);
    assert_eq!(tree(&root), ["var", "var/lib", "var/lib/kiln"], "SIGTERM left a partial download");
    // The timeout is checked.
    let o = install(&s.script, &root, &[("KILN_INSTALL_TIMEOUT", "soon")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("KILN_INSTALL_TIMEOUT=soon is not a number of seconds"), "{}", text(&o));
}
