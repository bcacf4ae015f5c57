//! Which bytes of a disk image its file systems need, whether they are zero
//! or not: the partition table, every FAT's boot region, tables and root
//! directory plus every allocated cluster, and every ext4 superblock copy,
//! group descriptor table, bitmap, inode table and allocated block.
//!
//! A sparse image stores all-zero blocks as holes, and a `.bmap` made from
//! holes alone leaves those blocks unwritten — on a used card they keep
//! whatever the card held before: a FAT whose free entries are garbage, a
//! zero page of a binary that is not zero. [`required_spans`] is what a
//! `.bmap` must map (and what `kiln flash` must write) so the card is
//! correct whatever it held; see [`crate::outputs::card::bmap::create`].
//!
//! Layouts follow the on-disk formats as their reference tools write them:
//! * FAT: Microsoft's FAT specification (fatgen103): BPB fields at 11–47,
//!   FAT type by cluster count (< 4085 FAT12, < 65525 FAT16, else FAT32),
//!   data region after `reserved + fats × fat_size + root_dir_sectors`.
//! * ext4: the kernel's `fs/ext4/ext4.h` (`struct ext4_super_block`,
//!   `struct ext4_group_desc`, `EXT4_BG_BLOCK_UNINIT`) and e2fsprogs'
//!   `ext2fs_bg_has_super` (sparse_super: groups 0, 1 and powers of 3, 5, 7;
//!   sparse_super2: `s_backup_bgs`), `ext2fs_descriptor_block_loc2` (meta_bg).
//!
//! A partition with neither a FAT nor an ext2/3/4 superblock adds nothing
//! (its data spans are still mapped); one that claims to be FAT or ext4 but
//! does not add up is an error, since a card made from it would not mount.

use std::io;
use std::os::unix::fs::FileExt;

/// Byte spans `[start, end)` that the image's file systems need, sorted and
/// merged, all below `size`. Reads through `disk` (an image file or a card).
pub fn required_spans(disk: &impl FileExt, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut spans = Vec::new();
    if size < 512 {
        return Ok(spans);
    }
    let mut mbr = [0u8; 512];
    disk.read_exact_at(&mut mbr, 0)?;
    if mbr[510..512] != [0x55, 0xaa] {
        return Ok(spans);
    }
    spans.push((0, 512));
    for i in 0..4 {
        let e = &mbr[446 + 16 * i..446 + 16 * (i + 1)];
        let kind = e[4];
        let start = u32::from_le_bytes([e[8], e[9], e[10], e[11]]) as u64 * 512;
        let len = u32::from_le_bytes([e[12], e[13], e[14], e[15]]) as u64 * 512;
        // Empty, extended (0x05, 0x0f, 0x85) and GPT-protective entries hold no file system here.
        if matches!(kind, 0x00 | 0x05 | 0x0f | 0x85 | 0xee) || len == 0 || start >= size {
            continue;
        }
        let part = Part { disk, start, len: len.min(size - start), number: i + 1 };
        if let Some(ext) = part.ext()? {
            ext.spans(&part, &mut spans)?;
        } else if let Some(fat) = part.fat(kind)? {
            fat.spans(&part, &mut spans)?;
        }
    }
    Ok(merge(spans))
}

/// Sorts and merges overlapping or touching spans.
pub fn merge(mut spans: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    spans.retain(|(s, e)| e > s);
    spans.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        match out.last_mut() {
            Some(prev) if s <= prev.1 => prev.1 = prev.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

struct Part<'a, D> {
    disk: &'a D,
    start: u64,
    len: u64,
    number: usize,
}

fn bad(part: usize, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("partition {part}: {what}"))
}

