//! `kiln mirror` fills a directory that `kiln build --offline --mirror DIR`
//! builds every shipped profile from; a directory mirror with missing files
//! lists them all; network failures are summarised for every artifact with
//! the next step. Everything runs against loopback servers (and `.invalid`,
//! which never resolves, RFC 2606).

mod common;

use common::*;
use kiln::inputs::profile::{expand_url, Arch, Artifact, Profile};
use kiln::mirror_path::url_path;
use kiln_testkit::mirror::Fault;
use kiln_testkit::{pi_image, standin};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Every profile in profiles/: the card ones are built with `--format card`.
const SHIPPED: [&str; 7] =
    ["debian-1.34", "fcos-1.34", "flatcar-1.33", "flatcar-1.34", "rpi-1.34", "rpi-raspios-1.34", "rpi-ubuntu-1.34"];
const CARDS: [&str; 2] = ["rpi-raspios-1.34", "rpi-ubuntu-1.34"];

/// The shipped profiles in the scratch dir, re-pinned to the loopback mirror's
/// stand-ins; the card profiles' `[base_image]` pins point at one Pi-like
/// image published at each one's upstream path.
fn shipped() -> Scratch {
    let s = Scratch::new(&SHIPPED);
    for name in SHIPPED {
        s.pin(name);
    }
    fs::create_dir_all(s.path("pi")).unwrap();
    let xz = pi_image::xz(&pi_image::build(&s.path("pi")));
    for name in CARDS {
        let p = Profile::load(&s.profile(name)).unwrap();
        let base = p.doc.base_image.as_ref().unwrap().get_ref();
        let url = expand_url(base.url.get_ref(), base.version.get_ref(), Arch::Arm64);
        let sha = standin::publish(s.mirror.root(), url_path(&url), &xz, true);
        let text = fs::read_to_string(s.profile(name)).unwrap().replace(base.sha256.get_ref().as_str(), &sha);
        fs::write(s.profile(name), text).unwrap();
    }
    s
}

/// Every artifact a profile needs (all its architectures, and its base image).
fn artifacts(s: &Scratch, name: &str) -> Vec<Artifact> {
    let p = Profile::load(&s.profile(name)).unwrap();
    let mut all = Vec::new();
    for arch in p.architectures() {
        all.extend(p.artifacts_for(arch).unwrap());
        if let Some(base) = &p.doc.base_image {
            all.push(base.get_ref().artifact(&p, arch).unwrap());
        }
    }
    all
}

/// `kiln mirror PROFILES --out DIR --cache CACHE [extra]`.
fn mirror_cmd(s: &Scratch, names: &[&str], dir: &Path, cache: &str) -> Command {
    let mut c = kiln();
    c.arg("mirror").args(names.iter().map(|n| s.profile(n))).arg("--out").arg(dir).arg("--cache").arg(s.path(cache));
    c
}

/// `kiln build PROFILE --offline --mirror DIR` with a cache and output of its own.
fn offline_build(s: &Scratch, name: &str, dir: &Path, cache: &str) -> Command {
    let mut c = s.build_cmd_upstream(&[&s.profile(name)], cache, &format!("dist-{name}"));
    c.arg("--offline")
        .arg("--mirror")
        .arg(dir)
        // What each profile deploys (its `formats`): the Ignition configs need a base URL.
        .args(["--base-url", "https://images.example.test/kiln"]);
    c
}

fn json(o: Output) -> Value {
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

/// `path → status` of a `kiln mirror --json` report.
fn statuses(report: &Value) -> BTreeMap<String, String> {
    report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap().to_string(), f["status"].as_str().unwrap().to_string()))
        .collect()
}

/// `GET`s per path in the mirror's log after entry `from`, checksum files left out.
fn gets_since(s: &Scratch, from: usize) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for (m, p, _) in s.mirror.log().into_iter().skip(from) {
        if m == "GET" && !p.ends_with(".sha256") {
            *n.entry(p).or_insert(0) += 1;
        }
    }
    n
}

fn rel(a: &Artifact) -> String {
    url_path(&a.url).trim_start_matches('/').to_string()
}

fn error_lines(o: &Output) -> Vec<String> {
    stderr(o).lines().filter_map(|l| l.strip_prefix("kiln: error: ")).map(str::to_string).collect()
}

