//! The Ignition image config: how a Fedora CoreOS or Flatcar machine gets the
//! image at first boot, without a tarball.
//!
//! * `sysext` mode: Ignition downloads the extension image from `--base-url`
//!   (verified by `verification.hash`), places it under `/opt/extensions/` and
//!   links `/etc/extensions/kubernetes.raw` to it; the host's `/etc` files are
//!   written inline.
//! * `files` mode: every pinned binary is a remote file under the bin dir with
//!   its pinned sha256 (upstream URL, or the `--mirror` URL); tarball artifacts
//!   (crictl, CNI plugins) are downloaded verified and unpacked by a oneshot unit;
//!   the `kiln-firstboot` binary and the image archive (the profile's container
//!   images, [`crate::outputs::oci_layout`]) are served from `--base-url`.
//!   In `sysext` mode the archive is inside the extension image.
//!
//! Ignition computes `verification.hash` over the decompressed contents (spec
//! 3.1+), so hashes are the artifacts' own pins. The document itself is
//! [`crate::ignition`]'s model, shared with `kiln userdata`.

use crate::error::{Error, Result};
use crate::ignition::{Config, Directory, File, Link, Unit};
use crate::image::tree::{Content, Node, Origin, Tree};
use crate::inputs::profile::{Artifact, Install};
use crate::outputs::sysext::{self, EXTENSION_NAME};
use serde_json::Value;

/// Where `sysext` mode stores extension images.
pub const EXTENSIONS_DIR: &str = "/opt/extensions/kubernetes";
/// Where `files` mode stores downloaded tarballs before unpacking.
pub const ARTIFACTS_DIR: &str = "/opt/kiln/artifacts";
/// The oneshot unit that unpacks tarball artifacts in `files` mode.
pub const UNPACK_UNIT: &str = "kiln-unpack-artifacts.service";

/// How the image reaches the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Download the systemd-sysext image and link it into /etc/extensions.
    Sysext,
    /// Download every binary to the bin dir (no extension image).
    Files,
}

impl Mode {
    /// Every value, in the order `--help` lists them.
    pub const ALL: [Mode; 2] = [Mode::Sysext, Mode::Files];

    /// What `--help` says of this value.
    pub fn help(self) -> &'static str {
        match self {
            Mode::Sysext => "Download the systemd-sysext image and link it into /etc/extensions",
            Mode::Files => "Download every binary to the bin dir (no extension image)",
        }
    }

    /// The spelling of `--ignition-mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sysext => "sysext",
            Mode::Files => "files",
        }
    }
}

/// Inputs common to both modes.
#[derive(Debug, Clone)]
pub struct IgnitionInputs<'a> {
    /// Spec version (3.3.0 or 3.4.0).
    pub version: &'a str,
    /// URL where the output directory is served (sysext image, kiln-firstboot).
    pub base_url: Option<&'a str>,
    /// Mirror URL for upstream artifacts (files mode).
    pub mirror_url: Option<&'a str>,
}

fn base<'a>(i: &IgnitionInputs<'a>, what: &str) -> Result<&'a str> {
    i.base_url.map(|b| b.trim_end_matches('/')).ok_or_else(|| {
        Error::config(format!(
            "--format ignition needs --base-url URL: the address the output directory will be served from ({what} is downloaded from there at first boot)"
        ))
    })
}

/// Converts host-tree entries to Ignition files, directories and links.
fn host_entries(host: &Tree, skip: impl Fn(&str, &Origin) -> bool) -> Result<(Vec<File>, Vec<Directory>, Vec<Link>)> {
    let (mut files, mut dirs, mut links) = (Vec::new(), Vec::new(), Vec::new());
    for (path, e) in host.iter() {
        if skip(path, &e.origin) {
            continue;
        }
        let abs = format!("/{path}");
        match &e.node {
            Node::Dir if e.origin != Origin::Implicit => dirs.push(Directory::new(&abs, e.mode, e.uid, e.gid)),
            Node::Dir => {}
            Node::Symlink(t) => links.push(Link::symbolic(&abs, t)),
            Node::File(c) => {
                let data = match c {
                    Content::Inline(b) => b.clone(),
                    Content::Disk { path: p, .. } => {
                        std::fs::read(p).map_err(|x| Error::build(format!("{}: {x}", p.display())))?
                    }
                    Content::Generated(_) => {
                        return Err(Error::build(format!("{abs}: a generated file cannot be inline (kiln bug)")))
                    }
                };
                files.push(File::inline(&abs, &data, e.mode).owned_by(e.uid, e.gid));
            }
        }
    }
    Ok((files, dirs, links))
}

