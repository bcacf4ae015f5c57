//! `kiln mirror`: fills a mirror directory ([`crate::inputs::mirror`], and
//! its images' OCI layout, [`crate::inputs::image_mirror`]) and prints what it did.

use crate::cli::MirrorArgs;
use crate::error::{Error, Result};
use crate::inputs::fetch::FetchOptions;
use crate::inputs::mirror::MirrorOptions;
use crate::inputs::profile::Profile;
use crate::progress::Progress;
use std::time::Duration;

/// Loads the profiles, fills the directory, prints the summary (a table,
/// or JSON with `--json`) on standard output.
pub fn run(a: MirrorArgs, progress: &Progress) -> Result<()> {
    let fetch = FetchOptions {
        mirror: a.mirror,
        attempts: a.attempts,
        timeout: Duration::from_secs(a.timeout),
        jobs: usize::from(a.jobs),
        registry_mirror: a.registry_mirror,
        ..FetchOptions::default()
    };
    let opts = MirrorOptions { out: a.out, archs: a.archs, cache_dir: a.cache, fetch };
    let profiles: Vec<Profile> = a.profiles.iter().map(|p| Profile::load(p)).collect::<Result<_>>()?;
    let report = crate::inputs::image_mirror::mirror_all(&profiles, &opts, progress)?;
    if a.json {
        let text = serde_json::to_string_pretty(&report.json()).map_err(|e| Error::build(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
