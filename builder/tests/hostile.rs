//! Hostile inputs to `kiln build`/`kiln pin` on the downloads, cache and
//! outputs side (issue 10, B5–B9 and the weak points around them), against a
//! loopback mirror that misbehaves on request.

mod common;

use common::*;
use kiln_testkit::mirror::Fault;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

const KUBELET: &str = "/release/v1.34.2/bin/linux/amd64/kubelet";

/// Runs `c` with a time limit; panics naming `what` when it does not end in time.
fn run_within(c: &mut Command, limit: Duration, what: &str) -> Output {
    let child = c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("{what}: still running after {limit:?} (hangs or fills the disk)");
        }
    }
}

/// `sha256sum -c SHA256SUMS` in `dir` with coreutils; returns (success, output).
fn sha256sum_c(dir: &Path) -> (bool, String) {
    let o = Command::new("sha256sum").arg("-c").arg("SHA256SUMS").current_dir(dir).output().unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

/// Every file kiln left in the cache's `tmp/`.
fn cache_tmp(s: &Scratch, cache: &str) -> Vec<String> {
    files_in(&s.path(&format!("{cache}/tmp")))
}

// ---------------------------------------------------------------- B5

/// B5: an overlay file that changes size between planning and packing fails
/// the build; no tarball, no manifest, no SHA256SUMS.
#[test]
fn b5_an_overlay_file_resized_while_packing_fails_the_build() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let file = s.path("overlays/base/etc/kiln-big");
    for (case, after) in [("shrunk", vec![b'y'; 100]), ("grown", vec![b'z'; 3 << 20])] {
        std::fs::write(&file, vec![b'x'; 1 << 20]).unwrap();
        let marker = s.path("paused");
        let out = format!("dist-{case}");
        let mut child = s
            .build_cmd("flatcar-1.34", "cache", &out)
            .env("KILN_FAILPOINT", format!("pause-before-pack:{}", marker.display()))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !marker.exists() && child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::write(&file, &after).unwrap();
        let _ = std::fs::remove_file(&marker);
        let o = child.wait_with_output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{case}: {err}");
        assert!(err.contains("overlays/base/etc/kiln-big") && err.contains("changed while"), "{case}: {err}");
        assert!(files_in(&s.path(&out)).is_empty(), "{case}: {:?}", files_in(&s.path(&out)));
    }
    // Left alone, the same overlay builds.
    let o = run(&mut s.build_cmd("flatcar-1.34", "cache", "dist"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(sha256sum_c(&s.path("dist")).0);
}

// ---------------------------------------------------------------- B6

/// B6: a mirror redirect to a non-HTTP scheme is a clear error (exit 1),
/// never a crash; a redirect to another http URL is followed.
#[test]
fn b6_mirror_redirects_to_other_schemes_are_refused_and_http_ones_followed() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    for target in ["file:///etc/passwd", "data:,hello", "unix:/run/docker.sock", "javascript:alert(1)", "ftp://x/y"] {
        s.mirror.fault(KUBELET, Fault::Redirect(target.into()));
        let o = run_within(
            s.build_cmd("flatcar-1.34", "cache", "dist").args(["--attempts", "1"]),
            Duration::from_secs(60),
            target,
        );
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{target}: {err}");
        assert!(err.contains("redirect") && err.contains(target) && err.contains("http"), "{target}: {err}");
        assert!(files_in(&s.path("dist")).is_empty());
        // `kiln pin` reads checksum files through the same redirect rules.
        s.mirror.fault(&format!("{KUBELET}.sha256"), Fault::Redirect(target.into()));
        let o = run_within(
            kiln().arg("pin").arg("--profile").arg(s.profile("flatcar-1.34")).arg("--base-url").arg(s.mirror.url()),
            Duration::from_secs(60),
            target,
        );
        assert_eq!(o.status.code(), Some(1), "pin {target}: {}", stderr(&o));
        assert!(stderr(&o).contains("redirect"), "pin {target}: {}", stderr(&o));
        s.mirror.clear_faults();
    }
    // An endless redirect loop ends with a clear error too.
    s.mirror.fault(KUBELET, Fault::Redirect(KUBELET.into()));
    let o = run_within(
        s.build_cmd("flatcar-1.34", "cache", "dist").args(["--attempts", "1"]),
        Duration::from_secs(60),
        "loop",
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("redirect"), "{}", stderr(&o));
    // Relative and absolute http redirects to where the file really is are followed.
    let data = std::fs::read(s.mirror.root().join(KUBELET.trim_start_matches('/'))).unwrap();
    kiln_testkit::standin::publish(s.mirror.root(), "/moved/kubelet", &data, false);
    s.mirror.fault(KUBELET, Fault::Redirect("../../../../../moved/kubelet".into()));
    let o = run(&mut s.build_cmd("flatcar-1.34", "cache-rel", "dist-rel"));
    assert!(o.status.success(), "{}", stderr(&o));
    s.mirror.fault(KUBELET, Fault::Redirect(format!("{}/moved/kubelet", s.mirror.url())));
    let o = run(&mut s.build_cmd("flatcar-1.34", "cache-abs", "dist-abs"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(s.mirror.gets("/moved/kubelet") >= 2);
}

/// Survivor "the redirect limit raised from 10 to 1000": a loopback server
/// chains N redirects before the file. 10 hops (`kiln::inputs::fetch::MAX_REDIRECTS`,
/// Go's `defaultCheckRedirect` bound) are followed to the file; 11 are refused
/// with an error naming the 11th redirect and the limit, after exactly 11
/// requests (kiln never asks for the 12th hop).
#[test]
fn b6_ten_redirects_are_followed_and_the_eleventh_is_refused_naming_the_count() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("file.sha256"), "abc  file\n").unwrap();
    let m = kiln_testkit::mirror::Mirror::serve(root.path());
    let opts = kiln::inputs::fetch::FetchOptions { attempts: 1, ..Default::default() };
    let agent = kiln::inputs::fetch::agent(Duration::from_secs(10));
    for hops in [10usize, 11] {
        let hop = |i: usize| format!("/h{hops}/{i}");
        for i in 1..=hops {
            let next = if i == hops { "/file.sha256".to_string() } else { hop(i + 1) };
            m.fault(&hop(i), Fault::Redirect(format!("{}{next}", m.url())));
        }
        let before = m.log().len();
        let got = kiln::inputs::fetch::fetch_text(&opts, &agent, &format!("{}{}", m.url(), hop(1)));
        let requests = m.log().len() - before;
        if hops == 10 {
            assert_eq!(got.expect("10 redirects are followed"), "abc  file\n");
            assert_eq!(requests, 11, "10 redirects and the file");
        } else {
            let err = got.expect_err("an 11th redirect must be refused").to_string();
            assert!(err.contains("redirect 11 ") && err.contains("at most 10 redirects"), "{err}");
            assert!(err.contains(&format!("(to `{}/file.sha256`)", m.url())), "names the refused redirect: {err}");
            assert_eq!(requests, 11, "kiln stops without requesting the 12th URL");
        }
    }
}

// ---------------------------------------------------------------- B7

/// B7: `kiln pin` records sizes; an endless body stops at the pinned size and
/// leaves nothing in the cache.
#[test]
fn b7_an_endless_body_stops_at_the_pinned_size() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let text = std::fs::read_to_string(s.profile("flatcar-1.34")).unwrap();
    let kubelet_size = (KUBELET_SIZE + 64).to_string();
    assert!(
        text.lines().any(|l| l.starts_with("size.amd64") && l.contains(&kubelet_size)),
        "kiln pin wrote no size for kubelet:\n{text}"
    );

    s.mirror.fault(KUBELET, Fault::Endless);
    let o = run_within(
        s.build_cmd("flatcar-1.34", "cache", "dist").args(["--attempts", "2"]),
        Duration::from_secs(60),
        "endless body",
    );
    let err = stderr(&o);
    // The bytes contradict the pin: a verification failure, like a checksum mismatch.
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains(&format!("more than the pinned size of {kubelet_size} bytes")), "{err}");
    assert!(files_in(&s.path("dist")).is_empty());
    assert!(cache_tmp(&s, "cache").is_empty(), "{:?}", cache_tmp(&s, "cache"));
}

