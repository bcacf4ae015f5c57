//! Stand-in artifacts: deterministic bytes of realistic size and compressibility.

use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};
use std::path::Path;

/// `len` cheap stand-in bytes from `seed`: half random, half from a
/// four-letter alphabet. They compress only about 1.35:1 under gzip -6, far
/// less than a real binary (see [`go_like`]); use them where only sizes and
/// hashes matter.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        // Half the bytes random, half drawn from a small alphabet: ~2:1 under deflate.
        for (i, v) in b.iter().enumerate() {
            out.push(if i % 2 == 0 { *v } else { b'A' + (v % 4) });
        }
    }
    out.truncate(len);
    out
}

/// A deterministic xorshift64 generator (not for cryptography).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A number below `n`, skewed towards small ones (the smaller of two draws).
    fn skewed(&mut self, n: u64) -> usize {
        let r = self.next();
        ((r % n).min((r >> 32) % n)) as usize
    }
}

/// `len` bytes that compress like a real Go binary, from `seed`. Measured on
/// 57 MiB (kubectl v1.33 amd64, 57 MB, in brackets): gzip -6 3.3:1 (3.38),
/// zstd -3 3.45:1 (3.70), lz4 -9 2.85:1 (2.94), mksquashfs -comp gzip 3.16:1
/// (3.35): slightly harder to compress than the real thing, never easier.
///
/// Like a Go executable it is a mix of stretches of machine-code-like bytes
/// (recurring instruction sequences with random operands), string tables
/// (import paths and identifiers from one vocabulary), structured tables
/// (records with increasing offsets, like pclntab) and incompressible data.
pub fn go_like(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    // One vocabulary per binary, as one binary has one set of packages.
    let words: Vec<Vec<u8>> = (0..1024)
        .map(|_| {
            let n = 2 + rng.skewed(12);
            (0..n).map(|_| b"etaoinshrdlucmfwypvbgkqjxz_ABCDEFGHIJ0123456789"[rng.skewed(47)]).collect()
        })
        .collect();
    let phrases: Vec<Vec<u8>> = (0..8192)
        .map(|_| {
            let mut p = Vec::new();
            for i in 0..1 + rng.skewed(6) {
                if i > 0 {
                    p.push(b"./.(*)/"[rng.skewed(7)]);
                }
                p.extend_from_slice(&words[rng.skewed(1024)]);
            }
            p
        })
        .collect();
    let idioms: Vec<Vec<u8>> = (0..4096).map(|_| (0..4 + rng.skewed(24)).map(|_| rng.next() as u8).collect()).collect();
    let mut out = Vec::with_capacity(len + (64 << 10));
    while out.len() < len {
        let seg = out.len() + 4096 + (rng.next() % (60 << 10)) as usize;
        let kind = rng.next() % 100;
        // Code and strings near each other share idioms and packages.
        let local = rng.next() as usize;
        while out.len() < seg {
            match kind {
                // machine code: recurring instruction sequences, then operands
                x if x < CODE => {
                    out.extend_from_slice(&idioms[(local + rng.skewed(LOCAL_IDIOMS)) % 4096]);
                    for _ in 0..rng.skewed(OPERANDS + 1) {
                        out.push(rng.next() as u8);
                    }
                }
                // strings: identifiers and import paths
                x if x < STRINGS => {
                    out.extend_from_slice(&phrases[(local + rng.skewed(LOCAL_PHRASES)) % 8192]);
                    out.push(if rng.next() % 4 == 0 { 0 } else { b'.' });
                }
                // tables: records with increasing offsets and small fields
                x if x < TABLES => {
                    let base = out.len() as u32 & !0xff;
                    out.extend_from_slice(&(base + rng.skewed(16) as u32).to_le_bytes());
                    out.extend_from_slice(&(rng.skewed(64) as u32).to_le_bytes());
                    out.extend_from_slice(&[rng.skewed(4) as u8, 0, 0, 0, rng.skewed(3) as u8, 0, 0, 0]);
                }
                // compressed or hashed data
                _ => out.extend_from_slice(&rng.next().to_le_bytes()),
            }
        }
    }
    out.truncate(len);
    out
}
// Tuned against kubectl v1.33 (amd64); the tests check the ratios.
/// Instruction sequences in reach of one stretch of code.
const LOCAL_IDIOMS: u64 = 256;
/// Phrases in reach of one stretch of strings.
const LOCAL_PHRASES: u64 = 1024;
/// Random operand bytes after an instruction sequence: 0 to this many.
const OPERANDS: u64 = 2;
/// Stretch kinds by percentile: code below CODE, then strings, then tables,
/// then incompressible data (1%).
const CODE: u64 = 48;
const STRINGS: u64 = 75;
const TABLES: u64 = 99;

