//! The overlay tarball writer: a deterministic `.tar.gz` or `.tar.zst` of
//! the image tree.
//!
//! Entries are in sorted path order with mtime = epoch, uid/gid 0 (`root`),
//! no device nodes, and a gzip header without name or timestamp, so the same
//! tree always gives the same bytes. The gzip stream is compressed on every
//! core by [`pgzip`](crate::outputs::pgzip) (libdeflate, level 6 by default), the zstd
//! stream by zstd's worker threads; neither output depends on the number of
//! threads. Content read from disk is hashed while it
//! is written and must be exactly what was planned ([`Planned`]); otherwise
//! the build fails and writes nothing.

use crate::error::{Error, IoContext, Result};
use crate::hash;
use crate::image::tree::{Content, Entry, Node, Origin, Tree};
use crate::outputs::pgzip;
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

/// Reads a file entry's content exactly as it was planned when the tree was
/// built: the planned number of bytes, hashing to the planned sha256. A file
/// that is shorter, longer or different when it is packed fails the read (no
/// output is written): exit 3 for a pinned or cached file, exit 1 for an
/// overlay file that changed while the build ran. Local files are opened only
/// if they are regular files. Nothing is opened until the first read.
pub struct Planned {
    image_path: String,
    content: Content,
    overlay: bool,
    reader: Option<Box<dyn Read + Send>>,
    hasher: sha2::Sha256,
    read: u64,
    done: Option<String>,
    failure: Option<Error>,
}

impl Planned {
    /// A reader for the content of the entry at `image_path` (tree key form).
    pub fn new(image_path: &str, entry: &Entry, content: &Content) -> Planned {
        use sha2::Digest;
        Planned {
            image_path: image_path.to_string(),
            content: content.clone(),
            overlay: matches!(entry.origin, Origin::Overlay { .. }),
            reader: None,
            hasher: sha2::Sha256::new(),
            read: 0,
            done: None,
            failure: None,
        }
    }

    /// The sha256 of the content, once it was read to the end and matched.
    pub fn digest(&self) -> Option<&str> {
        self.done.as_deref()
    }

    /// Why the read failed, with its exit code, if it failed on the content.
    pub fn take_failure(&mut self) -> Option<Error> {
        self.failure.take()
    }

    fn fail(&mut self, what: String) -> io::Error {
        let e = match (&self.content, self.overlay) {
            (Content::Disk { path, .. }, true) => Error::build(format!(
                "/{}: overlay file {} changed while kiln was packing it ({what}); nothing was written; run the build again once nothing edits the overlay",
                self.image_path,
                path.display()
            )),
            (Content::Disk { path, .. }, false) => Error::verify(format!(
                "/{}: {} changed on disk while kiln was packing it ({what}); nothing was written; build again (a cache entry is checked and fetched again)",
                self.image_path,
                path.display()
            )),
            (Content::Generated(_), _) => Error::verify(format!(
                "/{}: {what}; nothing was written; build again (a cache entry is checked and fetched again)",
                self.image_path
            )),
            (Content::Inline(_), _) => Error::build(format!("/{}: {what} (kiln bug)", self.image_path)),
        };
        let msg = e.message.clone();
        self.failure = Some(e);
        io::Error::other(msg)
    }

    /// Passes a read error on, recording the kiln [`Error`] it carries (a
    /// generated file's input that is not what was planned) as the failure.
    fn inner_failure(&mut self, e: io::Error) -> io::Error {
        if let Some(k) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
            self.failure.get_or_insert_with(|| k.clone());
        }
        e
    }

    fn finish(&mut self) -> io::Result<()> {
        use sha2::Digest;
        let actual = hash::hex(&std::mem::take(&mut self.hasher).finalize());
        let want = match &self.content {
            Content::Disk { expect_sha256: Some(w), .. } => Some(w.clone()),
            Content::Generated(g) => Some(g.sha256.clone()),
            _ => None,
        };
        if let Some(want) = want {
            if !want.eq_ignore_ascii_case(&actual) {
                return Err(self.fail(format!("expected sha256 {want}, found {actual}")));
            }
        }
        self.done = Some(actual);
        Ok(())
    }
}

impl Read for Planned {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest;
        if self.done.is_some() || buf.is_empty() {
            return Ok(0);
        }
        if self.reader.is_none() {
            self.reader = Some(match &self.content {
                Content::Inline(b) => Box::new(io::Cursor::new(b.clone())),
                Content::Disk { path, .. } => match crate::io::open_regular(path) {
                    Ok(f) => Box::new(f),
                    Err(e) => return Err(self.fail(format!("cannot be read: {e}"))),
                },
                Content::Generated(g) => std::sync::Arc::clone(&g.source).open(),
            });
        }
        let size = self.content.size();
        let Some(reader) = self.reader.as_mut() else { return Ok(0) };
        if self.read == size {
            // Planned bytes all read: the file must end here.
            let mut one = [0u8; 1];
            let extra = loop {
                match reader.read(&mut one) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(self.inner_failure(e)),
                    Ok(n) => break n,
                }
            };
            if extra > 0 {
                return Err(self.fail(format!("planned {size} bytes, now longer")));
            }
            self.finish()?;
            return Ok(0);
        }
        let room = usize::try_from(size - self.read).unwrap_or(usize::MAX).min(buf.len());
        let n = match reader.read(&mut buf[..room]) {
            Ok(n) => n,
            Err(e) => return Err(self.inner_failure(e)),
        };
        if n == 0 {
            return Err(self.fail(format!("planned {size} bytes, ended after {}", self.read)));
        }
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Copies the content of the entry at `image_path` into the new file `dest`,
/// exactly as planned ([`Planned`]): a generated file streamed, verified as it goes.
pub fn copy_planned(image_path: &str, entry: &Entry, content: &Content, dest: &Path) -> Result<()> {
    let mut r = Planned::new(image_path, entry, content);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(dest).io_ctx(dest.display())?);
    let copied = io::copy(&mut r, &mut out);
    if let Some(f) = r.take_failure() {
        return Err(f);
    }
    copied.io_ctx(dest.display())?;
    out.flush().io_ctx(dest.display())
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

