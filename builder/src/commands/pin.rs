//! `kiln pin`: rewrites profiles' sha256 pins ([`crate::inputs::pin`]) and prints the diffs.

use crate::cli::PinArgs;
use crate::error::Result;
use crate::inputs::fetch::FetchOptions;
use crate::inputs::pin::{self, PinOptions};
use crate::progress::Progress;

/// Pins each profile in turn; a profile already current says so instead of a diff.
pub fn run(a: PinArgs, progress: &Progress) -> Result<()> {
    let opts = PinOptions {
        version: a.version,
        base_url: a.base_url,
        base_image: a.base_image,
        base_image_version: a.base_image_version,
        dry_run: a.dry_run,
        cni_manifest: a.cni_manifest,
        fetch: FetchOptions::default(),
        registry_mirror: a.registry_mirror,
    };
    for p in a.profiles.iter().chain(&a.profile_flags) {
        let d = pin::pin(p, &opts, progress)?;
        if d.is_empty() {
            progress.step(format!("{}: pins already current", p.display()));
        } else {
            print!("{d}");
        }
    }
    Ok(())
}
