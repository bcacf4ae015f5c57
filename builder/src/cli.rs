//! Command-line interface of `kiln`.

use crate::profile::Arch;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

const EXIT_CODES: &str = "Exit codes:
  0  success
  1  the build failed (network, disk, a tool)
  2  usage or configuration error (the message names file:line:col)
  3  verification failure (a download did not match its pinned sha256)";

/// Build pinned, verified, reproducible Kubernetes node images.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Print only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more detail.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build images from profiles into an output directory.
    #[command(after_help = "Examples:
  kiln build profiles/flatcar-1.34.toml
  kiln build profiles/fcos-1.34.toml --arch amd64 --out dist/
  kiln build profiles/rpi-1.34.toml --mirror /srv/k8s-mirror --offline \\
      --firstboot-bin arm64=target/aarch64-unknown-linux-musl/release/kiln-firstboot

Outputs: <out>/<profile>-<arch>.tar.gz, <out>/manifest.json, <out>/SHA256SUMS.
Extract a tarball onto a node's root with
  tar --keep-directory-symlink -xzf <profile>-<arch>.tar.gz -C /

Exit codes: 0 ok, 1 build failed, 2 usage/config error, 3 verification failure.")]
    Build(BuildArgs),
    /// Check profiles without fetching anything.
    #[command(after_help = "Examples:
  kiln check profiles/*.toml
  kiln check --json profiles/fcos-1.34.toml | jq '.[].findings'

Exit codes: 0 no errors (warnings allowed), 2 a profile has errors.")]
    Check(CheckArgs),
    /// Rewrite a profile's sha256 pins from upstream checksum files.
    #[command(after_help = "Examples:
  kiln pin --profile profiles/flatcar-1.34.toml --version v1.34.3
  kiln pin --profile profiles/fcos-1.34.toml --base-url https://mirror.example/k8s --dry-run

--version moves kubernetes_version and the kubeadm, kubelet and kubectl artifacts;
crictl and CNI plugins keep their versions (edit them, then pin again).
The diff is printed for review; nothing is written unless every checksum was read.")]
    Pin(PinArgs),
    /// Print a shell completion script.
    #[command(after_help = "Example:\n  kiln completions bash > /etc/bash_completion.d/kiln")]
    Completions {
        /// Shell to generate completions for.
        shell: clap_complete::Shell,
    },
}

/// `kiln build` arguments.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Profiles to build.
    #[arg(required = true, value_name = "PROFILE")]
    pub profiles: Vec<PathBuf>,
    /// Output directory.
    #[arg(short, long, default_value = "dist", value_name = "DIR")]
    pub out: PathBuf,
    /// Build only these architectures (default: all the profile lists).
    #[arg(long = "arch", value_name = "ARCH", value_parser = parse_arch)]
    pub archs: Vec<Arch>,
    /// Download cache (default: $XDG_CACHE_HOME/kiln or ~/.cache/kiln).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Fetch from a mirror directory or URL holding upstream's paths.
    #[arg(long, value_name = "DIR|URL")]
    pub mirror: Option<String>,
    /// Use only the cache and the mirror; never contact upstream hosts.
    #[arg(long)]
    pub offline: bool,
    /// kiln-firstboot binary to bake, optionally per architecture (repeatable).
    #[arg(long = "firstboot-bin", value_name = "[ARCH=]PATH", value_parser = parse_firstboot)]
    pub firstboot_bins: Vec<(Option<Arch>, PathBuf)>,
    /// Rebuild even when the outputs are up to date.
    #[arg(long)]
    pub force: bool,
    /// Parallel downloads.
    #[arg(short, long, default_value_t = 4, value_name = "N")]
    pub jobs: usize,
    /// Attempts per download before giving up.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub attempts: u32,
    /// Per-request timeout in seconds (connect and each read).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub timeout: u64,
    /// Print a JSON report on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `kiln check` arguments.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Profiles to check.
    #[arg(required = true, value_name = "PROFILE")]
    pub profiles: Vec<PathBuf>,
    /// Print findings as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `kiln pin` arguments.
#[derive(Debug, clap::Args)]
pub struct PinArgs {
    /// Profiles to re-pin (repeatable).
    #[arg(long = "profile", short = 'p', required = true, value_name = "PROFILE")]
    pub profiles: Vec<PathBuf>,
    /// Move the profile to this Kubernetes version (e.g. v1.34.3).
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
    /// Read checksum files from this base URL (same paths as upstream).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Print the diff without writing the profile.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_arch(s: &str) -> Result<Arch, String> {
    Arch::parse(s).ok_or_else(|| format!("unknown architecture `{s}` (amd64, arm64)"))
}

fn parse_firstboot(s: &str) -> Result<(Option<Arch>, PathBuf), String> {
    match s.split_once('=') {
        Some((a, p)) if Arch::parse(a).is_some() => Ok((Arch::parse(a), PathBuf::from(p))),
        Some((a, _)) if !a.contains('/') => Err(format!("unknown architecture `{a}` in `{s}` (amd64, arm64)")),
        _ => Ok((None, PathBuf::from(s))),
    }
}
