//! The `kiln` command.

use clap::{CommandFactory, Parser};
use kiln::build::{self, BuildOptions};
use kiln::check;
use kiln::cli::{Cli, ClusterCommand, Command};
use kiln::cluster::{Cluster, InitOptions};
use kiln::error::{Error, Result};
use kiln::fetch::{FetchOptions, Mirror};
use kiln::pin::{self, PinOptions};
use kiln::profile::Profile;
use kiln::progress::{Progress, Verbosity};
use kiln::{staging, userdata};
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

fn run(cmd: Command, progress: &Progress) -> Result<()> {
    match cmd {
        Command::Build(a) => {
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
            for p in &a.profiles {
                let profile = Profile::load(p)?;
                reports.push(build::build(&profile, &opts, progress)?);
            }
            if a.json {
                println!("{}", serde_json::to_string_pretty(&reports).map_err(|e| Error::build(e.to_string()))?);
            }
            Ok(())
        }
        Command::Check(a) => {
            let mut failed = false;
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
                // Findings are already printed; exit 2 without repeating them.
                return Err(Error::config("profile check failed"));
            }
            Ok(())
        }
        Command::Pin(a) => {
            let opts = PinOptions {
                version: a.version,
                base_url: a.base_url,
                dry_run: a.dry_run,
                fetch: FetchOptions::default(),
            };
            for p in &a.profiles {
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
            let c = Cluster::load(&a.cluster)?;
            let format = if a.image.is_some() { userdata::Format::Ignition } else { a.format };
            let mut data = userdata::render(&c, a.role, a.node.as_deref(), format, &a.ignition_version)?;
            if let Some(image) = &a.image {
                data = userdata::combine(image, &data)?;
            }
            if a.gzip {
                data = userdata::gzip(&data);
            }
            match &a.out {
                Some(path) => staging::write_atomic(path, &data, 0o600)?,
                None => std::io::Write::write_all(&mut std::io::stdout(), &data)
                    .map_err(|e| Error::build(format!("writing user-data: {e}")))?,
            }
            let dest = a.out.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "standard output".into());
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
        Command::Mirror(a) => kiln::mirror::run(a, progress),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "kiln", &mut std::io::stdout());
            Ok(())
        }
    }
}
