//! Per-node files, written only into the card image's FAT boot partition.
//!
//! The base image is never modified: the FAT library ([`fatfs`]) runs on an
//! [`Overlay`] that reads the partition's bytes from the base image file and
//! keeps every block it writes in memory. What a node's card differs in is
//! then a handful of 4 KiB blocks ([`Personalised::blocks`]) that `kiln flash`
//! writes together with the image's mapped ranges and `kiln fleet images`
//! writes over a copy of the base.
//!
//! Files, at the root of the FAT partition (`/boot/firmware` on the Pi):
//!
//! | file | what | read by |
//! |---|---|---|
//! | `kiln/node.toml` | cluster, role, name, token; CA keys only for control planes | kiln-firstboot (`/boot/firmware/kiln/node.toml`) |
//! | `meta-data` | `instance-id` (unique per node and cluster), `local-hostname` | cloud-init NoCloud |
//! | `user-data` | `#cloud-config`: hostname, admin user, SSH keys | cloud-init NoCloud |
//! | `network-config` | netplan v2: DHCP or static address, DNS, Wi-Fi | cloud-init NoCloud |
//!
//! Raspberry Pi OS (trixie, October 2025 images on) and Ubuntu Server for
//! Raspberry Pi both run cloud-init's NoCloud datasource on the boot partition's
//! `user-data`, `meta-data` and `network-config`; the base image's own copies
//! are replaced. `cmdline.txt` is left as the card build wrote it (the cgroup
//! flags are the image's, not a node's).

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::fleet::FleetNode;
use crate::hash::sha256_hex;
use fatfs::{FileSystem, FsOptions};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Granularity of the overlay (and of every write kiln makes to a card).
pub const BLOCK: u64 = 4096;

/// The FAT partition of an MBR disk image: byte offset and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// Byte offset in the image.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// 1-based partition number.
    pub number: u8,
}

/// FAT partition type ids in an MBR (FAT12, FAT16 <32M, FAT16, FAT32 CHS, FAT32 LBA, FAT16 LBA).
const FAT_TYPES: [u8; 6] = [0x01, 0x04, 0x06, 0x0b, 0x0c, 0x0e];

/// Finds the first FAT partition in an MBR partition table (the Pi's boot partition).
pub fn boot_partition(disk: &impl FileExt, what: &Path) -> Result<Partition> {
    let mut mbr = [0u8; 512];
    disk.read_exact_at(&mut mbr, 0)
        .map_err(|e| Error::config(format!("{}: cannot read the partition table: {e}", what.display())))?;
    if mbr[510..512] != [0x55, 0xaa] {
        return Err(Error::config(format!(
            "{}: no MBR partition table; give a card image from `kiln build --format card`",
            what.display()
        )));
    }
    for i in 0..4 {
        let e = &mbr[446 + 16 * i..446 + 16 * (i + 1)];
        let typ = e[4];
        if typ == 0xee {
            return Err(Error::config(format!(
                "{}: a GPT disk; kiln personalises Raspberry Pi (MBR) card images",
                what.display()
            )));
        }
        let start = u32::from_le_bytes([e[8], e[9], e[10], e[11]]) as u64;
        let sectors = u32::from_le_bytes([e[12], e[13], e[14], e[15]]) as u64;
        if FAT_TYPES.contains(&typ) && sectors > 0 {
            return Ok(Partition { offset: start * 512, len: sectors * 512, number: i as u8 + 1 });
        }
    }
    Err(Error::config(format!(
        "{}: no FAT partition in the MBR; a Raspberry Pi card's first partition is FAT32 `bootfs`",
        what.display()
    )))
}

/// A copy-on-write view of a partition inside a base image: reads come from the
/// base (cached per block), writes stay in memory.
pub struct Overlay<'a> {
    base: &'a File,
    part: Partition,
    pos: u64,
    blocks: BTreeMap<u64, (Box<[u8]>, bool)>,
}

