//! The container images kubeadm runs for a Kubernetes version: the list
//! `kubeadm config images list --kubernetes-version V` prints with kiln's
//! configuration (the default image repository, local etcd, kube-proxy and
//! CoreDNS enabled), which a profile's `images` must pin.
//!
//! The list is a property of the kubeadm binary as much as of `V`: the tags of
//! etcd, CoreDNS and pause are constants compiled into kubeadm, and they change
//! between patch releases (kubeadm v1.34.0 names etcd `3.6.4-0`, v1.34.2 names
//! `3.6.5-0`). kiln installs kubeadm at the profile's `kubernetes_version`, so
//! the table below is keyed by that exact version, each row read from
//! k8s.io/kubernetes at that tag (the Go module, `go mod download
//! k8s.io/kubernetes@V`):
//!
//! - `cmd/kubeadm/app/images/images.go`, `GetControlPlaneImages`: the order
//!   kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy
//!   (unless `proxy.disabled`), CoreDNS (unless `dns.disabled`), pause, etcd
//!   (when etcd is local); `GetKubernetesImage` tags the first four with
//!   `util.KubernetesVersionToImageTag(V)` (`cmd/kubeadm/app/util/version.go`:
//!   every character outside `[-\w.]` becomes `_`, a no-op for the versions
//!   kiln accepts); `GetDNSImage` renames the default repository's CoreDNS to
//!   `registry.k8s.io/coredns/coredns`; `GetPauseImage` and `GetEtcdImage` use
//!   the default repository.
//! - `cmd/kubeadm/app/constants/constants.go`: `KubeAPIServer`,
//!   `KubeControllerManager`, `KubeScheduler`, `KubeProxy`, `Etcd`,
//!   `CoreDNSImageName`, `CoreDNSVersion`, `PauseVersion`, and
//!   `SupportedEtcdVersion[minor]` (`EtcdSupportedVersion`), whose values
//!   already carry the `-0` revision suffix of Kubernetes' etcd image tags.
//! - `cmd/kubeadm/app/apis/kubeadm/v1beta4/defaults.go`:
//!   `DefaultImageRepository = "registry.k8s.io"`.
//!
//! `builder/tests/kubeadm_images.rs` holds every row to the real kubeadm of
//! that version. Another version is refused, saying which file to extend: a
//! guessed tag would only fail later, on a node, as an image pull.

use crate::inputs::validate::show;
use crate::inputs::version::Version;

/// kubeadm's default image repository (`DefaultImageRepository`).
pub const REGISTRY: &str = "registry.k8s.io";

/// One image as kubeadm names it: repository and tag, no digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageName {
    /// The repository, registry included: `registry.k8s.io/kube-apiserver`.
    pub name: String,
    /// The tag: `v1.34.2`.
    pub tag: String,
}

impl ImageName {
    /// `name:tag`, as kubeadm prints it and as a profile's `images` entry starts.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }
}

/// The image tags compiled into one kubeadm release (`constants.go` at its tag).
struct Kubeadm {
    /// The release, which is also the Kubernetes version kiln lists for it.
    version: Version,
    /// `SupportedEtcdVersion[minor]`.
    etcd: &'static str,
    /// `CoreDNSVersion`.
    coredns: &'static str,
    /// `PauseVersion`.
    pause: &'static str,
}

/// One row per kubeadm release the shipped profiles use, read from
/// k8s.io/kubernetes at that tag (see the module documentation).
fn known() -> [Kubeadm; 2] {
    let v = |minor, patch| Version { major: 1, minor, patch, pre: String::new() };
    [
        // constants.go at v1.33.6: SupportedEtcdVersion[33] = "3.5.24-0",
        // CoreDNSVersion = "v1.12.0", PauseVersion = "3.10".
        Kubeadm { version: v(33, 6), etcd: "3.5.24-0", coredns: "v1.12.0", pause: "3.10" },
        // constants.go at v1.34.2: SupportedEtcdVersion[34] = "3.6.5-0",
        // CoreDNSVersion = "v1.12.1", PauseVersion = "3.10.1".
        Kubeadm { version: v(34, 2), etcd: "3.6.5-0", coredns: "v1.12.1", pause: "3.10.1" },
    ]
}

/// The Kubernetes versions kiln knows kubeadm's image list for, oldest first.
pub fn known_versions() -> Vec<String> {
    known().iter().map(|k| k.version.to_string()).collect()
}

