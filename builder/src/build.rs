//! `kiln build`: profile → fetched, verified artifacts → image tree → outputs.
//!
//! [`build`] runs the stages in order, each a named function: the options
//! (formats, `kiln check`'s rules, architectures, `kiln-firstboot`, the inputs
//! fingerprint; an up-to-date output directory stops here), the fetch stage
//! (every artifact and, for a card, the base image, through one cache), the
//! assembly of each architecture's tree ([`crate::image::assemble`], the one
//! `kiln check` runs), every format's writer ([`crate::outputs::writers`]),
//! and the commit of the new generation with its manifest.

use crate::error::{Error, IoContext, Result};
use crate::hash;
use crate::image::assemble::{self, Pins};
use crate::image::check;
use crate::image::render;
use crate::image::tree::{Node, Tree};
use crate::inputs::base_fetch;
use crate::inputs::cache::Cache;
use crate::inputs::fetch::{self, FetchOptions};
use crate::inputs::firstboot_bin::{self, FirstbootBin};
use crate::inputs::image_blobs::FetchedImage;
use crate::inputs::profile::{Arch, Artifact, OutputFormat, Profile};
use crate::outputs::ignition_image;
use crate::outputs::manifest::{self, Manifest, Output, ProfileSection};
use crate::outputs::oci_layout;
use crate::outputs::staging::Staging;
use crate::outputs::sysext;
use crate::outputs::tarball;
use crate::outputs::writers::{ArchWritten, Settings, WriteCtx, WRITERS};
use crate::progress::{human_bytes, Progress};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options for one build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Output directory (`dist/`).
    pub out_dir: PathBuf,
    /// Cache directory (default `$XDG_CACHE_HOME/kiln`).
    pub cache_dir: Option<PathBuf>,
    /// How to fetch.
    pub fetch: FetchOptions,
    /// Architectures to build (empty: all the profile lists).
    pub archs: Vec<Arch>,
    /// `--firstboot-bin [ARCH=]PATH` values.
    pub firstboot_bins: Vec<(Option<Arch>, PathBuf)>,
    /// Rebuild even if the outputs are up to date.
    pub force: bool,
    /// Output formats (empty: the profile's `formats`, else the tarball).
    pub formats: Vec<OutputFormat>,
    /// How the Ignition image config installs the image.
    pub ignition_mode: ignition_image::Mode,
    /// Ignition spec version of the image config.
    pub ignition_version: String,
    /// URL the output directory will be served from (Ignition downloads from it).
    pub base_url: Option<String>,
    /// gzip level of the `.tar.gz` (1–12).
    pub gzip_level: u32,
    /// zstd level of the `.tar.zst` (1–19).
    pub zstd_level: i32,
}

impl BuildOptions {
    /// Options with defaults: `dist/`, the default cache, tarball only.
    pub fn new(out_dir: PathBuf) -> BuildOptions {
        BuildOptions {
            out_dir,
            cache_dir: None,
            fetch: FetchOptions::default(),
            archs: Vec::new(),
            firstboot_bins: Vec::new(),
            force: false,
            formats: Vec::new(),
            ignition_mode: ignition_image::Mode::Sysext,
            ignition_version: "3.3.0".into(),
            base_url: None,
            gzip_level: tarball::Compression::GZIP_DEFAULT,
            zstd_level: tarball::Compression::ZSTD_DEFAULT,
        }
    }
}

/// What a build did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildReport {
    /// Profile name.
    pub profile: String,
    /// Whether the outputs were already up to date (nothing written).
    pub up_to_date: bool,
    /// Output directory.
    pub out_dir: PathBuf,
    /// Files in the output directory that belong to this profile.
    pub outputs: Vec<Output>,
}

/// The reproducibility epoch: `SOURCE_DATE_EPOCH` if set, else the profile's.
pub fn epoch(profile: &Profile) -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse::<u64>()
            .map_err(|_| {
                Error::config(format!("SOURCE_DATE_EPOCH=`{s}` is not a number of seconds; unset it or fix it"))
            })
            .and_then(|e| crate::inputs::validate::epoch("SOURCE_DATE_EPOCH", e).map(|()| e).map_err(Error::config)),
        _ => Ok(profile.epoch()),
    }
}