impl<D: FileExt> Part<'_, D> {
    fn read(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        if off.checked_add(buf.len() as u64).is_none_or(|end| end > self.len) {
            return Err(bad(self.number, format!("a structure at byte {off} lies beyond the partition's end")));
        }
        self.disk.read_exact_at(buf, self.start + off)
    }

    /// Adds `[off, off+len)` of the partition, refusing what lies outside it.
    fn add(&self, spans: &mut Vec<(u64, u64)>, off: u64, len: u64) -> io::Result<()> {
        match off.checked_add(len) {
            Some(end) if end <= self.len => {
                spans.push((self.start + off, self.start + end));
                Ok(())
            }
            _ => Err(bad(self.number, format!("a structure at byte {off} (+{len}) lies beyond the partition's end"))),
        }
    }

    fn ext(&self) -> io::Result<Option<Ext>> {
        if self.len < 2048 {
            return Ok(None);
        }
        let mut sb = [0u8; 1024];
        self.read(1024, &mut sb)?;
        if u16::from_le_bytes([sb[56], sb[57]]) != 0xef53 {
            return Ok(None);
        }
        Ext::parse(&sb, self.len).map(Some).map_err(|m| bad(self.number, format!("ext4 superblock: {m}")))
    }

    fn fat(&self, kind: u8) -> io::Result<Option<Fat>> {
        // FAT12, FAT16 <32M, FAT16, FAT32 CHS, FAT32 LBA, FAT16 LBA.
        if ![0x01, 0x04, 0x06, 0x0b, 0x0c, 0x0e].contains(&kind) || self.len < 512 {
            return Ok(None);
        }
        let mut bs = [0u8; 512];
        self.read(0, &mut bs)?;
        if bs[510..512] != [0x55, 0xaa] {
            return Ok(None);
        }
        Fat::parse(&bs, self.len).map(Some).map_err(|m| bad(self.number, format!("FAT boot sector: {m}")))
    }
}

/// A FAT volume's geometry (bytes relative to the partition).
struct Fat {
    /// Bytes before the data region: reserved sectors, the FATs, the FAT12/16 root directory.
    system: u64,
    fat_off: u64,
    fat_bytes: u64,
    cluster_bytes: u64,
    clusters: u64,
    bits: u32,
}

impl Fat {
    fn parse(bs: &[u8; 512], part_len: u64) -> Result<Fat, String> {
        let u16at = |o: usize| u16::from_le_bytes([bs[o], bs[o + 1]]) as u64;
        let u32at = |o: usize| u32::from_le_bytes([bs[o], bs[o + 1], bs[o + 2], bs[o + 3]]) as u64;
        let bps = u16at(11);
        let spc = bs[13] as u64;
        if ![512, 1024, 2048, 4096].contains(&bps) || spc == 0 || !spc.is_power_of_two() {
            return Err(format!("{bps} bytes per sector, {spc} sectors per cluster"));
        }
        let reserved = u16at(14);
        let nfats = bs[16] as u64;
        let root_entries = u16at(17);
        let total = if u16at(19) != 0 { u16at(19) } else { u32at(32) };
        let fat_size = if u16at(22) != 0 { u16at(22) } else { u32at(36) };
        if reserved == 0 || !(1..=4).contains(&nfats) || fat_size == 0 || total == 0 {
            return Err(format!("{reserved} reserved sectors, {nfats} FATs of {fat_size} sectors, {total} sectors"));
        }
        let root_sectors = (root_entries * 32).div_ceil(bps);
        let data_start = reserved + nfats * fat_size + root_sectors;
        if total * bps > part_len || data_start >= total {
            return Err(format!("{total} sectors of {bps} bytes do not fit the partition's {part_len} bytes"));
        }
        let clusters = (total - data_start) / spc;
        let bits = if clusters < 4085 {
            12
        } else if clusters < 65525 {
            16
        } else {
            32
        };
        // FAT32 cluster numbers are 28 bits (fatgen103: at most 0x0FFFFFF5 clusters).
        if clusters > 0x0fff_fff5 || fat_size * bps * 8 < (clusters + 2) * bits as u64 {
            return Err(format!("a FAT of {fat_size} sectors cannot hold {clusters} clusters"));
        }
        Ok(Fat {
            system: data_start * bps,
            fat_off: reserved * bps,
            fat_bytes: fat_size * bps,
            cluster_bytes: spc * bps,
            clusters,
            bits,
        })
    }

