//! Every output format as a writer of the assembled image tree, all with one
//! signature ([`Writer`]): the overlay tarballs ([`tarball`]), the
//! systemd-sysext image ([`sysext`]), the Ignition image config
//! ([`ignition_image`]) and the Raspberry Pi card ([`card`]). `kiln build`
//! runs [`WRITERS`] in order for each architecture; each writes only when the
//! build asks for its format. Nothing here fetches or renders: the tree, the
//! fetched files and kiln's rendered files arrive in the [`WriteCtx`].

use crate::error::{Error, IoContext, Result};
use crate::image::tree::{Content, Entry, Node, Origin, Tree};
use crate::inputs::firstboot_bin::FirstbootBin;
use crate::inputs::profile::{Arch, Artifact, OutputFormat, Profile};
use crate::outputs::card;
use crate::outputs::ignition_image::{self, IgnitionInputs};
use crate::outputs::manifest::{self, Output};
use crate::outputs::oci_layout;
use crate::outputs::staging::Staging;
use crate::outputs::sysext;
use crate::outputs::tarball;
use crate::progress::{human_bytes, Progress};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The build's choices the writers follow (from `kiln build`'s options).
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    /// gzip level of the `.tar.gz` (1–12).
    pub gzip_level: u32,
    /// zstd level of the `.tar.zst` (1–19).
    pub zstd_level: i32,
    /// How the Ignition image config installs the image.
    pub ignition_mode: ignition_image::Mode,
    /// Ignition spec version of the image config.
    pub ignition_version: &'a str,
    /// URL the output directory will be served from (Ignition downloads from it).
    pub base_url: Option<&'a str>,
    /// The mirror URL the build fetched through, if any (the files config downloads from it).
    pub mirror_url: Option<&'a str>,
}

impl Settings<'_> {
    /// Whether a build of `formats` writes a sysext image: `--format sysext`,
    /// or the Ignition config of `--ignition-mode sysext`, which installs one.
    pub fn writes_sysext(&self, formats: &[OutputFormat]) -> bool {
        formats.contains(&OutputFormat::Sysext)
            || (formats.contains(&OutputFormat::Ignition) && self.ignition_mode == ignition_image::Mode::Sysext)
    }
}

/// Everything a writer reads besides the tree.
pub struct WriteCtx<'a> {
    /// The profile being built.
    pub profile: &'a Profile,
    /// The architecture of the tree.
    pub arch: Arch,
    /// The formats the build writes.
    pub formats: &'a [OutputFormat],
    /// The mtime of every entry.
    pub epoch: u64,
    /// The build's choices.
    pub settings: &'a Settings<'a>,
    /// Every fetched artifact (of every architecture) with its blob in the cache.
    pub artifacts: &'a [(Artifact, PathBuf)],
    /// The `kiln-firstboot` of this architecture, unless pinned as an artifact.
    pub firstboot: Option<&'a FirstbootBin>,
    /// For a card, the decompressed base image ([`crate::inputs::base_fetch::prepare`]).
    pub base_image: Option<&'a Path>,
    /// Kiln's files rendered for the extension's `/usr/bin`, when a sysext
    /// image is written ([`crate::image::render::for_bin_dir`]).
    pub for_sysext: Option<&'a Tree>,
    /// What a writer's error passes through (a verification failure while
    /// packing makes the next build hash every cache entry again).
    pub on_verify: &'a dyn Fn(Error) -> Error,
    /// Where progress goes.
    pub progress: &'a Progress,
}

impl WriteCtx<'_> {
    /// Whether this build writes `format`.
    fn wants(&self, format: OutputFormat) -> bool {
        self.formats.contains(&format)
    }
}

/// What the writers of one architecture produced.
#[derive(Default)]
pub struct ArchWritten {
    /// Files staged for the output directory.
    pub outputs: Vec<Output>,
    /// The tarball's records of the tree (with the sha256 of every file).
    pub records: Option<Vec<tarball::FileRecord>>,
    /// The sysext image's records.
    pub sysext_records: Option<Vec<tarball::FileRecord>>,
    /// The sysext split and the staged image's file name and sha256, for
    /// the Ignition config that installs it.
    pub sysext: Option<(sysext::Split, String, String)>,
}

/// A writer of one output format: writes from the assembled `tree` into
/// `staging` when the build asks for its format, recording what it wrote.
pub type Writer = fn(tree: &Tree, ctx: &WriteCtx, staging: &Staging, out: &mut ArchWritten) -> Result<()>;

/// Every writer, in the order they run (the Ignition config installs the sysext image).
pub const WRITERS: [Writer; 4] = [write_tarballs, write_sysext, write_ignition, write_card];