/// A fake executable for `elf_machine` (62 x86-64, 183 aarch64): a valid ELF
/// identification and machine field followed by `len` stand-in bytes.
pub fn elf(elf_machine: u16, len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; 64];
    v[..4].copy_from_slice(b"\x7fELF");
    v[4] = 2; // 64-bit
    v[5] = 1; // little-endian
    v[6] = 1; // version
    v[16] = 2; // ET_EXEC
    v[18..20].copy_from_slice(&elf_machine.to_le_bytes());
    v.extend(bytes(len, seed));
    v
}

/// A fake executable like [`elf`] whose body compresses like a Go binary ([`go_like`]).
pub fn go_elf(elf_machine: u16, len: usize, seed: u64) -> Vec<u8> {
    let mut v = elf(elf_machine, 0, seed);
    v.extend(go_like(len, seed));
    v
}

/// A gzip tarball holding `members` (name, content) as 0755 regular files.
pub fn tgz(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let with_modes: Vec<(&str, Vec<u8>, u32)> = members.iter().map(|(n, d)| (*n, d.clone(), 0o755)).collect();
    tgz_with_modes(&with_modes)
}

/// A `.tar.gz` of `(name, data, mode)` members.
pub fn tgz_with_modes(members: &[(&str, Vec<u8>, u32)]) -> Vec<u8> {
    let gz = GzBuilder::new().write(Vec::new(), Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, data, mode) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, &data[..]).expect("tar member");
    }
    b.into_inner().and_then(|gz| gz.finish()).expect("finish tgz")
}

/// sha256 hex of `data`.
pub fn sha256(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `data` to `root/<url path>` and its `.sha256` (hash only, like
/// dl.k8s.io, or `hash  name` when `with_name`), returning the hash.
pub fn publish(root: &Path, url_path: &str, data: &[u8], with_name: bool) -> String {
    let p = root.join(url_path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(&p, data).expect("write artifact");
    let h = sha256(data);
    let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let sums = if with_name { format!("{h}  {name}\n") } else { format!("{h}\n") };
    std::fs::write(p.with_file_name(format!("{name}.sha256")), sums).expect("write sha256");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip6_ratio(data: &[u8]) -> f64 {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
        e.write_all(data).expect("compress");
        data.len() as f64 / e.finish().expect("finish").len() as f64
    }

    #[test]
    fn go_like_bytes_compress_like_a_go_binary_and_bytes_do_not() {
        for seed in [1, 2] {
            let r = gzip6_ratio(&go_like(8 << 20, seed));
            assert!((3.0..3.6).contains(&r), "go_like gzip -6 ratio {r:.2}, want about 3.3 like kubectl");
        }
        let r = gzip6_ratio(&bytes(4 << 20, 1));
        assert!((1.2..1.5).contains(&r), "bytes gzip -6 ratio {r:.2}, documented as about 1.35");
    }

    #[test]
    fn go_like_is_deterministic_and_seeded() {
        assert_eq!(go_like(100_000, 5), go_like(100_000, 5));
        assert_ne!(go_like(100_000, 5), go_like(100_000, 6));
        assert_eq!(go_like(12_345, 5).len(), 12_345);
        let e = go_elf(183, 1000, 3);
        assert_eq!((&e[..4], e[18], e.len()), (&b"\x7fELF"[..], 183, 1064));
    }
}