/// B7 (mirror directory): a FIFO or a device as a mirror entry is refused at
/// once instead of hanging or filling the disk.
#[test]
fn b7_a_fifo_or_device_in_a_mirror_directory_is_refused() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let entry = s.mirror.root().join(KUBELET.trim_start_matches('/'));
    for kind in ["fifo", "/dev/zero"] {
        std::fs::remove_file(&entry).unwrap();
        if kind == "fifo" {
            assert!(Command::new("mkfifo").arg(&entry).status().unwrap().success());
        } else {
            std::os::unix::fs::symlink(kind, &entry).unwrap();
        }
        let o = run_within(
            s.build_cmd_upstream(&[&s.profile("flatcar-1.34")], "cache", "dist")
                .args(["--offline", "--format", "tar"])
                .arg("--mirror")
                .arg(s.mirror.root()),
            Duration::from_secs(60),
            kind,
        );
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{kind}: {err}");
        assert!(err.contains("not a regular file"), "{kind}: {err}");
        assert!(cache_tmp(&s, "cache").is_empty(), "{:?}", cache_tmp(&s, "cache"));
    }
    // The same for --firstboot-bin (a configuration error).
    let fifo = s.path("fifo-firstboot");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let o = run_within(
        kiln()
            .args(["build", "--format", "tar"])
            .arg(s.profile("flatcar-1.34"))
            .arg("--firstboot-bin")
            .arg(format!("amd64={}", fifo.display()))
            .arg("--cache")
            .arg(s.path("cache"))
            .arg("--out")
            .arg(s.path("dist")),
        Duration::from_secs(60),
        "fifo firstboot",
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a regular file"), "{}", stderr(&o));
}

