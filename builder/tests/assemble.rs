//! `kiln check` and `kiln build` assemble the same image tree (issue 22): for
//! every shipped profile, card profiles included, the tree `kiln check`
//! assembles (the pinned downloads as declared, nothing fetched) is the tree
//! `kiln build` writes, as its manifest records it — the same paths, kinds,
//! modes, owners and link targets, rendered and overlay files with the same
//! bytes, pinned files with their declared sha256 — and a card's root
//! filesystem holds its base image plus exactly that tree, so no writer adds
//! files of its own (the card writer once added the containerd unit and the
//! swap masks that `kiln check` never saw).

mod common;

use common::{repo, run, stderr, Scratch};
use kiln::image::tree::{Content, Node, Origin, Tree};
use kiln::inputs::profile::{Arch, Install, OutputFormat, Profile};
use kiln_testkit::{pi_image, standin};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// The names of the profiles in `profiles/`.
fn shipped() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo().join("profiles"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Publishes the test kit's Raspberry-Pi-like disk image where the scratch
/// copy of `name` downloads its `[base_image]`, and pins it there; returns
/// the uncompressed image, if the profile has a base image.
fn publish_base_image(s: &Scratch, name: &str) -> Option<std::path::PathBuf> {
    let p = Profile::load(&s.profile(name)).unwrap();
    let base = p.doc.base_image.as_ref()?.get_ref();
    assert_eq!(*base.compression.get_ref(), kiln::inputs::base_image::Compression::Xz, "{name}");
    let dir = s.path(&format!("pi-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let img = pi_image::build(&dir);
    let url = kiln::inputs::profile::expand_url(base.url.get_ref(), base.version.get_ref(), Arch::Arm64);
    let sha = standin::publish(&s.path("mirror"), kiln::mirror_path::url_path(&url), &pi_image::xz(&img), true);
    let text = std::fs::read_to_string(s.profile(name)).unwrap().replace(base.sha256.get_ref().as_str(), &sha);
    std::fs::write(s.profile(name), text).unwrap();
    Some(img)
}

/// `kiln build` of `name` with its own formats plus the tarball, whose
/// manifest records carry the sha256 of every file.
fn build(s: &Scratch, name: &str, formats: &[OutputFormat]) {
    let mut c = s.build_cmd_bare(name, "cache", &format!("dist-{name}"));
    c.args(["--base-url", "https://images.example.invalid/kiln", "--format", "tar"]);
    for f in formats {
        c.args(["--format", f.as_str()]);
    }
    let o = run(&mut c);
    assert!(o.status.success(), "build {name}: {}", stderr(&o));
}

/// The `kind` an origin has in the manifest.
fn origin_kind(o: &Origin) -> &'static str {
    match o {
        Origin::Rendered => "rendered",
        Origin::Implicit => "implicit",
        Origin::Artifact { .. } => "artifact",
        Origin::Overlay { .. } => "overlay",
        Origin::Firstboot { .. } => "firstboot",
        Origin::Images => "images",
    }
}

/// Holds the tree `kiln check` assembles for `arch` against the manifest
/// records of the tree `kiln build` wrote.
fn compare(p: &Profile, arch: Arch, tree: &Tree, records: &[Value], firstboot_sha: &str) {
    let by_path: BTreeMap<&str, &Value> = records.iter().map(|r| (r["path"].as_str().unwrap(), r)).collect();
    let artifacts = p.artifacts_for(arch).unwrap();
    for (key, e) in tree.iter() {
        let path = format!("/{key}");
        let what = format!("{} {arch} {path} ({})", p.name(), e.origin);
        let r = by_path
            .get(path.as_str())
            .unwrap_or_else(|| panic!("{what}: kiln check assembles it, kiln build does not"));
        let (kind, target) = match &e.node {
            Node::File(_) => ("file", None),
            Node::Dir => ("dir", None),
            Node::Symlink(t) => ("symlink", Some(t.as_str())),
        };
        assert_eq!(r["type"], kind, "{what}");
        assert_eq!(r["mode"], format!("{:04o}", e.mode), "{what}");
        assert_eq!((r["uid"].as_u64(), r["gid"].as_u64()), (Some(e.uid.into()), Some(e.gid.into())), "{what}");
        assert_eq!(r["target"].as_str(), target, "{what}");
        assert_eq!(r["origin"]["kind"], origin_kind(&e.origin), "{what}");
        match (&e.origin, &e.node) {
            (Origin::Artifact { name, version, url }, Node::File(_)) => {
                assert_eq!(
                    (&r["origin"]["name"], &r["origin"]["version"]),
                    (&Value::from(name.as_str()), &Value::from(version.as_str())),
                    "{what}"
                );
                assert_eq!(r["origin"]["url"], url.as_str(), "{what}");
                let a = artifacts.iter().find(|a| &a.name == name).unwrap();
                if matches!(a.install, Install::File { .. }) {
                    assert_eq!(r["sha256"], a.sha256.as_str(), "{what}: not the declared pin");
                    if let Some(size) = a.size {
                        assert_eq!(r["size"], size, "{what}");
                    }
                }
            }
            (Origin::Firstboot { .. }, _) => assert_eq!(r["sha256"], firstboot_sha, "{what}"),
            (_, Node::File(c)) => {
                let bytes = match c {
                    Content::Inline(b) => b.clone(),
                    Content::Disk { path, .. } => std::fs::read(path).unwrap(),
                    Content::Generated(g) => panic!("{what}: kiln check assembles a generated file ({} bytes)", g.size),
                };
                assert_eq!(r["size"], bytes.len(), "{what}");
                assert_eq!(r["sha256"], standin::sha256(&bytes), "{what}: other contents");
            }
            _ => {}
        }
    }
    // Beyond check's tree, a build has only the members of `extract = ["*"]`
    // tarballs (known once downloaded) and the directories they create.
    let extract_all: BTreeSet<&str> = artifacts
        .iter()
        .filter(|a| matches!(a.install, Install::Extract { members: None }))
        .map(|a| a.name.as_str())
        .collect();
    for r in records {
        let path = r["path"].as_str().unwrap();
        if tree.get(path).is_some() {
            continue;
        }
        let o = &r["origin"];
        let member = o["kind"] == "artifact" && o["name"].as_str().is_some_and(|n| extract_all.contains(n));
        let parent = o["kind"] == "implicit" && r["type"] == "dir";
        assert!(
            member || parent,
            "{} {arch} {path}: kiln build writes it, kiln check does not assemble it: {r}",
            p.name()
        );
    }
}

/// Every path of an ext4 file system with its mode (type bits included), per `debugfs ls -p`.
fn listing(part: &Path) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    let mut dirs = vec!["/".to_string()];
    while let Some(dir) = dirs.pop() {
        let o = Command::new("debugfs").arg("-R").arg(format!("ls -p {dir}")).arg(part).output().unwrap();
        assert!(o.status.success(), "debugfs ls -p {dir}: {}", String::from_utf8_lossy(&o.stderr));
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            // `/inode/mode/uid/gid/name/size/`
            let f: Vec<&str> = line.split('/').collect();
            if f.len() < 7 || f[5] == "." || f[5] == ".." {
                continue;
            }
            let mode = u32::from_str_radix(f[2], 8).unwrap();
            let path = format!("{}/{}", dir.trim_end_matches('/'), f[5]);
            if mode & 0o170000 == 0o040000 {
                dirs.push(path.clone());
            }
            out.insert(path, mode);
        }
    }
    out
}

