//! The overlay tarball writer: a deterministic `.tar.gz` of the image tree.
//!
//! Entries are in sorted path order with mtime = epoch, uid/gid 0 (`root`),
//! no device nodes, and a gzip header without name or timestamp, so the same
//! tree always gives the same bytes. Content read from disk is hashed while it
//! is written; a file that does not match its pin fails the build (exit 3).

use crate::cache::HashingReader;
use crate::error::{Error, IoContext, Result};
use crate::hash;
use crate::tree::{Content, Entry, Node, Origin, Tree};
use flate2::{Compression, GzBuilder};
use serde::Serialize;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

/// One path of the image as recorded in `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRecord {
    /// Absolute path inside the image.
    pub path: String,
    /// `file`, `dir` or `symlink`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Octal permission bits.
    pub mode: String,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Size of a file in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// sha256 of a file's content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Target of a symlink.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Where it came from.
    pub origin: Origin,
}

/// Opens an entry's content for reading, wrapped so its sha256 is computed.
fn open(content: &Content) -> Result<HashingReader<Box<dyn Read + '_>>> {
    let r: Box<dyn Read> = match content {
        Content::Inline(b) => Box::new(&b[..]),
        Content::Disk { path, .. } => Box::new(File::open(path).io_ctx(path.display())?),
    };
    Ok(HashingReader::new(r))
}

/// Checks a streamed file against its pin, if it has one.
pub fn verify(path: &str, content: &Content, actual: &str) -> Result<()> {
    if let Content::Disk { path: src, expect_sha256: Some(want), .. } = content {
        if !want.eq_ignore_ascii_case(actual) {
            return Err(Error::verify(format!(
                "{path}: cached file {} changed on disk: expected sha256 {want}, found {actual}; delete it and build again",
                src.display()
            )));
        }
    }
    Ok(())
}

/// Builds the manifest record of an entry whose content hash is known.
pub fn record(path: &str, e: &Entry, sha256: Option<String>) -> FileRecord {
    let (kind, size, target) = match &e.node {
        Node::File(c) => ("file", Some(c.size()), None),
        Node::Dir => ("dir", None, None),
        Node::Symlink(t) => ("symlink", None, Some(t.clone())),
    };
    FileRecord {
        path: format!("/{path}"),
        kind,
        mode: format!("{:04o}", e.mode),
        uid: e.uid,
        gid: e.gid,
        size,
        sha256,
        target,
        origin: e.origin.clone(),
    }
}

/// Writes `tree` as a gzip tarball to `out` and returns one record per entry.
pub fn write(tree: &Tree, epoch: u64, out: &Path) -> Result<Vec<FileRecord>> {
    let file = File::create(out).io_ctx(out.display())?;
    let gz = GzBuilder::new().mtime(0).write(BufWriter::with_capacity(1 << 20, file), Compression::new(6));
    let mut builder = tar::Builder::new(gz);
    builder.mode(tar::HeaderMode::Deterministic);
    let mut records = Vec::with_capacity(tree.len());
    for (path, e) in tree.iter() {
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode);
        h.set_uid(e.uid as u64);
        h.set_gid(e.gid as u64);
        h.set_mtime(epoch);
        if e.uid == 0 {
            h.set_username("root").io_ctx(path)?;
        }
        if e.gid == 0 {
            h.set_groupname("root").io_ctx(path)?;
        }
        match &e.node {
            Node::File(content) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(content.size());
                let mut r = open(content)?;
                builder.append_data(&mut h, path, &mut r).io_ctx(format!("writing /{path} to {}", out.display()))?;
                let sha = r.finish();
                verify(path, content, &sha)?;
                records.push(record(path, e, Some(sha)));
            }
            Node::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                builder.append_data(&mut h, format!("{path}/"), io::empty()).io_ctx(out.display())?;
                records.push(record(path, e, None));
            }
            Node::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                builder.append_link(&mut h, path, target).io_ctx(out.display())?;
                records.push(record(path, e, None));
            }
        }
    }
    let gz = builder.into_inner().io_ctx(out.display())?;
    let mut w = gz.finish().io_ctx(out.display())?;
    w.flush().io_ctx(out.display())?;
    w.into_inner()
        .map_err(|e| Error::build(format!("{}: {}", out.display(), e.error())))?
        .sync_all()
        .io_ctx(out.display())?;
    Ok(records)
}

/// sha256 of a whole output file.
pub fn digest(path: &Path) -> Result<String> {
    hash::sha256_file(path).io_ctx(path.display())
}