#[test]
fn kiln_mirror_fills_a_directory_every_shipped_profile_builds_from_offline() {
    let s = shipped();
    let dir = s.path("filled");
    let wanted: BTreeMap<String, Artifact> =
        SHIPPED.iter().flat_map(|n| artifacts(&s, n)).map(|a| (rel(&a), a)).collect();
    for path in [
        "release/v1.34.2/bin/linux/amd64/kubelet",
        "release/v1.33.6/bin/linux/amd64/kubeadm",
        "kubernetes-sigs/cri-tools/releases/download/v1.34.0/crictl-v1.34.0-linux-arm64.tar.gz",
        "containernetworking/plugins/releases/download/v1.8.0/cni-plugins-linux-amd64-v1.8.0.tgz",
        "containerd/containerd/releases/download/v2.1.5/containerd-static-2.1.5-linux-arm64.tar.gz",
        "opencontainers/runc/releases/download/v1.3.3/runc.arm64",
        "raspios_lite_arm64/images/raspios_lite_arm64-2026-10-06/2026-10-06-raspios-trixie-arm64-lite.img.xz",
        "releases/24.04.3/release/ubuntu-24.04.3-preinstalled-server-arm64+raspi.img.xz",
    ] {
        assert!(
            wanted.contains_key(path),
            "{path} is not an upstream path of the shipped profiles: {:?}",
            wanted.keys()
        );
    }

    // First run: every file downloaded once, verified, at upstream's path.
    let before = s.mirror.log().len();
    let t0 = std::time::Instant::now();
    let report = json(run(mirror_cmd(&s, &SHIPPED, &dir, "cache").arg("--mirror").arg(s.mirror.url()).arg("--json")));
    eprintln!("first kiln mirror: {:.1} s", t0.elapsed().as_secs_f64());
    let got = statuses(&report);
    assert_eq!(got.keys().collect::<Vec<_>>(), wanted.keys().collect::<Vec<_>>());
    assert!(got.values().all(|v| v == "downloaded"), "{got:?}");
    // One GET per distinct content (the two card profiles' stand-in base
    // images are the same bytes: the cache holds them once).
    let gets = gets_since(&s, before);
    assert!(gets.values().all(|n| *n == 1), "{gets:?}");
    let fetched: BTreeSet<&str> = gets.keys().map(|p| &wanted[p.trim_start_matches('/')].sha256[..]).collect();
    let distinct: BTreeSet<&str> = wanted.values().map(|a| &a.sha256[..]).collect();
    assert_eq!((gets.len(), fetched), (distinct.len(), distinct.clone()));
    assert_eq!(distinct.len(), wanted.len() - 1);
    for (path, a) in &wanted {
        let bytes = fs::read(dir.join(path)).unwrap();
        assert_eq!(standin::sha256(&bytes), a.sha256, "{path}");
        assert_eq!(bytes, fs::read(s.mirror.root().join(path)).unwrap(), "{path}");
    }
    let kubelet =
        report["files"].as_array().unwrap().iter().find(|f| f["path"] == "release/v1.34.2/bin/linux/amd64/kubelet");
    assert_eq!(kubelet.unwrap()["profiles"], serde_json::json!(["debian-1.34", "fcos-1.34", "flatcar-1.34"]));
    assert_eq!(report["totals"]["downloaded"], wanted.len());
    assert_eq!(report["totals"]["bytes_written"], report["totals"]["bytes"]);
    assert!(!files_in(&dir).iter().any(|f| f.contains(".kiln-tmp-")), "{:?}", files_in(&dir));

    // Second run, with an empty cache: the files in DIR are recognised, nothing is fetched.
    let before = s.mirror.log().len();
    let o = run(mirror_cmd(&s, &SHIPPED, &dir, "cache-2").arg("--mirror").arg(s.mirror.url()));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(s.mirror.log().len(), before, "the second run made requests: {:?}", &s.mirror.log()[before..]);
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), wanted.len() + 1, "{table}");
    for (line, path) in lines.iter().zip(wanted.keys()) {
        assert!(line.ends_with(&format!("  already present  {path}")), "{line}");
    }
    let k = lines.iter().find(|l| l.ends_with("  release/v1.34.2/bin/linux/arm64/kubelet")).unwrap();
    assert_eq!(k.split_whitespace().take(5).collect::<Vec<_>>(), ["kubelet", "v1.34.2", "arm64", "25.2", "MB"]);
    assert!(
        lines[wanted.len()].starts_with(&format!("{}: {} file(s), ", dir.display(), wanted.len()))
            && lines[wanted.len()]
                .ends_with(&format!(": 0 downloaded, {} already present, 0 replaced (0 B written)", wanted.len())),
        "{}",
        lines[wanted.len()]
    );

    // Every shipped profile builds from the directory alone.
    let before = s.mirror.log().len();
    for name in SHIPPED {
        let t0 = std::time::Instant::now();
        let o = run(&mut offline_build(&s, name, &dir, "build-cache"));
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        eprintln!("offline build of {name}: {:.1} s", t0.elapsed().as_secs_f64());
    }
    assert_eq!(s.mirror.log().len(), before, "an offline build made requests");
    assert!(s.path("dist-rpi-raspios-1.34/rpi-raspios-1.34-arm64.img").is_file());
    assert!(s.path("dist-rpi-ubuntu-1.34/rpi-ubuntu-1.34-arm64.img.bmap").is_file());
    // Each profile built what its distro deploys.
    assert!(s.path("dist-fcos-1.34/kubernetes-v1.34.2-fcos-1.34-arm64.raw").is_file());
    assert!(s.path("dist-fcos-1.34/fcos-1.34-arm64.ign").is_file());
    assert!(s.path("dist-flatcar-1.34/flatcar-1.34-amd64.ign").is_file());
    assert!(s.path("dist-debian-1.34/debian-1.34-arm64.tar.gz").is_file());
    assert!(s.path("dist-rpi-1.34/rpi-1.34-arm64.tar.gz").is_file());
}

