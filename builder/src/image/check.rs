//! `kiln check`: rules a profile must pass before anything is fetched.
//!
//! Each rule cites where it comes from. Findings point at `file:line:col`.

use crate::error::{Error, Kind, Result};
use crate::hash::is_sha256_hex;
use crate::image::assemble::{assemble, Pins};
use crate::image::tree::{Content, Node, Origin, Tree};
use crate::inputs::profile::{Arch, CgroupDriver, Install, OutputFormat, Profile, REQUIRED_SYSCTLS, URL_PLACEHOLDERS};
use crate::inputs::version::{Version, VersionExt};
use crate::{image::render, inputs::overlay};
use std::ops::Range;

/// Findings are their own module so the rules in other stages
/// ([`crate::inputs::oci::check_profile`]) report them without using this one.
use crate::image::finding::{Finding, Severity};

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

/// Runs every rule on `profile` for building `formats`: the one function
/// both `kiln check` and `kiln build` call before anything is fetched.
///
/// Field allow-lists already ran when the profile was parsed
/// ([`Profile::parse`]); these are the rules across fields, then the image
/// tree assembled exactly as `kiln build` assembles it
/// ([`crate::image::assemble`]) with the pinned downloads as declared, so a path conflict, an
/// escaping overlay symlink or an overlay override of a pinned binary is
/// reported here too. The tree is assembled only when the rules found no
/// error, so one cause gives one error.
pub fn check_for(profile: &Profile, formats: &[OutputFormat]) -> Vec<Finding> {
    let mut c = Checker { p: profile, out: Vec::new() };
    if formats.contains(&OutputFormat::Sysext) {
        sysext_writable(&mut c);
    }
    architectures(&mut c);
    directories(&mut c);
    artifacts(&mut c);
    skew(&mut c);
    known_bad(&mut c);
    runtime(&mut c);
    sysctls(&mut c);
    kubelet_flags(&mut c);
    firstboot_name(&mut c);
    cni_manifest(&mut c);
    c.out.extend(cni_image_arch(profile));
    c.out.extend(crate::inputs::image_pins::check(profile));
    if !has_errors(&c.out) {
        image_tree(&mut c, formats);
    }
    c.out
}

/// Rules whose error means bytes did not match their pin (exit 3, as a
/// download that fails its sha256), not a wrong profile (exit 2).
pub const VERIFY_RULES: [&str; 1] = ["cni-manifest-sha256"];

