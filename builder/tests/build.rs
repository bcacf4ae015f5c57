//! End-to-end tests of `kiln build` and `kiln pin` against a loopback mirror.

mod common;

use common::*;
use std::process::Command;

fn tar_listing(path: &std::path::Path) -> String {
    let o = Command::new("tar").arg("-tvzf").arg(path).output().expect("tar");
    assert!(o.status.success(), "tar -tvzf {}: {}", path.display(), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// The line of `tar -tv` output for `path`, split into fields.
fn entry<'a>(listing: &'a str, path: &str) -> Vec<&'a str> {
    listing
        .lines()
        .find(|l| l.split_whitespace().nth(5) == Some(path))
        .unwrap_or_else(|| panic!("{path} not in tarball:\n{listing}"))
        .split_whitespace()
        .collect()
}

#[test]
fn every_shipped_profile_repins_to_a_mirror_and_builds() {
    let names = ["fcos-1.34", "flatcar-1.34", "rpi-1.34", "flatcar-1.33"];
    let s = Scratch::new(&names);
    for name in names {
        let before = std::fs::read_to_string(s.profile(name)).unwrap();
        let o = s.pin(name);
        let diff = String::from_utf8_lossy(&o.stdout).to_string();
        let after = std::fs::read_to_string(s.profile(name)).unwrap();
        // Stand-ins differ from upstream, so every pin changes; comments survive.
        assert!(diff.contains("-sha256.") && diff.contains("+sha256."), "{diff}");
        assert_ne!(before, after);
        for comment in before.lines().filter(|l| l.starts_with('#')) {
            assert!(after.contains(comment), "comment lost: {comment}");
        }
        let o = run(&mut s.build_cmd(name, "cache", "dist"));
        assert!(o.status.success(), "build {name}: {}", stderr(&o));

        let profile = kiln::inputs::profile::Profile::load(&s.profile(name)).unwrap();
        for arch in profile.architectures() {
            let tgz = s.path(&format!("dist/{name}-{arch}.tar.gz"));
            let l = tar_listing(&tgz);
            let kubelet = entry(&l, "opt/bin/kubelet");
            assert_eq!(kubelet[0], "-rwxr-xr-x", "{kubelet:?}");
            assert_eq!(kubelet[1], "root/root");
            assert_eq!(kubelet[2], KUBELET_SIZE.saturating_add(64).to_string());
            for bin in [
                "opt/bin/kubeadm",
                "opt/bin/kubectl",
                "opt/bin/crictl",
                "opt/bin/kiln-firstboot",
                "opt/cni/bin/bridge",
                "opt/cni/bin/portmap",
            ] {
                assert_eq!(entry(&l, bin)[0], "-rwxr-xr-x", "{bin}");
            }
            assert_eq!(entry(&l, "opt/libexec/kubernetes/kubelet-plugins/volume/exec/")[0], "drwxr-xr-x");
            for unit in [
                "kubelet.service",
                "kubelet.service.d/10-kubeadm.conf",
                "kiln-firstboot.service",
                "kiln-approve-csrs.service",
                "kiln-approve-csrs.timer",
            ] {
                assert_eq!(entry(&l, &format!("etc/systemd/system/{unit}"))[0], "-rw-r--r--", "{unit}");
            }
            assert!(entry(&l, "etc/systemd/system/multi-user.target.wants/kubelet.service")[0].starts_with('l'));
            // Row 37: the serving-CSR approval runs by itself (enabled at boot).
            assert!(entry(&l, "etc/systemd/system/timers.target.wants/kiln-approve-csrs.timer")[0].starts_with('l'));
            entry(&l, "etc/kiln/image.toml");
            entry(&l, "etc/sysctl.d/90-kiln-kubernetes.conf");
            entry(&l, "etc/modules-load.d/kiln-kubernetes.conf");
            entry(&l, "etc/crictl.yaml");
            // Nothing may land under /usr on read-only-/usr families.
            if name.starts_with("fcos") || name.starts_with("flatcar") {
                assert!(!l.lines().any(|x| x.split_whitespace().nth(5).is_some_and(|p| p.starts_with("usr/"))), "{l}");
            }
            // Every entry: mtime = the profile's epoch (2025-11-12), owner root.
            assert!(l.lines().all(|x| x.contains("root/root") && x.contains("2025-11-12")), "{l}");
        }
        // SHA256SUMS verifies with coreutils.
        let o = Command::new("sha256sum").arg("-c").arg("SHA256SUMS").current_dir(s.path("dist")).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("dist/manifest.json")).unwrap()).unwrap();
    for name in names {
        assert!(
            m["profiles"][name]["outputs"].as_array().is_some_and(|o| !o.is_empty()),
            "{name} missing from manifest"
        );
    }
    let kubelet = m["profiles"]["fcos-1.34"]["trees"]["arm64"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/opt/bin/kubelet")
        .cloned()
        .unwrap();
    assert_eq!(kubelet["mode"], "0755");
    assert_eq!(kubelet["origin"]["kind"], "artifact");
    assert!(kubelet["origin"]["url"]
        .as_str()
        .unwrap()
        .starts_with("https://dl.k8s.io/release/v1.34.2/bin/linux/arm64/"));
}

