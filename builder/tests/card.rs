//! Raspberry Pi card images: kiln's `.bmap` files are read by bmaptool itself,
//! and kiln builds a card from a Raspberry-Pi-like base image without root,
//! mounts or loop devices.

use kiln::outputs::card::bmap::{self, Bmap};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

/// Runs a command, panicking with its output when it fails; returns stdout.
fn ok(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e} (is the tool installed? see scripts/test)"));
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Compares `a` and `b` over the bmap's mapped ranges with `cmp`.
fn cmp_mapped(map: &Bmap, a: &Path, b: &Path) {
    for r in &map.ranges {
        let (start, len) = map.byte_span(r);
        ok(Command::new("cmp").arg("-n").arg(len.to_string()).arg("-i").arg(format!("{start}:{start}")).arg(a).arg(b));
    }
}

/// A sparse image with data scattered over 64 MiB, including a ragged tail.
fn sparse_image(path: &Path) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len((64 << 20) + 1000).unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    f.write_all_at(&data[..70_000], 0).unwrap();
    f.write_all_at(&data, 9 << 20).unwrap();
    f.write_all_at(&data[..5], 40 << 20).unwrap();
    f.write_all_at(&data[..900], 64 << 20).unwrap(); // ends inside the last, partial block
}

#[test]
fn bmaptool_copy_accepts_kilns_bmap_and_rejects_a_wrong_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("card.img");
    sparse_image(&img);
    let map = bmap::create(&img).unwrap();
    assert!(map.mapped_blocks() < map.blocks_count() / 10, "the image is sparse: {map:?}");
    let xml = map.to_xml();
    assert_eq!(Bmap::parse(&xml).unwrap(), map);
    let bmap_path = dir.path().join("card.img.bmap");
    std::fs::write(&bmap_path, &xml).unwrap();

    // bmaptool writes the image with kiln's map and verifies every range.
    let out = dir.path().join("copy.img");
    ok(Command::new("bmaptool").arg("copy").arg("--bmap").arg(&bmap_path).arg(&img).arg(&out));
    cmp_mapped(&map, &img, &out);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), map.image_size);

    // Negative control: one range checksum wrong (file checksum recomputed, so
    // bmaptool gets as far as the range) → bmaptool refuses.
    let mut wrong = map.clone();
    let last = wrong.ranges.len() - 1;
    wrong.ranges[last].sha256 = "0".repeat(63) + "1";
    let wrong_path = dir.path().join("wrong.bmap");
    std::fs::write(&wrong_path, wrong.to_xml()).unwrap();
    let o = Command::new("bmaptool")
        .arg("copy")
        .arg("--bmap")
        .arg(&wrong_path)
        .arg(&img)
        .arg(dir.path().join("copy2.img"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "bmaptool accepted a wrong range checksum");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("checksum mismatch"), "{err}");

    // A damaged file checksum: bmaptool and kiln both refuse the file.
    let damaged = xml.replacen("<BlockSize> 4096", "<BlockSize> 4096 ", 1);
    std::fs::write(&wrong_path, &damaged).unwrap();
    let o = Command::new("bmaptool")
        .arg("copy")
        .arg("--bmap")
        .arg(&wrong_path)
        .arg(&img)
        .arg(dir.path().join("copy3.img"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "bmaptool accepted a damaged bmap file");
    assert!(Bmap::parse(&damaged).is_err());
}

#[test]
fn kiln_reads_a_bmap_written_by_bmaptool_create() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("card.img");
    sparse_image(&img);
    let theirs = ok(Command::new("bmaptool").arg("create").arg(&img));
    let parsed = Bmap::parse(&theirs).unwrap();
    let ours = bmap::create(&img).unwrap();
    assert_eq!(parsed.image_size, ours.image_size);
    // bmaptool's block size is the filesystem's (st_blksize); compare bytes covered.
    let bytes = |m: &Bmap| -> Vec<(u64, u64)> { m.ranges.iter().map(|r| m.byte_span(r)).collect() };
    if parsed.block_size == ours.block_size {
        assert_eq!(parsed, ours);
    } else {
        assert!(!bytes(&parsed).is_empty());
    }
}

