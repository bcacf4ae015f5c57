//! The contract between the builder (`kiln`) and `kiln-firstboot`: what the
//! builder writes into an image or user-data and first boot reads back. The
//! builder imports nothing of this crate outside this module (a test in
//! `builder/tests/firstboot_contract.rs` holds it to that).
//!
//! * [`node`]: `node.toml`, the per-node description (`kiln userdata`, `kiln cluster`);
//! * [`image`]: `/etc/kiln/image.toml`, the defaults `kiln build` bakes into an image;
//! * [`unit`](mod@unit): the systemd units that start first boot and `approve-csrs`;
//! * [`cni`]: the pod CIDR a CNI manifest configures, held against `pod_subnet`;
//! * [`validate`]: the rules first boot checks values against, which the builder
//!   checks the same values against at build time.

pub mod cni;
pub mod image;
pub mod node;
pub mod unit;

/// The validation topics the builder uses too, so `kiln` refuses at build time
/// what a node would refuse at first boot (versions and their skew, the API
/// server endpoint, token TTLs, the admin user name).
pub mod validate {
    pub use crate::validate::{duration, endpoint, names, version};
}