impl<'a> Overlay<'a> {
    /// A view of `part` in `base`.
    pub fn new(base: &'a File, part: Partition) -> Overlay<'a> {
        Overlay { base, part, pos: 0, blocks: BTreeMap::new() }
    }

    fn block(&mut self, index: u64) -> io::Result<&mut (Box<[u8]>, bool)> {
        if !self.blocks.contains_key(&index) {
            let mut buf = vec![0u8; BLOCK as usize].into_boxed_slice();
            let mut got = 0;
            while got < buf.len() {
                match self.base.read_at(&mut buf[got..], index * BLOCK + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.blocks.insert(index, (buf, false));
        }
        self.blocks.get_mut(&index).ok_or_else(|| io::Error::other("overlay block vanished"))
    }

    /// The blocks written (absolute image block index → 4 KiB).
    pub fn into_dirty(self) -> BTreeMap<u64, Box<[u8]>> {
        self.blocks.into_iter().filter(|(_, (_, dirty))| *dirty).map(|(i, (b, _))| (i, b)).collect()
    }

    fn span(&self, len: usize) -> usize {
        (self.part.len.saturating_sub(self.pos)).min(len as u64) as usize
    }
}

impl Read for Overlay<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.span(buf.len());
        let mut done = 0;
        while done < n {
            let abs = self.part.offset + self.pos;
            let (idx, off) = (abs / BLOCK, (abs % BLOCK) as usize);
            let k = (BLOCK as usize - off).min(n - done);
            let (b, _) = self.block(idx)?;
            buf[done..done + k].copy_from_slice(&b[off..off + k]);
            done += k;
            self.pos += k as u64;
        }
        Ok(done)
    }
}

impl Write for Overlay<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.span(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "write past the end of the FAT partition"));
        }
        let mut done = 0;
        while done < n {
            let abs = self.part.offset + self.pos;
            let (idx, off) = (abs / BLOCK, (abs % BLOCK) as usize);
            let k = (BLOCK as usize - off).min(n - done);
            let (b, dirty) = self.block(idx)?;
            // Every written block is dirty, even when it equals the base: a
            // block the base leaves unmapped (a hole, zeros) is whatever the
            // card held before, so zeros written there must reach the card.
            b[off..off + k].copy_from_slice(&buf[done..done + k]);
            *dirty = true;
            done += k;
            self.pos += k as u64;
        }
        Ok(done)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Overlay<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let p = match to {
            SeekFrom::Start(p) => p as i128,
            SeekFrom::End(d) => self.part.len as i128 + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if p < 0 || p > self.part.len as i128 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "seek outside the FAT partition"));
        }
        self.pos = p as u64;
        Ok(self.pos)
    }
}

/// One file placed on the FAT partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFile {
    /// Path on the FAT partition, `/`-separated, without a leading `/`.
    pub path: String,
    /// Content.
    pub data: Vec<u8>,
    /// Holds secrets (token, CA keys): marked hidden + system + read-only.
    pub secret: bool,
}

/// A node's card: the files and the 4 KiB blocks that differ from the base image.
#[derive(Debug, Clone)]
pub struct Personalised {
    /// Node name.
    pub node: String,
    /// The files written.
    pub files: Vec<BootFile>,
    /// The boot partition.
    pub partition: Partition,
    /// Absolute image block index (of [`BLOCK`] bytes) → content.
    pub blocks: BTreeMap<u64, Box<[u8]>>,
}

impl Personalised {
    /// Bytes that differ from the base image.
    pub fn delta_bytes(&self) -> u64 {
        self.blocks.len() as u64 * BLOCK
    }
}

