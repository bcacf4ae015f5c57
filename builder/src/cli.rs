//! Command-line interface of `kiln`.

use crate::inputs::profile::Arch;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

const EXIT_CODES: &str = "Exit codes:
  0  success
  1  the build failed (network, disk, a tool)
  2  usage or configuration error (the message names file:line:col)
  3  verification failure (a download did not match its pinned sha256,
     or a flashed card read back differently)";

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
  kiln build profiles/flatcar-1.34.toml --format sysext --format ignition \\
      --base-url https://images.example.com/kiln

Outputs: <out>/<profile>-<arch>.tar.gz (tar), <out>/kubernetes-<version>-<arch>.raw
(sysext), <out>/<profile>-<arch>.ign (ignition), <out>/manifest.json, <out>/SHA256SUMS.
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
  kiln pin profiles/flatcar-1.34.toml --version v1.34.3
  kiln pin profiles/fcos-1.34.toml --base-url https://mirror.example/k8s --dry-run
  kiln pin profiles/fcos-1.34.toml --base-url /srv/k8s-mirror     # a mirror directory
  kiln pin profiles/rpi-raspios-1.34.toml --base-image-version 2025-10-01
  kiln pin profiles/rpi-ubuntu-1.34.toml --base-image               # same version, sha256 again

--version moves kubernetes_version and the kubeadm, kubelet and kubectl artifacts;
crictl and CNI plugins keep their versions (edit them, then pin again).
A card profile's [base_image] keeps its pin unless --base-image or
--base-image-version is given or its sha256 is a placeholder; it is then read
from the publisher's checksum file: URL.sha256 (Raspberry Pi OS), else
SHA256SUMS in the image's directory (Ubuntu). A new base image version drops
base_image.image_sha256 (the old image's).
The diff is printed for review; nothing is written unless every checksum was read,
and a failure lists every checksum that could not be read.")]
    Pin(PinArgs),
    /// Create and inspect a cluster definition (PKI, token, endpoint).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Write one node's user-data (node.toml, Ignition or cloud-config).
    #[command(after_help = "Examples:
  kiln userdata --cluster clusters/prod --role init --format ignition --out cp-1.ign
  kiln userdata --cluster clusters/prod --role control-plane --node cp-2 --format cloud-config --out cp-2.yaml
  kiln userdata --cluster clusters/prod --role join --format toml --gzip --out worker.toml.gz
  kiln userdata --cluster clusters/prod --role join --image dist/flatcar-1.34-amd64.ign --out worker-1.ign
  kiln userdata --cluster clusters/prod --role join --image dist/debian-1.34-amd64.tar.gz \\
      --base-url https://images.example.com/kiln --out worker-1.yaml     # stock Ubuntu/Debian cloud image
  kiln userdata --cluster clusters/prod --role join --out -                # print (it holds the token)

Workers receive the CA certificate, the discovery hash and the token, never a private
key. Control planes receive the CA keys and sa.key/sa.pub: no --upload-certs window.
The output holds secrets: it is written with mode 0600.")]
    Userdata(UserdataArgs),
    /// Check a Raspberry Pi fleet file, or write one personalised image per node.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Write a node's personalised card image to SD cards (or files) and verify it.
    Flash(FlashArgs),
    /// Download every pinned artifact of profiles into a mirror directory for `kiln build --mirror DIR`.
    #[command(after_help = MIRROR_HELP)]
    Mirror(MirrorArgs),
    /// Print a shell completion script.
    #[command(after_help = "Example:\n  kiln completions bash > /etc/bash_completion.d/kiln")]
    Completions {
        /// Shell to generate completions for.
        shell: clap_complete::Shell,
    },
}

/// `kiln cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Create a cluster: CAs, service-account keys, bootstrap token, cluster.toml.
    #[command(after_help = "Examples:
  kiln cluster init prod --endpoint api.prod.example.com --kubernetes-version v1.34.2
  kiln cluster init lab --endpoint [2001:db8::10]:6443 --kubernetes-version v1.34.2 --key-algorithm rsa-2048