#[test]
fn a_second_run_keeps_right_files_and_replaces_wrong_ones_never_writing_through_a_link() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let dir = s.path("m");
    let first =
        json(run(mirror_cmd(&s, &["flatcar-1.34"], &dir, "cache").arg("--mirror").arg(s.mirror.url()).arg("--json")));
    assert_eq!(first["totals"]["downloaded"], 5);

    let kubelet = "release/v1.34.2/bin/linux/amd64/kubelet";
    let kubeadm = "release/v1.34.2/bin/linux/amd64/kubeadm";
    let mut bytes = fs::read(dir.join(kubelet)).unwrap();
    bytes[4000] ^= 1;
    fs::write(dir.join(kubelet), &bytes).unwrap();
    let outside = s.path("outside-secret");
    fs::write(&outside, "not kiln's\n").unwrap();
    fs::remove_file(dir.join(kubeadm)).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join(kubeadm)).unwrap();
    // A temporary file of a killed kiln mirror (no process has this id: pid_max ≤ 2^22).
    let stale = dir.join("release/v1.34.2/bin/linux/amd64/.kubelet.kiln-tmp-4194305-3");
    let stale_beside_kept = dir.join("release/v1.34.2/bin/linux/amd64/.kubectl.kiln-tmp-4194305-4");
    for f in [&stale, &stale_beside_kept] {
        fs::write(f, "partial").unwrap();
    }

    let before = s.mirror.log().len();
    let second =
        json(run(mirror_cmd(&s, &["flatcar-1.34"], &dir, "cache").arg("--mirror").arg(s.mirror.url()).arg("--json")));
    let st = statuses(&second);
    assert_eq!(st[kubelet], "replaced");
    assert_eq!(st[kubeadm], "replaced");
    assert_eq!(st.values().filter(|v| *v == "already present").count(), 3, "{st:?}");
    assert_eq!(second["totals"]["replaced"], 2);
    assert!(gets_since(&s, before).is_empty(), "the cache held both: {:?}", gets_since(&s, before));
    assert_eq!(fs::read_to_string(&outside).unwrap(), "not kiln's\n", "written through the link");
    assert!(fs::symlink_metadata(dir.join(kubeadm)).unwrap().is_file());
    assert_eq!(fs::read(dir.join(kubelet)).unwrap(), fs::read(s.mirror.root().join(kubelet)).unwrap());
    assert!(!stale.exists() && !stale_beside_kept.exists(), "the killed run's temporary files are still there");
    assert!(!files_in(&dir).iter().any(|f| f.contains(".kiln-tmp-")), "{:?}", files_in(&dir));
}

