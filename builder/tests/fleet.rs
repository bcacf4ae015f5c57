//! `kiln fleet check` and `kiln fleet images` on a card-like image built from files.

mod fleet_kit;

use fleet_kit::*;
use kiln::fleet::Fleet;
use std::process::Command;

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    cluster(d.path());
    let fleet = d.path().join("fleet.toml");
    std::fs::write(&fleet, fleet_text()).unwrap();
    (d, fleet)
}

#[test]
fn a_valid_fleet_expands_ranges_and_defaults() {
    let (_d, path) = setup();
    let f = Fleet::load(&path).unwrap();
    let names: Vec<&str> = f.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["pi-01", "pi-02", "pi-03", "pi-04", "pi-05"]);
    assert_eq!(f.nodes[4].address.unwrap().to_string(), "192.168.1.105/24");
    assert_eq!(f.nodes[4].admin_user.as_deref(), Some("kiln"));
    assert!(f.nodes[1].wifi.is_some() && f.nodes[2].wifi.is_none());
    let o = kiln(&["fleet", "check", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 5);
}

#[test]
fn a_loopback_endpoint_is_a_node_local_load_balancer_and_accepted() {
    let d = tempfile::tempdir().unwrap();
    let c = d.path().join("cluster");
    let o = kiln(
        &["cluster", "init", "lab", "--endpoint", "127.0.0.1:8443", "--kubernetes-version", "v1.34.2"]
            .iter()
            .copied()
            .chain(["--out", c.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let fleet = d.path().join("fleet.toml");
    std::fs::write(&fleet, fleet_text()).unwrap();
    let o = kiln(&["fleet", "check", fleet.to_str().unwrap()]);
    assert!(o.status.success(), "a loopback endpoint (each node's own load balancer) was refused: {}", stderr(&o));
}

/// Writes `text` to `path` and runs `kiln fleet check` on it: exit 2 with
/// exactly one `fleet.toml:` line, at `path:line:`, which is returned.
fn refused_at(path: &std::path::Path, text: &str, what: &str, line: usize) -> String {
    std::fs::write(path, text).unwrap();
    let o = kiln(&["fleet", "check", path.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{what}: {err}");
    let located: Vec<&str> = err.lines().filter(|l| l.contains("fleet.toml:")).collect();
    assert_eq!(located.len(), 1, "{what}: want exactly one located line, got:\n{err}");
    let prefix = format!("{}:{line}:", path.display());
    assert!(located[0].contains(&prefix), "{what}: want {prefix}, got {}", located[0]);
    located[0].to_string()
}

/// Each malformed fleet is rejected (exit 2) with exactly one `fleet.toml:line:col:` line,
/// on the expected line, saying what is wrong.
#[test]
fn malformed_fleet_files_are_each_rejected_with_one_located_line() {
    let (d, path) = setup();
    let good = fleet_text();
    let cases: Vec<(&str, String, usize, &str)> = vec![
        (
            "unknown key",
            good.replace("address = \"192.168.1.101/24\"", "adress = \"192.168.1.101/24\""),
            13,
            "did you mean `address`",
        ),
        ("duplicate name", good.replace("name = \"pi-02\"", "name = \"pi-01\""), 16, "defined twice"),
        ("duplicate address", good.replace("192.168.1.102/24", "192.168.1.101/24"), 18, "already `pi-01`'s"),
        ("range overlaps an address", good.replace("192.168.1.103/24", "192.168.1.100/24"), 24, "already `pi-01`'s"),
        (
            "no init node",
            good.replace("role = \"init\"", "role = \"control-plane\""),
            12,
            "no node has role = \"init\"",
        ),
        ("two init nodes", good.replace("role = \"control-plane\"", "role = \"init\""), 17, "a second init node"),
        (
            "worker given CA keys",
            good.replace("role = \"join\"\n", "role = \"join\"\nca_keys = true\n"),
            24,
            "workers never receive CA keys",
        ),
        ("bad node name", good.replace("name = \"pi-02\"", "name = \"Pi_02\""), 16, "not a DNS label"),
        ("address without prefix", good.replace("192.168.1.102/24", "192.168.1.102"), 18, "no prefix length"),
        ("bad prefix", good.replace("192.168.1.102/24", "192.168.1.102/40"), 18, "not a prefix length"),
        ("bad IP", good.replace("192.168.1.102/24", "192.168.1.302/24"), 18, "not an IP address"),
        ("range expands to nothing", good.replace("pi-[03:05]", "pi-[05:03]"), 22, "expands to no node"),
        ("range too large", good.replace("pi-[03:05]", "pi-[0003:9999]"), 22, "more than kiln's limit"),
        ("range runs out of subnet", good.replace("192.168.1.103/24", "192.168.1.253/24"), 24, "runs out"),
        ("init is a range", good.replace("name = \"pi-01\"", "name = \"cp-[1:2]\""), 11, "must be one node"),
        ("unknown role", good.replace("role = \"join\"", "role = \"wroker\""), 23, "did you mean `worker`"),
        (
            "gateway outside subnet",
            good.replace("gateway = \"192.168.1.1\"", "gateway = \"10.0.0.1\""),
            7,
            "not in 192.168.1.101/24's subnet",
        ),
        ("private key pasted", good.replace(KEY, "-----BEGIN OPENSSH PRIVATE KEY-----"), 6, "private key"),
        ("bad dns", good.replace("\"1.1.1.1\"", "\"one.one\""), 8, "not an IP address"),
        ("bad wifi country", good.replace("country = \"GB\"", "country = \"uk\""), 19, "two-letter"),
        ("short wifi password", good.replace("correct horse battery", "short"), 19, "8–63"),
        ("missing cluster", good.replace("cluster = \"cluster\"", "cluster = \"nowhere\""), 1, "kiln cluster init"),
        ("count and open range", good.replace("pi-[03:05]", "pi-[03:]"), 22, "open-ended"),
        ("toml syntax", good.replace("role = \"join\"", "role = join"), 23, ""),
        ("localhost as a name", good.replace("name = \"pi-02\"", "name = \"localhost\""), 16, "RFC 6761"),
        ("address is the gateway", good.replace("192.168.1.102/24", "192.168.1.1/24"), 18, "gateway's"),
        ("a 300 KB ssh key", good.replace(KEY, &format!("ssh-ed25519 {}", "A".repeat(300_000))), 6, "limit"),
        (
            "an ssh key of zeros",
            good.replace(KEY, &format!("ssh-ed25519 {} me", "A".repeat(64))),
            6,
            "not a `ssh-ed25519` key",
        ),
        ("wifi country XX", good.replace("country = \"GB\"", "country = \"XX\""), 19, "ISO 3166-1"),
        (
            "wifi password with a newline",
            good.replace("correct horse battery", "correct horse\\nbattery"),
            19,
            "control",
        ),
        (
            "endpoint held by no node",
            good.replace("192.168.1.101/24", "192.168.1.111/24"),
            1,
            "no control-plane node's address",
        ),
    ];
    assert!(cases.len() >= 10);
    let bad = d.path().join("fleet.toml");
    for (what, text, line, needle) in cases {
        assert_ne!(text, good, "{what}: the replacement did not apply");
        let located = refused_at(&bad, &text, what, line);
        assert!(located.contains(needle), "{what}: want `{needle}` in {located}");
    }
    std::fs::write(&path, good).unwrap();
}

#[test]
fn fleet_images_personalise_only_the_fat_and_keep_secrets_per_node() {
    let (d, fleet) = setup();
    let img = card_image(d.path());
    let base_sha = kiln::hash::sha256_file(&img).unwrap();
    let out = d.path().join("cards");
    let o = kiln(&["fleet", "images", fleet.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(kiln::hash::sha256_file(&img).unwrap(), base_sha, "the base image must not change");
    let token = std::fs::read_to_string(d.path().join("cluster/secrets/bootstrap-token")).unwrap();
    let ca_key = std::fs::read_to_string(d.path().join("cluster/secrets/ca.key")).unwrap();
    let fat_end = FAT_OFFSET + (FAT_MIB << 20);
    let base = std::fs::read(&img).unwrap();
    for (name, cp) in [("pi-01", true), ("pi-02", true), ("pi-03", false), ("pi-05", false)] {
        let card = out.join(format!("{name}.img"));
        let node = mtype(&card, "kiln/node.toml");
        assert!(node.contains(&format!("name = \"{name}\"")), "{name}: {node}");
        assert!(node.contains(token.trim()), "{name}: token");
        assert_eq!(node.contains(ca_key.trim()), cp, "{name}: CA key present iff control plane");
        assert_eq!(node.contains("PRIVATE KEY"), cp, "{name}: no private key on workers");
        let meta = mtype(&card, "meta-data");
        assert!(
            meta.contains(&format!("local-hostname: \"{name}\"")) && meta.contains("instance-id: \"kiln-lab-"),
            "{meta}"
        );
        let ud = mtype(&card, "user-data");
        assert!(ud.starts_with("#cloud-config") && ud.contains(KEY) && ud.contains("name: \"kiln\""), "{ud}");
        let net = mtype(&card, "network-config");
        assert!(net.contains("via: \"192.168.1.1\""), "{net}");
        assert_eq!(net.contains("wifis:"), name == "pi-02", "{net}");
        // Other nodes' names appear nowhere in this card's files.
        for other in ["pi-01", "pi-02", "pi-03", "pi-04", "pi-05"].iter().filter(|o| **o != name) {
            assert!(!node.contains(other) && !meta.contains(other) && !ud.contains(other), "{name} mentions {other}");
        }
        // The stock files are replaced, the rest of the FAT is intact.
        assert!(mtype(&card, "config.txt").contains("arm_64bit=1"));
        let dir = run(Command::new("mdir").arg("-i").arg(mt(&card)).arg("-a").arg("::kiln"));
        assert!(String::from_utf8_lossy(&dir.stdout).contains("node"), "mdir");
        let attr = run(Command::new("mattrib").arg("-i").arg(mt(&card)).arg("::kiln/node.toml"));
        let a = String::from_utf8_lossy(&attr.stdout);
        assert!(a.contains('R') && a.contains('H') && a.contains('S'), "node.toml attributes: {a}");
        // Only the FAT partition differs from the base.
        let bytes = std::fs::read(&card).unwrap();
        assert_eq!(bytes.len(), base.len());
        let differ: Vec<usize> =
            (0..bytes.len()).step_by(4096).filter(|&i| bytes[i..i + 4096] != base[i..i + 4096]).collect();
        assert!(!differ.is_empty());
        assert!(
            differ.iter().all(|&i| (i as u64) >= FAT_OFFSET && (i as u64) < fat_end),
            "{name}: a block outside the FAT differs"
        );
        assert!(differ.len() <= 16, "{name}: {} blocks differ; a card should differ in a few KiB", differ.len());
        // The FAT is consistent.
        let fat = d.path().join(format!("{name}.fat"));
        run(Command::new("dd").arg(format!("if={}", card.display())).arg(format!("of={}", fat.display())).args([
            "bs=1M",
            "status=none",
            &format!("skip={}", FAT_OFFSET >> 20),
            &format!("count={FAT_MIB}"),
        ]));
        let ck = Command::new("fsck.vfat").arg("-n").arg(&fat).output().unwrap();
        assert!(ck.status.success(), "fsck.vfat -n {name}: {}{}", String::from_utf8_lossy(&ck.stdout), stderr(&ck));
    }
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(out.join("pi-01.img")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
}

/// Unmounts a test filesystem when the test ends, passing or failing.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn fleet_images_share_the_base_by_reflink_where_the_filesystem_can() {
    let (d, _) = setup();
    card_image(d.path());
    let ok = |c: &mut Command| c.output().map(|o| o.status.success()).unwrap_or(false);
    let raw = d.path().join("xfs.raw");
    std::fs::File::create(&raw).and_then(|f| f.set_len(512 << 20)).unwrap();
    let mnt = d.path().join("xfs");
    std::fs::create_dir_all(&mnt).unwrap();
    if !is_root() || !ok(Command::new("mkfs.xfs").args(["-q", "-f"]).arg(&raw)) {
        eprintln!("!!! SKIPPED: needs root and mkfs.xfs (xfsprogs) to loop-mount an XFS filesystem; the reflink path is untested here");
        return;
    }
    assert!(ok(Command::new("mount").args(["-o", "loop"]).arg(&raw).arg(&mnt)), "loop-mount XFS as root");
    let _guard = Mounted(mnt.clone());
    run(Command::new("cp").arg("-a").arg(d.path().join("cluster")).arg(d.path().join("card.img")).arg(&mnt));
    let fleet = mnt.join("fleet.toml");
    std::fs::write(&fleet, fleet_text()).unwrap();
    let out = mnt.join("cards");
    let o = kiln(&["fleet", "images", fleet.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("reflink"), "the report names the copy method: {err}");
    // filefrag marks extents that share blocks with another file `shared`.
    let frag = run(Command::new("filefrag").arg("-v").arg(out.join("pi-03.img")));
    let frag = String::from_utf8_lossy(&frag.stdout);
    assert!(frag.contains("shared"), "pi-03.img shares no block with the base: {frag}");
    assert!(mtype(&out.join("pi-03.img"), "kiln/node.toml").contains("name = \"pi-03\""));
    assert!(mtype(&mnt.join("card.img"), "meta-data").contains("rpios-image"), "the base is unchanged");
}

#[test]
fn an_image_that_is_a_fifo_is_refused_without_hanging() {
    let (d, fleet) = setup();
    let fifo = d.path().join("card.img");
    run(Command::new("mkfifo").arg(&fifo));
    for args in [vec!["fleet", "check"], vec!["fleet", "images"]] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.args(&args).arg(&fleet).env("CI", "1");
        if args[1] == "images" {
            c.arg("--out").arg(d.path().join("cards"));
        }
        let mut child = c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let t0 = std::time::Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if t0.elapsed().as_secs() > 30 {
                let _ = child.kill();
                panic!("kiln {args:?} hangs on a FIFO image");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("fleet.toml:2:") && err.contains("not a regular file"), "{args:?}: {err}");
    }
}

#[test]
fn fleet_images_write_a_bmap_per_node_that_bmaptool_accepts() {
    let (d, fleet) = setup();
    card_image(d.path());
    let out = d.path().join("cards");
    let o = kiln(&["fleet", "images", fleet.to_str().unwrap(), "--node", "pi-[02:03]", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for node in ["pi-02", "pi-03"] {
        let img = out.join(format!("{node}.img"));
        let map_path = out.join(format!("{node}.img.bmap"));
        let map = kiln::outputs::card::bmap::Bmap::parse(&std::fs::read_to_string(&map_path).unwrap()).unwrap();
        assert_eq!(map.image_size, std::fs::metadata(&img).unwrap().len());
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&map_path).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "{node}: the .bmap is private like the image");
        let copy = d.path().join(format!("{node}.copy"));
        run(Command::new("bmaptool").args(["-q", "copy", "--bmap"]).arg(&map_path).arg(&img).arg(&copy));
        run(Command::new("cmp").arg(&img).arg(&copy));
        assert!(mtype(&copy, "kiln/node.toml").contains(&format!("name = \"{node}\"")));
    }
}

#[test]
fn personalised_fat_entries_carry_a_valid_fixed_date() {
    let (d, fleet) = setup();
    card_image(d.path());
    let out = d.path().join("cards");
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["fleet", "images", fleet.to_str().unwrap(), "--node", "pi-03", "--out", out.to_str().unwrap()])
        .env("CI", "1")
        .env("SOURCE_DATE_EPOCH", "1762905600")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let card = out.join("pi-03.img");
    for dir in ["::", "::kiln"] {
        let o = run(Command::new("mdir").arg("-a").arg("-i").arg(mt(&card)).arg(dir));
        let listing = String::from_utf8_lossy(&o.stdout).into_owned();
        for name in if dir == "::" { vec!["user-data", "meta-data", "network-config"] } else { vec!["node"] } {
            let line = listing.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("{name} in {listing}"));
            assert!(line.contains("2025-11-12"), "{name} is dated 2025-11-12 (SOURCE_DATE_EPOCH): {line}");
        }
        assert!(!listing.contains("-00-"), "a month or day 0 in {listing}");
    }
    // Without SOURCE_DATE_EPOCH: the date cmdline.txt carries (the card build's epoch), never month 0.
    let o = kiln(&["fleet", "images", fleet.to_str().unwrap(), "--node", "pi-04", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(Command::new("mdir").arg("-i").arg(mt(&out.join("pi-04.img"))).arg("::"));
    let listing = String::from_utf8_lossy(&o.stdout).into_owned();
    let date = |name: &str| -> String {
        let l = listing.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("{name}: {listing}"));
        l.split_whitespace().find(|w| w.len() == 10 && w.as_bytes()[4] == b'-').unwrap_or_default().to_string()
    };
    assert_eq!(date("user-data"), date("cmdline"), "{listing}");
    assert!(!listing.contains("-00-"), "{listing}");
}

#[test]
fn fleet_check_names_the_provisioning_mechanism_and_refuses_a_card_without_cloud_init() {
    let (d, fleet) = setup();
    let img = card_image(d.path());
    let o = kiln(&["fleet", "check", fleet.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("provisioning: cloud-init NoCloud"), "{}", stderr(&o));
    // A bookworm-like card: no cloud-init seed on its boot partition.
    for f in ["user-data", "meta-data", "network-config"] {
        run(Command::new("mdel").arg("-i").arg(mt(&img)).arg(format!("::{f}")));
    }
    let o = kiln(&["fleet", "check", fleet.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no cloud-init NoCloud seed") && err.contains("provisioning = \"cloud-init\""), "{err}");
}

/// The interpreter cloud-init itself runs on (its launcher's `#!` line), so
/// its own modules can be imported.
fn cloud_init_python() -> String {
    let o = Command::new("sh").args(["-c", "command -v cloud-init"]).output().expect("sh");
    let bin = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(!bin.is_empty(), "cloud-init is not installed (apt-get install cloud-init; scripts/test installs it)");
    let head = std::fs::read_to_string(&bin).unwrap();
    let shebang = head.lines().next().unwrap_or_default();
    shebang.strip_prefix("#!").unwrap_or("/usr/bin/python3").trim().to_string()
}

/// Survivor "every fleet card gets the same instance-id": each card's NoCloud
/// seed, read by cloud-init's own NoCloud code (`util.pathprefix2dict` over
/// the seed files, `util.load_yaml` of `meta-data`, as
/// `DataSourceNoCloud._quick_read_instance_id` does), has an instance-id no
/// other card of the fleet has (cloud-init runs once per instance-id: a shared
/// one is one machine to it), and a rebuild of the cards gives each node the
/// same one again (a reflash must not re-run cloud-init as a new machine).
#[test]
fn every_fleet_card_has_its_own_instance_id_that_cloud_init_reads_and_a_rebuild_keeps() {
    let (d, fleet) = setup();
    card_image(d.path());
    let python = cloud_init_python();
    let mut builds: Vec<Vec<(String, String)>> = Vec::new();
    for round in ["a", "b"] {
        let out = d.path().join(format!("cards-{round}"));
        let o = kiln(&["fleet", "images", fleet.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        let mut ids = Vec::new();
        for name in ["pi-01", "pi-02", "pi-03", "pi-04", "pi-05"] {
            let card = out.join(format!("{name}.img"));
            let seed = d.path().join(format!("seed-{round}-{name}"));
            std::fs::create_dir_all(&seed).unwrap();
            for f in ["meta-data", "user-data", "network-config"] {
                std::fs::write(seed.join(f), mtype(&card, f)).unwrap();
            }
            let o = Command::new(&python)
                .arg("-c")
                .arg(
                    "import sys\nfrom cloudinit import util\n\
                     d = util.pathprefix2dict(sys.argv[1], required=['user-data', 'meta-data'], optional=['network-config'])\n\
                     md = util.load_yaml(d['meta-data'])\n\
                     assert isinstance(md, dict), md\n\
                     print(md['instance-id'])\nprint(md['local-hostname'])\n",
                )
                .arg(&seed)
                .output()
                .unwrap();
            assert!(o.status.success(), "cloud-init's NoCloud reader refused {name}'s meta-data: {}", stderr(&o));
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            let mut lines = out.lines();
            let (id, host) = (lines.next().unwrap_or_default().to_string(), lines.next().unwrap_or_default());
            assert_eq!(host, name, "{name}: local-hostname");
            assert!(!id.is_empty() && id != "nocloud", "{name}: instance-id {id:?}");
            ids.push((name.to_string(), id));
        }
        for (i, (a, ia)) in ids.iter().enumerate() {
            for (b, ib) in &ids[i + 1..] {
                assert_ne!(
                    ia, ib,
                    "{a} and {b} share the instance-id {ia}: cloud-init would take them for one machine"
                );
            }
        }
        builds.push(ids);
    }
    assert_eq!(builds[0], builds[1], "a rebuild changed the instance-ids: a reflash would re-run cloud-init");
}

/// Row 12 (unique hostname, MAC, product_uuid per node), the fleet side: a
/// MAC two nodes share, an address two nodes share, and a name two nodes share
/// are each refused at parse, exit 2, at the second one's `fleet.toml:line:col`,
/// naming both nodes and where the first one is. One `mac` on a range is
/// refused (each machine has its own), and a bad or multicast MAC too. A node's
/// MAC goes into its network-config as a netplan `match`, and cloud-init's own
/// schema accepts it.
#[test]
fn a_mac_address_or_name_two_nodes_share_is_refused_naming_both() {
    let (d, path) = setup();
    let good = fleet_text();
    let with_macs = good
        .replace("role = \"init\"\n", "role = \"init\"\nmac = \"DC:A6:32:00:00:01\"\n")
        .replace("role = \"control-plane\"\n", "role = \"control-plane\"\nmac = \"dc-a6-32-00-00-02\"\n");
    std::fs::write(&path, &with_macs).unwrap();
    let f = Fleet::load(&path).unwrap();
    assert_eq!(f.nodes[0].mac.as_deref(), Some("dc:a6:32:00:00:01"));
    assert_eq!(f.nodes[1].mac.as_deref(), Some("dc:a6:32:00:00:02"));
    let line_of = |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let cases: Vec<(&str, String, &str, Vec<String>)> = vec![
        (
            "duplicate mac",
            with_macs.replace("dc-a6-32-00-00-02", "dc:a6:32:00:00:01"),
            "mac = \"dc:a6:32:00:00:01\"",
            vec![
                "`pi-02` is already `pi-01`'s".into(),
                format!("line {}, column 7", line_of(&with_macs, "DC:A6")),
                "unique MAC".into(),
            ],
        ),
        (
            "duplicate address",
            good.replace("192.168.1.102/24", "192.168.1.101/24"),
            "address = \"192.168.1.101/24\"\nwifi",
            vec![
                "of `pi-02` is already `pi-01`'s".into(),
                format!("line {}, column 11", line_of(&good, "192.168.1.101")),
            ],
        ),
        (
            "duplicate name",
            good.replace("name = \"pi-02\"", "name = \"pi-01\""),
            "name = \"pi-01\"\nrole = \"control-plane\"",
            vec!["`pi-01` is defined twice".into(), format!("first at line {}", line_of(&good, "pi-01"))],
        ),
        (
            "one mac on a range",
            good.replace("role = \"join\"\n", "role = \"join\"\nmac = \"dc:a6:32:00:00:03\"\n"),
            "mac = \"dc:a6:32:00:00:03\"",
            vec!["range of 3 nodes".into()],
        ),
        (
            "not a mac",
            with_macs.replace("dc-a6-32-00-00-02", "dc:a6:32:00:02"),
            "mac = \"dc:a6:32:00:02\"",
            vec!["not a MAC address".into()],
        ),
        (
            "multicast mac",
            with_macs.replace("dc-a6-32-00-00-02", "01:00:5e:00:00:01"),
            "mac = \"01:00:5e:00:00:01\"",
            vec!["multicast".into()],
        ),
    ];
    for (what, text, at, needles) in cases {
        assert_ne!(text, good, "{what}: the replacement did not apply");
        let offset = text.find(at).unwrap_or_else(|| panic!("{what}: {at} not in the text"));
        let located = refused_at(&path, &text, what, text[..offset].lines().count() + 1);
        for n in &needles {
            assert!(located.contains(n.as_str()), "{what}: want `{n}` in {located}");
        }
    }
    // The MAC reaches the card's network-config, which cloud-init accepts.
    // (pi-02 on DHCP: cloud-init 22.4's parser refuses a `to: default` route.)
    std::fs::write(&path, with_macs.replace("address = \"192.168.1.102/24\"\n", "")).unwrap();
    card_image(d.path());
    let out = d.path().join("cards");
    let o = kiln(&["fleet", "images", path.to_str().unwrap(), "--node", "pi-02", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let net = mtype(&out.join("pi-02.img"), "network-config");
    assert!(net.contains("macaddress: \"dc:a6:32:00:00:02\"") && net.contains("set-name: \"eth0\""), "{net}");
    // cloud-init's own network-config v2 parser binds eth0 to that MAC.
    let parsed = cloud_init_network_state(
        d.path(),
        &net,
        "print([(i['name'], i.get('mac_address')) for i in ns.iter_interfaces()])\n",
    );
    assert!(parsed.contains("('eth0', 'dc:a6:32:00:00:02')"), "{parsed}");
}

/// `print` run on cloud-init's own parse of the network-config `net`
/// (`network_state.parse_net_config_data`, what it renders netplan/networkd
/// from) as `ns`; its output. Fails the test when cloud-init refuses `net`.
fn cloud_init_network_state(dir: &std::path::Path, net: &str, print: &str) -> String {
    let nc = dir.join("network-config");
    std::fs::write(&nc, net).unwrap();
    let o = Command::new(cloud_init_python())
        .arg("-c")
        .arg(format!(
            "import sys\nfrom cloudinit import safeyaml\nfrom cloudinit.net import network_state\n\
             cfg = safeyaml.load(open(sys.argv[1]).read())\n\
             ns = network_state.parse_net_config_data(cfg['network'], skip_broken=False)\n{print}"
        ))
        .arg(&nc)
        .output()
        .unwrap();
    assert!(o.status.success(), "cloud-init's network-config parser refused:\n{net}\n{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A static-address node's network-config: its default route is written
/// `to: 0.0.0.0/0` (not netplan's `to: default`, which cloud-init 22.4,
/// Debian 12's, refuses: "Address default is not a valid ip address"), and
/// cloud-init's own v2 parser reads the address and the route via the gateway.
#[test]
fn a_static_address_nodes_default_route_is_read_by_cloud_inits_own_parser() {
    let (d, path) = setup();
    card_image(d.path());
    let out = d.path().join("cards");
    let o = kiln(&["fleet", "images", path.to_str().unwrap(), "--node", "pi-01", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let net = mtype(&out.join("pi-01.img"), "network-config");
    assert!(!net.contains("to: default"), "{net}");
    let parsed = cloud_init_network_state(
        d.path(),
        &net,
        "for i in ns.iter_interfaces():\n\
         \x20   for s in i['subnets']:\n\
         \x20       print(i['name'], s.get('address'), s.get('prefix'), [(r['network'], r['prefix'], r['gateway']) for r in s.get('routes', [])])\n",
    );
    assert!(parsed.contains("eth0 192.168.1.101 24 [('0.0.0.0', 0, '192.168.1.1')]"), "{parsed}\n{net}");
}
