//! Benchmark (not a test), printed side by side in one run:
//!
//! (a) personalise 100 card images from one 4 GiB sparse base:
//!     `kiln fleet images` against `cp --sparse=always` + `mmd`/`mcopy` per card
//!     (the same rendered files; both end with the output filesystem synced);
//! (b) flash the same image to a loop device (as root) or a file, filled
//!     with 0xA5 first like a used card: `kiln flash` (write, then verify
//!     reported separately) against `bmaptool copy` with kiln's `.bmap` (which
//!     maps every file-system structure, so both give a clean card) and
//!     `dd bs=4M conv=fsync`; the ratio kiln write / bmaptool is printed.
//!
//! Run with `./scripts/bench`. `KILN_BENCH_DATA_MIB` sets the base's data
//! (default 64 MiB: kernel + firmware on the FAT, the rest on ext4).

mod common;

use common::kiln_bin;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;
const FAT_OFF: u64 = 4 << 20;
const FAT_LEN: u64 = 512 << 20;

fn sh(cmd: &mut Command) {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
}

fn timed(cmd: &mut Command) -> (Duration, String) {
    let t = Instant::now();
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let d = t.elapsed();
    assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
    (d, String::from_utf8_lossy(&o.stderr).into_owned())
}

fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A 4 GiB sparse Pi-like card: 512 MiB FAT32 at 4 MiB, ext4 to the end.
fn base_image(dir: &Path, data_mib: usize) -> PathBuf {
    let fat = dir.join("boot.fat");
    std::fs::File::create(&fat).and_then(|f| f.set_len(FAT_LEN)).expect("fat");
    sh(Command::new("mkfs.vfat").args(["-F", "32", "-n", "bootfs"]).arg(&fat));
    let boot = dir.join("bootfiles");
    std::fs::create_dir_all(&boot).expect("mkdir");
    let fat_data = (data_mib / 4).max(1) << 20;
    std::fs::write(boot.join("kernel8.img"), pseudo_random(fat_data, 1)).expect("write");
    for (n, t) in [
        ("config.txt", "arm_64bit=1\n"),
        ("cmdline.txt", "console=tty1 root=PARTUUID=1234abcd-02 rootwait cgroup_enable=memory\n"),
        ("user-data", "#cloud-config\n"),
        ("meta-data", "instance-id: rpios\n"),
        ("network-config", "network:\n  version: 2\n"),
    ] {
        std::fs::write(boot.join(n), t).expect("write");
    }
    let mut mc = Command::new("mcopy");
    mc.arg("-i").arg(&fat);
    for e in std::fs::read_dir(&boot).expect("ls").flatten() {
        mc.arg(e.path());
    }
    sh(mc.arg("::"));
    let tree = dir.join("root");
    std::fs::create_dir_all(tree.join("usr/lib")).expect("mkdir");
    let root_data = (data_mib << 20) - fat_data;
    for i in 0..8 {
        std::fs::write(tree.join(format!("usr/lib/lib{i}.so")), pseudo_random(root_data / 8, 7 + i as u64))
            .expect("write");
    }
    let root_len = 4 * GIB - FAT_OFF - FAT_LEN;
    let root = dir.join("root.ext4");
    sh(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-E", "root_owner=0:0", "-d"])
        .arg(&tree)
        .arg(&root)
        .arg(format!("{}M", root_len >> 20)));
    let img = dir.join("card.img");
    std::fs::File::create(&img).and_then(|f| f.set_len(4 * GIB)).expect("img");
    let mut sf = Command::new("sfdisk");
    sf.args(["-q", "--no-reread", "--no-tell-kernel"]).arg(&img).stdin(std::process::Stdio::piped());
    let mut child = sf.spawn().expect("sfdisk");
    use std::io::Write;
    let table = format!(
        "label: dos\nstart={}, size={}, type=c\nstart={}, type=83\n",
        FAT_OFF / 512,
        FAT_LEN / 512,
        (FAT_OFF + FAT_LEN) / 512
    );
    child.stdin.take().expect("stdin").write_all(table.as_bytes()).expect("sfdisk input");
    assert!(child.wait().expect("sfdisk").success());
    for (part, off) in [(&fat, FAT_OFF), (&root, FAT_OFF + FAT_LEN)] {
        sh(Command::new("dd")
            .arg(format!("if={}", part.display()))
            .arg(format!("of={}", img.display()))
            .args(["bs=4M", "conv=notrunc,sparse", "status=none"])
            .arg(format!("seek={}", off >> 22)));
    }
    let _ = std::fs::remove_file(&fat);
    let _ = std::fs::remove_file(&root);
    let bmap = kiln::outputs::card::bmap::create(&img).expect("bmap");
    std::fs::write(dir.join("card.img.bmap"), bmap.to_xml()).expect("bmap write");
    img
}

fn ratio(base: Duration, kiln: Duration) -> f64 {
    base.as_secs_f64() / kiln.as_secs_f64().max(1e-9)
}