/// The overlay tarballs (`.tar.gz`, `.tar.zst`).
fn write_tarballs(tree: &Tree, ctx: &WriteCtx, staging: &Staging, out: &mut ArchWritten) -> Result<()> {
    for format in [OutputFormat::Tar, OutputFormat::TarZst] {
        if ctx.wants(format) {
            let file = tarball_file(ctx.profile.name(), ctx.arch, format, ctx.settings);
            let (o, r) = tarball_output(staging, tree, ctx.epoch, ctx.arch, file, format, ctx.progress)
                .map_err(ctx.on_verify)?;
            out.outputs.push(o);
            out.records = Some(r);
        }
    }
    Ok(())
}

/// The systemd-sysext image, for `--format sysext` or the Ignition config of `--ignition-mode sysext`.
fn write_sysext(tree: &Tree, ctx: &WriteCtx, staging: &Staging, out: &mut ArchWritten) -> Result<()> {
    if !ctx.settings.writes_sysext(ctx.formats) {
        return Ok(());
    }
    let (profile, arch) = (ctx.profile, ctx.arch);
    let split = sysext::split(
        profile,
        arch,
        tree,
        ctx.for_sysext.ok_or_else(|| Error::build("sysext: kiln's files were not rendered for /usr/bin (kiln bug)"))?,
    )?;
    let file = sysext::file_name(profile, arch);
    let t0 = Instant::now();
    let r = sysext::write(&split.usr, ctx.epoch, &staging.path(&file)).map_err(ctx.on_verify)?;
    let o = output(staging, &file, "sysext", arch)?;
    ctx.progress.step(format!(
        "wrote {file}: {} entries, {} in {:.1} s",
        r.len(),
        human_bytes(o.size),
        t0.elapsed().as_secs_f64()
    ));
    out.sysext_records = Some(r);
    out.sysext = Some((split, file, o.sha256.clone()));
    out.outputs.push(o);
    Ok(())
}

/// The Ignition image config: installing the sysext image, or every file
/// (downloading the artifacts and `kiln-firstboot`, staged beside it).
fn write_ignition(tree: &Tree, ctx: &WriteCtx, staging: &Staging, out: &mut ArchWritten) -> Result<()> {
    if !ctx.wants(OutputFormat::Ignition) {
        return Ok(());
    }
    let (name, arch, s) = (ctx.profile.name(), ctx.arch, ctx.settings);
    let inputs = IgnitionInputs { version: s.ignition_version, base_url: s.base_url, mirror_url: s.mirror_url };
    let doc = match (s.ignition_mode, &out.sysext) {
        (ignition_image::Mode::Sysext, Some((split, raw_name, raw_sha))) => {
            ignition_image::sysext_config(split, raw_name, raw_sha, &inputs)?
        }
        _ => {
            let fb_out = match ctx.firstboot {
                Some(fb) => {
                    // Named after the profile: two profiles built with different
                    // --firstboot-bin never write one file name with different bytes.
                    let file = format!("{name}-kiln-firstboot-{arch}");
                    copy_planned(&fb.path, fb.size, &fb.sha256, &staging.path(&file))?;
                    let o = output(staging, &file, "firstboot", arch)?;
                    if o.sha256 != fb.sha256 {
                        return Err(Error::verify(format!("{} changed while building", fb.path.display())));
                    }
                    out.outputs.push(o);
                    Some((file, fb.sha256.clone()))
                }
                None => None,
            };
            let images_out = stage_images(tree, ctx, staging, out)?;
            let arts: Vec<Artifact> =
                ctx.artifacts.iter().filter(|(a, _)| a.arch == arch).map(|(a, _)| a.clone()).collect();
            let served = ignition_image::Served {
                firstboot: fb_out.as_ref().map(|(f, s)| (f.as_str(), s.as_str())),
                images: images_out.as_ref().map(|(f, s)| (f.as_str(), s.as_str())),
            };
            ignition_image::files_config(tree, &arts, &served, &ctx.profile.bin_dir(), &inputs)?
        }
    };
    let file = format!("{name}-{arch}.ign");
    let mut text = serde_json::to_string_pretty(&doc).map_err(|e| Error::build(e.to_string()))?;
    text.push('\n');
    manifest::write_text(&staging.path(&file), &text)?;
    out.outputs.push(output(staging, &file, "ignition", arch)?);
    ctx.progress.step(format!(
        "wrote {file} (--ignition-mode {}, Ignition spec {})",
        s.ignition_mode.as_str(),
        s.ignition_version
    ));
    Ok(())
}

