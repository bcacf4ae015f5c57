//! Preparing the base OS image a card starts from: the `[base_image]` pin as
//! an [`Artifact`], fetched and verified through kiln's [`fetch`] and
//! [`Cache`] with the other artifacts, then decompressed once (streamed,
//! written sparse) into the cache. The card writer receives the result.

use crate::error::{Error, IoContext, Result};
use crate::hash::{hex, is_sha256_hex};
use crate::inputs::base_image::{
    BaseImageSpec, Compression, ARTIFACT_NAME, DEFAULT_MAX_IMAGE_MIB, PAST_LAST_PARTITION,
};
use crate::inputs::cache::Cache;
use crate::inputs::fetch::{self, FetchOptions};
use crate::inputs::profile::{Arch, Artifact, Install, Profile};
use crate::progress::Progress;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

impl BaseImageSpec {
    /// The base image as an [`Artifact`], so the ordinary fetch path (mirror,
    /// `--offline`, retries, streaming sha256, cache) handles it.
    pub fn artifact(&self, profile: &Profile, arch: Arch) -> Result<Artifact> {
        let sha = self.sha256.get_ref().to_ascii_lowercase();
        if !is_sha256_hex(&sha) {
            return Err(Error::config(profile.at(
                self.sha256.span(),
                "base_image.sha256 is not a sha256 (a placeholder?); copy the value from upstream's published checksum file next to the download",
            )));
        }
        if let Some(i) = &self.image_sha256 {
            if !is_sha256_hex(&i.get_ref().to_ascii_lowercase()) {
                return Err(Error::config(
                    profile.at(i.span(), "base_image.image_sha256 is not a sha256; remove it or copy upstream's value"),
                ));
            }
        }
        let version = self.version.get_ref().clone();
        Ok(Artifact {
            name: ARTIFACT_NAME.to_string(),
            url: crate::inputs::profile::expand_url(self.url.get_ref(), &version, arch),
            version,
            arch,
            sha256: sha,
            size: None,
            dest: "/".to_string(),
            mode: 0o644,
            install: Install::File { name: ARTIFACT_NAME.to_string() },
        })
    }
}

