//! A used SD card: `kiln flash`, and `bmaptool copy` with the `.bmap` files
//! kiln writes, onto a loop device first filled with 0xA5, give a card whose
//! file systems are clean (`fsck.vfat -n`, `e2fsck -fn`) and whose every file
//! reads back as built — for the card image and for a personalised node image.

mod fleet_kit;

use fleet_kit::*;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Fills `dev` with 0xA5 through the device itself (no stale page cache).
fn fill_used(dev: &Path) {
    let f = std::fs::OpenOptions::new().write(true).open(dev).unwrap();
    let size = {
        use std::io::Seek;
        let mut g = &f;
        g.seek(std::io::SeekFrom::End(0)).unwrap()
    };
    let chunk = vec![0xa5u8; 4 << 20];
    let mut off = 0;
    while off < size {
        let n = (size - off).min(chunk.len() as u64) as usize;
        f.write_all_at(&chunk[..n], off).unwrap();
        off += n as u64;
    }
    f.sync_all().unwrap();
}

/// `dd` of `len` bytes at `off` of `dev` into `out`.
fn extract(dev: &Path, off: u64, len: u64, out: &Path) {
    run(Command::new("dd")
        .arg(format!("if={}", dev.display()))
        .arg(format!("of={}", out.display()))
        .args(["bs=1M", "iflag=skip_bytes,count_bytes", "status=none"])
        .arg(format!("skip={off}"))
        .arg(format!("count={len}")));
}

