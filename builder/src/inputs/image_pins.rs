//! The profile's `images`: each entry `name:tag@sha256:<image index digest>`
//! ([`crate::inputs::image_ref`], checked where the profile is parsed), and
//! the rules `kiln check` holds them to ([`check`]): a digest on every entry,
//! no entry twice, every image kubeadm runs for `kubernetes_version`.

use crate::image::finding::{Finding, Severity};
pub use crate::inputs::image_ref::ImagePin;
use crate::inputs::location;
use crate::inputs::profile::Profile;
use std::ops::Range;

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

    #[test]
    fn kubeadm_lists_follow_the_minor() {
        let l = kubeadm_list("v1.34.2").unwrap();
        assert_eq!(l.len(), 7);
        assert_eq!(l[6], ("registry.k8s.io/etcd".to_string(), "3.6.5-0".to_string()));
        assert!(kubeadm_list("v1.31.0").unwrap_err().contains("kubeadm_images.rs"));
    }
}