/// A written output file: its size and sha256, hashed as it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Bytes in the file.
    pub size: u64,
    /// sha256 of the file (hex).
    pub sha256: String,
}

/// How an overlay tarball is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `.tar.gz`: one gzip member from [`pgzip`], libdeflate level 1–12.
    Gzip(u32),
    /// `.tar.zst`: one zstd frame (with its content checksum), level 1–19,
    /// compressed by zstd's own worker threads.
    Zstd(i32),
}

impl Compression {
    /// The default gzip level.
    pub const GZIP_DEFAULT: u32 = pgzip::DEFAULT_LEVEL;
    /// The default zstd level (zstd's own default).
    pub const ZSTD_DEFAULT: i32 = 3;
    /// The highest zstd level kiln offers (zstd's `--ultra` levels need
    /// gigabytes of memory to decompress on a small node).
    pub const ZSTD_MAX: i32 = 19;
}

/// Writes `tree` as a compressed tarball to `out` and returns one record per
/// entry and the file's size and sha256, compressing on
/// [`pgzip::default_threads`] threads.
pub fn write(tree: &Tree, epoch: u64, compression: Compression, out: &Path) -> Result<(Vec<FileRecord>, Written)> {
    write_with_threads(tree, epoch, compression, out, pgzip::default_threads())
}

/// [`write`] on exactly `threads` compression threads. The bytes written are
/// the same for any `threads`: [`pgzip`] cuts fixed blocks, and zstd always
/// runs in its multi-threaded mode (at least one worker), whose output does
/// not depend on the number of workers (zstd's `ZSTD_c_nbWorkers` splits the
/// input into jobs by size; `zstd -T1`, `-T2`, `-T8` give the same bytes).
pub fn write_with_threads(
    tree: &Tree,
    epoch: u64,
    compression: Compression,
    out: &Path,
    threads: usize,
) -> Result<(Vec<FileRecord>, Written)> {
    let file = File::create(out).io_ctx(out.display())?;
    let sink = hash::HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    let sink = match compression {
        Compression::Gzip(level) => {
            let gz = pgzip::Writer::new(sink, level, threads).io_ctx(out.display())?;
            let (records, gz) = pack(tree, epoch, out, gz)?;
            (records, gz.finish().io_ctx(out.display())?)
        }
        Compression::Zstd(level) => {
            let zst = zstd_writer(sink, level, threads).io_ctx(out.display())?;
            let (records, zst) = pack(tree, epoch, out, zst)?;
            (records, zst.finish().io_ctx(out.display())?)
        }
    };
    let (records, sink) = sink;
    let (mut w, size, sha256) = sink.finish();
    w.flush().io_ctx(out.display())?;
    w.into_inner()
        .map_err(|e| Error::build(format!("{}: {}", out.display(), e.error())))?
        .sync_all()
        .io_ctx(out.display())?;
    Ok((records, Written { size, sha256 }))
}

/// A zstd encoder at `level` in multi-threaded mode with `threads` workers
/// (at least one: the single-threaded mode would give other bytes).
fn zstd_writer<W: Write>(w: W, level: i32, threads: usize) -> io::Result<zstd::stream::Encoder<'static, W>> {
    if !(1..=Compression::ZSTD_MAX).contains(&level) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("zstd level {level} is not in 1-{}", Compression::ZSTD_MAX),
        ));
    }
    let mut e = zstd::stream::Encoder::new(w, level)?;
    e.include_checksum(true)?;
    e.multithread(u32::try_from(threads.max(1)).unwrap_or(u32::MAX))?;
    Ok(e)
}

/// Writes the tar stream of `tree` into `w` (sorted entries, epoch mtimes,
/// root-owned), reading every file exactly as planned; returns the records.
fn pack<W: Write>(tree: &Tree, epoch: u64, out: &Path, w: W) -> Result<(Vec<FileRecord>, W)> {
    let mut builder = tar::Builder::new(w);
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
                let mut r = Planned::new(path, e, content);
                let appended = builder.append_data(&mut h, path, &mut r);
                if let Some(failure) = r.take_failure() {
                    return Err(failure);
                }
                appended.io_ctx(format!("writing /{path} to {}", out.display()))?;
                // The tar writer reads exactly the header's size; make sure the end was checked.
                io::copy(&mut r, &mut io::sink()).map_err(|x| Error::build(format!("/{path}: {x}")))?;
                if let Some(failure) = r.take_failure() {
                    return Err(failure);
                }
                let sha = r.digest().map(str::to_string);
                records.push(record(path, e, sha));
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
    let w = builder.into_inner().io_ctx(out.display())?;
    Ok((records, w))
}

/// sha256 of a whole output file.
pub fn digest(path: &Path) -> Result<String> {
    hash::sha256_file(path).io_ctx(path.display())
}