Writes <out>/cluster.toml and <out>/pki/ (public) and <out>/secrets/ (0700, files 0600).
Refuses to replace an existing cluster without --force.")]
    Init(ClusterInitArgs),
    /// Show a cluster's endpoint, CA hash, token id and what each role receives.
    Show {
        /// Cluster directory.
        #[arg(default_value = ".", value_name = "DIR")]
        dir: PathBuf,
    },
    /// Issue a new bootstrap token (CA material is untouched).
    #[command(after_help = "After rotating, create the token on a control plane before new nodes join:
  kubeadm token create \"$(cat DIR/secrets/bootstrap-token)\" --ttl 24h")]
    RotateToken {
        /// Cluster directory.
        #[arg(default_value = ".", value_name = "DIR")]
        dir: PathBuf,
    },
}

/// `kiln fleet` subcommands.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Check a fleet file: names, roles, addresses, keys, ranges, the cluster.
    #[command(after_help = "Example:
  kiln fleet check fleet.toml

Prints one line per node. Every error is one `file:line:col: message` line.
Exit codes: 0 ok (warnings allowed), 2 the fleet file has errors.")]
    Check {
        /// The fleet file.
        #[arg(value_name = "FLEET.toml")]
        fleet: PathBuf,
    },
    /// Write one personalised card image per node (for other flashing tools).
    #[command(after_help = "Examples:
  kiln fleet images fleet.toml --out dist/cards
  kiln fleet images fleet.toml --node 'pi-[03:05]' --out dist/cards

Writes <out>/<node>.img: a reflink of the base image where the filesystem
supports it (btrfs, XFS), else a sparse copy, with the node's files in its FAT
boot partition; and <out>/<node>.img.bmap beside it, so
`bmaptool copy <out>/<node>.img /dev/sdX` writes only what matters. The images
hold the nodes' secrets: they are written 0600.
Exit codes: 0 ok, 1 a write failed, 2 usage or fleet error.")]
    Images {
        /// The fleet file.
        #[arg(value_name = "FLEET.toml")]
        fleet: PathBuf,
        /// Output directory.
        #[arg(long, short, default_value = "dist/cards", value_name = "DIR")]
        out: PathBuf,
        /// Only these nodes (names or ranges like `pi-[03:05]`; repeatable).
        #[arg(long = "node", value_name = "NAME")]
        nodes: Vec<String>,
    },
}

/// `kiln flash` arguments.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  kiln flash fleet.toml --node pi-01 --device /dev/sdb
  kiln flash fleet.toml --node 'pi-[02:04]' --device /dev/sdb --device /dev/sdc --device /dev/sdd
  kiln flash fleet.toml --node 'pi-[05:20]' --device /dev/sdb --prompt     # one reader, card after card
  kiln flash fleet.toml --node pi-07 --device pi-07.img                    # a regular file works too

Writes only the image's mapped ranges (its .bmap) and the node's personalised
blocks, then reads everything back bypassing the page cache and compares sha256
per range, then re-reads the personalised files from the card's FAT partition.

Refuses: a mounted device (any partition) or swap, a device in use (O_EXCL), a
partition, a device smaller than the image; without --force also a device that
is not removable (sysfs removable=0; SD slots and loop devices count as
removable) or larger than 256 GiB, and an existing non-empty file that does not
look like a disk image. Always refuses the fleet file, the image, its .bmap
and anything under the cluster directory.

Exit codes: 0 ok, 1 an I/O error, 2 usage, fleet or refused device,
3 verification failed (the message names the range or file).")]
pub struct FlashArgs {
    /// The fleet file.
    #[arg(value_name = "FLEET.toml")]
    pub fleet: PathBuf,
    /// Node(s) to flash: names or ranges like `pi-[03:05]` (repeatable).
    #[arg(long = "node", required = true, value_name = "NAME")]
    pub nodes: Vec<String>,
    /// Target device(s) or files, paired with the nodes in order (repeatable).
    #[arg(long = "device", required = true, value_name = "DEV|FILE")]
    pub devices: Vec<PathBuf>,
    /// One device, card after card: wait for Enter before each node.
    #[arg(long)]
    pub prompt: bool,
    /// Allow a non-removable device or one larger than 256 GiB.
    #[arg(long)]
    pub force: bool,
    /// Card image (default: the fleet file's `image`).
    #[arg(long, value_name = "IMG")]
    pub image: Option<PathBuf>,
}