/// sha256 over everything that decides the output bytes.
fn fingerprint(
    profile: &Profile,
    opts: &BuildOptions,
    formats: &[OutputFormat],
    epoch: u64,
    archs: &[Arch],
    firstboot: &[Option<FirstbootBin>],
) -> Result<String> {
    let mut h = Sha256::new();
    h.update(format!("kiln {}\nepoch {epoch}\n", env!("CARGO_PKG_VERSION")));
    for f in formats {
        h.update(format!("format {}\n", f.as_str()));
    }
    if formats.contains(&OutputFormat::Tar) {
        h.update(format!("gzip-level {}\n", opts.gzip_level));
    }
    if formats.contains(&OutputFormat::TarZst) {
        h.update(format!("zstd-level {}\n", opts.zstd_level));
    }
    if formats.contains(&OutputFormat::Ignition) {
        let mirror = match &opts.fetch.mirror {
            Some(fetch::Mirror::Url(u)) => u.as_str(),
            _ => "",
        };
        h.update(format!("ignition {:?} {} {:?} {mirror}\n", opts.ignition_mode, opts.ignition_version, opts.base_url));
    }
    for a in archs {
        h.update(format!("arch {a}\n"));
    }
    h.update(profile.text.as_bytes());
    for fb in firstboot.iter().flatten() {
        h.update(format!("firstboot {}\n", fb.sha256));
    }
    let root = profile.overlays_root();
    for name in &profile.doc.overlays {
        hash_dir(&mut h, &root.join(name.get_ref()), Path::new(""))?;
    }
    Ok(hash::hex(&h.finalize()))
}

fn hash_dir(h: &mut Sha256, base: &Path, rel: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = base.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir).io_ctx(dir.display())?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let r = rel.join(e.file_name());
        let meta = std::fs::symlink_metadata(e.path()).io_ctx(e.path().display())?;
        h.update(format!("{}\0{:o}\0", r.display(), meta.permissions().mode()));
        if meta.is_dir() {
            hash_dir(h, base, &r)?;
        } else if meta.file_type().is_symlink() {
            h.update(std::fs::read_link(e.path()).io_ctx(e.path().display())?.to_string_lossy().as_bytes());
        } else {
            h.update(hash::sha256_file(&e.path()).io_ctx(e.path().display())?);
        }
    }
    Ok(())
}

/// File in the generations directory (`dist.gen/`) recording which profile
/// file each profile name in the output directory was built from. Not an
/// output: it holds this machine's absolute paths.
pub const PROFILE_REGISTRY: &str = "profiles.json";

/// Refuses to build `profile` into `out` when the outputs of its `name` there
/// came from another profile file that still exists and still has that name:
/// the two would overwrite each other's outputs.
fn check_name_is_ours(profile: &Profile, out: &Path) -> Result<()> {
    let Ok(gens) = crate::outputs::staging::generations_dir(out) else { return Ok(()) };
    let Ok(text) = std::fs::read_to_string(gens.join(PROFILE_REGISTRY)) else { return Ok(()) };
    let Ok(map) = serde_json::from_str::<std::collections::BTreeMap<String, PathBuf>>(&text) else { return Ok(()) };
    let Some(recorded) = map.get(profile.name()) else { return Ok(()) };
    let here = std::fs::canonicalize(&profile.path).unwrap_or_else(|_| profile.path.clone());
    if *recorded == here {
        return Ok(());
    }
    let still_named = Profile::load(recorded).is_ok_and(|p| p.name() == profile.name());
    if !still_named {
        return Ok(()); // moved, renamed or deleted: this file takes the name over
    }
    Err(Error::config(format!(
        "{}: name = \"{}\" is also the name of {}, whose outputs are in {}; two profiles with one name overwrite each other's outputs: give this one its own `name` (it names the outputs), or build it with --out ANOTHER_DIR",
        profile.path.display(),
        profile.name(),
        recorded.display(),
        out.display()
    )))
}

