//! The `kiln` command.

use clap::{CommandFactory, Parser};
use kiln::build::{self, BuildOptions};
use kiln::cli::{Cli, ClusterCommand, Command};
use kiln::cluster::{Cluster, InitOptions};
use kiln::error::{Error, Result};
use kiln::image::check;
use kiln::inputs::fetch::{FetchOptions, Mirror};
use kiln::inputs::pin::{self, PinOptions};
use kiln::inputs::profile::Profile;
use kiln::progress::{Progress, Verbosity};
use kiln::{outputs::staging, userdata};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbosity = if cli.quiet {
        Verbosity::Quiet
    } else if cli.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let progress = Progress::new(verbosity);
    match run(cli.command, &progress) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            for line in e.message.lines() {
                eprintln!("kiln: error: {line}");
            }
            ExitCode::from(e.kind.exit_code())
        }
    }
}

/// `kiln build`: every profile is read (and their names compared) before
/// anything is built; with `--json` one report object goes to stdout whether
/// the build succeeded or not.
fn build_command(a: kiln::cli::BuildArgs, progress: &Progress) -> Result<()> {
    let fetch = FetchOptions {
        mirror: a.mirror.as_deref().map(Mirror::parse),
        offline: a.offline,
        attempts: a.attempts.max(1),
        timeout: Duration::from_secs(a.timeout.max(1)),
        jobs: a.jobs.max(1),
        ..FetchOptions::default()
    };
    let opts = BuildOptions {
        cache_dir: a.cache,
        fetch,
        archs: a.archs,
        firstboot_bins: a.firstboot_bins,
        force: a.force,
        formats: a.formats,
        ignition_mode: a.ignition_mode,
        ignition_version: a.ignition_version,
        base_url: a.base_url,
        gzip_level: a.gzip_level,
        zstd_level: a.zstd_level,
        ..BuildOptions::new(a.out)
    };
    let mut reports = Vec::new();
    let result = (|| {
        let mut profiles: Vec<Profile> = Vec::new();
        for p in a.profiles.iter().chain(&a.profile_flags) {
            let profile = Profile::load(p)?;
            let same_file = |q: &Profile| {
                std::fs::canonicalize(&q.path).ok().is_some_and(|c| std::fs::canonicalize(p).ok() == Some(c))
            };
            if profiles.iter().any(same_file) {
                progress.warn(format!("{} is named twice; building it once", p.display()));
                continue;
            }
            if let Some(twin) = profiles.iter().find(|q| q.name() == profile.name()) {
                return Err(Error::config(format!(
                    "{} and {} are both name = \"{}\": their outputs would overwrite each other; give each profile its own `name`",
                    twin.path.display(),
                    profile.path.display(),
                    profile.name()
                )));
            }
            profiles.push(profile);
        }
        for profile in &profiles {
            reports.push(build::build(profile, &opts, progress)?);
        }
        Ok(())
    })();
    if a.json {
        let error =
            result.as_ref().err().map(|e| serde_json::json!({ "message": e.message, "exit_code": e.kind.exit_code() }));
        let doc = serde_json::json!({ "ok": result.is_ok(), "profiles": reports, "error": error });
        println!("{}", serde_json::to_string_pretty(&doc).map_err(|e| Error::build(e.to_string()))?);
    }
    result
}

