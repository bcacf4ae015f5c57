//! Raspberry Pi card images (`kiln build --format card`): a pinned base OS
//! image plus kiln's image tree, written as a sparse disk image and its block
//! map — without root, mounts, loop devices or a privileged container.
//!
//! How a card is made ([`write`]):
//! 1. The `[base_image]` download was fetched and verified with the artifacts
//!    and decompressed once into the cache as a sparse file, an input
//!    ([`crate::inputs::base_fetch`]); the writer receives that file.
//! 2. [`mbr`]: its partition table names the FAT boot and ext4 root partitions.
//! 3. The card image is a new sparse file: the base image's mapped blocks are
//!    copied, all-zero blocks stay holes.
//! 4. [`rootfs`]: the root partition is copied out to its own sparse file,
//!    checked (`e2fsck -fn`: a damaged base is an error unless
//!    `[base_image] repair = true`), grown (`resize2fs`) by what the tree needs, the tree is written into it
//!    with `debugfs -w` (modes, owners, fixed times) and checked with
//!    `e2fsck`, then copied back; the MBR entry gets the new size.
//! 5. [`bootfs`]: `cmdline.txt` on the FAT partition gets the memory cgroup,
//!    edited in place with the `fatfs` crate.
//! 6. [`bmap`]: the `.bmap` lists the mapped ranges with their sha256: the
//!    data, and every block of file-system structure whether zero or not
//!    ([`fsmap`]), so a used card gets no stale bytes where they matter.

pub mod bmap;
pub mod bootfs;
pub mod fsmap;
pub mod mbr;
pub mod rootfs;

use crate::error::{Error, IoContext, Result};
use crate::image::tree::{Node, Tree};
use crate::inputs::base_image::Provisioning;
use crate::inputs::profile::{Arch, Profile};
use crate::progress::Progress;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// What [`write`] produced.
#[derive(Debug, Clone)]
pub struct CardReport {
    /// The sparse card image.
    pub image: PathBuf,
    /// Its block map.
    pub bmap: PathBuf,
    /// Entries of the image tree written to the root filesystem.
    pub entries: usize,
    /// The kernel command line on the card.
    pub cmdline: String,
    /// Bytes mapped (holding data) in the image.
    pub mapped_bytes: u64,
}

/// File name of the card image for `profile` and `arch`.
pub fn image_name(profile: &Profile, arch: Arch) -> String {
    format!("{}-{arch}.img", profile.name())
}

/// File name of the card image's block map.
pub fn bmap_name(profile: &Profile, arch: Arch) -> String {
    format!("{}.bmap", image_name(profile, arch))
}

/// Copies the data of `src[src_off .. src_off+len]` to `dst` at `dst_off`,
/// skipping holes and all-zero 4 KiB blocks (`dst` must read as zeros there).
pub fn copy_sparse(src: &File, src_off: u64, len: u64, dst: &File, dst_off: u64) -> std::io::Result<()> {
    let end = src_off + len;
    let mut buf = vec![0u8; 1 << 20];
    for (s, e) in bmap::data_spans(src, end)? {
        let (s, e) = (s.max(src_off), e.min(end));
        let mut pos = s;
        while pos < e {
            let n = ((e - pos) as usize).min(buf.len());
            src.read_exact_at(&mut buf[..n], pos)?;
            let mut i = 0;
            while i < n {
                let j = (i + 4096 - ((pos as usize + i) % 4096)).min(n);
                if buf[i..j].iter().any(|b| *b != 0) {
                    dst.write_all_at(&buf[i..j], pos + i as u64 - src_off + dst_off)?;
                }
                i = j;
            }
            pos += n as u64;
        }
    }
    Ok(())
}

/// Largest `root_grow_mib`: 64 GiB (the card's OS grows the partition to the
/// whole card on first boot; kiln only needs room for its tree).
pub const MAX_ROOT_GROW_MIB: u64 = 64 << 10;

/// Bytes the root partition grows by: the profile's `root_grow_mib` (1 to
/// [`MAX_ROOT_GROW_MIB`], else a located error), else the tree's file bytes
/// plus a quarter plus 64 MiB, in whole MiB.
fn grow_bytes(profile: &Profile, tree: &Tree) -> Result<u64> {
    if let Some(m) = profile.base_image()?.root_grow_mib.as_ref() {
        let v = *m.get_ref();
        if v == 0 || v > MAX_ROOT_GROW_MIB {
            return Err(Error::config(profile.at(
                m.span(),
                &format!("base_image.root_grow_mib = {v}: give 1 to {MAX_ROOT_GROW_MIB} MiB (the room kiln's tree needs), or remove it to let kiln size it"),
            )));
        }
        return Ok(v << 20);
    }
    let files: u64 = tree
        .iter()
        .map(|(_, e)| match &e.node {
            Node::File(c) => c.size().div_ceil(4096) * 4096 + 4096,
            _ => 4096,
        })
        .sum();
    Ok((files + files / 4 + (64 << 20)).div_ceil(1 << 20) << 20)
}

