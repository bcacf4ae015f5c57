//! The container images an image carries (issue 23): `image.toml`'s `images`, each
//! `name:tag@sha256:<image index digest>`, in the OCI archive at `images_archive`,
//! imported into containerd's `k8s.io` namespace before kubeadm runs, so a node with
//! no route to a registry pulls nothing.
//!
//! * [`pins`] checks the list where it is read (a malformed entry is the image's
//!   fault: the node does not resolve);
//! * [`ctr`] asks containerd, through its own `ctr`, which images it holds;
//! * [`import`] is the `import-images` step, and what `plan` and `doctor` say.

pub mod ctr;
pub mod import;
pub mod subset;

use crate::contract::node::Role;

/// containerd's namespace for the CRI plugin's images (`constants.K8sContainerdNamespace`,
/// containerd v2.1.5 `internal/cri/constants/constants.go`): where the kubelet looks.
pub const NAMESPACE: &str = "k8s.io";

/// The label the CRI plugin reports as an image's `pinned` (containerd v2.1.5
/// `internal/cri/labels/labels.go` `PinnedImageLabelKey`/`PinnedImageLabelValue`, read
/// by `internal/cri/store/image/image.go` `getImage`, returned by
/// `internal/cri/server/images/image_status.go`): the kubelet's image garbage
/// collector never removes a pinned image (`pkg/kubelet/images/image_gc_manager.go`).
pub const PINNED_LABEL: &str = "io.cri-containerd.pinned=pinned";

/// The longest repository name a reference may have
/// (`RepositoryNameTotalLengthMax`, github.com/distribution/reference v0.6.0 reference.go).
const NAME_MAX: usize = 255;

/// One baked image: the reference kubeadm and the kubelet use, and the digest of
/// the image index the profile pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// `name:tag`, e.g. `registry.k8s.io/pause:3.10.1`.
    pub reference: String,
    /// `sha256:<64 lowercase hex>`.
    pub digest: String,
}

impl Pin {
    /// `name@sha256:…`: the digest reference a pull also leaves, from which the CRI
    /// plugin takes an image's repo digests (containerd v2.1.5 `internal/cri/util`
    /// `ParseImageReferences`; without it `crictl images --digests` shows `<none>`).
    pub fn digest_reference(&self) -> String {
        let name = self.reference.rsplit_once(':').map_or(self.reference.as_str(), |(n, _)| n);
        format!("{name}@{}", self.digest)
    }
}

/// The images kubeadm runs only on a control plane, by the last element of their
/// repository, whatever the registry: the static pods' images
/// (k8s.io/kubernetes v1.34.2 `cmd/kubeadm/app/images/images.go`: `GetKubernetesImage`
/// names kube-apiserver, kube-controller-manager and kube-scheduler
/// `<imageRepository>/<component>`, `GetEtcdImage` `<imageRepository>/etcd`), whose
/// manifests only `kubeadm init` (`cmd/phases/init/controlplane.go`, `etcd.go`) and
/// `kubeadm join --control-plane` (`cmd/phases/join/controlplaneprepare.go`,
/// `controlplanejoin.go`) write.
pub const CONTROL_PLANE_ONLY: [&str; 4] = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"];

/// Whether a node of `role` runs the image `reference` (`name:tag`) names: a worker
/// runs none of [`CONTROL_PLANE_ONLY`]; every other image (pause, kube-proxy,
/// CoreDNS, a CNI's) may run on any node.
pub fn runs_on(reference: &str, role: Role) -> bool {
    let name = reference.rsplit_once(':').filter(|(_, t)| !t.contains('/')).map_or(reference, |(n, _)| n);
    let last = name.rsplit('/').next().unwrap_or(name);
    role != Role::Join || !CONTROL_PLANE_ONLY.contains(&last)
}

/// The `name:tag@sha256:<64 hex>` entries of `image.toml`'s `images`, checked against
/// the reference grammar (github.com/distribution/reference v0.6.0 regexp.go: name
/// components `[a-z0-9]` with `.`, `_`, `-` separators, a domain that may carry
/// upper case and a port, a tag `[\w][\w.-]{0,127}`), with no duplicate reference.
/// What passes is safe as one `ctr` argument and inside a `name==` filter.
pub fn pins(list: &[String]) -> Result<Vec<Pin>, String> {
    let mut out: Vec<Pin> = Vec::new();
    for entry in list {
        let pin = pin(entry).map_err(|e| {
            format!(
                "/etc/kiln/image.toml images: {}: {e}; rebuild the image with `kiln build`",
                crate::validate::quote(entry)
            )
        })?;
        if out.iter().any(|p| p.reference == pin.reference) {
            return Err(format!(
                "/etc/kiln/image.toml images: {} is listed twice; rebuild the image with `kiln build`",
                pin.reference
            ));
        }
        out.push(pin);
    }
    Ok(out)
}