/// For a `files` mode Ignition config: the image archive staged beside it as
/// `<profile>-images-<arch>.oci.tar` (streamed from the cache, verified), its
/// file name and sha256; nothing when the profile pins no images.
fn stage_images(
    tree: &Tree,
    ctx: &WriteCtx,
    staging: &Staging,
    out: &mut ArchWritten,
) -> Result<Option<(String, String)>> {
    let Some(e) = tree.get(oci_layout::ARCHIVE_PATH) else { return Ok(None) };
    let Node::File(content @ Content::Generated(g)) = &e.node else { return Ok(None) };
    let file = format!("{}-images-{}.oci.tar", ctx.profile.name(), ctx.arch);
    tarball::copy_planned(oci_layout::ARCHIVE_PATH, e, content, &staging.path(&file)).map_err(ctx.on_verify)?;
    let o = output(staging, &file, "images", ctx.arch)?;
    if o.sha256 != g.sha256 {
        return Err((ctx.on_verify)(Error::verify(format!("{file}: the image archive changed while kiln staged it"))));
    }
    out.outputs.push(o);
    Ok(Some((file, g.sha256.clone())))
}

/// The Raspberry Pi card and its block map, from the fetched base image.
fn write_card(tree: &Tree, ctx: &WriteCtx, staging: &Staging, out: &mut ArchWritten) -> Result<()> {
    if !ctx.wants(OutputFormat::Card) {
        return Ok(());
    }
    let (profile, arch) = (ctx.profile, ctx.arch);
    let base =
        ctx.base_image.ok_or_else(|| Error::build(format!("no base image was fetched for {arch} (kiln bug)")))?;
    let t0 = Instant::now();
    let r =
        card::write(profile, arch, tree, base, ctx.epoch, &staging.path(""), ctx.progress).map_err(ctx.on_verify)?;
    let file = card::image_name(profile, arch);
    let o = output(staging, &file, "card", arch)?;
    ctx.progress.step(format!(
        "wrote {file}: {} entries added to the root filesystem, {} mapped of {}, in {:.1} s",
        r.entries,
        human_bytes(r.mapped_bytes),
        human_bytes(o.size),
        t0.elapsed().as_secs_f64()
    ));
    out.outputs.push(o);
    out.outputs.push(output(staging, &card::bmap_name(profile, arch), "bmap", arch)?);
    Ok(())
}

/// Copies a local file exactly (size and sha256 as planned) into `dest`.
fn copy_planned(src: &Path, size: u64, sha256: &str, dest: &Path) -> Result<()> {
    let content = Content::Disk { path: src.to_path_buf(), size, expect_sha256: Some(sha256.to_string()) };
    let entry = Entry::file(content.clone(), 0o755, Origin::Rendered);
    tarball::copy_planned(&dest.display().to_string(), &entry, &content, dest)
}

/// Records a staged output file (hashing it).
fn output(staging: &Staging, file: &str, format: &str, arch: Arch) -> Result<Output> {
    let path = staging.path(file);
    let size = std::fs::metadata(&path).io_ctx(file)?.len();
    let sha256 = tarball::digest(&path)?;
    Ok(Output { file: file.to_string(), format: format.into(), arch: arch.to_string(), size, sha256 })
}

/// The file name and compression of the overlay tarball in `format`.
fn tarball_file(name: &str, arch: Arch, format: OutputFormat, opts: &Settings) -> (String, tarball::Compression) {
    match format {
        OutputFormat::TarZst => (format!("{name}-{arch}.tar.zst"), tarball::Compression::Zstd(opts.zstd_level)),
        _ => (format!("{name}-{arch}.tar.gz"), tarball::Compression::Gzip(opts.gzip_level)),
    }
}

/// Writes one overlay tarball of `tree` into the staging directory as `file`.
fn tarball_output(
    staging: &Staging,
    tree: &Tree,
    epoch: u64,
    arch: Arch,
    (file, compression): (String, tarball::Compression),
    format: OutputFormat,
    progress: &Progress,
) -> Result<(Output, Vec<tarball::FileRecord>)> {
    let t0 = Instant::now();
    let (records, written) = tarball::write(tree, epoch, compression, &staging.path(&file))?;
    progress.step(format!(
        "wrote {file}: {} entries, {} in {:.1} s",
        records.len(),
        human_bytes(written.size),
        t0.elapsed().as_secs_f64()
    ));
    let out = Output {
        file,
        format: format.as_str().into(),
        arch: arch.to_string(),
        size: written.size,
        sha256: written.sha256,
    };
    Ok((out, records))
}
