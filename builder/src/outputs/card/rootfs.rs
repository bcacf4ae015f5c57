//! Writes kiln's image tree into the card's ext4 root filesystem, held as a
//! plain (sparse) file — no mount, no loop device, no root.
//!
//! e2fsprogs' own tools do the work on the file: `e2fsck -fn` checks the
//! base first (a damaged base is an error unless `[base_image] repair`),
//! `resize2fs` grows it, `debugfs -w -f CMDS` adds every entry (`mkdir`, `write`,
//! `symlink`, then `sif` for mode, uid, gid and the four times — debugfs
//! writes inodes directly, so ownership needs no privileges), and `e2fsck
//! -fn` must then find nothing. Every tool runs with `E2FSPROGS_FAKE_TIME`
//! set to the build's epoch, so the times e2fsprogs stamps itself (new
//! inodes, directory mtimes) are the same on every build; the superblock's
//! last-check and write times, which e2fsck and resize2fs take from the real
//! clock, are set to the epoch with `debugfs ssv` after the last repair.

use crate::error::{Error, IoContext, Result};
use crate::hash;
use crate::image::tree::{Content, Node, Origin, Tree};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// What a path already is in the base filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    Dir,
    File,
    Symlink,
    Other,
}

/// Runs an e2fsprogs tool with the fixed clock; returns (status code, stdout, stderr).
fn tool(name: &str, args: &[&str], cwd: Option<&Path>, epoch: u64) -> Result<(i32, String, String)> {
    let mut c = Command::new(name);
    c.args(args).env("E2FSPROGS_FAKE_TIME", epoch.to_string()).env("LC_ALL", "C");
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    let o = c.output().map_err(|e| {
        Error::build(format!("cannot run {name}: {e}; install e2fsprogs (Debian: apt-get install e2fsprogs)"))
    })?;
    Ok((
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    ))
}

/// The problems e2fsck reported: its output without the pass banners.
fn findings(out: &str, err: &str) -> String {
    let lines: Vec<&str> = out
        .lines()
        .chain(err.lines())
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with("Pass ") && !l.starts_with("e2fsck "))
        .collect();
    lines.join("\n")
}

/// Checks the base image's root filesystem with `e2fsck -fn` before kiln
/// touches it. A damaged one is an error naming what e2fsck found, unless
/// `repair` (`[base_image] repair = true`): then `e2fsck -fy` repairs it and
/// what it repaired is returned for the build to print. e2fsck's exit codes
/// (e2fsck(8)): 0 clean, 1 errors corrected, 2 corrected and reboot, 4 left
/// uncorrected, 8 operational error.
pub fn check_base(part: &Path, epoch: u64, repair: bool) -> Result<Option<String>> {
    let p = part.to_string_lossy();
    let (code, out, err) = tool("e2fsck", &["-fn", &p], None, epoch)?;
    if code == 0 {
        return Ok(None);
    }
    if code >= 8 {
        return Err(Error::build(format!(
            "e2fsck -fn could not check the base image's root filesystem ({code}):\n{out}{err}"
        )));
    }
    let found = findings(&out, &err);
    if !repair {
        return Err(Error::config(format!(
            "the base image's root filesystem is damaged (e2fsck -fn exit {code}):\n{found}\nuse an undamaged base image (check the download and its pin), or set `repair = true` in [base_image] to let e2fsck -fy repair it and print what it changed"
        )));
    }
    let (code, out, err) = tool("e2fsck", &["-fy", &p], None, epoch)?;
    if !(0..=2).contains(&code) {
        return Err(Error::config(format!(
            "e2fsck -fy could not repair the base image's root filesystem (exit {code}):\n{}\nuse another base image",
            findings(&out, &err)
        )));
    }
    Ok(Some(findings(&out, &err)))
}

