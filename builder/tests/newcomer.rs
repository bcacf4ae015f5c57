//! What a new user trips over (issue 13, items 4-8): paths and URLs checked
//! where they are parsed, one way to name a profile, no secret printed unless
//! asked, two profiles with one name refused, `--json` and `-v` that say
//! something, only executables in the bin dirs, each profile building what its
//! distro deploys, and the cloud-config that installs kiln's image on a stock
//! cloud image (its script run for real against a loopback server).

mod common;

use common::*;
use kiln_testkit::mirror::Mirror;
use std::path::{Path, PathBuf};
use std::process::Command;

fn init_cluster(dir: &Path) -> PathBuf {
    let out = dir.join("clusters/lab");
    let o = run(kiln()
        .args(["cluster", "init", "lab", "--endpoint", "10.0.0.10", "--kubernetes-version", "v1.34.2", "--out"])
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    out
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn a_profile_directory_or_a_typo_gets_the_fix() {
    let s = Scratch::new(&[]);
    let o = run(kiln().arg("check").arg(s.path("profiles/")));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is a directory; name profile files, e.g. `"), "{}", stderr(&o));
    assert!(stderr(&o).contains("/*.toml` (it holds debian-1.34.toml, fcos-1.34.toml"), "{}", stderr(&o));
    let o = run(kiln().arg("check").arg(s.path("profiles/flatcar-1.43.toml")));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!("did you mean {}?", s.path("profiles/flatcar-1.34.toml").display())),
        "{}",
        stderr(&o)
    );
    let o = run(kiln().arg("check").arg(s.path("nowhere/x.toml")));
    assert!(stderr(&o).contains("nowhere does not exist either"), "{}", stderr(&o));
}

#[test]
fn pin_and_build_name_the_profile_the_same_way_and_pin_reads_a_mirror_directory() {
    let s = Scratch::new(&["flatcar-1.34"]);
    // Positional, and the mirror as a plain directory (made a file:// URL).
    let o = run(kiln().arg("pin").arg(s.profile("flatcar-1.34")).arg("--base-url").arg(s.mirror.root()));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("sha256.amd64"), "pin printed no diff: {}", stdout(&o));
    // The old spelling still works, for pin and now for build too.
    let o = run(kiln()
        .args(["pin", "--dry-run", "--profile"])
        .arg(s.profile("flatcar-1.34"))
        .arg("--base-url")
        .arg(s.mirror.url()));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(kiln()
        .args(["build", "--format", "tar", "--profile"])
        .arg(s.profile("flatcar-1.34"))
        .arg("--mirror")
        .arg(s.mirror.url())
        .arg("--cache")
        .arg(s.path("cache"))
        .arg("--out")
        .arg(s.path("dist"))
        .args(s.firstboot_args()));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(s.path("dist/flatcar-1.34-amd64.tar.gz").is_file());
    let o = run(kiln().args(["pin", "--base-url", "/no/such/dir"]).arg(s.profile("flatcar-1.34")));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("neither a URL (https://HOST/PATH) nor an existing directory"), "{}", stderr(&o));
}

#[test]
fn base_urls_are_checked_where_they_are_parsed() {
    let s = Scratch::new(&[]);
    for (url, why) in [
        ("images.example.com", "has no scheme: write https://images.example.com"),
        ("file:///srv/kiln", "`file://` is not a scheme Ignition downloads from"),
        ("https://", "has no host"),
        ("https://user:pw@images.example.com", "carries credentials"),
        ("https://images.example.com/a b", "has a blank"),
    ] {
        let o = run(kiln()
            .args(["build", "--format", "ignition", "--base-url", url])
            .arg(s.profile("flatcar-1.34"))
            .arg("--offline"));
        assert_eq!(o.status.code(), Some(2), "{url}: {}", stderr(&o));
        assert!(stderr(&o).contains(why), "{url}: {}", stderr(&o));
    }
    // --base-url belongs to --image for userdata.
    let c = init_cluster(s.dir.path());
    let o = run(kiln()
        .args(["userdata", "--role", "join", "--base-url", "https://x.example", "--out", "-", "--cluster"])
        .arg(&c));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--image"), "{}", stderr(&o));
}

