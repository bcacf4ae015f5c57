//! What a build starts from: the profile ([`profile`], parsed strictly with
//! `file:line:col` locations, [`location`], and values checked where they are
//! parsed, [`validate`], [`version`]), its overlays ([`overlay`]), and the
//! pinned artifacts, fetched and verified ([`fetch`]) into a content-addressed
//! [`cache`]; [`mirror`] fills a mirror directory with them and [`pin`]
//! rewrites a profile's pins from upstream's checksum files; [`cni_manifest`]
//! finds the pod CIDR a CNI manifest configures; [`base_image`] is the OS
//! image a card starts from, fetched with the artifacts and decompressed
//! ([`base_fetch`]); [`firstboot_bin`] is the `kiln-firstboot` a build installs.
//! The profile's container images: their pins ([`image_pins`], written by
//! [`image_pin`]) of the list kubeadm runs for a Kubernetes version
//! ([`kubeadm_images`]) and any extra ones, fetched by digest ([`images`], from
//! an [`image_source`]) into [`image_blobs`], mirrored as an OCI layout ([`image_mirror`]).

pub mod base_fetch;
pub mod base_image;
pub mod cache;
/// The CNI manifest pod-CIDR parser lives in kiln-firstboot, which checks it on the init node too.
pub use kiln_firstboot::contract::cni as cni_manifest;
pub mod fetch;
pub mod firstboot_bin;
pub mod image_blobs;
pub mod image_mirror;
pub mod image_pin;
pub mod image_pins;
pub mod image_ref;
pub mod image_source;
pub mod images;
pub mod kubeadm_images;
pub mod location;
pub mod mirror;
pub mod oci;
pub mod overlay;
pub mod pin;
pub mod profile;
pub mod validate;
pub mod version;
