//! Edits the card's FAT boot partition in place inside the image file with
//! the `fatfs` crate (no mount, no mtools): the kernel command line gets the
//! memory cgroup.
//!
//! Raspberry Pi kernels build the memory cgroup in but switch it off with
//! `cgroup_disable=memory` in the bootargs the firmware passes from the
//! device tree; `cgroup_enable=memory` later on the command line switches it
//! back on, and `cmdline.txt` is appended after the device tree's values
//! (raspberrypi/linux#6980, maintainer pelwell, 2025-08: "That should be all
//! that is required — no `cgroup_memory=1`"; raspberrypi/linux#6439 moved the
//! default to the command line). `cgroup_memory=1`, the pre-4.14 spelling
//! (raspberrypi/linux#1950), is only logged as unknown by current kernels, so
//! kiln does not add it. kubelet needs the memory controller: it refuses to
//! start without it (kubeadm's `SystemVerification` preflight, "missing
//! required cgroups: memory").

use crate::error::{Error, IoContext, Result};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The kernel parameter that enables the memory cgroup on Raspberry Pi kernels.
pub const MEMORY_CGROUP: &str = "cgroup_enable=memory";

/// A window of a file: a partition inside a disk image, as one seekable stream.
pub struct Slice {
    file: File,
    start: u64,
    len: u64,
    pos: u64,
}

impl Slice {
    /// The `len` bytes of `file` from `start`.
    pub fn new(file: File, start: u64, len: u64) -> Slice {
        Slice { file, start, len, pos: 0 }
    }
}

impl Read for Slice {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        let k = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += k as u64;
        Ok(k)
    }
}

impl Write for Slice {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "write past the end of the partition"));
        }
        let k = self.file.write_at(&buf[..n], self.start + self.pos)?;
        self.pos += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Slice {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let p = match to {
            SeekFrom::Start(p) => p as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
            SeekFrom::End(d) => self.len as i128 + d as i128,
        };
        if p < 0 || p > self.len as i128 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "seek outside the partition"));
        }
        self.pos = p as u64;
        Ok(self.pos)
    }
}

/// A FAT clock that always reads one time, so written directory entries
/// carry the same dates on every build.
#[derive(Debug)]
struct FixedClock(fatfs::DateTime);

impl fatfs::TimeProvider for FixedClock {
    fn get_current_date(&self) -> fatfs::Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        self.0
    }
}

/// A clock for `fatfs` that always reads `at`. fatfs 0.3 takes a `&'static`
/// time provider, so one clock is leaked per distinct time a process uses
/// (a build or a fleet run uses one).
pub fn fixed_clock(at: fatfs::DateTime) -> &'static dyn fatfs::TimeProvider {
    type Key = (u16, u16, u16, u16, u16, u16);
    static CLOCKS: std::sync::Mutex<Vec<(Key, &'static FixedClock)>> = std::sync::Mutex::new(Vec::new());
    let key = (at.date.year, at.date.month, at.date.day, at.time.hour, at.time.min, at.time.sec);
    let mut clocks = CLOCKS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, c)) = clocks.iter().find(|(k, _)| *k == key) {
        return *c;
    }
    let c: &'static FixedClock = Box::leak(Box::new(FixedClock(at)));
    clocks.push((key, c));
    c
}

/// Whether `d` is a date-time FAT can store and tools read back (month 1–12,
/// day 1–31, 1980–2107): `fatfs`' default clock without a real-time source
/// stamps month 0 and day 0, which mtools shows as `1980-00-00`.
pub fn is_valid_fat_time(d: &fatfs::DateTime) -> bool {
    (1980..=2107).contains(&d.date.year)
        && (1..=12).contains(&d.date.month)
        && (1..=31).contains(&d.date.day)
        && d.time.hour < 24
        && d.time.min < 60
        && d.time.sec < 60
}

/// The FAT date-time of `epoch` (UTC; FAT cannot go before 1980 or after 2107).
pub fn fat_time(epoch: u64) -> fatfs::DateTime {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let year = year.clamp(1980, 2107) as u16;
    fatfs::DateTime {
        date: fatfs::Date { year, month: month as u16, day: day as u16 },
        time: fatfs::Time {
            hour: (secs / 3600) as u16,
            min: (secs % 3600 / 60) as u16,
            sec: (secs % 60) as u16,
            millis: 0,
        },
    }
}