fn yaml_str(s: &str) -> String {
    // JSON strings are valid YAML double-quoted scalars.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The `instance-id` cloud-init sees: unique per cluster and node, stable for
/// reflashes of the same node (cloud-init runs once per instance id).
pub fn instance_id(cluster: &Cluster, node: &str) -> String {
    let h =
        sha256_hex(format!("{}\0{}\0{}", cluster.file.name, cluster.file.ca_cert_hashes.join(","), node).as_bytes());
    format!("kiln-{}-{node}-{}", cluster.file.name, &h[..12])
}

/// Renders a node's files.
pub fn render(cluster: &Cluster, node: &FleetNode) -> Result<Vec<BootFile>> {
    let (mut config, _) = crate::userdata::node_config(cluster, node.role, Some(&node.name), true)?;
    if let Some(n) = config.node.as_mut() {
        n.node_ip = node.address.map(|a| a.ip.to_string());
    }
    if node.role == kiln_firstboot::contract::node::Role::Init {
        if let (Some(c), Some(u)) = (config.cluster.as_mut(), &node.admin_user) {
            c.admin_user = Some(u.clone());
        }
    }
    if !node.role.is_control_plane() && config.pki.as_ref().is_some_and(|p| p.has_private_key()) {
        return Err(Error::build(format!("internal: worker {} was given a private key", node.name)));
    }
    let node_toml = format!(
        "# kiln-firstboot node description for {} ({} node of cluster {}). Holds secrets.\n# Written by `kiln fleet`; kiln-firstboot reads it from /boot/firmware/kiln/node.toml.\n{}",
        node.name,
        node.role.as_str(),
        cluster.file.name,
        config.to_toml()
    );
    let meta = format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        yaml_str(&instance_id(cluster, &node.name)),
        yaml_str(&node.name)
    );
    let mut ud = format!(
        "#cloud-config\n# Written by `kiln fleet` for {} of cluster {}.\nhostname: {}\nmanage_etc_hosts: true\n",
        node.name,
        cluster.file.name,
        yaml_str(&node.name)
    );
    if let Some(u) = &node.admin_user {
        ud.push_str(&format!(
            "users:\n  - name: {}\n    groups: [adm, sudo]\n    shell: /bin/bash\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n    lock_passwd: true\n",
            yaml_str(u)
        ));
        if !node.ssh_authorized_keys.is_empty() {
            ud.push_str("    ssh_authorized_keys:\n");
            for k in &node.ssh_authorized_keys {
                ud.push_str(&format!("      - {}\n", yaml_str(k)));
            }
        }
        ud.push_str("ssh_pwauth: false\n");
    }
    if !node.ssh_authorized_keys.is_empty() {
        ud.push_str("ssh:\n  emit_keys_to_console: false\n");
    }
    let mut net = String::from("network:\n  version: 2\n  ethernets:\n");
    let static_on_eth = node.address.is_some() && !node.interface.starts_with("wl");
    let iface_block = |iface: &str, static_here: bool| -> String {
        let mut s = format!("    {iface}:\n");
        match (static_here, node.address) {
            (true, Some(a)) => {
                s.push_str(&format!(
                    "      dhcp4: false\n      dhcp6: false\n      addresses: [{}]\n",
                    yaml_str(&a.to_string())
                ));
                if let Some(g) = node.gateway {
                    // Not netplan's `to: default`: cloud-init 22.4 (Debian 12's;
                    // cloudinit/net/network_state.py parses a v2 route's `to` as an
                    // IP network) refuses it ("Address default is not a valid ip
                    // address"); netplan and every cloud-init read the explicit
                    // default network.
                    let to = if g.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
                    s.push_str(&format!(
                        "      routes:\n        - to: {}\n          via: {}\n",
                        yaml_str(to),
                        yaml_str(&g.to_string())
                    ));
                }
                if !node.dns.is_empty() {
                    let l: Vec<String> = node.dns.iter().map(|d| yaml_str(&d.to_string())).collect();
                    s.push_str(&format!("      nameservers:\n        addresses: [{}]\n", l.join(", ")));
                }
            }
            _ => s.push_str("      dhcp4: true\n"),
        }
        s
    };
    let eth = if node.interface.starts_with("wl") { "eth0" } else { node.interface.as_str() };
    net.push_str(&iface_block(eth, static_on_eth));
    if let Some(m) = &node.mac {
        // netplan v2: the settings go to the NIC with this MAC, named `eth`.
        net.push_str(&format!(
            "      match:\n        macaddress: {}\n      set-name: {}\n",
            yaml_str(m),
            yaml_str(eth)
        ));
    }
    net.push_str("      optional: true\n");
    if let Some(w) = &node.wifi {
        net.push_str("  wifis:\n");
        let wl = if node.interface.starts_with("wl") { node.interface.as_str() } else { "wlan0" };
        net.push_str(&iface_block(wl, node.address.is_some() && !static_on_eth));
        net.push_str(&format!(
            "      optional: true\n      regulatory-domain: {}\n      access-points:\n        {}:\n",
            yaml_str(&w.country),
            yaml_str(&w.ssid)
        ));
        if let Some(p) = &w.password {
            net.push_str(&format!("          password: {}\n", yaml_str(p)));
        }
        if w.hidden {
            net.push_str("          hidden: true\n");
        }
    }
    let wifi_secret = node.wifi.as_ref().is_some_and(|w| w.password.is_some());
    Ok(vec![
        BootFile { path: "kiln/node.toml".into(), data: node_toml.into_bytes(), secret: true },
        BootFile { path: "meta-data".into(), data: meta.into_bytes(), secret: false },
        BootFile { path: "user-data".into(), data: ud.into_bytes(), secret: false },
        BootFile { path: "network-config".into(), data: net.into_bytes(), secret: wifi_secret },
    ])
}

