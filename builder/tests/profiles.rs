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
            let located: Vec<&str> = err.lines().filter(|l| l.contains(&format!("{}:", p.display()))).collect();
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