#[test]
fn a_failed_download_keeps_the_others_and_the_next_run_fetches_only_it() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let dir = s.path("m");
    let kubeadm = "/release/v1.34.2/bin/linux/amd64/kubeadm";
    s.mirror.fault(kubeadm, Fault::Status { code: 404, times: 1 });
    let o = run(mirror_cmd(&s, &["flatcar-1.34"], &dir, "cache").arg("--mirror").arg(s.mirror.url()));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o)
        .contains(&format!("kiln: 4 of 5 file(s) in place in {}; the others could not be fetched:", dir.display())));
    assert_eq!(
        error_lines(&o)[..2],
        [
            "1 of 5 artifact(s) to fetch could not be fetched:".to_string(),
            format!("  kubeadm v1.34.2 (amd64) {}{kubeadm}: not found (HTTP 404)", s.mirror.url()),
        ]
    );
    assert!(o.stdout.is_empty(), "a failed run printed a summary on stdout");
    assert_eq!(files_in(&dir).len(), 4, "{:?}", files_in(&dir));
    assert!(!dir.join(kubeadm.trim_start_matches('/')).exists());
    let before = s.mirror.log().len();
    let r =
        json(run(mirror_cmd(&s, &["flatcar-1.34"], &dir, "cache-2").arg("--mirror").arg(s.mirror.url()).arg("--json")));
    assert_eq!(gets_since(&s, before), BTreeMap::from([(kubeadm.to_string(), 1)]));
    assert_eq!(statuses(&r).values().filter(|v| *v == "already present").count(), 4);
    assert_eq!(statuses(&r)[kubeadm.trim_start_matches('/')], "downloaded");
}