fn fat_err(image: &Path, what: &str, e: io::Error) -> Error {
    Error::build(format!(
        "{}: FAT boot partition: {what}: {e}; is it a card image from `kiln build --format card`?",
        image.display()
    ))
}

/// The time personalised FAT entries carry, the same for every node and run:
/// `SOURCE_DATE_EPOCH` when set; else the modification time of the boot
/// partition's `cmdline.txt`, which `kiln build --format card` stamps with the
/// profile's epoch; else 1980-01-01 00:00 (FAT's first day). Never month 0.
fn fat_stamp(ov: &mut Overlay<'_>, image: &Path) -> Result<fatfs::DateTime> {
    if let Ok(s) = std::env::var("SOURCE_DATE_EPOCH") {
        if !s.trim().is_empty() {
            let e = s.trim().parse::<u64>().map_err(|_| {
                Error::config(format!("SOURCE_DATE_EPOCH=`{s}` is not a number of seconds; unset it or fix it"))
            })?;
            crate::inputs::validate::epoch("SOURCE_DATE_EPOCH", e).map_err(Error::config)?;
            return Ok(crate::outputs::card::bootfs::fat_time(e));
        }
    }
    let fs = FileSystem::new(&mut *ov, FsOptions::new().update_accessed_date(false))
        .map_err(|e| fat_err(image, "cannot open it", e))?;
    let stamp = fs
        .root_dir()
        .iter()
        .flatten()
        .find(|e| e.file_name().eq_ignore_ascii_case("cmdline.txt"))
        .map(|e| e.modified())
        .filter(crate::outputs::card::bootfs::is_valid_fat_time);
    Ok(stamp.unwrap_or_else(|| crate::outputs::card::bootfs::fat_time(0)))
}

