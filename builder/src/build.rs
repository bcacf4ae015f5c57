//! `kiln build`: profile → fetched, verified artifacts → image tree → outputs.

use crate::error::{Error, IoContext, Result};
use crate::hash;
use crate::image::check;
use crate::image::tree::{Content, Entry, Origin, Tree};
use crate::inputs::cache::Cache;
use crate::inputs::fetch::{self, FetchOptions};
use crate::inputs::profile::{Arch, Artifact, Install, OutputFormat, Profile};
use crate::outputs::ignition_image::{self, IgnitionInputs};
use crate::outputs::manifest::{self, Manifest, Output, ProfileSection};
use crate::outputs::staging::Staging;
use crate::outputs::sysext;
use crate::outputs::tarball;
use crate::progress::{human_bytes, Progress};
use sha2::{Digest, Sha256};
use std::io::Read;
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

/// The `kiln-firstboot` binary chosen for one architecture.
#[derive(Debug, Clone)]
struct FirstbootBin {
    path: PathBuf,
    size: u64,
    sha256: String,
    source: String,
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

/// Reads the ELF machine of `path` and refuses a binary for another architecture.
fn check_elf(path: &Path, arch: Arch) -> Result<()> {
    let mut head = [0u8; 20];
    let mut f = crate::io::open_regular(path).map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
    f.read_exact(&mut head)
        .map_err(|_| Error::config(format!("{} is too short to be an executable", path.display())))?;
    if &head[..4] != b"\x7fELF" {
        return Err(Error::config(format!("{} is not an ELF executable", path.display())));
    }
    let machine =
        if head[5] == 2 { u16::from_be_bytes([head[18], head[19]]) } else { u16::from_le_bytes([head[18], head[19]]) };
    if machine != arch.elf_machine() {
        return Err(Error::config(format!(
            "{} is built for ELF machine {machine}, not {arch} ({}); pass the {arch} build with --firstboot-bin {arch}=PATH",
            path.display(),
            arch.elf_machine()
        )));
    }
    Ok(())
}

fn firstboot_bin(profile: &Profile, arch: Arch, opts: &BuildOptions) -> Result<Option<FirstbootBin>> {
    if profile.doc.artifacts.contains_key("kiln-firstboot") {
        return Ok(None); // a pinned artifact like any other
    }
    let explicit = opts
        .firstboot_bins
        .iter()
        .find(|(a, _)| *a == Some(arch))
        .or_else(|| opts.firstboot_bins.iter().find(|(a, _)| a.is_none()));
    let (path, source) = match explicit {
        Some((_, p)) => (p.clone(), "--firstboot-bin".to_string()),
        None if Arch::host() == Some(arch) => {
            let exe = std::env::current_exe().io_ctx("locating the kiln binary")?;
            let sibling = exe.with_file_name("kiln-firstboot");
            if !sibling.is_file() {
                return Err(Error::config(format!(
                    "no kiln-firstboot for {arch}: expected the workspace build at {}; run `cargo build --release -p kiln-firstboot` or pass --firstboot-bin PATH",
                    sibling.display()
                )));
            }
            (sibling, "workspace build".to_string())
        }
        None => {
            // The workspace's static cross-build: kiln at target/<profile>/kiln, the
            // agent at target/<triple>/<profile>/kiln-firstboot (`.cargo/config.toml`
            // links it with rust-lld).
            let exe = std::env::current_exe().io_ctx("locating the kiln binary")?;
            let triple = format!("{}-unknown-linux-musl", arch.uname());
            let cross = match (exe.parent(), exe.parent().and_then(Path::parent)) {
                (Some(profile_dir), Some(target)) => profile_dir
                    .file_name()
                    .map(|p| target.join(&triple).join(p).join("kiln-firstboot"))
                    .filter(|p| p.is_file()),
                _ => None,
            };
            match cross {
                Some(p) => (p, format!("workspace cross-build ({triple})")),
                None => {
                    return Err(Error::config(format!(
                        "no kiln-firstboot for {arch} (this machine is {}): build one with `rustup target add {triple}` and `cargo build --release -p kiln-firstboot --target {triple}` (kiln then finds it), pass --firstboot-bin {arch}=PATH, or pin a release as [artifacts.kiln-firstboot]",
                        std::env::consts::ARCH
                    )))
                }
            }
        }
    };
    check_elf(&path, arch)?;
    let (size, sha256) =
        crate::io::hash_regular(&path).map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
    Ok(Some(FirstbootBin { path, size, sha256, source }))
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

/// Adds an artifact (or its extracted members) to the tree.
fn add_artifact(tree: &mut Tree, cache: &Cache, profile: &Profile, a: &Artifact, blob: &Path) -> Result<()> {
    let origin = Origin::Artifact { name: a.name.clone(), version: a.version.clone(), url: a.url.clone() };
    match &a.install {
        Install::File { name } => {
            let size = std::fs::metadata(blob).io_ctx(blob.display())?.len();
            let content = Content::Disk { path: blob.to_path_buf(), size, expect_sha256: Some(a.sha256.clone()) };
            check::install(tree, profile, a, name, Entry::file(content, a.mode, origin))
        }
        Install::Extract { members } => {
            let all = cache.extract(&a.sha256)?;
            let chosen: Vec<_> = match members {
                // `["*"]`: the executables. A release tarball also carries its
                // LICENSE and README.md (0644 in the CNI plugins' release),
                // which do not belong in a bin directory.
                None => all.iter().filter(|m| m.mode & 0o111 != 0).collect(),
                Some(names) => {
                    let mut v = Vec::new();
                    for n in names {
                        match all.iter().find(|m| &m.name == n) {
                            Some(m) => v.push(m),
                            None => {
                                let span = profile.doc.artifacts[&a.name].get_ref().extract.as_ref().map(|e| e.span());
                                let have: Vec<_> = all.iter().map(|m| m.name.as_str()).collect();
                                let msg = format!(
                                    "artifact `{}`: `{n}` is not in {} (it has: {})",
                                    a.name,
                                    a.url,
                                    have.join(", ")
                                );
                                return Err(Error::config(match span {
                                    Some(s) => profile.at(s, &msg),
                                    None => msg,
                                }));
                            }
                        }
                    }
                    v
                }
            };
            for m in chosen {
                let content =
                    Content::Disk { path: m.path.clone(), size: m.size, expect_sha256: Some(m.sha256.clone()) };
                check::install(tree, profile, a, &m.name, Entry::file(content, a.mode, origin.clone()))?;
            }
            Ok(())
        }
    }
}

/// Assembles the full image tree for one architecture from fetched artifacts.
fn assemble(
    profile: &Profile,
    arch: Arch,
    cache: &Cache,
    artifacts: &[(Artifact, PathBuf)],
    firstboot: Option<&FirstbootBin>,
) -> Result<Tree> {
    // The assembly `kiln check` runs with placeholders, here with the real files.
    let tree = check::assemble(profile, arch, |tree| {
        for (a, blob) in artifacts.iter().filter(|(a, _)| a.arch == arch) {
            add_artifact(tree, cache, profile, a, blob)?;
        }
        if let Some(fb) = firstboot {
            let content =
                Content::Disk { path: fb.path.clone(), size: fb.size, expect_sha256: Some(fb.sha256.clone()) };
            let source = format!("{} (sha256 {})", fb.source, fb.sha256);
            tree.insert(
                &format!("{}/kiln-firstboot", profile.bin_dir()),
                Entry::file(content, 0o755, Origin::Firstboot { source }),
                false,
            )?;
        }
        Ok(())
    })?;
    plan(tree)
}

/// Fixes the size and sha256 of every file read from disk that has no pin
/// yet (overlay files), by reading it now: the writers later stream exactly
/// these bytes or fail ([`tarball::Planned`]). Non-regular files are refused.
fn plan(tree: Tree) -> Result<Tree> {
    let mut planned = tree.without_entries(); // keeps the record of overrides
    for (path, entry) in tree.iter() {
        let mut entry = entry.clone();
        if let crate::image::tree::Node::File(Content::Disk { path: src, size, expect_sha256 }) = &mut entry.node {
            if expect_sha256.is_none() {
                let (n, sha) = crate::io::hash_regular(src)
                    .map_err(|e| Error::config(format!("/{path}: {} ({}): {e}", src.display(), entry.origin)))?;
                *size = n;
                *expect_sha256 = Some(sha);
            }
        }
        // Sorted order: parents are inserted before their children.
        planned.insert(path, entry, true)?;
    }
    Ok(planned)
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
    crate::io::write_atomic(&path, text.as_bytes(), 0o644)
}

/// Builds every requested architecture of `profile` into `opts.out_dir`.
pub fn build(profile: &Profile, opts: &BuildOptions, progress: &Progress) -> Result<BuildReport> {
    let started = Instant::now();
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
    let archs: Vec<Arch> = if opts.archs.is_empty() {
        profile.architectures()
    } else {
        for a in &opts.archs {
            if !profile.architectures().contains(a) {
                return Err(Error::config(format!(
                    "--arch {a}: profile {} does not list it in architectures",
                    profile.name()
                )));
            }
        }
        opts.archs.clone()
    };
    let firstboot: Vec<Option<FirstbootBin>> =
        archs.iter().map(|a| firstboot_bin(profile, *a, opts)).collect::<Result<_>>()?;
    if formats.contains(&OutputFormat::Ignition) && opts.base_url.is_none() {
        let needs = opts.ignition_mode == ignition_image::Mode::Sysext || firstboot.iter().any(|f| f.is_some());
        if needs {
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
            return Err(Error::config(format!(
                "{why}: it needs --base-url URL, the address {} will be served from (nodes download the sysext image and kiln-firstboot there at first boot), e.g. --base-url https://images.example.com/kiln; or pick other outputs with --format sysext / --format tar",
                opts.out_dir.display()
            )));
        }
    }
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

    let name = profile.name().to_string();
    // `--out` must name a directory of its own (it becomes a link to a generation).
    crate::outputs::staging::generations_dir(&opts.out_dir)?;
    check_name_is_ours(profile, &opts.out_dir)?;
    // Without the lock: `dist` always points at one complete generation.
    let previous = Manifest::read(&opts.out_dir);
    if !opts.force {
        if let Some(sec) = previous.profiles.get(&name) {
            // Up to date only when nothing another profile wrote breaks these
            // outputs: no file of ours listed with other bytes by another
            // profile, and every file our Ignition configs download from
            // --base-url is in the directory with the hash they name.
            let consistent = manifest::collisions(&previous, &name, sec).is_empty()
                && opts
                    .base_url
                    .as_deref()
                    .is_none_or(|b| manifest::ignition_mismatches(&opts.out_dir, sec, b).is_empty());
            if sec.inputs_sha256 == inputs && manifest::outputs_present(&opts.out_dir, &previous, sec) && consistent {
                progress.step(format!("{name}: up to date in {} (use --force to rebuild)", opts.out_dir.display()));
                return Ok(BuildReport {
                    profile: name,
                    up_to_date: true,
                    out_dir: opts.out_dir.clone(),
                    outputs: sec.outputs.clone(),
                });
            }
        }
    }

    let cache = Cache::open(opts.cache_dir.as_deref())?;
    cache.clean_stale_tmp();
    // A cached file that fails its pin while it is packed was stamped as
    // verified: make the next build hash (and heal) every entry again.
    let forget_on_verify = |e: Error| {
        if e.kind == crate::error::Kind::Verify {
            cache.forget_verified();
        }
        e
    };
    let mut wanted = Vec::new();
    for a in &archs {
        wanted.extend(profile.artifacts_for(*a)?);
    }
    let blobs = fetch::fetch_all(&cache, &opts.fetch, &wanted, progress)?;
    let fetched: Vec<(Artifact, PathBuf)> = wanted.into_iter().zip(blobs).collect();

    let staging = Staging::new(&opts.out_dir)?;
    let mut outputs = Vec::new();
    let mut trees = std::collections::BTreeMap::new();
    let mut overrides = std::collections::BTreeMap::new();
    let mut warned: std::collections::BTreeSet<String> = findings.iter().map(|f| f.message.clone()).collect();
    for (arch, fb) in archs.iter().zip(&firstboot) {
        let mut tree = assemble(profile, *arch, &cache, &fetched, fb.as_ref())?;
        check::cni_manifest_in_tree(profile, &tree)?;
        let (files, bytes) = tree.iter().fold((0usize, 0u64), |(n, b), (_, e)| match &e.node {
            crate::image::tree::Node::File(c) => (n + 1, b + c.size()),
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
        crate::outputs::card::runtime::add_containerd_unit(profile, &mut tree)?;
        if formats.contains(&OutputFormat::Card) {
            crate::outputs::card::runtime::mask_swap(&mut tree)?;
        }
        crate::outputs::staging::failpoint("pause-before-pack");
        let mut records = None;
        for format in [OutputFormat::Tar, OutputFormat::TarZst] {
            if formats.contains(&format) {
                let file = tarball_file(&name, *arch, format, opts);
                let (out, r) =
                    tarball_output(&staging, &tree, epoch, *arch, file, format, progress).map_err(forget_on_verify)?;
                outputs.push(out);
                records = Some(r);
            }
        }
        let ignition = formats.contains(&OutputFormat::Ignition);
        let mut raw = None;
        let want_sysext =
            formats.contains(&OutputFormat::Sysext) || (ignition && opts.ignition_mode == ignition_image::Mode::Sysext);
        let split = if want_sysext { Some(sysext::split(profile, *arch, &tree)?) } else { None };
        if let Some(split) = &split {
            let file = sysext::file_name(profile, *arch);
            let t0 = Instant::now();
            let r = sysext::write(&split.usr, epoch, &staging.path(&file)).map_err(forget_on_verify)?;
            let out = output(&staging, &file, "sysext", *arch)?;
            progress.step(format!(
                "wrote {file}: {} entries, {} in {:.1} s",
                r.len(),
                human_bytes(out.size),
                t0.elapsed().as_secs_f64()
            ));
            trees.insert(format!("{arch}-sysext"), manifest::records_json(&r)?);
            raw = Some((file, out.sha256.clone()));
            outputs.push(out);
        }
        if ignition {
            let mirror_url = match &opts.fetch.mirror {
                Some(fetch::Mirror::Url(u)) => Some(u.as_str()),
                _ => None,
            };
            let inputs =
                IgnitionInputs { version: &opts.ignition_version, base_url: opts.base_url.as_deref(), mirror_url };
            let doc = match (opts.ignition_mode, &raw, &split) {
                (ignition_image::Mode::Sysext, Some((raw_name, raw_sha)), Some(split)) => {
                    ignition_image::sysext_config(split, raw_name, raw_sha, &inputs)?
                }
                _ => {
                    let fb_out = match fb {
                        Some(fb) => {
                            // Named after the profile: two profiles built with different
                            // --firstboot-bin never write one file name with different bytes.
                            let file = format!("{name}-kiln-firstboot-{arch}");
                            copy_planned(&fb.path, fb.size, &fb.sha256, &staging.path(&file))?;
                            let out = output(&staging, &file, "firstboot", *arch)?;
                            if out.sha256 != fb.sha256 {
                                return Err(Error::verify(format!("{} changed while building", fb.path.display())));
                            }
                            outputs.push(out);
                            Some((file, fb.sha256.clone()))
                        }
                        None => None,
                    };
                    let arts: Vec<Artifact> =
                        fetched.iter().filter(|(a, _)| a.arch == *arch).map(|(a, _)| a.clone()).collect();
                    ignition_image::files_config(
                        &tree,
                        &arts,
                        fb_out.as_ref().map(|(f, s)| (f.as_str(), s.as_str())),
                        &profile.bin_dir(),
                        &inputs,
                    )?
                }
            };
            let file = format!("{name}-{arch}.ign");
            let mut text = serde_json::to_string_pretty(&doc).map_err(|e| Error::build(e.to_string()))?;
            text.push('\n');
            manifest::write_text(&staging.path(&file), &text)?;
            outputs.push(output(&staging, &file, "ignition", *arch)?);
            progress.step(format!(
                "wrote {file} (--ignition-mode {}, Ignition spec {})",
                opts.ignition_mode.as_str(),
                opts.ignition_version
            ));
        }
        if formats.contains(&OutputFormat::Card) {
            let t0 = Instant::now();
            let r = crate::outputs::card::write(
                profile,
                *arch,
                &tree,
                &cache,
                &opts.fetch,
                epoch,
                &staging.path(""),
                progress,
            )
            .map_err(forget_on_verify)?;
            let file = crate::outputs::card::image_name(profile, *arch);
            let out = output(&staging, &file, "card", *arch)?;
            progress.step(format!(
                "wrote {file}: {} entries added to the root filesystem, {} mapped of {}, in {:.1} s",
                r.entries,
                human_bytes(r.mapped_bytes),
                human_bytes(out.size),
                t0.elapsed().as_secs_f64()
            ));
            outputs.push(out);
            outputs.push(output(&staging, &crate::outputs::card::bmap_name(profile, *arch), "bmap", *arch)?);
        }
        let records = match records {
            Some(r) => r,
            None => tree.iter().map(|(p, e)| tarball::record(p, e, None)).collect(),
        };
        trees.insert(arch.to_string(), manifest::records_json(&records)?);
        if !tree.overrides().is_empty() {
            let list = tree.overrides().iter().filter_map(|o| serde_json::to_value(o).ok()).collect();
            overrides.insert(arch.to_string(), list);
        }
    }

    let section = ProfileSection {
        kiln_version: env!("CARGO_PKG_VERSION").to_string(),
        inputs_sha256: inputs,
        kubernetes_version: profile.version.to_string(),
        epoch,
        outputs: outputs.clone(),
        trees,
        overrides,
    };
    // One build at a time merges into the current manifest and switches `dist`.
    let lock = staging.lock(|| {
        progress.step(format!("waiting for another kiln build to finish committing into {}", opts.out_dir.display()))
    })?;
    let merged = manifest::merge(Manifest::read(&opts.out_dir), &opts.out_dir, &name, section)?;
    for w in &merged.warnings {
        progress.warn(w);
    }
    manifest::write_text(&staging.path(manifest::MANIFEST_NAME), &merged.manifest.to_json()?)?;
    manifest::write_text(&staging.path(manifest::SUMS_NAME), &merged.manifest.sums())?;
    staging.commit(&lock, &merged.carried)?;
    record_name(profile, &opts.out_dir)?;
    drop(lock);
    progress.step(format!(
        "{name}: built {} image(s) into {} in {:.1} s",
        outputs.len(),
        opts.out_dir.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(BuildReport { profile: name, up_to_date: false, out_dir: opts.out_dir.clone(), outputs })
}