/// `kiln cluster init` arguments.
#[derive(Debug, clap::Args)]
pub struct ClusterInitArgs {
    /// Cluster name.
    pub name: String,
    /// Control-plane endpoint HOST[:PORT] (default port 6443; IPv6 as [addr]:port).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub endpoint: String,
    /// Kubernetes version of the control plane.
    #[arg(long, value_name = "VERSION")]
    pub kubernetes_version: String,
    /// Pod network CIDR.
    #[arg(long, default_value = crate::cluster::DEFAULT_POD_SUBNET, value_name = "CIDR")]
    pub pod_subnet: String,
    /// Service network CIDR.
    #[arg(long, default_value = "10.96.0.0/12", value_name = "CIDR")]
    pub service_subnet: String,
    /// Cluster DNS domain.
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    pub dns_domain: String,
    /// Key algorithm for the CAs and the service-account key.
    #[arg(long, value_enum, default_value = "ecdsa-p256")]
    pub key_algorithm: crate::cluster::KeyAlgorithm,
    /// Lifetime of the bootstrap token the init node creates (Go duration).
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub token_ttl: String,
    /// Output directory (default clusters/NAME).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace an existing cluster directory (its CA keys are lost).
    #[arg(long)]
    pub force: bool,
}

/// `kiln userdata` arguments.
#[derive(Debug, clap::Args)]
pub struct UserdataArgs {
    /// Cluster directory (from `kiln cluster init`).
    #[arg(long, value_name = "DIR")]
    pub cluster: PathBuf,
    /// The node's role.
    #[arg(long, value_parser = parse_role)]
    pub role: kiln_firstboot::contract::node::Role,
    /// Node name (otherwise taken from metadata or the hostname at boot).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Output format (default toml; cloud-config or ignition with --image, from the image's kind).
    #[arg(long, value_enum)]
    pub format: Option<crate::userdata::Format>,
    /// Ignition spec version.
    #[arg(long, default_value = "3.3.0", value_name = "VERSION")]
    pub ignition_version: String,
    /// gzip the output (cloud-init, Ignition and kiln-firstboot detect it).
    #[arg(long)]
    pub gzip: bool,
    /// Output file, written 0600 (it holds the bootstrap token); `-` prints it on standard output.
    #[arg(long, short, value_name = "FILE|-")]
    pub out: Option<PathBuf>,
    /// The image this node boots: an Ignition image config (`kiln build --format
    /// ignition`) is merged into one per-machine config (implies --format ignition);
    /// a tarball (`kiln build --format tar`) makes the cloud-config install it on a
    /// stock cloud image first (implies --format cloud-config; needs --base-url).
    #[arg(long, value_name = "FILE.ign|FILE.tar.gz")]
    pub image: Option<PathBuf>,
    /// With --image TARBALL: the URL dist/ is served from (the node downloads the
    /// tarball from BASE_URL/<file name> and checks its sha256).
    #[arg(long, value_name = "URL", requires = "image", value_parser = parse_base_url)]
    pub base_url: Option<String>,
}

fn parse_role(s: &str) -> Result<kiln_firstboot::contract::node::Role, String> {
    kiln_firstboot::contract::node::Role::parse(s)
        .ok_or_else(|| format!("unknown role `{s}` (init, control-plane, join)"))
}