/// Writes `files` into the boot partition of `base` (an overlay; `base` is not
/// modified) and returns the blocks that changed. New and rewritten entries
/// are dated as `fat_stamp` says: `SOURCE_DATE_EPOCH`, else the partition's
/// `cmdline.txt` time, else 1980-01-01 (the same for every node and run).
pub fn personalise_files(base: &File, image: &Path, node: &str, files: Vec<BootFile>) -> Result<Personalised> {
    let part = boot_partition(base, image)?;
    let mut ov = Overlay::new(base, part);
    let clock = crate::outputs::card::bootfs::fixed_clock(fat_stamp(&mut ov, image)?);
    ov.seek(SeekFrom::Start(0)).map_err(|e| fat_err(image, "rewind", e))?;
    let mut new_dirs = Vec::new();
    {
        let fs = FileSystem::new(&mut ov, FsOptions::new().update_accessed_date(false).time_provider(clock))
            .map_err(|e| fat_err(image, "cannot open it", e))?;
        let root = fs.root_dir();
        for f in &files {
            if let Some((dir, _)) = f.path.rsplit_once('/') {
                if root.open_dir(dir).is_err() {
                    root.create_dir(dir).map_err(|e| fat_err(image, &format!("mkdir {dir}"), e))?;
                    new_dirs.push(dir.to_string());
                }
            }
            let mut fh = root.create_file(&f.path).map_err(|e| fat_err(image, &f.path, e))?;
            fh.truncate().map_err(|e| fat_err(image, &f.path, e))?;
            fh.write_all(&f.data).map_err(|e| fat_err(image, &f.path, e))?;
            fh.flush().map_err(|e| fat_err(image, &f.path, e))?;
        }
        drop(root);
        fs.unmount().map_err(|e| fat_err(image, "unmount", e))?;
    }
    let secret: Vec<&str> = files.iter().filter(|f| f.secret).map(|f| f.path.as_str()).collect();
    finish_fat(&mut ov, &new_dirs, &secret).map_err(|e| fat_err(image, "directory entries", e))?;
    Ok(Personalised { node: node.to_string(), files, partition: part, blocks: ov.into_dirty() })
}

/// Renders and writes a node's files (see [`personalise_files`]).
pub fn personalise(base: &File, image: &Path, cluster: &Cluster, node: &FleetNode) -> Result<Personalised> {
    personalise_files(base, image, &node.name, render(cluster, node)?)
}

/// FAT attributes for secret files: read-only + hidden + system, the most FAT
/// can say (it has no owners or permission bits; the Pi's mount options decide who reads).
const SECRET_ATTRS: u8 = 0x01 | 0x02 | 0x04;

/// Raw access to a FAT12/16/32 volume's directories, for the two things the
/// `fatfs` crate (0.3) does not do: set attributes, and write `.`/`..` entries
/// without long-name entries (it writes LFN entries before them, which
/// `fsck.vfat` reports and repairs).
struct RawFat {
    bps: u64,
    reserved: u64,
    fat32: bool,
    fat12: bool,
    root_cluster: u64,
    root_region: (u64, u64),
    first_data: u64,
    spc: u64,
}

/// A directory entry found by [`RawFat::find`]: its byte offset, attributes, first cluster.
struct Found {
    offset: u64,
    attr: u8,
    cluster: u64,
}

impl RawFat {
    fn open<T: Read + Seek>(disk: &mut T) -> io::Result<RawFat> {
        let mut bs = [0u8; 512];
        disk.seek(SeekFrom::Start(0))?;
        disk.read_exact(&mut bs)?;
        let u16at = |o: usize| u16::from_le_bytes([bs[o], bs[o + 1]]) as u64;
        let u32at = |o: usize| u32::from_le_bytes([bs[o], bs[o + 1], bs[o + 2], bs[o + 3]]) as u64;
        let bps = u16at(11);
        let spc = bs[13] as u64;
        if bps == 0 || spc == 0 {
            return Err(io::Error::other("not a FAT boot sector"));
        }
        let reserved = u16at(14);
        let nfats = bs[16] as u64;
        let root_entries = u16at(17);
        let total = if u16at(19) != 0 { u16at(19) } else { u32at(32) };
        let fat_size = if u16at(22) != 0 { u16at(22) } else { u32at(36) };
        let root_dir_sectors = (root_entries * 32).div_ceil(bps);
        let first_data = reserved + nfats * fat_size + root_dir_sectors;
        let clusters = total.saturating_sub(first_data) / spc;
        let fat32 = clusters >= 65525;
        Ok(RawFat {
            bps,
            reserved,
            fat32,
            fat12: clusters < 4085,
            root_cluster: if fat32 { u32at(44) } else { 0 },
            root_region: ((reserved + nfats * fat_size) * bps, root_entries * 32),
            first_data,
            spc,
        })
    }

