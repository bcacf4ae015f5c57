//! The parallel gzip writer: byte-identical for any thread count, accepted by
//! gzip(1) and tar(1), within 1% of one libdeflate stream over the whole
//! input and smaller than zlib's best level; and the same for `.tar.zst`.

mod common;

use common::*;
use kiln::outputs::pgzip::{self, BLOCK};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// `len` bytes alternating between random stretches and repetitive text, from `seed`.
fn mixed(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(len + 8192);
    while out.len() < len {
        let run = (next() % 8192) as usize + 1;
        if next() % 2 == 0 {
            (0..run).for_each(|_| out.push(next() as u8));
        } else {
            let words = ["kubelet ", "--config=/etc/kubernetes/ ", "containerd ", "\0\0\0\0", "ELF "];
            while out.len() < len && run > 0 {
                out.extend_from_slice(words[(next() % words.len() as u64) as usize].as_bytes());
                if next() % 64 == 0 {
                    break;
                }
            }
        }
    }
    out.truncate(len);
    out
}

fn gunzip_with_gzip_tool(gz: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.gz");
    std::fs::write(&f, gz).unwrap();
    let t = Command::new("gzip").arg("-t").arg(&f).output().expect("gzip (apt-get install gzip)");
    assert!(t.status.success(), "gzip -t: {}", String::from_utf8_lossy(&t.stderr));
    let d = Command::new("gzip").arg("-dc").arg(&f).output().expect("gzip -dc");
    assert!(d.status.success(), "gzip -dc: {}", String::from_utf8_lossy(&d.stderr));
    assert!(d.stderr.is_empty(), "gzip -dc warned: {}", String::from_utf8_lossy(&d.stderr));
    d.stdout
}

#[test]
fn output_is_byte_identical_on_1_2_and_8_threads_and_gzip_restores_it() {
    let mut cases: Vec<(String, Vec<u8>)> = [0, 1, 32 << 10, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK]
        .into_iter()
        .map(|n| (format!("{n} bytes"), mixed(n, n as u64 + 1)))
        .collect();
    cases.push(("6 MiB mixed".into(), mixed(6 << 20, 42)));
    // Stand-in Go binary data: dynamic Huffman blocks in every 1 MiB block.
    cases.push(("13 MiB Go-like".into(), kiln_testkit::standin::go_like(13 << 20, 1)));
    // Noise: libdeflate stores it (stored blocks, which end byte-aligned).
    cases.push(("3 MiB random".into(), mixed(3 << 20, 99).iter().map(|b| b.wrapping_mul(167)).collect()));
    cases.push(("1 MiB of zeros".into(), vec![0; 1 << 20]));
    for (what, data) in &cases {
        let one = pgzip::compress(data, 6, 1).unwrap();
        for threads in [2, 8] {
            let n = pgzip::compress(data, 6, threads).unwrap();
            assert!(n == one, "{what}: {threads} threads give other bytes than 1 thread");
        }
        assert_eq!(&one[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255], "{what}: header (no name, mtime 0)");
        let back = gunzip_with_gzip_tool(&one);
        assert!(back == *data, "{what}: gzip -dc gives other bytes");
        let isize = u32::from_le_bytes(one[one.len() - 4..].try_into().unwrap());
        assert_eq!(isize as usize, data.len() % (1 << 32), "{what}: ISIZE");
    }
}

#[test]
fn block_cuts_do_not_depend_on_write_sizes_or_flushes() {
    let data = mixed(BLOCK * 5 + 333, 7);
    let whole = pgzip::compress(&data, 6, 2).unwrap();
    for chunk in [1, 511, 512, BLOCK - 1, BLOCK + 1] {
        let mut w = pgzip::Writer::new(Vec::new(), 6, 3).unwrap();
        // Tiny writes are slow one byte at a time; do only the first blocks so.
        let (head, tail) = data.split_at(if chunk == 1 { BLOCK + 7 } else { 0 });
        for c in head.chunks(chunk).chain(tail.chunks(chunk)) {
            w.write_all(c).unwrap();
            if c.len() % 3 == 0 {
                w.flush().unwrap();
            }
        }
        assert!(w.finish().unwrap() == whole, "writes of {chunk} bytes change the output");
    }
}

