//! `[base_image]` in a profile: the pinned OS image a `--format card` build
//! starts from, an input like the artifacts. This module holds the profile's
//! description of it; [`crate::inputs::base_fetch`] fetches, verifies and
//! decompresses it in the fetch stage of `kiln build`, so the card writer only
//! reads the result.

use serde::Deserialize;
use toml::Spanned;

/// How the base image download is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// xz (Raspberry Pi OS, Ubuntu for Raspberry Pi).
    Xz,
    /// gzip.
    Gz,
    /// Zstandard.
    Zst,
    /// A raw image.
    None,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::Xz => "xz",
            Compression::Gz => "gzip",
            Compression::Zst => "zstd",
            Compression::None => "not compressed",
        })
    }
}

/// How the base image's OS applies a node's settings (hostname, admin user,
/// SSH keys, static address, Wi-Fi) that `kiln fleet` writes to the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Provisioning {
    /// cloud-init's NoCloud datasource reads `user-data`, `meta-data` and
    /// `network-config` from the boot partition (Raspberry Pi OS from the
    /// trixie images of October 2025, Ubuntu Server for Raspberry Pi).
    #[serde(rename = "cloud-init")]
    CloudInit,
    /// The OS applies none of them (Raspberry Pi OS bookworm and older):
    /// `kiln fleet check` refuses fleets for such a card.
    #[serde(rename = "none")]
    None,
}

/// `[base_image]`: the OS image a `--format card` build starts from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseImageSpec {
    /// Upstream release, substituted for `{version}` in the URL.
    pub version: Spanned<String>,
    /// Download URL (placeholder `{version}`).
    pub url: Spanned<String>,
    /// Compression of the download.
    pub compression: Spanned<Compression>,
    /// sha256 of the download, from upstream's published checksum.
    pub sha256: Spanned<String>,
    /// sha256 of the decompressed image, when upstream publishes it.
    pub image_sha256: Option<Spanned<String>>,
    /// MiB added to the root partition for the image tree (default: the
    /// tree's size plus a quarter, plus 64 MiB). The OS grows the partition to
    /// the whole card on first boot.
    pub root_grow_mib: Option<Spanned<u64>>,
    /// Largest decompressed image accepted, in MiB (default
    /// [`DEFAULT_MAX_IMAGE_MIB`]). Decoding also stops 64 MiB past the end of
    /// the last partition the image's own MBR names.
    pub max_image_mib: Option<Spanned<u64>>,
    /// Let `e2fsck -fy` repair a root filesystem that `e2fsck -fn` finds
    /// damaged (and print what it repaired); without it such a base image is
    /// an error.
    #[serde(default)]
    pub repair: Option<Spanned<bool>>,
    /// How the OS applies the card's per-node settings. With `"cloud-init"`
    /// the build checks that the boot partition carries cloud-init's NoCloud
    /// seed files (the image ships cloud-init).
    pub provisioning: Option<Spanned<Provisioning>>,
}

/// Default cap on the decompressed base image: 16 GiB (Raspberry Pi OS Lite
/// and Ubuntu Server for Raspberry Pi images are 3–4 GiB).
pub const DEFAULT_MAX_IMAGE_MIB: u64 = 16 << 10;

/// How far past the end of its last partition a base image may go (bytes).
pub const PAST_LAST_PARTITION: u64 = 64 << 20;

/// Name of the base image in fetch progress, errors and the manifest.
pub const ARTIFACT_NAME: &str = "base-image";
