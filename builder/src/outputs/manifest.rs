//! `manifest.json` (what is inside every output, and where it came from) and `SHA256SUMS`.
//!
//! One output directory may hold several profiles' images: the manifest keeps
//! one section per profile and `SHA256SUMS` lists every output it knows.

use crate::error::{Error, Result};
use crate::outputs::tarball::FileRecord;
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
    /// Per architecture, the image archive baked into every output and the
    /// images in it with their digests, when the profile pins images.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, crate::outputs::oci_layout::ImagesSection>,
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
    let intact =
        |o: &Output| crate::io::hash_regular(&dir.join(&o.file)).is_ok_and(|(n, h)| n == o.size && h == o.sha256);
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
/// their outputs, which are carried over from `dir`, except that a profile
/// whose outputs are no longer all in `dir` (size checked) is dropped from the
/// manifest, so `SHA256SUMS` never lists a file that is not there or not what
/// it says.
///
/// An output file name another profile already lists with other bytes is
/// refused (a usage error): replacing the file would break that profile's
/// other outputs, e.g. its Ignition config's `verification.hash` of it.
pub fn merge(previous: Manifest, dir: &Path, name: &str, section: ProfileSection) -> Result<Merged> {
    let own: BTreeMap<&str, &str> = section.outputs.iter().map(|o| (o.file.as_str(), o.sha256.as_str())).collect();
    if let Some(clash) = collisions(&previous, name, &section).into_iter().next() {
        return Err(Error::config(format!("{}: {clash}", dir.display())));
    }
    let mut manifest = Manifest::default();
    let mut carried: Vec<String> = Vec::new();
    let mut warnings = Vec::new();
    for (other, sec) in previous.profiles {
        if other == name {
            continue;
        }
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
    Ok(Merged { manifest, carried, warnings })
}

/// Every output of `section` (profile `name`) that another profile in `man`
/// lists under the same file name with other bytes, as one sentence each
/// saying what to do.
pub fn collisions(man: &Manifest, name: &str, section: &ProfileSection) -> Vec<String> {
    let mut out = Vec::new();
    for o in &section.outputs {
        for (other, sec) in man.profiles.iter().filter(|(n, _)| n.as_str() != name) {
            if let Some(theirs) = sec.outputs.iter().find(|t| t.file == o.file && t.sha256 != o.sha256) {
                out.push(format!(
                    "{} would be written by {name} with sha256 {}, but it is an output of {other} with sha256 {} (which {other}'s other outputs, such as its Ignition config, name); one output directory holds one file per name: build {name} into another --out, or remove {other}'s outputs from this one",
                    o.file, o.sha256, theirs.sha256
                ));
            }
        }
    }
    out
}

/// Files of `dir` that an Ignition output of `section` downloads from
/// `base_url` with a `verification.hash` the file in `dir` does not have
/// (`FILE: why`). Files it names that are not in `dir` are not checked here.
pub fn ignition_mismatches(dir: &Path, section: &ProfileSection, base_url: &str) -> Vec<String> {
    let base = base_url.trim_end_matches('/');
    let mut bad = Vec::new();
    for o in section.outputs.iter().filter(|o| o.format == "ignition") {
        let Some(doc) =
            std::fs::read(dir.join(&o.file)).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        else {
            bad.push(format!("{}: not readable as JSON", o.file));
            continue;
        };
        let files = doc["storage"]["files"].as_array().cloned().unwrap_or_default();
        for f in &files {
            let (Some(source), Some(hash)) =
                (f["contents"]["source"].as_str(), f["contents"]["verification"]["hash"].as_str())
            else {
                continue;
            };
            let Some(file) = source.strip_prefix(base).and_then(|r| r.strip_prefix('/')).filter(|r| !r.contains('/'))
            else {
                continue;
            };
            let Some(want) = hash.strip_prefix("sha256-") else { continue };
            let got = crate::io::hash_regular(&dir.join(file));
            match got {
                Ok((_, h)) if h == want => {}
                Ok((_, h)) => bad.push(format!("{file}: {} expects sha256 {want}, the file has {h}", o.file)),
                Err(e) => bad.push(format!("{file}: {} downloads it: {e}", o.file)),
            }
        }
    }
    bad
}

/// Writes `text` to `path` (used for staging files before they are renamed).
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    // 0666 narrowed by the umask: the mode `fs::write` gives.
    crate::io::write_atomic(path, text.as_bytes(), 0o666)
}