mod common;

use common::{kiln, stderr, Scratch};
use kiln_testkit::{pi_image, standin};
use std::os::unix::fs::MetadataExt;

/// A card profile whose pins are the test kit's stand-ins on the loopback mirror.
fn card_profile(s: &Scratch) -> std::path::PathBuf {
    let img = pi_image::build(&std::fs::create_dir_all(s.path("pi")).map(|_| s.path("pi")).unwrap());
    let image_sha = standin::sha256(&std::fs::read(&img).unwrap());
    card_profile_with(
        s,
        &pi_image::xz(&img),
        "xz",
        &format!("image_sha256 = \"{image_sha}\"\nprovisioning = \"cloud-init\"\n"),
    )
}

/// A card profile whose base image is `download` (compressed as
/// `compression`), with `extra` lines in its `[base_image]`.
fn card_profile_with(s: &Scratch, download: &[u8], compression: &str, extra: &str) -> std::path::PathBuf {
    let m = s.path("mirror");
    let base_sha = standin::publish(&m, "/pi/images/test-raspios-arm64-lite.img.xz", download, true);
    let elf = |seed| standin::elf(183, 1 << 20, seed);
    let kubelet = standin::publish(&m, "/release/v1.34.2/bin/linux/arm64/kubelet", &elf(1), false);
    let kubeadm = standin::publish(&m, "/release/v1.34.2/bin/linux/arm64/kubeadm", &elf(2), false);
    let containerd = standin::publish(
        &m,
        "/containerd/v2.1.5/containerd-static-2.1.5-linux-arm64.tar.gz",
        &standin::tgz(&[("bin/containerd", elf(3)), ("bin/containerd-shim-runc-v2", elf(4)), ("bin/ctr", elf(5))]),
        true,
    );
    let runc = standin::publish(&m, "/runc/v1.3.3/runc.arm64", &elf(6), true);
    let crictl = standin::publish(
        &m,
        "/cri-tools/v1.34.0/crictl-v1.34.0-linux-arm64.tar.gz",
        &standin::tgz(&[("crictl", elf(7))]),
        true,
    );
    let text = format!(
        r#"name = "card-test"
kubernetes_version = "v1.34.2"
family = "debian"
architectures = ["arm64"]
cgroup_driver = "systemd"
epoch = 1762905600
overlays = ["base", "rpi"]

[runtime]
name = "containerd"
manage_config = true
config_version = 2

[base_image]
version = "test-2025-05-13"
url = "https://downloads.example.invalid/pi/images/test-raspios-arm64-lite.img.xz"
compression = "{compression}"
sha256 = "{base_sha}"
{extra}

[artifacts.kubeadm]
version = "v1.34.2"
url = "https://dl.k8s.io/release/{{version}}/bin/linux/{{arch}}/kubeadm"
sha256.arm64 = "{kubeadm}"

[artifacts.kubelet]
version = "v1.34.2"
url = "https://dl.k8s.io/release/{{version}}/bin/linux/{{arch}}/kubelet"
sha256.arm64 = "{kubelet}"

[artifacts.crictl]
version = "v1.34.0"
url = "https://github.com/cri-tools/{{version}}/crictl-{{version}}-linux-{{arch}}.tar.gz"
extract = ["crictl"]
sha256.arm64 = "{crictl}"

[artifacts.containerd]
version = "2.1.5"
url = "https://github.com/containerd/v{{version}}/containerd-static-{{version}}-linux-{{arch}}.tar.gz"
extract = ["containerd", "containerd-shim-runc-v2", "ctr"]
sha256.arm64 = "{containerd}"

[artifacts.runc]
version = "1.3.3"
url = "https://github.com/runc/v{{version}}/runc.{{arch}}"
file_name = "runc"
sha256.arm64 = "{runc}"
"#
    );
    let p = s.path("profiles/card-test.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs `cmd` as an unprivileged user: nobody (65534) through `setpriv` when
/// the test runs as root, else as the current (non-root) user.
fn unprivileged(cmd: &Command) -> Command {
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let mut c = if uid == 0 {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(cmd.get_program());
        c
    } else {
        Command::new(cmd.get_program())
    };
    c.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

fn debugfs(part: &Path, request: &str) -> String {
    ok(Command::new("debugfs").arg("-R").arg(request).arg(part))
}

fn losetup_list() -> String {
    Command::new("losetup")
        .arg("-a")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn card_from_a_pi_like_base_image_as_nobody_without_loop_devices() {
    let s = Scratch::new(&[]);
    let profile = card_profile(&s);
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    if uid == 0 {
        // nobody must read the repo copy and the mirror, and write cache and out dirs.
        ok(Command::new("chown").args(["-R", "65534:65534"]).arg(s.dir.path()));
    }
    let build = |out: &str| -> (std::process::Output, String) {
        let c = card_build_cmd(&s, &profile, out);
        let trace = s.path(&format!("{out}.strace"));
        let mut traced = Command::new("strace");
        traced.args(["-f", "-qq", "-e", "trace=open,openat,openat2", "-o"]).arg(&trace);
        traced.arg(c.get_program()).args(c.get_args());
        for (k, v) in c.get_envs() {
            if let Some(v) = v {
                traced.env(k, v);
            } else {
                traced.env_remove(k);
            }
        }
        let have_strace = Command::new("strace").arg("-V").output().is_ok();
        let mut run = unprivileged(if have_strace { &traced } else { &c });
        eprintln!("running: {run:?}");
        let t0 = std::time::Instant::now();
        let o = run.output().unwrap();
        eprintln!("card build took {:.2} s", t0.elapsed().as_secs_f64());
        (o, std::fs::read_to_string(&trace).unwrap_or_default())
    };
    let loops_before = losetup_list();
    let (o, trace) = build("dist");
    assert!(o.status.success(), "kiln build --format card: {}", stderr(&o));
    // The progress line names the compression in words, not Rust's `Xz`.
    assert!(stderr(&o).contains("(xz)") && !stderr(&o).contains("(Xz)"), "{}", stderr(&o));
    assert_eq!(losetup_list(), loops_before, "a loop device appeared");
    if !trace.is_empty() {
        assert!(!trace.contains("/dev/loop"), "kiln or a tool it ran opened a loop device");
        assert!(!trace.contains("/dev/mapper"), "device mapper was used");
    }

    let dist = s.path("dist");
    let img = dist.join("card-test-arm64.img");
    let meta = std::fs::metadata(&img).unwrap();
    assert!(meta.blocks() * 512 < meta.len(), "the card image is sparse");

    // Both partitions pass their own fsck, extracted with dd (no mounts).
    let boot = s.path("boot.part");
    let root = s.path("root.part");
    let sector0 = std::fs::read(&img).unwrap()[..512].to_vec();
    let root_sectors = u32::from_le_bytes(sector0[446 + 16 + 12..446 + 16 + 16].try_into().unwrap()) as u64;
    assert!(root_sectors > pi_image::ROOT_SECTORS, "the root partition grew for the tree");
    assert_eq!(meta.len(), (pi_image::root_start() + root_sectors) * 512);
    pi_image::extract(&img, pi_image::BOOT_START, pi_image::BOOT_SECTORS, &boot);
    pi_image::extract(&img, pi_image::root_start(), root_sectors, &root);
    ok(Command::new("fsck.vfat").arg("-n").arg(&boot));
    ok(Command::new("e2fsck").arg("-fn").arg(&root));

    // cmdline.txt carries the memory cgroup (read with mtools' mtype).
    let cmdline = ok(Command::new("mtype")
        .arg("-i")
        .arg(format!("{}@@{}", img.display(), pi_image::BOOT_START * 512))
        .arg("::cmdline.txt")
        .env("MTOOLS_SKIP_CHECK", "1"));
    assert_eq!(cmdline.trim_end(), format!("{} cgroup_enable=memory", pi_image::CMDLINE.trim_end()));
    let config = ok(Command::new("mtype")
        .arg("-i")
        .arg(format!("{}@@{}", img.display(), pi_image::BOOT_START * 512))
        .arg("::config.txt")
        .env("MTOOLS_SKIP_CHECK", "1"));
    assert!(config.contains("arm_64bit=1"), "config.txt untouched: {config}");

    // Every path of the image tree, with its mode and owner, per debugfs.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dist.join("manifest.json")).unwrap()).unwrap();
    let records = manifest["profiles"]["card-test"]["trees"]["arm64"].as_array().expect("tree records").clone();
    assert!(records.len() > 20, "{records:?}");
    let mut checked = 0;
    for r in &records {
        let path = format!("/{}", r["path"].as_str().unwrap().trim_start_matches('/'));
        let stat = debugfs(&root, &format!("stat {path}"));
        let kind = r["type"].as_str().unwrap();
        let want_type = match kind {
            "file" => "regular",
            "dir" => "directory",
            "symlink" => "symlink",
            other => panic!("{other}"),
        };
        assert!(stat.contains(&format!("Type: {want_type}")), "{path}: {stat}");
        assert!(stat.contains(&format!("User:     {}   Group:     {}", r["uid"], r["gid"])), "{path}: {stat}");
        if kind != "symlink" {
            let mode = r["mode"].as_str().unwrap().trim_start_matches('0');
            assert!(stat.contains(&format!("Mode:  0{mode:0>3}")), "{path} mode {mode}: {stat}");
        }
        if let Some(target) = r["target"].as_str() {
            assert!(stat.contains(&format!("Fast link dest: \"{target}\"")), "{path} -> {target}: {stat}");
        }
        checked += 1;
    }
    eprintln!("checked {checked} image-tree paths with debugfs");
    for must in [
        "/etc/systemd/system/multi-user.target.wants/kubelet.service",
        "/etc/systemd/system/multi-user.target.wants/containerd.service",
        "/etc/systemd/system/kiln-approve-csrs.service",
        "/etc/systemd/system/kiln-approve-csrs.timer",
        "/etc/systemd/system/timers.target.wants/kiln-approve-csrs.timer",
        "/etc/systemd/system/dphys-swapfile.service",
        "/etc/systemd/system/dev-zram0.swap",
        "/etc/systemd/zram-generator.conf",
        "/opt/bin/containerd",
        "/opt/bin/containerd-shim-runc-v2",
        "/opt/bin/runc",
        "/etc/containerd/config.toml",
    ] {
        assert!(
            records.iter().any(|r| format!("/{}", r["path"].as_str().unwrap().trim_start_matches('/')) == must),
            "{must} not in the tree"
        );
    }
    let unit = debugfs(&root, "cat /etc/systemd/system/containerd.service");
    assert!(unit.contains("ExecStart=/opt/bin/containerd\n"), "{unit}");
    // zram-generator's first config location, with no [zramN] section: no zram swap.
    let zram = debugfs(&root, "cat /etc/systemd/zram-generator.conf");
    assert!(zram.starts_with('#') && !zram.lines().any(|l| l.trim_start().starts_with('[')), "{zram}");
    let cfg = debugfs(&root, "cat /etc/containerd/config.toml");
    assert!(cfg.contains("SystemdCgroup = true"), "{cfg}");
    // The base tree is still there.
    assert!(debugfs(&root, "cat /etc/passwd").contains("pi:x:1000"));
    assert!(debugfs(&root, "cat /etc/fstab").contains("PARTUUID=4b1dc0de-02"));

    // The .bmap is kiln's and bmaptool writes the card with it.
    let map = Bmap::parse(&std::fs::read_to_string(dist.join("card-test-arm64.img.bmap")).unwrap()).unwrap();
    assert_eq!(map, bmap::create(&img).unwrap());
    let copy = s.path("copy.img");
    ok(Command::new("bmaptool")
        .arg("copy")
        .arg("--bmap")
        .arg(dist.join("card-test-arm64.img.bmap"))
        .arg(&img)
        .arg(&copy));
    cmp_mapped(&map, &img, &copy);

    // Same inputs, same bytes.
    let (o2, _) = build("dist2");
    assert!(o2.status.success(), "second build: {}", stderr(&o2));
    for f in ["card-test-arm64.img", "card-test-arm64.img.bmap"] {
        ok(Command::new("cmp").arg(dist.join(f)).arg(s.path("dist2").join(f)));
    }

    // The card kiln built, personalised and flashed (to a file) for one node:
    // kiln flash reads this card's own partition table and .bmap.
    let mut c = kiln();
    c.args(["cluster", "init", "card", "--endpoint", "10.0.0.1", "--kubernetes-version", "v1.34.2", "--out"])
        .arg(s.path("cluster"));
    let o = c.output().unwrap();
    assert!(o.status.success(), "cluster init: {}", stderr(&o));
    let fleet = s.path("fleet.toml");
    std::fs::write(
        &fleet,
        "cluster = \"cluster\"\nimage = \"dist/card-test-arm64.img\"\n\n[[node]]\nname = \"cp-1\"\nrole = \"init\"\n\n[[node]]\nname = \"pi-01\"\nrole = \"join\"\n",
    )
    .unwrap();
    let card = s.path("pi-01.card");
    let mut c = kiln();
    c.arg("flash").arg(&fleet).args(["--node", "pi-01", "--device"]).arg(&card);
    let o = c.output().unwrap();
    assert!(o.status.success(), "kiln flash of the built card: {}", stderr(&o));
    let fat = format!("{}@@{}", card.display(), pi_image::BOOT_START * 512);
    let toml = ok(Command::new("mtype").arg("-i").arg(&fat).arg("::kiln/node.toml").env("MTOOLS_SKIP_CHECK", "1"));
    assert!(toml.contains("name = \"pi-01\""), "{toml}");
    assert!(!toml.contains("PRIVATE KEY"), "a worker's card holds no private key: {toml}");
    let meta = ok(Command::new("mtype").arg("-i").arg(&fat).arg("::meta-data").env("MTOOLS_SKIP_CHECK", "1"));
    assert!(meta.contains("local-hostname: \"pi-01\""), "{meta}");
    let boot2 = s.path("pi-01.boot.part");
    pi_image::extract(&card, pi_image::BOOT_START, pi_image::BOOT_SECTORS, &boot2);
    ok(Command::new("fsck.vfat").arg("-n").arg(&boot2));
}

/// `kiln build PROFILE --format card` from the loopback mirror into `out`.
fn card_build_cmd(s: &Scratch, profile: &Path, out: &str) -> Command {
    let mut c = s.build_cmd_path(profile, "cache", out);
    c.args(["--format", "card"]);
    c
}

/// Builds `profile` as a card into `out` (no strace, current user).
fn build_card(s: &Scratch, profile: &Path, out: &str) -> std::process::Output {
    card_build_cmd(s, profile, out).output().unwrap()
}

/// Files left under `dir` that are (part of) a decompressed base image: named
/// like one, or larger than 8 MiB (the stand-in artifacts are 1–3 MiB).
fn big_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else if m.len() > 8 << 20 || e.path().to_string_lossy().contains("base-image") || d.ends_with("card") {
                out.push(format!("{} ({} bytes)", e.path().display(), m.len()));
            }
        }
    }
    out
}

/// `zstd` of `data` as two frames (the first half, then the rest), concatenated.
fn zstd_two_frames(data: &[u8]) -> Vec<u8> {
    let half = data.len() / 2;
    let mut v = zstd::encode_all(&data[..half], 3).unwrap();
    v.extend(zstd::encode_all(&data[half..], 3).unwrap());
    v
}

#[test]
fn a_two_frame_zstd_base_image_builds_from_all_its_frames() {
    let s = Scratch::new(&[]);
    let img = pi_image::build(&std::fs::create_dir_all(s.path("pi")).map(|_| s.path("pi")).unwrap());
    let bytes = std::fs::read(&img).unwrap();
    let image_sha = standin::sha256(&bytes);
    let profile = card_profile_with(&s, &zstd_two_frames(&bytes), "zst", &format!("image_sha256 = \"{image_sha}\"\n"));
    let o = build_card(&s, &profile, "dist");
    assert!(o.status.success(), "a two-frame zstd base image: {}", stderr(&o));
}

#[test]
fn decompression_bombs_are_refused_quickly_and_leave_nothing_in_the_cache() {
    let s = Scratch::new(&[]);
    // 1 GiB of zeros: no partition table at all.
    let zeros = vec![0u8; 1 << 20];
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    for _ in 0..1024 {
        std::io::Write::write_all(&mut enc, &zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 200_000, "{}", bomb.len());
    // An MBR naming one 8 MiB partition, then 1 GiB of 0xff: far past its end.
    let mut head = vec![0u8; 512];
    head[446 + 4] = 0x83;
    head[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
    head[446 + 12..446 + 16].copy_from_slice(&16384u32.to_le_bytes());
    head[510] = 0x55;
    head[511] = 0xaa;
    let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 0);
    std::io::Write::write_all(&mut enc, &head).unwrap();
    let ff = vec![0xffu8; 1 << 20];
    for _ in 0..256 {
        std::io::Write::write_all(&mut enc, &ff).unwrap();
    }
    let xz_bomb = enc.finish().unwrap();
    for (what, data, comp, needle) in [
        ("zstd bomb without a partition table", bomb, "zst", "partition table"),
        ("xz bomb past its last partition", xz_bomb, "xz", "decompresses to more than"),
    ] {
        let _ = std::fs::remove_dir_all(s.path("cache"));
        let profile = card_profile_with(&s, &data, comp, "");
        let t0 = std::time::Instant::now();
        let o = build_card(&s, &profile, "dist");
        let took = t0.elapsed();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(needle), "{what}: {err}");
        assert!(took.as_secs() < 120, "{what} took {took:?}");
        assert!(big_files(&s.path("cache")).is_empty(), "{what} left {:?}", big_files(&s.path("cache")));
        assert!(!s.path("dist").join("card-test-arm64.img").exists(), "{what}");
    }
}

/// The pi image with its root filesystem damaged: `/etc/passwd`'s inode
/// claims 5 links (e2fsck: "Inode … ref count is 5, should be 1").
fn damaged_pi_image(s: &Scratch) -> Vec<u8> {
    let img = pi_image::build(&std::fs::create_dir_all(s.path("pi")).map(|_| s.path("pi")).unwrap());
    let root = s.path("pi/root.damaged");
    pi_image::extract(&img, pi_image::root_start(), pi_image::ROOT_SECTORS, &root);
    ok(Command::new("debugfs").args(["-w", "-R", "sif /etc/passwd links_count 5"]).arg(&root));
    let mut bytes = std::fs::read(&img).unwrap();
    let at = (pi_image::root_start() * 512) as usize;
    let part = std::fs::read(&root).unwrap();
    bytes[at..at + part.len()].copy_from_slice(&part);
    bytes
}

#[test]
fn a_damaged_base_image_is_refused_naming_what_e2fsck_found_unless_repair_is_asked() {
    let s = Scratch::new(&[]);
    let bytes = damaged_pi_image(&s);
    let path = s.path("pi/damaged.img");
    std::fs::write(&path, &bytes).unwrap();
    let profile = card_profile_with(&s, &pi_image::xz(&path), "xz", "");
    let o = build_card(&s, &profile, "dist");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("damaged") && err.contains("ref count is 5"), "names what e2fsck found: {err}");
    assert!(err.contains("repair = true"), "says how to go on: {err}");
    assert!(!s.path("dist").join("card-test-arm64.img").exists());

    let profile = card_profile_with(&s, &pi_image::xz(&path), "xz", "repair = true\n");
    let o = build_card(&s, &profile, "dist");
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("repaired") && err.contains("ref count is 5"), "prints what was repaired: {err}");
}

#[test]
fn root_grow_mib_zero_or_huge_is_a_located_error() {
    let s = Scratch::new(&[]);
    let img = pi_image::build(&std::fs::create_dir_all(s.path("pi")).map(|_| s.path("pi")).unwrap());
    for v in ["0", "99999999"] {
        let profile = card_profile_with(&s, &pi_image::xz(&img), "xz", &format!("root_grow_mib = {v}\n"));
        let o = build_card(&s, &profile, "dist");
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{v}: {err}");
        assert!(err.contains("card-test.toml:") && err.contains("root_grow_mib"), "{v}: {err}");
    }
}
