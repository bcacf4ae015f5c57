//! `tests/k8s/images` (minimal OCI images of the real Kubernetes programs, for a
//! cluster with no registry) held to the real programs: kubeadm names the
//! images, the real containerd imports the archives under exactly those
//! references with exactly the digests `images.json` names, two runs in two
//! directories give the same bytes, and the pause image runs with the real runc.
//!
//! Needs root, `KILN_K8S_BIN_V1_34_2` (kubeadm) and `KILN_K8S_BIN_CONTAINERD`,
//! set by `./scripts/test` from `tests/k8s/build`, and the v1.34.2 control-plane
//! programs (`tests/k8s/build v1.34.2 amd64 control-plane`): missing, each is a
//! failure naming its build command, never a skip; kube-proxy's image also needs
//! the host's iptables package (`apt-get install iptables`, which
//! `./scripts/test` installs) and is held to the real runc in [`kube_proxy`].
//! Images whose program `tests/k8s/build` has no target for yet (the script
//! skips them and says why in `images.json`), crictl and runc when they are not
//! built: printed as NOT CHECKED.

#[path = "k8s_images/kube_proxy.rs"]
mod kube_proxy;

use kiln_testkit::containerd::{self, Containerd};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const VERSION: &str = "v1.34.2";
/// The images no test may do without: their programs' target is the one the
/// suite builds (`tests/k8s/build v1.34.2 amd64 control-plane`).
const REQUIRED: [&str; 3] = ["kube-apiserver", "kube-controller-manager", "kube-scheduler"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn run(c: &mut Command) -> String {
    let o = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(o.status.success(), "{c:?} failed ({}):\n{}", o.status, text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// What the real kubeadm v1.34.2 lists.
fn kubeadm_images() -> Vec<String> {
    let var = "KILN_K8S_BIN_V1_34_2";
    let build =
        format!("tests/k8s/build {VERSION} amd64 && export {var}=$(tests/k8s/build --dir {VERSION} amd64 node)");
    let dir = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{var} is not set: the real kubeadm {VERSION} is needed. Build it and say where it is, from the workspace root:\n  {build}\n(./scripts/test does this)")
    });
    let kubeadm = dir.join("kubeadm");
    assert!(kubeadm.is_file(), "{var}={} has no kubeadm; build it:\n  {build}", dir.display());
    let out = run(Command::new(kubeadm).args(["config", "images", "list", "--kubernetes-version", VERSION]));
    out.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

/// Runs `tests/k8s/images [--only ONLY] v1.34.2 amd64 OUT` (no SOURCE_DATE_EPOCH) and returns its images.json.
fn make_images(out: &Path, only: &[&str]) -> Value {
    let o = Command::new(repo().join("tests/k8s/images"))
        .args(only.iter().flat_map(|n| ["--only", n]))
        .args([VERSION, "amd64"])
        .arg(out)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap_or_else(|e| panic!("tests/k8s/images: {e} (python3 is needed)"));
    assert!(o.status.success(), "tests/k8s/images {VERSION} amd64 {} failed:\n{}", out.display(), text(&o));
    let path = out.join("images.json");
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// images.json's images by reference, each field as a string.
fn made(doc: &Value) -> BTreeMap<String, BTreeMap<String, String>> {
    let list = doc["images"].as_array().unwrap_or_else(|| panic!("images.json has no images list: {doc}"));
    list.iter()
        .map(|i| {
            let fields = i.as_object().unwrap_or_else(|| panic!("images.json entry {i}"));
            let fields: BTreeMap<String, String> =
                fields.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect();
            (fields["reference"].clone(), fields)
        })
        .collect()
}

/// Prints images.json's skipped images, loudly, and returns their references.
fn report_skipped(doc: &Value) -> Vec<String> {
    let skipped = doc["skipped"].as_array().cloned().unwrap_or_default();
    skipped
        .iter()
        .map(|s| {
            let r = s["reference"].as_str().unwrap_or_default().to_string();
            eprintln!("NOT CHECKED: {r}: {}", s["reason"].as_str().unwrap_or_default());
            r
        })
        .collect()
}

fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The sorted file names in `dir` with their sha256.
fn listing(dir: &Path) -> Vec<(String, String)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().map(|n| (n.clone(), sha256_file(&dir.join(&n)))).collect()
}

/// A program directory tests/k8s/build has made (or `$VAR` names), or why not.
fn built(var: Option<&str>, target: &str, prog: &str) -> Result<PathBuf, String> {
    built_for("amd64", var, target, prog)
}

/// [`built`] for ARCH.
fn built_for(arch: &str, var: Option<&str>, target: &str, prog: &str) -> Result<PathBuf, String> {
    let var = var.unwrap_or("");
    let dir = match std::env::var_os(var).filter(|_| !var.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            let o = Command::new(repo().join("tests/k8s/build"))
                .args(["--dir", VERSION, arch, target])
                .output()
                .map_err(|e| format!("tests/k8s/build: {e}"))?;
            if !o.status.success() {
                let why = String::from_utf8_lossy(&o.stderr).lines().next().unwrap_or_default().to_string();
                return Err(format!("tests/k8s/build has no {target} target here ({why})"));
            }
            PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
        }
    };
    if dir.join(prog).is_file() {
        Ok(dir)
    } else {
        Err(format!("no {prog} in {} (build it: tests/k8s/build {VERSION} {arch} {target})", dir.display()))
    }
}

/// `ctr -n k8s.io images ls`: reference -> digest.
fn ctr_images(c: &Containerd) -> BTreeMap<String, String> {
    let out = run(c.ctr().args(["-n", "k8s.io", "images", "ls"]));
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[0].to_string(), f[2].to_string()))
        })
        .collect()
}

