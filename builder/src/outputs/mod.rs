//! Writers of the image tree: the overlay tarball ([`tarball`], gzip on every
//! core by [`pgzip`], or zstd), the systemd-sysext image ([`sysext`], blocks
//! compressed ahead by [`squashfs_parallel`]), the Ignition image config
//! ([`ignition_image`]), the Raspberry Pi card ([`card`]); and how they land:
//! in a staging directory committed as one generation ([`staging`]), recorded
//! in `manifest.json` and `SHA256SUMS` ([`manifest`]). [`writers`] makes each
//! format a writer of the assembled tree with one signature. The profile's
//! container images travel in every format as one OCI image archive
//! ([`oci_layout`]), a tree entry streamed from the cache as it is written.

pub mod card;
pub mod ignition_image;
pub mod manifest;
pub mod oci_layout;
pub mod pgzip;
pub mod squashfs_parallel;
pub mod staging;
pub mod sysext;
pub mod tarball;
pub mod writers;
