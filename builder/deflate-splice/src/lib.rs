//! Joins independently compressed raw deflate streams into one stream
//! (used by kiln's parallel gzip writer, `kiln::pgzip`).
//!
//! A whole-buffer compressor such as libdeflate always ends its output with a
//! block whose `BFINAL` bit is set (RFC 1951 §3.2.3), so two of its outputs
//! cannot simply be concatenated: a decoder stops at the first final block.
//! [`unfinalize`] walks a stream block by block (headers, Huffman tables and
//! every symbol, without producing output), clears the last block's `BFINAL`
//! bit, cuts the stream at the exact bit where that block ends, and appends an
//! empty stored block (`BFINAL` 0, `BTYPE` 00, padding to a byte, `LEN` 0,
//! `NLEN` 0xFFFF): zlib's "sync flush" marker, after which the next stream
//! starts on a byte boundary. pigz ends its blocks the same way.
//!
//! The walk also checks the stream: every code must be valid, no distance may
//! reach before the start of the stream (there is no dictionary), and the
//! symbols must stand for exactly the number of input bytes the caller
//! compressed. A compressor bug is an error here, never a corrupt tarball.

use std::fmt;

/// Why a stream could not be joined: it is not the valid deflate stream of
/// the input it was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid deflate stream: {}", self.0)
    }
}

impl std::error::Error for Invalid {}

fn bad<T>(what: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid(what.into()))
}

/// The sync-flush marker: an empty, non-final stored block's `LEN` and `NLEN`
/// (its 3 header bits and the padding come before them).
const STORED_EMPTY_LEN: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// Length code base values and extra bits, symbols 257–285 (RFC 1951 §3.2.5).
const LEN_BASE: [u16; 29] =
    [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LEN_EXTRA: [u8; 29] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
/// Distance code base values and extra bits, codes 0–29 (RFC 1951 §3.2.5).
const DIST_BASE: [u32; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145,
    8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] =
    [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];
/// Order of the code length code lengths in a dynamic block header (§3.2.7).
const CLEN_ORDER: [usize; 19] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

/// Reads bits least significant first, as deflate packs them.
struct Bits<'a> {
    data: &'a [u8],
    /// Next byte to load into `buf`.
    next: usize,
    buf: u64,
    count: u32,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits { data, next: 0, buf: 0, count: 0 }
    }

    /// Position of the next unread bit from the start of the data.
    fn position(&self) -> usize {
        self.next * 8 - self.count as usize
    }

    fn refill(&mut self) {
        // Eight bytes at a time where they exist (libdeflate's bitstream
        // refill): the buffer ends up holding 56 to 63 bits.
        if let Some(word) = self.data.get(self.next..self.next + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            self.buf |= u64::from_le_bytes(w) << self.count;
            self.next += (63 - self.count as usize) / 8;
            self.count |= 56;
            return;
        }
        while self.count <= 56 {
            let Some(&b) = self.data.get(self.next) else { return };
            self.buf |= u64::from(b) << self.count;
            self.next += 1;
            self.count += 8;
        }
    }

    fn take(&mut self, n: u32) -> Result<u32, Invalid> {
        if n == 0 {
            return Ok(0);
        }
        if self.count < n {
            self.refill();
            if self.count < n {
                return bad("the stream ends in the middle of a block");
            }
        }
        let v = (self.buf & ((1u64 << n) - 1)) as u32;
        self.buf >>= n;
        self.count -= n;
        Ok(v)
    }

    /// Skips to the next byte boundary (stored blocks).
    fn align(&mut self) {
        let drop = self.count % 8;
        self.buf >>= drop;
        self.count -= drop;
    }

    /// Skips `n` whole bytes (a stored block's content); the reader is aligned.
    fn skip_bytes(&mut self, n: usize) -> Result<(), Invalid> {
        let at = self.position() / 8 + n;
        if at > self.data.len() {
            return bad("a stored block runs past the end of the stream");
        }
        self.next = at;
        self.buf = 0;
        self.count = 0;
        Ok(())
    }
}

/// Bits the first-level table of a [`Huffman`] decoder is indexed by; longer
/// codes continue in a second-level table (as zlib's inflate does), which
/// keeps the tables small enough to stay in the first-level cache.
const PRIMARY_BITS: u32 = 10;

/// An entry of a [`Huffman`] table: `0` is an unused code; else bits 0–3
/// hold the code length and bits 5.. the symbol, or, with bit 4 set, the
/// offset of the second-level table for this prefix.
type Slot = u32;
const SUB: Slot = 1 << 4;