/// The error kind of a failed check: [`Kind::Verify`] when a pinned file did
/// not match its pin ([`VERIFY_RULES`]), else [`Kind::Config`].
pub fn error_kind(findings: &[Finding]) -> Kind {
    let verify = findings.iter().any(|f| f.severity == Severity::Error && VERIFY_RULES.contains(&f.rule));
    if verify {
        Kind::Verify
    } else {
        Kind::Config
    }
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
        // Normalised when parsed (crate::inputs::validate::own_dir): no `.`, `..` or `//`.
        let path = v.get_ref();
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
        "bin_dir" => crate::inputs::profile::DEFAULT_BIN_DIR,
        "cni_bin_dir" => crate::inputs::profile::DEFAULT_CNI_BIN_DIR,
        _ => crate::inputs::profile::DEFAULT_FLEX_VOLUME_DIR,
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
        // Scheme, host, credentials and characters were checked when parsed (crate::inputs::validate::url).
        let url = s.url.get_ref();
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
        if let Some(d) = &s.dest {
            // Normalised when parsed (crate::inputs::validate::own_dir).
            let dest = d.get_ref();
            if p.family().read_only_usr() && under_usr(dest) {
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

/// A range of Kubernetes releases upstream told users to leave: every
/// `major.minor.patch` with `patch` in `first..=last` (pre-releases of them
/// too), `fixed` the first release without the problem.
pub struct KnownBad {
    /// Major and minor version.
    pub minor: (u64, u64),
    /// First and last bad patch release.
    pub patches: (u64, u64),
    /// The release to use instead.
    pub fixed: &'static str,
    /// What is wrong, with upstream's words and where they are.
    pub why: &'static str,
}

/// Known-bad Kubernetes releases, each from upstream's own CHANGELOG (kept
/// small: only what upstream announced as a vulnerability or regression with
/// affected and fixed versions).
pub const KNOWN_BAD: &[KnownBad] = &[
    // CHANGELOG/CHANGELOG-1.33.md, v1.33.4, "CVE-2025-5187: Nodes can delete
    // themselves by adding an OwnerReference": affected kube-apiserver v1.31.0 -
    // v1.31.11, v1.32.0 - v1.32.7, v1.33.0 - v1.33.3; fixed v1.31.12, v1.32.8, v1.33.4.
    KnownBad { minor: (1, 31), patches: (0, 11), fixed: "v1.31.12", why: CVE_2025_5187 },
    KnownBad { minor: (1, 32), patches: (0, 7), fixed: "v1.32.8", why: CVE_2025_5187 },
    // The same, and CHANGELOG-1.33.md v1.33.4 "Fixes a 1.33 regression that can
    // cause a nil panic in kube-scheduler" (kubernetes/kubernetes#133285).
    KnownBad {
        minor: (1, 33),
        patches: (0, 3),
        fixed: "v1.33.4",
        why: "CVE-2025-5187 (a compromised node can delete and recreate its Node object with other taints and labels; fixed in kube-apiserver v1.33.4) and a 1.33 regression that can make kube-scheduler panic (kubernetes/kubernetes#133285, fixed in v1.33.4)",
    },
];

const CVE_2025_5187: &str = "CVE-2025-5187: the NodeRestriction admission controller lets a node delete its own Node object through an OwnerReference, so a compromised node can recreate it with other taints and labels (CHANGELOG-1.33.md, v1.33.4)";

/// The release [`KNOWN_BAD`] lists `v` in, if any.
pub fn known_bad_release(v: &Version) -> Option<&'static KnownBad> {
    KNOWN_BAD.iter().find(|b| (v.major, v.minor) == b.minor && (b.patches.0..=b.patches.1).contains(&v.patch))
}

/// `kubernetes_version` (the control plane kubeadm deploys) is not a release
/// upstream told users to leave ([`KNOWN_BAD`]).
fn known_bad(c: &mut Checker) {
    let v = c.p.version.clone();
    if let Some(b) = known_bad_release(&v) {
        let span = c.p.doc.kubernetes_version.span();
        c.error(
            "known-bad-release",
            span,
            format!("Kubernetes {v} is a release to avoid: {}; use {} or later of v{}.{} (then `kiln pin` the artifacts again)", b.why, b.fixed, b.minor.0, b.minor.1),
        );
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
    if rt.manage_config && *rt.name.get_ref() != crate::inputs::profile::RuntimeKind::Containerd {
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
    // Names and values were checked when parsed (crate::inputs::validate::sysctl_name,
    // sysctl_value): each entry is one sysctl.d line.
    for (key, value) in &c.p.doc.sysctl {
        let name = key.replace('/', ".");
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
    }
}

/// `[cni_manifest]`: pinned (64 hex digits; `kiln pin` writes them); one
/// pinned by `path` is read and hashed here (a mismatch fails closed, exit 3)
/// and its pod CIDR held against `pod_subnet` ([`crate::inputs::cni_manifest::check`]);
/// one pinned by `url` is held against it when `kiln build` has fetched it
/// ([`cni_manifest_in_tree`]).
fn cni_manifest(c: &mut Checker) {
    let Some(spec) = c.p.doc.cni_manifest.clone() else { return };
    let spec = spec.into_inner();
    if !is_sha256_hex(spec.sha256.get_ref()) {
        c.error(
            "cni-manifest",
            spec.sha256.span(),
            format!(
                "cni_manifest: sha256 is not 64 hex digits; run `kiln pin --profile {}` to write it",
                c.p.path.display()
            ),
        );
        return;
    }
    match c.p.read_cni_manifest_file() {
        Ok(Some(bytes)) => {
            let span = spec.path.as_ref().map(|p| p.span()).unwrap_or(spec.sha256.span());
            manifest_findings(c, span, &String::from_utf8_lossy(&bytes));
        }
        Ok(None) => {}
        Err(e) => {
            let rule = if e.kind == Kind::Verify { "cni-manifest-sha256" } else { "cni-manifest" };
            c.report(rule, e);
        }
    }
}

/// What `kiln check` and `kiln build` hold the profile's CNI manifest to: its
/// pod CIDR (row 35) and its images pinned with their platforms (row 43).
fn manifest_findings(c: &mut Checker, span: Range<usize>, text: &str) {
    pod_subnet_findings(c, span.clone(), text);
    // Row 43: `cni-image-arch` checks only what `[cni_images]` records, so every
    // image the applied manifest names must be recorded (`kiln pin` resolves them).
    for image in crate::inputs::oci::manifest_images(text) {
        if !c.p.doc.cni_images.contains_key(&image) {
            c.error(
                "cni-image-pinned",
                span.clone(),
                format!(
                    "the CNI manifest names image `{image}`, which [cni_images] does not record, so its architectures are unchecked; run `kiln pin --profile {}` to resolve it",
                    c.p.path.display()
                ),
            );
        }
    }
}

fn pod_subnet_findings(c: &mut Checker, span: Range<usize>, text: &str) {
    let subnet = c.p.cni_pod_subnet();
    let span =
        c.p.doc.cni_manifest.as_ref().and_then(|m| m.get_ref().pod_subnet.as_ref()).map(|s| s.span()).unwrap_or(span);
    match crate::inputs::cni_manifest::check(text, &subnet) {
        Ok(found) if found.is_empty() => c.warn(
            "cni-pod-subnet",
            span,
            format!("the CNI manifest sets no pod CIDR kiln can read (flannel's \"Network\", Calico's CALICO_IPV4POOL_CIDR, Cilium's cluster-pool-ipv4-cidr, host-local's \"subnet\"); make sure its network is pod_subnet {subnet}"),
        ),
        Ok(_) => {}
        Err(errors) => {
            for e in errors {
                c.error("cni-pod-subnet", span.clone(), format!("CNI manifest {} {e}", crate::inputs::profile::CNI_MANIFEST_PATH));
            }
        }
    }
}

/// The CNI manifest in a built tree (fetched by URL or read from a path) held
/// against the profile's `pod_subnet`: `kiln build` calls it once the
/// downloads are in the tree. Errors name the profile's `file:line:col`.
pub fn cni_manifest_in_tree(profile: &Profile, tree: &Tree) -> Result<()> {
    let Some(spec) = &profile.doc.cni_manifest else { return Ok(()) };
    let Some(e) = tree.get(crate::inputs::profile::CNI_MANIFEST_PATH) else { return Ok(()) };
    let Node::File(content) = &e.node else { return Ok(()) };
    let text = match content {
        Content::Inline(b) => String::from_utf8_lossy(b).into_owned(),
        Content::Disk { path, .. } => String::from_utf8_lossy(
            &std::fs::read(path).map_err(|err| Error::build(format!("{}: {err}", path.display())))?,
        )
        .into_owned(),
        Content::Generated(_) => return Ok(()),
    };
    let mut c = Checker { p: profile, out: Vec::new() };
    manifest_findings(&mut c, spec.span(), &text);
    let errors: Vec<String> = c
        .out
        .into_iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("{} [{}]", f.message, f.rule))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::config(errors.join("\n")))
    }
}

/// kiln installs its own `kiln-firstboot` into the bin dir unless the profile
/// pins one as `[artifacts.kiln-firstboot]`; another artifact may not take its name.
fn firstboot_name(c: &mut Checker) {
    let p = c.p;
    if p.doc.artifacts.contains_key("kiln-firstboot") {
        return;
    }
    let Some(arch) = p.architectures().first().copied() else { return };
    let Ok(artifacts) = p.artifacts_for(arch) else { return };
    for a in artifacts {
        let clash = match &a.install {
            Install::File { name } => name == "kiln-firstboot",
            Install::Extract { members: Some(m) } => m.iter().any(|m| m == "kiln-firstboot"),
            Install::Extract { members: None } => false,
        };
        if clash && a.dest == p.bin_dir() {
            let span = p.doc.artifacts[&a.name].span();
            c.error(
                "firstboot-name",
                span,
                format!("artifact `{}` installs {}/kiln-firstboot, where kiln puts its first-boot agent; choose another file_name or dest, or pin the agent itself as [artifacts.kiln-firstboot]", a.name, a.dest),
            );
        }
    }
}

/// One loud warning per pinned file (a verified download or `kiln-firstboot`)
/// that an overlay replaced with `override = true`, located at the overlay's
/// entry in the profile. `kiln check` and `kiln build` print these; the full
/// list of overrides is [`Tree::overrides`].
pub fn override_warnings(profile: &Profile, tree: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for o in tree.overrides().iter().filter(|o| o.replaces_pinned()) {
        let Origin::Overlay { overlay, path } = &o.by else { continue };
        let span = profile.doc.overlays.iter().find(|e| e.get_ref() == overlay).map(|e| e.span());
        let msg = format!(
            "overlay `{overlay}` replaces {}, the pinned {}, with its own {path} (override = true): the image will not carry the verified file; remove `override` for it from overlays/{overlay}/{} unless that is what you want",
            o.path,
            o.replaced,
            overlay::MANIFEST
        );
        out.push(match span {
            Some(span) => profile.at(span, &msg),
            None => msg,
        });
    }
    out
}

/// The tree `kiln check` assembles for `arch` and `formats`: the one
/// assembly `kiln build` runs ([`assemble`]), with the pinned downloads as
/// the profile declares them ([`Pins::Declared`]).
pub fn tree(profile: &Profile, arch: Arch, formats: &[OutputFormat]) -> Result<Tree> {
    assemble(profile, arch, formats, Pins::Declared)
}

/// Assembles the tree for the first architecture as `kiln build` would
/// (the downloads as declared, [`tree`]) and checks what only the merged
/// tree shows.
fn image_tree(c: &mut Checker, formats: &[OutputFormat]) {
    let Some(arch) = c.p.architectures().first().copied() else { return };
    let p = c.p;
    let tree = match tree(p, arch, formats) {
        Ok(t) => t,
        Err(e) => {
            c.report("image-tree", e);
            return;
        }
    };
    for message in override_warnings(p, &tree) {
        c.out.push(Finding { severity: Severity::Warning, rule: "override", message });
    }
    if c.p.family().read_only_usr() {
        for (path, e) in tree.iter() {
            // Rendered paths are covered by the directory rules above.
            if under_usr(path) && matches!(e.origin, crate::image::tree::Origin::Overlay { .. }) {
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
    containerd_config(c, &tree);
}

/// `/etc/containerd/config.toml` in the assembled tree (kiln's or an
/// overlay's), read by containerd's rules ([`crate::image::containerd::read`]):
/// its runc `SystemdCgroup` must equal kubelet's cgroup driver (kubeadm
/// troubleshooting: a mismatch makes `kubeadm init` hang), a version-2 config
/// must not use version-3 tables (containerd 1.7 ignores them), and its sandbox
/// image should be kubeadm's pause image.
fn containerd_config(c: &mut Checker, tree: &Tree) {
    use crate::image::containerd;
    let Some(e) = tree.get("/etc/containerd/config.toml") else { return };
    let Node::File(content) = &e.node else { return };
    let (text, file) = match content {
        Content::Generated(_) => return,
        Content::Inline(b) => (String::from_utf8_lossy(b).to_string(), "/etc/containerd/config.toml".to_string()),
        Content::Disk { path, .. } => match std::fs::read_to_string(path) {
            Ok(t) => (t, path.display().to_string()),
            Err(err) => {
                let span = c.p.doc.name.span();
                c.error(
                    "containerd-config",
                    span,
                    format!("{}: {err}; make the overlay's containerd config a readable UTF-8 file", path.display()),
                );
                return;
            }
        },
    };
    let span = c.p.doc.cgroup_driver.as_ref().map(|d| d.span()).unwrap_or(c.p.doc.name.span());
    let eff = match containerd::read(&text) {
        Ok(eff) => eff,
        Err(m) => {
            c.error(
                "containerd-config",
                span,
                format!("{file}:{m} (from {}); containerd would not start with this config: fix the TOML", e.origin),
            );
            return;
        }
    };
    for table in &eff.misplaced {
        c.error(
            "containerd-config",
            span.clone(),
            format!("/etc/containerd/config.toml (from {}) is version {} but has plugins.\"{table}\", a version-3 table containerd 1.7 does not read; put the CRI settings under plugins.\"{}\" or set version = 3 (containerd 2.x only)", e.origin, eff.version, containerd::V2_CRI),
        );
    }
    let want = c.p.cgroup_driver() == CgroupDriver::Systemd;
    match eff.systemd_cgroup {
        Some(has) if has != want => c.error(
            "cgroup-driver",
            span,
            format!("/etc/containerd/config.toml (from {}) sets SystemdCgroup = {has} but kubelet's cgroup driver is {}; kubeadm init would hang", e.origin, c.p.cgroup_driver().as_str()),
        ),
        None if want => c.warn(
            "cgroup-driver",
            span,
            format!("/etc/containerd/config.toml (from {}) sets no SystemdCgroup for the runc runtime where containerd {} reads it, so containerd uses cgroupfs while kubelet uses systemd; set it to true", e.origin, eff.version),
        ),
        _ => {}
    }
    if let (Some(want), Some(has)) = (render::pause_image(c.p), eff.sandbox.as_deref()) {
        if want != has {
            let span = c.p.doc.name.span();
            c.warn(
                "sandbox-image",
                span,
                format!("/etc/containerd/config.toml (from {}) sets the sandbox image {has} but kubeadm {} uses {want}; kubeadm's preflight warns and pods wait on an image the node may not have: use {want}", e.origin, c.p.version),
            );
        }
    }
}

/// `kiln check`'s rule `cni-image-arch`: every image `[cni_images]` records
/// covers every architecture of the profile (a DaemonSet pod on a node whose
/// architecture its image lacks fails with `exec format error` or never
/// pulls, and the node stays NotReady).
fn cni_image_arch(p: &Profile) -> Vec<Finding> {
    let mut out = Vec::new();
    for (image, pinned) in &p.doc.cni_images {
        for arch in p.architectures() {
            if !crate::inputs::oci::covers(&pinned.get_ref().platforms, arch) {
                out.push(Finding {
                    severity: Severity::Error,
                    rule: "cni-image-arch",
                    message: crate::inputs::location::at(
                        &p.path,
                        &p.text,
                        Some(pinned.span()),
                        &format!(
                            "CNI image `{image}` has no linux/{arch} build (it has {}); the profile's {arch} nodes would stay NotReady: use a multi-arch image or drop {arch} from architectures",
                            pinned.get_ref().platforms.join(", ")
                        ),
                    ),
                });
            }
        }
    }
    out
}
