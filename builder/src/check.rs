//! `kiln check`: rules a profile must pass before anything is fetched.
//!
//! Each rule cites where it comes from. Findings point at `file:line:col`.

use crate::error::Error;
use crate::hash::is_sha256_hex;
use crate::profile::{Arch, CgroupDriver, OutputFormat, Profile, REQUIRED_SYSCTLS, URL_PLACEHOLDERS};
use crate::tree::{Content, Node, Tree};
use crate::version::Version;
use crate::{overlay, render};
use serde::Serialize;
use std::ops::Range;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The build would produce a broken node: refused (exit 2).
    Error,
    /// Works, but probably not what was meant.
    Warning,
}

/// One result of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// Stable rule id (for `--json` consumers).
    pub rule: &'static str,
    /// `file:line:col: what, and what to do`.
    pub message: String,
}

struct Checker<'a> {
    p: &'a Profile,
    out: Vec<Finding>,
}

impl Checker<'_> {
    fn error(&mut self, rule: &'static str, span: Range<usize>, msg: impl AsRef<str>) {
        let message = self.p.at(span, msg.as_ref());
        self.out.push(Finding { severity: Severity::Error, rule, message });
    }
    fn warn(&mut self, rule: &'static str, span: Range<usize>, msg: impl AsRef<str>) {
        let message = self.p.at(span, msg.as_ref());
        self.out.push(Finding { severity: Severity::Warning, rule, message });
    }
    fn report(&mut self, rule: &'static str, e: Error) {
        self.out.push(Finding { severity: Severity::Error, rule, message: e.message });
    }
}

/// Runs every rule on `profile` for the formats it asks for.
pub fn check(profile: &Profile) -> Vec<Finding> {
    check_for(profile, &profile.formats())
}

/// Runs every rule on `profile` for building `formats`.
pub fn check_for(profile: &Profile, formats: &[OutputFormat]) -> Vec<Finding> {
    let mut c = Checker { p: profile, out: Vec::new() };
    if formats.contains(&OutputFormat::Sysext) {
        sysext_writable(&mut c);
    }
    architectures(&mut c);
    directories(&mut c);
    artifacts(&mut c);
    skew(&mut c);
    runtime(&mut c);
    sysctls(&mut c);
    kubelet_flags(&mut c);
    image_tree(&mut c);
    c.out
}

/// Whether any finding is an error.
pub fn has_errors(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}

fn architectures(c: &mut Checker) {
    let archs = &c.p.doc.architectures;
    if archs.get_ref().is_empty() {
        c.error("architectures", archs.span(), "no architectures; list at least one of \"amd64\", \"arm64\"");
    }
    let mut seen = Vec::new();
    for a in archs.get_ref() {
        // Kubernetes stopped publishing linux/arm (32-bit) server binaries in v1.27:
        // kubernetes/kubernetes#115742, kubernetes/release#2960.
        if *a.get_ref() == Arch::Arm && c.p.version.at_least(1, 27) {
            c.error(
                "arch-32bit-arm",
                a.span(),
                format!(
                    "32-bit arm has no Kubernetes binaries from v1.27 (this profile targets {}); use arm64 with a 64-bit OS (Raspberry Pi 3 and later)",
                    c.p.version
                ),
            );
        }
        if seen.contains(a.get_ref()) {
            c.error("architectures", a.span(), format!("{} is listed twice", a.get_ref()));
        }
        seen.push(*a.get_ref());
    }
}

/// A merged sysext makes `/usr` read-only (systemd-sysext(8)); kiln's image
/// merges only `/usr`, so the directories kubelet and CNI write must be elsewhere.
fn sysext_writable(c: &mut Checker) {
    for (key, v) in [("flex_volume_dir", c.p.doc.flex_volume_dir.clone()), ("cni_bin_dir", c.p.doc.cni_bin_dir.clone())]
    {
        if let Some(v) = v {
            if under_usr(v.get_ref()) && !c.p.family().read_only_usr() {
                c.error(
                    "sysext-writable",
                    v.span(),
                    format!("{key} `{}` is under /usr, which a merged sysext makes read-only; use a path under /opt or /var", v.get_ref()),
                );
            }
        }
    }
}

