//! `kiln flash`: a node's personalised card image written to SD cards (or
//! files) and read back ([`crate::fleet::flash`]), several cards at once or
//! card after card with `--prompt`.

use super::fleet::{load_bmap, open_image, personalise_all, provisioning};
use crate::cli::FlashArgs;
use crate::error::{Error, Result};
use crate::fleet::device::{self, Checks, Protected};
use crate::fleet::personalise::Personalised;
use crate::fleet::{flash, Fleet};
use crate::outputs::card::bmap::Bmap;
use crate::progress::Progress;
use std::fs::File;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

/// Runs `kiln flash`.
pub fn run(a: FlashArgs, progress: &Progress) -> Result<()> {
    let f = Fleet::load(&a.fleet)?;
    let image = a.image.clone().unwrap_or_else(|| f.image.clone());
    let nodes: Vec<String> = f.select(&a.nodes)?.iter().map(|n| n.name.clone()).collect();
    if a.prompt && a.devices.len() != 1 {
        return Err(Error::config("--prompt flashes card after card into one reader: give exactly one --device"));
    }
    if !a.prompt && nodes.len() != a.devices.len() {
        return Err(Error::config(format!(
            "{} nodes ({}) but {} devices: give one --device per node, or one --device with --prompt",
            nodes.len(),
            nodes.join(", "),
            a.devices.len()
        )));
    }
    open_image(&f, &image)?;
    if let Err(e) = provisioning(&f) {
        progress.warn(e.message);
    }
    let mut seen = std::collections::BTreeSet::new();
    for d in &a.devices {
        let key = std::fs::canonicalize(d).unwrap_or_else(|_| d.clone());
        if !seen.insert(key) {
            return Err(Error::config(format!("--device {} is given twice", d.display())));
        }
    }
    let bmap = load_bmap(&f, &image, progress)?;
    let ps = personalise_all(&f, &image, &nodes, progress)?;
    let required = &image_structures(&image, bmap.image_size)?;
    let checks = Checks { force: a.force };
    let mut protected = Protected::default();
    protected.file(&image, "the image being written");
    protected.file(&PathBuf::from(format!("{}.bmap", image.display())), "the image's .bmap");
    protected.file(&f.bmap, "the image's .bmap");
    protected.file(&f.image, "the fleet's image");
    protected.file(&a.fleet, "the fleet file");
    protected.dir(&f.cluster_dir, "the cluster directory");
    let protected = &protected;
    if a.prompt {
        let dev = &a.devices[0];
        let stdin = std::io::stdin();
        for (i, p) in ps.iter().enumerate() {
            eprint!(
                "kiln: insert the card for {} ({}/{}) as {} and press Enter (q to stop): ",
                p.node,
                i + 1,
                ps.len(),
                dev.display()
            );
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            if stdin.lock().read_line(&mut line).unwrap_or(0) == 0 || line.trim() == "q" {
                return Err(Error::config(format!("stopped before {}", p.node)));
            }
            let r = flash_one(&image, &bmap, p, required, dev, protected, checks, progress)?;
            progress.step(r.summary());
        }
        return Ok(());
    }
    // Open (and so check) every device before writing any.
    let mut targets = Vec::new();
    for d in &a.devices {
        targets.push(device::open(d, bmap.image_size, protected, checks)?);
    }
    let results: Vec<Result<flash::Report>> = std::thread::scope(|s| {
        let handles: Vec<_> = ps
            .iter()
            .zip(&targets)
            .map(|(p, t)| {
                let bar = progress.bar(&format!("{} → {}", p.node, t.path.display()), None);
                let bmap = &bmap;
                let image = &image;
                s.spawn(move || {
                    let plan = flash::plan(bmap, p, required);
                    let r = flash::flash(image, &plan, p, t, &bar);
                    bar.finish_and_clear();
                    r
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(Error::build("a flash thread panicked")))).collect()
    });
    let mut worst: Option<Error> = None;
    for r in results {
        match r {
            Ok(r) => progress.step(r.summary()),
            Err(e) => {
                if ps.len() > 1 {
                    for line in e.message.lines() {
                        eprintln!("kiln: error: {line}");
                    }
                }
                if worst.as_ref().is_none_or(|w| e.kind.exit_code() > w.kind.exit_code()) {
                    worst = Some(e);
                }
            }
        }
    }
    match worst {
        Some(e) if ps.len() == 1 => Err(e),
        Some(e) => Err(Error { kind: e.kind, message: "one or more cards failed (see above)".into() }),
        None => Ok(()),
    }
}

/// The byte spans the image's file systems need ([`crate::outputs::card::fsmap`]).
fn image_structures(image: &Path, size: u64) -> Result<Vec<(u64, u64)>> {
    let f = File::open(image).map_err(|e| Error::config(format!("{}: {e}", image.display())))?;
    crate::outputs::card::fsmap::required_spans(&f, size).map_err(|e| {
        Error::config(format!(
            "{}: {e}; its partition table or file systems are damaged — rebuild it with `kiln build --format card`",
            image.display()
        ))
    })
}

#[allow(clippy::too_many_arguments)]
fn flash_one(
    image: &Path,
    bmap: &Bmap,
    p: &Personalised,
    required: &[(u64, u64)],
    dev: &Path,
    protected: &Protected,
    checks: Checks,
    progress: &Progress,
) -> Result<flash::Report> {
    let t = device::open(dev, bmap.image_size, protected, checks)?;
    let bar = progress.bar(&format!("{} → {}", p.node, dev.display()), None);
    let plan = flash::plan(bmap, p, required);
    let r = flash::flash(image, &plan, p, &t, &bar);
    bar.finish_and_clear();
    if std::io::stderr().is_terminal() && r.is_ok() {
        progress.step(format!("{}: done; remove the card", dev.display()));
    }
    r
}
