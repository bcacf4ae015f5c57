//! The systemd-sysext writer: the image tree as a squashfs extension image.
//!
//! On Fedora CoreOS and Flatcar software arrives as an extension layered over
//! `/usr` (Flatcar's own Kubernetes path, flatcar/sysext-bakery). The image
//! tree is split in two: what belongs in `/usr` (binaries, CNI plugins, the
//! kubelet unit) goes into the squashfs; everything else (the `/etc` files)
//! is left for the Ignition image config to write.
//!
//! Layout inside the image:
//!
//! ```text
//! /usr/bin/{kubeadm,kubelet,kubectl,crictl,kiln-firstboot}
//! /usr/libexec/kiln/cni/*                         copied to the CNI dir when kubelet starts
//! /usr/lib/systemd/system/kubelet.service (+ .d/10-kubeadm.conf, .d/05-kiln-cni.conf)
//! /usr/lib/systemd/system/multi-user.target.d/10-kiln-kubelet.conf   Upholds=kubelet.service
//! /usr/lib/extension-release.d/extension-release.kubernetes
//! /usr/lib/extension-release.d/extension-release.kubernetes-<version>-<profile>-<arch>
//! /usr/share/kiln/images/images.oci.tar          the profile's images, when it pins them
//! ```
//!
//! systemd looks for `extension-release.NAME` where NAME is the image's file
//! name without `.raw` (systemd-sysext(8); `open_extension_release()` in
//! systemd's `os-util.c` takes no other name unless the file carries the
//! `user.extension-release.strict=false` xattr, which squashfs images here do
//! not). The image is deployed as `/etc/extensions/kubernetes.raw`, a link to
//! the versioned file (flatcar/sysext-bakery's `CurrentSymlink=` layout, so an
//! upgrade only moves the link), and is served and inspected under its
//! versioned name: it carries one release file for each name, with the same
//! fields, so `systemd-sysext` and `systemd-dissect` recognise it under both.
//!
//! The versioned name holds the profile's name: two profiles (Fedora CoreOS
//! and Flatcar render different units) never write one file name with
//! different bytes into one output directory.

use crate::error::{Error, IoContext, Result};
use crate::image::tree::{Content, Entry, Node, Origin, Tree};
use crate::inputs::profile::{Arch, Profile};
use crate::outputs::oci_layout::{ARCHIVE_PATH, SYSEXT_ARCHIVE_PATH};
use crate::outputs::tarball::{self, FileRecord};
use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The extension's name: `/etc/extensions/<name>.raw`, `extension-release.<name>`.
pub const EXTENSION_NAME: &str = "kubernetes";
/// Where binaries live inside the extension.
pub const SYSEXT_BIN: &str = "/usr/bin";
/// Where CNI plugins live inside the extension (copied out at kubelet start).
pub const SYSEXT_CNI: &str = "/usr/libexec/kiln/cni";
/// Units inside the extension.
pub const SYSEXT_UNITS: &str = "/usr/lib/systemd/system";

/// The image tree split for sysext delivery.
#[derive(Debug, Clone)]
pub struct Split {
    /// What goes into the extension image (all under `/usr`).
    pub usr: Tree,
    /// What the host needs outside `/usr` (written by Ignition).
    pub host: Tree,
}

/// `ARCHITECTURE=` as systemd spells it (os-release(5) / systemd's architecture table).
pub fn systemd_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "x86-64",
        Arch::Arm64 => "arm64",
        Arch::Arm => "arm",
    }
}

/// The versioned image name: `kubernetes-<version>-<profile>-<arch>`, the
/// file name without `.raw` (and the second release file's suffix).
pub fn image_name(profile: &Profile, arch: Arch) -> String {
    format!("{EXTENSION_NAME}-{}-{}-{arch}", profile.version, profile.name())
}

/// The versioned file name: `kubernetes-<version>-<profile>-<arch>.raw`.
pub fn file_name(profile: &Profile, arch: Arch) -> String {
    format!("{}.raw", image_name(profile, arch))
}

/// `extension-release.kubernetes`: `ID=_any` (the binaries are static and
/// distro-independent), the architecture, and `EXTENSION_RELOAD_MANAGER=1` so
/// systemd ≥ 255 reloads units after merging. No `os-release` in the image.
pub fn extension_release(arch: Arch) -> String {
    format!("ID=_any\nARCHITECTURE={}\nEXTENSION_RELOAD_MANAGER=1\n", systemd_arch(arch))
}

fn under(path: &str, dir: &str) -> Option<String> {
    let dir = dir.trim_matches('/');
    path.strip_prefix(dir).and_then(|r| r.strip_prefix('/')).filter(|r| !r.is_empty()).map(str::to_string)
}