fn directories(c: &mut Checker) {
    let ro = c.p.family().read_only_usr();
    let family = c.p.family().as_str();
    let dirs = [
        ("bin_dir", c.p.doc.bin_dir.clone()),
        ("cni_bin_dir", c.p.doc.cni_bin_dir.clone()),
        ("flex_volume_dir", c.p.doc.flex_volume_dir.clone()),
    ];
    for (key, v) in dirs {
        let Some(v) = v else { continue };
        let path = v.get_ref();
        if !path.starts_with('/') || path.split('/').any(|s| s == "..") {
            c.error("path-absolute", v.span(), format!("{key} `{path}` must be an absolute path without `..`"));
            continue;
        }
        // Fedora CoreOS and Flatcar mount /usr read-only (kubeadm troubleshooting:
        // "/usr is mounted read-only on nodes"); the flex-volume dir must be writable.
        if ro && under_usr(path) {
            c.error(
                "read-only-usr",
                v.span(),
                format!("{key} `{path}` is under /usr, which is read-only on {family}; use a path under /opt or /var (default {})", default_for(key)),
            );
        }
    }
}

fn default_for(key: &str) -> &'static str {
    match key {
        "bin_dir" => crate::profile::DEFAULT_BIN_DIR,
        "cni_bin_dir" => crate::profile::DEFAULT_CNI_BIN_DIR,
        _ => crate::profile::DEFAULT_FLEX_VOLUME_DIR,
    }
}

/// Whether an absolute image path lies in `/usr`.
pub fn under_usr(path: &str) -> bool {
    let t = path.trim_start_matches('/');
    t == "usr" || t.starts_with("usr/")
}

