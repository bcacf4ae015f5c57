//! The profile's `images`: each entry `name:tag@sha256:<image index digest>`,
//! read by distribution/reference's grammar ([`ImagePin::parse`]), and the
//! rules `kiln check` holds them to ([`check`]): a digest on every entry, no
//! entry twice, every image kubeadm runs for `kubernetes_version`.
//!
//! The grammar is distribution/reference v0.6.0's (`regexp.go`, the module
//! containerd and kubeadm parse references with): a domain (`domainAndPort`),
//! path components (`pathComponent`: lowercase alphanumerics joined by `.`,
//! `_`, `__` or dashes), a tag (`[\w][\w.-]{0,127}`) and a digest, sha256 only,
//! lowercase hex (go-digest v1.0.0 `algorithm.go`: `^[a-f0-9]{64}$`). Names
//! must be canonical, as `reference.ParseNamed` requires (`normalize.go`,
//! `ErrNameNotCanonical`): the containerd CRI plugin looks images up by the
//! fully qualified name, so `docker.io/library/busybox:1`, never `busybox:1`.

use crate::image::finding::{Finding, Severity};
use crate::inputs::location;
use crate::inputs::oci::ImageRef;
use crate::inputs::profile::Profile;
use std::ops::Range;

/// distribution/reference `RepositoryNameTotalLengthMax`: the longest repository path.
pub const NAME_MAX: usize = 255;

/// One `images` entry, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePin {
    /// The fully qualified name (`registry.k8s.io/kube-apiserver`).
    pub name: String,
    /// The tag (`v1.34.2`).
    pub tag: String,
    /// `sha256:<64 hex>` of the image index, when pinned.
    pub digest: Option<String>,
    /// Registry and repository, as the distribution API addresses them.
    pub image: ImageRef,
}

impl ImagePin {
    /// Parses `name:tag[@sha256:<64 hex>]`; the error says what is wrong and how to write it.
    pub fn parse(s: &str) -> Result<ImagePin, String> {
        let bad = |why: &str| format!("image `{}` {why}", crate::inputs::validate::show(s).trim_matches('"'));
        let (named, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (s, None),
        };
        if let Some(d) = digest {
            let hex = d.strip_prefix("sha256:").ok_or_else(|| bad("has a digest that is not sha256:"))?;
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(bad("has a digest that is not sha256: and 64 lowercase hex digits"));
            }
        }
        let (name, tag) = match named.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t),
            _ => {
                return Err(bad(
                    "has no tag; write it as kubeadm names it, NAME:TAG (e.g. registry.k8s.io/pause:3.10.1)",
                ))
            }
        };
        if !is_tag(tag) {
            return Err(bad("has an invalid tag (distribution/reference: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127})"));
        }
        let (domain, path) = name.split_once('/').ok_or_else(|| bad(NOT_CANONICAL))?;
        if !is_domain(domain) {
            return Err(bad(NOT_CANONICAL));
        }
        if path.len() > NAME_MAX || !path.split('/').all(is_path_component) {
            return Err(bad(
                "has an invalid repository path (lowercase letters and digits, joined by `.`, `_`, `__` or `-`, at most 255 characters)",
            ));
        }
        if matches!(domain, "docker.io" | "index.docker.io") && (domain == "index.docker.io" || !path.contains('/')) {
            let p = if path.contains('/') { path.to_string() } else { format!("library/{path}") };
            return Err(bad(&format!("is not canonical: write docker.io/{p}:{tag}")));
        }
        let image = ImageRef::parse(&format!("{name}:{tag}"))?;
        Ok(ImagePin { name: name.to_string(), tag: tag.to_string(), digest: digest.map(str::to_string), image })
    }

    /// `name:tag`, as kubeadm and the baked archive name the image.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }

    /// `name:tag@digest` as the profile records it (`name:tag` when unpinned).
    pub fn pinned(&self) -> String {
        match &self.digest {
            Some(d) => format!("{}@{d}", self.reference()),
            None => self.reference(),
        }
    }
}

const NOT_CANONICAL: &str = "is not fully qualified: start it with its registry, e.g. registry.k8s.io/NAME:TAG or docker.io/library/NAME:TAG (containerd's CRI plugin looks images up by that name)";

/// distribution/reference `tag`.
fn is_tag(t: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    t.len() <= 128 && t.chars().next().is_some_and(word) && t.chars().all(|c| word(c) || c == '.' || c == '-')
}

