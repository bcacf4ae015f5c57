//! A tiny one-platform OCI image-layout archive, for the architectures no
//! real program is built for here (an arm64 entry beside the amd64 test
//! image in a multi-platform index, say).

use std::path::{Path, PathBuf};

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", crate::standin::sha256(data))
}

fn append(t: &mut tar::Builder<impl std::io::Write>, name: &str, data: &[u8]) -> std::io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    t.append_data(&mut h, name, data)
}

/// Writes to `path` an archive as `tests/k8s/images` writes them (an image
/// index naming one linux/`arch` manifest, its config, one uncompressed
/// layer holding the file `arch` with the architecture's name); returns `path`.
pub fn tiny_archive(path: &Path, arch: &str) -> Result<PathBuf, String> {
    let at = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut layer = tar::Builder::new(Vec::new());
    append(&mut layer, "arch", arch.as_bytes()).map_err(at)?;
    let layer = layer.into_inner().map_err(at)?;
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        sha(&layer)
    );
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
        sha(config.as_bytes()),
        config.len(),
        sha(&layer),
        layer.len()
    );
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}]}}"#,
        sha(manifest.as_bytes()),
        manifest.len()
    );
    let top = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{}","size":{}}}]}}"#,
        sha(index.as_bytes()),
        index.len()
    );
    let mut t = tar::Builder::new(std::fs::File::create(path).map_err(at)?);
    append(&mut t, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(at)?;
    append(&mut t, "index.json", top.as_bytes()).map_err(at)?;
    for blob in [layer.as_slice(), config.as_bytes(), manifest.as_bytes(), index.as_bytes()] {
        append(&mut t, &format!("blobs/sha256/{}", crate::standin::sha256(blob)), blob).map_err(at)?;
    }
    t.into_inner().map_err(at)?;
    Ok(path.to_path_buf())
}