    fn spans<D: FileExt>(&self, part: &Part<'_, D>, spans: &mut Vec<(u64, u64)>) -> io::Result<()> {
        part.add(spans, 0, self.system)?;
        // The first FAT, in chunks: only the entries of the clusters that exist.
        let entry_bits = u64::from(self.bits);
        let need = ((self.clusters + 2) * entry_bits).div_ceil(8).min(self.fat_bytes);
        let chunk: u64 = if self.bits == 12 { need } else { 1 << 20 };
        let mut fat = vec![0u8; chunk as usize];
        let mut loaded = u64::MAX;
        let mut entry = |c: u64| -> io::Result<u64> {
            if self.bits == 12 {
                if loaded != 0 {
                    part.read(self.fat_off, &mut fat)?;
                    loaded = 0;
                }
                let o = (c + c / 2) as usize;
                let v = match fat.get(o..o + 2) {
                    Some(b) => u64::from(u16::from_le_bytes([b[0], b[1]])),
                    None => return Ok(u64::MAX),
                };
                return Ok(if c % 2 == 1 { v >> 4 } else { v & 0xfff });
            }
            let width = entry_bits / 8;
            let byte = c * width;
            let base = byte / chunk * chunk;
            if base != loaded {
                let n = chunk.min(need.saturating_sub(base)) as usize;
                fat[n..].fill(0xff);
                part.read(self.fat_off + base, &mut fat[..n])?;
                loaded = base;
            }
            let o = (byte - base) as usize;
            Ok(match self.bits {
                16 => u64::from(u16::from_le_bytes([fat[o], fat[o + 1]])),
                _ => u64::from(u32::from_le_bytes([fat[o], fat[o + 1], fat[o + 2], fat[o + 3]])) & 0x0fff_ffff,
            })
        };
        let mut run: Option<(u64, u64)> = None;
        for c in 2..self.clusters + 2 {
            if entry(c)? == 0 {
                if let Some((a, b)) = run.take() {
                    part.add(spans, self.system + (a - 2) * self.cluster_bytes, (b - a + 1) * self.cluster_bytes)?;
                }
                continue;
            }
            run = match run {
                Some((a, _)) => Some((a, c)),
                None => Some((c, c)),
            };
        }
        if let Some((a, b)) = run {
            part.add(spans, self.system + (a - 2) * self.cluster_bytes, (b - a + 1) * self.cluster_bytes)?;
        }
        Ok(())
    }
}

/// An ext2/3/4 file system's geometry.
struct Ext {
    block: u64,
    blocks: u64,
    first_data: u64,
    per_group: u64,
    groups: u64,
    desc_size: u64,
    itable_blocks: u64,
    reserved_gdt: u64,
    sparse_super: bool,
    backup_bgs: Option<[u64; 2]>,
    meta_bg: Option<u64>,
}

/// `EXT4_BG_BLOCK_UNINIT`: the group's block bitmap is not initialised on disk.
const BG_BLOCK_UNINIT: u16 = 0x2;