    fn cluster_off(&self, c: u64) -> u64 {
        (self.first_data + (c.saturating_sub(2)) * self.spc) * self.bps
    }

    fn next<T: Read + Seek>(&self, disk: &mut T, c: u64) -> io::Result<Option<u64>> {
        let fat = self.reserved * self.bps;
        let (v, end) = if self.fat32 {
            let mut b = [0u8; 4];
            disk.seek(SeekFrom::Start(fat + c * 4))?;
            disk.read_exact(&mut b)?;
            (u32::from_le_bytes(b) as u64 & 0x0fff_ffff, 0x0fff_fff8)
        } else if self.fat12 {
            let mut b = [0u8; 2];
            disk.seek(SeekFrom::Start(fat + c + c / 2))?;
            disk.read_exact(&mut b)?;
            let v = u16::from_le_bytes(b) as u64;
            (if c % 2 == 1 { v >> 4 } else { v & 0xfff }, 0xff8)
        } else {
            let mut b = [0u8; 2];
            disk.seek(SeekFrom::Start(fat + c * 2))?;
            disk.read_exact(&mut b)?;
            (u16::from_le_bytes(b) as u64, 0xfff8)
        };
        Ok((v >= 2 && v < end).then_some(v))
    }

    /// A directory's bytes as (offset, length) extents; cluster 0 is the root.
    fn extents<T: Read + Seek>(&self, disk: &mut T, first: u64) -> io::Result<Vec<(u64, u64)>> {
        let first = if first == 0 { self.root_cluster } else { first };
        if first == 0 {
            return Ok(vec![self.root_region]);
        }
        let mut out = Vec::new();
        let mut c = Some(first);
        while let Some(cl) = c {
            out.push((self.cluster_off(cl), self.bps * self.spc));
            if out.len() > 65536 {
                return Err(io::Error::other("directory cluster chain loops"));
            }
            c = self.next(disk, cl)?;
        }
        Ok(out)
    }

    /// Finds `name` (long or 8.3, case-insensitive) in directory `dir` (0: root).
    fn find<T: Read + Seek>(&self, disk: &mut T, dir: u64, name: &str) -> io::Result<Option<Found>> {
        let mut lfn: Vec<u16> = Vec::new();
        for (off, len) in self.extents(disk, dir)? {
            let mut buf = vec![0u8; len as usize];
            disk.seek(SeekFrom::Start(off))?;
            disk.read_exact(&mut buf)?;
            for (k, e) in buf.chunks(32).enumerate() {
                if e[0] == 0 {
                    return Ok(None);
                }
                if e[0] == 0xe5 {
                    lfn.clear();
                    continue;
                }
                if e[11] == 0x0f {
                    // A long-name fragment: 13 UTF-16 units, stored last fragment first.
                    let seq = (e[0] & 0x1f) as usize;
                    if e[0] & 0x40 != 0 {
                        lfn = vec![0xffff; seq * 13];
                    }
                    if seq == 0 || seq * 13 > lfn.len() {
                        lfn.clear();
                        continue;
                    }
                    let units = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
                    for (j, o) in units.iter().enumerate() {
                        lfn[(seq - 1) * 13 + j] = u16::from_le_bytes([e[*o], e[o + 1]]);
                    }
                    continue;
                }
                let long = if lfn.is_empty() {
                    short_to_string(&e[..11])
                } else {
                    let end = lfn.iter().position(|u| *u == 0 || *u == 0xffff).unwrap_or(lfn.len());
                    String::from_utf16_lossy(&lfn[..end])
                };
                lfn.clear();
                if long.eq_ignore_ascii_case(name) || short_to_string(&e[..11]).eq_ignore_ascii_case(name) {
                    let cluster =
                        (u16::from_le_bytes([e[20], e[21]]) as u64) << 16 | u16::from_le_bytes([e[26], e[27]]) as u64;
                    return Ok(Some(Found { offset: off + k as u64 * 32, attr: e[11], cluster }));
                }
            }
        }
        Ok(None)
    }