/// Fetches and verifies the base image, then returns its decompressed,
/// sparse copy in the cache (`<cache>/card/<download sha256>.img`), making it
/// once. With `image_sha256` pinned the decompressed bytes are verified too.
/// Cards are Raspberry Pi cards: any `arch` but arm64 is refused first.
pub fn prepare(
    profile: &Profile,
    arch: Arch,
    cache: &Cache,
    opts: &FetchOptions,
    progress: &Progress,
) -> Result<PathBuf> {
    if arch != Arch::Arm64 {
        return Err(Error::config(format!(
            "--format card builds Raspberry Pi cards, which are arm64; build it with --arch arm64 (asked for {arch})"
        )));
    }
    let spec = profile.base_image()?;
    let artifact = spec.artifact(profile, arch)?;
    let blob = fetch::fetch_all(cache, opts, std::slice::from_ref(&artifact), progress)?
        .pop()
        .ok_or_else(|| Error::build("the base image vanished from the cache; run again"))?;
    let dir = cache.root().join("card");
    fs::create_dir_all(&dir).io_ctx(dir.display())?;
    let image = dir.join(format!("{}.img", artifact.sha256));
    if image.is_file() {
        return Ok(image);
    }
    progress.step(format!("decompressing base image {} ({})", artifact.version, spec.compression.get_ref()));
    let tmp = cache.tmp_path("base-image.img");
    let cap = match &spec.max_image_mib {
        Some(m) if *m.get_ref() == 0 || *m.get_ref() > (1 << 30) => {
            return Err(Error::config(profile.at(
                m.span(),
                "base_image.max_image_mib must be between 1 and 1073741824 (MiB); remove it for the 16 GiB default",
            )))
        }
        Some(m) => *m.get_ref() << 20,
        None => DEFAULT_MAX_IMAGE_MIB << 20,
    };
    let result = (|| {
        let (size, sha) = decompress_sparse(&blob, *spec.compression.get_ref(), &tmp, &artifact.sha256, cap)?;
        if let Some(want) = &spec.image_sha256 {
            let want = want.get_ref().to_ascii_lowercase();
            if sha != want {
                return Err(Error::verify(format!(
                    "base image {}: the decompressed image hashes to {sha}, the profile pins image_sha256 {want}; nothing was cached. If upstream changed the image, review it and update the pin",
                    artifact.url
                )));
            }
        }
        if size < 1024 * 1024 {
            return Err(Error::config(format!(
                "base image {}: only {size} bytes decompressed; that is not a disk image",
                artifact.url
            )));
        }
        fs::rename(&tmp, &image).io_ctx(image.display())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    Ok(image)
}

/// Streams `blob` through its decompressor into `out`, leaving all-zero 4 KiB
/// blocks as holes; returns the image size and the sha256 of all its bytes.
/// Every frame or stream of the download is decoded (zstd, xz and gzip may
/// be concatenated). Decoding stops with an error at `cap` bytes, or 64 MiB
/// ([`PAST_LAST_PARTITION`]) past the end of the last partition the image's
/// MBR names, and at once when the first sector is no MBR: a small download
/// that expands without end (a decompression bomb) is refused quickly.
fn decompress_sparse(blob: &Path, c: Compression, out: &Path, blob_sha: &str, cap: u64) -> Result<(u64, String)> {
    let file = BufReader::with_capacity(1 << 20, File::open(blob).io_ctx(blob.display())?);
    let mut reader: Box<dyn Read> = match c {
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(file)),
        Compression::Gz => Box::new(flate2::read::MultiGzDecoder::new(file)),
        // libzstd's streaming decoder continues across concatenated frames.
        Compression::Zst => Box::new(
            zstd::stream::read::Decoder::with_buffer(file)
                .map_err(|e| Error::config(format!("base image {blob_sha}: not a zstd stream: {e}")))?,
        ),
        Compression::None => Box::new(file),
    };
    let mut w = File::create(out).io_ctx(out.display())?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total: u64 = 0;
    let mut limit = cap;
    loop {
        let n = read_full(&mut reader, &mut buf).map_err(|e| {
            Error::config(format!(
                "base image {blob_sha}: cannot decompress ({c:?}): {e}; check `compression` in [base_image]"
            ))
        })?;
        if n == 0 {
            break;
        }
        if total == 0 {
            limit = limit.min(partition_limit(&buf[..n]).map_err(|m| {
                Error::config(format!(
                    "base image {blob_sha}: {m}; it is not a Raspberry Pi disk image — check `url` and `compression` in [base_image]"
                ))
            })?);
        }
        if total + n as u64 > limit {
            return Err(Error::config(format!(
                "base image {blob_sha}: decompresses to more than {limit} bytes (the cap: {} MiB, or 64 MiB past its last partition); decoding stopped and nothing was cached. A real image this large needs `max_image_mib` in [base_image]",
                cap >> 20
            )));
        }
        h.update(&buf[..n]);
        for chunk in buf[..n].chunks(4096) {
            if chunk.iter().all(|b| *b == 0) {
                w.seek(SeekFrom::Current(chunk.len() as i64)).io_ctx(out.display())?;
            } else {
                w.write_all(chunk).io_ctx(out.display())?;
            }
        }
        total += n as u64;
    }
    w.set_len(total).io_ctx(out.display())?;
    w.sync_all().io_ctx(out.display())?;
    Ok((total, hex(&h.finalize())))
}

/// The most bytes an image starting with `head` may hold: 64 MiB past the
/// end of the last partition in its MBR. An error when `head` is no MBR.
fn partition_limit(head: &[u8]) -> std::result::Result<u64, String> {
    if head.len() < 512 || head[510..512] != [0x55, 0xaa] {
        return Err("the decompressed image does not start with a partition table (no 55 AA at byte 510)".into());
    }
    let end = (0..4)
        .map(|i| {
            let e = &head[446 + 16 * i..446 + 16 * (i + 1)];
            let start = u32::from_le_bytes([e[8], e[9], e[10], e[11]]) as u64;
            let sectors = u32::from_le_bytes([e[12], e[13], e[14], e[15]]) as u64;
            if e[4] == 0 {
                0
            } else {
                (start + sectors) * 512
            }
        })
        .max()
        .unwrap_or(0);
    Ok(end + PAST_LAST_PARTITION)
}

/// Reads until `buf` is full or the stream ends.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
