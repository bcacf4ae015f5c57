//! kiln: build pinned, verified, reproducible Kubernetes node images.
//!
//! The data path: a [`profile::Profile`] is checked ([`check`]), its pinned
//! artifacts are fetched and verified into a content-addressed [`cache`]
//! ([`fetch`]), rendered files ([`render`]), artifacts and [`overlay`]s are
//! merged into an image [`tree`], and output writers ([`tarball`], compressed
//! on every core by [`pgzip`]) turn the tree into files, recorded in a
//! [`manifest`]. [`build`] drives it all.

pub mod build;
pub mod cache;
pub mod card;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod error;
pub mod fetch;
pub mod fleet;
pub mod hash;
pub mod ignition_image;
pub mod location;
pub mod manifest;
pub mod mirror;
pub mod overlay;
pub mod pgzip;
pub mod pin;
pub mod profile;
pub mod progress;
pub mod render;
pub mod squashfs_parallel;
pub mod staging;
pub mod sysext;
pub mod tarball;
pub mod tree;
pub mod userdata;
pub mod validate;
pub mod version;
