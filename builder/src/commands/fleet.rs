//! `kiln fleet check|images`: a fleet file checked and listed, or one
//! personalised card image per node ([`crate::fleet`]); and the card-image
//! helpers `kiln flash` shares.

use crate::cli::FleetCommand;
use crate::error::{Error, Result};
use crate::fleet::personalise::{self, Personalised};
use crate::fleet::{images, Fleet};
use crate::outputs::card::bmap::{self, Bmap};
use crate::progress::{human_bytes, Progress};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Runs a `kiln fleet` subcommand.
pub fn run(cmd: FleetCommand, progress: &Progress) -> Result<()> {
    match cmd {
        FleetCommand::Check { fleet } => {
            let f = Fleet::load(&fleet)?;
            for w in &f.warnings {
                progress.warn(w.trim_start_matches("warning: "));
            }
            for n in &f.nodes {
                println!(
                    "{:<20} {:<14} {:<22} {}{}{}",
                    n.name,
                    n.role.as_str(),
                    n.address.map(|a| a.to_string()).unwrap_or_else(|| "dhcp".into()),
                    if n.role.is_control_plane() { "ca-keys " } else { "" },
                    n.admin_user
                        .as_ref()
                        .map(|u| format!("user={u}({} keys) ", n.ssh_authorized_keys.len()))
                        .unwrap_or_default(),
                    n.wifi.as_ref().map(|w| format!("wifi={}", w.ssid)).unwrap_or_default(),
                );
            }
            match provisioning(&f)? {
                Some(line) => progress.step(line),
                None => progress.warn(format!(
                    "{}: the card image is not built yet, so how its OS applies the node files is unchecked",
                    f.image.display()
                )),
            }
            progress.step(format!("{}: ok ({} nodes)", fleet.display(), f.nodes.len()));
            Ok(())
        }
        FleetCommand::Images { fleet, out, nodes } => {
            let f = Fleet::load(&fleet)?;
            open_image(&f, &f.image)?;
            if let Err(e) = provisioning(&f) {
                progress.warn(e.message);
            }
            let t0 = Instant::now();
            let ps = personalise_all(&f, &f.image, &nodes, progress)?;
            let base_map = load_bmap(&f, &f.image, progress)?;
            let bar = progress.bar("images", Some(ps.len() as u64));
            let written = images::write_images(&f.image, &base_map, &out, &ps, &|w| {
                bar.inc(1);
                progress.detail(format!(
                    "{}: {} ({}, {} personalised)",
                    w.node,
                    w.path.display(),
                    w.copy.as_str(),
                    human_bytes(w.delta)
                ));
            })?;
            bar.finish_and_clear();
            let kind = written.first().map(|w| w.copy.as_str()).unwrap_or("none");
            progress.step(format!(
                "wrote {} images to {} in {:.2} s ({kind}; each differs from the base in at most {})",
                written.len(),
                out.display(),
                t0.elapsed().as_secs_f64(),
                human_bytes(written.iter().map(|w| w.delta).max().unwrap_or(0))
            ));
            Ok(())
        }
    }
}

/// Loads the image's `.bmap`, or maps the image when there is none.
pub fn load_bmap(fleet: &Fleet, image: &Path, progress: &Progress) -> Result<Bmap> {
    let explicit = fleet.image != image;
    let path = if explicit { PathBuf::from(format!("{}.bmap", image.display())) } else { fleet.bmap.clone() };
    match std::fs::read_to_string(&path) {
        Ok(xml) => Bmap::parse(&xml).map_err(|e| e.context(path.display())),
        Err(_) => {
            progress.warn(format!(
                "{} not found; mapping the image now (build it with `kiln build --format card`)",
                path.display()
            ));
            bmap::create(image)
        }
    }
}

/// Opens the card image for reading: a regular file (opened non-blocking, so
/// a FIFO or device given as the image cannot hang the command), or exit 2
/// naming how to build it.
pub fn open_image(fleet: &Fleet, image: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(image)
        .map_err(|e| {
            Error::config(format!(
                "{}: {e}; the card image {} is not built — build it with `kiln build PROFILE --format card` (PROFILE: the profile it comes from, e.g. profiles/rpi-raspios-1.34.toml), or fix `image` in {}",
                image.display(),
                image.display(),
                fleet.path.display()
            ))
        })?;
    match f.metadata() {
        Ok(m) if m.is_file() => Ok(f),
        _ => Err(Error::config(format!(
            "{} is not a regular file (a FIFO, directory or device?); give the card image `kiln build --format card` wrote",
            image.display()
        ))),
    }
}

/// How the card's OS applies the node files kiln writes: `Ok(Some(line))`
/// naming the mechanism, `Ok(None)` when the image is not built yet, or an
/// error (exit 2) when its boot partition has no cloud-init NoCloud seed —
/// the OS would ignore the hostname, user, keys, address and Wi-Fi.
pub fn provisioning(fleet: &Fleet) -> Result<Option<String>> {
    if !fleet.image.exists() {
        return Ok(None);
    }
    let f = open_image(fleet, &fleet.image)?;
    let part = personalise::boot_partition(&f, &fleet.image)?;
    if crate::outputs::card::bootfs::has_cloud_init_seed(&fleet.image, part.offset, part.len)? {
        Ok(Some(format!(
            "provisioning: cloud-init NoCloud on the card's boot partition (kiln writes user-data, meta-data, network-config there; {} ships the seed files, so its OS runs cloud-init)",
            fleet.image.display()
        )))
    } else {
        Err(Error::config(format!(
            "{}: the card's boot partition has no cloud-init NoCloud seed (user-data, meta-data), so its OS does not run cloud-init (Raspberry Pi OS before trixie?): the hostname, admin user, SSH keys, static address and Wi-Fi kiln writes would be ignored. Build the card from a profile whose [base_image] ships cloud-init (provisioning = \"cloud-init\", e.g. profiles/rpi-raspios-1.34.toml)",
            fleet.image.display()
        )))
    }
}

/// Personalises the image for each node `names` selects, logging the size of each overlay.
pub fn personalise_all(
    fleet: &Fleet,
    image: &Path,
    names: &[String],
    progress: &Progress,
) -> Result<Vec<Personalised>> {
    let cluster = fleet.cluster()?;
    let base = open_image(fleet, image)?;
    let mut out = Vec::new();
    for n in fleet.select(names)? {
        let p = personalise::personalise(&base, image, &cluster, n)?;
        progress.detail(format!(
            "{}: {} personalised blocks ({})",
            n.name,
            p.blocks.len(),
            human_bytes(p.delta_bytes())
        ));
        out.push(p);
    }
    Ok(out)
}