/// Adds `cgroup_enable=memory` to the single line of `cmdline.txt` (dropping a
/// `cgroup_disable=memory` there); returns whether the text changed.
pub fn cmdline_with_memory_cgroup(text: &str) -> (String, bool) {
    let line = text.lines().next().unwrap_or("");
    let mut words: Vec<&str> = line.split_whitespace().filter(|w| *w != "cgroup_disable=memory").collect();
    if !words.contains(&MEMORY_CGROUP) {
        words.push(MEMORY_CGROUP);
    }
    let new = format!("{}\n", words.join(" "));
    let changed = new != text;
    (new, changed)
}

/// Opens the FAT partition of `image` at `offset` (`len` bytes) and rewrites
/// `cmdline.txt` with the memory cgroup enabled. Returns the new command line.
pub fn enable_memory_cgroup(image: &Path, offset: u64, len: u64, epoch: u64) -> Result<String> {
    let file = File::options().read(true).write(true).open(image).io_ctx(image.display())?;
    let opts = fatfs::FsOptions::new().update_accessed_date(false).time_provider(fixed_clock(fat_time(epoch)));
    let fat = |e: io::Error| {
        Error::config(format!("the base image's boot partition is not a FAT file system kiln can edit: {e}"))
    };
    let fs = fatfs::FileSystem::new(Slice::new(file, offset, len), opts).map_err(fat)?;
    let new = {
        let root = fs.root_dir();
        let mut f = root.open_file("cmdline.txt").map_err(|e| {
            Error::config(format!(
                "the boot partition has no cmdline.txt ({e}); a Raspberry Pi base image (Raspberry Pi OS, Ubuntu for Raspberry Pi) has one"
            ))
        })?;
        let mut text = String::new();
        f.read_to_string(&mut text).map_err(|e| Error::config(format!("cmdline.txt is not text: {e}")))?;
        let (new, changed) = cmdline_with_memory_cgroup(&text);
        if changed {
            f.seek(SeekFrom::Start(0)).map_err(fat)?;
            f.truncate().map_err(fat)?;
            f.write_all(new.as_bytes()).map_err(fat)?;
            f.flush().map_err(fat)?;
        }
        new
    };
    fs.unmount().map_err(fat)?;
    Ok(new)
}

/// Files whose presence at the root of a boot partition says its OS runs
/// cloud-init's NoCloud datasource there (both are required by NoCloud;
/// Raspberry Pi OS trixie and Ubuntu for Raspberry Pi ship stock copies).
pub const CLOUD_INIT_SEED: [&str; 2] = ["user-data", "meta-data"];

/// Whether the FAT partition of `image` at `offset` (`len` bytes) holds the
/// cloud-init NoCloud seed files ([`CLOUD_INIT_SEED`]). Read only.
pub fn has_cloud_init_seed(image: &Path, offset: u64, len: u64) -> Result<bool> {
    let file = File::open(image).io_ctx(image.display())?;
    let fat =
        |e: io::Error| Error::config(format!("{}: the boot partition is not a FAT file system: {e}", image.display()));
    let fs = fatfs::FileSystem::new(ReadOnly(Slice::new(file, offset, len)), fatfs::FsOptions::new()).map_err(fat)?;
    let names: Vec<String> = fs.root_dir().iter().flatten().map(|e| e.file_name().to_ascii_lowercase()).collect();
    Ok(CLOUD_INIT_SEED.iter().all(|n| names.iter().any(|x| x == n)))
}

/// A [`Slice`] that refuses writes (fatfs opens volumes read-write).
struct ReadOnly(Slice);

impl Read for ReadOnly {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for ReadOnly {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for ReadOnly {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.0.seek(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_gets_the_flag_once() {
        let (t, c) = cmdline_with_memory_cgroup("console=tty1 root=PARTUUID=1-02 rootwait cgroup_disable=memory\n");
        assert!(c);
        assert_eq!(t, "console=tty1 root=PARTUUID=1-02 rootwait cgroup_enable=memory\n");
        let (u, c2) = cmdline_with_memory_cgroup(&t);
        assert!(!c2);
        assert_eq!(u, t);
    }

    #[test]
    fn fat_dates() {
        let d = fat_time(1_762_905_600); // 2025-11-12T00:00:00Z
        assert_eq!((d.date.year, d.date.month, d.date.day, d.time.hour), (2025, 11, 12, 0));
        assert_eq!(fat_time(0).date.year, 1980);
    }
}