/// Imports every archive, deleting each once containerd holds it (the archives,
/// containerd's content and its snapshots are each ~400 MB).
fn import_all(c: &Containerd, dir: &Path, images: &BTreeMap<String, BTreeMap<String, String>>) {
    for i in images.values() {
        let file = dir.join(&i["archive"]);
        let start = Instant::now();
        run(c.ctr().args(["-n", "k8s.io", "images", "import"]).arg(&file));
        eprintln!("imported {} in {:.1} s", i["archive"], start.elapsed().as_secs_f64());
        std::fs::remove_file(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}

/// crictl (the CRI plugin's view, what the kubelet and kubeadm's preflight see):
/// each reference is a repo tag of an image whose repo digest is the index digest.
fn check_with_crictl(c: &Containerd, images: &BTreeMap<String, BTreeMap<String, String>>) {
    let dir = match built(Some("KILN_K8S_BIN_CRICTL"), "crictl", "crictl") {
        Ok(d) => d,
        Err(why) => {
            eprintln!("NOT CHECKED: crictl images --digests: {why}");
            return;
        }
    };
    let out = run(c.crictl(&dir.join("crictl")).args(["images", "--digests", "-o", "json"]));
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("crictl images -o json: {e}\n{out}"));
    let cri = doc["images"].as_array().unwrap_or_else(|| panic!("crictl images -o json: {out}"));
    for (r, i) in images {
        let repo = r.rsplit_once(':').map(|(repo, _)| repo).unwrap_or(r);
        let want = format!("{repo}@{}", i["index_digest"]);
        let has = |img: &&Value, key: &str, v: &str| img[key].as_array().is_some_and(|a| a.iter().any(|x| x == v));
        let found = cri.iter().find(|img| has(img, "repoTags", r));
        let found = found.unwrap_or_else(|| panic!("crictl images does not list {r}:\n{out}"));
        assert!(has(&found, "repoDigests", &want), "crictl: {r} has not the repo digest {want}:\n{found}");
        assert_eq!(found["id"], i["config_digest"].as_str(), "crictl: {r}'s image id is not its config digest");
    }
    eprintln!("crictl images --digests: all {} references with their index digests", images.len());
}

#[test]
fn the_images_import_into_the_real_containerd_under_kubeadms_references_with_their_digests() {
    let refs = kubeadm_images();
    let bin = ok(containerd::bin_dir());
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (a, b) = (tmp.path().join("a"), tmp.path().join("elsewhere/b"));
    let doc = make_images(&a, &[]);
    let images = made(&doc);
    let skipped = report_skipped(&doc);

    // Every reference kubeadm uses is made (or skipped with a reason); the control plane's always.
    for r in &refs {
        assert!(images.contains_key(r) || skipped.contains(r), "tests/k8s/images made nothing for {r}: {doc}");
    }
    for name in REQUIRED {
        let r = format!("registry.k8s.io/{name}:{VERSION}");
        assert!(
            images.contains_key(&r),
            "no {r} in images.json (build: tests/k8s/build {VERSION} amd64 control-plane): {doc}"
        );
    }
    assert_eq!(images.len() + skipped.len(), refs.len(), "images.json lists other images than kubeadm: {doc}");

    // Byte-identical in another directory; images.json's sha256 is the archive's.
    make_images(&b, &[]);
    let first = listing(&a);
    assert_eq!(first, listing(&b), "two runs of tests/k8s/images differ");
    std::fs::remove_dir_all(&b).unwrap_or_else(|e| panic!("{}: {e}", b.display()));
    for i in images.values() {
        let sum = first.iter().find(|(n, _)| *n == i["archive"]).map(|(_, s)| s.as_str());
        assert_eq!(sum, Some(i["archive_sha256"].as_str()), "{}'s sha256", i["archive"]);
    }

    let c = ok(Containerd::start(&bin, &tmp.path().join("containerd"), &[]));
    import_all(&c, &a, &images);
    let listed = ctr_images(&c);
    for (r, i) in &images {
        assert_eq!(listed.get(r), Some(&i["index_digest"]), "ctr images ls: {r}: {listed:?}");
        let by_digest = &i["digest_reference"];
        assert_eq!(
            by_digest,
            &format!("{}@{}", r.rsplit_once(':').map_or(r.as_str(), |(repo, _)| repo), i["index_digest"])
        );
        assert_eq!(listed.get(by_digest), Some(&i["index_digest"]), "ctr images ls: {by_digest}: {listed:?}");
        // The index containerd holds points at the manifest images.json names.
        let index = run(c.ctr().args(["-n", "k8s.io", "content", "get", &i["index_digest"]]));
        let index: Value = serde_json::from_str(&index).unwrap_or_else(|e| panic!("{r}'s index: {e}: {index}"));
        assert_eq!(index["manifests"][0]["digest"], i["manifest_digest"].as_str(), "{r}'s index: {index}");
    }
    let check = run(c.ctr().args(["-n", "k8s.io", "images", "check"]));
    for r in images.keys() {
        let line = check.lines().find(|l| l.starts_with(&format!("{r} ")));
        assert!(line.is_some_and(|l| l.contains("complete")), "ctr images check: {r} is not complete:\n{check}");
    }
    check_with_crictl(&c, &images);
}

/// The id's task as `ctr tasks ls` shows it: (pid, status).
fn task(c: &Containerd, id: &str) -> Option<(u32, String)> {
    let out = run(c.ctr().args(["-n", "k8s.io", "tasks", "ls"]));
    out.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 3 && f[0] == id).then(|| (f[1].parse().unwrap_or(0), f[2].to_string()))
    })
}