/// After kiln's writes: `e2fsck -fy`, the superblock times set to the epoch,
/// then `e2fsck -fn` (must be clean). Returns what `-fy` repaired, if it
/// repaired anything (exit 1), for the build to print: it is never accepted
/// silently.
pub fn fsck(part: &Path, epoch: u64) -> Result<Option<String>> {
    let p = part.to_string_lossy();
    let (code, out, err) = tool("e2fsck", &["-fy", &p], None, epoch)?;
    if code > 1 {
        return Err(Error::build(format!("e2fsck -fy on the root filesystem failed ({code}):\n{out}{err}")));
    }
    let repaired = (code == 1).then(|| findings(&out, &err));
    // e2fsck and resize2fs 1.47.0 stamp the superblock's last-check and
    // write times from the real clock despite E2FSPROGS_FAKE_TIME; debugfs
    // honours it, so it sets both to the epoch.
    let stamp = part.with_extension("stamp.cmds");
    std::fs::write(&stamp, format!("ssv lastcheck @{epoch}\nssv wtime @{epoch}\n")).io_ctx(stamp.display())?;
    let (code, out, err) = tool("debugfs", &["-w", "-f", &stamp.to_string_lossy(), &p], None, epoch)?;
    if code != 0 || err.lines().any(|l| !l.trim().is_empty() && !l.starts_with("debugfs ")) {
        return Err(Error::build(format!("debugfs could not set the superblock times ({code}):\n{out}{err}")));
    }
    let (code, out, err) = tool("e2fsck", &["-fn", &p], None, epoch)?;
    if code != 0 {
        return Err(Error::build(format!(
            "e2fsck -fn still finds problems in the root filesystem ({code}):\n{out}{err}\nthe base image's root filesystem may be damaged; check it with `e2fsck -fn`"
        )));
    }
    Ok(repaired)
}

/// Grows the ext4 file system in `part` (already extended to `bytes`) with
/// `resize2fs -f`: [`check_base`] has just found it clean, so resize2fs' own
/// "run e2fsck first" check (last check older than last mount) is skipped.
pub fn grow(part: &Path, bytes: u64, epoch: u64) -> Result<()> {
    let p = part.to_string_lossy();
    let size = format!("{}K", bytes / 1024);
    let (code, out, err) = tool("resize2fs", &["-f", &p, &size], None, epoch)?;
    if code != 0 {
        return Err(Error::build(format!("resize2fs {size} on the root filesystem failed ({code}):\n{out}{err}")));
    }
    Ok(())
}

/// Refuses paths debugfs' command parser would split or misread.
fn safe(path: &str) -> Result<()> {
    if path.is_empty() || path.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\') {
        return Err(Error::config(format!(
            "image path {path:?} has whitespace, quotes or control characters, which the card writer (debugfs) cannot write; rename it in the overlay"
        )));
    }
    Ok(())
}

/// Lists the given directories of the filesystem in `part` with one
/// `debugfs -f` run (`ls -p`), returning what each child is.
fn existing(part: &Path, dirs: &BTreeSet<String>, work: &Path, epoch: u64) -> Result<BTreeMap<String, Existing>> {
    let mut cmds = String::new();
    for d in dirs {
        let _ = writeln!(cmds, "ls -p {d}");
    }
    let file = work.join("list.cmds");
    std::fs::write(&file, cmds).io_ctx(file.display())?;
    let (_, out, _) = tool("debugfs", &["-f", &file.to_string_lossy(), &part.to_string_lossy()], None, epoch)?;
    let mut map = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in out.lines() {
        if let Some(d) = line.strip_prefix("debugfs: ls -p ") {
            current = Some(d.trim().to_string());
            continue;
        }
        let Some(dir) = &current else { continue };
        // `/inode/mode/uid/gid/name/size/`
        let f: Vec<&str> = line.split('/').collect();
        if f.len() < 7 || !f[0].is_empty() {
            continue;
        }
        let Ok(mode) = u32::from_str_radix(f[2], 8) else { continue };
        let name = f[5];
        if name == "." || name == ".." || name.is_empty() {
            continue;
        }
        let kind = match mode & 0o170000 {
            0o040000 => Existing::Dir,
            0o100000 => Existing::File,
            0o120000 => Existing::Symlink,
            _ => Existing::Other,
        };
        let full = if dir == "/" { format!("/{name}") } else { format!("{dir}/{name}") };
        map.insert(full, kind);
    }
    Ok(map)
}