/// `kiln build` arguments.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Profiles to build.
    #[arg(value_name = "PROFILE", required_unless_present = "profile_flags")]
    pub profiles: Vec<PathBuf>,
    /// The same as PROFILE (as `kiln pin` once took it).
    #[arg(long = "profile", short = 'p', value_name = "PROFILE", hide = true)]
    pub profile_flags: Vec<PathBuf>,
    /// Output directory.
    #[arg(short, long, default_value = "dist", value_name = "DIR")]
    pub out: PathBuf,
    /// Build only these architectures (default: all the profile lists).
    #[arg(long = "arch", value_name = "ARCH", value_parser = parse_arch)]
    pub archs: Vec<Arch>,
    /// Download cache (default: $XDG_CACHE_HOME/kiln or ~/.cache/kiln).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Fetch from a mirror directory or URL holding upstream's paths
    /// (default: $KILN_MIRROR, e.g. set once for every build of a CI runner).
    #[arg(long, value_name = "DIR|URL", env = "KILN_MIRROR", value_parser = parse_mirror_arg)]
    pub mirror: Option<String>,
    /// Use only the cache and the mirror; never contact upstream hosts.
    #[arg(long)]
    pub offline: bool,
    /// Fetch the profile's container images from this registry (the OCI
    /// distribution API at `http(s)://HOST[/PATH]`, e.g. a pull-through cache
    /// or Harbor) instead of each image's own registry, as a containerd
    /// `hosts.toml` mirror: `/v2/<repository>/…?ns=<registry>` (default:
    /// $KILN_REGISTRY_MIRROR).
    #[arg(long, value_name = "URL", env = "KILN_REGISTRY_MIRROR", value_parser = parse_registry_mirror)]
    pub registry_mirror: Option<String>,
    /// kiln-firstboot binary to bake, optionally per architecture (repeatable;
    /// default: $KILN_FIRSTBOOT_BIN, comma-separated).
    #[arg(long = "firstboot-bin", value_name = "[ARCH=]PATH", value_parser = parse_firstboot,
          env = "KILN_FIRSTBOOT_BIN", value_delimiter = ',')]
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
    /// Output format (repeatable; default: the profile's `formats`, else tar).
    #[arg(long = "format", value_enum, value_name = "FORMAT")]
    pub formats: Vec<crate::inputs::profile::OutputFormat>,
    /// How the Ignition image config installs the image.
    #[arg(long, value_enum, default_value = "sysext")]
    pub ignition_mode: crate::outputs::ignition_image::Mode,
    /// Ignition spec version of the image config.
    #[arg(long, default_value = "3.3.0", value_name = "VERSION")]
    pub ignition_version: String,
    /// URL the output directory is served from (Ignition downloads the sysext and kiln-firstboot there).
    #[arg(long, value_name = "URL", value_parser = parse_base_url)]
    pub base_url: Option<String>,
    /// gzip level of the .tar.gz, 1-12 (libdeflate; 6 is smaller than gzip -9).
    #[arg(long, default_value_t = crate::outputs::tarball::Compression::GZIP_DEFAULT, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=12))]
    pub gzip_level: u32,
    /// zstd level of the .tar.zst, 1-19.
    #[arg(long, default_value_t = crate::outputs::tarball::Compression::ZSTD_DEFAULT, value_name = "N",
          value_parser = clap::value_parser!(i32).range(1..=19))]
    pub zstd_level: i32,
    /// Print one JSON object on stdout, also when the build fails:
    /// {"ok": bool, "profiles": [reports of the profiles built], "error": null | {"message", "exit_code"}}.
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
    /// Profiles to re-pin.
    #[arg(value_name = "PROFILE", required_unless_present = "profile_flags")]
    pub profiles: Vec<PathBuf>,
    /// The same as PROFILE (the older spelling; repeatable).
    #[arg(long = "profile", short = 'p', value_name = "PROFILE", hide = true)]
    pub profile_flags: Vec<PathBuf>,
    /// Move the profile to this Kubernetes version (e.g. v1.34.3).
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
    /// Read checksum files from this mirror (a URL or a directory; same paths as
    /// upstream; default: $KILN_MIRROR).
    #[arg(long, value_name = "URL|DIR", env = "KILN_MIRROR", value_parser = parse_mirror_base)]
    pub base_url: Option<String>,
    /// Re-pin a card profile's [base_image] sha256 from the publisher's checksum
    /// file, at its current version.
    #[arg(long)]
    pub base_image: bool,
    /// Move a card profile's [base_image] to this release (e.g. 2025-10-01 for
    /// Raspberry Pi OS, 24.04.3 for Ubuntu) and pin its sha256.
    #[arg(long, value_name = "VERSION")]
    pub base_image_version: Option<String>,
    /// Print the diff without writing the profile.
    #[arg(long)]
    pub dry_run: bool,
    /// Resolve the `image:`s of this CNI manifest instead of the profile's
    /// `[cni_manifest]` (a CNI the image does not carry) and record their
    /// digests and platforms in `[cni_images]` (`kiln check` then refuses an
    /// architecture an image lacks).
    #[arg(long, value_name = "FILE")]
    pub cni_manifest: Option<PathBuf>,
    /// Resolve the profile's `images` through this registry (the OCI
    /// distribution API at `http(s)://HOST[/PATH]`, e.g. a pull-through cache
    /// or Harbor) instead of each image's own registry, as a containerd
    /// `hosts.toml` mirror: `/v2/<repository>/…?ns=<registry>` (default:
    /// $KILN_REGISTRY_MIRROR).
    #[arg(long, value_name = "URL", env = "KILN_REGISTRY_MIRROR", value_parser = parse_registry_mirror)]
    pub registry_mirror: Option<String>,
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

