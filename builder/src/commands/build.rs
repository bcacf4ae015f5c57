//! `kiln build`: options from the command line, then [`crate::build::build`]
//! for each profile.

use crate::build::{self, BuildOptions};
use crate::cli::BuildArgs;
use crate::error::{Error, Result};
use crate::inputs::fetch::{FetchOptions, Mirror};
use crate::inputs::profile::Profile;
use crate::progress::Progress;
use std::path::PathBuf;
use std::time::Duration;

/// `kiln build`: every profile is read (and their names compared) before
/// anything is built; with `--json` one report object goes to stdout whether
/// the build succeeded or not.
pub fn run(a: BuildArgs, progress: &Progress) -> Result<()> {
    let opts = options(&a);
    let mut reports = Vec::new();
    let result = load_profiles(&a.profiles, &a.profile_flags, progress).and_then(|profiles| {
        for profile in &profiles {
            reports.push(build::build(profile, &opts, progress)?);
        }
        Ok(())
    });
    if a.json {
        let error =
            result.as_ref().err().map(|e| serde_json::json!({ "message": e.message, "exit_code": e.kind.exit_code() }));
        let doc = serde_json::json!({ "ok": result.is_ok(), "profiles": reports, "error": error });
        println!("{}", serde_json::to_string_pretty(&doc).map_err(|e| Error::build(e.to_string()))?);
    }
    result
}

/// The build's options: the fetch policy and the output choices, with
/// counts of at least one.
fn options(a: &BuildArgs) -> BuildOptions {
    let fetch = FetchOptions {
        mirror: a.mirror.as_deref().map(Mirror::parse),
        offline: a.offline,
        attempts: a.attempts.max(1),
        timeout: Duration::from_secs(a.timeout.max(1)),
        jobs: a.jobs.max(1),
        registry_mirror: a.registry_mirror.clone(),
        ..FetchOptions::default()
    };
    BuildOptions {
        cache_dir: a.cache.clone(),
        fetch,
        archs: a.archs.clone(),
        firstboot_bins: a.firstboot_bins.clone(),
        force: a.force,
        formats: a.formats.clone(),
        ignition_mode: a.ignition_mode,
        ignition_version: a.ignition_version.clone(),
        base_url: a.base_url.clone(),
        gzip_level: a.gzip_level,
        zstd_level: a.zstd_level,
        ..BuildOptions::new(a.out.clone())
    }
}

/// Loads every profile named (positionally or with `--profile`): one named
/// twice is built once (with a warning); two with the same `name` are refused,
/// as their outputs would overwrite each other.
fn load_profiles(paths: &[PathBuf], flags: &[PathBuf], progress: &Progress) -> Result<Vec<Profile>> {
    let mut profiles: Vec<Profile> = Vec::new();
    for p in paths.iter().chain(flags) {
        let profile = Profile::load(p)?;
        let same_file =
            |q: &Profile| std::fs::canonicalize(&q.path).ok().is_some_and(|c| std::fs::canonicalize(p).ok() == Some(c));
        if profiles.iter().any(same_file) {
            progress.warn(format!("{} is named twice; building it once", p.display()));
            continue;
        }
        if let Some(twin) = profiles.iter().find(|q| q.name() == profile.name()) {
            return Err(Error::config(format!(
                "{} and {} are both name = \"{}\": their outputs would overwrite each other; give each profile its own `name`",
                twin.path.display(),
                profile.path.display(),
                profile.name()
            )));
        }
        profiles.push(profile);
    }
    Ok(profiles)
}