    /// Walks `a/b/c` from the root.
    fn lookup<T: Read + Seek>(&self, disk: &mut T, path: &str) -> io::Result<(Found, u64)> {
        let mut dir = 0;
        let parts: Vec<&str> = path.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let f =
                self.find(disk, dir, part)?.ok_or_else(|| io::Error::other(format!("{path}: `{part}` not found")))?;
            if i + 1 == parts.len() {
                return Ok((f, dir));
            }
            dir = f.cluster;
        }
        Err(io::Error::other("empty path"))
    }

    /// Rewrites a directory's first cluster so `.` and `..` come first without
    /// long-name entries, and `..` of a child of the root points at cluster 0.
    fn fix_dots<T: Read + Write + Seek>(&self, disk: &mut T, dir: u64, parent: u64) -> io::Result<()> {
        let Some(&(off, len)) = self.extents(disk, dir)?.first() else { return Ok(()) };
        let mut buf = vec![0u8; len as usize];
        disk.seek(SeekFrom::Start(off))?;
        disk.read_exact(&mut buf)?;
        let entries: Vec<&[u8]> = buf.chunks(32).take_while(|e| e[0] != 0).collect();
        let mut out: Vec<u8> = Vec::with_capacity(buf.len());
        let mut pending: Vec<&[u8]> = Vec::new();
        for e in entries {
            if e[11] == 0x0f && e[0] != 0xe5 {
                pending.push(e);
                continue;
            }
            let dot = &e[..11] == b".          ";
            let dotdot = &e[..11] == b"..         ";
            if !(dot || dotdot) {
                for p in pending.drain(..) {
                    out.extend_from_slice(p);
                }
            }
            pending.clear();
            let mut e = e.to_vec();
            if dotdot && (parent == 0 || parent == self.root_cluster) {
                e[20..22].copy_from_slice(&[0, 0]);
                e[26..28].copy_from_slice(&[0, 0]);
            }
            out.extend_from_slice(&e);
        }
        out.resize(buf.len(), 0);
        if out != buf {
            disk.seek(SeekFrom::Start(off))?;
            disk.write_all(&out)?;
        }
        Ok(())
    }
}

/// Repairs the directories kiln created and marks the secret files.
fn finish_fat<T: Read + Write + Seek>(disk: &mut T, new_dirs: &[String], secret: &[&str]) -> io::Result<()> {
    let fat = RawFat::open(disk)?;
    for d in new_dirs {
        let (f, parent) = fat.lookup(disk, d)?;
        fat.fix_dots(disk, f.cluster, parent)?;
    }
    for p in secret {
        let (f, _) = fat.lookup(disk, p)?;
        disk.seek(SeekFrom::Start(f.offset + 11))?;
        disk.write_all(&[f.attr | SECRET_ATTRS])?;
    }
    Ok(())
}

/// The name an 8.3 directory entry spells (`NODE    TOM` → `node.tom`).
fn short_to_string(e: &[u8]) -> String {
    let base = String::from_utf8_lossy(&e[..8]).trim_end().to_string();
    let ext = String::from_utf8_lossy(&e[8..11]).trim_end().to_string();
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

/// Reads a file back from a FAT partition at `offset..offset+len` of `disk`.
pub fn read_back(disk: &File, part: Partition, path: &str) -> io::Result<Vec<u8>> {
    let mut ov = Overlay::new(disk, part);
    let fs = FileSystem::new(&mut ov, FsOptions::new().update_accessed_date(false))?;
    let mut f = fs.root_dir().open_file(path)?;
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    Ok(v)
}
