//! `kiln check`: every profile's findings ([`crate::image::check`]), as
//! lines on standard error or one JSON list on standard output.

use crate::cli::CheckArgs;
use crate::error::{Error, Kind, Result};
use crate::image::check;
use crate::image::finding::{Finding, Severity};
use crate::inputs::profile::Profile;
use crate::progress::Progress;

/// Checks each profile (a profile that does not parse is one `parse`
/// finding); fails with exit 2, or 3 when a pinned file did not match its
/// pin, once every profile has been reported.
pub fn run(a: CheckArgs, progress: &Progress) -> Result<()> {
    let mut failed = false;
    let mut kind = Kind::Config;
    let mut json = Vec::new();
    for p in &a.profiles {
        let (findings, name) = match Profile::load(p) {
            Ok(profile) => (check::check(&profile), profile.name().to_string()),
            Err(e) => (
                vec![Finding { severity: Severity::Error, rule: "parse", message: e.message }],
                p.display().to_string(),
            ),
        };
        failed |= check::has_errors(&findings);
        if check::error_kind(&findings) == Kind::Verify {
            kind = Kind::Verify;
        }
        if a.json {
            json.push(serde_json::json!({ "profile": name, "path": p, "ok": !check::has_errors(&findings), "findings": findings }));
        } else {
            for f in &findings {
                let sev = if f.severity == Severity::Error { "error" } else { "warning" };
                eprintln!("kiln: {sev}: {} [{}]", f.message, f.rule);
            }
            if !check::has_errors(&findings) {
                progress.step(format!("{}: ok ({name})", p.display()));
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json).map_err(|e| Error::build(e.to_string()))?);
    }
    if failed {
        // Findings are already printed; exit 2 (3: a pinned file did not
        // match its pin) without repeating them.
        return Err(Error { kind, message: "profile check failed".into() });
    }
    Ok(())
}