/// The card on `dev`: both file systems clean, every built file as built,
/// and (for a node's card) that node's personalised files.
fn check(what: &str, d: &Path, dev: &Path, node: Option<&str>) {
    let boot = d.join("check.boot");
    let root = d.join("check.root");
    extract(dev, FAT_OFFSET, FAT_MIB << 20, &boot);
    extract(dev, FAT_OFFSET + (FAT_MIB << 20), ROOT_MIB << 20, &root);
    let v = Command::new("fsck.vfat").arg("-n").arg(&boot).output().unwrap();
    assert!(
        v.status.success(),
        "{what}: fsck.vfat -n: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    let e = Command::new("e2fsck").arg("-fn").arg(&root).output().unwrap();
    assert!(
        e.status.success(),
        "{what}: e2fsck -fn: {}{}",
        String::from_utf8_lossy(&e.stdout),
        String::from_utf8_lossy(&e.stderr)
    );
    let mut files = vec!["config.txt", "cmdline.txt", "kernel8.img", "fixup4.dat"];
    if node.is_none() {
        files.extend(["user-data", "meta-data", "network-config"]);
    }
    for f in files {
        let got = d.join("check.file");
        let _ = std::fs::remove_file(&got);
        run(Command::new("mcopy").arg("-n").arg("-i").arg(&boot).arg(format!("::{f}")).arg(&got));
        assert_eq!(
            std::fs::read(&got).unwrap(),
            std::fs::read(d.join("bootfiles").join(f)).unwrap(),
            "{what}: boot partition file {f} differs from what was built"
        );
    }
    for f in ["etc/os-release", "usr/bin/busybox", "usr/bin/zero-pages"] {
        let got = d.join("check.file");
        let _ = std::fs::remove_file(&got);
        run(Command::new("debugfs").arg("-R").arg(format!("dump /{f} {}", got.display())).arg(&root));
        assert_eq!(
            std::fs::read(&got).unwrap(),
            std::fs::read(d.join("roottree").join(f)).unwrap(),
            "{what}: root file {f} differs from what was built"
        );
    }
    if let Some(n) = node {
        let got = d.join("check.file");
        let _ = std::fs::remove_file(&got);
        run(Command::new("mcopy").arg("-n").arg("-i").arg(&boot).arg("::kiln/node.toml").arg(&got));
        let toml = std::fs::read_to_string(&got).unwrap();
        assert!(toml.contains(&format!("name = \"{n}\"")), "{what}: {toml}");
        let _ = std::fs::remove_file(&got);
        run(Command::new("mcopy").arg("-n").arg("-i").arg(&boot).arg("::meta-data").arg(&got));
        assert!(std::fs::read_to_string(&got).unwrap().contains(&format!("local-hostname: \"{n}\"")), "{what}");
    }
}

fn bmaptool_copy(bmap: &Path, img: &Path, dev: &Path) {
    run(Command::new("bmaptool").args(["-q", "copy", "--bmap"]).arg(bmap).arg(img).arg(dev));
}

#[test]
fn a_used_card_flashed_by_kiln_or_bmaptool_is_clean_and_reads_back_as_built() {
    let d = tempfile::tempdir().unwrap();
    cluster(d.path());
    let fleet = d.path().join("fleet.toml");
    std::fs::write(&fleet, fleet_text()).unwrap();
    let img = card_image(d.path());
    // As kiln's card build leaves it: every all-zero 4 KiB block a hole.
    run(Command::new("fallocate").arg("--dig-holes").arg(&img));
    let bmap_path = d.path().join("card.img.bmap");
    std::fs::write(&bmap_path, kiln::outputs::card::bmap::create(&img).unwrap().to_xml()).unwrap();
    let cards = d.path().join("cards");
    let o = kiln(&["fleet", "images", fleet.to_str().unwrap(), "--node", "pi-03", "--out", cards.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let node_img = cards.join("pi-03.img");
    let node_bmap = cards.join("pi-03.img.bmap");

    let size = std::fs::metadata(&img).unwrap().len();
    let backing = d.path().join("sd.raw");
    std::fs::File::create(&backing).unwrap().set_len(size + (8 << 20)).unwrap();
    let Some(lo) = Loop::new(&backing, &[]) else {
        eprintln!("!!! SKIPPED the used-card flash: not root or no loop device could be made");
        return;
    };
    let dev = PathBuf::from(&lo.0);

    fill_used(&dev);
    bmaptool_copy(&bmap_path, &img, &dev);
    check("bmaptool copy of the card image", d.path(), &dev, None);

    fill_used(&dev);
    bmaptool_copy(&node_bmap, &node_img, &dev);
    check("bmaptool copy of pi-03.img with its .bmap", d.path(), &dev, Some("pi-03"));

    fill_used(&dev);
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["flash", fleet.to_str().unwrap(), "--node", "pi-04", "--device"])
        .arg(&dev)
        .env("CI", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    check("kiln flash of the card image for pi-04", d.path(), &dev, Some("pi-04"));

    // A .bmap that maps only data (as `bmaptool create` or an older kiln wrote
    // it): kiln flash still writes every file-system structure.
    let data_only = kiln::outputs::card::bmap::Bmap::parse(
        &Command::new("bmaptool")
            .arg("create")
            .arg(&node_img)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap(),
    )
    .unwrap();
    std::fs::write(cards.join("pi-03.img.bmap"), data_only.to_xml()).unwrap();
    fill_used(&dev);
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["flash", fleet.to_str().unwrap(), "--node", "pi-03", "--image"])
        .arg(&node_img)
        .arg("--device")
        .arg(&dev)
        .env("CI", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    check("kiln flash of pi-03.img with a data-only .bmap", d.path(), &dev, Some("pi-03"));
}

#[test]
fn kilns_bmap_maps_every_file_system_structure_of_the_card() {
    let d = tempfile::tempdir().unwrap();
    let img = card_image(d.path());
    run(Command::new("fallocate").arg("--dig-holes").arg(&img));
    let map = kiln::outputs::card::bmap::create(&img).unwrap();
    let covered = |off: u64| map.ranges.iter().any(|r| r.first * 4096 <= off && off < (r.last + 1) * 4096);
    // The whole FAT region: reserved sectors, both FATs (mostly zero: free clusters).
    let f = std::fs::File::open(&img).unwrap();
    let mut bs = [0u8; 512];
    f.read_exact_at(&mut bs, FAT_OFFSET).unwrap();
    let reserved = u16::from_le_bytes([bs[14], bs[15]]) as u64;
    let fat_sectors = u32::from_le_bytes([bs[36], bs[37], bs[38], bs[39]]) as u64;
    let end = FAT_OFFSET + (reserved + 2 * fat_sectors) * 512;
    for off in (FAT_OFFSET..end).step_by(4096) {
        assert!(covered(off), "FAT region byte {off} is not mapped");
    }
    // The zero blocks inside files on both file systems are mapped too (checked
    // through a used card in the test above); the map is still sparse.
    assert!(map.mapped_blocks() < map.blocks_count() / 2, "{} of {}", map.mapped_blocks(), map.blocks_count());
}