/// Records in `dist.gen/profiles.json` that `profile`'s name is built from its file.
fn record_name(profile: &Profile, out: &Path) -> Result<()> {
    let gens = crate::outputs::staging::generations_dir(out)?;
    let path = gens.join(PROFILE_REGISTRY);
    let mut map: std::collections::BTreeMap<String, PathBuf> =
        std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    let here = std::fs::canonicalize(&profile.path).unwrap_or_else(|_| profile.path.clone());
    if map.get(profile.name()) == Some(&here) {
        return Ok(());
    }
    map.insert(profile.name().to_string(), here);
    let text = serde_json::to_string_pretty(&map).map_err(|e| Error::build(e.to_string()))?;
    crate::io::write_atomic(&path, text.as_bytes(), 0o644)
}

/// What the options stage decided for one build.
struct Plan {
    /// Output formats, sorted, without repeats.
    formats: Vec<OutputFormat>,
    /// What `kiln check` found (warnings only: errors stop the build).
    findings: Vec<crate::image::finding::Finding>,
    /// The mtime of every entry.
    epoch: u64,
    /// Architectures to build.
    archs: Vec<Arch>,
    /// The `kiln-firstboot` of each of `archs` (none when pinned as an artifact).
    firstboot: Vec<Option<FirstbootBin>>,
    /// sha256 over everything that decides the output bytes.
    inputs: String,
}