/// The image config: every list written, empty or not.
fn document(
    version: &str,
    files: Vec<File>,
    dirs: Vec<Directory>,
    links: Vec<Link>,
    units: Vec<Unit>,
) -> Result<Value> {
    let mut config = Config::new(version)?;
    config.storage.files = files;
    config.storage.directories = Some(dirs);
    config.storage.links = Some(links);
    config.systemd.units = units;
    config.to_value()
}

/// `sysext` mode: the extension image from `base_url`, the host files inline.
pub fn sysext_config(split: &sysext::Split, raw_name: &str, raw_sha256: &str, i: &IgnitionInputs) -> Result<Value> {
    let base = base(i, raw_name)?;
    let target = format!("{EXTENSIONS_DIR}/{raw_name}");
    let (mut files, dirs, mut links) = host_entries(&split.host, |_, _| false)?;
    files.insert(0, File::remote(&target, &format!("{base}/{raw_name}"), raw_sha256, 0o644));
    links.insert(0, Link::symbolic(&format!("/etc/extensions/{EXTENSION_NAME}.raw"), &target));
    let units = vec![Unit::enabled("systemd-sysext.service"), Unit::enabled(kiln_firstboot::contract::unit::UNIT_NAME)];
    document(i.version, files, dirs, links, units)
}

/// The files of the output directory a `files` mode config downloads from
/// `--base-url`, each `(file name, sha256)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Served<'a> {
    /// `kiln-firstboot`, unless it is a pinned artifact.
    pub firstboot: Option<(&'a str, &'a str)>,
    /// The image archive ([`crate::outputs::oci_layout`]), when the profile pins images.
    pub images: Option<(&'a str, &'a str)>,
}

/// `files` mode: pinned downloads into the bin dir, tarballs unpacked at boot.
pub fn files_config(
    image: &Tree,
    artifacts: &[Artifact],
    served: &Served,
    bin_dir: &str,
    i: &IgnitionInputs,
) -> Result<Value> {
    let url_of = |a: &Artifact| match i.mirror_url {
        Some(m) => crate::mirror_path::rebase_url(m, &a.url),
        None => a.url.clone(),
    };
    let mut remote = Vec::new();
    let mut unpack = Vec::new();
    for a in artifacts {
        match &a.install {
            Install::File { name } => {
                remote.push(File::remote(&format!("{}/{name}", a.dest), &url_of(a), &a.sha256, a.mode))
            }
            Install::Extract { members } => {
                let tgz = format!("{ARTIFACTS_DIR}/{}-{}-{}.tar.gz", a.name, a.version, a.arch);
                remote.push(File::remote(&tgz, &url_of(a), &a.sha256, 0o644));
                let sel = members.as_ref().map(|m| format!(" --no-anchored {}", m.join(" "))).unwrap_or_default();
                unpack.push(format!("ExecStart=/usr/bin/mkdir -p {dest}\nExecStart=/usr/bin/tar -xzf {tgz} -C {dest} --no-same-owner{sel}\n", dest = a.dest));
            }
        }
    }
    if let Some((name, sha)) = served.firstboot {
        let base = base(i, name)?;
        remote.push(File::remote(&format!("{bin_dir}/kiln-firstboot"), &format!("{base}/{name}"), sha, 0o755));
    }
    if let Some((name, sha)) = served.images {
        let base = base(i, name)?;
        let path = crate::outputs::oci_layout::ARCHIVE_PATH;
        remote.push(File::remote(path, &format!("{base}/{name}"), sha, crate::outputs::oci_layout::MODE));
    }
    let (files, dirs, links) =
        host_entries(image, |_, o| matches!(o, Origin::Artifact { .. } | Origin::Firstboot { .. } | Origin::Images))?;
    let mut all = remote;
    all.extend(files);
    let mut units = vec![Unit::enabled(kiln_firstboot::contract::unit::UNIT_NAME)];
    if !unpack.is_empty() {
        let contents = format!(
            "[Unit]\nDescription=kiln: unpack the verified crictl and CNI tarballs Ignition downloaded\nBefore=kubelet.service {fb}\nConditionPathExists=!/var/lib/kiln/artifacts-unpacked\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n{}ExecStart=/usr/bin/mkdir -p /var/lib/kiln\nExecStart=/usr/bin/touch /var/lib/kiln/artifacts-unpacked\n\n[Install]\nWantedBy=multi-user.target\n",
            unpack.concat(),
            fb = kiln_firstboot::contract::unit::UNIT_NAME
        );
        units.push(Unit::with_contents(UNPACK_UNIT, contents));
    }
    document(i.version, all, dirs, links, units)
}
