//! One image reference as the profile's `images` write it,
//! `name:tag[@sha256:<image index digest>]`, read by distribution/reference's
//! grammar ([`ImagePin::parse`]).
//!
//! The grammar is distribution/reference v0.6.0's (`regexp.go`, the module
//! containerd and kubeadm parse references with): a domain (`domainAndPort`),
//! path components (`pathComponent`: lowercase alphanumerics joined by `.`,
//! `_`, `__` or dashes), a tag (`[\w][\w.-]{0,127}`) and a digest, sha256 only,
//! lowercase hex (go-digest v1.0.0 `algorithm.go`: `^[a-f0-9]{64}$`). Names
//! must be canonical, as `reference.ParseNamed` requires (`normalize.go`,
//! `ErrNameNotCanonical`): the containerd CRI plugin looks images up by the
//! fully qualified name, so `docker.io/library/busybox:1`, never `busybox:1`;
//! the registry is then the name's first element and the repository the rest.

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
    /// The registry host (`registry.k8s.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// The repository on it (`kube-apiserver`, `coredns/coredns`).
    pub repository: String,
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
        Ok(ImagePin {
            name: name.to_string(),
            tag: tag.to_string(),
            digest: digest.map(str::to_string),
            registry: domain.to_string(),
            repository: path.to_string(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn canonical_references_parse() {
        let p = ImagePin::parse(&format!("registry.k8s.io/kube-apiserver:v1.34.2@{D}")).unwrap();
        assert_eq!(p.reference(), "registry.k8s.io/kube-apiserver:v1.34.2");
        assert_eq!(p.digest.as_deref(), Some(D));
        assert_eq!((p.registry.as_str(), p.repository.as_str()), ("registry.k8s.io", "kube-apiserver"));
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
}
