//! `kiln build`: profile → fetched, verified artifacts → image tree → outputs.

use crate::error::{Error, IoContext, Result};
use crate::hash;
use crate::image::assemble::{self, Pins};
use crate::image::check;
use crate::image::render;
use crate::image::tree::{Content, Entry, Node, Origin, Tree};
use crate::inputs::base_fetch;
use crate::inputs::cache::Cache;
use crate::inputs::fetch::{self, FetchOptions};
use crate::inputs::firstboot_bin::{self, FirstbootBin};
use crate::inputs::profile::{Arch, Artifact, OutputFormat, Profile};
use crate::outputs::card;
use crate::outputs::ignition_image::{self, IgnitionInputs};
use crate::outputs::manifest::{self, Manifest, Output, ProfileSection};
use crate::outputs::staging::Staging;
use crate::outputs::sysext;
use crate::outputs::tarball;
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

/// Copies a local file exactly (size and sha256 as planned) into `dest`.
fn copy_planned(src: &Path, size: u64, sha256: &str, dest: &Path) -> Result<()> {
    let content = Content::Disk { path: src.to_path_buf(), size, expect_sha256: Some(sha256.to_string()) };
    let entry = Entry::file(content.clone(), 0o755, Origin::Rendered);
    let mut r = tarball::Planned::new(&dest.display().to_string(), &entry, &content);
    let mut out = std::fs::File::create(dest).io_ctx(dest.display())?;
    let copied = std::io::copy(&mut r, &mut out);
    if let Some(f) = r.take_failure() {
        return Err(f);
    }
    copied.io_ctx(dest.display())?;
    Ok(())
}

/// Records a staged output file (hashing it).
fn output(staging: &Staging, file: &str, format: &str, arch: Arch) -> Result<Output> {
    let path = staging.path(file);
    let size = std::fs::metadata(&path).io_ctx(file)?.len();
    let sha256 = tarball::digest(&path)?;
    Ok(Output { file: file.to_string(), format: format.into(), arch: arch.to_string(), size, sha256 })
}

/// The file name and compression of the overlay tarball in `format`.
fn tarball_file(name: &str, arch: Arch, format: OutputFormat, opts: &BuildOptions) -> (String, tarball::Compression) {
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
    crate::outputs::staging::write_atomic(&path, text.as_bytes(), 0o644)
}