/// The format `kiln userdata` writes, and the tarball a cloud-config installs:
/// `--image X.ign` means Ignition, `--image X.tar.gz|.tar.zst` a cloud-config
/// (with --base-url); an explicit --format that contradicts the image is refused.
fn userdata_image(a: &kiln::cli::UserdataArgs) -> Result<(userdata::Format, Option<userdata::PublishedImage>)> {
    let Some(image) = &a.image else { return Ok((a.format.unwrap_or(userdata::Format::Toml), None)) };
    let name = image.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if name.ends_with(".ign") {
        if let Some(f) = a.format.filter(|f| *f != userdata::Format::Ignition) {
            return Err(Error::config(format!(
                "--image {} is an Ignition image config: it goes with --format ignition (Fedora CoreOS, Flatcar), not --format {}; for a cloud-init machine pass the image's tarball (kiln build --format tar)",
                image.display(),
                f.as_str()
            )));
        }
        return Ok((userdata::Format::Ignition, None));
    }
    if let Some(f) = a.format.filter(|f| *f != userdata::Format::CloudConfig) {
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
    Ok((userdata::Format::CloudConfig, Some(userdata::PublishedImage::read(image, base)?)))
}

fn run(cmd: Command, progress: &Progress) -> Result<()> {
    match cmd {
        Command::Build(a) => build_command(a, progress),
        Command::Check(a) => {
            let mut failed = false;
            let mut kind = kiln::error::Kind::Config;
            let mut json = Vec::new();
            for p in &a.profiles {
                let (findings, name) = match Profile::load(p) {
                    Ok(profile) => (check::check(&profile), profile.name().to_string()),
                    Err(e) => (
                        vec![check::Finding { severity: check::Severity::Error, rule: "parse", message: e.message }],
                        p.display().to_string(),
                    ),
                };
                failed |= check::has_errors(&findings);
                if check::error_kind(&findings) == kiln::error::Kind::Verify {
                    kind = kiln::error::Kind::Verify;
                }
                if a.json {
                    json.push(serde_json::json!({ "profile": name, "path": p, "ok": !check::has_errors(&findings), "findings": findings }));
                } else {
                    for f in &findings {
                        let sev = if f.severity == check::Severity::Error { "error" } else { "warning" };
                        eprintln!("kiln: {sev}: {} [{}]", f.message, f.rule);
                    }
                    if !check::has_errors(&findings) {
                        progress.step(format!("{}: ok ({name})", p.display()));
                    }
                }
            }
            if a.json {
                println!("{}", serde_json::to_string_pretty(&json).map_err(|e| Error::build(e.to_string()))?);
            }
            if failed {
                // Findings are already printed; exit 2 (3: a pinned file did not
                // match its pin) without repeating them.
                return Err(Error { kind, message: "profile check failed".into() });
            }
            Ok(())
        }
        Command::Pin(a) => {
            let opts = PinOptions {
                version: a.version,
                base_url: a.base_url,
                base_image: a.base_image,
                base_image_version: a.base_image_version,
                dry_run: a.dry_run,
                cni_manifest: a.cni_manifest,
                fetch: FetchOptions::default(),
            };
            for p in a.profiles.iter().chain(&a.profile_flags) {
                let d = pin::pin(p, &opts, progress)?;
                if d.is_empty() {
                    progress.step(format!("{}: pins already current", p.display()));
                } else {
                    print!("{d}");
                }
            }
            Ok(())
        }
        Command::Cluster(ClusterCommand::Init(a)) => {
            let out = a.out.unwrap_or_else(|| std::path::PathBuf::from("clusters").join(&a.name));
            let c = Cluster::init(&InitOptions {
                name: a.name,
                endpoint: a.endpoint,
                kubernetes_version: a.kubernetes_version,
                pod_subnet: a.pod_subnet,
                service_subnet: a.service_subnet,
                dns_domain: a.dns_domain,
                key_algorithm: a.key_algorithm,
                token_ttl: a.token_ttl,
                out,
                force: a.force,
            })?;
            progress.step(format!("created cluster {} in {}", c.file.name, c.dir.display()));
            print!("{}", c.show());
            Ok(())
        }
        Command::Cluster(ClusterCommand::Show { dir }) => {
            print!("{}", Cluster::load(&dir)?.show());
            Ok(())
        }
        Command::Cluster(ClusterCommand::RotateToken { dir }) => {
            let mut c = Cluster::load(&dir)?;
            let old = c.file.token_id.clone();
            c.rotate_token()?;
            progress.step(format!(
                "token {old}.… replaced by {}.… in {}/secrets/bootstrap-token; regenerate user-data, and on a control plane run: kubeadm token create \"$(cat {}/secrets/bootstrap-token)\" --ttl {}",
                c.file.token_id,
                c.dir.display(),
                c.dir.display(),
                c.file.token_ttl
            ));
            Ok(())
        }
        Command::Userdata(a) => {
            let Some(out) = a.out.as_deref() else {
                return Err(Error::config(
                    "user-data holds the cluster's bootstrap token (and a control plane's CA keys): pass --out FILE (written 0600), or --out - to print it on standard output",
                ));
            };
            let c = Cluster::load(&a.cluster)?;
            let (format, tarball) = userdata_image(&a)?;
            if let Some(image) = &a.image {
                userdata::check_image_versions(image, &c, a.role)?;
                userdata::check_image_cni(image, &c)?;
            }
            let mut data =
                userdata::render(&c, a.role, a.node.as_deref(), format, &a.ignition_version, tarball.as_ref())?;
            if let (Some(image), userdata::Format::Ignition) = (&a.image, format) {
                data = userdata::combine(image, &data)?;
            }
            if a.gzip {
                data = userdata::gzip(&data);
            }
            let dest = if out == std::path::Path::new("-") {
                std::io::Write::write_all(&mut std::io::stdout(), &data)
                    .map_err(|e| Error::build(format!("writing user-data: {e}")))?;
                "standard output".to_string()
            } else {
                staging::write_atomic(out, &data, 0o600)?;
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
        Command::Fleet(cmd) => kiln::fleet::cmd::fleet(cmd, progress),
        Command::Flash(a) => kiln::fleet::cmd::flash(a, progress),
        Command::Mirror(a) => kiln::inputs::mirror::run(a, progress),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "kiln", &mut std::io::stdout());
            Ok(())
        }
    }
}