#[test]
fn arch_selects_files_and_a_profile_without_it_is_refused() {
    let s = Scratch::new(&["fcos-1.34"]);
    s.pin("fcos-1.34");
    let dir = s.path("m");
    let r = json(run(mirror_cmd(&s, &["fcos-1.34"], &dir, "cache")
        .arg("--mirror")
        .arg(s.mirror.url())
        .args(["--arch", "arm64", "--json"])));
    let files = r["files"].as_array().unwrap();
    assert_eq!(files.len(), 5);
    assert!(files.iter().all(|f| f["arch"] == "arm64" && !f["path"].as_str().unwrap().contains("amd64")), "{r}");
    let o = run(kiln().arg("mirror").arg(s.profile("flatcar-1.34")).arg("--out").arg(&dir).args(["--arch", "arm64"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("profile flatcar-1.34 lists only amd64, none of --arch arm64"), "{}", stderr(&o));
}

#[test]
fn help_shows_examples_and_bad_arguments_exit_2() {
    let o = run(kiln().args(["mirror", "--help"]));
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for want in [
        "Usage: kiln mirror [OPTIONS] --out <DIR> <PROFILE>...",
        "kiln mirror profiles/flatcar-1.34.toml --out /srv/kiln-mirror",
        "kiln build profiles/flatcar-1.34.toml --mirror /media/usb/kiln-mirror --offline",
        "  in DIR    DIR/release/v1.34.2/bin/linux/amd64/kubelet\n",
        "Exit codes:",
    ] {
        assert!(help.contains(want), "{want} not in:\n{help}");
    }
    let s = Scratch::new(&[]);
    for (args, want) in [
        (vec!["--mirror", "https://user:pw@mirror.example/"], "credentials"),
        (vec!["--mirror", "https://mirror.example/?token=1"], "without a query"),
        (vec!["--jobs", "0"], "--jobs"),
    ] {
        let o = run(kiln().arg("mirror").arg(s.profile("flatcar-1.34")).arg("--out").arg(s.path("m")).args(&args));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    let o = run(kiln().arg("mirror").arg(s.profile("flatcar-1.34")).args(["--out", "/"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("name a directory of its own"), "{}", stderr(&o));
}

/// A copy of flatcar-1.34 whose kubelet URL is `url` (placeholders allowed).
fn with_kubelet_url(s: &Scratch, url: &str) -> PathBuf {
    let text = fs::read_to_string(s.profile("flatcar-1.34")).unwrap();
    let from = "url = \"https://dl.k8s.io/release/{version}/bin/linux/{arch}/kubelet\"";
    assert!(text.contains(from));
    let p = s.path("profiles/hostile.toml");
    fs::write(
        &p,
        text.replace(from, &format!("url = \"{url}\"")).replace("name = \"flatcar-1.34\"", "name = \"hostile\""),
    )
    .unwrap();
    p
}

#[test]
fn paths_that_would_leave_the_directory_are_refused_and_nothing_is_written_outside() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let dir = s.path("deep/m");
    for url in [
        "https://dl.k8s.io/release/{version}/../../../../../escape/{arch}/kubelet",
        "https://dl.k8s.io/%2e%2e/%2E%2E/escape/kubelet",
        "https://dl.k8s.io/release/kubelet?x=/../../escape",
    ] {
        let p = with_kubelet_url(&s, url);
        let o = run(kiln().arg("mirror").arg(&p).arg("--out").arg(&dir).arg("--mirror").arg(s.mirror.url()));
        assert_eq!(o.status.code(), Some(2), "{url}: {}", stderr(&o));
        assert!(stderr(&o).contains("cannot name a file in a mirror directory"), "{url}: {}", stderr(&o));
        assert!(!dir.exists(), "{url}: the mirror directory was created");
        // kiln build reads a mirror directory through the same check.
        let o = run(s
            .build_cmd_upstream(&[&p], "cache", "dist")
            .args(["--format", "tar"])
            .arg("--mirror")
            .arg(s.mirror.root()));
        assert_eq!(o.status.code(), Some(1), "{url}: {}", stderr(&o));
        assert!(stderr(&o).contains("cannot name a file in a mirror directory"), "{url}: {}", stderr(&o));
    }
    assert!(!s.path("escape").exists() && !s.path("deep/escape").exists());

    // A directory on the way that is a symbolic link to elsewhere is refused.
    let elsewhere = s.path("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join("release")).unwrap();
    let o = run(mirror_cmd(&s, &["flatcar-1.34"], &dir, "cache").arg("--mirror").arg(s.mirror.url()));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "{}/release is a symbolic link; kiln mirror writes only into real directories",
            dir.display()
        )),
        "{}",
        stderr(&o)
    );
    assert_eq!(files_in(&elsewhere), Vec::<String>::new(), "written through the link");
}

#[test]
fn a_mirror_directory_with_missing_files_lists_every_one_and_kiln_mirror_fills_it() {
    let s = Scratch::new(&["fcos-1.34"]);
    s.pin("fcos-1.34");
    let dir = s.path("m");
    let o = run(mirror_cmd(&s, &["fcos-1.34"], &dir, "cache").arg("--mirror").arg(s.mirror.url()));
    assert!(o.status.success(), "{}", stderr(&o));
    let all = artifacts(&s, "fcos-1.34");
    let gone: Vec<&Artifact> = all
        .iter()
        .filter(|a| {
            matches!(
                (a.name.as_str(), a.arch),
                ("kubelet", Arch::Amd64) | ("cni-plugins", Arch::Amd64) | ("crictl", Arch::Arm64)
            )
        })
        .collect();
    assert_eq!(gone.len(), 3);
    for a in &gone {
        fs::remove_file(dir.join(rel(a))).unwrap();
    }
    let o = run(&mut offline_build(&s, "fcos-1.34", &dir, "fresh-cache"));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let mut want = vec![format!("3 artifact(s) are missing from the mirror directory {}:", dir.display())];
    for a in &gone {
        want.push(format!(
            "  {} {} ({}) {}/{} (upstream {} sha256 {})",
            a.name,
            a.version,
            a.arch,
            dir.display(),
            rel(a),
            a.url,
            a.sha256
        ));
    }
    want.push(format!(
        "fill it with `kiln mirror PROFILE... --out {}` on a machine that reaches upstream, or copy each upstream URL to its path",
        dir.display()
    ));
    assert_eq!(error_lines(&o), want);

    let r = json(run(mirror_cmd(&s, &["fcos-1.34"], &dir, "cache").arg("--mirror").arg(s.mirror.url()).arg("--json")));
    assert_eq!((r["totals"]["downloaded"].as_u64(), r["totals"]["already_present"].as_u64()), (Some(3), Some(7)));
    let o = run(&mut offline_build(&s, "fcos-1.34", &dir, "fresh-cache"));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn network_failures_are_summarised_for_every_artifact_with_the_url_once() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let url = s.mirror.url().to_string();
    let kubelet = "/release/v1.34.2/bin/linux/amd64/kubelet";
    let kubeadm = "/release/v1.34.2/bin/linux/amd64/kubeadm";
    let crictl = "/kubernetes-sigs/cri-tools/releases/download/v1.34.0/crictl-v1.34.0-linux-amd64.tar.gz";
    let crictl_len = fs::metadata(s.mirror.root().join(crictl.trim_start_matches('/'))).unwrap().len();
    s.mirror.fault(kubelet, Fault::Status { code: 503, times: 100 });
    s.mirror.fault(kubeadm, Fault::Status { code: 404, times: 100 });
    s.mirror.fault(crictl, Fault::Truncate(1 << 20));
    let before = s.mirror.log().len();
    let o = run(s.build_cmd("flatcar-1.34", "cache", "dist").args(["--attempts", "2"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        error_lines(&o),
        [
            "3 of 5 artifact(s) to fetch could not be fetched:".to_string(),
            format!("  crictl v1.34.0 (amd64) {url}{crictl}: truncated body: 1048576 of {crictl_len} bytes; 2 attempts"),
            format!("  kubeadm v1.34.2 (amd64) {url}{kubeadm}: not found (HTTP 404)"),
            format!("  kubelet v1.34.2 (amd64) {url}{kubelet}: HTTP 503; 2 attempts"),
            format!("check the mirror {url}: it must be up and serve upstream's paths (a 404 means the file is missing there)"),
            "`kiln build --offline` lists every artifact missing from the cache, with its URL and sha256".to_string(),
            "`kiln mirror PROFILE... --out DIR` fills a mirror directory on a machine that reaches upstream".to_string(),
        ]
    );
    for path in [kubelet, kubeadm, crictl] {
        assert_eq!(stderr(&o).matches(&format!("{url}{path}")).count(), 1, "{path} not named once: {}", stderr(&o));
    }
    let gets = gets_since(&s, before);
    assert_eq!((gets[kubelet], gets[kubeadm], gets[crictl]), (2, 1, 2), "{gets:?}");
    // The artifacts that could be fetched were fetched (and cached) all the same.
    let p = Profile::load(&s.profile("flatcar-1.34")).unwrap();
    for a in p.artifacts_for(Arch::Amd64).unwrap() {
        let cached = s.path(&format!("cache/sha256/{}", a.sha256)).is_file();
        assert_eq!(cached, a.name == "kubectl" || a.name == "cni-plugins", "{}", a.name);
    }
    assert!(files_in(&s.path("dist")).is_empty());

    // A verification failure comes first, whole, and decides the exit code.
    let kubectl = "release/v1.34.2/bin/linux/amd64/kubectl";
    let mut bytes = fs::read(s.mirror.root().join(kubectl)).unwrap();
    bytes[100] ^= 1;
    fs::write(s.mirror.root().join(kubectl), &bytes).unwrap();
    s.mirror.clear_faults();
    s.mirror.fault(kubelet, Fault::Status { code: 503, times: 100 });
    let o = run(s.build_cmd("flatcar-1.34", "cache-2", "dist").args(["--attempts", "1"]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let lines = error_lines(&o);
    assert_eq!(lines[0], format!("checksum mismatch for kubectl v1.34.2 (amd64): {url}/{kubectl}"));
    assert!(lines[1].starts_with("  expected sha256 ") && lines[2].starts_with("  actual   sha256 "), "{lines:?}");
    assert_eq!(lines[4], "1 of 5 artifact(s) to fetch could not be fetched:");
    assert_eq!(lines[5], format!("  kubelet v1.34.2 (amd64) {url}{kubelet}: HTTP 503; 1 attempt"));
}

/// flatcar-1.34 with every URL on `host` (scheme included).
fn on_host(s: &Scratch, host: &str) -> PathBuf {
    let text = fs::read_to_string(s.profile("flatcar-1.34")).unwrap();
    let p = s.path("profiles/elsewhere.toml");
    fs::write(&p, text.replace("https://dl.k8s.io", host).replace("https://github.com", host)).unwrap();
    p
}

/// The lines for five artifacts that failed on an unresolvable host, each
/// `name version (amd64) URL: cannot resolve host kiln-test.invalid: …`:
/// not retried when the resolver says the name does not exist (NXDOMAIN),
/// retried once when it cannot answer now (a machine without DNS).
fn assert_unresolvable(o: &Output, base: &str) {
    let lines = error_lines(o);
    assert_eq!(lines[0], "5 of 5 artifact(s) to fetch could not be fetched:", "{}", stderr(o));
    let names = ["cni-plugins", "crictl", "kubeadm", "kubectl", "kubelet"];
    for (line, name) in lines[1..6].iter().zip(names) {
        let head = format!("  {name} ");
        let cause = ": cannot resolve host kiln-test.invalid: ";
        assert!(
            line.starts_with(&head) && line.contains(&format!("(amd64) {base}/")) && line.contains(cause),
            "{line}"
        );
        let retried = stderr(o).matches(&format!("warning: {name} ")).count();
        match line.rsplit_once("; ") {
            Some((_, "not retried")) => assert_eq!(retried, 0, "{}", stderr(o)),
            Some((_, "2 attempts")) => {
                assert!(line.contains("Temporary failure"), "{line}");
                assert_eq!(retried, 1, "{}", stderr(o));
            }
            _ => panic!("{line}"),
        }
        let url = line.split_once("(amd64) ").and_then(|(_, r)| r.split_once(cause)).map(|(u, _)| u).unwrap();
        assert_eq!(stderr(o).matches(url).count(), 1, "{url} not named once: {}", stderr(o));
    }
}

#[test]
fn an_unresolvable_host_is_not_retried_and_the_next_step_depends_on_the_mirror() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let p = on_host(&s, "http://kiln-test.invalid");
    let build = |extra: &[&str], cache: &str| {
        run(s.build_cmd_upstream(&[&p], cache, "dist").args(["--format", "tar"]).args(extra))
    };
    let o = build(&[], "c1");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_unresolvable(&o, "http://kiln-test.invalid");
    assert_eq!(
        error_lines(&o)[6],
        "no mirror is in use: check the network (a 404 means a wrong version or URL template in the profile), or fetch from a mirror with --mirror DIR|URL"
    );
    // The shipped profile through an unresolvable mirror: check the mirror.
    let o = run(s
        .build_cmd_upstream(&[&s.profile("flatcar-1.34")], "c2", "dist")
        .args(["--format", "tar"])
        .args(["--mirror", "http://kiln-test.invalid"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_unresolvable(&o, "http://kiln-test.invalid");
    assert_eq!(
        error_lines(&o)[6],
        "check the mirror http://kiln-test.invalid: it must be up and serve upstream's paths (a 404 means the file is missing there)"
    );
    assert!(!stderr(&o).contains("no mirror is in use"));
}

/// A TCP port on 127.0.0.1 that refuses every connection while the returned
/// socket lives: bound but never listening, so no other process can take it.
fn refusing_port() -> (std::os::fd::OwnedFd, u16) {
    use std::os::fd::{FromRawFd, OwnedFd};
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a fresh descriptor owned by `fd`; `addr`
    // is a valid sockaddr_in of `len` bytes.
    unsafe {
        let raw = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(raw);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let p = &mut addr as *mut libc::sockaddr_in as *mut libc::sockaddr;
        assert_eq!(libc::bind(raw, p, len), 0, "bind: {}", std::io::Error::last_os_error());
        let mut got = len;
        assert_eq!(libc::getsockname(raw, p, &mut got), 0);
        (fd, u16::from_be(addr.sin_port))
    }
}

#[test]
fn a_refused_connection_is_retried_once_whatever_attempts_says() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let (_socket, port) = refusing_port();
    let base = format!("http://127.0.0.1:{port}");
    let o = run(s.build_cmd_upstream(&[&s.profile("flatcar-1.34")], "cache", "dist").args(["--format", "tar"]).args([
        "--mirror",
        &base,
        "--attempts",
        "4",
    ]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let lines = error_lines(&o);
    let p = Profile::load(&s.profile("flatcar-1.34")).unwrap();
    let arts = p.artifacts_for(Arch::Amd64).unwrap();
    assert_eq!(lines[0], "5 of 5 artifact(s) to fetch could not be fetched:");
    for (line, a) in lines[1..6].iter().zip(&arts) {
        assert_eq!(
            *line,
            format!(
                "  {} {} (amd64) {base}/{}: connection refused by 127.0.0.1; 2 attempts",
                a.name,
                a.version,
                rel(a)
            )
        );
        let warning = format!(
            "kiln: warning: {} {} (amd64): connection refused by 127.0.0.1; retrying in 0.5 s (attempt 1 of 2)",
            a.name, a.version
        );
        assert_eq!(stderr(&o).matches(&warning).count(), 1, "{}", stderr(&o));
    }
    assert_eq!(
        lines[6],
        format!(
            "check the mirror {base}: it must be up and serve upstream's paths (a 404 means the file is missing there)"
        )
    );
    assert_eq!(stderr(&o).matches("retrying").count(), 5, "{}", stderr(&o));
}

#[test]
fn offline_without_a_mirror_points_to_kiln_mirror() {
    let s = Scratch::new(&[]);
    let o = run(s.build_cmd_upstream(&[&s.profile("flatcar-1.34")], "cache", "dist").args([
        "--offline",
        "--format",
        "tar",
    ]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let lines = error_lines(&o);
    assert_eq!(lines.len(), 7, "{lines:?}");
    assert!(lines[6].contains("`kiln mirror PROFILE... --out DIR` fills one"), "{lines:?}");
    let names: BTreeSet<&str> = lines[1..6].iter().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(names, BTreeSet::from(["cni-plugins", "crictl", "kubeadm", "kubectl", "kubelet"]));
}

/// Every file the Ignition configs in `dist` download from `base` is in
/// `dist` with the `verification.hash` they name, and `SHA256SUMS` holds.
fn assert_ignition_consistent(dist: &Path, base: &str) -> usize {
    let mut checked = 0;
    for ign in files_in(dist).into_iter().filter(|f| f.ends_with(".ign")) {
        let doc: Value = serde_json::from_slice(&fs::read(dist.join(&ign)).unwrap()).unwrap();
        for f in doc["storage"]["files"].as_array().unwrap() {
            let source = f["contents"]["source"].as_str().unwrap();
            let Some(file) = source.strip_prefix(&format!("{base}/")) else { continue };
            let bytes = fs::read(dist.join(file)).unwrap_or_else(|e| panic!("{ign} downloads {file}: {e}"));
            assert_eq!(
                f["contents"]["verification"]["hash"],
                format!("sha256-{}", standin::sha256(&bytes)),
                "{ign}: verification.hash of {file}"
            );
            checked += 1;
        }
    }
    for line in fs::read_to_string(dist.join("SHA256SUMS")).unwrap().lines() {
        let (hash, file) = line.split_once("  ").unwrap();
        assert_eq!(standin::sha256(&fs::read(dist.join(file)).unwrap()), hash, "SHA256SUMS: {file}");
    }
    checked
}

/// The README's CI recipe: every shipped profile built into one `dist/` by one
/// command. No two profiles write one file name with different bytes, so every
/// Ignition config's `verification.hash` is the hash of the file it names,
/// also after a second, up-to-date run.
#[test]
fn every_shipped_profile_builds_into_one_dist_with_every_ignition_hash_right() {
    let s = shipped();
    let base = "https://images.example.test/kiln";
    let dist = s.path("dist");
    let profiles: Vec<PathBuf> = SHIPPED.iter().map(|n| s.profile(n)).collect();
    let profiles: Vec<&Path> = profiles.iter().map(PathBuf::as_path).collect();
    let cmd = || {
        let mut c = s.build_cmd_upstream(&profiles, "cache", "dist");
        c.arg("--mirror").arg(s.mirror.url()).args(["--base-url", base, "--json"]);
        c
    };
    let report = json(run(&mut cmd()));
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["profiles"].as_array().map(Vec::len), Some(SHIPPED.len()), "{report}");
    let o = run(&mut cmd());
    assert!(o.status.success(), "{}", stderr(&o));
    // Until the shipped profiles pin their `images` (issue 23), each warns that its nodes pull them.
    let warnings: Vec<String> = stderr(&o)
        .lines()
        .filter(|l| l.contains("warning") && !l.contains("the profile has no `images`"))
        .map(str::to_string)
        .collect();
    assert!(warnings.is_empty(), "{}", stderr(&o));
    let checked = assert_ignition_consistent(&dist, base);
    // fcos-1.34, flatcar-1.33 and flatcar-1.34, each per architecture.
    assert!(checked >= 3, "only {checked} downloads checked");
    let files = files_in(&dist);
    for raw in ["kubernetes-v1.34.2-fcos-1.34-amd64.raw", "kubernetes-v1.34.2-flatcar-1.34-amd64.raw"] {
        assert!(files.contains(&raw.to_string()), "{raw} not in {files:?}");
    }
}