/// The card's root file system is the base image's plus `tree` and the
/// members of `extract = ["*"]` tarballs the build recorded (`records`,
/// held to `tree` by [`compare`]): nothing else.
fn card_holds_base_and_tree(s: &Scratch, file: &str, name: &str, base_img: &Path, tree: &Tree, records: &[Value]) {
    let img = s.path(&format!("dist-{file}/{name}-arm64.img"));
    let sector0 = std::fs::read(&img).unwrap()[..512].to_vec();
    let root_sectors = u32::from_le_bytes(sector0[446 + 16 + 12..446 + 16 + 16].try_into().unwrap()) as u64;
    let (card_root, base_root) = (s.path(&format!("{name}-card.ext4")), s.path(&format!("{name}-base.ext4")));
    pi_image::extract(&img, pi_image::root_start(), root_sectors, &card_root);
    pi_image::extract(base_img, pi_image::root_start(), pi_image::ROOT_SECTORS, &base_root);
    let (card, base) = (listing(&card_root), listing(&base_root));
    let recorded: BTreeSet<&str> = records.iter().filter_map(|r| r["path"].as_str()).collect();
    for path in card.keys().filter(|p| !base.contains_key(*p)) {
        assert!(
            tree.get(path).is_some() || recorded.contains(path.as_str()),
            "{name}: {path} is on the card but neither in the base image nor in the tree kiln check assembles"
        );
    }
    for (key, e) in tree.iter() {
        let path = format!("/{key}");
        let mode = card.get(&path).unwrap_or_else(|| panic!("{name}: {path} ({}) is not on the card", e.origin));
        if matches!(e.node, Node::File(_)) {
            assert_eq!(mode & 0o7777, e.mode, "{name}: {path}");
        }
    }
}

#[test]
fn check_and_build_assemble_the_same_tree_for_every_shipped_profile() {
    let names = shipped();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let s = Scratch::new(&refs);
    let mut cards = 0;
    for name in &names {
        s.pin(name);
        let base_img = publish_base_image(&s, name);
        let p = Profile::load(&s.profile(name)).unwrap();
        let formats = p.formats();
        build(&s, name, &formats);
        let mut built = formats.clone();
        built.push(OutputFormat::Tar);
        let manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(s.path(&format!("dist-{name}/manifest.json"))).unwrap())
                .unwrap();
        for arch in p.architectures() {
            let tree = kiln::image::check::tree(&p, arch, &built).unwrap_or_else(|e| panic!("{name} {arch}: {e}"));
            let records = manifest["profiles"][p.name()]["trees"][arch.as_str()].as_array().expect("tree records");
            let fb = std::fs::read(s.path(&format!("firstboot/kiln-firstboot-{arch}"))).unwrap();
            compare(&p, arch, &tree, records, &standin::sha256(&fb));
            if formats.contains(&OutputFormat::Card) {
                card_holds_base_and_tree(
                    &s,
                    name,
                    p.name(),
                    base_img.as_deref().expect("a card has a base image"),
                    &tree,
                    records,
                );
                cards += 1;
            }
        }
    }
    assert!(cards >= 2, "the card profiles were compared too");
}
