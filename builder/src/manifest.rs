//! `manifest.json` (what is inside every output, and where it came from) and `SHA256SUMS`.
//!
//! One output directory may hold several profiles' images: the manifest keeps
//! one section per profile and `SHA256SUMS` lists every output it knows.

use crate::error::{Error, IoContext, Result};
use crate::tarball::FileRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// File name of the manifest in the output directory.
pub const MANIFEST_NAME: &str = "manifest.json";
/// File name of the checksum list in the output directory.
pub const SUMS_NAME: &str = "SHA256SUMS";

/// One file kiln wrote to the output directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// File name inside the output directory.
    pub file: String,
    /// Output format (`tar`).
    pub format: String,
    /// Architecture.
    pub arch: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the file.
    pub sha256: String,
}

/// Everything one profile's build produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileSection {
    /// kiln version that built it.
    pub kiln_version: String,
    /// sha256 over every input (profile, overlays, firstboot binary, epoch, options):
    /// equal fingerprints mean a rebuild would write the same bytes.
    pub inputs_sha256: String,
    /// Kubernetes version targeted.
    pub kubernetes_version: String,
    /// The mtime of every entry.
    pub epoch: u64,
    /// Files written to the output directory.
    pub outputs: Vec<Output>,
    /// The image tree per architecture.
    pub trees: BTreeMap<String, Vec<serde_json::Value>>,
}

/// The whole manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Sections by profile name.
    pub profiles: BTreeMap<String, ProfileSection>,
}

impl Manifest {
    /// Reads `dir/manifest.json`; a missing or unreadable one is empty.
    pub fn read(dir: &Path) -> Manifest {
        std::fs::read_to_string(dir.join(MANIFEST_NAME))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Pretty JSON with a trailing newline (stable key order).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map(|s| s + "\n")
            .map_err(|e| Error::build(format!("serialising manifest: {e}")))
    }

    /// `SHA256SUMS` text: `<hex>  <file>` for every output, sorted by file name.
    pub fn sums(&self) -> String {
        let mut lines: Vec<(String, String)> =
            self.profiles.values().flat_map(|p| p.outputs.iter().map(|o| (o.file.clone(), o.sha256.clone()))).collect();
        lines.sort();
        lines.dedup();
        lines.into_iter().map(|(f, h)| format!("{h}  {f}\n")).collect()
    }
}

/// Converts tree records to JSON values for the manifest.
pub fn records_json(records: &[FileRecord]) -> Result<Vec<serde_json::Value>> {
    records.iter().map(|r| serde_json::to_value(r).map_err(|e| Error::build(e.to_string()))).collect()
}

/// Whether every output of `section` exists in `dir` with its recorded size.
pub fn outputs_present(dir: &Path, section: &ProfileSection) -> bool {
    section.outputs.iter().all(|o| std::fs::metadata(dir.join(&o.file)).map(|m| m.len() == o.size).unwrap_or(false))
        && dir.join(SUMS_NAME).is_file()
}

/// Writes `text` to `path` (used for staging files before they are renamed).
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).io_ctx(path.display())
}
