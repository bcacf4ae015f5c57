//! A card-like image (MBR; FAT32 `bootfs` with `config.txt`, `cmdline.txt` and
//! Raspberry Pi OS's stock cloud-init files; ext4 `rootfs`) made with
//! `mkfs.vfat`, `mcopy`, `mke2fs -d` and `sfdisk` on files, its `.bmap`, a
//! cluster and a fleet file — the layout `kiln build --format card` writes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Sizes in MiB: 1 MiB gap, the FAT, the ext4.
pub const FAT_MIB: u64 = 64;
pub const ROOT_MIB: u64 = 32;
pub const FAT_OFFSET: u64 = 1 << 20;

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

pub fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).env("CI", "1").output().expect("run kiln")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Builds `dir/card.img` and `dir/card.img.bmap`; returns the image path.
pub fn card_image(dir: &Path) -> PathBuf {
    let fat = dir.join("boot.fat");
    let f = std::fs::File::create(&fat).unwrap();
    f.set_len(FAT_MIB << 20).unwrap();
    drop(f);
    run(Command::new("mkfs.vfat").args(["-F", "32", "-s", "1", "-n", "bootfs"]).arg(&fat));
    let files = dir.join("bootfiles");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("config.txt"), "arm_64bit=1\nenable_uart=1\n").unwrap();
    std::fs::write(
        files.join("cmdline.txt"),
        "console=serial0,115200 console=tty1 root=PARTUUID=12345678-02 rootfstype=ext4 fsck.repair=yes rootwait cgroup_enable=memory\n",
    )
    .unwrap();
    std::fs::write(files.join("user-data"), "#cloud-config\n# stock\n").unwrap();
    std::fs::write(files.join("meta-data"), "instance-id: rpios-image\n").unwrap();
    std::fs::write(files.join("network-config"), "network:\n  version: 2\n").unwrap();
    std::fs::write(files.join("kernel8.img"), vec![0x5au8; 3 << 20]).unwrap();
    // A file with whole zero blocks inside: a sparse image holds them as holes.
    std::fs::write(files.join("fixup4.dat"), with_zero_blocks(0x33)).unwrap();
    let mut mc = Command::new("mcopy");
    mc.arg("-i").arg(&fat);
    for n in ["config.txt", "cmdline.txt", "user-data", "meta-data", "network-config", "kernel8.img", "fixup4.dat"] {
        mc.arg(files.join(n));
    }
    run(mc.arg("::"));
    let tree = dir.join("roottree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::create_dir_all(tree.join("usr/bin")).unwrap();
    std::fs::write(tree.join("etc/os-release"), "ID=debian\nVERSION_CODENAME=trixie\n").unwrap();
    std::fs::write(tree.join("usr/bin/busybox"), vec![0x7fu8; 2 << 20]).unwrap();
    std::fs::write(tree.join("usr/bin/zero-pages"), with_zero_blocks(0x44)).unwrap();
    let root = dir.join("root.ext4");
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "rootfs", "-E", "root_owner=0:0", "-d"])
        .arg(&tree)
        .arg(&root)
        .arg(format!("{ROOT_MIB}M")));
    let img = dir.join("card.img");
    let total = FAT_OFFSET + ((FAT_MIB + ROOT_MIB) << 20);
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(total).unwrap();
    drop(f);
    let fat_sectors = (FAT_MIB << 20) / 512;
    let mut sf = Command::new("sfdisk");
    sf.args(["-q", "--no-reread", "--no-tell-kernel"]).arg(&img).stdin(std::process::Stdio::piped());
    let mut child = sf.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            format!(
                "label: dos\nlabel-id: 0x12345678\nstart=2048, size={fat_sectors}, type=c\nstart={}, type=83\n",
                2048 + fat_sectors
            )
            .as_bytes(),
        )
        .unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk");
    for (part, off) in [(&fat, FAT_OFFSET), (&root, FAT_OFFSET + (FAT_MIB << 20))] {
        run(Command::new("dd")
            .arg(format!("if={}", part.display()))
            .arg(format!("of={}", img.display()))
            .args(["bs=1M", "conv=notrunc,sparse", "status=none"])
            .arg(format!("seek={}", off >> 20)));
    }
    let bmap = kiln::outputs::card::bmap::create(&img).expect("bmap");
    std::fs::write(dir.join("card.img.bmap"), bmap.to_xml()).unwrap();
    img
}

/// 4 KiB of `fill`, 12 KiB of zeros, 4 KiB of `fill + 1`: a file whose middle
/// blocks a sparse image stores as holes.
pub fn with_zero_blocks(fill: u8) -> Vec<u8> {
    let mut v = vec![fill; 4096];
    v.resize(16 << 10, 0);
    v.resize(20 << 10, fill + 1);
    v
}

pub const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ1c3lib3gta2lsbi10ZXN0LWtleS1ub3QtcmVhbC0wMDAw me@laptop";

/// `kiln cluster init` into `dir/cluster`.
pub fn cluster(dir: &Path) -> PathBuf {
    let c = dir.join("cluster");
    let o = kiln(&[
        "cluster",
        "init",
        "lab",
        "--endpoint",
        "192.168.1.101",
        "--kubernetes-version",
        "v1.34.2",
        "--out",
        c.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "cluster init: {}", stderr(&o));
    c
}

/// A valid fleet: pi-01 init, pi-02 control-plane with Wi-Fi, pi-[03:05] workers.
pub fn fleet_text() -> String {
    format!(
        r#"cluster = "cluster"
image = "card.img"

[defaults]
admin_user = "kiln"
ssh_authorized_keys = ["{KEY}"]
gateway = "192.168.1.1"
dns = ["192.168.1.1", "1.1.1.1"]

[[node]]
name = "pi-01"
role = "init"
address = "192.168.1.101/24"

[[node]]
name = "pi-02"
role = "control-plane"
address = "192.168.1.102/24"
wifi = {{ ssid = "lab", password = "correct horse battery", country = "GB" }}

[[node]]
name = "pi-[03:05]"
role = "join"
address = "192.168.1.103/24"
"#
    )
}

/// Byte offset of the FAT partition, for `mtools -i image@@offset`.
pub fn mt(img: &Path) -> String {
    format!("{}@@{FAT_OFFSET}", img.display())
}

pub fn mtype(img: &Path, path: &str) -> String {
    let o = Command::new("mtype").arg("-i").arg(mt(img)).arg(format!("::{path}")).output().unwrap();
    assert!(o.status.success(), "mtype {path}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// A loop device over `file`, detached on drop.
pub struct Loop(pub String);

impl Loop {
    pub fn new(file: &Path, extra: &[&str]) -> Option<Loop> {
        if !is_root() {
            return None;
        }
        let o = Command::new("losetup").args(["-f", "--show"]).args(extra).arg(file).output().ok()?;
        if !o.status.success() {
            eprintln!("losetup failed: {}", String::from_utf8_lossy(&o.stderr));
            return None;
        }
        Some(Loop(String::from_utf8_lossy(&o.stdout).trim().to_string()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}
