//! The MBR partition table of a Raspberry Pi image: a FAT boot partition
//! (`bootfs`/`system-boot`) and an ext4 root partition (`rootfs`/`writable`).
//!
//! Layout (the classic DOS MBR as the Pi firmware reads it): the boot
//! signature `55 AA` at 510, four 16-byte entries from 446, each with the
//! type at +4, the first LBA at +8 and the sector count at +12 (little endian,
//! 512-byte sectors). Type `0xEE` is a protective MBR (GPT), which kiln does
//! not edit.

use crate::error::{Error, Result};

/// Sector size of MBR LBAs.
pub const SECTOR: u64 = 512;

/// One primary partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// Entry index (0–3).
    pub index: usize,
    /// Partition type byte.
    pub kind: u8,
    /// First sector.
    pub start_lba: u64,
    /// Number of sectors.
    pub sectors: u64,
}

impl Partition {
    /// Byte offset of the partition in the image.
    pub fn offset(&self) -> u64 {
        self.start_lba * SECTOR
    }
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.sectors * SECTOR
    }
    /// Whether the partition is empty.
    pub fn is_empty(&self) -> bool {
        self.sectors == 0
    }
    /// One past its last byte.
    pub fn end(&self) -> u64 {
        self.offset() + self.len()
    }
}

/// The two partitions a card needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// FAT boot partition (types 0x06, 0x0b, 0x0c, 0x0e).
    pub boot: Partition,
    /// Linux root partition (type 0x83), the last one on the disk.
    pub root: Partition,
}

/// Parses the partition table in the first sector of an image of `image_len` bytes.
pub fn parse(sector0: &[u8], image_len: u64) -> Result<Layout> {
    if sector0.len() < 512 || sector0[510] != 0x55 || sector0[511] != 0xAA {
        return Err(Error::config(
            "the base image has no MBR boot signature (55 AA); is [base_image].compression right, and is it a Raspberry Pi disk image?",
        ));
    }
    let mut parts = Vec::new();
    for i in 0..4 {
        let e = &sector0[446 + 16 * i..446 + 16 * (i + 1)];
        let kind = e[4];
        let start = u32::from_le_bytes([e[8], e[9], e[10], e[11]]) as u64;
        let sectors = u32::from_le_bytes([e[12], e[13], e[14], e[15]]) as u64;
        if kind == 0 || sectors == 0 {
            continue;
        }
        if kind == 0xEE {
            return Err(Error::config(
                "the base image has a GPT (protective MBR); kiln's card writer reads MBR images such as Raspberry Pi OS and Ubuntu for Raspberry Pi",
            ));
        }
        let p = Partition { index: i, kind, start_lba: start, sectors };
        if p.end() > image_len {
            return Err(Error::config(format!(
                "partition {} ends at byte {} beyond the image's {image_len} bytes; the base image is truncated",
                i + 1,
                p.end()
            )));
        }
        parts.push(p);
    }
    let boot = parts.iter().find(|p| matches!(p.kind, 0x06 | 0x0b | 0x0c | 0x0e)).copied().ok_or_else(|| {
        Error::config("the base image has no FAT partition (type 0x0b/0x0c) for the Raspberry Pi boot files")
    })?;
    let root = parts
        .iter()
        .filter(|p| p.kind == 0x83)
        .max_by_key(|p| p.start_lba)
        .copied()
        .ok_or_else(|| Error::config("the base image has no Linux (0x83) root partition"))?;
    if parts.iter().any(|p| p.start_lba > root.start_lba) {
        return Err(Error::config(
            "the root partition is not the last one on the base image; kiln grows it in place and cannot",
        ));
    }
    for a in &parts {
        for b in &parts {
            if a.index < b.index && a.offset() < b.end() && b.offset() < a.end() {
                return Err(Error::config(format!("partitions {} and {} overlap", a.index + 1, b.index + 1)));
            }
        }
    }
    Ok(Layout { boot, root })
}

/// Sets the sector count of entry `p.index` in `sector0`.
pub fn set_sectors(sector0: &mut [u8], p: &Partition, sectors: u64) -> Result<()> {
    let n =
        u32::try_from(sectors).map_err(|_| Error::config("the root partition would exceed the MBR's 2 TiB limit"))?;
    let at = 446 + 16 * p.index + 12;
    sector0[at..at + 4].copy_from_slice(&n.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(s: &mut [u8], i: usize, kind: u8, start: u32, n: u32) {
        let e = &mut s[446 + 16 * i..];
        e[4] = kind;
        e[8..12].copy_from_slice(&start.to_le_bytes());
        e[12..16].copy_from_slice(&n.to_le_bytes());
    }

    #[test]
    fn finds_boot_and_root_and_refuses_bad_tables() {
        let mut s = vec![0u8; 512];
        s[510] = 0x55;
        s[511] = 0xAA;
        entry(&mut s, 0, 0x0c, 8192, 1024);
        entry(&mut s, 1, 0x83, 9216, 4096);
        let l = parse(&s, 20000 * 512).expect("layout");
        assert_eq!(l.boot.offset(), 8192 * 512);
        assert_eq!(l.root.len(), 4096 * 512);
        assert!(parse(&s, 10000 * 512).is_err(), "truncated");
        let mut t = s.clone();
        entry(&mut t, 1, 0x83, 8500, 4096);
        assert!(parse(&t, 20000 * 512).is_err(), "overlap");
        let mut g = s.clone();
        entry(&mut g, 2, 0xEE, 1, 100);
        assert!(parse(&g, 20000 * 512).is_err(), "gpt");
        s[510] = 0;
        assert!(parse(&s, 20000 * 512).is_err(), "signature");
    }
}