/// Seed row 4 (install guide, "Forwarding IPv4 and letting iptables see bridged
/// traffic"): every shipped profile's image, for each of its architectures, loads
/// `overlay` and `br_netfilter` at boot (modules-load.d) and sets the bridge-nf-call
/// sysctls and `net.ipv4.ip_forward` to 1 (sysctl.d), so systemd-modules-load and
/// systemd-sysctl have them right before kiln-firstboot or kubelet start. The tarball
/// test only sees that the files exist; this reads what they say.
#[test]
fn every_image_loads_br_netfilter_and_sets_kubeadms_sysctls_at_boot() {
    use kiln::image::tree::{Content, Node, Tree};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().and_then(|x| x.to_str()) != Some("toml") {
            continue;
        }
        let p = kiln::inputs::profile::Profile::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for arch in p.architectures() {
            let mut tree = Tree::new();
            kiln::image::render::render(&p, arch, &mut tree)
                .unwrap_or_else(|e| panic!("{} {arch}: {e}", path.display()));
            let text = |name: &str| -> String {
                let found = tree.iter().find(|(k, _)| k.as_str() == name).map(|(_, e)| &e.node);
                match found {
                    Some(Node::File(Content::Inline(b))) => String::from_utf8_lossy(b).into_owned(),
                    _ => panic!("{} {arch}: no /{name} in the image", path.display()),
                }
            };
            let body = |t: &str| -> Vec<String> {
                t.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
            };
            let modules = body(&text("etc/modules-load.d/kiln-kubernetes.conf"));
            for m in ["overlay", "br_netfilter"] {
                assert!(
                    modules.iter().any(|l| l == m),
                    "{} {arch}: {m} not loaded at boot: {modules:?}",
                    path.display()
                );
            }
            let sysctls = body(&text("etc/sysctl.d/90-kiln-kubernetes.conf"));
            for k in
                ["net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables", "net.ipv4.ip_forward"]
            {
                assert!(
                    sysctls.iter().any(|l| *l == format!("{k} = 1")),
                    "{} {arch}: {k} is not 1: {sysctls:?}",
                    path.display()
                );
            }
            seen += 1;
        }
    }
    assert!(seen >= 7, "only {seen} profile/architecture pairs rendered");
}