fn pin(entry: &str) -> Result<Pin, String> {
    let (reference, hex) =
        entry.split_once("@sha256:").ok_or("not `name:tag@sha256:<64 hex>` (no `@sha256:` digest)")?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err("the digest is not 64 lowercase hex digits".into());
    }
    let (name, tag) = match reference.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => return Err("no tag (`name:tag`)".into()),
    };
    let tag_ok = tag.len() <= 128
        && tag.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !tag_ok {
        return Err(format!("tag {tag:?} is not `[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}`"));
    }
    name_ok(name)?;
    Ok(Pin { reference: reference.to_string(), digest: format!("sha256:{hex}") })
}

/// A repository name: an optional domain (with a port) and path components.
fn name_ok(name: &str) -> Result<(), String> {
    let mut parts: Vec<&str> = name.split('/').collect();
    let domain = parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost");
    if domain {
        let (host, port) = parts[0].split_once(':').unwrap_or((parts[0], ""));
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !host.split('.').all(label_ok) || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("registry {:?} is not a host name with an optional port", parts[0]));
        }
        parts.remove(0);
    }
    let path_len: usize = parts.iter().map(|p| p.len() + 1).sum::<usize>().saturating_sub(1);
    if path_len > NAME_MAX {
        return Err(format!("the repository name is longer than {NAME_MAX} characters"));
    }
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        !b.is_empty()
            && b.first().is_some_and(alnum)
            && b.last().is_some_and(alnum)
            && b.iter().all(|x| alnum(x) || b"._-".contains(x))
            && !c.contains("..")
            && !c.contains("___")
    };
    match parts.iter().find(|c| !component_ok(c)) {
        Some(c) => {
            Err(format!("path component {c:?} is not lowercase letters and digits joined by `.`, `_`, `__` or `-`"))
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_worker_runs_no_control_plane_image_whatever_the_registry() {
        for r in ["registry.k8s.io/kube-apiserver:v1.34.2", "mirror.example:5000/k8s/etcd:3.6.5-0", "kube-scheduler:v1"]
        {
            assert!(!runs_on(r, Role::Join) && runs_on(r, Role::Init) && runs_on(r, Role::ControlPlane), "{r}");
        }
        for r in [
            "registry.k8s.io/pause:3.10.1",
            "registry.k8s.io/coredns/coredns:v1.12.1",
            "localhost:5000/kube-proxy:v1",
            "ghcr.io/x/etcd-operator:1",
        ] {
            assert!(runs_on(r, Role::Join), "{r}");
        }
    }

    #[test]
    fn kubeadms_references_pass() {
        let list: Vec<String> = [
            "registry.k8s.io/kube-apiserver:v1.34.2",
            "registry.k8s.io/coredns/coredns:v1.12.1",
            "registry.k8s.io/etcd:3.6.5-0",
            "localhost:5000/pause:3.10.1",
            "ghcr.io/flannel-io/flannel_cni-plugin:v1.7.1-flannel1",
        ]
        .iter()
        .map(|r| format!("{r}@sha256:{D}"))
        .collect();
        let p = pins(&list).unwrap();
        assert_eq!(p[1].reference, "registry.k8s.io/coredns/coredns:v1.12.1");
        assert_eq!(p[1].digest, format!("sha256:{D}"));
        assert_eq!(p[3].digest_reference(), format!("localhost:5000/pause@sha256:{D}"));
    }

    #[test]
    fn malformed_entries_are_refused_with_the_rule() {
        for (entry, want) in [
            ("registry.k8s.io/pause:3.10.1".to_string(), "no `@sha256:`"),
            (format!("registry.k8s.io/pause:3.10.1@sha256:{}", &D[..63]), "64 lowercase hex"),
            (format!("registry.k8s.io/pause:3.10.1@sha256:{}", D.to_uppercase()), "64 lowercase hex"),
            (format!("registry.k8s.io/pause@sha256:{D}"), "no tag"),
            (format!("localhost:5000/pause@sha256:{D}"), "no tag"),
            (format!("registry.k8s.io/Pause:3.10@sha256:{D}"), "path component"),
            (format!("-x/pause:1@sha256:{D}"), "path component"),
            (format!("registry.k8s.io/pause:-1@sha256:{D}"), "tag"),
            (format!("registry.k8s.io/pause:a,b@sha256:{D}"), "tag"),
            (format!("reg istry.io/pause:1@sha256:{D}"), "registry"),
            (format!("registry.k8s.io/{}:1@sha256:{D}", "a".repeat(256)), "longer than 255"),
        ] {
            let e = pins(std::slice::from_ref(&entry)).unwrap_err();
            assert!(e.contains(want) && e.contains("kiln build"), "{entry}: {e}");
        }
        let twice = vec![format!("registry.k8s.io/pause:3.10.1@sha256:{D}"); 2];
        assert!(pins(&twice).unwrap_err().contains("listed twice"));
    }
}