#[test]
fn userdata_never_prints_secrets_unless_asked_and_names_a_missing_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let c = init_cluster(tmp.path());
    let token = std::fs::read_to_string(c.join("secrets/bootstrap-token")).unwrap();
    let o = run(kiln().args(["userdata", "--role", "join", "--cluster"]).arg(&c));
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty(), "printed without --out -");
    assert!(stderr(&o).contains("pass --out FILE (written 0600), or --out - to print it"), "{}", stderr(&o));
    let o = run(kiln().args(["userdata", "--role", "join", "--out", "-", "--cluster"]).arg(&c));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(token.trim()), "--out - printed no token");
    let o = run(kiln()
        .args(["userdata", "--role", "join", "--cluster"])
        .arg(&c)
        .arg("--out")
        .arg(tmp.path().join("nodir/x")));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nodir/ does not exist: create it (mkdir -p"), "{}", stderr(&o));
    assert!(!stderr(&o).contains(".kiln-"), "a temp file name leaked: {}", stderr(&o));
    // And the hint for a missing cluster names every required flag.
    let o = run(kiln().args(["userdata", "--role", "join", "--out", "-", "--cluster"]).arg(tmp.path().join("none")));
    assert!(stderr(&o).contains("--kubernetes-version"), "{}", stderr(&o));
}

#[test]
fn the_image_decides_the_userdata_format_and_contradictions_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let c = init_cluster(tmp.path());
    let ign = tmp.path().join("flatcar-1.34-amd64.ign");
    std::fs::write(&ign, r#"{"ignition":{"version":"3.3.0"}}"#).unwrap();
    let tgz = tmp.path().join("debian-1.34-amd64.tar.gz");
    std::fs::write(&tgz, b"not really a tarball").unwrap();
    let cases: [(&Path, &[&str], &str); 4] = [
        (&ign, &["--format", "cloud-config"], "goes with --format ignition"),
        (&tgz, &["--format", "ignition", "--base-url", "https://x.example"], "a cloud-config installs it"),
        (&tgz, &[], "needs --base-url URL"),
        (&tgz, &["--base-url", "tftp://x.example"], "over http:// or https://"),
    ];
    for (image, extra, why) in cases {
        let out = tmp.path().join("out");
        let o = run(kiln()
            .args(["userdata", "--role", "join", "--cluster"])
            .arg(&c)
            .arg("--image")
            .arg(image)
            .args(extra)
            .arg("--out")
            .arg(&out));
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(why), "{extra:?}: {}", stderr(&o));
        assert!(!out.exists());
    }
}

/// The cloud-config's files, decoded (path, mode, content), and its runcmd.
fn cloud_config(path: &Path) -> (Vec<(String, u32, Vec<u8>)>, serde_json::Value) {
    use base64::Engine;
    let o = Command::new("/usr/bin/python3")
        .args(["-c", "import sys, json, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let files = v["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let b = base64::engine::general_purpose::STANDARD.decode(f["content"].as_str().unwrap()).unwrap();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&b[..]), &mut data).unwrap();
            let mode = u32::from_str_radix(f["permissions"].as_str().unwrap(), 8).unwrap();
            (f["path"].as_str().unwrap().to_string(), mode, data)
        })
        .collect();
    (files, v["runcmd"].clone())
}

/// Runs the install script with `KILN_INSTALL_ROOT=root`.
fn install(script: &Path, root: &Path) -> std::process::Output {
    let o = Command::new("sh").arg(script).env("KILN_INSTALL_ROOT", root).output().unwrap();
    eprintln!("{}{}", stdout(&o), stderr(&o));
    o
}

