//! Deterministic parallel gzip: one gzip member compressed on every core.
//!
//! The input is cut into fixed blocks of [`BLOCK`] bytes of *uncompressed*
//! input, so the cuts depend only on the bytes written, never on timing, on
//! how the caller splits its writes, or on the number of threads. Each block
//! is compressed on its own as raw deflate by libdeflate (levels 1–12; it
//! gives smaller output than zlib at a fraction of the time, measured by
//! `scripts/bench`), and every block but the last is made joinable by
//! [`deflate_splice::unfinalize`]: its final-block bit cleared and an empty
//! stored block appended, as pigz ends its blocks. Concatenated in order, the
//! blocks are one valid deflate stream, wrapped in a gzip header without name
//! or timestamp (mtime 0, OS 255; XFL as libdeflate's `gzip_compress` sets it)
//! and a trailer whose CRC-32 is combined from the blocks' CRCs.
//!
//! Blocks are independent (pigz `--independent`): libdeflate has no preset
//! dictionary, so a match cannot reach back across a cut. With 1 MiB blocks
//! that costs about 0.5% of size against one stream over the whole input,
//! and the result is still smaller than zlib's level 9 on Go binaries.
//! libdeflate keeps no state between calls, so a block's bytes are a function
//! of its input and the level only, and the file is byte-identical on 1, 2 or
//! 64 threads (and with the same libdeflate, which Cargo.lock pins, on any
//! machine).
//!
//! Memory is bounded by the thread count, not the input: at most
//! `2 × threads` blocks are in flight, each owning at most [`BLOCK`] bytes of
//! input and about [`BLOCK`] bytes of output, plus one libdeflate compressor
//! per thread (under 1 MiB at levels 1–9, a few MiB at 10–12) and the block
//! being filled: roughly 5 MiB per thread in all, plus at most eight recycled
//! buffers.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

/// Uncompressed bytes per independently compressed block (1 MiB).
pub const BLOCK: usize = 1 << 20;

/// The default compression level (libdeflate's default, as gzip's).
pub const DEFAULT_LEVEL: u32 = 6;

/// The highest level (libdeflate's near-optimal parsing at 10–12).
pub const MAX_LEVEL: u32 = 12;

/// Environment variable that overrides the compression thread count of
/// [`default_threads`] (a positive integer; anything else is ignored).
pub const THREADS_ENV: &str = "KILN_THREADS";

