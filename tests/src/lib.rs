//! Test support shared by kiln's suites: a real HTTP server on loopback that
//! serves a mirror directory (with faults on demand), and stand-in artifacts
//! of realistic size generated on the fly, the real containerd and the real
//! OCI registry (with a token server and a fault-injecting front) started in a
//! scratch directory.

pub mod containerd;
pub mod http;
pub mod imds;
pub mod mirror;
pub mod oci_images;
pub mod pi_image;
pub mod registry;
pub mod rng;
pub mod standin;
