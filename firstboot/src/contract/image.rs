//! `/etc/kiln/image.toml`: the defaults baked into an image by `kiln build`.
//!
//! Every key here is a fact about the image (what was installed and where),
//! never about a particular machine or cluster; those arrive in user-data.

use serde::{Deserialize, Serialize};

/// Where the baked defaults live inside an image.
pub const IMAGE_TOML_PATH: &str = "/etc/kiln/image.toml";

/// The schema version of [`ImageDefaults`]; bumped on incompatible change.
pub const IMAGE_SCHEMA: u32 = 1;

/// The image's baked defaults, written by the builder and read at first boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDefaults {
    /// Schema version; see [`IMAGE_SCHEMA`].
    pub schema: u32,
    /// Name of the profile the image was built from.
    pub profile: String,
    /// Distro family (`fcos`, `flatcar`, `debian`, `generic`).
    pub family: String,
    /// Architecture in Kubernetes spelling (`amd64`, `arm64`).
    pub arch: String,
    /// Control-plane Kubernetes version the image targets, e.g. `v1.34.2`.
    pub kubernetes_version: String,
    /// Version of the baked kubeadm binary.
    pub kubeadm_version: String,
    /// Version of the baked kubelet binary.
    pub kubelet_version: String,
    /// Directory holding kubeadm, kubelet, kubectl and crictl.
    pub bin_dir: String,
    /// Directory holding the CNI plugins.
    pub cni_bin_dir: String,
    /// Writable flex-volume plugin directory for kubelet and controller-manager.
    pub flex_volume_dir: String,
    /// Container runtime name (`containerd`, `crio`).
    pub runtime: String,
    /// CRI socket as kubeadm's `criSocket` expects it (`unix:///…`).
    pub runtime_socket: String,
    /// cgroup driver shared by kubelet and the runtime (`systemd`, `cgroupfs`).
    pub cgroup_driver: String,
    /// The baked OCI image archive (absolute path on the node), when the image carries its cluster's
    /// container images (`images` in the profile); imported into containerd before kubeadm runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_archive: Option<String>,
    /// The images in that archive, each `name:tag@sha256:<image index digest>`, in profile order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

impl ImageDefaults {
    /// Parses `image.toml` text strictly (unknown keys are errors).
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Renders the defaults as TOML, keys in declaration order.
    pub fn to_toml(&self) -> String {
        // Serialising a struct of plain strings and integers cannot fail.
        let body = toml::to_string(self).unwrap_or_default();
        format!("# Written by kiln build; read by kiln-firstboot. Do not edit on a node.\n{body}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ImageDefaults {
        ImageDefaults {
            schema: IMAGE_SCHEMA,
            profile: "fcos-1.34".into(),
            family: "fcos".into(),
            arch: "amd64".into(),
            kubernetes_version: "v1.34.2".into(),
            kubeadm_version: "v1.34.2".into(),
            kubelet_version: "v1.34.2".into(),
            bin_dir: "/opt/bin".into(),
            cni_bin_dir: "/opt/cni/bin".into(),
            flex_volume_dir: "/opt/libexec/kubernetes/kubelet-plugins/volume/exec/".into(),
            runtime: "containerd".into(),
            runtime_socket: "unix:///run/containerd/containerd.sock".into(),
            cgroup_driver: "systemd".into(),
            images_archive: None,
            images: Vec::new(),
        }
    }

    #[test]
    fn round_trips_through_toml() {
        let d = sample();
        assert_eq!(ImageDefaults::from_toml(&d.to_toml()).unwrap(), d);
    }

    #[test]
    fn images_round_trip_and_are_left_out_when_none() {
        assert!(!sample().to_toml().contains("images"));
        let mut d = sample();
        d.images_archive = Some("/opt/kiln/images/images.oci.tar".into());
        d.images = vec![format!("registry.k8s.io/pause:3.10.1@sha256:{}", "a".repeat(64))];
        let text = d.to_toml();
        assert!(text.contains("images_archive = \"/opt/kiln/images/images.oci.tar\""), "{text}");
        assert_eq!(ImageDefaults::from_toml(&text).unwrap(), d);
    }

    #[test]
    fn rejects_unknown_keys() {
        let text = format!("{}bogus = 1\n", sample().to_toml());
        let err = ImageDefaults::from_toml(&text).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