/// The number of compression threads to use: `KILN_THREADS` if it is set to a
/// positive integer, else the number of cores this process may run on, else 1.
/// The output does not depend on it.
pub fn default_threads() -> usize {
    std::env::var(THREADS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// One block handed to a worker, with the buffer it fills.
struct Job {
    data: Vec<u8>,
    out: Vec<u8>,
    last: bool,
    reply: mpsc::SyncSender<io::Result<Done>>,
}

/// A compressed block, with its input buffer returned for reuse.
struct Done {
    out: Vec<u8>,
    crc: crc32fast::Hasher,
    spare: Vec<u8>,
}

/// Compression threads fed from one queue.
struct Pool {
    jobs: Option<mpsc::Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new(threads: usize, level: libdeflater::CompressionLvl) -> io::Result<Pool> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new().name(format!("kiln-gzip-{i}")).spawn(move || {
                let mut compressor = libdeflater::Compressor::new(level);
                loop {
                    let job = match rx.lock() {
                        Ok(q) => match q.recv() {
                            Ok(job) => job,
                            Err(_) => return, // writer finished or dropped
                        },
                        Err(_) => return, // another worker panicked holding the queue
                    };
                    let Job { data, mut out, last, reply } = job;
                    let result =
                        deflate_block(&mut compressor, &data, last, &mut out).map(|crc| Done { out, crc, spare: data });
                    // The writer may have given up (an error, or dropped): nothing to tell.
                    let _ = reply.send(result);
                }
            });
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) if workers.is_empty() => return Err(e),
                Err(_) => break, // fewer threads: same output, just slower
            }
        }
        Ok(Pool { jobs: Some(tx), workers })
    }

    fn submit(&self, job: Job) -> io::Result<()> {
        self.jobs
            .as_ref()
            .and_then(|tx| tx.send(job).ok())
            .ok_or_else(|| io::Error::other("gzip compression threads stopped"))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None; // workers finish their current block and exit
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// How blocks are compressed: on the writer's own thread, or on a pool.
enum Engine {
    Inline(Box<libdeflater::Compressor>),
    Pool { pool: Pool, pending: VecDeque<mpsc::Receiver<io::Result<Done>>>, max_in_flight: usize },
}

/// A gzip writer that compresses fixed blocks of its input in parallel and
/// writes one gzip member, byte-identical for any thread count.
///
/// Call [`Writer::finish`] to write the last block and the trailer; a writer
/// dropped without it leaves a truncated stream. [`Write::flush`] writes out
/// the blocks compressed so far but never cuts the block being filled (that
/// would make the output depend on when it was called).
pub struct Writer<W: Write> {
    inner: Option<W>,
    engine: Engine,
    level: u32,
    /// The block being filled.
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    size: u64,
    spare: Vec<Vec<u8>>,
}

impl<W: Write> Writer<W> {
    /// Writes the gzip header to `inner` and returns a writer compressing at
    /// `level` (1–[`MAX_LEVEL`]; kiln's default is [`DEFAULT_LEVEL`]) on
    /// `threads` threads (1: on the caller's thread, no threads started).
    pub fn new(mut inner: W, level: u32, threads: usize) -> io::Result<Writer<W>> {
        let lvl = i32::try_from(level)
            .ok()
            .filter(|l| *l >= 1)
            .and_then(|l| libdeflater::CompressionLvl::new(l).ok())
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("gzip level {level} is not in 1-{MAX_LEVEL}"))
            })?;
        // XFL as libdeflate's gzip_compress sets it (lib/gzip_compress.c):
        // 4 "fastest" below level 2, 2 "slowest" from level 8.
        let xfl = match level {
            0 | 1 => 4,
            8.. => 2,
            _ => 0,
        };
        inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])?;
        let engine = if threads <= 1 {
            Engine::Inline(Box::new(libdeflater::Compressor::new(lvl)))
        } else {
            Engine::Pool {
                pool: Pool::new(threads, lvl)?,
                pending: VecDeque::with_capacity(2 * threads),
                max_in_flight: 2 * threads,
            }
        };
        Ok(Writer {
            inner: Some(inner),
            engine,
            level,
            buf: Vec::with_capacity(BLOCK),
            crc: crc32fast::Hasher::new(),
            size: 0,
            spare: Vec::new(),
        })
    }

    /// The compression level this writer uses.
    pub fn level(&self) -> u32 {
        self.level
    }

    /// Compresses the rest, writes the gzip trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        while self.write_front(true)? {}
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        trailer[4..].copy_from_slice(&(self.size as u32).to_le_bytes()); // ISIZE: size mod 2^32
        let mut inner = self.inner.take().ok_or_else(|| io::Error::other("gzip writer already finished"))?;
        inner.write_all(&trailer)?;
        Ok(inner)
    }

    fn take_spare(&mut self, capacity: usize) -> Vec<u8> {
        let mut v = self.spare.pop().unwrap_or_default();
        v.clear();
        v.reserve(capacity);
        v
    }

    fn give_spare(&mut self, v: Vec<u8>) {
        if self.spare.len() < 8 {
            self.spare.push(v);
        }
    }

    fn out(&mut self) -> io::Result<&mut W> {
        self.inner.as_mut().ok_or_else(|| io::Error::other("gzip writer already finished"))
    }

    /// Hands the filled block to the engine; `last` ends the deflate stream.
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        let next = self.take_spare(BLOCK);
        let data = std::mem::replace(&mut self.buf, next);
        let out = self.take_spare(0);
        match &mut self.engine {
            Engine::Inline(compressor) => {
                let mut out = out;
                let crc = deflate_block(compressor, &data, last, &mut out)?;
                self.crc.combine(&crc);
                self.out()?.write_all(&out)?;
                for v in [data, out] {
                    self.give_spare(v);
                }
            }
            Engine::Pool { pending, max_in_flight, .. } => {
                if pending.len() >= *max_in_flight {
                    self.write_front(true)?;
                }
                let (reply, rx) = mpsc::sync_channel(1);
                if let Engine::Pool { pool, pending, .. } = &mut self.engine {
                    pool.submit(Job { data, out, last, reply })?;
                    pending.push_back(rx);
                }
                // Write whatever is already done, in order, without waiting.
                while self.write_front(false)? {}
            }
        }
        Ok(())
    }

    /// Writes the oldest compressed block if there is one (waiting for it if
    /// `wait`); returns whether one was written.
    fn write_front(&mut self, wait: bool) -> io::Result<bool> {
        let Engine::Pool { pending, .. } = &mut self.engine else { return Ok(false) };
        let Some(rx) = pending.front() else { return Ok(false) };
        let got = if wait {
            rx.recv().map_err(|_| io::Error::other("a gzip compression thread stopped"))?
        } else {
            match rx.try_recv() {
                Ok(r) => r,
                Err(mpsc::TryRecvError::Empty) => return Ok(false),
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err(io::Error::other("a gzip compression thread stopped"))
                }
            }
        };
        pending.pop_front();
        let Done { out, crc, spare } = got?;
        self.crc.combine(&crc);
        self.out()?.write_all(&out)?;
        for v in [spare, out] {
            self.give_spare(v);
        }
        Ok(true)
    }
}

