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
/// order `kubeadm config images list` prints them
/// ([`crate::inputs::kubeadm_images::kubeadm_images`], which cites kubeadm's
/// source and is held against the real kubeadm).
pub fn kubeadm_list(kubernetes_version: &str) -> Result<Vec<(String, String)>, String> {
    Ok(crate::inputs::kubeadm_images::kubeadm_images(kubernetes_version)?
        .into_iter()
        .map(|i| (i.name, i.tag))
        .collect())
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
        assert!(kubeadm_list("v1.31.0").unwrap_err().contains("kubeadm_images"));
    }
}