/// URL schemes an Ignition config may download from (Ignition config spec
/// v3.3.0/v3.4.0, `storage.files[].contents.source`: http, https, tftp, s3,
/// gs; `data:` needs no base URL).
const IGNITION_SCHEMES: [&str; 5] = ["https", "http", "tftp", "s3", "gs"];

/// `--base-url`: where the output directory will be served from. Checked
/// here because a config with a bad URL is only refused at first boot
/// (`ignition-validate` says `invalid url scheme`).
pub fn parse_base_url(s: &str) -> Result<String, String> {
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(format!(
            "`{s}` has no scheme: write https://{} (Ignition downloads from {} URLs)",
            s.trim_start_matches('/'),
            IGNITION_SCHEMES.join(", ")
        ));
    };
    if !IGNITION_SCHEMES.contains(&scheme) {
        return Err(format!(
            "`{scheme}://` is not a scheme Ignition downloads from; use one of {} (a file:// path exists only on this machine, not on the node)",
            IGNITION_SCHEMES.join(", ")
        ));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("`{s}` has no host; write {scheme}://HOST/PATH"));
    }
    if host.contains('@') {
        return Err(format!(
            "`{s}` carries credentials: they would be written into every Ignition config; serve dist/ where nodes need none"
        ));
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace() || c == '"' || c == '\\') {
        return Err(format!("`{}` has a blank, a quote or a control character; percent-encode it", s.escape_debug()));
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// `kiln pin --base-url`: an http(s):// or file:// URL, or a mirror directory
/// (made a file:// URL).
pub fn parse_mirror_base(s: &str) -> Result<String, String> {
    if let Some((scheme, rest)) = s.split_once("://") {
        return match scheme {
            "http" | "https" if !rest.is_empty() && !rest.starts_with('/') => Ok(s.trim_end_matches('/').to_string()),
            "http" | "https" => Err(format!("`{s}` has no host; write {scheme}://HOST/PATH")),
            "file" => Ok(s.trim_end_matches('/').to_string()),
            _ => Err(format!("`{scheme}://` is not supported; give an http(s):// URL or a mirror directory")),
        };
    }
    let dir = std::path::Path::new(s);
    match std::fs::canonicalize(dir) {
        Ok(abs) if abs.is_dir() => Ok(format!("file://{}", abs.display())),
        Ok(_) => Err(format!("{s} is not a directory; give a mirror directory or an http(s):// URL")),
        Err(_) => Err(format!(
            "{s} is neither a URL (https://HOST/PATH) nor an existing directory; fill a mirror directory with `kiln mirror`"
        )),
    }
}

const MIRROR_HELP: &str = "Examples:
  kiln mirror profiles/flatcar-1.34.toml --out /srv/kiln-mirror
  kiln mirror profiles/*.toml --out /media/usb/kiln-mirror --arch arm64
  kiln mirror profiles/fcos-1.34.toml --out mirror/ --mirror https://mirror.internal/k8s --json
  # then, on the air-gapped machine:
  kiln build profiles/flatcar-1.34.toml --mirror /media/usb/kiln-mirror --offline \\
      --base-url https://images.example.com/kiln

DIR holds upstream's URL paths without the host, a profile's [base_image] too:
  upstream  https://dl.k8s.io/release/v1.34.2/bin/linux/amd64/kubelet
  in DIR    DIR/release/v1.34.2/bin/linux/amd64/kubelet
Every file is verified against its
pin (through the cache, like kiln build) and written to a temporary file beside
its path, then renamed into place. A file already there with the pinned sha256
is kept, anything else at its path is replaced: a second run downloads nothing.
Serve DIR over HTTP(S) to use it as --mirror URL.

Prints one line per file (name, version, arch, size, downloaded | already
present | replaced, path) and the totals; --json prints them as JSON.

Exit codes: 0 ok, 1 a download or write failed (what could be fetched is kept),
2 usage or configuration error, 3 verification failure.";

/// `kiln mirror` arguments.
#[derive(Debug, clap::Args)]
pub struct MirrorArgs {
    /// Profiles whose artifacts to mirror.
    #[arg(required = true, value_name = "PROFILE")]
    pub profiles: Vec<PathBuf>,
    /// The mirror directory to fill (created if missing).
    #[arg(short, long, required = true, value_name = "DIR")]
    pub out: PathBuf,
    /// Only these architectures (repeatable; default: every one each profile lists).
    #[arg(long = "arch", value_name = "ARCH", value_parser = parse_arch)]
    pub archs: Vec<Arch>,
    /// Fetch from this mirror directory or URL instead of upstream (default: $KILN_MIRROR).
    #[arg(long, value_name = "DIR|URL", env = "KILN_MIRROR", value_parser = parse_mirror)]
    pub mirror: Option<crate::inputs::fetch::Mirror>,
    /// Fetch the profile's container images from this registry (the OCI
    /// distribution API at `http(s)://HOST[/PATH]`, e.g. a pull-through cache
    /// or Harbor) instead of each image's own registry, as a containerd
    /// `hosts.toml` mirror: `/v2/<repository>/…?ns=<registry>` (default:
    /// $KILN_REGISTRY_MIRROR).
    #[arg(long, value_name = "URL", env = "KILN_REGISTRY_MIRROR", value_parser = parse_registry_mirror)]
    pub registry_mirror: Option<String>,
    /// Download cache (default: $XDG_CACHE_HOME/kiln or ~/.cache/kiln).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Parallel downloads.
    #[arg(short, long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Attempts per download for transient failures.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub attempts: u32,
    /// Per-request timeout in seconds (connect and each read).
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `kiln build --mirror`: checked like `kiln mirror --mirror`, kept as given.
/// `--registry-mirror`: an http(s) URL without credentials, query or fragment.
fn parse_registry_mirror(s: &str) -> Result<String, String> {
    match crate::inputs::fetch::Mirror::parse_checked(s)? {
        crate::inputs::fetch::Mirror::Url(u) => Ok(u),
        crate::inputs::fetch::Mirror::Dir(_) => {
            Err(format!("`{s}` is not an http(s):// URL; a registry mirror speaks the distribution API (for a directory, use --mirror DIR)"))
        }
    }
}

fn parse_mirror_arg(s: &str) -> Result<String, String> {
    crate::inputs::fetch::Mirror::parse_checked(s).map(|_| s.to_string())
}

fn parse_mirror(s: &str) -> Result<crate::inputs::fetch::Mirror, String> {
    crate::inputs::fetch::Mirror::parse_checked(s)
}

/// clap's `ValueEnum` for the library's value types, implemented here so that
/// nothing outside this file names clap: each type lists its values (`ALL`),
/// spells each on the command line (`as_str`, the same spelling profiles and
/// cluster.toml use) and describes it (`help`).
macro_rules! value_enum {
    ($($ty:ty),+ $(,)?) => {$(
        impl clap::ValueEnum for $ty {
            fn value_variants<'a>() -> &'a [Self] {
                &<$ty>::ALL
            }

            fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
                Some(clap::builder::PossibleValue::new(self.as_str()).help(self.help()))
            }
        }
    )+};
}

value_enum!(
    crate::inputs::profile::OutputFormat,
    crate::userdata::Format,
    crate::cluster::KeyAlgorithm,
    crate::outputs::ignition_image::Mode,
);