fn artifacts(c: &mut Checker) {
    let p = c.p;
    let archs: Vec<Arch> = p.architectures();
    for required in ["kubeadm", "kubelet", "crictl"] {
        if !p.doc.artifacts.contains_key(required) {
            // kubeadm's preflight needs crictl (cri-tools) to talk to the runtime.
            c.error(
                "required-artifact",
                p.doc.name.span(),
                format!("no [artifacts.{required}]; an image needs kubeadm, kubelet and crictl (run `kiln pin` to fill a new entry's sha256)"),
            );
        }
    }
    for optional in ["kubectl", "cni-plugins"] {
        if !p.doc.artifacts.contains_key(optional) {
            c.warn(
                "recommended-artifact",
                p.doc.name.span(),
                format!("no [artifacts.{optional}]; nodes usually need it"),
            );
        }
    }
    // arch -> (span of the first artifact lacking it, artifact names)
    let mut missing: std::collections::BTreeMap<Arch, (Range<usize>, Vec<String>)> = Default::default();
    for (name, spec) in &p.doc.artifacts {
        let s = spec.get_ref();
        let url = s.url.get_ref();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            c.error(
                "url",
                s.url.span(),
                format!("artifact `{name}`: url must start with https:// (or http:// for a mirror)"),
            );
        }
        let mut rest = url.as_str();
        while let Some(i) = rest.find('{') {
            let tail = &rest[i..];
            let end = tail.find('}').map(|e| e + 1).unwrap_or(tail.len());
            let ph = &tail[..end];
            if !URL_PLACEHOLDERS.contains(&ph) {
                c.error(
                    "url",
                    s.url.span(),
                    format!("artifact `{name}`: unknown placeholder `{ph}`; use {}", URL_PLACEHOLDERS.join(", ")),
                );
            }
            rest = &tail[end..];
        }
        let pins = s.sha256.get_ref();
        for arch in &archs {
            // 32-bit arm is refused on its own; its missing pins would only repeat that.
            if *arch == Arch::Arm && p.version.at_least(1, 27) {
                continue;
            }
            if !pins.keys().any(|k| k.get_ref() == arch) {
                missing.entry(*arch).or_insert_with(|| (s.sha256.span(), Vec::new())).1.push(name.clone());
            }
        }
        for (arch, sha) in pins {
            if !is_sha256_hex(sha.get_ref()) {
                c.error(
                    "sha256",
                    sha.span(),
                    format!("artifact `{name}`: sha256.{} is not 64 hex digits", arch.get_ref()),
                );
            }
        }
        let distinct: std::collections::BTreeSet<_> = pins.values().map(|v| v.get_ref().to_ascii_lowercase()).collect();
        if distinct.len() > 1 && !url.contains("{arch}") && !url.contains("{uname_arch}") {
            c.error(
                "url",
                s.url.span(),
                format!("artifact `{name}`: pins differ per architecture but the url has no {{arch}}"),
            );
        }
        if let Some(m) = &s.mode {
            if crate::profile::parse_mode(m.get_ref()).is_none() {
                c.error(
                    "mode",
                    m.span(),
                    format!("artifact `{name}`: mode `{}` is not octal like \"0755\"", m.get_ref()),
                );
            }
        }
        if let Some(d) = &s.dest {
            let dest = d.get_ref();
            if !dest.starts_with('/') || dest.split('/').any(|x| x == "..") {
                c.error(
                    "path-absolute",
                    d.span(),
                    format!("artifact `{name}`: dest `{dest}` must be absolute without `..`"),
                );
            } else if p.family().read_only_usr() && under_usr(dest) {
                c.error(
                    "read-only-usr",
                    d.span(),
                    format!("artifact `{name}`: dest `{dest}` is under the read-only /usr of {}", p.family().as_str()),
                );
            }
        }
        if let Some(list) = &s.extract {
            if list.get_ref().is_empty() {
                c.error(
                    "extract",
                    list.span(),
                    format!("artifact `{name}`: extract is empty; list members or use [\"*\"]"),
                );
            }
        }
    }
    for (arch, (span, names)) in missing {
        c.error(
            "missing-pin",
            span,
            format!(
                "no sha256 for {arch}, which the profile builds, in artifact(s) {}; run `kiln pin --profile {}`",
                names.join(", "),
                p.path.display()
            ),
        );
    }
}

fn artifact_version(c: &mut Checker, name: &str) -> Option<Version> {
    let spec = c.p.doc.artifacts.get(name)?;
    match Version::parse(spec.get_ref().version.get_ref()) {
        Ok(v) => Some(v),
        Err(m) => {
            c.error("version", spec.get_ref().version.span(), format!("artifact `{name}`: {m}"));
            None
        }
    }
}

fn skew(c: &mut Checker) {
    let k8s = c.p.version.clone();
    // kubeadm create-cluster guide, "Version skew policy": kubeadm vX deploys a
    // control plane of vX or vX-1.
    if let Some(v) = artifact_version(c, "kubeadm") {
        let d = v.minor_delta(&k8s);
        if !(0..=1).contains(&d) {
            let span = c.p.doc.artifacts["kubeadm"].get_ref().version.span();
            c.error("skew-kubeadm", span, format!("kubeadm {v} cannot deploy a {k8s} control plane: kubeadm deploys its own minor version and the one before; use kubeadm v{}.{}.x", k8s.major, k8s.minor));
        }
    }
    // Version skew policy (kubernetes.io/releases/version-skew-policy, "kubelet"):
    // kubelet must not be newer than kube-apiserver and may be up to three minor
    // versions older (two before v1.28).
    if let Some(v) = artifact_version(c, "kubelet") {
        let d = k8s.minor_delta(&v);
        let oldest = if k8s.at_least(1, 28) { 3 } else { 2 };
        if !(0..=oldest).contains(&d) {
            let span = c.p.doc.artifacts["kubelet"].get_ref().version.span();
            let why = if d < 0 {
                "kubelet must not be newer than the control plane"
            } else {
                "kubelet is too old for this control plane"
            };
            c.error("skew-kubelet", span, format!("kubelet {v} with a {k8s} control plane: {why} (allowed: v1.{}..v1.{}); see the version skew policy", k8s.minor.saturating_sub(oldest as u64), k8s.minor));
        }
    }
    // Version skew policy, "kubectl": within one minor version of kube-apiserver.
    if let Some(v) = artifact_version(c, "kubectl") {
        if v.minor_delta(&k8s).abs() > 1 {
            let span = c.p.doc.artifacts["kubectl"].get_ref().version.span();
            c.error(
                "skew-kubectl",
                span,
                format!("kubectl {v} is more than one minor version from the {k8s} control plane"),
            );
        }
    }
}