/// distribution/reference `domainAndPort`: `localhost`, dotted `domainNameComponent`s
/// or a bracketed IPv6 address, then an optional `:port`. A first path element
/// without `.` or `:` that is not `localhost` is a Docker Hub path instead
/// (`splitDockerDomain`), so it is refused as not canonical.
fn is_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.ends_with(':') && (!h.starts_with('[') || h.ends_with(']')) => (h, Some(p)),
        _ => (d, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    let component = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !c.starts_with('-')
            && !c.ends_with('-')
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => !v6.is_empty() && v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
        None => host.split('.').all(component),
    };
    host_ok && (host == "localhost" || host.contains('.') || host.starts_with('[') || port.is_some())
}

/// distribution/reference `pathComponent`: `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
fn is_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        let sep = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let s = &c[sep..i];
        if !(s == "." || s == "_" || s == "__" || s.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
}

/// The images kubeadm runs for `kubernetes_version`, as `(name, tag)` in the
/// order `kubeadm config images list` prints them.
///
/// TODO(lead, issue 23): replace this body by helper `pins`'
/// `crate::inputs::kubeadm_images::kubeadm_images(version)` (C1), which cites
/// kubeadm's source and is checked against the real kubeadm. Until then the
/// values below are kubeadm's `cmd/kubeadm/app/constants/constants.go` at
/// v1.34.2 and v1.33.6 (`SupportedEtcdVersion`, `CoreDNSVersion`, `PauseVersion`).
pub fn kubeadm_list(kubernetes_version: &str) -> Result<Vec<(String, String)>, String> {
    let v = crate::inputs::version::kubernetes(kubernetes_version)?;
    let (etcd, coredns, pause) = match v.minor {
        34 => ("3.6.5-0", "v1.12.1", "3.10.1"),
        33 => ("3.5.24-0", "v1.12.0", "3.10"),
        m => {
            return Err(format!(
                "kiln does not know kubeadm's image list for v1.{m}; extend builder/src/inputs/kubeadm_images.rs"
            ))
        }
    };
    let k = v.to_string();
    let r = |n: &str, t: &str| (format!("registry.k8s.io/{n}"), t.to_string());
    Ok(vec![
        r("kube-apiserver", &k),
        r("kube-controller-manager", &k),
        r("kube-scheduler", &k),
        r("kube-proxy", &k),
        r("coredns/coredns", coredns),
        r("pause", pause),
        r("etcd", etcd),
    ])
}

/// The image a cluster without kube-proxy (node.toml `[cluster] kube_proxy =
/// false`) does not run: a profile may leave it out, with a warning.
pub const KUBE_PROXY: &str = "registry.k8s.io/kube-proxy";

/// `kiln check`'s image rules:
/// - `images-digest`: an entry without `@sha256:` (run `kiln pin`);
/// - `images-duplicate`: one `name:tag` twice;
/// - `images-kubeadm`: one of kubeadm's images for `kubernetes_version` missing
///   (a warning for kube-proxy, which a cluster may disable);
/// - `images-none`: no `images` at all (a warning: the node pulls them).
///
/// Entries that do not parse were refused when the profile was.
pub fn check(p: &Profile) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |severity, rule, span: Range<usize>, msg: String| {
        out.push(Finding { severity, rule, message: location::at(&p.path, &p.text, Some(span), &msg) })
    };
    let pin_hint = format!("run `kiln pin {}` to write the digests, then review the diff", p.path.display());
    let Some(list) = &p.doc.images else {
        push(
            Severity::Warning,
            "images-none",
            p.doc.kubernetes_version.span(),
            format!("the profile has no `images`, so its nodes pull kubeadm's images from the registry at first boot; add `images = []` and {pin_hint}"),
        );
        return out;
    };
    let mut seen: Vec<(String, Range<usize>)> = Vec::new();
    for e in list.get_ref() {
        let Ok(pin) = ImagePin::parse(e.get_ref()) else { continue };
        if pin.digest.is_none() {
            push(
                Severity::Error,
                "images-digest",
                e.span(),
                format!("image `{}` is not pinned by digest; {pin_hint}", pin.reference()),
            );
        }
        if let Some((_, first)) = seen.iter().find(|(r, _)| *r == pin.reference()) {
            let (line, _) = location::line_col(&p.text, first.start);
            push(
                Severity::Error,
                "images-duplicate",
                e.span(),
                format!("image `{}` is listed twice (first on line {line}); remove one", pin.reference()),
            );
        }
        seen.push((pin.reference(), e.span()));
    }
    match kubeadm_list(p.doc.kubernetes_version.get_ref()) {
        Ok(wanted) => {
            for (name, tag) in wanted {
                let r = format!("{name}:{tag}");
                if seen.iter().any(|(s, _)| *s == r) {
                    continue;
                }
                let (severity, why) = if name == KUBE_PROXY {
                    (Severity::Warning, "nodes whose cluster runs kube-proxy (node.toml `[cluster] kube_proxy`, default true) will pull it".to_string())
                } else {
                    (Severity::Error, "the node would pull it at first boot, or fail without a registry".to_string())
                };
                push(
                    severity,
                    "images-kubeadm",
                    list.span(),
                    format!("`images` lacks {r}, which kubeadm {} runs: {why}; {pin_hint} (it adds kubeadm's missing images)", p.doc.kubernetes_version.get_ref()),
                );
            }
        }
        Err(m) => push(Severity::Error, "images-kubeadm", p.doc.kubernetes_version.span(), m),
    }
    out
}

