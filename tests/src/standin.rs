//! Stand-in artifacts: deterministic bytes of realistic size and compressibility.

use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};
use std::path::Path;

/// `len` bytes that compress roughly like a Go binary (about 2:1), from `seed`.
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

/// A gzip tarball holding `members` (name, content) as 0755 regular files.
pub fn tgz(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let gz = GzBuilder::new().write(Vec::new(), Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
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
