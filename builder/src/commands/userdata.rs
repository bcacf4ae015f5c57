//! `kiln userdata`: one node's user-data ([`crate::userdata`]), written 0600
//! or printed.

use crate::cli::UserdataArgs;
use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::userdata::{self, Format, PublishedImage};
use std::path::Path;

/// Renders the node's user-data (merged into `--image`'s Ignition config, or
/// installing `--image`'s tarball), gzips it with `--gzip`, writes it to
/// `--out` (atomically, mode 0600) or standard output (`--out -`), and warns
/// when it is over EC2's limit.
pub fn run(a: UserdataArgs, progress: &Progress) -> Result<()> {
    let Some(out) = a.out.as_deref() else {
        return Err(Error::config(
            "user-data holds the cluster's bootstrap token (and a control plane's CA keys): pass --out FILE (written 0600), or --out - to print it on standard output",
        ));
    };
    let c = Cluster::load(&a.cluster)?;
    let (format, tarball) = image_format(&a)?;
    if let Some(image) = &a.image {
        userdata::check_image_versions(image, &c, a.role)?;
        userdata::check_image_cni(image, &c)?;
    }
    let mut data = userdata::render(&c, a.role, a.node.as_deref(), format, &a.ignition_version, tarball.as_ref())?;
    if let (Some(image), Format::Ignition) = (&a.image, format) {
        data = userdata::combine(image, &data)?;
    }
    if a.gzip {
        data = crate::ignition::gzip(&data);
    }
    let dest = if out == Path::new("-") {
        std::io::Write::write_all(&mut std::io::stdout(), &data)
            .map_err(|e| Error::build(format!("writing user-data: {e}")))?;
        "standard output".to_string()
    } else {
        crate::io::write_atomic(out, &data, 0o600)?;
        out.display().to_string()
    };
    progress.step(format!(
        "wrote {} bytes of {} user-data (role {}) to {dest}",
        data.len(),
        format.as_str(),
        a.role.as_str()
    ));
    if data.len() > userdata::EC2_LIMIT {
        progress.warn(format!(
            "{} bytes is over EC2's 16 KiB user-data limit{}",
            data.len(),
            if a.gzip { "" } else { "; add --gzip" }
        ));
    }
    Ok(())
}

/// The format `kiln userdata` writes, and the tarball a cloud-config installs:
/// `--image X.ign` means Ignition, `--image X.tar.gz|.tar.zst` a cloud-config
/// (with --base-url); an explicit --format that contradicts the image is refused.
fn image_format(a: &UserdataArgs) -> Result<(Format, Option<PublishedImage>)> {
    let Some(image) = &a.image else { return Ok((a.format.unwrap_or(Format::Toml), None)) };
    let name = image.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if name.ends_with(".ign") {
        if let Some(f) = a.format.filter(|f| *f != Format::Ignition) {
            return Err(Error::config(format!(
                "--image {} is an Ignition image config: it goes with --format ignition (Fedora CoreOS, Flatcar), not --format {}; for a cloud-init machine pass the image's tarball (kiln build --format tar)",
                image.display(),
                f.as_str()
            )));
        }
        return Ok((Format::Ignition, None));
    }
    if let Some(f) = a.format.filter(|f| *f != Format::CloudConfig) {
        return Err(Error::config(format!(
            "--image {} is a tarball: a cloud-config installs it (--format cloud-config); --format {} cannot",
            image.display(),
            f.as_str()
        )));
    }
    let Some(base) = &a.base_url else {
        return Err(Error::config(format!(
            "--image {} needs --base-url URL: the address dist/ is served from, where the node downloads the image",
            image.display()
        )));
    };
    Ok((Format::CloudConfig, Some(PublishedImage::read(image, base)?)))
}