/// A canonical Huffman decoder: a table indexed by the next input bits.
struct Huffman {
    table: Vec<Slot>,
    /// Bits indexing the first level (at most [`PRIMARY_BITS`]).
    primary: u32,
    /// Bits indexing a second-level table (the longest code minus `primary`).
    secondary: u32,
}

impl Huffman {
    /// Builds the decoder for `lengths` (one per symbol, 0 = unused). Refuses
    /// over-subscribed codes; an incomplete code is allowed (RFC 1951 allows
    /// one distance code of one bit), its unused entries fail when read.
    fn new(lengths: &[u8], what: &str) -> Result<Huffman, Invalid> {
        let max = u32::from(lengths.iter().copied().max().unwrap_or(0));
        if max > 15 {
            return bad(format!("{what} code length {max} exceeds 15"));
        }
        let mut count = [0u32; 16];
        for &l in lengths {
            count[usize::from(l)] += 1;
        }
        count[0] = 0;
        // Kraft: the codes of each length must fit in what is left.
        let mut left: i64 = 1;
        for &c in &count[1..] {
            left = left * 2 - i64::from(c);
            if left < 0 {
                return bad(format!("{what} code is over-subscribed"));
            }
        }
        let primary = max.clamp(1, PRIMARY_BITS);
        let secondary = max.saturating_sub(primary);
        let mut next_code = [0u32; 16];
        let mut code = 0u32;
        for len in 1..16 {
            code = (code + count[len - 1]) << 1;
            next_code[len] = code;
        }
        let mut table = vec![0 as Slot; 1 << primary];
        for (sym, &len) in lengths.iter().enumerate() {
            if len == 0 {
                continue;
            }
            let len = u32::from(len);
            let code = next_code[len as usize];
            next_code[len as usize] += 1;
            // Huffman codes are packed most significant bit first.
            let reversed = (code.reverse_bits() >> (32 - len)) as usize;
            let entry = ((sym as Slot) << 5) | len;
            if len <= primary {
                let mut i = reversed;
                while i < 1 << primary {
                    table[i] = entry;
                    i += 1 << len;
                }
                continue;
            }
            let prefix = reversed & ((1 << primary) - 1);
            let base = if table[prefix] & SUB != 0 {
                (table[prefix] >> 5) as usize
            } else {
                let base = table.len();
                table.resize(base + (1 << secondary), 0);
                table[prefix] = ((base as Slot) << 5) | SUB;
                base
            };
            let step = 1usize << (len - primary);
            let mut i = reversed >> primary;
            while i < 1 << secondary {
                table[base + i] = entry;
                i += step;
            }
        }
        Ok(Huffman { table, primary, secondary })
    }

    fn fixed_literals() -> Huffman {
        let mut l = [0u8; 288];
        l[..144].fill(8);
        l[144..256].fill(9);
        l[256..280].fill(7);
        l[280..].fill(8);
        Huffman::new(&l, "fixed literal/length").unwrap_or_else(|_| unreachable!("the fixed code is complete"))
    }

    fn fixed_distances() -> Huffman {
        Huffman::new(&[5u8; 30], "fixed distance").unwrap_or_else(|_| unreachable!("the fixed code is complete"))
    }

    #[inline]
    fn decode(&self, bits: &mut Bits<'_>) -> Result<u16, Invalid> {
        if bits.count < self.primary + self.secondary {
            bits.refill();
        }
        // Near the end fewer bits may remain; the missing ones read as 0 and
        // the entry's length says whether the real bits sufficed.
        let mut entry = self.table[(bits.buf & ((1u64 << self.primary) - 1)) as usize];
        if entry & SUB != 0 {
            let i = (entry >> 5) as usize + ((bits.buf >> self.primary) & ((1u64 << self.secondary) - 1)) as usize;
            entry = self.table[i];
        }
        let len = entry & 0xF;
        if len == 0 {
            return bad("an unused Huffman code");
        }
        if len > bits.count {
            return bad("the stream ends in the middle of a symbol");
        }
        bits.buf >>= len;
        bits.count -= len;
        Ok((entry >> 5) as u16)
    }
}