fn runtime(c: &mut Checker) {
    let Some(rt) = c.p.doc.runtime.clone() else { return };
    let driver = c.p.cgroup_driver();
    // kubeadm troubleshooting: a kubelet/runtime cgroup driver mismatch makes
    // `kubeadm init` hang waiting for the control plane.
    if let Some(rd) = &rt.cgroup_driver {
        if *rd.get_ref() != driver && !rt.manage_config {
            c.error(
                "cgroup-driver",
                rd.span(),
                format!("the runtime uses the {} cgroup driver but kubelet is set to {}; make them equal, or set manage_config = true so kiln writes the runtime's config", rd.get_ref().as_str(), driver.as_str()),
            );
        }
    }
    if let Some(v) = &rt.config_version {
        if !matches!(v.get_ref(), 2 | 3) {
            c.error("runtime", v.span(), "config_version must be 2 (containerd 1.7 and 2.x) or 3 (containerd 2.x)");
        }
    }
    if rt.manage_config && *rt.name.get_ref() != crate::profile::RuntimeKind::Containerd {
        c.error(
            "runtime",
            rt.name.span(),
            "manage_config is supported for containerd only; configure CRI-O's cgroup_manager in an overlay",
        );
    }
}

/// `[sysctl]` entries. The three sysctls kubeadm's preflight checks
/// (`FileContentCheck` in `cmd/kubeadm/app/preflight/checks.go`, added by
/// `addIPv4Checks`/`addIPv6Checks` in `checks_linux.go`: `[ERROR
/// FileContent--proc-sys-net-ipv4-ip_forward]: ... contents are not set to 1`;
/// the bridge-nf-call ones up to kubeadm v1.29, kubernetes/kubernetes#123464)
/// may only be 1. sysctl(8) accepts `/` as the separator too, so
/// `net/ipv4/ip_forward` is the same key. A table value means an unquoted
/// dotted name (`net.ipv4.ip_forward = 1` inside `[sysctl]` is TOML for
/// nested tables), which would render as a broken sysctl.d line.
fn sysctls(c: &mut Checker) {
    for (key, value) in &c.p.doc.sysctl {
        let name = key.replace('/', ".");
        if let toml::Value::Table(_) | toml::Value::Array(_) = value.get_ref() {
            c.error(
                "sysctl-value",
                value.span(),
                format!("sysctl `{key}` has a table or array value; quote dotted names, e.g. \"{key}.…\" = \"1\""),
            );
            continue;
        }
        // One `key = value` line each in sysctl.d(5): no line breaks, no `=` or
        // blanks in names.
        let text = match value.get_ref() {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if key.is_empty()
            || key.chars().any(|ch| ch.is_whitespace() || ch.is_control() || ch == '=')
            || text.chars().any(char::is_control)
        {
            c.error(
                "sysctl-value",
                value.span(),
                format!("sysctl {:?} = {:?} would not be one sysctl.d line: names have no blanks or `=`, values no control characters", key, text),
            );
            continue;
        }
        if !REQUIRED_SYSCTLS.contains(&name.as_str()) {
            continue;
        }
        let is_one = match value.get_ref() {
            toml::Value::String(s) => s == "1",
            toml::Value::Integer(i) => *i == 1,
            _ => false,
        };
        if !is_one {
            let why = if name == "net.ipv4.ip_forward" {
                "kubeadm's preflight fails with [ERROR FileContent--proc-sys-net-ipv4-ip_forward] and the node would not forward pod traffic otherwise"
            } else {
                "kubeadm before v1.30 fails its preflight ([ERROR FileContent--proc-sys-net-bridge-...]) and bridged pod traffic bypasses iptables (Services, NetworkPolicy) otherwise"
            };
            c.error(
                "sysctl-required",
                value.span(),
                format!("sysctl {key} must be 1: {why}; remove this line (kiln already sets it to 1)"),
            );
        }
    }
}

fn kubelet_flags(c: &mut Checker) {
    let args = c.p.doc.kubelet.extra_args.clone();
    for a in &args {
        let flag = a.get_ref();
        // Removed from kubelet in v1.35 (kubernetes/kubernetes#133779): kubelet
        // exits with "unknown flag"; the runtime's sandbox image setting replaces it.
        if c.p.version.at_least(1, 35) && flag.starts_with("--pod-infra-container-image") {
            c.error("kubelet-flag-removed", a.span(), "--pod-infra-container-image was removed from kubelet in v1.35 and makes it exit; set the pause image in the runtime's config instead");
        }
        if !flag.starts_with("--") {
            c.error("kubelet-flag", a.span(), format!("`{flag}` is not a flag (expected --name=value)"));
        }
    }
}

/// Renders and overlays a tree for the first architecture (no artifacts) and
/// checks what only the merged tree shows.
fn image_tree(c: &mut Checker) {
    let Some(arch) = c.p.architectures().first().copied() else { return };
    let mut tree = Tree::new();
    if let Err(e) = render::render(c.p, arch, &mut tree) {
        c.report("render", e);
        return;
    }
    if let Err(e) = overlay::apply(c.p, &mut tree) {
        c.report("overlay", e);
        return;
    }
    if c.p.family().read_only_usr() {
        for (path, e) in tree.iter() {
            // Rendered paths are covered by the directory rules above.
            if under_usr(path) && matches!(e.origin, crate::tree::Origin::Overlay { .. }) {
                let span = c.p.doc.family.span();
                c.error(
                    "read-only-usr",
                    span,
                    format!(
                        "/{path} (from {}) is under /usr, which is read-only on {}; move it under /etc, /opt or /var",
                        e.origin,
                        c.p.family().as_str()
                    ),
                );
                break;
            }
        }
    }
    // An overlay's containerd config must agree with kubelet's cgroup driver.
    if let Some(e) = tree.get("/etc/containerd/config.toml") {
        if let Node::File(content) = &e.node {
            let text = match content {
                Content::Inline(b) => String::from_utf8_lossy(b).to_string(),
                Content::Disk { path, .. } => std::fs::read_to_string(path).unwrap_or_default(),
            };
            let systemd = text.lines().map(str::trim).find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == "SystemdCgroup").then(|| v.trim() == "true")
            });
            let want = c.p.cgroup_driver() == CgroupDriver::Systemd;
            if let Some(has) = systemd {
                if has != want {
                    let span = c.p.doc.cgroup_driver.as_ref().map(|d| d.span()).unwrap_or(c.p.doc.name.span());
                    c.error(
                        "cgroup-driver",
                        span,
                        format!("/etc/containerd/config.toml (from {}) sets SystemdCgroup = {has} but kubelet's cgroup driver is {}; kubeadm init would hang", e.origin, c.p.cgroup_driver().as_str()),
                    );
                }
            }
        }
    }
}
