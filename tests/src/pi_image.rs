//! A Raspberry-Pi-like disk image made without root, mounts or loop devices:
//! an MBR with a FAT32 `bootfs` (`config.txt`, `cmdline.txt` and trixie's
//! stock cloud-init seed `user-data`, `meta-data`, `network-config`) at
//! sector 8192, as Raspberry Pi OS lays it out, and an ext4 `rootfs` holding a small
//! Debian-like tree (`/etc/fstab`, `/etc/passwd`, `/etc/systemd/system`, …).
//! Built with `mkfs.vfat`, `mcopy` and `mkfs.ext4 -d`, all on plain files.

use std::path::{Path, PathBuf};
use std::process::Command;

/// First sector of the boot partition (Raspberry Pi OS uses 8192).
pub const BOOT_START: u64 = 8192;
/// Boot partition size in sectors (64 MiB: room for FAT32's cluster minimum).
pub const BOOT_SECTORS: u64 = 64 * 2048;
/// Root partition size in sectors (48 MiB).
pub const ROOT_SECTORS: u64 = 48 * 2048;
/// The disk identifier; `cmdline.txt` names `root=PARTUUID=<id>-02`.
pub const DISK_ID: u32 = 0x4b1d_c0de;
/// The base image's kernel command line (as Raspberry Pi OS bookworm ships it).
pub const CMDLINE: &str =
    "console=serial0,115200 console=tty1 root=PARTUUID=4b1dc0de-02 rootfstype=ext4 fsck.repair=yes rootwait\n";

fn run(c: &mut Command) {
    let o = c.output().unwrap_or_else(|e| panic!("spawn {c:?}: {e} (install dosfstools, mtools, e2fsprogs)"));
    assert!(o.status.success(), "{c:?}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// Root partition's first sector.
pub fn root_start() -> u64 {
    BOOT_START + BOOT_SECTORS
}

/// Builds the image in `dir` and returns its path (`pi.img`).
pub fn build(dir: &Path) -> PathBuf {
    let boot = dir.join("boot.vfat");
    let _ = std::fs::remove_file(&boot);
    run(Command::new("mkfs.vfat")
        .args(["-F", "32", "-i", "4b1dc0de", "-n", "bootfs", "-C"])
        .arg(&boot)
        .arg((BOOT_SECTORS / 2).to_string()));
    let files = dir.join("bootfiles");
    write(&files, "config.txt", "# Raspberry Pi config (test kit)\narm_64bit=1\ndtparam=audio=on\n");
    write(&files, "cmdline.txt", CMDLINE);
    // Raspberry Pi OS trixie's stock cloud-init NoCloud seed (Imager replaces it).
    write(&files, "user-data", "#cloud-config\n# stock (test kit)\n");
    write(&files, "meta-data", "instance-id: rpios-image\n");
    write(&files, "network-config", "network:\n  version: 2\n");
    let mut mc = Command::new("mcopy");
    mc.arg("-i").arg(&boot);
    for f in ["config.txt", "cmdline.txt", "user-data", "meta-data", "network-config"] {
        mc.arg(files.join(f));
    }
    run(mc.arg("::").env("MTOOLS_SKIP_CHECK", "1"));

    let tree = dir.join("roottree");
    write(&tree, "etc/fstab", "proc /proc proc defaults 0 0\nPARTUUID=4b1dc0de-01 /boot/firmware vfat defaults 0 2\nPARTUUID=4b1dc0de-02 / ext4 defaults,noatime 0 1\n");
    write(&tree, "etc/passwd", "root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000:,,,:/home/pi:/bin/bash\n");
    write(&tree, "etc/group", "root:x:0:\npi:x:1000:\n");
    write(&tree, "etc/hostname", "raspberrypi\n");
    write(
        &tree,
        "etc/os-release",
        "PRETTY_NAME=\"Test Kit GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_CODENAME=bookworm\n",
    );
    write(&tree, "etc/systemd/system/multi-user.target.wants/.keep", "");
    write(&tree, "usr/lib/systemd/system/dphys-swapfile.service", "[Service]\nExecStart=/sbin/dphys-swapfile swapon\n");
    write(&tree, "usr/bin/true.sh", "#!/bin/sh\nexit 0\n");
    std::fs::create_dir_all(tree.join("opt")).expect("opt");
    std::fs::create_dir_all(tree.join("boot/firmware")).expect("boot");
    let root = dir.join("root.ext4");
    let _ = std::fs::remove_file(&root);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "rootfs", "-U", "4b1dc0de-0000-4000-8000-000000000002"])
        .args(["-E", "hash_seed=4b1dc0de-0000-4000-8000-000000000003,root_owner=0:0", "-d"])
        .arg(&tree)
        .arg(&root)
        .arg(format!("{}k", ROOT_SECTORS / 2))
        .env("E2FSPROGS_FAKE_TIME", "1700000000"));

    let img = dir.join("pi.img");
    let total = (root_start() + ROOT_SECTORS) * 512;
    let mut disk = vec![0u8; 512];
    disk[440..444].copy_from_slice(&DISK_ID.to_le_bytes());
    for (i, (kind, start, n)) in
        [(0x0cu8, BOOT_START, BOOT_SECTORS), (0x83, root_start(), ROOT_SECTORS)].iter().enumerate()
    {
        let e = &mut disk[446 + 16 * i..446 + 16 * (i + 1)];
        e[4] = *kind;
        e[8..12].copy_from_slice(&(*start as u32).to_le_bytes());
        e[12..16].copy_from_slice(&(*n as u32).to_le_bytes());
    }
    disk[510] = 0x55;
    disk[511] = 0xAA;
    let f = std::fs::File::create(&img).expect("img");
    f.set_len(total).expect("size");
    use std::os::unix::fs::FileExt;
    f.write_all_at(&disk, 0).expect("mbr");
    for (part, start) in [(&boot, BOOT_START), (&root, root_start())] {
        let data = std::fs::read(part).expect("read partition");
        for (k, chunk) in data.chunks(4096).enumerate() {
            if chunk.iter().any(|b| *b != 0) {
                f.write_all_at(chunk, start * 512 + (k * 4096) as u64).expect("write partition");
            }
        }
    }
    img
}

/// `xz -c` of `path`, written next to it as `<path>.xz`; returns the bytes.
pub fn xz(path: &Path) -> Vec<u8> {
    let o = Command::new("xz").args(["-T1", "-3", "-c"]).arg(path).output().expect("xz (install xz-utils)");
    assert!(o.status.success(), "xz: {}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

/// Extracts `sectors` sectors from `start` of `img` into `out` (like `dd skip= count=`).
pub fn extract(img: &Path, start: u64, sectors: u64, out: &Path) {
    run(Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", out.display()))
        .args(["bs=512", "conv=sparse", "status=none"])
        .arg(format!("skip={start}"))
        .arg(format!("count={sectors}")));
}