/// Reads a dynamic block's code tables (RFC 1951 §3.2.7).
fn dynamic_tables(bits: &mut Bits<'_>) -> Result<(Huffman, Huffman), Invalid> {
    let hlit = bits.take(5)? as usize + 257;
    let hdist = bits.take(5)? as usize + 1;
    let hclen = bits.take(4)? as usize + 4;
    if hlit > 286 || hdist > 30 {
        return bad(format!("{hlit} literal/length or {hdist} distance codes"));
    }
    let mut clen = [0u8; 19];
    for &i in &CLEN_ORDER[..hclen] {
        clen[i] = bits.take(3)? as u8;
    }
    let clen = Huffman::new(&clen, "code length")?;
    let mut lengths = vec![0u8; hlit + hdist];
    let mut i = 0;
    while i < lengths.len() {
        let sym = clen.decode(bits)?;
        let (value, repeat) = match sym {
            0..=15 => (sym as u8, 1),
            16 => match i.checked_sub(1) {
                Some(prev) => (lengths[prev], 3 + bits.take(2)? as usize),
                None => return bad("a repeat code before the first length"),
            },
            17 => (0, 3 + bits.take(3)? as usize),
            _ => (0, 11 + bits.take(7)? as usize),
        };
        if i + repeat > lengths.len() {
            return bad("code lengths run past the table");
        }
        lengths[i..i + repeat].fill(value);
        i += repeat;
    }
    if lengths[256] == 0 {
        return bad("no end-of-block code");
    }
    Ok((Huffman::new(&lengths[..hlit], "literal/length")?, Huffman::new(&lengths[hlit..], "distance")?))
}

/// Walks the symbols of one Huffman-coded block up to its end-of-block code
/// and returns the output length after it. The hot loop of the walk: the
/// bit buffer lives in locals and is refilled once per symbol pair (after a
/// refill it holds at least 56 bits, and a length, its distance and their
/// extra bits take at most 48).
fn symbols(bits: &mut Bits<'_>, lit: &Huffman, dist: &Huffman, mut produced: u64) -> Result<u64, Invalid> {
    let (mut buf, mut count, mut next) = (bits.buf, bits.count, bits.next);
    let data = bits.data;
    let result = 'block: loop {
        if count < 48 {
            if let Some(word) = data.get(next..next + 8) {
                let mut w = [0u8; 8];
                w.copy_from_slice(word);
                buf |= u64::from_le_bytes(w) << count;
                next += (63 - count as usize) / 8;
                count |= 56;
            } else {
                while count <= 56 {
                    let Some(&b) = data.get(next) else { break };
                    buf |= u64::from(b) << count;
                    next += 1;
                    count += 8;
                }
            }
        }
        // One table look-up (two for a long code); missing bits at the very
        // end read as 0 and the entry's length says whether the real ones sufficed.
        macro_rules! decode {
            ($h:expr) => {{
                let h: &Huffman = $h;
                let mut e = h.table[(buf & ((1u64 << h.primary) - 1)) as usize];
                if e & SUB != 0 {
                    e = h.table[(e >> 5) as usize + ((buf >> h.primary) & ((1u64 << h.secondary) - 1)) as usize];
                }
                let len = e & 0xF;
                if len == 0 {
                    break 'block bad("an unused Huffman code");
                }
                if len > count {
                    break 'block bad("the stream ends in the middle of a symbol");
                }
                buf >>= len;
                count -= len;
                e >> 5
            }};
        }
        macro_rules! extra {
            ($n:expr) => {{
                let n = u32::from($n);
                if n > count {
                    break 'block bad("the stream ends in the middle of a block");
                }
                let v = buf & ((1u64 << n) - 1);
                buf >>= n;
                count -= n;
                v
            }};
        }
        let sym = decode!(lit);
        if sym < 256 {
            produced += 1;
            continue;
        }
        if sym == 256 {
            break Ok(produced);
        }
        let Some(i) = (sym as usize).checked_sub(257).filter(|i| *i < LEN_BASE.len()) else {
            break bad(format!("literal/length code {sym}"));
        };
        let len = u64::from(LEN_BASE[i]) + extra!(LEN_EXTRA[i]);
        let d = decode!(dist) as usize;
        if d >= DIST_BASE.len() {
            break bad(format!("distance code {d}"));
        }
        let distance = u64::from(DIST_BASE[d]) + extra!(DIST_EXTRA[d]);
        if distance > produced {
            break bad(format!("distance {distance} reaches before the start ({produced} bytes)"));
        }
        produced += len;
    };
    bits.buf = buf;
    bits.count = count;
    bits.next = next;
    result
}

/// Where a stream's last block starts and where it ends, in bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walk {
    /// Bit position of the final block's header (its `BFINAL` bit).
    pub final_header_bit: usize,
    /// Bit position just after the final block's last bit.
    pub end_bit: usize,
    /// Bytes the stream decompresses to.
    pub output_len: u64,
}