impl Ext {
    fn parse(sb: &[u8; 1024], part_len: u64) -> Result<Ext, String> {
        let u16at = |o: usize| u16::from_le_bytes([sb[o], sb[o + 1]]) as u64;
        let u32at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]) as u64;
        let log = u32at(24);
        if log > 6 {
            return Err(format!("block size 1024 << {log}"));
        }
        let block = 1024u64 << log;
        let (compat, incompat, ro) = (u32at(92), u32at(96), u32at(100));
        let is64 = incompat & 0x80 != 0;
        let blocks = u32at(4) | if is64 { u32at(336) << 32 } else { 0 };
        let first_data = u32at(20);
        let per_group = u32at(32);
        let inodes_per_group = u32at(40);
        let inode_size = if u32at(76) == 0 { 128 } else { u16at(88) };
        let desc_size = if is64 { u16at(254).max(32) } else { 32 };
        // mke2fs: a multiple of 8, at least 256, at most 8 × the block size (one bitmap block).
        if per_group < 256 || per_group % 8 != 0 || per_group > 8 * block || blocks <= first_data {
            return Err(format!("{blocks} blocks, {per_group} per group"));
        }
        if blocks.checked_mul(block).is_none_or(|b| b > part_len) {
            return Err(format!("{blocks} blocks of {block} bytes do not fit the partition's {part_len} bytes"));
        }
        if inodes_per_group == 0 || inodes_per_group > 8 * block {
            return Err(format!("{inodes_per_group} inodes per group"));
        }
        if !(128..=block).contains(&inode_size) || !inode_size.is_power_of_two() || desc_size > 1024 {
            return Err(format!("inode size {inode_size}, descriptor size {desc_size}"));
        }
        let groups = (blocks - first_data).div_ceil(per_group);
        let meta_bg = (incompat & 0x10 != 0).then(|| u32at(260));
        Ok(Ext {
            block,
            blocks,
            first_data,
            per_group,
            groups,
            desc_size,
            itable_blocks: (inodes_per_group * inode_size).div_ceil(block),
            reserved_gdt: if compat & 0x10 != 0 { u16at(206) } else { 0 },
            sparse_super: ro & 0x1 != 0,
            backup_bgs: (compat & 0x200 != 0).then(|| [u32at(588), u32at(592)]),
            meta_bg,
        })
    }

    fn group_first(&self, g: u64) -> u64 {
        self.first_data + g * self.per_group
    }

    /// `ext2fs_bg_has_super`.
    fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if let Some(b) = self.backup_bgs {
            return g == b[0] || g == b[1];
        }
        if g <= 1 || !self.sparse_super {
            return true;
        }
        if g % 2 == 0 {
            return false;
        }
        [3u64, 5, 7].iter().any(|&p| {
            let mut x = p;
            while x < g {
                x *= p;
            }
            x == g
        })
    }

    fn descs_per_block(&self) -> u64 {
        self.block / self.desc_size
    }

    fn gdt_blocks(&self) -> u64 {
        self.groups.div_ceil(self.descs_per_block())
    }

    /// Block holding descriptor block `i` of the primary table (`ext2fs_descriptor_block_loc2`, group 0's copy).
    fn desc_block(&self, i: u64) -> u64 {
        match self.meta_bg {
            Some(first) if i >= first => {
                let g = i * self.descs_per_block();
                self.group_first(g) + u64::from(self.has_super(g))
            }
            _ => self.first_data + 1 + i,
        }
    }

    fn spans<D: FileExt>(&self, part: &Part<'_, D>, spans: &mut Vec<(u64, u64)>) -> io::Result<()> {
        let b = self.block;
        let add_blocks = |spans: &mut Vec<(u64, u64)>, first: u64, n: u64| -> io::Result<()> {
            if first.checked_add(n).is_none_or(|end| end > self.blocks) {
                return Err(bad(
                    part.number,
                    format!("ext4: blocks {first}+{n} lie beyond its {} blocks", self.blocks),
                ));
            }
            part.add(spans, first * b, n * b)
        };
        // The first 1024 bytes (boot block) and the primary superblock.
        part.add(spans, 0, 2048)?;
        let dpb = self.descs_per_block();
        let classic_gdt = self.meta_bg.map_or(self.gdt_blocks(), |f| f.min(self.gdt_blocks()));
        // Superblock and descriptor copies in every group that has them.
        for g in 0..self.groups {
            let first = self.group_first(g);
            if self.has_super(g) {
                if g > 0 {
                    add_blocks(spans, first, 1)?;
                }
                add_blocks(spans, first + 1, classic_gdt + self.reserved_gdt)?;
            }
            if let Some(fm) = self.meta_bg {
                let (mg, k) = (g / dpb, g % dpb);
                if mg >= fm && (k == 0 || k == 1 || k == dpb - 1) {
                    add_blocks(spans, first + u64::from(self.has_super(g)), 1)?;
                }
            }
        }
        // Each group's bitmaps, inode table and (when initialised) the blocks its bitmap marks used.
        let mut desc_buf = vec![0u8; b as usize];
        let mut bitmap = vec![0u8; b as usize];
        let mut loaded = u64::MAX;
        for g in 0..self.groups {
            let i = g / dpb;
            if i != loaded {
                part.read(self.desc_block(i) * b, &mut desc_buf)?;
                loaded = i;
            }
            let o = ((g % dpb) * self.desc_size) as usize;
            let d = &desc_buf[o..o + self.desc_size as usize];
            let u32at = |x: usize| u32::from_le_bytes([d[x], d[x + 1], d[x + 2], d[x + 3]]) as u64;
            let hi = |x: usize| if self.desc_size >= 64 { u32at(x) << 32 } else { 0 };
            let block_bitmap = u32at(0) | hi(0x20);
            let inode_bitmap = u32at(4) | hi(0x24);
            let inode_table = u32at(8) | hi(0x28);
            let flags = u16::from_le_bytes([d[18], d[19]]);
            add_blocks(spans, block_bitmap, 1)?;
            add_blocks(spans, inode_bitmap, 1)?;
            add_blocks(spans, inode_table, self.itable_blocks)?;
            if flags & BG_BLOCK_UNINIT != 0 {
                continue;
            }
            part.read(block_bitmap * b, &mut bitmap)?;
            let first = self.group_first(g);
            let n = self.per_group.min(self.blocks - first);
            let mut run: Option<(u64, u64)> = None;
            for k in 0..n {
                let used = bitmap[(k / 8) as usize] & (1 << (k % 8)) != 0;
                match (used, run) {
                    (true, Some((a, _))) => run = Some((a, k)),
                    (true, None) => run = Some((k, k)),
                    (false, Some((a, e))) => {
                        add_blocks(spans, first + a, e - a + 1)?;
                        run = None;
                    }
                    (false, None) => {}
                }
            }
            if let Some((a, e)) = run {
                add_blocks(spans, first + a, e - a + 1)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_sorts() {
        assert_eq!(merge(vec![(10, 20), (0, 5), (5, 8), (15, 30), (40, 40)]), vec![(0, 8), (10, 30)]);
    }

    #[test]
    fn sparse_super_groups() {
        let e = Ext {
            block: 4096,
            blocks: 1 << 20,
            first_data: 0,
            per_group: 32768,
            groups: 32,
            desc_size: 64,
            itable_blocks: 512,
            reserved_gdt: 0,
            sparse_super: true,
            backup_bgs: None,
            meta_bg: None,
        };
        let with: Vec<u64> = (0..32).filter(|g| e.has_super(*g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27]);
    }

    #[test]
    fn garbage_is_an_error_or_nothing() {
        // No MBR: nothing required.
        let f = tempfile::tempfile().unwrap();
        f.set_len(1 << 20).unwrap();
        assert!(required_spans(&f, 1 << 20).unwrap().is_empty());
        // An MBR whose ext4 claims more blocks than the partition holds.
        let mut mbr = [0u8; 512];
        mbr[446 + 4] = 0x83;
        mbr[446 + 8..446 + 12].copy_from_slice(&8u32.to_le_bytes());
        mbr[446 + 12..446 + 16].copy_from_slice(&1000u32.to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        f.write_all_at(&mbr, 0).unwrap();
        let mut sb = [0u8; 1024];
        sb[4..8].copy_from_slice(&1_000_000u32.to_le_bytes());
        sb[32..36].copy_from_slice(&8192u32.to_le_bytes());
        sb[40..44].copy_from_slice(&2048u32.to_le_bytes());
        sb[56..58].copy_from_slice(&0xef53u16.to_le_bytes());
        f.write_all_at(&sb, 8 * 512 + 1024).unwrap();
        let e = required_spans(&f, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("partition 1") && e.to_string().contains("do not fit"), "{e}");
    }
}
