//! Malformed profiles: each is refused with exit 2 and one `file:line:col` line, never a panic.

mod common;

use common::*;
use std::path::Path;

const BASE: &str = r#"name = "t"
kubernetes_version = "v1.34.2"
family = "fcos"
architectures = ["amd64"]
overlays = ["ok"]
[runtime]
name = "containerd"
manage_config = true
[artifacts.kubeadm]
version = "v1.34.2"
url = "https://dl.k8s.io/release/{version}/bin/linux/{arch}/kubeadm"
sha256.amd64 = "6a2346006132f6e1ed0b5248e518098cf5abbce25bf11b8926fb1073091b83f4"
[artifacts.kubelet]
version = "v1.34.2"
url = "https://dl.k8s.io/release/{version}/bin/linux/{arch}/kubelet"
sha256.amd64 = "9c5e717b774ee9b9285ce47e7d2150c29e84837eb19a7eaa24b60b1543c9d58f"
[artifacts.kubectl]
version = "v1.34.2"
url = "https://dl.k8s.io/release/{version}/bin/linux/{arch}/kubectl"
sha256.amd64 = "9591f3d75e1581f3f7392e6ad119aab2f28ae7d6c6e083dc5d22469667f27253"
[artifacts.crictl]
version = "v1.34.0"
url = "https://github.com/kubernetes-sigs/cri-tools/releases/download/{version}/crictl-{version}-linux-{arch}.tar.gz"
extract = ["crictl"]
sha256.amd64 = "a8ff2a3edb37a98daf3aba7c3b284fe0aa5bff24166d896ab9ef64c8913c9f51"
[artifacts.cni-plugins]
version = "v1.8.0"
url = "https://github.com/containernetworking/plugins/releases/download/{version}/cni-plugins-linux-{arch}-{version}.tgz"
extract = ["*"]
sha256.amd64 = "ab3bda535f9d90766cccc90d3dddb5482003dd744d7f22bcf98186bf8eea8be6"
"#;

