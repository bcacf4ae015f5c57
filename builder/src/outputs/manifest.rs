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
    /// Per architecture, every image path an overlay replaced with `override = true`
    /// (`path`, `replaced`, `by`): a pinned binary swapped for an overlay file is on
    /// record, not only in the build's warnings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, Vec<serde_json::Value>>,
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

/// Whether every output of `section` is in `dir` with its recorded size and
/// sha256 (content, not only sizes), and `SHA256SUMS` says what `man` says.
pub fn outputs_present(dir: &Path, man: &Manifest, section: &ProfileSection) -> bool {
    let intact = |o: &Output| {
        crate::fetch::open_regular(&dir.join(&o.file))
            .and_then(|mut f| crate::hash::copy_hashed(&mut f, &mut std::io::sink(), |_| {}))
            .is_ok_and(|(n, h)| n == o.size && h == o.sha256)
    };
    section.outputs.iter().all(intact) && std::fs::read_to_string(dir.join(SUMS_NAME)).is_ok_and(|t| t == man.sums())
}

/// The manifest after a build of profile `name`, merged into the current one
/// (`previous`, read from `dir` under the commit lock).
#[derive(Debug, Clone)]
pub struct Merged {
    /// The new manifest.
    pub manifest: Manifest,
    /// Other profiles' outputs to carry into the new generation from `dir`.
    pub carried: Vec<String>,
    /// What was dropped and why, for the build's log.
    pub warnings: Vec<String>,
}

/// Merges `section` (profile `name`) into `previous`. Other profiles keep
/// their outputs, which are carried over from `dir`, except:
/// an output this build replaces with other bytes (same file name) leaves
/// that profile's list, and a profile whose outputs are no longer all in
/// `dir` (size checked) is dropped from the manifest, so `SHA256SUMS` never
/// lists a file that is not there or not what it says.
pub fn merge(previous: Manifest, dir: &Path, name: &str, section: ProfileSection) -> Merged {
    let own: BTreeMap<&str, &str> = section.outputs.iter().map(|o| (o.file.as_str(), o.sha256.as_str())).collect();
    let mut manifest = Manifest::default();
    let mut carried: Vec<String> = Vec::new();
    let mut warnings = Vec::new();
    for (other, mut sec) in previous.profiles {
        if other == name {
            continue;
        }
        sec.outputs.retain(|o| match own.get(o.file.as_str()) {
            Some(sha) if *sha != o.sha256 => {
                warnings.push(format!(
                    "{} was an output of {other}; it now holds {name}'s build (build {other} into another --out if both are needed)",
                    o.file
                ));
                false
            }
            _ => true,
        });
        let missing: Vec<&str> = sec
            .outputs
            .iter()
            .filter(|o| !own.contains_key(o.file.as_str()))
            .filter(|o| !std::fs::symlink_metadata(dir.join(&o.file)).is_ok_and(|m| m.is_file() && m.len() == o.size))
            .map(|o| o.file.as_str())
            .collect();
        if !missing.is_empty() {
            warnings.push(format!(
                "{other} dropped from the manifest: {} missing or changed in {}; build {other} again",
                missing.join(", "),
                dir.display()
            ));
            continue;
        }
        for o in &sec.outputs {
            if !own.contains_key(o.file.as_str()) && !carried.contains(&o.file) {
                carried.push(o.file.clone());
            }
        }
        manifest.profiles.insert(other, sec);
    }
    manifest.profiles.insert(name.to_string(), section);
    Merged { manifest, carried, warnings }
}

/// Writes `text` to `path` (used for staging files before they are renamed).
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).io_ctx(path.display())
}