// ---------------------------------------------------------------- B8

/// A scratch with `flatcar-1.34` pinned and built once into `dist`.
fn built_once() -> (Scratch, std::path::PathBuf) {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let o = run(&mut s.build_cmd("flatcar-1.34", "cache", "dist"));
    assert!(o.status.success(), "{}", stderr(&o));
    let dist = s.path("dist");
    (s, dist)
}

/// B8: killed inside the commit step, `dist/` still holds one consistent set
/// (the old one) that `sha256sum -c` accepts; the next build commits the new one.
#[test]
fn b8_a_build_killed_inside_the_commit_leaves_a_consistent_dist() {
    let (s, dist) = built_once();
    let old_sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    assert!(sha256sum_c(&dist).0);
    std::fs::write(s.path("overlays/base/etc/kiln-motd"), "new\n").unwrap();
    for point in ["commit-after-first-rename", "commit-before-switch"] {
        let o = run(s.build_cmd("flatcar-1.34", "cache", "dist").env("KILN_FAILPOINT", point));
        assert!(o.status.code().is_none(), "{point}: the failpoint did not stop kiln: {}", stderr(&o));
        let (ok, report) = sha256sum_c(&dist);
        assert!(ok, "{point}: dist/ is inconsistent after a kill in the commit:\n{report}");
        assert_eq!(std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap(), old_sums, "{point}");
    }
    // Killed after the switch: the new set, complete.
    let o = run(s.build_cmd("flatcar-1.34", "cache", "dist").env("KILN_FAILPOINT", "commit-after-switch"));
    assert!(o.status.code().is_none(), "{}", stderr(&o));
    let (ok, report) = sha256sum_c(&dist);
    assert!(ok, "{report}");
    assert_ne!(std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap(), old_sums);
    // And a normal build afterwards is up to date, then rebuilds cleanly with --force.
    let o = run(&mut s.build_cmd("flatcar-1.34", "cache", "dist"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("up to date"), "{}", stderr(&o));
    let o = run(s.build_cmd("flatcar-1.34", "cache", "dist").arg("--force"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(sha256sum_c(&dist).0);
    assert_eq!(files_in(&dist), ["SHA256SUMS", "flatcar-1.34-amd64.tar.gz", "manifest.json"]);
    // The debris of the killed builds is gone: the current and previous generations and the lock.
    let mut left: Vec<String> = std::fs::read_dir(s.path("dist.gen"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    left.retain(|f| f != kiln::build::PROFILE_REGISTRY); // which profile file each name is built from
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left.contains(&"lock".to_string()), "{left:?}");
}

/// An inotify watch on the entries of one directory (not its subdirectories).
/// The kernel queues every event, so nothing between two syscalls is missed;
/// it merges an event only into an identical one just before it, so the
/// caller drains after each step it counts.
struct Watch(std::os::fd::OwnedFd);

impl Watch {
    fn new(dir: &Path) -> Watch {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: plain syscall; the descriptor is owned right after.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1: {}", std::io::Error::last_os_error());
        // SAFETY: fd is a fresh descriptor nothing else owns.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
        let mask = libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_MOVED_TO;
        // SAFETY: fd is an inotify descriptor, c a NUL-terminated path.
        assert!(unsafe { libc::inotify_add_watch(fd, c.as_ptr(), mask) } >= 0, "{}", std::io::Error::last_os_error());
        Watch(owned)
    }

    /// The events queued so far, as (entry name, mask), in order.
    fn drain(&self) -> Vec<(String, u32)> {
        use std::os::fd::AsRawFd;
        let mut events = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            // SAFETY: buf is valid for buf.len() bytes.
            let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return events;
            }
            let mut i = 0;
            while i + 16 <= n as usize {
                let word = |k: usize| u32::from_ne_bytes(buf[i + k..i + k + 4].try_into().unwrap());
                let (mask, len) = (word(4), word(12) as usize);
                let name = buf[i + 16..i + 16 + len].split(|&b| b == 0).next().unwrap_or_default();
                assert_eq!(mask & libc::IN_Q_OVERFLOW, 0, "the inotify queue overflowed: events were lost");
                events.push((String::from_utf8_lossy(name).into_owned(), mask));
                i += 16 + len;
            }
        }
    }
}

/// Survivor "`dist` removed before the symlink switch": over several
/// rebuilds, the kernel's own record of the output directory's parent shows
/// `dist` never deleted or moved away — each commit replaces the link with one
/// `rename(2)` onto it (one `IN_MOVED_TO`), so there is no instant at which
/// `dist` is absent. Deterministic: inotify queues every event, no timing.
/// And while a commit is held just before its switch, `dist` is the old,
/// complete set.
#[test]
fn b8_each_commit_switches_dist_with_one_rename_and_never_removes_it() {
    let (s, dist) = built_once();
    let watch = Watch::new(&s.path(""));
    for i in 0..3 {
        std::fs::write(s.path("overlays/base/etc/kiln-motd"), format!("round {i}\n")).unwrap();
        let o = run(&mut s.build_cmd("flatcar-1.34", "cache", "dist"));
        assert!(o.status.success(), "round {i}: {}", stderr(&o));
        assert!(sha256sum_c(&dist).0, "round {i}");
        let events = watch.drain();
        let on_dist: Vec<u32> = events.iter().filter(|(n, _)| n == "dist").map(|(_, m)| *m).collect();
        assert_eq!(
            on_dist,
            [libc::IN_MOVED_TO],
            "round {i}: the commit must be one rename onto dist, never a removal (readers would find no dist/): {events:?}"
        );
    }
    // Held just before the switch: dist/ is still the previous complete set.
    let old_sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    std::fs::write(s.path("overlays/base/etc/kiln-motd"), "held\n").unwrap();
    let hold = s.path("hold");
    let mut child = s
        .build_cmd("flatcar-1.34", "cache", "dist")
        .env("KILN_FAILPOINT", format!("commit-before-switch:{}", hold.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !hold.exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "the build never reached commit-before-switch");
        assert!(child.try_wait().unwrap().is_none(), "the build ended before commit-before-switch");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (ok, report) = sha256sum_c(&dist);
    std::fs::remove_file(&hold).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(ok, "dist/ while a commit is held before its switch:\n{report}");
    assert_ne!(std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap(), old_sums, "the held build committed");
}

// ---------------------------------------------------------------- B9

/// B9: two profiles built at the same time into one `dist/` both end up in
/// `manifest.json` and `SHA256SUMS` — every round, not by luck.
#[test]
fn b9_concurrent_builds_of_two_profiles_into_one_dist_keep_both() {
    let names = ["flatcar-1.34", "flatcar-1.33"];
    let s = Scratch::new(&names);
    for n in names {
        s.pin(n);
        // Warm the cache so the two builds overlap in packing and committing.
        let o = run(&mut s.build_cmd(n, "cache", "warm"));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for round in 0..4 {
        let out = format!("dist-{round}");
        let children: Vec<Child> = names
            .iter()
            .map(|n| s.build_cmd(n, "cache", &out).stderr(std::process::Stdio::piped()).spawn().unwrap())
            .collect();
        for c in children {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success(), "round {round}: {}", stderr(&o));
        }
        let dir = s.path(&out);
        let m = manifest(&dir);
        let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
        for n in names {
            assert!(m["profiles"][n]["outputs"].as_array().is_some_and(|o| !o.is_empty()), "round {round}: {n} lost");
            assert!(sums.contains(&format!("{n}-amd64.tar.gz")), "round {round}: {n} not in SHA256SUMS:\n{sums}");
        }
        let (ok, report) = sha256sum_c(&dir);
        assert!(ok, "round {round}: {report}");
    }
}

// ---------------------------------------------------------------- weak points

/// A corrupt cache blob is removed and fetched again; the build succeeds.
#[test]
fn a_corrupt_cache_blob_is_removed_and_fetched_again() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let o = run(&mut s.build_cmd("flatcar-1.34", "cache", "dist"));
    assert!(o.status.success(), "{}", stderr(&o));
    let p = kiln::inputs::profile::Profile::load(&s.profile("flatcar-1.34")).unwrap();
    let arts = p.artifacts_for(kiln::inputs::profile::Arch::Amd64).unwrap();
    let kubeadm = &arts.iter().find(|a| a.name == "kubeadm").unwrap().sha256;
    let cni = &arts.iter().find(|a| a.name == "cni-plugins").unwrap().sha256;
    for sha in [kubeadm, cni] {
        let blob = s.path(&format!("cache/sha256/{sha}"));
        let mut b = std::fs::read(&blob).unwrap();
        b[77] ^= 1;
        std::fs::write(&blob, b).unwrap();
    }
    let before = s.mirror.log().len();
    let o = run(s.build_cmd("flatcar-1.34", "cache", "dist2").arg("--force"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("corrupt"), "{}", stderr(&o));
    let gets = s.mirror.log().iter().skip(before).filter(|(m, _, _)| m == "GET").count();
    assert_eq!(gets, 2, "{:?}", s.mirror.log());
    for sha in [kubeadm, cni] {
        assert_eq!(&kiln::hash::sha256_file(&s.path(&format!("cache/sha256/{sha}"))).unwrap(), sha);
    }
    assert_eq!(
        std::fs::read(s.path("dist/flatcar-1.34-amd64.tar.gz")).unwrap(),
        std::fs::read(s.path("dist2/flatcar-1.34-amd64.tar.gz")).unwrap()
    );
}

/// An extracted member edited together with the extraction index is not
/// trusted: it is extracted again from the verified tarball.
#[test]
fn an_extracted_member_edited_with_its_index_is_extracted_again() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let o = run(&mut s.build_cmd("flatcar-1.34", "cache", "dist"));
    assert!(o.status.success(), "{}", stderr(&o));
    let p = kiln::inputs::profile::Profile::load(&s.profile("flatcar-1.34")).unwrap();
    let arts = p.artifacts_for(kiln::inputs::profile::Arch::Amd64).unwrap();
    let crictl = &arts.iter().find(|a| a.name == "crictl").unwrap().sha256;
    let dir = s.path(&format!("cache/extract/{crictl}"));
    let evil = b"#!/bin/sh\necho pwned\n".to_vec();
    std::fs::write(dir.join("crictl"), &evil).unwrap();
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    for m in index.as_array_mut().unwrap() {
        if m["name"] == "crictl" {
            m["size"] = evil.len().into();
            m["sha256"] = kiln_testkit::standin::sha256(&evil).into();
        }
    }
    std::fs::write(dir.join("index.json"), serde_json::to_string(&index).unwrap()).unwrap();
    let o = run(s.build_cmd("flatcar-1.34", "cache", "dist2").arg("--force"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(s.path("dist/flatcar-1.34-amd64.tar.gz")).unwrap(),
        std::fs::read(s.path("dist2/flatcar-1.34-amd64.tar.gz")).unwrap(),
        "the edited member reached the image"
    );
    assert_ne!(std::fs::read(dir.join("crictl")).unwrap(), evil);
}

/// The up-to-date check compares content, not sizes: an output altered in
/// place (same size) is rebuilt.
#[test]
fn the_up_to_date_check_compares_content_hashes() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let o = run(&mut s.build_cmd("flatcar-1.34", "cache", "dist"));
    assert!(o.status.success(), "{}", stderr(&o));
    let tgz = s.path("dist/flatcar-1.34-amd64.tar.gz");
    let good = std::fs::read(&tgz).unwrap();
    let mut bad = good.clone();
    bad[5000] ^= 0x40;
    std::fs::write(&tgz, &bad).unwrap();
    assert!(!sha256sum_c(&s.path("dist")).0);
    let o = run(&mut s.build_cmd("flatcar-1.34", "cache", "dist"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("up to date"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&tgz).unwrap(), good);
    assert!(sha256sum_c(&s.path("dist")).0);
}

/// A `dist/` directory from an older kiln moves into the generation layout;
/// one holding files kiln did not write is left alone with a clear error.
#[test]
fn an_old_layout_dist_directory_is_migrated_or_refused() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let o = run(&mut s.build_cmd("flatcar-1.34", "cache", "new"));
    assert!(o.status.success(), "{}", stderr(&o));
    // An old-layout directory: plain files, as kiln wrote them before.
    for (dir, extra) in [("dist", None), ("keep", Some("notes.txt"))] {
        let d = s.path(dir);
        std::fs::create_dir_all(&d).unwrap();
        for f in files_in(&s.path("new")) {
            std::fs::copy(s.path("new").join(&f), d.join(&f)).unwrap();
        }
        if let Some(x) = extra {
            std::fs::write(d.join(x), "mine\n").unwrap();
        }
        let o = run(s.build_cmd("flatcar-1.34", "cache", dir).arg("--force"));
        if extra.is_some() {
            assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
            assert!(stderr(&o).contains("notes.txt"), "{}", stderr(&o));
            assert!(std::fs::symlink_metadata(&d).unwrap().is_dir());
            assert_eq!(std::fs::read_to_string(d.join("notes.txt")).unwrap(), "mine\n");
        } else {
            assert!(o.status.success(), "{}", stderr(&o));
            assert!(std::fs::symlink_metadata(&d).unwrap().file_type().is_symlink());
            assert!(sha256sum_c(&d).0);
            assert_eq!(files_in(&d), files_in(&s.path("new")));
        }
    }
}

/// Outputs an earlier build wrote and the new build does not are not left
/// looking current: they leave `dist/`, `manifest.json` and `SHA256SUMS`.
#[test]
fn outputs_a_rebuild_no_longer_writes_do_not_stay_current() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let o = run(s.build_cmd("flatcar-1.34", "cache", "dist").args(["--format", "tar", "--format", "sysext"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let dist = s.path("dist");
    assert!(files_in(&dist).contains(&"kubernetes-v1.34.2-flatcar-1.34-amd64.raw".to_string()));
    let o = run(s.build_cmd("flatcar-1.34", "cache", "dist").args(["--format", "tar"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(files_in(&dist), ["SHA256SUMS", "flatcar-1.34-amd64.tar.gz", "manifest.json"]);
    assert!(!std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap().contains(".raw"));
    assert!(!std::fs::read_to_string(dist.join("manifest.json")).unwrap().contains(".raw\""));
    assert!(sha256sum_c(&dist).0);
}