/// Builds the card for `arch` into `staging_dir`: `<name>-<arch>.img` and its
/// `.bmap`, from `base` (the decompressed base image,
/// [`crate::inputs::base_fetch::prepare`]) and `tree`, the assembled image
/// tree, written as it is.
pub fn write(
    profile: &Profile,
    arch: Arch,
    tree: &Tree,
    base: &Path,
    epoch: u64,
    staging_dir: &Path,
    progress: &Progress,
) -> Result<CardReport> {
    let src = File::open(base).io_ctx(base.display())?;
    let base_len = src.metadata().io_ctx(base.display())?.len();
    let mut sector0 = [0u8; 512];
    src.read_exact_at(&mut sector0, 0).io_ctx(base.display())?;
    let layout = mbr::parse(&sector0, base_len)?;

    let grow = grow_bytes(profile, tree)?;
    let root_len = layout.root.len() + grow;
    let image_len = (layout.root.offset() + root_len).max(base_len);
    let image = staging_dir.join(image_name(profile, arch));
    // Absolute: debugfs runs inside it, and its links point at the tree's files
    // (an `--out` or profile given relative to the working directory, as `dist`).
    let work = std::path::absolute(staging_dir.join(format!(".card-work-{arch}"))).io_ctx(staging_dir.display())?;
    std::fs::create_dir_all(&work).io_ctx(work.display())?;
    let result = (|| {
        // 1. the card: the base image's data outside the root partition.
        let out =
            File::options().read(true).write(true).create(true).truncate(true).open(&image).io_ctx(image.display())?;
        out.set_len(image_len).io_ctx(image.display())?;
        copy_sparse(&src, 0, layout.root.offset(), &out, 0).io_ctx(image.display())?;
        if layout.root.end() < base_len {
            copy_sparse(&src, layout.root.end(), base_len - layout.root.end(), &out, layout.root.end())
                .io_ctx(image.display())?;
        }
        // 2. the root filesystem as its own sparse file, grown and filled.
        let part = work.join("root.ext4");
        {
            let p = File::create(&part).io_ctx(part.display())?;
            p.set_len(layout.root.len()).io_ctx(part.display())?;
            copy_sparse(&src, layout.root.offset(), layout.root.len(), &p, 0).io_ctx(part.display())?;
            p.set_len(root_len).io_ctx(part.display())?;
        }
        let repair = profile.base_image()?.repair.as_ref().is_some_and(|r| *r.get_ref());
        if let Some(fixed) = rootfs::check_base(&part, epoch, repair)? {
            progress.warn(format!(
                "the base image's root filesystem was damaged; e2fsck -fy repaired it ([base_image] repair = true):\n{fixed}"
            ));
        }
        rootfs::grow(&part, root_len, epoch)?;
        let entries = rootfs::add_tree(&part, tree, &work, epoch)?;
        if let Some(fixed) = rootfs::fsck(&part, epoch)? {
            progress.warn(format!("e2fsck -fy repaired the root filesystem after kiln wrote the tree:\n{fixed}"));
        }
        let p = File::open(&part).io_ctx(part.display())?;
        copy_sparse(&p, 0, root_len, &out, layout.root.offset()).io_ctx(image.display())?;
        // 3. the partition table: the root partition's new size.
        mbr::set_sectors(&mut sector0, &layout.root, root_len / mbr::SECTOR)?;
        out.write_all_at(&sector0, 0).io_ctx(image.display())?;
        out.sync_all().io_ctx(image.display())?;
        drop(out);
        // 4. the boot partition's kernel command line, and its cloud-init seed.
        let cmdline = bootfs::enable_memory_cgroup(&image, layout.boot.offset(), layout.boot.len(), epoch)?;
        if let Some(p) = &profile.base_image()?.provisioning {
            let seed = bootfs::has_cloud_init_seed(&image, layout.boot.offset(), layout.boot.len())?;
            if *p.get_ref() == Provisioning::CloudInit && !seed {
                return Err(Error::config(profile.at(
                    p.span(),
                    "provisioning = \"cloud-init\", but the base image's boot partition has no cloud-init NoCloud seed (user-data, meta-data): this OS does not ship cloud-init (Raspberry Pi OS before trixie?) — pin a trixie-based image, or set provisioning = \"none\"",
                )));
            }
        }
        // 5. the block map.
        let map = bmap::create(&image)?;
        let bmap_path = staging_dir.join(bmap_name(profile, arch));
        std::fs::write(&bmap_path, map.to_xml()).io_ctx(bmap_path.display())?;
        Ok(CardReport {
            image: image.clone(),
            bmap: bmap_path,
            entries,
            cmdline: cmdline.trim_end().to_string(),
            mapped_bytes: map.mapped_blocks() * map.block_size,
        })
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}