/// A card image, a cluster and a 100-node fleet file in `dir`.
fn setup(kiln: &Path, dir: &Path, data_mib: usize) -> (PathBuf, PathBuf) {
    let img = base_image(dir, data_mib);
    sh(Command::new(kiln)
        .args(["cluster", "init", "bench", "--endpoint", "10.0.0.1", "--kubernetes-version", "v1.34.2", "--out"])
        .arg(dir.join("cluster")));
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ1c3lib3gta2lsbi10ZXN0LWtleS1ub3QtcmVhbC0wMDAw me@laptop";
    let fleet = dir.join("fleet.toml");
    std::fs::write(
        &fleet,
        format!(
            "cluster = \"cluster\"\nimage = \"card.img\"\n[defaults]\nadmin_user = \"kiln\"\nssh_authorized_keys = [\"{key}\"]\ngateway = \"10.0.0.254\"\n\n[[node]]\nname = \"cp-1\"\nrole = \"init\"\naddress = \"10.0.0.1/24\"\n\n[[node]]\nname = \"pi-[01:99]\"\nrole = \"join\"\naddress = \"10.0.0.2/24\"\n"
        ),
    )
    .expect("fleet");
    (img, fleet)
}

/// (a) on the filesystem holding `dir`: `kiln fleet images` against
/// `cp --sparse=always` + mtools per card. Both copy the base the same way
/// (coreutils 9 `cp` reflinks by default where the filesystem can, like kiln).
fn personalise(kiln: &Path, dir: &Path, img: &Path, fleet: &Path) -> (Duration, Duration) {
    let out_k = dir.join("cards-kiln");
    drop_caches();
    let (t_kiln, _) = timed(Command::new(kiln).arg("fleet").arg("images").arg(fleet).arg("--out").arg(&out_k));
    // The baseline's inputs: the same rendered files, written per node beforehand (not timed).
    let f = kiln::fleet::Fleet::load(fleet).expect("fleet");
    let cluster = f.cluster().expect("cluster");
    let files_dir = dir.join("rendered");
    for n in &f.nodes {
        let d = files_dir.join(&n.name);
        std::fs::create_dir_all(&d).expect("mkdir");
        for bf in kiln::fleet::personalise::render(&cluster, n).expect("render") {
            std::fs::write(d.join(bf.path.replace('/', "_")), &bf.data).expect("write");
        }
    }
    let _ = std::fs::remove_dir_all(&out_k);
    let out_b = dir.join("cards-cp");
    std::fs::create_dir_all(&out_b).expect("mkdir");
    drop_caches();
    let t0 = Instant::now();
    for n in &f.nodes {
        let card = out_b.join(format!("{}.img", n.name));
        sh(Command::new("cp").arg("--sparse=always").arg(img).arg(&card));
        let target = format!("{}@@{FAT_OFF}", card.display());
        let d = files_dir.join(&n.name);
        sh(Command::new("mmd").arg("-i").arg(&target).arg("::kiln"));
        sh(Command::new("mcopy").arg("-i").arg(&target).arg(d.join("kiln_node.toml")).arg("::kiln/node.toml"));
        sh(Command::new("mcopy")
            .args(["-o", "-i"])
            .arg(&target)
            .arg(d.join("meta-data"))
            .arg(d.join("user-data"))
            .arg(d.join("network-config"))
            .arg("::"));
    }
    sh(Command::new("sync").arg("-f").arg(&out_b));
    let t_cp = t0.elapsed();
    let _ = std::fs::remove_dir_all(&out_b);
    let _ = std::fs::remove_dir_all(&files_dir);
    (t_kiln, t_cp)
}

/// An XFS filesystem in a file, loop-mounted under `dir` (root only), so that
/// (a) can also be measured where copies are reflinks. Unmounted on drop.
struct Xfs {
    mnt: PathBuf,
}

