//! Raspberry Pi card images: kiln's `.bmap` files are read by bmaptool itself,
//! and kiln builds a card from a Raspberry-Pi-like base image without root,
//! mounts or loop devices.

use kiln::card::bmap::{self, Bmap};
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
