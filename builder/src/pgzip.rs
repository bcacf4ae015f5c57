//! Deterministic parallel gzip: one gzip member compressed on every core.
//!
//! The input is cut into fixed blocks of [`BLOCK`] bytes of *uncompressed*
//! input, so the cuts depend only on the bytes written, never on timing, on
//! how the caller splits its writes, or on the number of threads. Each block
//! is compressed on its own as raw deflate, primed with the last [`DICT`]
//! bytes of the input before it as the dictionary (pigz's approach, so
//! matches still reach back across a cut), and ends with a sync flush (an
//! empty stored block, byte aligned); the last block ends the deflate stream
//! instead. Every block gets a fresh deflate state: zlib-rs's `reset` keeps
//! stale window bytes that can change which of two equal matches is chosen,
//! so a reused state would make a block's bytes depend on which blocks the
//! same thread compressed before (found by `builder/tests/pgzip.rs`; a fresh
//! state costs about 12 µs against about 2.7 ms to compress a block at level
//! 6). Concatenated in order, the blocks are one valid deflate stream,
//! wrapped in a gzip header without name or timestamp (mtime 0, OS 255, as
//! `flate2::GzBuilder` writes it) and a trailer whose CRC-32 is combined from
//! the blocks' CRCs. A block's output is a function of its input bytes and
//! its dictionary only, so the file is byte-identical on 1, 2 or 64 threads.
//!
//! Memory is bounded by the thread count, not the input: at most
//! `2 × threads` blocks are in flight, each owning at most [`BLOCK`] bytes of
//! input, [`DICT`] bytes of dictionary and about [`BLOCK`] bytes of output,
//! plus one deflate state per busy thread (about 400 KiB at level 6) and the
//! block being filled: roughly 1 MiB per thread in all, plus at most eight
//! recycled buffers.

use flate2::{Compress, Compression, FlushCompress, Status};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

/// Uncompressed bytes per independently compressed block (128 KiB, as pigz).
pub const BLOCK: usize = 128 << 10;

/// Bytes of preceding input each block is primed with: deflate's whole window.
pub const DICT: usize = 32 << 10;

// A block's dictionary is the tail of the block before it, which must hold a
// whole window.
const _: () = assert!(BLOCK >= DICT);

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

/// One block handed to a worker, with the buffers it fills.
struct Job {
    dict: Vec<u8>,
    data: Vec<u8>,
    out: Vec<u8>,
    last: bool,
    reply: mpsc::SyncSender<io::Result<Done>>,
}

/// A compressed block, with its buffers returned for reuse.
struct Done {
    out: Vec<u8>,
    crc: crc32fast::Hasher,
    spare: [Vec<u8>; 2],
}

/// Compression threads fed from one queue.
struct Pool {
    jobs: Option<mpsc::Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new(threads: usize, level: Compression) -> io::Result<Pool> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new().name(format!("kiln-gzip-{i}")).spawn(move || {
                loop {
                    let job = match rx.lock() {
                        Ok(q) => match q.recv() {
                            Ok(job) => job,
                            Err(_) => return, // writer finished or dropped
                        },
                        Err(_) => return, // another worker panicked holding the queue
                    };
                    let Job { dict, data, mut out, last, reply } = job;
                    let result = deflate_block(level, &dict, &data, last, &mut out).map(|crc| Done {
                        out,
                        crc,
                        spare: [dict, data],
                    });
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
    Inline,
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
    level: Compression,
    /// The block being filled.
    buf: Vec<u8>,
    /// The last [`DICT`] bytes before `buf`.
    dict: Vec<u8>,
    crc: crc32fast::Hasher,
    size: u64,
    spare: Vec<Vec<u8>>,
}

impl<W: Write> Writer<W> {
    /// Writes the gzip header to `inner` and returns a writer compressing at
    /// `level` (0–9; kiln uses 6) on `threads` threads (1: on the caller's
    /// thread, no threads started).
    pub fn new(mut inner: W, level: u32, threads: usize) -> io::Result<Writer<W>> {
        let level = Compression::new(level.min(9));
        let xfl = match level.level() {
            9 => 2,
            0 | 1 => 4,
            _ => 0,
        };
        inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])?;
        let engine = if threads <= 1 {
            Engine::Inline
        } else {
            Engine::Pool {
                pool: Pool::new(threads, level)?,
                pending: VecDeque::with_capacity(2 * threads),
                max_in_flight: 2 * threads,
            }
        };
        Ok(Writer {
            inner: Some(inner),
            engine,
            level,
            buf: Vec::with_capacity(BLOCK),
            dict: Vec::with_capacity(DICT),
            crc: crc32fast::Hasher::new(),
            size: 0,
            spare: Vec::new(),
        })
    }

    /// The compression level this writer uses.
    pub fn level(&self) -> u32 {
        self.level.level()
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
        let mut next_dict = self.take_spare(DICT);
        next_dict.extend_from_slice(&data[data.len().saturating_sub(DICT)..]);
        let dict = std::mem::replace(&mut self.dict, next_dict);
        let out = self.take_spare(out_bound(data.len()));
        match &mut self.engine {
            Engine::Inline => {
                let mut out = out;
                let crc = deflate_block(self.level, &dict, &data, last, &mut out)?;
                self.crc.combine(&crc);
                self.out()?.write_all(&out)?;
                for v in [dict, data, out] {
                    self.give_spare(v);
                }
            }
            Engine::Pool { pending, max_in_flight, .. } => {
                if pending.len() >= *max_in_flight {
                    self.write_front(true)?;
                }
                let (reply, rx) = mpsc::sync_channel(1);
                if let Engine::Pool { pool, pending, .. } = &mut self.engine {
                    pool.submit(Job { dict, data, out, last, reply })?;
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
        let Done { out, crc, spare: [a, b] } = got?;
        self.crc.combine(&crc);
        self.out()?.write_all(&out)?;
        for v in [a, b, out] {
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

/// Room for a block's deflate output: zlib's `deflateBound` for stored
/// blocks, plus the sync marker, so one call almost always suffices.
fn out_bound(len: usize) -> usize {
    len + (len >> 12) + (len >> 14) + 64
}

/// Compresses `data` at `level` as raw deflate primed with `dict` into
/// `out`, ending with a sync flush, or with the end of the stream if `last`;
/// returns the CRC-32 of `data`. The deflate state is new (see the module
/// documentation for why it is not reused).
fn deflate_block(
    level: Compression,
    dict: &[u8],
    data: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> io::Result<crc32fast::Hasher> {
    let mut c = Compress::new(level, false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    out.clear();
    out.reserve(out_bound(data.len()));
    let mut pos = 0;
    loop {
        let (in0, out0) = (c.total_in(), c.total_out());
        let had_room = out.len() < out.capacity();
        let status = c.compress_vec(&data[pos..], out, flush).map_err(io::Error::other)?;
        pos += usize::try_from(c.total_in() - in0).map_err(io::Error::other)?;
        let done = match status {
            Status::StreamEnd => true,
            // A sync flush is complete once all input is taken and output room is left.
            Status::Ok | Status::BufError => !last && pos == data.len() && out.len() < out.capacity(),
        };
        if done {
            break;
        }
        if had_room && c.total_in() == in0 && c.total_out() == out0 {
            return Err(io::Error::other("deflate made no progress (kiln bug)"));
        }
        out.reserve(out.capacity().max(4096));
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
