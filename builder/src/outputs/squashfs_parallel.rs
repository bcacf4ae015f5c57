//! Parallel block compression for backhand's squashfs writer.
//!
//! backhand compresses data blocks one at a time on the writing thread, while
//! mksquashfs uses every core. This module gives backhand a compressor
//! ([`KilnCompressor`]) that first looks for the block in a table of blocks
//! compressed ahead of time by worker threads, reading the files in the order
//! backhand will. A block is matched by its XXH3-128 hash and length; a block
//! that is not in the table (fragments, metadata, anything out of order) is
//! compressed on the spot. The workers call the very same compressor backhand
//! would, so the image is byte-identical whether a block hit or missed.
//! Memory stays bounded: workers run at most [`WINDOW`] blocks ahead.
//!
//! Blocks are compressed by libdeflate ([`gzip_block`]) rather than backhand's
//! zlib encoder: the same format and level, smaller output in far less time
//! (`scripts/bench` measures it against mksquashfs).

use backhand::compression::{CompressionAction, Compressor, DefaultCompressor};
use backhand::{BackhandError, FilesystemCompressor};
use std::collections::HashMap;
use std::io::Read;
use std::sync::{Condvar, Mutex, OnceLock};

/// How many blocks the workers may run ahead of the writer.
pub const WINDOW: u64 = 64;

#[derive(Default)]
struct Table {
    /// hash → (sequence number, compressed bytes once ready)
    entries: HashMap<u128, (u64, Option<Vec<u8>>)>,
    /// Everything below this sequence number was consumed or skipped.
    consumed: u64,
}

struct Shared {
    table: Mutex<Table>,
    changed: Condvar,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| Shared { table: Mutex::new(Table::default()), changed: Condvar::new() })
}

fn key(bytes: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(bytes) ^ ((bytes.len() as u128) << 64)
}

/// Level of the squashfs gzip blocks: 9, as backhand's gzip compressor without
/// options and mksquashfs (`-Xcompression-level`, default 9) use.
pub const GZIP_LEVEL: i32 = 9;

/// Compresses one squashfs block for the `gzip` compressor: a zlib stream
/// (RFC 1950; squashfs' "gzip" blocks are zlib streams with a 32 KiB window,
/// which is what the kernel's squashfs zlib decompressor reads), by
/// libdeflate at [`GZIP_LEVEL`], one compressor per thread.
pub fn gzip_block(bytes: &[u8]) -> Result<Vec<u8>, BackhandError> {
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<libdeflater::Compressor>> = const { std::cell::RefCell::new(None) };
    }
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        let c = match &mut *c {
            Some(c) => c,
            None => {
                let level = libdeflater::CompressionLvl::new(GZIP_LEVEL)
                    .map_err(|_| BackhandError::StdIo(std::io::Error::other(format!("gzip level {GZIP_LEVEL}"))))?;
                c.insert(libdeflater::Compressor::new(level))
            }
        };
        let mut out = vec![0; c.zlib_compress_bound(bytes.len())];
        let n = c
            .zlib_compress(bytes, &mut out)
            .map_err(|e| BackhandError::StdIo(std::io::Error::other(format!("zlib: {e}"))))?;
        out.truncate(n);
        Ok(out)
    })
}

/// The compressor handed to backhand (see the module docs). kiln writes gzip
/// squashfs images only ([`crate::outputs::sysext::write`]), so every block is a
/// [`gzip_block`].
pub struct KilnCompressor;

/// The one instance backhand's `Kind` refers to.
pub static KILN_COMPRESSOR: KilnCompressor = KilnCompressor;

impl KilnCompressor {
    fn take(&self, k: u128) -> Option<Vec<u8>> {
        let s = shared();
        let mut t = s.table.lock().ok()?;
        loop {
            match t.entries.get(&k) {
                None => return None,
                Some((_, None)) => t = s.changed.wait(t).ok()?,
                Some((seq, Some(_))) => {
                    let seq = *seq;
                    let data = t.entries.remove(&k).and_then(|(_, d)| d);
                    // Blocks queued before this one were skipped by the writer
                    // (sparse, duplicate, reordered): drop them to keep the window moving.
                    t.entries.retain(|_, (s, _)| *s > seq);
                    t.consumed = t.consumed.max(seq + 1);
                    s.changed.notify_all();
                    return data;
                }
            }
        }
    }
}