impl Xfs {
    fn mount(dir: &Path) -> Option<Xfs> {
        let file = dir.join("xfs.raw");
        let mnt = dir.join("xfs");
        std::fs::create_dir_all(&mnt).ok()?;
        std::fs::File::create(&file).and_then(|f| f.set_len(16 * GIB)).ok()?;
        let ok = |c: &mut Command| c.output().map(|o| o.status.success()).unwrap_or(false);
        if !ok(Command::new("mkfs.xfs").args(["-q", "-f"]).arg(&file)) {
            eprintln!("bench_fleet: !!! mkfs.xfs missing or failed (apt-get install xfsprogs): no reflink row");
            return None;
        }
        if !ok(Command::new("mount").args(["-o", "loop"]).arg(&file).arg(&mnt)) {
            eprintln!("bench_fleet: !!! cannot loop-mount XFS (not root?): no reflink row");
            return None;
        }
        Some(Xfs { mnt })
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn main() {
    let data_mib: usize = std::env::var("KILN_BENCH_DATA_MIB").ok().and_then(|s| s.parse().ok()).unwrap_or(64);
    let kiln = kiln_bin();
    let work = tempfile::Builder::new().prefix("kiln-bench-fleet").tempdir_in(std::env::temp_dir()).expect("tmp");
    let dir = work.path();
    eprintln!("bench_fleet: building a 4 GiB sparse card image with {data_mib} MiB of data in {}", dir.display());
    let (img, fleet) = setup(&kiln, dir, data_mib);
    let fs_type = |p: &Path| -> String {
        Command::new("stat")
            .args(["-f", "-c", "%T"])
            .arg(p)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };

    // (a) on the temp dir's filesystem, then on XFS (reflinks for both tools).
    let mut rows = vec![(fs_type(dir), personalise(&kiln, dir, &img, &fleet))];
    if let Some(x) = Xfs::mount(dir) {
        let (ximg, xfleet) = setup(&kiln, &x.mnt, data_mib);
        rows.push(("xfs (loop)".to_string(), personalise(&kiln, &x.mnt, &ximg, &xfleet)));
    }

    // (b) flash to a loop device (root) or a file that holds a used card's
    // bytes (0xA5 everywhere): what is not written stays garbage, so both
    // tools must write every block the file systems need.
    let backing = dir.join("sd.raw");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&backing).expect("sd");
        let chunk = vec![0xa5u8; 4 << 20];
        for _ in 0..(4 * GIB + (64 << 20)) / chunk.len() as u64 {
            f.write_all(&chunk).expect("fill sd");
        }
        f.sync_all().expect("sync sd");
    }
    let lo = Command::new("losetup").args(["-f", "--show"]).arg(&backing).output().ok().filter(|o| o.status.success());
    let (target, what) = match &lo {
        Some(o) => (PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()), "loop device"),
        None => {
            eprintln!("bench_fleet: !!! no loop device (not root?): flashing to a file");
            (backing.clone(), "file")
        }
    };
    drop_caches();
    let (t_flash, msg) = timed(
        // --force: a file target full of 0xA5 does not look like a disk image.
        Command::new(&kiln)
            .arg("flash")
            .arg(&fleet)
            .args(["--node", "pi-01", "--force", "--device"])
            .arg(&target)
            .env("CI", "1"),
    );
    let grab = |key: &str| -> f64 {
        msg.split(key).nth(1).and_then(|s| s.split_whitespace().next()).and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
    };
    let (w, v) = (grab(" ranges in "), grab("verified in "));
    drop_caches();
    let (t_bmap, _) = timed(
        Command::new("bmaptool").args(["-q", "copy", "--bmap"]).arg(dir.join("card.img.bmap")).arg(&img).arg(&target),
    );
    drop_caches();
    let (t_dd, _) =
        timed(Command::new("dd").arg(format!("if={}", img.display())).arg(format!("of={}", target.display())).args([
            "bs=4M",
            "conv=fsync",
            "status=none",
        ]));
    if lo.is_some() {
        let _ = Command::new("losetup").arg("-d").arg(&target).status();
    }

    let mapped =
        kiln::outputs::card::bmap::Bmap::parse(&std::fs::read_to_string(dir.join("card.img.bmap")).expect("bmap"))
            .expect("bmap")
            .mapped_blocks()
            * 4096;
    println!("\n== bench_fleet: 4 GiB sparse card image, {} MiB mapped ==", mapped >> 20);
    println!("(a) personalise 100 card images (both synced at the end; the same copy method for both)");
    for (fs, (t_kiln, t_cp)) in &rows {
        let how = if fs.starts_with("xfs") || fs == "btrfs" { "reflink copies" } else { "sparse copies" };
        println!("  on {fs} ({how})");
        println!("    kiln fleet images              {:>8.2} s", t_kiln.as_secs_f64());
        println!("    cp --sparse=always + mtools    {:>8.2} s", t_cp.as_secs_f64());
        let ra = ratio(*t_cp, *t_kiln);
        println!("    ratio {ra:.1}x  (goal >= 5x: {})", if ra >= 5.0 { "met" } else { "NOT met" });
    }
    println!("(b) flash to a {what} pre-filled with 0xA5 (a used card), the same .bmap for both");
    println!(
        "    kiln flash write               {w:>8.2} s  (+ verify {v:.2} s; whole command {:.2} s)",
        t_flash.as_secs_f64()
    );
    println!("    bmaptool copy                  {:>8.2} s", t_bmap.as_secs_f64());
    println!("    dd bs=4M conv=fsync            {:>8.2} s", t_dd.as_secs_f64());
    let rb = t_bmap.as_secs_f64() / w;
    println!(
        "    kiln write vs bmaptool {rb:.2}x, vs dd {:.1}x  (goal: kiln write at least bmaptool's speed: {})",
        t_dd.as_secs_f64() / w,
        if rb >= 1.0 { "met" } else { "NOT met" }
    );
}