/// Splits a built image tree into the extension's `/usr` and the host's
/// files. `rendered` is kiln's files rendered for binaries in [`SYSEXT_BIN`]
/// ([`crate::image::render::for_bin_dir`]): those units and defaults replace
/// the ones `image` has for the profile's bin dir.
pub fn split(profile: &Profile, arch: Arch, image: &Tree, rendered: &Tree) -> Result<Split> {
    let mut usr = Tree::new();
    let mut host = Tree::new();
    let bin = profile.bin_dir();
    let cni = profile.cni_bin_dir();
    let units = "etc/systemd/system";
    let replaced_host = [
        format!("{units}/{}", kiln_firstboot::contract::unit::UNIT_NAME),
        format!("{units}/{}", kiln_firstboot::contract::unit::APPROVE_SERVICE),
        format!("{units}/kubelet.service.d/20-kiln.conf"),
        kiln_firstboot::contract::image::IMAGE_TOML_PATH.trim_start_matches('/').to_string(),
    ];
    let moved_to_usr = [format!("{units}/kubelet.service"), format!("{units}/kubelet.service.d/10-kubeadm.conf")];
    let dropped = [
        format!("{units}/multi-user.target.wants/kubelet.service"),
        "etc/systemd/system.conf.d/10-kiln-path.conf".to_string(),
        "etc/profile.d/kiln-path.sh".to_string(),
    ];
    for (path, e) in image.iter() {
        let is_dir = matches!(e.node, Node::Dir);
        if is_dir && e.origin == Origin::Implicit {
            continue;
        }
        if e.origin == Origin::Images && path == ARCHIVE_PATH.trim_start_matches('/') {
            usr.insert(SYSEXT_ARCHIVE_PATH, e.clone(), false)?;
        } else if let (Some(name), false) = (under(path, &bin), is_dir) {
            usr.insert(&format!("{SYSEXT_BIN}/{name}"), e.clone(), false)?;
        } else if let (Some(name), false) = (under(path, &cni), is_dir) {
            usr.insert(&format!("{SYSEXT_CNI}/{name}"), e.clone(), false)?;
        } else if e.origin == Origin::Rendered && (moved_to_usr.contains(path) || dropped.contains(path)) {
            continue;
        } else if e.origin == Origin::Rendered && replaced_host.contains(path) {
            let r = rendered
                .get(path)
                .ok_or_else(|| Error::build(format!("sysext: /{path} was not rendered (kiln bug)")))?;
            host.insert(path, r.clone(), false)?;
        } else if path == "usr" || path.starts_with("usr/") {
            if !is_dir {
                usr.insert(path, e.clone(), false)?;
            }
        } else if !(is_dir && (path == bin.trim_matches('/') || path == cni.trim_matches('/'))) {
            host.insert(path, e.clone(), false)?;
        }
    }
    for p in &moved_to_usr {
        let r = rendered.get(p).ok_or_else(|| Error::build(format!("sysext: /{p} was not rendered (kiln bug)")))?;
        let rel = p.trim_start_matches(units).trim_start_matches('/');
        usr.insert(&format!("{SYSEXT_UNITS}/{rel}"), r.clone(), false)?;
    }
    usr.insert(
        &format!("{SYSEXT_UNITS}/kubelet.service.d/05-kiln-cni.conf"),
        Entry::text(
            format!(
                "# Written by kiln: CNI plugins ship in the extension's read-only /usr;\n# kubelet and the runtime look for them in {cni}.\n[Service]\nExecStartPre=/usr/bin/mkdir -p {cni}\nExecStartPre=/usr/bin/cp -f -r {SYSEXT_CNI}/. {cni}/\n"
            ),
            0o644,
        ),
        false,
    )?;
    // Units shipped in an extension are not enabled by `systemctl enable`;
    // multi-user.target upholds kubelet instead (sysext-bakery's pattern).
    usr.insert(
        &format!("{SYSEXT_UNITS}/multi-user.target.d/10-kiln-kubelet.conf"),
        Entry::text(
            "# Written by kiln: start kubelet from the merged extension.\n[Unit]\nUpholds=kubelet.service\n",
            0o644,
        ),
        false,
    )?;
    for release in [EXTENSION_NAME.to_string(), image_name(profile, arch)] {
        usr.insert(
            &format!("/usr/lib/extension-release.d/extension-release.{release}"),
            Entry::text(extension_release(arch), 0o644),
            false,
        )?;
    }
    Ok(Split { usr, host })
}

/// Reads a tree file lazily through [`tarball::Planned`] (exactly the planned
/// bytes), recording its digest, or the failure with its exit code.
struct Verified {
    path: String,
    planned: tarball::Planned,
    digests: Arc<Mutex<BTreeMap<String, String>>>,
    failure: Arc<Mutex<Option<Error>>>,
}