impl<W: Write> Write for Writer<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // A full block is sent only once more input arrives, so the last
        // block (even a full one) is always the one that ends the stream.
        if self.buf.len() == BLOCK {
            self.dispatch(false)?;
        }
        let n = (BLOCK - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.write_front(false)? {}
        self.out()?.flush()
    }
}

/// Compresses `data` as raw deflate into `out`; unless it is the `last`
/// block, the stream is made joinable ([`deflate_splice::unfinalize`], which
/// also checks that it stands for exactly `data`). Returns the CRC-32 of `data`.
fn deflate_block(
    compressor: &mut libdeflater::Compressor,
    data: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> io::Result<crc32fast::Hasher> {
    out.clear();
    out.resize(compressor.deflate_compress_bound(data.len()) + 8, 0);
    let n = compressor
        .deflate_compress(data, out)
        .map_err(|e| io::Error::other(format!("deflate: {e} (kiln bug: the buffer is libdeflate's bound)")))?;
    out.truncate(n);
    if !last {
        deflate_splice::unfinalize(out, data.len() as u64)
            .map_err(|e| io::Error::other(format!("{e} (a compressor bug; nothing was written)")))?;
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(data);
    Ok(crc)
}

/// Compresses `data` into a complete gzip file in memory (for tests and tools).
pub fn compress(data: &[u8], level: u32, threads: usize) -> io::Result<Vec<u8>> {
    let mut w = Writer::new(Vec::new(), level, threads)?;
    w.write_all(data)?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz).read_to_end(&mut out).expect("valid gzip");
        out
    }

    #[test]
    fn round_trips_across_block_boundaries() {
        let data: Vec<u8> = (0..BLOCK * 2 + 17).map(|i| (i % 251) as u8).collect();
        for threads in [1, 3] {
            assert_eq!(gunzip(&compress(&data, 6, threads).expect("compress")), data);
        }
    }

    #[test]
    fn empty_input_is_a_valid_empty_gzip() {
        let gz = compress(&[], 6, 2).expect("compress");
        assert_eq!(&gz[..4], &[0x1f, 0x8b, 8, 0]);
        assert!(gunzip(&gz).is_empty());
    }

    #[test]
    fn output_does_not_depend_on_how_writes_are_split() {
        let data: Vec<u8> = (0..BLOCK * 3).map(|i| ((i * 7) % 13) as u8 ^ (i >> 11) as u8).collect();
        let whole = compress(&data, 6, 2).expect("compress");
        let mut w = Writer::new(Vec::new(), 6, 2).expect("writer");
        for chunk in data.chunks(4093) {
            w.write_all(chunk).expect("write");
            w.flush().expect("flush");
        }
        assert_eq!(w.finish().expect("finish"), whole);
    }
}