#[test]
fn a_cloud_config_installs_only_the_pinned_image_then_starts_kiln_firstboot() {
    let s = Scratch::new(&["debian-1.34"]);
    s.pin("debian-1.34");
    let o = run(s.build_cmd_bare("debian-1.34", "cache", "dist").args(["--arch", "amd64"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let dist = std::fs::canonicalize(s.path("dist")).unwrap();
    let tgz = dist.join("debian-1.34-amd64.tar.gz");
    // The tarball a stock image needs: containerd's unit and binaries, runc, kiln-firstboot.
    let listing =
        String::from_utf8_lossy(&Command::new("tar").arg("-tzf").arg(&tgz).output().unwrap().stdout).to_string();
    for p in [
        "etc/systemd/system/containerd.service",
        "etc/systemd/system/multi-user.target.wants/containerd.service",
        "etc/systemd/system/kiln-firstboot.service",
        "etc/containerd/config.toml",
        "opt/bin/runc",
        "opt/bin/kiln-firstboot",
    ] {
        assert!(listing.lines().any(|l| l == p), "{p} not in the debian tarball:\n{listing}");
    }
    // dist/ as a web server would publish it, at /kiln/.
    let www = s.path("www");
    std::fs::create_dir_all(www.join("kiln")).unwrap();
    std::fs::copy(&tgz, www.join("kiln/debian-1.34-amd64.tar.gz")).unwrap();
    let served = Mirror::serve(&www);
    let base = format!("{}/kiln", served.url());
    let c = init_cluster(s.dir.path());
    let cc = s.path("worker.yaml");
    let o = run(kiln()
        .args(["userdata", "--role", "join", "--node", "w-1", "--cluster"])
        .arg(&c)
        .arg("--image")
        .arg(&tgz)
        .args(["--base-url", &base])
        .arg("--out")
        .arg(&cc));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("cloud-config user-data"), "{}", stderr(&o));
    let schema = Command::new("cloud-init").args(["schema", "--config-file"]).arg(&cc).output().expect("cloud-init");
    assert!(schema.status.success(), "cloud-init schema: {}{}", stdout(&schema), stderr(&schema));
    let (files, runcmd) = cloud_config(&cc);
    assert_eq!(runcmd, serde_json::json!([["/var/lib/kiln/install-image"]]));
    let (_, mode, script) = files.iter().find(|f| f.0 == "/var/lib/kiln/install-image").expect("the installer");
    assert_eq!(*mode, 0o700);
    let script_text = String::from_utf8_lossy(script).to_string();
    let sha = kiln::hash::sha256_file(&tgz).unwrap();
    assert!(script_text.contains(&format!("sha256='{sha}'")), "{script_text}");
    assert!(script_text.contains(&format!("url='{base}/debian-1.34-amd64.tar.gz'")), "{script_text}");
    assert!(files.iter().any(|f| f.0 == "/etc/kiln/node.toml" && f.1 == 0o600));
    let script_path = s.path("install-image");
    std::fs::write(&script_path, script).unwrap();

    // Installed into a root: the image's files land, the sha256 is recorded.
    let root = s.path("root");
    std::fs::create_dir_all(&root).unwrap();
    let o = install(&script_path, &root);
    assert!(o.status.success());
    assert!(stdout(&o).contains(&format!("kiln-install: sha256 {sha} verified")), "{}", stdout(&o));
    assert!(root.join("opt/bin/kiln-firstboot").is_file());
    assert!(root.join("etc/systemd/system/containerd.service").is_file());
    assert_eq!(std::fs::read_to_string(root.join("var/lib/kiln/image.sha256")).unwrap().trim(), sha);
    assert!(!root.join("var/lib/kiln/.image.download").exists());
    // Once per image: a second run does not download again.
    let gets = served.log().len();
    let o = install(&script_path, &root);
    assert!(o.status.success() && stdout(&o).contains("is already installed"), "{}", stdout(&o));
    assert_eq!(served.log().len(), gets, "downloaded again");

    // A tampered image on the server is refused and nothing is installed.
    let mut bad = std::fs::read(&tgz).unwrap();
    bad[1000] ^= 0x20;
    let evil = s.path("evil");
    std::fs::create_dir_all(evil.join("kiln")).unwrap();
    std::fs::write(evil.join("kiln/debian-1.34-amd64.tar.gz"), &bad).unwrap();
    let evil_server = Mirror::serve(&evil);
    let evil_script = script_text.replace(&base, &format!("{}/kiln", evil_server.url()));
    std::fs::write(&script_path, evil_script).unwrap();
    let clean = s.path("clean-root");
    std::fs::create_dir_all(&clean).unwrap();
    let o = install(&script_path, &clean);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("kiln-install: REFUSED") && stdout(&o).contains(&format!("not the {sha}")),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("nothing was installed"));
    assert!(!clean.join("opt").exists() && !clean.join("etc").exists(), "something was extracted");
    assert!(!clean.join("var/lib/kiln/image.sha256").exists());
    assert!(!clean.join("var/lib/kiln/.image.download").exists(), "the bad download was kept");
}

#[test]
fn two_profiles_with_one_name_are_refused() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let copy = s.path("profiles/my-flatcar.toml");
    std::fs::copy(s.profile("flatcar-1.34"), &copy).unwrap(); // "copy the profile and edit it", minus the edit
                                                              // In one command: refused before anything is built.
    let o = run(s.build_cmd("flatcar-1.34", "cache", "dist").arg(&copy));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("are both name = \"flatcar-1.34\""), "{}", stderr(&o));
    assert!(!s.path("dist").exists());
    // Across builds into one output directory.
    let o = run(&mut s.build_cmd("flatcar-1.34", "cache", "dist"));
    assert!(o.status.success(), "{}", stderr(&o));
    let mut c = s.build_cmd_path(&copy, "cache", "dist");
    let o = run(c.args(["--format", "tar"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is also the name of") && stderr(&o).contains("flatcar-1.34.toml"), "{}", stderr(&o));
    // Its own output directory is fine; and once the first file is gone, the copy takes the name over.
    let o = run(s.build_cmd_path(&copy, "cache", "other").args(["--format", "tar"]));
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_file(s.profile("flatcar-1.34")).unwrap();
    let o = run(c.arg("--force"));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn build_json_is_one_object_on_success_and_on_failure() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let o = run(s.build_cmd_upstream(&[&s.profile("flatcar-1.34")], "empty-cache", "dist").args([
        "--format",
        "tar",
        "--offline",
        "--json",
    ]));
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["exit_code"], 1);
    assert!(v["error"]["message"].as_str().unwrap().contains("--offline"), "{v}");
    let o = run(s.build_cmd("flatcar-1.34", "cache", "dist").arg("--json"));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(v["ok"], true);
    assert_eq!(v["error"], serde_json::Value::Null);
    assert_eq!(v["profiles"][0]["profile"], "flatcar-1.34");
    assert_eq!(v["profiles"][0]["outputs"][0]["file"], "flatcar-1.34-amd64.tar.gz");
}

#[test]
fn verbose_says_more_and_release_documents_stay_out_of_bin_dirs() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let o = run(&mut s.build_cmd("flatcar-1.34", "cache", "dist"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("image tree (amd64)"));
    let o = run(s.build_cmd("flatcar-1.34", "cache", "dist2").arg("-v"));
    assert!(o.status.success(), "{}", stderr(&o));
    for line in [
        "flatcar-1.34: formats tar, architectures amd64, epoch ",
        "image tree (amd64): ",
        "unchanged since verified",
        "kiln-firstboot (amd64): ",
    ] {
        assert!(stderr(&o).contains(line), "-v does not print {line:?}:\n{}", stderr(&o));
    }
    let listing = String::from_utf8_lossy(
        &Command::new("tar").arg("-tzf").arg(s.path("dist/flatcar-1.34-amd64.tar.gz")).output().unwrap().stdout,
    )
    .to_string();
    assert!(listing.lines().any(|l| l == "opt/cni/bin/bridge"), "{listing}");
    for doc in ["opt/cni/bin/LICENSE", "opt/cni/bin/README.md"] {
        assert!(!listing.lines().any(|l| l == doc), "{doc} landed in the image:\n{listing}");
    }
}

#[test]
fn each_profile_builds_what_its_distro_deploys() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let o = run(&mut s.build_cmd_bare("flatcar-1.34", "cache", "dist"));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("flatcar-1.34 writes an Ignition config by default (formats = [\"sysext\", \"ignition\"]")
            && stderr(&o).contains("--base-url URL"),
        "{}",
        stderr(&o)
    );
    let o =
        run(s.build_cmd_bare("flatcar-1.34", "cache", "dist").args(["--base-url", "https://images.example.test/kiln"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let mut outputs = files_in(&s.path("dist"));
    outputs.sort();
    assert_eq!(
        outputs,
        ["SHA256SUMS", "flatcar-1.34-amd64.ign", "kubernetes-v1.34.2-flatcar-1.34-amd64.raw", "manifest.json"]
    );
    for (name, formats) in [
        ("debian-1.34", "[\"tar\"]"),
        ("fcos-1.34", "[\"sysext\", \"ignition\"]"),
        ("flatcar-1.33", "[\"sysext\", \"ignition\"]"),
        ("rpi-1.34", "[\"tar\"]"),
        ("rpi-raspios-1.34", "[\"card\"]"),
        ("rpi-ubuntu-1.34", "[\"card\"]"),
    ] {
        let text = std::fs::read_to_string(repo().join(format!("profiles/{name}.toml"))).unwrap();
        assert!(text.contains(&format!("\nformats = {formats}\n")), "{name}: formats");
    }
}

/// An `/etc/kiln/image.toml` for an image with kubeadm and kubelet `version`.
fn image_toml(version: &str) -> String {
    let text = format!(
        "schema = 1\nprofile = \"debian-1.34\"\nfamily = \"debian\"\narch = \"amd64\"\n\
         kubernetes_version = \"{version}\"\nkubeadm_version = \"{version}\"\nkubelet_version = \"{version}\"\n\
         bin_dir = \"/opt/bin\"\ncni_bin_dir = \"/opt/cni/bin\"\n\
         flex_volume_dir = \"/opt/libexec/kubernetes/kubelet-plugins/volume/exec/\"\nruntime = \"containerd\"\n\
         runtime_socket = \"unix:///run/containerd/containerd.sock\"\ncgroup_driver = \"systemd\"\n"
    );
    // What kiln-firstboot reads: the whole schema, nothing unknown.
    kiln_firstboot::contract::image::ImageDefaults::from_toml(&text).unwrap().to_toml()
}

/// A tarball holding `members` (path, content), as `.tar.gz` or `.tar.zst`.
fn small_tarball(members: &[(&str, &[u8])], zstd: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, p, *data).unwrap();
    }
    let raw = b.into_inner().unwrap();
    if zstd {
        zstd::encode_all(&raw[..], 3).unwrap()
    } else {
        kiln::ignition::gzip(&raw)
    }
}