/// The profile's pinned images, in profile order (entries without a digest
/// are left out: `kiln check` refuses them before a build gets here).
pub fn pinned(p: &Profile) -> Vec<ImagePin> {
    let Some(list) = &p.doc.images else { return Vec::new() };
    list.get_ref().iter().filter_map(|e| ImagePin::parse(e.get_ref()).ok()).filter(|i| i.digest.is_some()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn canonical_references_parse() {
        let p = ImagePin::parse(&format!("registry.k8s.io/kube-apiserver:v1.34.2@{D}")).unwrap();
        assert_eq!(p.reference(), "registry.k8s.io/kube-apiserver:v1.34.2");
        assert_eq!(p.digest.as_deref(), Some(D));
        assert_eq!((p.image.registry.as_str(), p.image.repository.as_str()), ("registry.k8s.io", "kube-apiserver"));
        assert_eq!(p.pinned(), format!("registry.k8s.io/kube-apiserver:v1.34.2@{D}"));
        let c = ImagePin::parse("registry.k8s.io/coredns/coredns:v1.12.1").unwrap();
        assert_eq!((c.name.as_str(), c.tag.as_str(), c.digest), ("registry.k8s.io/coredns/coredns", "v1.12.1", None));
        for ok in [
            "127.0.0.1:5000/a/b_c__d.e---f:1",
            "localhost/x:y",
            "localhost:5000/x:y",
            "[::1]:5000/x:_y",
            "docker.io/library/busybox:1.36",
            "ghcr.io/flannel-io/flannel:v0.26.7",
        ] {
            assert!(ImagePin::parse(ok).is_ok(), "{ok}: {:?}", ImagePin::parse(ok));
        }
    }

    #[test]
    fn malformed_references_are_refused_with_the_fix() {
        let cases = [
            ("registry.k8s.io/pause", "has no tag"),
            ("pause:3.10", "not fully qualified"),
            ("kube/pause:3.10", "not fully qualified"),
            ("docker.io/busybox:1", "write docker.io/library/busybox:1"),
            ("index.docker.io/library/busybox:1", "write docker.io/library/busybox:1"),
            ("registry.k8s.io/Pause:1", "invalid repository path"),
            ("registry.k8s.io/a..b:1", "invalid repository path"),
            ("registry.k8s.io/-a:1", "invalid repository path"),
            ("registry.k8s.io/a/:1", "invalid repository path"),
            ("registry.k8s.io/a:.1", "invalid tag"),
            ("registry.k8s.io/a:1@sha512:abc", "not sha256"),
            ("registry.k8s.io/a:1@sha256:ABC", "64 lowercase hex"),
            ("-reg.io/a:1", "not fully qualified"),
            ("reg.io:x/a:1", "not fully qualified"),
            ("reg io/a:1", "not fully qualified"),
        ];
        for (s, want) in cases {
            let e = ImagePin::parse(s).unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
        let upper = format!("registry.k8s.io/a:1@{}", D.to_uppercase().replace("SHA256", "sha256"));
        assert!(ImagePin::parse(&upper).is_err());
        let long = format!("reg.io/{}:1", "a".repeat(256));
        assert!(ImagePin::parse(&long).unwrap_err().contains("at most 255"));
        assert!(ImagePin::parse(&format!("reg.io/a:{}", "t".repeat(129))).is_err());
    }

    #[test]
    fn kubeadm_lists_follow_the_minor() {
        let l = kubeadm_list("v1.34.2").unwrap();
        assert_eq!(l.len(), 7);
        assert_eq!(l[6], ("registry.k8s.io/etcd".to_string(), "3.6.5-0".to_string()));
        assert!(kubeadm_list("v1.31.0").unwrap_err().contains("kubeadm_images.rs"));
    }
}