impl CompressionAction for KilnCompressor {
    type Error = BackhandError;
    type Compressor = Compressor;
    type FilesystemCompressor = FilesystemCompressor;
    type SuperBlock = backhand::SuperBlock;

    fn decompress(&self, bytes: &[u8], out: &mut Vec<u8>, compressor: Self::Compressor) -> Result<(), Self::Error> {
        DefaultCompressor.decompress(bytes, out, compressor)
    }

    fn compress(&self, bytes: &[u8], fc: Self::FilesystemCompressor, block_size: u32) -> Result<Vec<u8>, Self::Error> {
        if bytes.len() == block_size as usize {
            if let Some(c) = self.take(key(bytes)) {
                return Ok(c);
            }
        }
        let _ = (fc, block_size);
        gzip_block(bytes)
    }

    fn compression_options(
        &self,
        superblock: &mut Self::SuperBlock,
        kind: &backhand::kind::Kind,
        fs_compressor: Self::FilesystemCompressor,
    ) -> Result<Option<Vec<u8>>, Self::Error> {
        DefaultCompressor.compression_options(superblock, kind, fs_compressor)
    }
}

/// Opens one file's content for the compression workers.
pub type Opener = Box<dyn FnOnce() -> std::io::Result<Box<dyn Read + Send>> + Send>;

/// Compresses the full blocks of `files` (in the order the writer will read
/// them) on `workers` threads while `write` runs, then returns its result.
pub fn with_precompression<T>(files: Vec<Opener>, block_size: u32, workers: usize, write: impl FnOnce() -> T) -> T {
    // One image at a time: the table is shared with backhand's compressor.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = shared();
    if let Ok(mut t) = s.table.lock() {
        *t = Table::default();
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<(u128, Vec<u8>)>(workers * 2);
    let rx = Mutex::new(rx);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        // Reader: splits files into blocks and queues them, WINDOW ahead at most.
        scope.spawn(|| {
            let mut seq = 0u64;
            for open in files {
                let Ok(mut r) = open() else { continue };
                loop {
                    let mut block = vec![0u8; block_size as usize];
                    let mut n = 0;
                    while n < block.len() {
                        match r.read(&mut block[n..]) {
                            Ok(0) => break,
                            Ok(k) => n += k,
                            Err(_) => break,
                        }
                    }
                    if n < block.len() {
                        break; // the tail goes to a fragment: the writer compresses those
                    }
                    let k = key(&block);
                    let Ok(mut t) = s.table.lock() else { return };
                    while seq >= t.consumed + WINDOW && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        t = match s.changed.wait_timeout(t, std::time::Duration::from_millis(100)) {
                            Ok((t, _)) => t,
                            Err(_) => return,
                        };
                    }
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    if t.entries.contains_key(&k) {
                        continue; // an identical block is already queued
                    }
                    t.entries.insert(k, (seq, None));
                    drop(t);
                    seq += 1;
                    if tx.send((k, block)).is_err() {
                        return;
                    }
                }
            }
            drop(tx);
        });
        for _ in 0..workers.max(1) {
            scope.spawn(|| loop {
                let job = rx.lock().ok().and_then(|r| r.recv().ok());
                let Some((k, block)) = job else { return };
                let out = gzip_block(&block);
                if let Ok(mut t) = s.table.lock() {
                    match (out, t.entries.get_mut(&k)) {
                        (Ok(c), Some(e)) => e.1 = Some(c),
                        // Failed or already skipped: let the writer compress it itself.
                        _ => {
                            t.entries.remove(&k);
                        }
                    }
                }
                s.changed.notify_all();
            });
        }
        let r = write();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        s.changed.notify_all();
        r
    });
    if let Ok(mut t) = s.table.lock() {
        *t = Table::default();
    }
    result
}