fn libdeflate_whole(data: &[u8], level: i32) -> usize {
    let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).unwrap());
    let mut out = vec![0; c.gzip_compress_bound(data.len())];
    c.gzip_compress(data, &mut out).unwrap()
}

#[test]
fn blocking_costs_under_one_percent_and_beats_zlib_best_on_go_binaries() {
    let data = kiln_testkit::standin::go_like(12 << 20, 5);
    let ours = pgzip::compress(&data, 6, 2).unwrap().len();
    let single = libdeflate_whole(&data, 6);
    assert!(
        (ours as f64) < single as f64 * 1.01,
        "parallel gzip {ours} bytes vs one libdeflate stream {single} bytes: blocks cost more than 1%"
    );
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&data).unwrap();
    let zlib9 = e.finish().unwrap().len();
    assert!(ours < zlib9, "kiln's level 6 gives {ours} bytes, zlib level 9 {zlib9}: the README's claim is wrong");
}

#[test]
fn every_level_round_trips_and_higher_levels_are_not_larger() {
    let data = kiln_testkit::standin::go_like(3 << 20, 8);
    let mut last = usize::MAX;
    for level in [1, 3, 6, 9, 12] {
        let gz = pgzip::compress(&data, level, 3).unwrap();
        assert!(gunzip_with_gzip_tool(&gz) == data, "level {level}");
        assert!(gz.len() <= last, "level {level} gives {} bytes, more than the level below ({last})", gz.len());
        last = gz.len();
        let xfl = match level {
            1 => 4,
            9 | 12 => 2,
            _ => 0,
        };
        assert_eq!(gz[8], xfl, "level {level}: XFL as libdeflate's gzip_compress sets it");
    }
    for bad in [0, 13] {
        assert!(pgzip::Writer::new(Vec::new(), bad, 1).is_err(), "level {bad} accepted");
    }
}

#[test]
fn flate2_reads_it_in_small_pieces() {
    let data = mixed(BLOCK * 3 + 5, 11);
    let gz = pgzip::compress(&data, 6, 4).unwrap();
    let mut back = Vec::new();
    let mut r = flate2::read::GzDecoder::new(&gz[..]);
    let mut buf = [0u8; 1000];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        back.extend_from_slice(&buf[..n]);
    }
    assert!(back == data);
}