/// Builds every requested architecture of `profile` into `opts.out_dir`:
/// options → fetch → assemble → write each format → commit.
pub fn build(profile: &Profile, opts: &BuildOptions, progress: &Progress) -> Result<BuildReport> {
    let started = Instant::now();
    let plan = options(profile, opts, progress)?;
    // `--out` must name a directory of its own (it becomes a link to a generation).
    crate::outputs::staging::generations_dir(&opts.out_dir)?;
    check_name_is_ours(profile, &opts.out_dir)?;
    if let Some(report) = up_to_date(profile, opts, &plan, progress) {
        return Ok(report);
    }
    let fetched = fetch_stage(profile, opts, &plan, progress)?;
    let staging = Staging::new(&opts.out_dir)?;
    let mut written = Written::default();
    let mut warned: BTreeSet<String> = plan.findings.iter().map(|f| f.message.clone()).collect();
    let settings = settings(opts);
    let on_verify = |e| fetched.forget_on_verify(e);
    for (arch, fb) in plan.archs.iter().zip(&plan.firstboot) {
        let tree = assemble_stage(profile, *arch, &plan, &fetched, fb.as_ref(), &mut warned, progress)?;
        let for_sysext = match settings.writes_sysext(&plan.formats) {
            true => Some(render::for_bin_dir(profile, *arch, sysext::SYSEXT_BIN)?),
            false => None,
        };
        crate::outputs::staging::failpoint("pause-before-pack");
        let ctx = WriteCtx {
            profile,
            arch: *arch,
            formats: &plan.formats,
            epoch: plan.epoch,
            settings: &settings,
            artifacts: &fetched.artifacts,
            firstboot: fb.as_ref(),
            base_image: fetched.base_images.get(arch).map(PathBuf::as_path),
            for_sysext: for_sysext.as_ref(),
            on_verify: &on_verify,
            progress,
        };
        let mut arch_written = ArchWritten::default();
        for writer in WRITERS {
            writer(&tree, &ctx, &staging, &mut arch_written)?;
        }
        let images = fetched.images.get(arch).map(Vec::as_slice).unwrap_or_default();
        written.add(*arch, &tree, images, arch_written)?;
    }
    let outputs = commit(profile, opts, plan, staging, written, progress)?;
    progress.step(format!(
        "{}: built {} image(s) into {} in {:.1} s",
        profile.name(),
        outputs.len(),
        opts.out_dir.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(BuildReport { profile: profile.name().to_string(), up_to_date: false, out_dir: opts.out_dir.clone(), outputs })
}

/// What the writers follow from `opts`.
fn settings(opts: &BuildOptions) -> Settings<'_> {
    let mirror_url = match &opts.fetch.mirror {
        Some(fetch::Mirror::Url(u)) => Some(u.as_str()),
        _ => None,
    };
    Settings {
        gzip_level: opts.gzip_level,
        zstd_level: opts.zstd_level,
        ignition_mode: opts.ignition_mode,
        ignition_version: &opts.ignition_version,
        base_url: opts.base_url.as_deref(),
        mirror_url,
    }
}

/// The options stage: formats, `kiln check`'s rules, epoch, architectures,
/// `kiln-firstboot`, and the inputs fingerprint, each reported.
fn options(profile: &Profile, opts: &BuildOptions, progress: &Progress) -> Result<Plan> {
    let mut formats = if opts.formats.is_empty() { profile.formats() } else { opts.formats.clone() };
    formats.sort();
    formats.dedup();
    let findings = check::check_for(profile, &formats);
    for f in findings.iter().filter(|f| f.severity == crate::image::finding::Severity::Warning) {
        progress.warn(&f.message);
    }
    if check::has_errors(&findings) {
        let lines: Vec<String> = findings
            .iter()
            .filter(|f| f.severity == crate::image::finding::Severity::Error)
            .map(|f| format!("{} [{}]", f.message, f.rule))
            .collect();
        return Err(Error { kind: check::error_kind(&findings), message: lines.join("\n") });
    }
    let epoch = epoch(profile)?;
    let archs = architectures(profile, opts)?;
    let firstboot: Vec<Option<FirstbootBin>> =
        archs.iter().map(|a| firstboot_bin::resolve(profile, *a, &opts.firstboot_bins)).collect::<Result<_>>()?;
    ignition_base_url(profile, opts, &formats, &firstboot)?;
    let inputs = fingerprint(profile, opts, &formats, epoch, &archs, &firstboot)?;
    progress.detail(format!(
        "{}: formats {}, architectures {}, epoch {epoch}, inputs sha256 {}",
        profile.name(),
        formats.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(" "),
        archs.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(" "),
        &inputs[..16]
    ));
    for (arch, fb) in archs.iter().zip(&firstboot) {
        if let Some(fb) = fb {
            progress.detail(format!(
                "kiln-firstboot ({arch}): {} ({}, sha256 {})",
                fb.path.display(),
                fb.source,
                fb.sha256
            ));
        }
    }
    Ok(Plan { formats, findings, epoch, archs, firstboot, inputs })
}

/// The architectures to build: `--arch` (each listed by the profile), else the profile's.
fn architectures(profile: &Profile, opts: &BuildOptions) -> Result<Vec<Arch>> {
    if opts.archs.is_empty() {
        return Ok(profile.architectures());
    }
    for a in &opts.archs {
        if !profile.architectures().contains(a) {
            return Err(Error::config(format!(
                "--arch {a}: profile {} does not list it in architectures",
                profile.name()
            )));
        }
    }
    Ok(opts.archs.clone())
}

/// An Ignition config that downloads (the sysext image, or `kiln-firstboot`)
/// needs `--base-url`, the address the output directory is served from.
fn ignition_base_url(
    profile: &Profile,
    opts: &BuildOptions,
    formats: &[OutputFormat],
    firstboot: &[Option<FirstbootBin>],
) -> Result<()> {
    if !formats.contains(&OutputFormat::Ignition) || opts.base_url.is_some() {
        return Ok(());
    }
    let needs = opts.ignition_mode == ignition_image::Mode::Sysext
        || firstboot.iter().any(|f| f.is_some())
        || !profile.images().is_empty();
    if !needs {
        return Ok(());
    }
    let why = if opts.formats.is_empty() {
        format!(
            "{} writes an Ignition config by default (formats = [{}] in {})",
            profile.name(),
            profile.formats().iter().map(|f| format!("\"{}\"", f.as_str())).collect::<Vec<_>>().join(", "),
            profile.path.display()
        )
    } else {
        "--format ignition".to_string()
    };
    Err(Error::config(format!(
        "{why}: it needs --base-url URL, the address {} will be served from (nodes download the sysext image and kiln-firstboot there at first boot), e.g. --base-url https://images.example.com/kiln; or pick other outputs with --format sysext / --format tar",
        opts.out_dir.display()
    )))
}

/// The report of a build with nothing to do: unless `--force`, when the
/// outputs in the directory were built from the same inputs and nothing
/// another profile wrote breaks them. Read without the lock: `dist` always
/// points at one complete generation.
fn up_to_date(profile: &Profile, opts: &BuildOptions, plan: &Plan, progress: &Progress) -> Option<BuildReport> {
    if opts.force {
        return None;
    }
    let name = profile.name();
    let previous = Manifest::read(&opts.out_dir);
    let sec = previous.profiles.get(name)?;
    // Up to date only when nothing another profile wrote breaks these
    // outputs: no file of ours listed with other bytes by another
    // profile, and every file our Ignition configs download from
    // --base-url is in the directory with the hash they name.
    let consistent = manifest::collisions(&previous, name, sec).is_empty()
        && opts.base_url.as_deref().is_none_or(|b| manifest::ignition_mismatches(&opts.out_dir, sec, b).is_empty());
    if sec.inputs_sha256 != plan.inputs || !manifest::outputs_present(&opts.out_dir, &previous, sec) || !consistent {
        return None;
    }
    progress.step(format!("{name}: up to date in {} (use --force to rebuild)", opts.out_dir.display()));
    Some(BuildReport {
        profile: name.to_string(),
        up_to_date: true,
        out_dir: opts.out_dir.clone(),
        outputs: sec.outputs.clone(),
    })
}

/// What the fetch stage fetched and verified.
struct Fetched {
    /// The cache everything is in.
    cache: Cache,
    /// Every artifact of every architecture, with its blob in the cache.
    artifacts: Vec<(Artifact, PathBuf)>,
    /// For a card, the decompressed base image of each architecture.
    base_images: BTreeMap<Arch, PathBuf>,
    /// The profile's `images`, fetched for each architecture, in profile order.
    images: BTreeMap<Arch, Vec<FetchedImage>>,
}

impl Fetched {
    /// Passes `e` on; a verification failure while packing also makes the
    /// next build hash (and heal) every cache entry again, since the file
    /// that failed its pin was stamped as verified.
    fn forget_on_verify(&self, e: Error) -> Error {
        if e.kind == crate::error::Kind::Verify {
            self.cache.forget_verified();
        }
        e
    }
}

/// The fetch stage: every pinned artifact of the architectures built, the
/// profile's container images for each of them ([`crate::inputs::images`])
/// and, for a card, its base image, through one cache and one set of fetch options.
fn fetch_stage(profile: &Profile, opts: &BuildOptions, plan: &Plan, progress: &Progress) -> Result<Fetched> {
    let cache = Cache::open(opts.cache_dir.as_deref())?;
    cache.clean_stale_tmp();
    let mut wanted = Vec::new();
    for a in &plan.archs {
        wanted.extend(profile.artifacts_for(*a)?);
    }
    let blobs = fetch::fetch_all(&cache, &opts.fetch, &wanted, progress)?;
    let mut fetched = Fetched {
        artifacts: wanted.into_iter().zip(blobs).collect(),
        cache,
        base_images: BTreeMap::new(),
        images: BTreeMap::new(),
    };
    let images = crate::inputs::image_pins::pinned(profile);
    for a in &plan.archs {
        let got = crate::inputs::images::fetch_images(&fetched.cache, &opts.fetch, &images, *a, progress)?;
        fetched.images.insert(*a, got);
    }
    if plan.formats.contains(&OutputFormat::Card) {
        for a in &plan.archs {
            let image = base_fetch::prepare(profile, *a, &fetched.cache, &opts.fetch, progress)
                .map_err(|e| fetched.forget_on_verify(e))?;
            fetched.base_images.insert(*a, image);
        }
    }
    Ok(fetched)
}

/// The assemble stage for `arch`: the tree from the fetched files
/// ([`assemble::assemble`]), its CNI manifest checked, reported, and every
/// overlay override of a pinned file warned about once.
fn assemble_stage(
    profile: &Profile,
    arch: Arch,
    plan: &Plan,
    fetched: &Fetched,
    firstboot: Option<&FirstbootBin>,
    warned: &mut BTreeSet<String>,
    progress: &Progress,
) -> Result<Tree> {
    let images = fetched.images.get(&arch).map(Vec::as_slice).unwrap_or_default();
    let pins =
        Pins::Fetched { cache: &fetched.cache, artifacts: &fetched.artifacts, firstboot, images, epoch: plan.epoch };
    let tree = assemble::assemble(profile, arch, &plan.formats, pins)?;
    check::cni_manifest_in_tree(profile, &tree)?;
    let (files, bytes) = tree.iter().fold((0usize, 0u64), |(n, b), (_, e)| match &e.node {
        Node::File(c) => (n + 1, b + c.size()),
        _ => (n, b),
    });
    progress.detail(format!(
        "image tree ({arch}): {} entries, {files} files, {}; overlays {}",
        tree.len(),
        human_bytes(bytes),
        profile.doc.overlays.iter().map(|o| o.get_ref().as_str()).collect::<Vec<_>>().join(", ")
    ));
    for w in check::override_warnings(profile, &tree) {
        if warned.insert(w.clone()) {
            progress.warn(&w);
        }
    }
    Ok(tree)
}

/// What every architecture's writers produced, for the manifest.
#[derive(Default)]
struct Written {
    outputs: Vec<Output>,
    trees: BTreeMap<String, Vec<serde_json::Value>>,
    overrides: BTreeMap<String, Vec<serde_json::Value>>,
    images: BTreeMap<String, oci_layout::ImagesSection>,
}

impl Written {
    /// Adds the outputs of `arch`, its tree's records (the tarball's, with
    /// every file's sha256, else the tree's own), its overrides and its image archive.
    fn add(&mut self, arch: Arch, tree: &Tree, images: &[FetchedImage], w: ArchWritten) -> Result<()> {
        self.outputs.extend(w.outputs);
        if let Some(section) = oci_layout::manifest_section(tree, images) {
            self.images.insert(arch.to_string(), section);
        }
        if let Some(r) = &w.sysext_records {
            self.trees.insert(format!("{arch}-sysext"), manifest::records_json(r)?);
        }
        let records = match w.records {
            Some(r) => r,
            None => tree.iter().map(|(p, e)| tarball::record(p, e, None)).collect(),
        };
        self.trees.insert(arch.to_string(), manifest::records_json(&records)?);
        if !tree.overrides().is_empty() {
            let list = tree.overrides().iter().filter_map(|o| serde_json::to_value(o).ok()).collect();
            self.overrides.insert(arch.to_string(), list);
        }
        Ok(())
    }
}

/// The commit stage: one build at a time merges its section into the
/// current manifest and switches `dist` to the new generation.
fn commit(
    profile: &Profile,
    opts: &BuildOptions,
    plan: Plan,
    staging: Staging,
    written: Written,
    progress: &Progress,
) -> Result<Vec<Output>> {
    let name = profile.name();
    let section = ProfileSection {
        kiln_version: env!("CARGO_PKG_VERSION").to_string(),
        inputs_sha256: plan.inputs,
        kubernetes_version: profile.version.to_string(),
        epoch: plan.epoch,
        outputs: written.outputs.clone(),
        trees: written.trees,
        overrides: written.overrides,
        images: written.images,
    };
    let lock = staging.lock(|| {
        progress.step(format!("waiting for another kiln build to finish committing into {}", opts.out_dir.display()))
    })?;
    let merged = manifest::merge(Manifest::read(&opts.out_dir), &opts.out_dir, name, section)?;
    for w in &merged.warnings {
        progress.warn(w);
    }
    manifest::write_text(&staging.path(manifest::MANIFEST_NAME), &merged.manifest.to_json()?)?;
    manifest::write_text(&staging.path(manifest::SUMS_NAME), &merged.manifest.sums())?;
    staging.commit(&lock, &merged.carried)?;
    record_name(profile, &opts.out_dir)?;
    drop(lock);
    Ok(written.outputs)
}