#[test]
fn userdata_refuses_an_image_whose_kubeadm_cannot_bring_up_the_clusters_version() {
    use base64::Engine;
    let tmp = tempfile::tempdir().unwrap();
    let cluster = |name: &str, version: &str| {
        let out = tmp.path().join(name);
        let o = run(kiln()
            .args(["cluster", "init", name, "--endpoint", "10.0.0.10", "--kubernetes-version", version, "--out"])
            .arg(&out));
        assert!(o.status.success(), "{}", stderr(&o));
        out
    };
    let (v134, v136, v133) = (cluster("old", "v1.34.2"), cluster("new", "v1.36.0"), cluster("older", "v1.33.5"));
    let toml = image_toml("v1.34.2");
    let tgz = tmp.path().join("debian-1.34-amd64.tar.gz");
    std::fs::write(&tgz, small_tarball(&[("etc/kiln/image.toml", toml.as_bytes())], false)).unwrap();
    let zst = tmp.path().join("debian-1.34-arm64.tar.zst");
    std::fs::write(&zst, small_tarball(&[("./etc/kiln/image.toml", toml.as_bytes())], true)).unwrap();
    let ign = tmp.path().join("flatcar-1.34-amd64.ign");
    let z = kiln::ignition::gzip(toml.as_bytes());
    let entry = serde_json::json!({
        "path": "/etc/kiln/image.toml", "mode": 420,
        "contents": { "compression": "gzip", "source": format!("data:;base64,{}", base64::engine::general_purpose::STANDARD.encode(&z)) },
    });
    std::fs::write(
        &ign,
        serde_json::json!({"ignition": {"version": "3.3.0"}, "storage": {"files": [entry]}}).to_string(),
    )
    .unwrap();
    let userdata = |c: &Path, role: &str, image: &Path, out: &Path| {
        run(kiln()
            .args(["userdata", "--role", role, "--cluster"])
            .arg(c)
            .arg("--image")
            .arg(image)
            .args(["--base-url", "https://images.example.test/kiln"])
            .arg("--out")
            .arg(out))
    };
    for image in [&tgz, &zst, &ign] {
        let out = tmp.path().join("out");
        // The image's own version: accepted, for every role.
        for role in ["init", "control-plane", "join"] {
            let o = if image == &ign {
                run(kiln()
                    .args(["userdata", "--role", role, "--cluster"])
                    .arg(&v134)
                    .arg("--image")
                    .arg(image)
                    .arg("--out")
                    .arg(&out))
            } else {
                userdata(&v134, role, image, &out)
            };
            assert!(o.status.success(), "{} {role}: {}", image.display(), stderr(&o));
            std::fs::remove_file(&out).unwrap();
        }
        // Two minors ahead of kubeadm: refused where the mistake is made, not at boot.
        for (role, why) in [
            ("join", "kubeadm v1.34.2 cannot join a v1.36.0 cluster"),
            ("init", "cannot deploy a v1.36.0 control plane"),
        ] {
            let o = userdata(&v136, role, image, &out);
            assert_eq!(o.status.code(), Some(2), "{} {role}: {}", image.display(), stderr(&o));
            for part in [why, "kiln-firstboot would refuse it at boot", "Pass an image built for v1.36.0"] {
                assert!(stderr(&o).contains(part), "{} {role}: {}", image.display(), stderr(&o));
            }
            assert!(!out.exists());
        }
        // A kubelet newer than the control plane.
        let o = userdata(&v133, "join", image, &out);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("kubelet v1.34.2 is newer than the v1.33.5 control plane"), "{}", stderr(&o));
    }
    // Not a kiln image: said so, exit 2.
    let bare = tmp.path().join("other-amd64.tar.gz");
    std::fs::write(&bare, small_tarball(&[("etc/hostname", b"x\n")], false)).unwrap();
    let o = userdata(&v134, "join", &bare, &tmp.path().join("out"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("holds no etc/kiln/image.toml: not a kiln image"), "{}", stderr(&o));
}

