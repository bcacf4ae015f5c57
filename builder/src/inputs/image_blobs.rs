//! The blobs of one pinned container image for one architecture, fetched and verified by digest
//! (`crate::inputs::images`) and read by the writers (`crate::outputs::oci_layout`).

use std::path::PathBuf;

/// One verified blob in the cache: its bytes hash to `digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:<64 hex>`.
    pub digest: String,
    /// Its media type, as the descriptor that named it says.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// The verified file in the cache.
    pub path: PathBuf,
}

/// One image, pinned by its index digest, with the blobs one architecture needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedImage {
    /// `name:tag` as the profile and kubeadm name it.
    pub reference: String,
    /// The image index (or manifest list) the pin names.
    pub index: Blob,
    /// That architecture's image manifest.
    pub manifest: Blob,
    /// The manifest's config blob.
    pub config: Blob,
    /// The manifest's layers, in order.
    pub layers: Vec<Blob>,
}