impl Read for Verified {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.planned.read(buf) {
            Ok(0) => {
                if let (Some(d), Ok(mut map)) = (self.planned.digest(), self.digests.lock()) {
                    map.insert(self.path.clone(), d.to_string());
                }
                Ok(0)
            }
            Ok(n) => Ok(n),
            Err(e) => {
                if let (Some(f), Ok(mut slot)) = (self.planned.take_failure(), self.failure.lock()) {
                    slot.get_or_insert(f);
                }
                Err(e)
            }
        }
    }
}

/// Writes the extension tree as a gzip squashfs (128 KiB blocks, every mtime =
/// epoch, uid/gid 0): byte-identical for the same tree and epoch.
pub fn write(usr: &Tree, epoch: u64, out: &std::path::Path) -> Result<Vec<FileRecord>> {
    let t = u32::try_from(epoch)
        .map_err(|_| Error::config(format!("epoch {epoch} does not fit squashfs' 32-bit mtime")))?;
    let mut fs = FilesystemWriter::default();
    fs.set_time(t);
    fs.set_root_mode(0o755);
    fs.set_root_uid(0);
    fs.set_root_gid(0);
    let comp = FilesystemCompressor::new(backhand::v4::compressor::Compressor::Gzip, None)
        .map_err(|e| Error::build(format!("squashfs compressor: {e}")))?;
    fs.set_compressor(comp);
    fs.set_kind(backhand::kind::Kind::new_v4(&crate::outputs::squashfs_parallel::KILN_COMPRESSOR));
    let digests = Arc::new(Mutex::new(BTreeMap::new()));
    let failure: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
    let header = |e: &Entry| NodeHeader::new(e.mode as u16, e.uid, e.gid, t);
    let squash_err = |path: &str, e: backhand::BackhandError| Error::build(format!("squashfs: /{path}: {e}"));
    for (path, e) in usr.iter() {
        match &e.node {
            Node::Dir => fs.push_dir(path, header(e)).map_err(|x| squash_err(path, x))?,
            Node::Symlink(target) => {
                fs.push_symlink(PathBuf::from(target), path, header(e)).map_err(|x| squash_err(path, x))?
            }
            Node::File(content) => {
                let r = Verified {
                    path: path.clone(),
                    planned: tarball::Planned::new(path, e, content),
                    digests: Arc::clone(&digests),
                    failure: Arc::clone(&failure),
                };
                fs.push_file(r, path, header(e)).map_err(|x| squash_err(path, x))?
            }
        }
    }
    let file = std::fs::File::create(out).io_ctx(out.display())?;
    let mut w = io::BufWriter::with_capacity(1 << 20, file);
    // The same files, in the writer's order, for the compression workers.
    use crate::outputs::squashfs_parallel::Opener;
    let files: Vec<Opener> = usr
        .iter()
        .filter_map(|(_, e)| match &e.node {
            Node::File(Content::Disk { path, .. }) => {
                let path = path.clone();
                Some(Box::new(move || crate::io::open_regular(&path).map(|f| Box::new(f) as Box<dyn Read + Send>))
                    as Opener)
            }
            Node::File(Content::Inline(b)) => {
                let b = b.clone();
                Some(Box::new(move || Ok(Box::new(io::Cursor::new(b)) as Box<dyn Read + Send>)) as Opener)
            }
            Node::File(Content::Generated(g)) => {
                let g = g.clone();
                Some(Box::new(move || Ok(Arc::clone(&g.source).open())) as Opener)
            }
            _ => None,
        })
        .collect();
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let written =
        crate::outputs::squashfs_parallel::with_precompression(files, backhand::DEFAULT_BLOCK_SIZE, workers, || {
            fs.write(&mut w)
        });
    if let Err(e) = written {
        if let Some(f) = failure.lock().ok().and_then(|mut f| f.take()) {
            return Err(f);
        }
        let msg = e.to_string();
        return Err(if msg.contains("changed on disk") {
            Error::verify(msg)
        } else {
            Error::build(format!("writing {}: {msg}", out.display()))
        });
    }
    if let Some(f) = failure.lock().ok().and_then(|mut f| f.take()) {
        return Err(f);
    }
    let f = w.into_inner().map_err(|e| Error::build(format!("{}: {}", out.display(), e.error())))?;
    f.sync_all().io_ctx(out.display())?;
    let digests = digests.lock().map(|d| d.clone()).unwrap_or_default();
    Ok(usr
        .iter()
        .map(|(p, e)| tarball::record(p, e, matches!(e.node, Node::File(_)).then(|| digests.get(p).cloned()).flatten()))
        .collect())
}