fn tar_lists(tgz: &Path) -> String {
    let o = Command::new("tar").arg("-tzf").arg(tgz).stderr(Stdio::piped()).output().expect("tar");
    assert!(o.status.success(), "tar -tzf {}: {}", tgz.display(), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn built_tarball_is_identical_on_one_and_all_threads_and_tar_reads_it() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let tgz = |out: &str| s.path(&format!("{out}/flatcar-1.34-amd64.tar.gz"));
    for (threads, out) in [(Some("1"), "one"), (Some("8"), "eight"), (None, "all")] {
        let mut c = s.build_cmd("flatcar-1.34", "cache", out);
        match threads {
            Some(n) => c.env(pgzip::THREADS_ENV, n),
            None => c.env_remove(pgzip::THREADS_ENV),
        };
        let o = run(&mut c);
        assert!(o.status.success(), "build with {threads:?} threads: {}", stderr(&o));
    }
    let one = std::fs::read(tgz("one")).unwrap();
    assert!(one.len() > 4 * BLOCK, "the tarball spans many blocks ({} bytes)", one.len());
    for out in ["eight", "all"] {
        assert!(std::fs::read(tgz(out)).unwrap() == one, "{out}: tarball differs from the 1-thread build");
        assert_eq!(
            std::fs::read(s.path(&format!("{out}/SHA256SUMS"))).unwrap(),
            std::fs::read(s.path("one/SHA256SUMS")).unwrap()
        );
    }
    gunzip_with_gzip_tool(&one);
    let listing = tar_lists(&tgz("one"));
    for p in ["opt/bin/kubelet", "opt/bin/kiln-firstboot", "etc/systemd/system/kubelet.service"] {
        assert!(listing.lines().any(|l| l == p), "{p} not listed:\n{listing}");
    }
}

#[test]
fn built_tar_zst_is_identical_on_one_and_all_threads_and_zstd_and_tar_read_it() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let zst = |out: &str| s.path(&format!("{out}/flatcar-1.34-amd64.tar.zst"));
    for (threads, out) in [(Some("1"), "one"), (Some("8"), "eight"), (None, "all")] {
        let mut c = s.build_cmd_bare("flatcar-1.34", "cache", out);
        c.args(["--format", "tar.zst"]);
        match threads {
            Some(n) => c.env(pgzip::THREADS_ENV, n),
            None => c.env_remove(pgzip::THREADS_ENV),
        };
        let o = run(&mut c);
        assert!(o.status.success(), "build with {threads:?} threads: {}", stderr(&o));
    }
    let one = std::fs::read(zst("one")).unwrap();
    assert_eq!(&one[..4], &[0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
    for out in ["eight", "all"] {
        assert!(std::fs::read(zst(out)).unwrap() == one, "{out}: .tar.zst differs from the 1-thread build");
    }
    assert!(!s.path("one/flatcar-1.34-amd64.tar.gz").exists(), "--format tar.zst also wrote a .tar.gz");
    let t = Command::new("zstd").arg("-tq").arg(zst("one")).output().expect("zstd (apt-get install zstd)");
    assert!(t.status.success(), "zstd -t: {}", String::from_utf8_lossy(&t.stderr));
    let o = Command::new("tar").arg("--zstd").arg("-tf").arg(zst("one")).output().expect("tar");
    assert!(o.status.success(), "tar --zstd -tf: {}", String::from_utf8_lossy(&o.stderr));
    let listing = String::from_utf8_lossy(&o.stdout);
    assert!(listing.lines().any(|l| l == "opt/bin/kubelet"), "{listing}");
    // The same members as the .tar.gz of the same tree, and SHA256SUMS names the .tar.zst.
    let o = run(&mut s.build_cmd("flatcar-1.34", "cache", "gz"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(listing, tar_lists(&s.path("gz/flatcar-1.34-amd64.tar.gz")));
    let sums = std::fs::read_to_string(s.path("one/SHA256SUMS")).unwrap();
    assert!(sums.contains("flatcar-1.34-amd64.tar.zst"), "{sums}");
}

#[test]
fn gzip_and_zstd_levels_are_part_of_the_build_and_checked() {
    let s = Scratch::new(&["flatcar-1.34"]);
    s.pin("flatcar-1.34");
    let o = run(&mut s.build_cmd("flatcar-1.34", "cache", "dist"));
    assert!(o.status.success(), "{}", stderr(&o));
    let default = std::fs::read(s.path("dist/flatcar-1.34-amd64.tar.gz")).unwrap();
    // Another level is another output: not "up to date", and other bytes.
    let o = run(s.build_cmd("flatcar-1.34", "cache", "dist").args(["--gzip-level", "1"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("up to date"), "{}", stderr(&o));
    let fast = std::fs::read(s.path("dist/flatcar-1.34-amd64.tar.gz")).unwrap();
    assert!(fast != default, "--gzip-level 1 wrote the level-6 bytes");
    assert_eq!(fast[8], 4, "XFL 'fastest' at level 1");
    for bad in [["--gzip-level", "0"], ["--gzip-level", "13"], ["--zstd-level", "20"], ["--zstd-level", "x"]] {
        let o = run(s.build_cmd("flatcar-1.34", "cache", "bad").args(bad));
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(bad[0]), "{bad:?}: {}", stderr(&o));
    }
}
