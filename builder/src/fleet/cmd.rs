//! `kiln fleet check|images` and `kiln flash`: arguments and drivers.

use crate::error::{Error, Result};
use crate::fleet::device::{self, Checks, Protected};
use crate::fleet::personalise::{self, Personalised};
use crate::fleet::{flash, images, Fleet};
use crate::outputs::card::bmap::{self, Bmap};
use crate::progress::{human_bytes, Progress};
use std::fs::File;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `kiln fleet` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// Check a fleet file: names, roles, addresses, keys, ranges, the cluster.
    #[command(after_help = "Example:
  kiln fleet check fleet.toml

Prints one line per node. Every error is one `file:line:col: message` line.
Exit codes: 0 ok (warnings allowed), 2 the fleet file has errors.")]
    Check {
        /// The fleet file.
        #[arg(value_name = "FLEET.toml")]
        fleet: PathBuf,
    },
    /// Write one personalised card image per node (for other flashing tools).
    #[command(after_help = "Examples:
  kiln fleet images fleet.toml --out dist/cards
  kiln fleet images fleet.toml --node 'pi-[03:05]' --out dist/cards

Writes <out>/<node>.img: a reflink of the base image where the filesystem
supports it (btrfs, XFS), else a sparse copy, with the node's files in its FAT
boot partition; and <out>/<node>.img.bmap beside it, so
`bmaptool copy <out>/<node>.img /dev/sdX` writes only what matters. The images
hold the nodes' secrets: they are written 0600.
Exit codes: 0 ok, 1 a write failed, 2 usage or fleet error.")]
    Images {
        /// The fleet file.
        #[arg(value_name = "FLEET.toml")]
        fleet: PathBuf,
        /// Output directory.
        #[arg(long, short, default_value = "dist/cards", value_name = "DIR")]
        out: PathBuf,
        /// Only these nodes (names or ranges like `pi-[03:05]`; repeatable).
        #[arg(long = "node", value_name = "NAME")]
        nodes: Vec<String>,
    },
}

/// `kiln flash` arguments.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  kiln flash fleet.toml --node pi-01 --device /dev/sdb
  kiln flash fleet.toml --node 'pi-[02:04]' --device /dev/sdb --device /dev/sdc --device /dev/sdd
  kiln flash fleet.toml --node 'pi-[05:20]' --device /dev/sdb --prompt     # one reader, card after card
  kiln flash fleet.toml --node pi-07 --device pi-07.img                    # a regular file works too

Writes only the image's mapped ranges (its .bmap) and the node's personalised
blocks, then reads everything back bypassing the page cache and compares sha256
per range, then re-reads the personalised files from the card's FAT partition.

Refuses: a mounted device (any partition) or swap, a device in use (O_EXCL), a
partition, a device smaller than the image; without --force also a device that
is not removable (sysfs removable=0; SD slots and loop devices count as
removable) or larger than 256 GiB, and an existing non-empty file that does not
look like a disk image. Always refuses the fleet file, the image, its .bmap
and anything under the cluster directory.

Exit codes: 0 ok, 1 an I/O error, 2 usage, fleet or refused device,
3 verification failed (the message names the range or file).")]
pub struct FlashArgs {
    /// The fleet file.
    #[arg(value_name = "FLEET.toml")]
    pub fleet: PathBuf,
    /// Node(s) to flash: names or ranges like `pi-[03:05]` (repeatable).
    #[arg(long = "node", required = true, value_name = "NAME")]
    pub nodes: Vec<String>,
    /// Target device(s) or files, paired with the nodes in order (repeatable).
    #[arg(long = "device", required = true, value_name = "DEV|FILE")]
    pub devices: Vec<PathBuf>,
    /// One device, card after card: wait for Enter before each node.
    #[arg(long)]
    pub prompt: bool,
    /// Allow a non-removable device or one larger than 256 GiB.
    #[arg(long)]
    pub force: bool,
    /// Card image (default: the fleet file's `image`).
    #[arg(long, value_name = "IMG")]
    pub image: Option<PathBuf>,
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

fn personalise_all(fleet: &Fleet, image: &Path, names: &[String], progress: &Progress) -> Result<Vec<Personalised>> {
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

/// Runs a `kiln fleet` subcommand.
pub fn fleet(cmd: FleetCommand, progress: &Progress) -> Result<()> {
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

/// Runs `kiln flash`.
pub fn flash(a: FlashArgs, progress: &Progress) -> Result<()> {
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
