//! `kiln flash` onto files and loop devices the tests create (never a real disk).

mod fleet_kit;

use fleet_kit::*;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Kit {
    d: tempfile::TempDir,
    fleet: PathBuf,
    img: PathBuf,
}

fn kit() -> Kit {
    let d = tempfile::tempdir().unwrap();
    cluster(d.path());
    let fleet = d.path().join("fleet.toml");
    std::fs::write(&fleet, fleet_text()).unwrap();
    let img = card_image(d.path());
    Kit { d, fleet, img }
}

fn flash(k: &Kit, node: &str, dev: &Path, env: &[(&str, String)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.args(["flash", k.fleet.to_str().unwrap(), "--node", node, "--device"]).arg(dev).env("CI", "1");
    for (a, b) in env {
        c.env(a, b);
    }
    c.output().unwrap()
}

/// Checks a flashed card (file or loop device) holds `node`'s files and no one else's secrets.
fn check_card(k: &Kit, card: &Path, node: &str, control_plane: bool) {
    let ca_key = std::fs::read_to_string(k.d.path().join("cluster/secrets/ca.key")).unwrap();
    let toml = mtype(card, "kiln/node.toml");
    assert!(toml.contains(&format!("name = \"{node}\"")), "{node}: {toml}");
    assert_eq!(toml.contains(ca_key.trim()), control_plane, "{node}: CA key iff control plane");
    assert_eq!(toml.contains("PRIVATE KEY"), control_plane, "{node}: worker without private keys");
    assert!(mtype(card, "meta-data").contains(&format!("local-hostname: \"{node}\"")));
    let dir = run(Command::new("mdir").arg("-i").arg(mt(card)).args(["-a", "-b", "::"]));
    let listing = String::from_utf8_lossy(&dir.stdout);
    assert!(listing.contains("user-data") && listing.contains("network-config"), "{listing}");
    for other in ["pi-01", "pi-02", "pi-03", "pi-04", "pi-05"].iter().filter(|o| **o != node) {
        assert!(!toml.contains(other), "{node}'s card names {other}");
    }
}

fn personalised_image(k: &Kit, node: &str) -> PathBuf {
    let out = k.d.path().join("cards");
    let o = kiln(&["fleet", "images", k.fleet.to_str().unwrap(), "--node", node, "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    out.join(format!("{node}.img"))
}

#[test]
fn flash_to_files_writes_each_nodes_card_and_verifies_it() {
    let k = kit();
    for (node, cp) in [("pi-01", true), ("pi-03", false)] {
        let dev = k.d.path().join(format!("{node}.card"));
        let o = flash(&k, node, &dev, &[]);
        let err = stderr(&o);
        assert!(o.status.success(), "{err}");
        assert!(err.contains("verified") && err.contains(": ok"), "{err}");
        check_card(&k, &dev, node, cp);
        // A file target is exactly the personalised image `kiln fleet images` writes.
        let img = personalised_image(&k, node);
        assert_eq!(std::fs::read(&dev).unwrap(), std::fs::read(&img).unwrap(), "{node}: flash and fleet images differ");
    }
    // Batch: several targets at once, each its own node.
    let (a, b) = (k.d.path().join("b1.card"), k.d.path().join("b2.card"));
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["flash", k.fleet.to_str().unwrap(), "--node", "pi-[04:05]", "--device"])
        .arg(&a)
        .arg("--device")
        .arg(&b)
        .env("CI", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    check_card(&k, &a, "pi-04", false);
    check_card(&k, &b, "pi-05", false);
}

#[test]
fn a_byte_flipped_after_writing_fails_the_verify_naming_the_range() {
    let k = kit();
    let dev = k.d.path().join("flip.card");
    // A byte inside the ext4 partition: a bmap range, not a personalised block.
    let off = FAT_OFFSET + (FAT_MIB << 20) + 1024 + 7;
    let o = flash(&k, "pi-03", &dev, &[("KILN_TEST_FLIP_BYTE", off.to_string())]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("verify failed") && err.contains("bmap range"), "{err}");
    let bmap =
        kiln::outputs::card::bmap::Bmap::parse(&std::fs::read_to_string(k.d.path().join("card.img.bmap")).unwrap())
            .unwrap();
    let r = bmap.ranges.iter().find(|r| r.first * 4096 <= off && off < (r.last + 1) * 4096).unwrap();
    assert!(err.contains(&format!("blocks {}-{}", r.first, r.last)), "the message names the range: {err}");
    // A byte inside a personalised block is caught too.
    let o = flash(&k, "pi-03", &dev, &[("KILN_TEST_FLIP_BYTE", (FAT_OFFSET + 3).to_string())]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

#[test]
fn a_too_small_device_and_the_image_itself_are_refused() {
    let k = kit();
    let o = flash(&k, "pi-03", &k.img, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("it is the image being written"));
    let small = k.d.path().join("small.raw");
    std::fs::File::create(&small).unwrap().set_len(16 << 20).unwrap();
    let Some(lo) = Loop::new(&small, &[]) else {
        eprintln!("!!! SKIPPED the too-small block device check: not root or no loop device could be made");
        return;
    };
    let o = flash(&k, "pi-03", Path::new(&lo.0), &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("less than the image"), "{err}");
}

#[test]
fn flash_to_a_loop_device_and_refuse_it_while_mounted_or_in_use() {
    let k = kit();
    let size = std::fs::metadata(&k.img).unwrap().len();
    let backing = k.d.path().join("sd.raw");
    // A "used" card: random-ish old content, so a flash must really write.
    std::fs::write(&backing, vec![0xa5u8; size as usize + (8 << 20)]).unwrap();
    let Some(lo) = Loop::new(&backing, &[]) else {
        eprintln!(
            "!!! SKIPPED loop-device flashing: not root or no loop device could be made; the file tests cover the rest"
        );
        return;
    };
    let dev = PathBuf::from(&lo.0);
    let o = flash(&k, "pi-02", &dev, &[]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("O_DIRECT"), "block devices verify with O_DIRECT: {err}");
    check_card(&k, &dev, "pi-02", true);

    // In use: another holder has it open with O_EXCL.
    {
        use std::os::unix::fs::OpenOptionsExt;
        let _held = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_EXCL).open(&dev).unwrap();
        let o = flash(&k, "pi-02", &dev, &[]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("in use"), "{}", stderr(&o));
    }

    // Mounted: the card's FAT partition (a loop device over its byte range) is mounted.
    let fat =
        Loop::new(&backing, &["-o", &FAT_OFFSET.to_string(), "--sizelimit", &(FAT_MIB << 20).to_string()]).unwrap();
    let mnt = k.d.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let m = Command::new("mount").args(["-t", "vfat", "-o", "ro"]).arg(&fat.0).arg(&mnt).output().unwrap();
    if !m.status.success() {
        eprintln!("!!! SKIPPED the mounted-device check: mount failed: {}", String::from_utf8_lossy(&m.stderr));
        return;
    }
    let o = flash(&k, "pi-02", Path::new(&fat.0), &[]);
    let _ = Command::new("umount").arg(&mnt).status();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("is mounted on") && err.contains(mnt.to_str().unwrap()), "{err}");
}

#[test]
fn flash_refuses_every_file_the_command_reads_or_writes_even_with_force() {
    let k = kit();
    let d = k.d.path();
    let ca = d.join("cluster/secrets/ca.key");
    let ca_before = std::fs::read(&ca).unwrap();
    let link = d.join("innocent-looking.img");
    std::fs::hard_link(&ca, &link).unwrap();
    let bmap_before = std::fs::read(d.join("card.img.bmap")).unwrap();
    let fleet_before = std::fs::read(&k.fleet).unwrap();
    let cases: Vec<(PathBuf, &str)> = vec![
        (ca.clone(), "the cluster directory"),
        (link.clone(), "the cluster directory"),
        (d.join("cluster/new-card.img"), "the cluster directory"),
        (k.fleet.clone(), "the fleet file"),
        (d.join("card.img.bmap"), ".bmap"),
        (k.img.clone(), "the image being written"),
        (d.join("./cluster/../card.img"), "the image being written"),
    ];
    for (dev, needle) in &cases {
        for force in [false, true] {
            let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
            c.args(["flash", k.fleet.to_str().unwrap(), "--node", "pi-03", "--device"]).arg(dev).env("CI", "1");
            if force {
                c.arg("--force");
            }
            let o = c.output().unwrap();
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{} (force {force}): {err}", dev.display());
            assert!(err.contains("refusing to write") && err.contains(needle), "{}: {err}", dev.display());
        }
    }
    assert_eq!(std::fs::read(&ca).unwrap(), ca_before, "the CA key is untouched");
    assert_eq!(std::fs::read(d.join("card.img.bmap")).unwrap(), bmap_before);
    assert_eq!(std::fs::read(&k.fleet).unwrap(), fleet_before);
    assert!(!d.join("cluster/new-card.img").exists());
}

#[test]
fn an_existing_file_that_is_not_a_disk_image_needs_force() {
    let k = kit();
    let notes = k.d.path().join("notes.txt");
    std::fs::write(&notes, "my notes, not a card\n").unwrap();
    let o = flash(&k, "pi-03", &notes, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("does not look like a disk image") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes, not a card\n");
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["flash", k.fleet.to_str().unwrap(), "--node", "pi-03", "--force", "--device"])
        .arg(&notes)
        .env("CI", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // An empty file, and a file that already holds a card, need no --force.
    let empty = k.d.path().join("empty.card");
    std::fs::write(&empty, "").unwrap();
    assert!(flash(&k, "pi-03", &empty, &[]).status.success());
    assert!(flash(&k, "pi-04", &empty, &[]).status.success());
}

#[test]
fn flashing_a_fleet_whose_image_is_not_built_is_exit_2_with_the_build_command() {
    let k = kit();
    std::fs::remove_file(&k.img).unwrap();
    std::fs::remove_file(k.d.path().join("card.img.bmap")).unwrap();
    let o = flash(&k, "pi-03", &k.d.path().join("x.card"), &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("kiln build") && err.contains("--format card"), "{err}");
}

/// Survivor "flash skips comparing the image with the `.bmap` checksums": one
/// byte of the image (not of the `.bmap`) inside a mapped range, outside the
/// personalised blocks, is flipped before flashing to a file. The flash fails
/// closed, exit 3, naming the image, the range and "damaged", and no "ok" line.
#[test]
fn a_damaged_image_is_refused_against_its_bmap_checksums_naming_the_range() {
    let k = kit();
    let bmap =
        kiln::outputs::card::bmap::Bmap::parse(&std::fs::read_to_string(k.d.path().join("card.img.bmap")).unwrap())
            .unwrap();
    // A mapped byte inside the ext4 partition: never overlaid by the node's blocks.
    let root = FAT_OFFSET + (FAT_MIB << 20);
    let (i, r) = bmap.ranges.iter().enumerate().find(|(_, r)| r.first * 4096 >= root).expect("a range in the rootfs");
    let off = r.first * 4096 + 123;
    let mut bytes = std::fs::read(&k.img).unwrap();
    bytes[off as usize] ^= 0x5a;
    std::fs::write(&k.img, &bytes).unwrap();
    let dev = k.d.path().join("damaged.card");
    let o = flash(&k, "pi-03", &dev, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "a damaged image must fail the flash: {err}");
    assert!(err.contains("the image is damaged") && err.contains("card.img"), "{err}");
    assert!(
        err.contains(&format!("bmap range {} (blocks {}-{}", i + 1, r.first, r.last)),
        "the message names the range: {err}"
    );
    assert!(!err.contains(": ok"), "{err}");
}

/// The FAT read-back of the personalised files is the one check the range
/// hashes cannot stand in for: they hash what kiln sent, so a byte of
/// `kiln/node.toml` damaged in the block being sent (after personalisation,
/// before hashing — memory damage or an overlay bug) passes every range hash.
/// The flash must still fail closed, exit 3, naming the file. A byte changed
/// on the card after writing is caught by the range hashes first (see
/// `a_byte_flipped_after_writing_fails_the_verify_naming_the_range`).
#[test]
fn a_personalised_file_damaged_before_hashing_fails_the_fat_read_back_naming_it() {
    let k = kit();
    let img = std::fs::read(personalised_image(&k, "pi-03")).unwrap();
    let needle = b"kiln-firstboot node description for pi-03";
    let at = img.windows(needle.len()).position(|w| w == needle).expect("node.toml's data in the image") + 20;
    let dev = k.d.path().join("staged.card");
    let o = flash(&k, "pi-03", &dev, &[("KILN_TEST_FLIP_BYTE", format!("staged:{at}"))]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("kiln/node.toml") && err.contains("differs from what was written"), "{err}");
    assert!(!err.contains("bmap range") && !err.contains("unmapped blocks"), "the range hashes pass: {err}");
    // The same byte changed on the card after writing: a range hash catches it first.
    let o = flash(&k, "pi-03", &dev, &[("KILN_TEST_FLIP_BYTE", at.to_string())]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("reads back with sha256") && !err.contains("kiln/node.toml"), "{err}");
}
