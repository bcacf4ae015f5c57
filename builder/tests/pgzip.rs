//! The parallel gzip writer: byte-identical for any thread count, accepted by
//! gzip(1) and tar(1), and as small as single-stream deflate.

mod common;

use common::*;
use kiln::pgzip::{self, BLOCK, DICT};
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
    let mut cases: Vec<(String, Vec<u8>)> = [0, 1, DICT - 1, DICT, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK]
        .into_iter()
        .map(|n| (format!("{n} bytes"), mixed(n, n as u64 + 1)))
        .collect();
    cases.push(("6 MiB mixed".into(), mixed(6 << 20, 42)));
    // Stand-in Go binary data on which a deflate state reused across blocks
    // (zlib-rs `reset`) gives other bytes for blocks 7, 53 and 98.
    cases.push(("13 MiB Go-like".into(), kiln_testkit::standin::go_like(13 << 20, 1)));
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

#[test]
fn blocks_are_primed_with_the_previous_window() {
    // A 16 KiB random pattern repeated over ten blocks: with each block primed
    // with the 32 KiB before it, only the first copy is stored as literals
    // (the rest are matches, about 35 KiB in all); unprimed, every block
    // would store the pattern again (>= 160 KiB).
    let mut x = 0x1234_5678_9abc_def1u64;
    let pattern: Vec<u8> = (0..16 << 10)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let data: Vec<u8> = pattern.iter().copied().cycle().take(10 * BLOCK).collect();
    let gz = pgzip::compress(&data, 6, 2).unwrap();
    assert!(gz.len() < 64 << 10, "{} bytes: blocks are not primed with the previous window", gz.len());
    assert!(gunzip_with_gzip_tool(&gz) == data);
}

#[test]
fn blocking_costs_under_one_percent_of_size_against_one_deflate_stream() {
    let data = mixed(4 << 20, 5);
    let ours = pgzip::compress(&data, 6, 2).unwrap().len();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(&data).unwrap();
    let single = e.finish().unwrap().len();
    assert!(
        (ours as f64) < single as f64 * 1.01,
        "parallel gzip {ours} bytes vs one stream {single} bytes: blocks cost more than 1%"
    );
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