/// Row 35 against the cluster: `kiln userdata --image` refuses an image whose
/// CNI manifest (`/etc/kiln/cni.yaml`, applied by the init node) does not fit
/// cluster.toml's pod_subnet, naming both values and the fix; a fitting one,
/// or an image without a manifest, passes.
#[test]
fn userdata_refuses_an_image_whose_cni_manifest_does_not_fit_the_clusters_pod_subnet() {
    use base64::Engine;
    let tmp = tempfile::tempdir().unwrap();
    let cluster = |name: &str, subnet: &str| {
        let out = tmp.path().join(name);
        let o = run(kiln()
            .args(["cluster", "init", name, "--endpoint", "10.0.0.10", "--kubernetes-version", "v1.34.2"])
            .args(["--pod-subnet", subnet, "--out"])
            .arg(&out));
        assert!(o.status.success(), "{}", stderr(&o));
        out
    };
    let (flannels, other) = (cluster("flannel", "10.244.0.0/16"), cluster("other", "10.42.0.0/16"));
    let toml = image_toml("v1.34.2");
    let cni = "kind: ConfigMap\nmetadata:\n  name: kube-flannel-cfg\ndata:\n  net-conf.json: |\n    {\n      \"Network\": \"10.244.0.0/16\",\n      \"Backend\": { \"Type\": \"vxlan\" }\n    }\n";
    let tgz = tmp.path().join("debian-1.34-amd64.tar.gz");
    std::fs::write(
        &tgz,
        small_tarball(&[("etc/kiln/image.toml", toml.as_bytes()), ("etc/kiln/cni.yaml", cni.as_bytes())], false),
    )
    .unwrap();
    let ign = tmp.path().join("flatcar-1.34-amd64.ign");
    let file = |path: &str, data: &[u8]| {
        serde_json::json!({
            "path": path, "mode": 420,
            "contents": { "source": format!("data:;base64,{}", base64::engine::general_purpose::STANDARD.encode(data)) },
        })
    };
    let files = [file("/etc/kiln/image.toml", toml.as_bytes()), file("/etc/kiln/cni.yaml", cni.as_bytes())];
    std::fs::write(
        &ign,
        serde_json::json!({"ignition": {"version": "3.3.0"}, "storage": {"files": files}}).to_string(),
    )
    .unwrap();
    let bare = tmp.path().join("debian-1.34-arm64.tar.gz");
    std::fs::write(&bare, small_tarball(&[("etc/kiln/image.toml", toml.as_bytes())], false)).unwrap();
    let out = tmp.path().join("out");
    let userdata = |c: &Path, image: &Path| {
        let mut cmd = kiln();
        cmd.args(["userdata", "--role", "init", "--cluster"]).arg(c).arg("--image").arg(image);
        if image != ign {
            cmd.args(["--base-url", "https://images.example.test/kiln"]);
        }
        run(cmd.arg("--out").arg(&out))
    };
    for image in [&tgz, &ign] {
        let o = userdata(&flannels, image);
        assert!(o.status.success(), "{}: {}", image.display(), stderr(&o));
        std::fs::remove_file(&out).unwrap();
        let o = userdata(&other, image);
        assert_eq!(o.status.code(), Some(2), "{}: {}", image.display(), stderr(&o));
        for part in [
            "/etc/kiln/cni.yaml:7: flannel's net-conf.json \"Network\" is 10.244.0.0/16 but pod_subnet is 10.42.0.0/16",
            "kiln-firstboot would refuse it on the init node",
            "[cni_manifest] pod_subnet to 10.42.0.0/16",
        ] {
            assert!(stderr(&o).contains(part), "{}: {part:?} missing: {}", image.display(), stderr(&o));
        }
        assert!(!out.exists());
    }
    // No manifest in the image: nothing to hold against the cluster.
    let o = userdata(&other, &bare);
    assert!(o.status.success(), "{}", stderr(&o));
}