#[test]
fn builds_are_byte_identical_across_caches_and_working_dirs() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    for (cache, out, cwd) in [("cache-a", "out-a", "."), ("cache-b", "out-b", "profiles")] {
        std::fs::create_dir_all(s.path(cwd)).unwrap();
        let o = run(s.build_cmd("flatcar-1.34", cache, out).current_dir(s.path(cwd)));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for f in ["flatcar-1.34-amd64.tar.gz", "manifest.json", "SHA256SUMS"] {
        let a = std::fs::read(s.path(&format!("out-a/{f}"))).unwrap();
        let b = std::fs::read(s.path(&format!("out-b/{f}"))).unwrap();
        assert!(a == b, "{f} differs between builds");
    }
    // A different epoch changes the bytes: the test can tell builds apart.
    let o = run(s.build_cmd("flatcar-1.34", "cache-a", "out-c").env("SOURCE_DATE_EPOCH", "1700000000"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(
        std::fs::read(s.path("out-a/flatcar-1.34-amd64.tar.gz")).unwrap(),
        std::fs::read(s.path("out-c/flatcar-1.34-amd64.tar.gz")).unwrap()
    );
}

#[test]
fn tampered_artifact_fails_closed_with_exit_3() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let path = "/release/v1.34.2/bin/linux/amd64/kubelet";
    let file = s.mirror.root().join(path.trim_start_matches('/'));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let pinned = kiln::inputs::profile::Profile::load(&s.profile("flatcar-1.34")).unwrap().doc.artifacts["kubelet"]
        .get_ref()
        .sha256
        .get_ref()
        .values()
        .next()
        .unwrap()
        .get_ref()
        .clone();
    let o = run(&mut s.build_cmd("flatcar-1.34", "cache", "dist"));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains(&format!("{}{path}", s.mirror.url())), "URL missing: {err}");
    assert!(err.contains(&format!("expected sha256 {pinned}")), "{err}");
    assert!(err.contains(&format!("actual   sha256 {}", kiln_testkit::standin::sha256(&bytes))), "{err}");
    assert!(files_in(&s.path("dist")).is_empty(), "output left behind: {:?}", files_in(&s.path("dist")));
    assert!(!s.path(&format!("cache/sha256/{pinned}")).exists());
    assert!(
        !s.path(&format!("cache/sha256/{}", kiln_testkit::standin::sha256(&bytes))).exists(),
        "tampered bytes cached"
    );
    assert!(files_in(&s.path("cache/tmp")).is_empty(), "{:?}", files_in(&s.path("cache/tmp")));
    // No staging directory next to the output either.
    assert!(!std::fs::read_dir(s.path("dist.gen"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains("staging")));
}

#[test]
fn a_cache_entry_altered_on_disk_is_caught_and_fetched_again() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let o = run(&mut s.build_cmd("flatcar-1.34", "cache", "dist"));
    assert!(o.status.success(), "{}", stderr(&o));
    let p = kiln::inputs::profile::Profile::load(&s.profile("flatcar-1.34")).unwrap();
    let sha = &p
        .artifacts_for(kiln::inputs::profile::Arch::Amd64)
        .unwrap()
        .into_iter()
        .find(|a| a.name == "kubeadm")
        .unwrap()
        .sha256;
    let blob = s.path(&format!("cache/sha256/{sha}"));
    let mut b = std::fs::read(&blob).unwrap();
    b[77] ^= 1;
    std::fs::write(&blob, b).unwrap();
    let o = run(s.build_cmd("flatcar-1.34", "cache", "dist2").arg("--force"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("was corrupt") && stderr(&o).contains("fetching it again"), "{}", stderr(&o));
    assert_eq!(&kiln::hash::sha256_file(&blob).unwrap(), sha);
}

fn kill_during(s: &Scratch, cache: &str, out: &str, wait_for: impl Fn() -> bool) {
    let mut child = s.build_cmd("flatcar-1.34", cache, out).spawn().unwrap();
    let start = std::time::Instant::now();
    while !wait_for() {
        assert!(start.elapsed().as_secs() < 60, "build never reached the point to kill it");
        assert!(child.try_wait().unwrap().is_none(), "build finished before it could be killed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(files_in(&s.path(out)).is_empty(), "{:?}", files_in(&s.path(out)));
}

#[test]
fn sigkill_during_fetch_or_packing_leaves_no_output() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    // 1. Killed while downloading: the mirror sends kubelet slowly.
    let kubelet = "/release/v1.34.2/bin/linux/amd64/kubelet";
    s.mirror.fault(kubelet, kiln_testkit::mirror::Fault::Throttle(4 << 20));
    kill_during(&s, "cache", "dist", || s.mirror.gets(kubelet) > 0);
    assert!(!s
        .path("cache/sha256")
        .read_dir()
        .unwrap()
        .flatten()
        .any(|e| e.metadata().unwrap().len() == (KUBELET_SIZE + 64) as u64));
    s.mirror.clear_faults();
    // 2. Killed while writing the tarball: warm the cache, then kill once staging exists.
    let o = run(&mut s.build_cmd("flatcar-1.34", "cache", "warm"));
    assert!(o.status.success(), "{}", stderr(&o));
    let staging_exists = || {
        std::fs::read_dir(s.path("dist.gen")).into_iter().flatten().flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with("staging-")
                && e.path().read_dir().map(|mut d| d.next().is_some()).unwrap_or(false)
        })
    };
    kill_during(&s, "cache", "dist", staging_exists);
    // The next build cleans the stale staging directory and succeeds.
    let o = run(&mut s.build_cmd("flatcar-1.34", "cache", "dist"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!staging_exists());
    assert_eq!(files_in(&s.path("dist")), ["SHA256SUMS", "flatcar-1.34-amd64.tar.gz", "manifest.json"]);
}

#[test]
fn offline_without_cache_lists_what_to_fetch() {
    let s = Scratch::new(&[]);
    let o = run(s.build_cmd_upstream(&[&s.profile("flatcar-1.34")], "cache", "dist").args([
        "--offline",
        "--format",
        "tar",
    ]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    for url in [
        "https://dl.k8s.io/release/v1.34.2/bin/linux/amd64/kubelet",
        "https://dl.k8s.io/release/v1.34.2/bin/linux/amd64/kubeadm",
        "https://github.com/containernetworking/plugins/releases/download/v1.8.0/cni-plugins-linux-amd64-v1.8.0.tgz",
    ] {
        assert!(err.contains(url), "{url} not listed:\n{err}");
    }
    assert!(s.mirror.log().is_empty());
}

#[test]
fn offline_with_a_mirror_directory_builds() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let o = run(s
        .build_cmd_upstream(&[&s.profile("flatcar-1.34")], "cache", "dist")
        .args(["--offline", "--format", "tar"])
        .arg("--mirror")
        .arg(s.mirror.root()));
    assert!(o.status.success(), "{}", stderr(&o));
    // Only `kiln pin` used HTTP (checksum files and HEAD for sizes).
    assert!(
        s.mirror.log().iter().all(|(m, p, _)| p.ends_with(".sha256") || m == "HEAD"),
        "HTTP used offline: {:?}",
        s.mirror.log()
    );
}

#[test]
fn an_unchanged_rebuild_is_a_no_op_and_a_changed_overlay_is_not() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let o = run(&mut s.build_cmd("flatcar-1.34", "cache", "dist"));
    assert!(o.status.success(), "{}", stderr(&o));
    let tgz = s.path("dist/flatcar-1.34-amd64.tar.gz");
    let mtime = std::fs::metadata(&tgz).unwrap().modified().unwrap();
    let o = run(&mut s.build_cmd("flatcar-1.34", "cache", "dist"));
    assert!(o.status.success());
    assert!(stderr(&o).contains("up to date"), "{}", stderr(&o));
    assert_eq!(std::fs::metadata(&tgz).unwrap().modified().unwrap(), mtime);
    std::fs::write(s.path("overlays/base/etc/kiln-motd"), "hello\n").unwrap();
    let o = run(&mut s.build_cmd("flatcar-1.34", "cache", "dist"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("up to date"));
    assert!(tar_listing(&tgz).contains("etc/kiln-motd"));
}

#[test]
fn transient_http_failures_are_retried_and_final_ones_are_not() {
    use kiln_testkit::mirror::Fault;
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let kubelet = "/release/v1.34.2/bin/linux/amd64/kubelet";
    let kubeadm = "/release/v1.34.2/bin/linux/amd64/kubeadm";
    // Two 500s, then success.
    s.mirror.fault(kubelet, Fault::Status { code: 500, times: 2 });
    let o = run(s.build_cmd("flatcar-1.34", "c1", "d1").env("KILN_TEST", "1"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(s.mirror.gets(kubelet), 3);
    assert!(stderr(&o).contains("HTTP 500"), "{}", stderr(&o));
    // 404 is final: one request, exit 1, no retries.
    s.mirror.fault(kubeadm, Fault::Status { code: 404, times: 100 });
    let before = s.mirror.gets(kubeadm);
    let o = run(&mut s.build_cmd("flatcar-1.34", "c2", "d2"));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(s.mirror.gets(kubeadm) - before, 1);
    assert!(stderr(&o).contains("404"));
    assert!(files_in(&s.path("d2")).is_empty());
    s.mirror.clear_faults();
    // A truncated body is retried, then reported (never cached, never exit 3).
    s.mirror.fault(kubeadm, Fault::Truncate(1 << 20));
    let before = s.mirror.gets(kubeadm);
    let o = run(s.build_cmd("flatcar-1.34", "c3", "d3").args(["--attempts", "2"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(s.mirror.gets(kubeadm) - before, 2);
    assert!(stderr(&o).contains("truncated") || stderr(&o).contains("reading"), "{}", stderr(&o));
    s.mirror.clear_faults();
    // A server slower than the per-request timeout ends within the bound.
    s.mirror.fault(kubeadm, Fault::Stall(std::time::Duration::from_secs(5)));
    let t = std::time::Instant::now();
    let o = run(s.build_cmd("flatcar-1.34", "c4", "d4").args(["--timeout", "1", "--attempts", "2"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(t.elapsed().as_secs() < 20, "took {:?}", t.elapsed());
    assert!(files_in(&s.path("d4")).is_empty());
}

#[test]
fn firstboot_binary_comes_from_beside_kiln_or_is_refused_with_a_hint() {
    let s = Scratch::new(&["fcos-1.34"]);
    s.pin("fcos-1.34");
    // A copy of kiln with a stand-in kiln-firstboot beside it (the workspace layout).
    let bin = s.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), bin.join("kiln")).unwrap();
    let fb = kiln_testkit::standin::elf(62, 4096, 99);
    std::fs::write(bin.join("kiln-firstboot"), &fb).unwrap();
    let mut c = Command::new(bin.join("kiln"));
    c.env("CI", "1")
        .args(["build", "--format", "tar"])
        .arg(s.profile("fcos-1.34"))
        .args(["--arch", "amd64", "--mirror", s.mirror.url()])
        .arg("--cache")
        .arg(s.path("cache"))
        .arg("--out")
        .arg(s.path("dist"));
    let o = run(&mut c);
    assert!(o.status.success(), "{}", stderr(&o));
    let rec = manifest_entry(&s.path("dist"), "fcos-1.34", "amd64", "/opt/bin/kiln-firstboot");
    assert_eq!(rec["sha256"], kiln_testkit::standin::sha256(&fb));
    // arm64 on this host with no binary: exit 2 and the cross-build hint.
    let o = run(Command::new(bin.join("kiln"))
        .args(["build", "--format", "tar"])
        .arg(s.profile("fcos-1.34"))
        .args(["--arch", "arm64", "--mirror", s.mirror.url()])
        .arg("--out")
        .arg(s.path("d2"))
        .arg("--cache")
        .arg(s.path("cache")));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("aarch64-unknown-linux-musl") && stderr(&o).contains("--firstboot-bin"),
        "{}",
        stderr(&o)
    );
    // An amd64 binary offered for arm64 is refused by its ELF machine.
    let o = run(Command::new(bin.join("kiln"))
        .args(["build", "--format", "tar"])
        .arg(s.profile("fcos-1.34"))
        .args(["--arch", "arm64"])
        .arg("--firstboot-bin")
        .arg(format!("arm64={}", bin.join("kiln-firstboot").display()))
        .arg("--out")
        .arg(s.path("d3"))
        .arg("--cache")
        .arg(s.path("cache")));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("ELF machine 62"), "{}", stderr(&o));
}

/// The line a verified stamp holds for a file as it is now (the format of
/// `kiln::inputs::cache`'s stamp files: name, device, inode, size, mtime and ctime in ns).
fn stamp_line(name: &str, path: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
    format!(
        "{name:?} {} {} {} {} {}",
        m.dev(),
        m.ino(),
        m.size(),
        ns(m.mtime(), m.mtime_nsec()),
        ns(m.ctime(), m.ctime_nsec())
    )
}

#[test]
fn verified_stamps_skip_rehashing_until_a_file_changes_and_packing_still_catches_rot() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let p = kiln::inputs::profile::Profile::load(&s.profile("flatcar-1.34")).unwrap();
    let arts = p.artifacts_for(kiln::inputs::profile::Arch::Amd64).unwrap();
    let sha = |name: &str| arts.iter().find(|a| a.name == name).unwrap().sha256.clone();
    let n = arts.len();
    let build = |out: &str| run(s.build_cmd("flatcar-1.34", "cache", out).args(["--force", "-v"]));
    let settle = || std::thread::sleep(kiln::inputs::cache::RACY + std::time::Duration::from_millis(200));
    let o = build("first");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("0 entries hashed, 0 unchanged since verified (stamp), {n} to fetch")));
    // Just downloaded: too fresh to stamp. Once settled, a build hashes and stamps them...
    settle();
    let o = build("second");
    assert!(stderr(&o).contains(&format!("{n} entries hashed, 0 unchanged")), "{}", stderr(&o));
    // ... and the next one trusts the stamps.
    let o = build("third");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("0 entries hashed, {n} unchanged since verified")), "{}", stderr(&o));
    let good = std::fs::read(s.path("first/flatcar-1.34-amd64.tar.gz")).unwrap();
    assert_eq!(std::fs::read(s.path("third/flatcar-1.34-amd64.tar.gz")).unwrap(), good);

    // A write changes the stat: hashed again at once, found corrupt, fetched again.
    let kubeadm = s.path(&format!("cache/sha256/{}", sha("kubeadm")));
    let mut b = std::fs::read(&kubeadm).unwrap();
    b[100] ^= 1;
    std::fs::write(&kubeadm, &b).unwrap();
    let o = build("fourth");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("was corrupt") && stderr(&o).contains("1 to fetch"), "{}", stderr(&o));

    // Rot that leaves the stat alone (forged here: the stamps are rewritten to
    // the damaged files' stat), in a blob and in an extracted member: the
    // pack-time hash fails the build (exit 3) and every stamp is dropped...
    settle();
    assert!(build("restamp").status.success());
    let kubelet = s.path(&format!("cache/sha256/{}", sha("kubelet")));
    let mut b = std::fs::read(&kubelet).unwrap();
    b[4096] ^= 0x10;
    std::fs::write(&kubelet, &b).unwrap();
    std::fs::write(s.path(&format!("cache/verified/{}", sha("kubelet"))), stamp_line("", &kubelet) + "\n").unwrap();
    let o = build("rotten");
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("changed on disk while kiln was packing it"), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(s.path("cache/verified")).unwrap().count(), 0, "stamps survived a pack-time mismatch");
    // ... so the next build hashes everything, heals the blob and succeeds.
    let o = build("healed");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("was corrupt"), "{}", stderr(&o));
    assert_eq!(std::fs::read(s.path("healed/flatcar-1.34-amd64.tar.gz")).unwrap(), good);

    // The same for a member of an extracted tarball.
    settle();
    assert!(build("restamp2").status.success());
    let crictl = sha("crictl");
    let member = s.path(&format!("cache/extract/{crictl}/crictl"));
    let mut b = std::fs::read(&member).unwrap();
    b[5000] ^= 0x01;
    std::fs::write(&member, &b).unwrap();
    let stamp = s.path(&format!("cache/verified/{crictl}.extract"));
    let forged: Vec<String> = std::fs::read_to_string(&stamp)
        .unwrap()
        .lines()
        .map(|l| if l.starts_with("\"crictl\" ") { stamp_line("crictl", &member) } else { l.to_string() })
        .collect();
    std::fs::write(&stamp, forged.join("\n") + "\n").unwrap();
    let o = build("rotten2");
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let o = build("healed2");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(s.path("healed2/flatcar-1.34-amd64.tar.gz")).unwrap(), good);
}