/// (case, edit of BASE, expected line:col, fragment of the message)
type Case = (&'static str, fn(&str) -> String, &'static str, &'static str);

fn cases() -> Vec<Case> {
    vec![
        ("unknown key", |b| b.replace("family =", "famliy ="), "3:1", "did you mean `family`"),
        ("wrong type", |b| b.replace("architectures = [\"amd64\"]", "architectures = \"amd64\""), "4:17", "invalid type"),
        ("bad version", |b| b.replace("kubernetes_version = \"v1.34.2\"", "kubernetes_version = \"v1.34\""), "2:22", "not a version"),
        ("version without v", |b| b.replace("kubernetes_version = \"v1.34.2\"", "kubernetes_version = \"1.34.2\""), "2:22", "write \"v1.34.2\""),
        ("unknown family", |b| b.replace("family = \"fcos\"", "family = \"fedora\""), "3:10", "unknown variant"),
        ("missing pin for an arch", |b| b.replace("[\"amd64\"]", "[\"amd64\", \"arm64\"]"), "30:1", "no sha256 for arm64, which the profile builds, in artifact(s) cni-plugins, crictl, kubeadm, kubectl, kubelet"),
        ("32-bit arm with >= 1.27", |b| b.replace("[\"amd64\"]", "[\"amd64\", \"arm\"]"), "4:27", "32-bit arm"),
        ("flex dir under /usr on fcos", |b| b.replace("overlays =", "flex_volume_dir = \"/usr/libexec/kubernetes/kubelet-plugins/volume/exec/\"\noverlays ="), "5:19", "read-only on fcos"),
        ("bin dir relative", |b| b.replace("overlays =", "bin_dir = \"opt/bin\"\noverlays ="), "5:11", "absolute path"),
        ("overlay escaping its root", |b| b.replace("[\"ok\"]", "[\"ok\", \"escape\"]"), "5:19", "escapes the image root"),
        ("conflicting overlays", |b| b.replace("[\"ok\"]", "[\"ok\", \"clash\"]"), "5:19", "two sources"),
        ("missing overlay", |b| b.replace("[\"ok\"]", "[\"ok\", \"nope\"]"), "5:19", "is not a directory"),
        ("bad sha256", |b| b.replace("sha256.amd64 = \"6a23", "sha256.amd64 = \"zz23"), "12:16", "64 hex digits"),
        ("kubeadm too old for the control plane", |b| b.replacen("\nversion = \"v1.34.2\"", "\nversion = \"v1.32.0\"", 1), "10:11", "kubeadm v1.32.0 cannot deploy"),
        ("kubelet newer than the control plane", |b| b.replace("version = \"v1.34.2\"\nurl = \"https://dl.k8s.io/release/{version}/bin/linux/{arch}/kubelet\"", "version = \"v1.35.0\"\nurl = \"https://dl.k8s.io/release/{version}/bin/linux/{arch}/kubelet\""), "14:11", "must not be newer"),
        ("missing kubeadm", |b| b.replace("[artifacts.kubeadm]", "[artifacts.kubeadmx]"), "1:8", "no [artifacts.kubeadm]"),
        ("unknown url placeholder", |b| b.replace("{arch}/kubectl", "{os}/kubectl"), "19:7", "unknown placeholder `{os}`"),
        ("cgroup driver mismatch", |b| b.replace("manage_config = true", "cgroup_driver = \"cgroupfs\""), "8:17", "cgroup driver"),
        ("removed kubelet flag on 1.35", |b| {
            b.replace("v1.34.2", "v1.35.0").replace("v1.34.0", "v1.35.0")
                + "[kubelet]\nextra_args = [\"--pod-infra-container-image=registry.k8s.io/pause:3.10\"]\n"
        }, "32:15", "--pod-infra-container-image"),
        ("unknown arch key in pins", |b| b.replace("sha256.amd64 = \"9591", "sha256.amd46 = \"9591"), "20:8", "unknown variant `amd46`"),
        ("bad artifact mode", |b| b.replace("extract = [\"crictl\"]", "extract = [\"crictl\"]\nmode = \"rwx\""), "25:8", "not octal"),
        ("overlay writes under /usr on fcos", |b| b.replace("[\"ok\"]", "[\"ok\", \"usr\"]"), "3:10", "is under /usr"),
        ("required sysctl turned off", |b| b.to_string() + "[sysctl]\n\"net.ipv4.ip_forward\" = \"0\"\n", "32:25", "sysctl net.ipv4.ip_forward must be 1"),
        ("required sysctl turned off, slash form", |b| b.to_string() + "[sysctl]\n\"net/bridge/bridge-nf-call-iptables\" = 0\n", "32:40", "must be 1"),
        ("unquoted dotted sysctl name", |b| b.to_string() + "[sysctl]\nnet.ipv4.ip_forward = 1\n", "32:1", "quote dotted names"),
        ("missing crictl", |b| b.replace("[artifacts.crictl]", "[artifacts.crictlx]"), "1:8", "no [artifacts.crictl]; an image needs kubeadm, kubelet and crictl"),
        ("containerd version 2 config with the version-3 runtime table", |b| {
            b.replace("manage_config = true", "cgroup_driver = \"systemd\"").replace("[\"ok\"]", "[\"ok\", \"ctrd-v3-in-v2\"]")
        }, "1:8", "a version-3 table containerd 1.7 does not read"),
        ("known-bad Kubernetes release", |b| b.replace("v1.34.2", "v1.33.3"), "2:22", "Kubernetes v1.33.3 is a release to avoid: CVE-2025-5187"),
        ("sysctl value smuggling a second line", |b| b.to_string() + "[sysctl]\n\"kernel.panic\" = \"0\\nnet.ipv4.ip_forward = 0\"\n", "32:18", "would not be one sysctl.d line"),
    ]
}

fn scratch_overlays(root: &Path) {
    let o = root.join("overlays");
    std::fs::create_dir_all(o.join("ok/etc")).unwrap();
    std::fs::write(o.join("ok/etc/a.conf"), "a\n").unwrap();
    std::fs::create_dir_all(o.join("escape/etc")).unwrap();
    std::os::unix::fs::symlink("../../../etc/shadow", o.join("escape/etc/link")).unwrap();
    std::fs::create_dir_all(o.join("clash/etc")).unwrap();
    std::fs::write(o.join("clash/etc/a.conf"), "b\n").unwrap();
    std::fs::create_dir_all(o.join("usr/usr/lib")).unwrap();
    std::fs::write(o.join("usr/usr/lib/x"), "x\n").unwrap();
    // containerd config version 2 with the runc options under version 3's plugin.
    std::fs::create_dir_all(o.join("ctrd-v3-in-v2/etc/containerd")).unwrap();
    let v3_in_v2 = kiln::image::render::containerd_config(2, true, None)
        .replace("io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime");
    std::fs::write(o.join("ctrd-v3-in-v2/etc/containerd/config.toml"), v3_in_v2).unwrap();
    std::fs::create_dir_all(root.join("profiles")).unwrap();
}

#[test]
fn the_base_profile_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    scratch_overlays(dir.path());
    let p = dir.path().join("profiles/t.toml");
    std::fs::write(&p, BASE).unwrap();
    let o = run(kiln().arg("check").arg(&p));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn required_sysctls_may_be_restated_as_1_and_others_set_freely() {
    let dir = tempfile::tempdir().unwrap();
    scratch_overlays(dir.path());
    let p = dir.path().join("profiles/t.toml");
    let extra = "[sysctl]\n\"net.ipv4.ip_forward\" = 1\n\"net/bridge/bridge-nf-call-iptables\" = \"1\"\n\"vm.max_map_count\" = 262144\n\"net.ipv6.conf.all.forwarding\" = \"0\"\n";
    std::fs::write(&p, format!("{BASE}{extra}")).unwrap();
    let o = run(kiln().arg("check").arg(&p));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn malformed_profiles_exit_2_with_one_located_line() {
    let dir = tempfile::tempdir().unwrap();
    scratch_overlays(dir.path());
    let cases = cases();
    assert!(cases.len() >= 12);
    let mut failures = Vec::new();
    for (i, (name, edit, loc, fragment)) in cases.iter().enumerate() {
        let text = edit(BASE);
        assert_ne!(text, BASE, "case `{name}` did not change the profile");
        let p = dir.path().join(format!("profiles/case{i}.toml"));
        std::fs::write(&p, &text).unwrap();
        for sub in ["check", "build"] {
            let mut c = kiln();
            c.arg(sub).arg(&p);
            if sub == "build" {
                c.arg("--out")
                    .arg(dir.path().join("dist"))
                    .arg("--cache")
                    .arg(dir.path().join("cache"))
                    .arg("--offline");
            }
            let o = run(&mut c);
            let err = stderr(&o);
            let prefix = format!("{}:{loc}", p.display());
            // BASE has no `images`: the warning saying so (rule images-none) is not the case's error.
            let located: Vec<&str> = err
                .lines()
                .filter(|l| l.contains(&format!("{}:", p.display())) && !l.contains("the profile has no `images`"))
                .collect();
            let ok = o.status.code() == Some(2)
                && !err.contains("panicked")
                && located.len() == 1
                && located[0].contains(fragment)
                && (loc.is_empty() || located[0].contains(&format!("{prefix}:")))
                && located[0].split(&format!("{}:", p.display())).nth(1).is_some_and(|rest| {
                    let mut it = rest.split(':');
                    it.next().is_some_and(|l| l.parse::<u32>().is_ok())
                        && it.next().is_some_and(|c| c.parse::<u32>().is_ok())
                });
            if !ok {
                failures
                    .push(format!("{sub} `{name}` (expected {loc}, `{fragment}`): exit {:?}\n{err}", o.status.code()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
    assert!(!dir.path().join("dist").exists());
}

#[test]
fn check_json_reports_rules() {
    let dir = tempfile::tempdir().unwrap();
    scratch_overlays(dir.path());
    let p = dir.path().join("profiles/t.toml");
    std::fs::write(&p, BASE.replace("[\"amd64\"]", "[\"amd64\", \"arm64\", \"arm\"]")).unwrap();
    let o = run(kiln().args(["check", "--json"]).arg(&p));
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["ok"], false);
    let rules: Vec<&str> = v[0]["findings"].as_array().unwrap().iter().filter_map(|f| f["rule"].as_str()).collect();
    assert!(rules.contains(&"arch-32bit-arm") && rules.contains(&"missing-pin"), "{rules:?}");
}

// ---------------------------------------------------------------------------
// Hostile profiles (issue 10): every value is refused where it is parsed, and
// `kiln check` refuses exactly what `kiln build` refuses, with the same words.

/// The located error lines of a run: `file:line:col: message`, without kiln's
/// `kiln: error: ` prefix and the ` [rule]` suffix `check` adds.
fn located_errors(o: &std::process::Output, p: &Path) -> Vec<String> {
    let file = format!("{}:", p.display());
    stderr(o)
        .lines()
        .filter(|l| !l.starts_with("kiln: warning:"))
        .filter_map(|l| l.find(&file).map(|i| &l[i..]))
        .map(|l| match l.rfind(" [") {
            Some(i) if l.ends_with(']') && !l[i + 2..l.len() - 1].contains(' ') => l[..i].to_string(),
            _ => l.to_string(),
        })
        .collect()
}

/// Runs `kiln check` and an offline `kiln build` of `text`; both must exit 2
/// with the same located lines, each `file:line:col: …` and one containing
/// `fragment`. Returns the lines. Nothing may appear outside `dir/dist`.
fn refused_alike(dir: &Path, file: &str, text: &str, fragment: &str) -> Result<Vec<String>, String> {
    let p = dir.join("profiles").join(file);
    std::fs::write(&p, text).unwrap();
    let before = files_in(dir);
    let check = run(kiln().arg("check").arg(&p));
    let build = run(kiln()
        .arg("build")
        .arg(&p)
        .arg("--out")
        .arg(dir.join("dist"))
        .arg("--cache")
        .arg(dir.join("cache"))
        .arg("--offline"));
    let (c, b) = (located_errors(&check, &p), located_errors(&build, &p));
    let mut problems = Vec::new();
    for (sub, o) in [("check", &check), ("build", &build)] {
        if o.status.code() != Some(2) {
            problems.push(format!("{sub} exited {:?}", o.status.code()));
        }
        if stderr(o).contains("panicked") {
            problems.push(format!("{sub} panicked"));
        }
    }
    if c.is_empty() || c != b {
        problems.push(format!("check and build differ:\n check: {c:?}\n build: {b:?}"));
    }
    for l in &c {
        let rest = &l[p.display().to_string().len() + 1..];
        let mut it = rest.splitn(3, ':');
        let numeric =
            it.next().is_some_and(|x| x.parse::<u32>().is_ok()) && it.next().is_some_and(|x| x.parse::<u32>().is_ok());
        if !numeric {
            problems.push(format!("not file:line:col: {l}"));
        }
    }
    if !c.iter().any(|l| l.contains(fragment)) {
        problems.push(format!("no line contains `{fragment}`: {c:?}"));
    }
    let after: Vec<String> = files_in(dir).into_iter().filter(|f| !f.starts_with("cache/")).collect();
    let new: Vec<&String> = after.iter().filter(|f| !before.contains(f)).collect();
    if !new.is_empty() {
        problems.push(format!("files appeared: {new:?}"));
    }
    if problems.is_empty() {
        Ok(c)
    } else {
        Err(format!(
            "{}\nstderr of check:\n{}\nstderr of build:\n{}",
            problems.join("\n"),
            stderr(&check),
            stderr(&build)
        ))
    }
}

fn hostile_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    scratch_overlays(dir.path());
    dir
}

fn assert_refused(text: &str, fragment: &str) -> Vec<String> {
    let dir = hostile_dir();
    match refused_alike(dir.path(), "t.toml", text, fragment) {
        Ok(lines) => lines,
        Err(e) => panic!("{e}"),
    }
}

/// B1: a profile name with `..` or `/` would put the tarball outside `--out`.
#[test]
fn b1_profile_name_cannot_leave_the_output_directory() {
    for name in ["../x", "/abs/x", "a/../../x", ".."] {
        let text = BASE.replace("name = \"t\"", &format!("name = \"{name}\""));
        let lines = assert_refused(&text, "is not a name");
        assert!(lines[0].contains(":1:8: "), "{lines:?}");
    }
}

/// B2: a line break in any value that reaches a rendered file is refused.
#[test]
fn b2_line_breaks_never_reach_rendered_files() {
    let inj = "\\nExecStartPre=/bin/sh -c id";
    let cases: Vec<(String, &str)> = vec![
        (BASE.replace("overlays =", &format!("bin_dir = \"/opt/bin{inj}\"\noverlays =")), "bin_dir"),
        (BASE.replace("overlays =", &format!("cni_bin_dir = \"/opt/cni/bin{inj}\"\noverlays =")), "cni_bin_dir"),
        (BASE.replace("overlays =", &format!("flex_volume_dir = \"/opt/flex{inj}\"\noverlays =")), "flex_volume_dir"),
        (format!("{BASE}[sysctl]\n\"kernel.panic{inj}\" = \"1\"\n"), "sysctl name"),
        (format!("{BASE}[sysctl]\n\"kernel.panic\" = \"1{inj}\"\n"), "sysctl.d line"),
        (BASE.replace("overlays =", &format!("kernel_modules = [\"ip_vs{inj}\"]\noverlays =")), "kernel module"),
        (format!("{BASE}[kubelet]\nextra_args = [\"--v=2{inj}\"]\n"), "kubelet argument"),
        (format!("{BASE}[kubelet]\nextra_args = [\"--v=2 --anonymous-auth=true\"]\n"), "kubelet argument"),
        (
            BASE.replace(
                "manage_config = true",
                &format!("manage_config = true\nsocket = \"unix:///run/c.sock{inj}\""),
            ),
            "socket",
        ),
        (
            BASE.replace(
                "[artifacts.kubectl]\nversion = \"v1.34.2\"",
                &format!("[artifacts.kubectl]\nversion = \"v1.34.2{inj}\""),
            ),
            "version",
        ),
        (
            BASE.replace("kubernetes_version = \"v1.34.2\"", &format!("kubernetes_version = \"v1.34.2-rc.1{inj}\"")),
            "version",
        ),
    ];
    let dir = hostile_dir();
    let mut failures = Vec::new();
    for (i, (text, fragment)) in cases.iter().enumerate() {
        if let Err(e) = refused_alike(dir.path(), &format!("b2-{i}.toml"), text, fragment) {
            failures.push(format!("case {i} ({fragment}): {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// B3: `/./usr/bin` is `/usr/bin`; it may not slip past the read-only-/usr rule.
#[test]
fn b3_dot_components_do_not_hide_usr() {
    for family in ["flatcar", "fcos"] {
        for path in ["/./usr/bin", "//usr/bin", "/opt/../usr/bin", "/usr/./bin"] {
            let text = BASE
                .replace("family = \"fcos\"", &format!("family = \"{family}\""))
                .replace("overlays =", &format!("bin_dir = \"{path}\"\noverlays ="));
            let lines = assert_refused(&text, "bin_dir");
            assert!(lines[0].contains(":5:11: "), "{lines:?}");
        }
        let text = BASE
            .replace("family = \"fcos\"", &format!("family = \"{family}\""))
            .replace("overlays =", "bin_dir = \"/usr/bin\"\noverlays =");
        assert_refused(&text, "read-only");
    }
}

/// B4: a line break in the name would split its `SHA256SUMS` line.
#[test]
fn b4_profile_name_cannot_break_sha256sums() {
    for name in ["a\\nb", "a b", "x\\r", "t\\u0000"] {
        let text = BASE.replace("name = \"t\"", &format!("name = \"{name}\""));
        assert_refused(&text, "is not a name");
    }
}

/// Weak points of issue 10 and the rest of the allow-lists: each refused by
/// `check` and `build` alike, located, with the same message.
#[test]
fn hostile_values_are_refused_alike_by_check_and_build() {
    let long = "n".repeat(300);
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty name", BASE.replace("name = \"t\"", "name = \"\""), "is not a name"),
        ("300-character name", BASE.replace("name = \"t\"", &format!("name = \"{long}\"")), "is not a name"),
        (
            "file_name with ..",
            BASE.replace("[artifacts.kubectl]\n", "[artifacts.kubectl]\nfile_name = \"../kubectl\"\n"),
            "is not a file name",
        ),
        (
            "empty file_name",
            BASE.replace("[artifacts.kubectl]\n", "[artifacts.kubectl]\nfile_name = \"\"\n"),
            "is not a file name",
        ),
        (
            "extract climbing out",
            BASE.replace("extract = [\"crictl\"]", "extract = [\"../../x\"]"),
            "is not a file name",
        ),
        ("extract * with others", BASE.replace("extract = [\"crictl\"]", "extract = [\"*\", \"crictl\"]"), "\"*\""),
        (
            "url credentials",
            BASE.replace(
                "https://dl.k8s.io/release/{version}/bin/linux/{arch}/kubectl",
                "https://user:secret@dl.k8s.io/release/{version}/bin/linux/{arch}/kubectl",
            ),
            "credentials",
        ),
        (
            "url file scheme",
            BASE.replace("https://dl.k8s.io/release/{version}/bin/linux/{arch}/kubectl", "file:///etc/shadow"),
            "https://",
        ),
        ("epoch beyond squashfs/time", BASE.replace("overlays =", "epoch = 9223372036854775807\noverlays ="), "epoch"),
        ("flex dir /etc", BASE.replace("overlays =", "flex_volume_dir = \"/etc\"\noverlays ="), "system directory"),
        ("flex dir /", BASE.replace("overlays =", "flex_volume_dir = \"/\"\noverlays ="), "system directory"),
        ("cni dir /tmp", BASE.replace("overlays =", "cni_bin_dir = \"/tmp/\"\noverlays ="), "system directory"),
        (
            "artifact dest /etc",
            BASE.replace("[artifacts.kubectl]\n", "[artifacts.kubectl]\ndest = \"/etc\"\n"),
            "system directory",
        ),
        (
            "tcp socket",
            BASE.replace("manage_config = true", "manage_config = true\nsocket = \"tcp://10.0.0.1:2375\""),
            "unix://",
        ),
        (
            "socket without scheme",
            BASE.replace("manage_config = true", "manage_config = true\nsocket = \"/run/containerd/containerd.sock\""),
            "unix://",
        ),
        ("bad overlay name", BASE.replace("[\"ok\"]", "[\"ok\", \"../profiles\"]"), "is not a name"),
        ("bad artifact name", BASE.replace("[artifacts.kubectl]", "[artifacts.\"Kube ctl\"]"), "is not a name"),
        (
            "version with a slash",
            BASE.replace("kubernetes_version = \"v1.34.2\"", "kubernetes_version = \"v1.34.2-a/../../b\""),
            "version",
        ),
        (
            "huge version numbers",
            BASE.replace("kubernetes_version = \"v1.34.2\"", "kubernetes_version = \"v99999999999999999999.1.1\""),
            "version",
        ),
        ("sysctl bool", format!("{BASE}[sysctl]\n\"kernel.panic\" = true\n"), "sysctl"),
        (
            "module with slash",
            BASE.replace("overlays =", "kernel_modules = [\"../../x\"]\noverlays ="),
            "kernel module",
        ),
        (
            "artifact over a rendered unit",
            BASE.replace(
                "[artifacts.kubectl]\n",
                "[artifacts.kubectl]\ndest = \"/etc/systemd/system/x\"\nfile_name = \"kubelet.service\"\n",
            )
            .replace("dest = \"/etc/systemd/system/x\"", "dest = \"/etc/systemd/system\""),
            "system directory",
        ),
        (
            "two artifacts, one file",
            BASE.replace("[artifacts.kubectl]\n", "[artifacts.kubectl]\nfile_name = \"kubelet\"\n"),
            "two sources",
        ),
        (
            "file_name kiln-firstboot",
            BASE.replace("[artifacts.kubectl]\n", "[artifacts.kubectl]\nfile_name = \"kiln-firstboot\"\n"),
            "kiln-firstboot",
        ),
        (
            "file_name with extract",
            BASE.replace("extract = [\"crictl\"]", "extract = [\"crictl\"]\nfile_name = \"crictl\""),
            "file_name",
        ),
    ];
    let dir = hostile_dir();
    let mut failures = Vec::new();
    for (i, (name, text, fragment)) in cases.iter().enumerate() {
        assert_ne!(text, BASE, "case `{name}` did not change the profile");
        if let Err(e) = refused_alike(dir.path(), &format!("w{i}.toml"), text, fragment) {
            failures.push(format!("`{name}`: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// Overlay manifests: unknown keys, bad modes and owners, bad paths, with the
/// manifest's own `file:line:col` inside the profile's location.
#[test]
fn hostile_overlay_manifests_are_refused_with_locations() {
    let dir = hostile_dir();
    let cases: Vec<(&str, &str, &str)> = vec![
        (
            "unknown key",
            "[paths.\"etc/a.conf\"]\nmode = \"0644\"\nsetuid = true\n",
            ".kiln-overlay.toml:3:1: unknown field `setuid`",
        ),
        ("bad mode", "[paths.\"etc/a.conf\"]\nmode = \"rwx\"\n", ".kiln-overlay.toml:2:8: mode \"rwx\""),
        ("mode too big", "[paths.\"etc/a.conf\"]\nmode = \"017777\"\n", ".kiln-overlay.toml:2:8: mode"),
        ("negative owner", "[paths.\"etc/a.conf\"]\nuid = -1\n", ".kiln-overlay.toml:2:7:"),
        ("owner (uid_t)-1", "[paths.\"etc/a.conf\"]\ngid = 4294967295\n", ".kiln-overlay.toml:2:7: gid 4294967295"),
        ("owner as a name", "[paths.\"etc/a.conf\"]\nuid = \"root\"\n", ".kiln-overlay.toml:2:7:"),
        (
            "path with ..",
            "[paths.\"etc/../etc/a.conf\"]\nmode = \"0644\"\n",
            ".kiln-overlay.toml:1:1: path \"etc/../etc/a.conf\"",
        ),
        ("path with a line break", "[paths.\"etc/a\\n.conf\"]\nmode = \"0644\"\n", ".kiln-overlay.toml:1:1: path"),
        ("path not in the overlay", "[paths.\"etc/b.conf\"]\nmode = \"0644\"\n", ".kiln-overlay.toml:1:1: "),
    ];
    let mut failures = Vec::new();
    for (i, (name, manifest, fragment)) in cases.iter().enumerate() {
        let o = dir.path().join(format!("overlays/m{i}/etc"));
        std::fs::create_dir_all(&o).unwrap();
        std::fs::write(o.join("a.conf"), "x\n").unwrap();
        std::fs::write(dir.path().join(format!("overlays/m{i}/.kiln-overlay.toml")), manifest).unwrap();
        let text = BASE.replace("[\"ok\"]", &format!("[\"m{i}\"]"));
        if let Err(e) = refused_alike(dir.path(), &format!("m{i}.toml"), &text, fragment) {
            failures.push(format!("`{name}`: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// Overlay file names with control characters (or not UTF-8) are refused,
/// not mangled into the image.
#[test]
fn overlay_file_names_with_control_characters_are_refused() {
    use std::os::unix::ffi::OsStrExt;
    let dir = hostile_dir();
    for (i, raw) in [&b"etc/a\nb.conf"[..], &b"etc/\xff.conf"[..]].iter().enumerate() {
        let base = dir.path().join(format!("overlays/n{i}"));
        std::fs::create_dir_all(base.join("etc")).unwrap();
        std::fs::write(base.join(std::ffi::OsStr::from_bytes(raw)), "x\n").unwrap();
        let text = BASE.replace("[\"ok\"]", &format!("[\"n{i}\"]"));
        if let Err(e) = refused_alike(dir.path(), &format!("n{i}.toml"), &text, "overlay") {
            panic!("{e}");
        }
    }
}

/// `override = true` over a pinned binary is allowed but said loudly, by
/// `check` and `build` alike.
#[test]
fn overriding_a_pinned_binary_is_a_loud_warning() {
    let dir = hostile_dir();
    let o = dir.path().join("overlays/swap/opt/bin");
    std::fs::create_dir_all(&o).unwrap();
    std::fs::write(o.join("kubelet"), "#!/bin/sh\n").unwrap();
    std::fs::write(
        dir.path().join("overlays/swap/.kiln-overlay.toml"),
        "[paths.\"opt/bin/kubelet\"]\nmode = \"0755\"\noverride = true\n",
    )
    .unwrap();
    let p = dir.path().join("profiles/t.toml");
    std::fs::write(&p, BASE.replace("[\"ok\"]", "[\"ok\", \"swap\"]")).unwrap();
    let o = run(kiln().arg("check").arg(&p));
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let warning = err.lines().find(|l| l.contains("warning") && l.contains("/opt/bin/kubelet")).unwrap_or_default();
    assert!(warning.contains(&format!("{}:5:19:", p.display())), "{err}");
    assert!(warning.contains("pinned") && warning.contains("artifact kubelet v1.34.2"), "{err}");
    // Without `override`, the same overlay is a conflict naming both sources.
    std::fs::write(
        dir.path().join("overlays/swap/.kiln-overlay.toml"),
        "[paths.\"opt/bin/kubelet\"]\nmode = \"0755\"\n",
    )
    .unwrap();
    let o = run(kiln().arg("check").arg(&p));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("two sources"), "{}", stderr(&o));
}

/// A profile that is not UTF-8 is refused at the first bad byte's line and column.
#[test]
fn non_utf8_profiles_are_located() {
    let dir = hostile_dir();
    let p = dir.path().join("profiles/t.toml");
    let mut bytes = BASE.replace("name = \"t\"", "name = \"t@\"").into_bytes();
    let at = bytes.iter().position(|b| *b == b'@').unwrap();
    bytes[at] = 0xff;
    std::fs::write(&p, bytes).unwrap();
    let o = run(kiln().arg("check").arg(&p));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(&format!("{}:1:10: ", p.display())), "{}", stderr(&o));
    assert!(stderr(&o).contains("UTF-8"), "{}", stderr(&o));
}

/// `override = true` over a member of an `extract = ["*"]` tarball is known
/// only once the tarball is unpacked: `kiln build` says so loudly (once),
/// located at the overlay's entry in the profile.
#[test]
fn build_warns_when_an_overlay_overrides_an_extracted_member() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let o = s.path("overlays/cnihack/opt/cni/bin");
    std::fs::create_dir_all(&o).unwrap();
    std::fs::write(o.join("bridge"), "#!/bin/sh\n").unwrap();
    std::fs::write(
        s.path("overlays/cnihack/.kiln-overlay.toml"),
        "[paths.\"opt/cni/bin/bridge\"]\nmode = \"0755\"\noverride = true\n",
    )
    .unwrap();
    let p = s.profile("flatcar-1.34");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        text.replace("overlays = [\"base\", \"flatcar\"]", "overlays = [\"base\", \"flatcar\", \"cnihack\"]"),
    )
    .unwrap();
    let check = run(kiln().arg("check").arg(&p));
    assert!(check.status.success(), "{}", stderr(&check));
    let o = run(s.build_cmd("flatcar-1.34", "cache", "dist").args(["--arch", "amd64"]));
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let warnings: Vec<&str> =
        err.lines().filter(|l| l.contains("warning") && l.contains("/opt/cni/bin/bridge")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    let line = text.lines().position(|l| l.starts_with("overlays = ")).unwrap() + 1;
    assert!(warnings[0].contains(&format!("{}:{line}:", p.display())), "{err}");
    assert!(warnings[0].contains("pinned artifact cni-plugins"), "{err}");
    // And on record in the manifest, not only in the log.
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("dist/manifest.json")).unwrap()).unwrap();
    let rec = &m["profiles"]["flatcar-1.34"]["overrides"]["amd64"];
    assert_eq!(rec.as_array().map(Vec::len), Some(1), "{m}");
    assert_eq!(rec[0]["path"], "/opt/cni/bin/bridge", "{rec}");
}

/// `[base_image]` (cards) carries a version and a URL like any artifact.
#[test]
fn base_image_values_are_checked_like_artifacts() {
    let text = std::fs::read_to_string(repo().join("profiles/rpi-raspios-1.34.toml")).unwrap();
    let start = text.find("[base_image]").expect("a profile with [base_image]");
    let url_at = start + text[start..].find("\nurl = \"").expect("base_image url") + "\nurl = \"".len();
    let mut bad = text.clone();
    bad.insert_str(url_at + "https://".len(), "user:secret@");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("profiles")).unwrap();
    let p = dir.path().join("profiles/p.toml");
    std::fs::write(&p, bad).unwrap();
    let o = run(kiln().arg("check").arg(&p));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("base_image: url") && stderr(&o).contains("credentials"), "{}", stderr(&o));
}

/// Row 3: crictl is required (an error, in `malformed_profiles_exit_2_with_one_located_line`);
/// CNI plugins are recommended: a profile without them is checked with a
/// warning naming them (Calico and Cilium install their own plugins).
#[test]
fn a_profile_without_cni_plugins_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    scratch_overlays(dir.path());
    let p = dir.path().join("profiles/t.toml");
    std::fs::write(&p, BASE.replace("[artifacts.cni-plugins]", "[artifacts.cni-pluginsx]")).unwrap();
    let o = run(kiln().arg("check").arg(&p));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("no [artifacts.cni-plugins]; nodes usually need it"), "{}", stderr(&o));
}

/// Row 5: every shipped image that keeps swap off at build time disables
/// zram-generator's default device with a section-less
/// `/etc/systemd/zram-generator.conf` (zram-generator README: the first of
/// /run, /etc, /usr/local/lib, /usr/lib wins; one device per section): Fedora
/// CoreOS through the `fcos` overlay, Raspberry Pi cards through
/// `image::render::runtime::mask_swap` as every assembly of a card adds it. The other images get the
/// file from kiln-firstboot at first boot when node.toml says `swap = "off"`
/// (`firstboot/tests/run.rs`, `init_node_v1beta4_runs_once_per_machine`).
#[test]
fn every_swap_off_image_disables_zram_generator() {
    let dir = repo().join("profiles");
    let mut checked = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let p = kiln::inputs::profile::Profile::load(&path).unwrap();
        let card = p.formats().contains(&kiln::inputs::profile::OutputFormat::Card);
        if !(card || p.family() == kiln::inputs::profile::Family::Fcos) {
            continue;
        }
        let formats = p.formats();
        let tree =
            kiln::image::assemble::assemble(&p, p.architectures()[0], &formats, kiln::image::assemble::Pins::Declared)
                .unwrap();
        let e = tree
            .get(kiln::image::render::runtime::ZRAM_GENERATOR_CONF)
            .unwrap_or_else(|| panic!("{}: no zram-generator.conf", path.display()));
        let text = match &e.node {
            kiln::image::tree::Node::File(kiln::image::tree::Content::Inline(b)) => {
                String::from_utf8(b.clone()).unwrap()
            }
            kiln::image::tree::Node::File(kiln::image::tree::Content::Disk { path, .. }) => {
                std::fs::read_to_string(path).unwrap()
            }
            other => panic!("{}: {other:?}", path.display()),
        };
        assert!(!text.lines().any(|l| l.trim_start().starts_with('[')), "{}: {text}", path.display());
        checked.push(p.name().to_string());
    }
    checked.sort();
    assert_eq!(checked, ["fcos-1.34", "rpi-raspios-1.34", "rpi-ubuntu-1.34"]);
}

/// Row 46: the releases right after a deny-listed range pass (`kiln check` refuses
/// the range itself: `known-bad Kubernetes release` in the malformed-profile table).
#[test]
fn the_release_fixing_a_known_bad_one_passes_and_every_entry_is_refused() {
    use kiln::inputs::version::VersionExt;
    for b in kiln::image::check::KNOWN_BAD {
        let (major, minor) = b.minor;
        for patch in [b.patches.0, b.patches.1] {
            let v = kiln::inputs::version::Version::parse(&format!("v{major}.{minor}.{patch}")).unwrap();
            assert!(kiln::image::check::known_bad_release(&v).is_some(), "{v}");
        }
        let fixed = kiln::inputs::version::Version::parse(b.fixed).unwrap();
        assert!(kiln::image::check::known_bad_release(&fixed).is_none(), "{fixed}");
        assert_eq!((fixed.major, fixed.minor, fixed.patch), (major, minor, b.patches.1 + 1), "{}", b.fixed);
    }
    let dir = tempfile::tempdir().unwrap();
    scratch_overlays(dir.path());
    let p = dir.path().join("profiles/t.toml");
    // v1.33.4 with kubeadm v1.34.2 is within kubeadm's skew (its minor and the one before).
    std::fs::write(&p, BASE.replace("kubernetes_version = \"v1.34.2\"", "kubernetes_version = \"v1.33.4\"")).unwrap();
    let o = run(kiln().arg("check").arg(&p));
    assert!(!stderr(&o).contains("known-bad") && !stderr(&o).contains("release to avoid"), "{}", stderr(&o));
}