/// Adds every entry of `tree` to the ext4 filesystem in `part`: owned as the
/// tree says (root), with its mode and `epoch` as every time. Directories the
/// base already has keep their attributes unless the tree names them
/// explicitly; files and symlinks the tree names replace the base's.
pub fn add_tree(part: &Path, tree: &Tree, work: &Path, epoch: u64) -> Result<usize> {
    let part = &std::fs::canonicalize(part).io_ctx(part.display())?;
    let src = work.join("src");
    std::fs::create_dir_all(&src).io_ctx(src.display())?;
    let mut dirs: BTreeSet<String> = BTreeSet::from(["/".to_string()]);
    for (key, e) in tree.iter() {
        let path = format!("/{key}");
        safe(&path)?;
        if let Some((parent, _)) = path.rsplit_once('/') {
            dirs.insert(if parent.is_empty() { "/".into() } else { parent.to_string() });
        }
        if matches!(e.node, Node::Dir) {
            dirs.insert(path);
        }
    }
    let have = existing(part, &dirs, work, epoch)?;
    // A file or symlink of the tree replaces a file or symlink of the base image;
    // over a directory (or anything else) it is an error.
    let replace_leaf = |cmds: &mut String, path: &str, before: Option<Existing>, kind: &str| -> Result<()> {
        match before {
            None => Ok(()),
            Some(Existing::File) | Some(Existing::Symlink) => {
                let _ = writeln!(cmds, "rm {path}");
                Ok(())
            }
            Some(other) => Err(Error::config(format!(
                "{path}: the image tree has a {kind} where the base image has a {other:?}; remove it from the overlay or profile, or use a base image without it"
            ))),
        }
    };
    let mut cmds = String::new();
    let mut n = 0usize;
    for (key, e) in tree.iter() {
        let path = format!("/{key}");
        let before = have.get(&path).copied();
        let (type_bits, explicit) = match &e.node {
            Node::Dir => {
                match before {
                    Some(Existing::Dir) => {}
                    None => {
                        let _ = writeln!(cmds, "mkdir {path}");
                    }
                    Some(other) => {
                        return Err(Error::config(format!(
                            "{path}: the image tree has a directory where the base image has a {other:?}; the card cannot hold both"
                        )))
                    }
                }
                (0o040000, before.is_none() || e.origin != Origin::Implicit)
            }
            Node::File(content) => {
                replace_leaf(&mut cmds, &path, before, "file")?;
                let name = format!("src/{n:06}");
                let host = work.join(&name);
                match content {
                    Content::Inline(bytes) => std::fs::write(&host, bytes).io_ctx(host.display())?,
                    Content::Generated(_) => crate::outputs::tarball::copy_planned(key, e, content, &host)?,
                    Content::Disk { path: from, expect_sha256, .. } => {
                        if expect_sha256.is_some() {
                            let got = hash::sha256_file(from).io_ctx(from.display())?;
                            crate::outputs::tarball::verify(&path, content, &got)?;
                        }
                        // debugfs reads it from inside `work`: a relative path would dangle.
                        let from = std::path::absolute(from).io_ctx(from.display())?;
                        std::os::unix::fs::symlink(&from, &host).io_ctx(host.display())?;
                    }
                }
                let _ = writeln!(cmds, "write {name} {path}");
                (0o100000, true)
            }
            Node::Symlink(target) => {
                safe(target)?;
                replace_leaf(&mut cmds, &path, before, "symlink")?;
                let _ = writeln!(cmds, "symlink {path} {target}");
                (0o120000, true)
            }
        };
        if explicit {
            let mode = if type_bits == 0o120000 { 0o777 } else { e.mode & 0o7777 };
            let _ = writeln!(cmds, "sif {path} mode 0{:o}", type_bits | mode);
            let _ = writeln!(cmds, "sif {path} uid {}", e.uid);
            let _ = writeln!(cmds, "sif {path} gid {}", e.gid);
            for t in ["atime", "mtime", "ctime", "crtime"] {
                let _ = writeln!(cmds, "sif {path} {t} @{epoch}");
            }
        }
        n += 1;
    }
    let file = work.join("write.cmds");
    std::fs::write(&file, &cmds).io_ctx(file.display())?;
    let (code, _, err) = tool("debugfs", &["-w", "-f", "write.cmds", &part.to_string_lossy()], Some(work), epoch)?;
    // debugfs reports command errors on stderr and still exits 0; only its banner is expected.
    let problems: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs ")).collect();
    if code != 0 || !problems.is_empty() {
        return Err(Error::build(format!(
            "debugfs could not write the image tree into the root filesystem:\n{}\n(commands in {})",
            problems.join("\n"),
            file.display()
        )));
    }
    Ok(n)
}