/// An output directory where another profile already lists a file name this
/// build writes, with other bytes (as an older kiln's `kubernetes-vX-ARCH.raw`
/// shared by Fedora CoreOS and Flatcar): the build is refused with exit 2
/// naming both profiles, forced or not (the up-to-date check does not hide
/// it), and the directory is left as it was.
#[test]
fn a_file_name_another_profile_wrote_with_other_bytes_is_refused() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let o = run(s.build_cmd_bare("flatcar-1.34", "cache", "dist").args(["--format", "sysext"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let dist = s.path("dist");
    let manifest = std::fs::canonicalize(dist.join("manifest.json")).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let mut other = m["profiles"]["flatcar-1.34"].clone();
    other["outputs"][0]["sha256"] = serde_json::json!("0".repeat(64));
    m["profiles"]["fcos-1.34"] = other;
    let edited = serde_json::to_string_pretty(&m).unwrap() + "\n";
    std::fs::write(&manifest, &edited).unwrap();
    let raw = "kubernetes-v1.34.2-flatcar-1.34-amd64.raw";
    for extra in [&[][..], &["--force"][..]] {
        let o = run(s.build_cmd_bare("flatcar-1.34", "cache", "dist").args(["--format", "sysext"]).args(extra));
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(raw) && err.contains("an output of fcos-1.34") && err.contains("--out"), "{err}");
        assert_eq!(std::fs::read_to_string(dist.join("manifest.json")).unwrap(), edited);
    }
}