fn wait_status(c: &Containerd, id: &str, want: &str) -> u32 {
    let start = Instant::now();
    loop {
        match task(c, id) {
            Some((pid, s)) if s == want => return pid,
            t if start.elapsed() > Duration::from_secs(30) => {
                panic!("task {id} is {t:?}, not {want}, after 30 s:\n{}", c.log_tail())
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// runc's directory, or None after printing why WHAT is not checked.
fn runc(what: &str) -> Option<PathBuf> {
    built(Some("KILN_K8S_BIN_RUNC"), "runc", "runc").map_err(|why| eprintln!("NOT CHECKED: {what}: {why}")).ok()
}

#[test]
fn the_pause_image_runs_with_the_real_runc() {
    let bin = ok(containerd::bin_dir());
    let Some(runc) = runc("the pause image under the real runc") else { return };
    if let Err(why) = built(None, "pause", "pause") {
        eprintln!("NOT CHECKED: the pause image under the real runc: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let out = tmp.path().join("images");
    let images = made(&make_images(&out, &["pause"]));
    let (r, pause) = images.iter().next().unwrap_or_else(|| panic!("tests/k8s/images --only pause made no image"));
    let c = ok(Containerd::start(&bin, &tmp.path().join("containerd"), &[&runc]));
    run(c.ctr().args(["-n", "k8s.io", "images", "import"]).arg(out.join(&pause["archive"])));
    let pid = start_detached(&c, r, "pause");
    assert_process(pid, "pause", "65535");
    // pause exits on SIGTERM (build/pause/linux/pause.c); then the task is gone.
    stop(&c, "pause", pid);
    eprintln!("pause ran as {pid} under runc from {} and stopped on SIGTERM", runc.display());
}

/// `ctr run -d` of image `r` as container kiln-test-NAME with the image's own
/// Entrypoint and User; returns the running task's pid.
fn start_detached(c: &Containerd, r: &str, name: &str) -> u32 {
    let id = format!("kiln-test-{name}");
    let cg = c.cgroup(name);
    let runtime = ["--runtime", "io.containerd.runc.v2", "--cgroup", &cg];
    run(c.ctr().args(["-n", "k8s.io", "run", "-d", "--null-io"]).args(runtime).args([r, &id]));
    wait_status(c, &id, "RUNNING")
}

/// Process `pid` is `comm` running as uid `uid`.
fn assert_process(pid: u32, comm: &str, uid: &str) {
    let got = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(got.trim(), comm, "the task's process {pid} is not {comm}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or_default().to_string();
    assert!(line.split_whitespace().nth(1) == Some(uid), "{comm} does not run as the image's User {uid}: {line}");
}

/// SIGTERM to kiln-test-NAME, which must stop; then task and container are deleted and the cgroup is gone.
fn stop(c: &Containerd, name: &str, pid: u32) {
    let id = format!("kiln-test-{name}");
    // A PID namespace's init gets no signal from outside it that it has no handler
    // for: a SIGTERM sent before pause's sigaction() would be dropped (seen once).
    let start = Instant::now();
    while !catches_sigterm(pid) {
        assert!(start.elapsed() < Duration::from_secs(30), "{id} ({pid}) has no SIGTERM handler after 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    run(c.ctr().args(["-n", "k8s.io", "tasks", "kill", "--signal", "SIGTERM", &id]));
    wait_status(c, &id, "STOPPED");
    run(c.ctr().args(["-n", "k8s.io", "tasks", "delete", &id]));
    run(c.ctr().args(["-n", "k8s.io", "containers", "delete", &id]));
    let cg = c.cgroup(name);
    let left: Vec<_> = ["memory", "pids", "unified"]
        .iter()
        .map(|k| Path::new("/sys/fs/cgroup").join(k).join(cg.trim_start_matches('/')))
        .filter(|p| p.exists())
        .collect();
    assert!(left.is_empty(), "{id}'s cgroup is left behind: {left:?}");
}

/// Whether process `pid` has a handler for SIGTERM (signal 15: bit 14 of SigCgt).
fn catches_sigterm(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mask = status.lines().find_map(|l| l.strip_prefix("SigCgt:")).map(str::trim).unwrap_or("0");
    u64::from_str_radix(mask, 16).is_ok_and(|m| m & (1 << 14) != 0)
}

/// Whether process `pid`'s network namespace has a TCP socket listening on `port`.
fn listens(pid: u32, port: u16) -> bool {
    let local = format!(":{port:04X} ");
    ["tcp", "tcp6"].iter().any(|f| {
        let table = std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).unwrap_or_default();
        // sl local_address rem_address st: st 0A is LISTEN.
        table.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && format!("{} ", f[1]).ends_with(&local) && f[3] == "0A"
        })
    })
}

/// What each image's program prints for its version, run by name as kubeadm's
/// static pods run it (`command: [NAME, ...]`, found on the image's `PATH`).
const VERSIONS: [(&str, &[&str], &str); 4] = [
    ("kube-apiserver", &["kube-apiserver", "--version"], "Kubernetes v1.34.2"),
    ("kube-controller-manager", &["kube-controller-manager", "--version"], "Kubernetes v1.34.2"),
    ("kube-scheduler", &["kube-scheduler", "--version"], "Kubernetes v1.34.2"),
    ("etcd", &["etcd", "--version"], "etcd Version: 3.6.5"),
];

#[test]
fn the_images_run_their_programs_by_name_with_the_real_runc() {
    let bin = ok(containerd::bin_dir());
    let Some(runc) = runc("the images' programs under the real runc") else { return };
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let out = tmp.path().join("images");
    let doc = make_images(&out, &[]);
    report_skipped(&doc);
    let images = made(&doc);
    let c = ok(Containerd::start(&bin, &tmp.path().join("containerd"), &[&runc]));
    import_all(&c, &out, &images);
    let mut checked = 0;
    for (name, args, want) in VERSIONS {
        let Some((r, _)) = images.iter().find(|(_, i)| i["name"] == name) else {
            eprintln!("NOT CHECKED: {name} under runc: tests/k8s/images made no {name} image");
            continue;
        };
        let (id, cg) = (format!("kiln-test-{name}"), c.cgroup(name));
        // ctr run ... IMAGE ID [ARGS]: with --rm the container is deleted when it exits.
        let mut ctr = c.ctr();
        ctr.args(["-n", "k8s.io", "run", "--rm", "--runtime", "io.containerd.runc.v2", "--cgroup", &cg, r, &id]);
        let o = ctr.args(args).stdin(std::process::Stdio::null()).output().unwrap_or_else(|e| panic!("ctr run: {e}"));
        assert!(o.status.success(), "{name}: ctr run {r} {args:?} failed:\n{}\n{}", text(&o), c.log_tail());
        let printed = text(&o);
        assert!(printed.contains(want), "{name}: {args:?} printed {printed:?}, not {want:?}");
        checked += 1;
    }
    assert!(checked >= 3, "the control plane's images were not run");
    // CoreDNS through its Entrypoint, as uid 65532, with no Corefile (its default:
    // whoami on :53): it can bind port 53 only with the file capability the image
    // gives /coredns (ctr run sets no ip_unprivileged_port_start, unlike the CRI plugin).
    if let Some((r, _)) = images.iter().find(|(_, i)| i["name"] == "coredns") {
        let pid = start_detached(&c, r, "coredns");
        let start = Instant::now();
        while !listens(pid, 53) && start.elapsed() < Duration::from_secs(30) {
            assert!(task(&c, "kiln-test-coredns").is_some_and(|(_, s)| s == "RUNNING"), "coredns exited");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(listens(pid, 53), "coredns (pid {pid}) does not listen on port 53 after 30 s");
        assert_process(pid, "coredns", "65532");
        stop(&c, "coredns", pid);
        checked += 1;
    } else {
        eprintln!("NOT CHECKED: coredns under runc: tests/k8s/images made no coredns image");
    }
    eprintln!("{checked} images ran their programs under runc from {}", runc.display());
}

/// A cache root (`KILN_K8S_CACHE`) holding only what `links` names: (target dir
/// as `tests/k8s/build --dir` prints it for the real cache, ARCH it stands for).
fn scratch_cache(root: &Path, links: &[(&str, &str, &str)]) {
    for (arch, target, from) in links {
        let real = run(Command::new(repo().join("tests/k8s/build")).args(["--dir", VERSION, "amd64", from]));
        let real = PathBuf::from(real.trim());
        let key = real.parent().and_then(|p| p.file_name()).unwrap_or_else(|| panic!("{}", real.display()));
        let key = key.to_string_lossy().replace("-amd64", &format!("-{arch}"));
        let dir = root.join(key);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        std::os::unix::fs::symlink(&real, dir.join(target)).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }
}

fn images_in(cache: &Path, args: &[&str], out: &Path) -> (Output, String) {
    let o = Command::new(repo().join("tests/k8s/images"))
        .args(args)
        .arg(out)
        .env("KILN_K8S_CACHE", cache)
        .output()
        .unwrap_or_else(|e| panic!("tests/k8s/images: {e}"));
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    (o, stderr)
}

#[test]
fn a_program_not_built_fails_its_image_with_the_build_command() {
    kubeadm_images();
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let cache = tmp.path().join("cache");
    // kubeadm is there (it lists the images); the control plane is not.
    scratch_cache(&cache, &[("amd64", "node", "node")]);
    let only = ["--only", "kube-scheduler", VERSION, "amd64"];
    let (o, err) = images_in(&cache, &only, &tmp.path().join("out"));
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("build it with: tests/k8s/build {VERSION} amd64 control-plane")), "{err}");
    let doc: Value = serde_json::from_slice(&std::fs::read(tmp.path().join("out/images.json")).unwrap_or_default())
        .unwrap_or_else(|e| panic!("images.json: {e}\n{err}"));
    assert_eq!(doc["images"], serde_json::json!([]), "{doc}");
}

#[test]
fn a_program_of_another_architecture_fails_its_image() {
    kubeadm_images();
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let cache = tmp.path().join("cache");
    // The amd64 control plane where the arm64 one should be.
    scratch_cache(&cache, &[("amd64", "node", "node"), ("arm64", "control-plane", "control-plane")]);
    let only = ["--only", "kube-scheduler", VERSION, "arm64"];
    let (o, err) = images_in(&cache, &only, &tmp.path().join("out"));
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("is not a linux/arm64 ELF program"), "{err}");
    assert!(
        !tmp.path().join(format!("out/kube-scheduler_{VERSION}.tar")).exists(),
        "an arm64 image of an amd64 program"
    );
}

#[test]
fn usage_mistakes_exit_2() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    for args in [
        &["--only", "kube-nothing", VERSION, "amd64"][..],
        &[VERSION, "riscv64"],
        &[VERSION],
        &["--frob", VERSION, "amd64"],
    ] {
        let (o, err) = images_in(tmp.path(), args, &tmp.path().join("out"));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("Usage:"), "{args:?}: {err}");
    }
}

#[test]
fn the_arm64_pause_image_imports_for_linux_arm64_with_its_digest() {
    let bin = ok(containerd::bin_dir());
    if let Err(why) = built_for("arm64", None, "pause", "pause") {
        eprintln!("NOT CHECKED: the arm64 pause image (the Raspberry Pi worker's sandbox): {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let out = tmp.path().join("images");
    let o = Command::new(repo().join("tests/k8s/images"))
        .args(["--only", "pause", VERSION, "arm64"])
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("tests/k8s/images: {e}"));
    assert!(o.status.success(), "tests/k8s/images --only pause {VERSION} arm64:\n{}", text(&o));
    let path = out.join("images.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let images = made(&doc);
    let (r, pause) = images.iter().next().unwrap_or_else(|| panic!("no arm64 pause image: {doc}"));
    let c = ok(Containerd::start(&bin, &tmp.path().join("containerd"), &[]));
    let archive = out.join(&pause["archive"]);
    run(c.ctr().args(["-n", "k8s.io", "images", "import", "--platform", "linux/arm64"]).arg(&archive));
    let listed = run(c.ctr().args(["-n", "k8s.io", "images", "ls"]));
    let line = listed.lines().find(|l| l.starts_with(&format!("{r} "))).unwrap_or_else(|| panic!("{r}:\n{listed}"));
    assert!(line.contains(&pause["index_digest"]) && line.contains("linux/arm64"), "{line}");
}