/// The images kubeadm at `kubernetes_version` runs, in `kubeadm config images
/// list` order: kube-apiserver, kube-controller-manager, kube-scheduler,
/// kube-proxy, CoreDNS, pause, etcd.
///
/// Errors: a version that is not `vMAJOR.MINOR.PATCH`, or one whose kubeadm
/// kiln has not read (the message names the file to extend).
pub fn kubeadm_images(kubernetes_version: &str) -> Result<Vec<ImageName>, String> {
    let version = crate::inputs::version::kubernetes(kubernetes_version)?;
    let table = known();
    let Some(k) = table.iter().find(|k| k.version == version) else {
        return Err(format!(
            "kiln does not know the images kubeadm {} runs (it knows {}): read `SupportedEtcdVersion`, \
             `CoreDNSVersion` and `PauseVersion` in cmd/kubeadm/app/constants/constants.go of k8s.io/kubernetes \
             at {version}, add a row to builder/src/inputs/kubeadm_images.rs, and check it with \
             builder/tests/kubeadm_images.rs against that kubeadm",
            show(kubernetes_version),
            known_versions().join(", "),
        ));
    };
    let image = |name: &str, tag: &str| ImageName { name: format!("{REGISTRY}/{name}"), tag: tag.to_string() };
    // The four Kubernetes images carry the version itself: KubernetesVersionToImageTag
    // only rewrites characters the version parser has already refused.
    let tag = version.to_string();
    Ok(vec![
        image("kube-apiserver", &tag),
        image("kube-controller-manager", &tag),
        image("kube-scheduler", &tag),
        image("kube-proxy", &tag),
        image("coredns/coredns", k.coredns),
        image("pause", k.pause),
        image("etcd", k.etcd),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn references(v: &str) -> Vec<String> {
        kubeadm_images(v).unwrap_or_else(|e| panic!("{v}: {e}")).iter().map(ImageName::reference).collect()
    }

    #[test]
    fn v1_34_2_lists_kubeadms_seven_images_in_its_order() {
        assert_eq!(
            references("v1.34.2"),
            [
                "registry.k8s.io/kube-apiserver:v1.34.2",
                "registry.k8s.io/kube-controller-manager:v1.34.2",
                "registry.k8s.io/kube-scheduler:v1.34.2",
                "registry.k8s.io/kube-proxy:v1.34.2",
                "registry.k8s.io/coredns/coredns:v1.12.1",
                "registry.k8s.io/pause:3.10.1",
                "registry.k8s.io/etcd:3.6.5-0",
            ]
        );
    }

    #[test]
    fn v1_33_6_has_its_own_etcd_coredns_and_pause() {
        assert_eq!(
            references("v1.33.6"),
            [
                "registry.k8s.io/kube-apiserver:v1.33.6",
                "registry.k8s.io/kube-controller-manager:v1.33.6",
                "registry.k8s.io/kube-scheduler:v1.33.6",
                "registry.k8s.io/kube-proxy:v1.33.6",
                "registry.k8s.io/coredns/coredns:v1.12.0",
                "registry.k8s.io/pause:3.10",
                "registry.k8s.io/etcd:3.5.24-0",
            ]
        );
    }

    #[test]
    fn the_name_and_tag_make_the_reference() {
        let i = ImageName { name: "registry.k8s.io/pause".into(), tag: "3.10.1".into() };
        assert_eq!(i.reference(), "registry.k8s.io/pause:3.10.1");
    }

    #[test]
    fn a_version_kiln_has_not_read_is_refused_naming_the_file_to_extend() {
        // Another patch of a known minor too: its kubeadm may name another etcd.
        for v in ["v1.34.0", "v1.34.3", "v1.35.0", "v1.33.6-rc.0", "v2.34.2"] {
            let e = kubeadm_images(v).expect_err(v);
            assert!(e.contains("builder/src/inputs/kubeadm_images.rs"), "{v}: {e}");
            assert!(e.contains("constants.go") && e.contains("v1.33.6, v1.34.2"), "{v}: {e}");
            assert!(e.contains(&format!("\"{v}\"")), "{v}: {e}");
        }
    }

    #[test]
    fn a_malformed_version_is_refused_not_guessed() {
        for v in ["1.34.2", "v1.34", "", "v1.34.2\nregistry", "latest", "v1.34.2+k3s1"] {
            let e = kubeadm_images(v).expect_err(v);
            assert!(!e.contains('\n'), "a hostile value cannot add lines: {e:?}");
        }
    }

    #[test]
    fn the_pause_tag_is_the_sandbox_image_containerd_is_given() {
        // image::containerd keys kubeadm's pause image by minor for the
        // containerd config; both must name the same image, or the kubelet's
        // sandbox would be pulled although the profile pins kubeadm's.
        for k in known() {
            let images = kubeadm_images(&k.version.to_string()).unwrap();
            let pause = images.iter().find(|i| i.name == "registry.k8s.io/pause").expect("kubeadm lists pause");
            assert_eq!(
                crate::image::containerd::kubeadm_pause_image(k.version.major, k.version.minor),
                Some(pause.reference().as_str()),
                "{}",
                k.version
            );
        }
    }
}