/// Walks a complete raw deflate stream without decompressing it.
pub fn walk(stream: &[u8]) -> Result<Walk, Invalid> {
    let mut bits = Bits::new(stream);
    let mut produced: u64 = 0;
    let (fixed_lit, fixed_dist) = (Huffman::fixed_literals(), Huffman::fixed_distances());
    loop {
        let header = bits.position();
        let last = bits.take(1)? == 1;
        match bits.take(2)? {
            0 => {
                bits.align();
                let len = bits.take(16)?;
                let nlen = bits.take(16)?;
                if len != !nlen & 0xFFFF {
                    return bad(format!("stored block LEN {len:#06x} does not match NLEN {nlen:#06x}"));
                }
                bits.skip_bytes(len as usize)?;
                produced += u64::from(len);
            }
            t @ (1 | 2) => {
                let dynamic;
                let (lit, dist) = if t == 1 {
                    (&fixed_lit, &fixed_dist)
                } else {
                    dynamic = dynamic_tables(&mut bits)?;
                    (&dynamic.0, &dynamic.1)
                };
                produced = symbols(&mut bits, lit, dist, produced)?;
            }
            _ => return bad("block type 3"),
        }
        if last {
            return Ok(Walk { final_header_bit: header, end_bit: bits.position(), output_len: produced });
        }
    }
}

/// Turns the complete raw deflate stream `stream` of `input_len` bytes into
/// one that ends without a final block, on a byte boundary, so that another
/// stream can follow it directly (see the module documentation).
pub fn unfinalize(stream: &mut Vec<u8>, input_len: u64) -> Result<(), Invalid> {
    let w = walk(stream)?;
    if w.output_len != input_len {
        return bad(format!("it holds {} bytes, not the {input_len} compressed", w.output_len));
    }
    if w.end_bit > stream.len() * 8 {
        return bad("it ends past its last byte");
    }
    stream[w.final_header_bit / 8] &= !(1u8 << (w.final_header_bit % 8));
    // The empty stored block's 3 header bits (all 0) follow the last block,
    // then zero padding to the byte boundary.
    let bytes = (w.end_bit + 3).div_ceil(8);
    stream.resize(bytes, 0);
    let keep = w.end_bit % 8;
    let first_free = w.end_bit / 8;
    if keep != 0 {
        stream[first_free] &= (1u8 << keep) - 1;
        stream[first_free + 1..].fill(0);
    } else {
        stream[first_free..].fill(0);
    }
    stream.extend_from_slice(&STORED_EMPTY_LEN);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn libdeflate(data: &[u8], level: i32) -> Vec<u8> {
        let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).expect("level"));
        let mut out = vec![0; c.deflate_compress_bound(data.len())];
        let n = c.deflate_compress(data, &mut out).expect("compress");
        out.truncate(n);
        out
    }

    fn inflate(stream: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(stream).read_to_end(&mut out).expect("valid deflate");
        out
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut r = kiln_testkit::rng::Rng(seed | 1);
        (0..len).map(|_| r.next() as u8).collect()
    }

    #[test]
    fn joined_streams_inflate_to_the_joined_inputs() {
        // Stored (noise), fixed (tiny), dynamic (text) blocks, several levels.
        let text: Vec<u8> = b"kubelet --config=/var/lib/kubelet/config.yaml ".repeat(5000);
        let parts: Vec<Vec<u8>> =
            vec![noise(70_000, 3), b"ab".to_vec(), text.clone(), Vec::new(), noise(5, 9), text[..777].to_vec()];
        for level in [1, 6, 12] {
            let mut joined = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                let mut s = libdeflate(p, level);
                if i + 1 < parts.len() {
                    unfinalize(&mut s, p.len() as u64).expect("unfinalize");
                    assert_eq!(&s[s.len() - 4..], &STORED_EMPTY_LEN);
                }
                joined.extend_from_slice(&s);
            }
            assert_eq!(inflate(&joined), parts.concat(), "level {level}");
        }
    }

    #[test]
    fn walk_finds_the_end_of_every_block_type() {
        for data in [Vec::new(), b"x".to_vec(), noise(100_000, 5), b"abc".repeat(100_000)] {
            let s = libdeflate(&data, 6);
            let w = walk(&s).expect("walk");
            assert_eq!(w.output_len, data.len() as u64);
            assert_eq!(w.end_bit.div_ceil(8), s.len(), "the stream ends in its last byte");
            assert_eq!(s[w.final_header_bit / 8] >> (w.final_header_bit % 8) & 1, 1, "BFINAL is set there");
        }
    }

    #[test]
    fn a_wrong_length_or_a_damaged_stream_is_an_error_never_a_panic() {
        let data = b"containerd ".repeat(10_000);
        let s = libdeflate(&data, 6);
        assert!(unfinalize(&mut s.clone(), data.len() as u64 + 1).is_err());
        assert!(walk(&s[..s.len() / 2]).is_err());
        assert!(walk(&[0xff; 64]).is_err());
        for i in 0..s.len().min(400) {
            let mut d = s.clone();
            d[i] ^= 0x5a;
            let _ = walk(&d); // any result, but no panic
        }
    }
}