/// What the options stage decided for one build.
struct Plan {
    /// Output formats, sorted, without repeats.
    formats: Vec<OutputFormat>,
    /// What `kiln check` found (warnings only: errors stop the build).
    findings: Vec<check::Finding>,
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
    for (arch, fb) in plan.archs.iter().zip(&plan.firstboot) {
        let tree = assemble_stage(profile, *arch, &plan, &fetched, fb.as_ref(), &mut warned, progress)?;
        let for_sysext = match writes_sysext(opts, &plan.formats) {
            true => Some(render::for_bin_dir(profile, *arch, sysext::SYSEXT_BIN)?),
            false => None,
        };
        crate::outputs::staging::failpoint("pause-before-pack");
        let ctx = WriteCtx {
            profile,
            opts,
            arch: *arch,
            plan: &plan,
            fetched: &fetched,
            firstboot: fb.as_ref(),
            for_sysext: for_sysext.as_ref(),
            progress,
        };
        let mut arch_written = ArchWritten::default();
        for writer in WRITERS {
            writer(&tree, &ctx, &staging, &mut arch_written)?;
        }
        written.add(*arch, &tree, arch_written)?;
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

/// The options stage: formats, `kiln check`'s rules, epoch, architectures,
/// `kiln-firstboot`, and the inputs fingerprint, each reported.
fn options(profile: &Profile, opts: &BuildOptions, progress: &Progress) -> Result<Plan> {
    let mut formats = if opts.formats.is_empty() { profile.formats() } else { opts.formats.clone() };
    formats.sort();
    formats.dedup();
    let findings = check::check_for(profile, &formats);
    for f in findings.iter().filter(|f| f.severity == check::Severity::Warning) {
        progress.warn(&f.message);
    }
    if check::has_errors(&findings) {
        let lines: Vec<String> = findings
            .iter()
            .filter(|f| f.severity == check::Severity::Error)
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
    let needs = opts.ignition_mode == ignition_image::Mode::Sysext || firstboot.iter().any(|f| f.is_some());
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

/// The fetch stage: every pinned artifact of the architectures built and,
/// for a card, its base image, through one cache and one set of fetch options.
fn fetch_stage(profile: &Profile, opts: &BuildOptions, plan: &Plan, progress: &Progress) -> Result<Fetched> {
    let cache = Cache::open(opts.cache_dir.as_deref())?;
    cache.clean_stale_tmp();
    let mut wanted = Vec::new();
    for a in &plan.archs {
        wanted.extend(profile.artifacts_for(*a)?);
    }
    let blobs = fetch::fetch_all(&cache, &opts.fetch, &wanted, progress)?;
    let mut fetched =
        Fetched { artifacts: wanted.into_iter().zip(blobs).collect(), cache, base_images: BTreeMap::new() };
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
    let pins = Pins::Fetched { cache: &fetched.cache, artifacts: &fetched.artifacts, firstboot };
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

/// Whether a build writes a sysext image: `--format sysext`, or the Ignition
/// config of `--ignition-mode sysext`, which installs one.
fn writes_sysext(opts: &BuildOptions, formats: &[OutputFormat]) -> bool {
    formats.contains(&OutputFormat::Sysext)
        || (formats.contains(&OutputFormat::Ignition) && opts.ignition_mode == ignition_image::Mode::Sysext)
}

/// Everything a writer reads besides the tree.
struct WriteCtx<'a> {
    profile: &'a Profile,
    opts: &'a BuildOptions,
    arch: Arch,
    plan: &'a Plan,
    fetched: &'a Fetched,
    firstboot: Option<&'a FirstbootBin>,
    /// Kiln's files rendered for the extension's `/usr/bin`, when a sysext image is written.
    for_sysext: Option<&'a Tree>,
    progress: &'a Progress,
}

impl WriteCtx<'_> {
    /// Whether this build writes `format`.
    fn wants(&self, format: OutputFormat) -> bool {
        self.plan.formats.contains(&format)
    }
}

/// What the writers of one architecture produced.
#[derive(Default)]
struct ArchWritten {
    /// Files staged for the output directory.
    outputs: Vec<Output>,
    /// The tarball's records of the tree (with the sha256 of every file).
    records: Option<Vec<tarball::FileRecord>>,
    /// The sysext image's records.
    sysext_records: Option<Vec<tarball::FileRecord>>,
    /// The sysext split and the staged image's file name and sha256, for
    /// the Ignition config that installs it.
    sysext: Option<(sysext::Split, String, String)>,
}

/// A writer of one output format: writes from the assembled `tree` into
/// `staging` when the build asks for its format, recording what it wrote.
type Writer = fn(tree: &Tree, ctx: &WriteCtx, staging: &Staging, out: &mut ArchWritten) -> Result<()>;

/// Every writer, in the order they run (the Ignition config installs the sysext image).
const WRITERS: [Writer; 4] = [write_tarballs, write_sysext, write_ignition, write_card];

/// The overlay tarballs (`.tar.gz`, `.tar.zst`).
fn write_tarballs(tree: &Tree, ctx: &WriteCtx, staging: &Staging, out: &mut ArchWritten) -> Result<()> {
    for format in [OutputFormat::Tar, OutputFormat::TarZst] {
        if ctx.wants(format) {
            let file = tarball_file(ctx.profile.name(), ctx.arch, format, ctx.opts);
            let (o, r) = tarball_output(staging, tree, ctx.plan.epoch, ctx.arch, file, format, ctx.progress)
                .map_err(|e| ctx.fetched.forget_on_verify(e))?;
            out.outputs.push(o);
            out.records = Some(r);
        }
    }
    Ok(())
}

/// The systemd-sysext image, for `--format sysext` or the Ignition config of `--ignition-mode sysext`.
fn write_sysext(tree: &Tree, ctx: &WriteCtx, staging: &Staging, out: &mut ArchWritten) -> Result<()> {
    if !writes_sysext(ctx.opts, &ctx.plan.formats) {
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
    let r =
        sysext::write(&split.usr, ctx.plan.epoch, &staging.path(&file)).map_err(|e| ctx.fetched.forget_on_verify(e))?;
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
    let (name, arch, opts) = (ctx.profile.name(), ctx.arch, ctx.opts);
    let mirror_url = match &opts.fetch.mirror {
        Some(fetch::Mirror::Url(u)) => Some(u.as_str()),
        _ => None,
    };
    let inputs = IgnitionInputs { version: &opts.ignition_version, base_url: opts.base_url.as_deref(), mirror_url };
    let doc = match (opts.ignition_mode, &out.sysext) {
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
            let arts: Vec<Artifact> =
                ctx.fetched.artifacts.iter().filter(|(a, _)| a.arch == arch).map(|(a, _)| a.clone()).collect();
            ignition_image::files_config(
                tree,
                &arts,
                fb_out.as_ref().map(|(f, s)| (f.as_str(), s.as_str())),
                &ctx.profile.bin_dir(),
                &inputs,
            )?
        }
    };
    let file = format!("{name}-{arch}.ign");
    let mut text = serde_json::to_string_pretty(&doc).map_err(|e| Error::build(e.to_string()))?;
    text.push('\n');
    manifest::write_text(&staging.path(&file), &text)?;
    out.outputs.push(output(staging, &file, "ignition", arch)?);
    ctx.progress.step(format!(
        "wrote {file} (--ignition-mode {}, Ignition spec {})",
        opts.ignition_mode.as_str(),
        opts.ignition_version
    ));
    Ok(())
}

/// The Raspberry Pi card and its block map, from the fetched base image.
fn write_card(tree: &Tree, ctx: &WriteCtx, staging: &Staging, out: &mut ArchWritten) -> Result<()> {
    if !ctx.wants(OutputFormat::Card) {
        return Ok(());
    }
    let (profile, arch) = (ctx.profile, ctx.arch);
    let base = ctx
        .fetched
        .base_images
        .get(&arch)
        .ok_or_else(|| Error::build(format!("no base image was fetched for {arch} (kiln bug)")))?;
    let t0 = Instant::now();
    let r = card::write(profile, arch, tree, base, ctx.plan.epoch, &staging.path(""), ctx.progress)
        .map_err(|e| ctx.fetched.forget_on_verify(e))?;
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

/// What every architecture's writers produced, for the manifest.
#[derive(Default)]
struct Written {
    outputs: Vec<Output>,
    trees: BTreeMap<String, Vec<serde_json::Value>>,
    overrides: BTreeMap<String, Vec<serde_json::Value>>,
}

impl Written {
    /// Adds the outputs of `arch`, its tree's records (the tarball's, with
    /// every file's sha256, else the tree's own) and its overrides.
    fn add(&mut self, arch: Arch, tree: &Tree, w: ArchWritten) -> Result<()> {
        self.outputs.extend(w.outputs);
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
