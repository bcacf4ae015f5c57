//! Profiles (`profiles/*.toml`): what goes into an image, strictly parsed.
//!
//! Every field keeps its source span so that [`crate::image::check`] can point at
//! `file:line:col`. Defaults are applied by accessor methods, never by
//! rewriting the parsed document, so a finding always points at real text.

use crate::error::{Error, Result};
use crate::inputs::location;
use crate::inputs::version::Version;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Default directory for kubeadm, kubelet, kubectl, crictl (writable on every family).
pub const DEFAULT_BIN_DIR: &str = "/opt/bin";
/// Default CNI plugin directory; kubelet and CNI plugins look here.
pub const DEFAULT_CNI_BIN_DIR: &str = "/opt/cni/bin";
/// Default flex-volume directory, writable when `/usr` is read-only.
/// kubeadm troubleshooting guide: "/usr mounted read-only on Fedora CoreOS / Flatcar".
pub const DEFAULT_FLEX_VOLUME_DIR: &str = "/opt/libexec/kubernetes/kubelet-plugins/volume/exec/";
/// Default reproducibility epoch: 1980-01-01T00:00:00Z (the zip epoch; avoids 0 mtimes).
pub const DEFAULT_EPOCH: u64 = 315_532_800;

/// A distro family: decides paths that differ between distributions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Fedora CoreOS: read-only `/usr`, RPM conventions (`/etc/sysconfig`).
    Fcos,
    /// Flatcar Container Linux: read-only `/usr`.
    Flatcar,
    /// Raspberry Pi OS, Debian, Ubuntu: writable `/usr`, `/etc/default`.
    Debian,
    /// Anything else with systemd.
    Generic,
}

impl Family {
    /// Whether `/usr` is read-only on this family (nothing may be installed there).
    pub fn read_only_usr(self) -> bool {
        matches!(self, Family::Fcos | Family::Flatcar)
    }
    /// The file that `10-kubeadm.conf` sources `KUBELET_EXTRA_ARGS` from:
    /// `/etc/sysconfig/kubelet` for RPM-based systems, `/etc/default/kubelet` otherwise
    /// (kubeadm install guide, "The kubelet drop-in file for systemd").
    pub fn kubelet_env_file(self) -> &'static str {
        match self {
            Family::Fcos => "/etc/sysconfig/kubelet",
            _ => "/etc/default/kubelet",
        }
    }
    /// The family's name as written in profiles.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Fcos => "fcos",
            Family::Flatcar => "flatcar",
            Family::Debian => "debian",
            Family::Generic => "generic",
        }
    }
}

/// A CPU architecture in Kubernetes' spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// x86-64.
    Amd64,
    /// 64-bit ARM (Raspberry Pi 3/4/5 with a 64-bit OS).
    Arm64,
    /// 32-bit ARM: accepted by the parser only so `kiln check` can refuse it by version.
    Arm,
}

impl Arch {
    /// Kubernetes' name (`amd64`, `arm64`, `arm`).
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Arm => "arm",
        }
    }
    /// `uname -m` spelling (`x86_64`, `aarch64`, `armv7l`).
    pub fn uname(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
            Arch::Arm => "armv7l",
        }
    }
    /// ELF `e_machine` value of binaries for this architecture.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::Amd64 => 62,
            Arch::Arm64 => 183,
            Arch::Arm => 40,
        }
    }
    /// The architecture this `kiln` binary was compiled for, if it is one of ours.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::Amd64),
            "aarch64" => Some(Arch::Arm64),
            "arm" => Some(Arch::Arm),
            _ => None,
        }
    }
    /// Parses Kubernetes' spelling.
    pub fn parse(s: &str) -> Option<Arch> {
        match s {
            "amd64" => Some(Arch::Amd64),
            "arm64" => Some(Arch::Arm64),
            "arm" => Some(Arch::Arm),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An output format of `kiln build`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// `<profile>-<arch>.tar.gz`: an overlay tarball for the root filesystem.
    Tar,
    /// `<profile>-<arch>.tar.zst`: the same tarball, zstd-compressed (GNU tar
    /// 1.31+ and systemd's `importctl import-tar` read it).
    #[serde(rename = "tar.zst")]
    TarZst,
    /// `kubernetes-<version>-<arch>.raw`: a systemd-sysext image.
    Sysext,
    /// `<profile>-<arch>.ign`: an Ignition config that installs the image.
    Ignition,
    /// `<profile>-<arch>.img` + `.bmap`: a Raspberry Pi card from `[base_image]`.
    Card,
}

impl OutputFormat {
    /// Every value, in the order `--help` lists them.
    pub const ALL: [OutputFormat; 5] =
        [OutputFormat::Tar, OutputFormat::TarZst, OutputFormat::Sysext, OutputFormat::Ignition, OutputFormat::Card];

    /// What `--help` says of this value.
    pub fn help(self) -> &'static str {
        match self {
            OutputFormat::Tar => "`<profile>-<arch>.tar.gz`: an overlay tarball for the root filesystem",
            OutputFormat::TarZst => "`<profile>-<arch>.tar.zst`: the same tarball, zstd-compressed (GNU tar 1.31+ and systemd's `importctl import-tar` read it)",
            OutputFormat::Sysext => "`kubernetes-<version>-<arch>.raw`: a systemd-sysext image",
            OutputFormat::Ignition => "`<profile>-<arch>.ign`: an Ignition config that installs the image",
            OutputFormat::Card => "`<profile>-<arch>.img` + `.bmap`: a Raspberry Pi card from `[base_image]`",
        }
    }

    /// Name as written in profiles and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Tar => "tar",
            OutputFormat::TarZst => "tar.zst",
            OutputFormat::Sysext => "sysext",
            OutputFormat::Ignition => "ignition",
            OutputFormat::Card => "card",
        }
    }
}

/// A cgroup driver, shared by kubelet and the container runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    /// systemd manages cgroups (recommended with systemd and cgroup v2).
    Systemd,
    /// kubelet writes cgroupfs directly.
    Cgroupfs,
}

impl CgroupDriver {
    /// Name as kubelet's `cgroupDriver` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupDriver::Systemd => "systemd",
            CgroupDriver::Cgroupfs => "cgroupfs",
        }
    }
}

/// A container runtime kiln knows the socket of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// containerd (Flatcar and Fedora CoreOS ship it).
    Containerd,
    /// CRI-O.
    Crio,
}

impl RuntimeKind {
    /// Default CRI socket (kubeadm's known endpoints, `kubeadm/app/constants`).
    pub fn default_socket(self) -> &'static str {
        match self {
            RuntimeKind::Containerd => "unix:///run/containerd/containerd.sock",
            RuntimeKind::Crio => "unix:///var/run/crio/crio.sock",
        }
    }
    /// The systemd unit that runs the runtime.
    pub fn unit(self) -> &'static str {
        match self {
            RuntimeKind::Containerd => "containerd.service",
            RuntimeKind::Crio => "crio.service",
        }
    }
    /// Name as written in profiles.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Containerd => "containerd",
            RuntimeKind::Crio => "crio",
        }
    }
}

/// `[runtime]`: the container runtime the image's kubelet talks to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// Which runtime.
    pub name: Spanned<RuntimeKind>,
    /// CRI socket; default per runtime.
    pub socket: Option<Spanned<String>>,
    /// Whether kiln writes the runtime's configuration (`/etc/containerd/config.toml`).
    #[serde(default)]
    pub manage_config: bool,
    /// containerd config schema version to write (2 is read by containerd 1.7 and 2.x).
    pub config_version: Option<Spanned<u8>>,
    /// The cgroup driver the distro's runtime is configured with, when kiln does not own it.
    pub cgroup_driver: Option<Spanned<CgroupDriver>>,
}

/// `[kubelet]`: settings baked for kubelet.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kubelet {
    /// Extra kubelet flags, written to the family's kubelet environment file.
    #[serde(default)]
    pub extra_args: Vec<Spanned<String>>,
}

/// One pinned download: a URL template and a sha256 per architecture.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSpec {
    /// Upstream version, substituted for `{version}` in the URL.
    pub version: Spanned<String>,
    /// URL template; placeholders `{version}`, `{arch}`, `{uname_arch}`.
    pub url: Spanned<String>,
    /// Pinned sha256 (lowercase hex) of the downloaded file, per architecture.
    pub sha256: Spanned<BTreeMap<Spanned<Arch>, Spanned<String>>>,
    /// Pinned size in bytes of the downloaded file, per architecture (written
    /// by `kiln pin`); a download stops there. Optional.
    pub size: Option<Spanned<BTreeMap<Spanned<Arch>, Spanned<u64>>>>,
    /// Members to extract from a `.tar.gz`/`.tgz`; `["*"]` for every executable
    /// regular file (an x bit in the tarball: a release's LICENSE and README
    /// are left out; name them to install them).
    pub extract: Option<Spanned<Vec<String>>>,
    /// Directory to install into (default: the bin dir; CNI plugins: the CNI dir).
    pub dest: Option<Spanned<String>>,
    /// Installed file name for a single-file artifact (default: the artifact's name).
    pub file_name: Option<Spanned<String>>,
    /// Octal mode of installed files (default `0755`).
    pub mode: Option<Spanned<String>>,
}

/// `[cni_manifest]`: the pod network manifest the image carries at
/// [`CNI_MANIFEST_PATH`] for the init node to apply (node.toml `[cluster]
/// cni_manifest`), pinned like every artifact: by `url` (fetched, cached,
/// verified and mirrored as the artifact [`CNI_MANIFEST_ARTIFACT`]) or by
/// `path` (a file beside the profile, hashed and checked), and `sha256`
/// either way (`kiln pin` writes it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CniManifestSpec {
    /// `https://` URL of the manifest.
    pub url: Option<Spanned<String>>,
    /// Or a file, relative to the profile's directory.
    pub path: Option<Spanned<String>>,
    /// Pinned sha256 of the manifest (lowercase hex).
    pub sha256: Spanned<String>,
    /// Pinned size in bytes (written by `kiln pin` for a URL). Optional.
    pub size: Option<Spanned<u64>>,
    /// The cluster's pod CIDR (cluster.toml `pod_subnet`; default
    /// [`crate::cluster::DEFAULT_POD_SUBNET`]) the manifest's network must match.
    pub pod_subnet: Option<Spanned<String>>,
}

/// Where the image carries the pinned CNI manifest.
pub const CNI_MANIFEST_PATH: &str = "/etc/kiln/cni.yaml";
/// The artifact name of a `[cni_manifest]` pinned by URL.
pub const CNI_MANIFEST_ARTIFACT: &str = "cni-manifest";
/// Largest CNI manifest kiln reads from a `path` (Calico's with its CRDs is ~1 MiB).
pub const CNI_MANIFEST_MAX: u64 = 16 << 20;

/// The profile document as written (every key optional unless the format needs it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileDoc {
    /// Profile name; names the outputs (`dist/<name>-<arch>.tar.gz`).
    pub name: Spanned<String>,
    /// Control-plane Kubernetes version the image targets.
    pub kubernetes_version: Spanned<String>,
    /// Distro family.
    pub family: Spanned<Family>,
    /// Architectures to build.
    pub architectures: Spanned<Vec<Spanned<Arch>>>,
    /// Where binaries go (default `/opt/bin`).
    pub bin_dir: Option<Spanned<String>>,
    /// Where CNI plugins go (default `/opt/cni/bin`).
    pub cni_bin_dir: Option<Spanned<String>>,
    /// Writable flex-volume plugin directory.
    pub flex_volume_dir: Option<Spanned<String>>,
    /// cgroup driver for kubelet and the runtime (default `systemd`).
    pub cgroup_driver: Option<Spanned<CgroupDriver>>,
    /// Reproducibility epoch (seconds since 1970) used for every mtime.
    pub epoch: Option<Spanned<u64>>,
    /// Overlays (`overlays/<name>/`) merged in this order.
    #[serde(default)]
    pub overlays: Vec<Spanned<String>>,
    /// The container images the node runs, each `name:tag@sha256:<image index
    /// digest>` (`kiln pin` writes the digests): kubeadm's for
    /// `kubernetes_version` and any extra ones ([`crate::inputs::image_pins`]).
    /// Absent: the node pulls them at first boot.
    pub images: Option<Spanned<Vec<Spanned<String>>>>,
    /// Output formats `kiln build` writes by default (`--format` overrides).
    pub formats: Option<Spanned<Vec<OutputFormat>>>,
    /// The container runtime.
    pub runtime: Option<Runtime>,
    /// Extra or overriding sysctls (`key = "value"`).
    #[serde(default)]
    pub sysctl: BTreeMap<String, Spanned<toml::Value>>,
    /// Extra kernel modules to load at boot (besides `br_netfilter` and `overlay`).
    #[serde(default)]
    pub kernel_modules: Vec<Spanned<String>>,
    /// kubelet settings.
    #[serde(default)]
    pub kubelet: Kubelet,
    /// Pinned artifacts by name (`kubeadm`, `kubelet`, `kubectl`, `crictl`, `cni-plugins`, …).
    pub artifacts: BTreeMap<String, Spanned<ArtifactSpec>>,
    /// The OS image `--format card` starts from (Raspberry Pi OS, Ubuntu for Raspberry Pi).
    pub base_image: Option<Spanned<crate::inputs::base_image::BaseImageSpec>>,
    /// The pinned CNI manifest the image carries.
    pub cni_manifest: Option<Spanned<CniManifestSpec>>,
    /// The CNI manifest's images as `kiln pin --cni-manifest` resolved them:
    /// digest and platforms per image ([`crate::inputs::oci`]).
    #[serde(default)]
    pub cni_images: BTreeMap<String, Spanned<PinnedImage>>,
}

/// A loaded profile: the document, its text (for locations) and parsed version.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Path the profile was read from.
    pub path: PathBuf,
    /// The profile's text, for `file:line:col` and fingerprints.
    pub text: String,
    /// The parsed document.
    pub doc: ProfileDoc,
    /// `kubernetes_version`, parsed.
    pub version: Version,
}

/// How an artifact is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Install {
    /// The download is the file itself, installed as `dir/name`.
    File {
        /// Installed file name.
        name: String,
    },
    /// The download is a gzip tarball; these members (or all, if `None`) go to `dir`.
    Extract {
        /// Member base names, or `None` for every regular file.
        members: Option<Vec<String>>,
    },
}

/// An artifact resolved for one architecture: what to fetch and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Artifact name (the table key).
    pub name: String,
    /// Upstream version.
    pub version: String,
    /// Architecture.
    pub arch: Arch,
    /// Upstream URL with placeholders filled.
    pub url: String,
    /// Pinned sha256, lowercase hex.
    pub sha256: String,
    /// Pinned size in bytes, if the profile records one.
    pub size: Option<u64>,
    /// Absolute install directory inside the image.
    pub dest: String,
    /// File mode of installed files.
    pub mode: u32,
    /// File or tarball.
    pub install: Install,
}

/// Fills `{version}`, `{arch}` and `{uname_arch}` in a URL template.
pub fn expand_url(template: &str, version: &str, arch: Arch) -> String {
    template.replace("{version}", version).replace("{arch}", arch.as_str()).replace("{uname_arch}", arch.uname())
}

/// Placeholders a URL template may use.
pub const URL_PLACEHOLDERS: [&str; 3] = ["{version}", "{arch}", "{uname_arch}"];

/// Parses an octal mode string such as `"0755"`.
pub fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o7777)
}

/// Sysctls every image sets to `1` and a profile may not set otherwise:
/// kubeadm's preflight `FileContentCheck`s (`cmd/kubeadm/app/preflight/checks_linux.go`,
/// `addIPv4Checks`/`addIPv6Checks`) require `net.ipv4.ip_forward` = 1, and
/// before v1.30 also `net.bridge.bridge-nf-call-iptables` and
/// `-ip6tables` = 1 (removed by kubernetes/kubernetes#123464); bridge CNI
/// plugins and kube-proxy's iptables mode still need bridged traffic to pass
/// through iptables.
pub const REQUIRED_SYSCTLS: [&str; 3] =
    ["net.bridge.bridge-nf-call-ip6tables", "net.bridge.bridge-nf-call-iptables", "net.ipv4.ip_forward"];

impl Profile {
    /// Reads and strictly parses a profile file. Errors name `file:line:col` (exit 2).
    pub fn load(path: &Path) -> Result<Profile> {
        let bytes = read_bounded(path)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let good = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(&e.as_bytes()[..good]).into_owned();
            Error::config(location::at(
                path,
                &text,
                Some(good..good),
                "the profile is not UTF-8 here; save it as UTF-8 (TOML files are UTF-8)",
            ))
        })?;
        Self::parse(path, text)
    }

    /// Parses profile text read from `path`, then checks every field against
    /// its allow-list ([`crate::inputs::validate`]). Each error is one
    /// `file:line:col: what; what to do` line; all of them are reported.
    pub fn parse(path: &Path, text: String) -> Result<Profile> {
        let doc: ProfileDoc = toml::from_str(&text).map_err(|e| {
            Error::config(location::at(path, &text, e.span(), &location::explain_toml_message(e.message())))
        })?;
        let mut errors: Vec<(usize, String)> = Vec::new();
        let mut err = |span: std::ops::Range<usize>, m: String| {
            errors.push((span.start, location::at(path, &text, Some(span), &m)))
        };
        let version = crate::inputs::version::kubernetes(doc.kubernetes_version.get_ref());
        if let Err(m) = &version {
            err(doc.kubernetes_version.span(), m.clone());
        }
        validate_fields(&doc, &mut err);
        match version {
            Ok(version) if errors.is_empty() => Ok(Profile { path: path.to_path_buf(), text, doc, version }),
            _ => {
                errors.sort();
                errors.dedup();
                Err(Error::config(errors.into_iter().map(|(_, m)| m).collect::<Vec<_>>().join("\n")))
            }
        }
    }

    /// `file:line:col: message` for a span of this profile.
    pub fn at(&self, span: std::ops::Range<usize>, message: &str) -> String {
        location::at(&self.path, &self.text, Some(span), message)
    }

    /// The profile's name.
    pub fn name(&self) -> &str {
        self.doc.name.get_ref()
    }
    /// The distro family.
    pub fn family(&self) -> Family {
        *self.doc.family.get_ref()
    }
    /// The architectures to build, in profile order.
    pub fn architectures(&self) -> Vec<Arch> {
        self.doc.architectures.get_ref().iter().map(|a| *a.get_ref()).collect()
    }
    /// Binary directory without a trailing slash.
    pub fn bin_dir(&self) -> String {
        dir_of(self.doc.bin_dir.as_ref(), DEFAULT_BIN_DIR)
    }
    /// The pinned container images (`images`), each `name:tag@sha256:<index digest>`, in
    /// profile order; empty when the profile has none (the node then pulls them).
    pub fn images(&self) -> Vec<String> {
        self.doc.images.as_ref().map(|l| l.get_ref().iter().map(|i| i.get_ref().clone()).collect()).unwrap_or_default()
    }
    /// CNI plugin directory without a trailing slash.
    pub fn cni_bin_dir(&self) -> String {
        dir_of(self.doc.cni_bin_dir.as_ref(), DEFAULT_CNI_BIN_DIR)
    }
    /// Flex-volume directory without a trailing slash.
    pub fn flex_volume_dir(&self) -> String {
        dir_of(self.doc.flex_volume_dir.as_ref(), DEFAULT_FLEX_VOLUME_DIR)
    }
    /// cgroup driver for kubelet and the runtime.
    pub fn cgroup_driver(&self) -> CgroupDriver {
        self.doc.cgroup_driver.as_ref().map(|c| *c.get_ref()).unwrap_or(CgroupDriver::Systemd)
    }
    /// The runtime kind (default containerd).
    pub fn runtime(&self) -> RuntimeKind {
        self.doc.runtime.as_ref().map(|r| *r.name.get_ref()).unwrap_or(RuntimeKind::Containerd)
    }
    /// The runtime's CRI socket.
    pub fn runtime_socket(&self) -> String {
        self.doc
            .runtime
            .as_ref()
            .and_then(|r| r.socket.as_ref())
            .map(|s| s.get_ref().clone())
            .unwrap_or_else(|| self.runtime().default_socket().to_string())
    }
    /// The profile's `[base_image]`, or a configuration error naming what to add.
    pub fn base_image(&self) -> Result<&crate::inputs::base_image::BaseImageSpec> {
        self.doc.base_image.as_ref().map(|s| s.get_ref()).ok_or_else(|| {
            Error::config(format!(
                "{}: --format card needs a [base_image] table (url, compression, sha256); see profiles/rpi-raspios-1.34.toml",
                self.path.display()
            ))
        })
    }
    /// Output formats the profile asks for (default: the tarball).
    pub fn formats(&self) -> Vec<OutputFormat> {
        self.doc
            .formats
            .as_ref()
            .map(|f| f.get_ref().clone())
            .filter(|f| !f.is_empty())
            .unwrap_or(vec![OutputFormat::Tar])
    }
    /// The profile's epoch (before `SOURCE_DATE_EPOCH` is considered).
    pub fn epoch(&self) -> u64 {
        self.doc.epoch.as_ref().map(|e| *e.get_ref()).unwrap_or(DEFAULT_EPOCH)
    }
    /// Kernel modules loaded at boot: the ones kubeadm needs, then the profile's.
    pub fn kernel_modules(&self) -> Vec<String> {
        let mut mods = vec!["overlay".to_string(), "br_netfilter".to_string()];
        for m in &self.doc.kernel_modules {
            if !mods.contains(m.get_ref()) {
                mods.push(m.get_ref().clone());
            }
        }
        mods
    }
    /// Sysctls: kubeadm's requirements, extended by the profile (which may not
    /// change the required ones: `kiln check`'s `sysctl-required` rule).
    /// kubeadm install guide, "Forwarding IPv4 and letting iptables see bridged traffic".
    pub fn sysctls(&self) -> BTreeMap<String, String> {
        let mut s: BTreeMap<String, String> =
            REQUIRED_SYSCTLS.into_iter().map(|k| (k.to_string(), "1".to_string())).collect();
        for (k, v) in &self.doc.sysctl {
            let value = match v.get_ref() {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            s.insert(k.clone(), value);
        }
        s
    }
    /// Version string of the named artifact, if pinned.
    pub fn artifact_version(&self, name: &str) -> Option<String> {
        self.doc.artifacts.get(name).map(|a| a.get_ref().version.get_ref().clone())
    }

    /// A `[cni_manifest]` pinned by URL as the artifact it is fetched as:
    /// installed at [`CNI_MANIFEST_PATH`], mode 0644, the same pin for every
    /// architecture.
    pub fn cni_manifest_artifact(&self, arch: Arch) -> Option<Artifact> {
        let spec = self.doc.cni_manifest.as_ref()?.get_ref();
        let url = spec.url.as_ref()?.get_ref().clone();
        let (dir, name) = CNI_MANIFEST_PATH.rsplit_once('/')?;
        Some(Artifact {
            name: CNI_MANIFEST_ARTIFACT.to_string(),
            version: "pinned".to_string(),
            arch,
            url,
            sha256: spec.sha256.get_ref().to_ascii_lowercase(),
            size: spec.size.as_ref().map(|s| *s.get_ref()),
            dest: dir.to_string(),
            mode: 0o644,
            install: Install::File { name: name.to_string() },
        })
    }

    /// A `[cni_manifest]` pinned by `path`: the file, resolved against the
    /// profile's directory.
    pub fn cni_manifest_file(&self) -> Option<PathBuf> {
        let spec = self.doc.cni_manifest.as_ref()?.get_ref();
        let rel = spec.path.as_ref()?.get_ref();
        Some(self.path.parent().unwrap_or(Path::new(".")).join(rel))
    }

    /// Reads the `path` manifest (bounded by [`CNI_MANIFEST_MAX`]) and checks
    /// it against its pin: a different sha256 is a verification error (exit 3).
    pub fn read_cni_manifest_file(&self) -> Result<Option<Vec<u8>>> {
        let (Some(file), Some(spec)) = (self.cni_manifest_file(), self.doc.cni_manifest.as_ref()) else {
            return Ok(None);
        };
        let spec = spec.get_ref();
        let read = || -> std::io::Result<Vec<u8>> {
            use std::io::Read;
            let mut bytes = Vec::new();
            crate::io::open_regular(&file)?.take(CNI_MANIFEST_MAX + 1).read_to_end(&mut bytes)?;
            if bytes.len() as u64 > CNI_MANIFEST_MAX {
                return Err(std::io::Error::other(format!("longer than {CNI_MANIFEST_MAX} bytes")));
            }
            Ok(bytes)
        };
        let bytes = read().map_err(|e| {
            let span = spec.path.as_ref().map(|p| p.span()).unwrap_or(spec.sha256.span());
            Error::config(self.at(
                span,
                &format!("cni_manifest {}: {e}; give a readable file (relative to the profile)", file.display()),
            ))
        })?;
        let got = crate::hash::sha256_hex(&bytes);
        let want = spec.sha256.get_ref().to_ascii_lowercase();
        if got != want {
            return Err(Error::verify(self.at(
                spec.sha256.span(),
                &format!("checksum mismatch for cni_manifest {}\n  expected {want}\n  actual   {got}\nthe file changed since it was pinned: review it, then `kiln pin --profile {}` writes the new sha256", file.display(), self.path.display()),
            )));
        }
        Ok(Some(bytes))
    }

    /// The pod CIDR the CNI manifest must match.
    pub fn cni_pod_subnet(&self) -> String {
        self.doc
            .cni_manifest
            .as_ref()
            .and_then(|c| c.get_ref().pod_subnet.as_ref())
            .map(|s| s.get_ref().clone())
            .unwrap_or_else(|| crate::cluster::DEFAULT_POD_SUBNET.to_string())
    }

    /// Resolves every artifact for `arch`. Fails (exit 2) on a missing pin;
    /// `kiln check` reports the same problems with more context.
    pub fn artifacts_for(&self, arch: Arch) -> Result<Vec<Artifact>> {
        let mut out = Vec::new();
        if let Some(a) = self.cni_manifest_artifact(arch) {
            out.push(a);
        }
        for (name, spec) in &self.doc.artifacts {
            let spec = spec.get_ref();
            let sha = spec
                .sha256
                .get_ref()
                .iter()
                .find(|(a, _)| *a.get_ref() == arch)
                .map(|(_, s)| s.get_ref().to_ascii_lowercase())
                .ok_or_else(|| {
                    Error::config(self.at(
                        spec.sha256.span(),
                        &format!("artifact `{name}` has no sha256 for {arch}; run `kiln pin` or add `sha256.{arch}`"),
                    ))
                })?;
            let default_dest = if name == "cni-plugins" { self.cni_bin_dir() } else { self.bin_dir() };
            let dest =
                spec.dest.as_ref().map(|d| d.get_ref().trim_end_matches('/').to_string()).unwrap_or(default_dest);
            let mode = spec.mode.as_ref().and_then(|m| parse_mode(m.get_ref())).unwrap_or(0o755);
            let install = match &spec.extract {
                Some(list) => {
                    let l = list.get_ref();
                    Install::Extract { members: if l.iter().any(|m| m == "*") { None } else { Some(l.clone()) } }
                }
                None => Install::File {
                    name: spec.file_name.as_ref().map(|f| f.get_ref().clone()).unwrap_or_else(|| name.clone()),
                },
            };
            let version = spec.version.get_ref().clone();
            out.push(Artifact {
                name: name.clone(),
                url: expand_url(spec.url.get_ref(), &version, arch),
                version,
                arch,
                sha256: sha,
                size: spec
                    .size
                    .as_ref()
                    .and_then(|m| m.get_ref().iter().find(|(a, _)| *a.get_ref() == arch).map(|(_, n)| *n.get_ref())),
                dest,
                mode,
                install,
            });
        }
        Ok(out)
    }

    /// Directory overlays are looked up in: `<profile dir>/../overlays`.
    pub fn overlays_root(&self) -> PathBuf {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        dir.join("..").join("overlays")
    }
}

/// Largest profile kiln reads: profiles are a few KiB; a FIFO or `/dev/zero`
/// named as a profile must not hang kiln or fill its memory.
pub const PROFILE_MAX_BYTES: u64 = 1 << 20;

/// The `*.toml` files in `dir`, sorted (for hints).
fn profiles_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.ends_with(".toml") && !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Why `path` is not a profile that can be read, with what to do instead:
/// a directory lists its profiles, a missing file suggests the closest name.
fn not_a_profile(path: &Path, meta: std::io::Result<std::fs::Metadata>) -> Error {
    let shown = path.display();
    match meta {
        Ok(m) if m.is_dir() => {
            let found = profiles_in(path);
            let hint = if found.is_empty() {
                String::from("it holds no *.toml profile")
            } else {
                format!("it holds {}", found.join(", "))
            };
            Error::config(format!(
                "{shown} is a directory; name profile files, e.g. `{}/*.toml` ({hint})",
                shown.to_string().trim_end_matches('/')
            ))
        }
        Ok(_) => Error::config(format!(
            "{shown}: not a regular file; name a profile file such as profiles/flatcar-1.34.toml"
        )),
        Err(e) => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let wanted = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let best = profiles_in(dir)
                .into_iter()
                .map(|n| (strsim::jaro_winkler(&wanted, &n), n))
                .filter(|(score, _)| *score > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let hint = match best {
                Some((_, n)) => format!("; did you mean {}?", dir.join(n).display()),
                None if dir.is_dir() => format!("; profiles there: {}", profiles_in(dir).join(", ")),
                None => format!("; {} does not exist either", dir.display()),
            };
            Error::config(format!("{shown}: cannot read profile: {e}{hint}"))
        }
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let cannot = |e: std::io::Error| Error::config(format!("{}: cannot read profile: {e}", path.display()));
    let meta = std::fs::metadata(path);
    if !meta.as_ref().is_ok_and(|m| m.is_file()) {
        return Err(not_a_profile(path, meta));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path).map_err(cannot)?.take(PROFILE_MAX_BYTES + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > PROFILE_MAX_BYTES {
        return Err(Error::config(format!(
            "{}: larger than {} bytes, which no profile needs; name the right file",
            path.display(),
            PROFILE_MAX_BYTES
        )));
    }
    Ok(bytes)
}

/// Calls `err(span, message)` for a refused value: the error of a [`Verdict`](crate::inputs::validate::Verdict).
fn at<E: FnMut(Range<usize>, String)>(err: &mut E, s: &Spanned<String>, r: crate::inputs::validate::Verdict) {
    if let Err(m) = r {
        err(s.span(), m);
    }
}

/// Checks every string (and the epoch) of a parsed profile against its
/// allow-list, calling `err(span, message)` for each refusal, one section
/// after another. Cross-field rules (skew, read-only `/usr`, pins per
/// architecture) live in [`crate::image::check`].
fn validate_fields<E: FnMut(Range<usize>, String)>(doc: &ProfileDoc, err: &mut E) {
    use crate::inputs::validate as v;
    validate_names_and_dirs(doc, err);
    validate_sysctl(doc, err);
    if let Some(e) = &doc.epoch {
        if let Err(m) = v::epoch("epoch", *e.get_ref()) {
            err(e.span(), m);
        }
    }
    if let Some(base) = &doc.base_image {
        let base = base.get_ref();
        if let Err(m) = v::artifact_version(base.version.get_ref()) {
            err(base.version.span(), format!("base_image: {m}"));
        }
        if let Err(m) = v::url(base.url.get_ref()) {
            err(base.url.span(), format!("base_image: {m}"));
        }
    }
    if let Some(c) = &doc.cni_manifest {
        validate_cni_manifest(c, err);
    }
    for image in doc.images.iter().flat_map(|l| l.get_ref()) {
        if let Err(m) = crate::inputs::image_ref::ImagePin::parse(image.get_ref()) {
            err(image.span(), format!("images: {m}"));
        }
    }
    for (name, spec) in &doc.artifacts {
        validate_artifact(name, spec, err);
    }
}

/// The profile's name, its directories, overlays, kernel modules, kubelet
/// arguments and runtime socket.
fn validate_names_and_dirs<E: FnMut(Range<usize>, String)>(doc: &ProfileDoc, err: &mut E) {
    use crate::inputs::validate as v;
    at(err, &doc.name, v::name("profile name", doc.name.get_ref()));
    let dirs = [
        ("bin_dir", &doc.bin_dir, DEFAULT_BIN_DIR),
        ("cni_bin_dir", &doc.cni_bin_dir, DEFAULT_CNI_BIN_DIR),
        ("flex_volume_dir", &doc.flex_volume_dir, DEFAULT_FLEX_VOLUME_DIR),
    ];
    for (key, value, default) in dirs {
        if let Some(value) = value {
            at(err, value, v::own_dir(key, value.get_ref(), default).map(drop));
        }
    }
    for o in &doc.overlays {
        at(err, o, v::name("overlay", o.get_ref()));
    }
    for m in &doc.kernel_modules {
        at(err, m, v::module(m.get_ref()));
    }
    for a in &doc.kubelet.extra_args {
        at(err, a, v::kubelet_arg(a.get_ref()));
    }
    if let Some(s) = doc.runtime.as_ref().and_then(|r| r.socket.as_ref()) {
        at(err, s, v::socket(s.get_ref()));
    }
}

/// `[sysctl]`: each name, and each value (a string or an integer).
fn validate_sysctl<E: FnMut(Range<usize>, String)>(doc: &ProfileDoc, err: &mut E) {
    use crate::inputs::validate as v;
    for (key, value) in &doc.sysctl {
        let r = match value.get_ref() {
            toml::Value::Table(_) | toml::Value::Array(_) => Err(format!(
                "sysctl {} has a table or array value; quote dotted names, e.g. \"{key}.…\" = \"1\"",
                v::show(key)
            )),
            toml::Value::String(s) => v::sysctl_name(key).and_then(|()| v::sysctl_value(key, s)),
            toml::Value::Integer(_) => v::sysctl_name(key),
            _ => Err(format!(
                "sysctl {} = {} is neither a string nor an integer; write the value as sysctl(8) prints it, e.g. \"1\"",
                v::show(key),
                value.get_ref()
            )),
        };
        if let Err(m) = r {
            err(value.span(), m);
        }
    }
}

/// `[cni_manifest]`: a `url` or a `path` (exactly one), and its `pod_subnet`.
fn validate_cni_manifest<E: FnMut(Range<usize>, String)>(c: &Spanned<CniManifestSpec>, err: &mut E) {
    use crate::inputs::validate as v;
    let span = c.span();
    let c = c.get_ref();
    match (&c.url, &c.path) {
        (Some(_), Some(_)) | (None, None) => err(span, "[cni_manifest]: give `url` (https://, fetched and verified) or `path` (a file beside the profile), not both or neither".into()),
        (Some(u), None) => {
            if let Err(m) = v::url(u.get_ref()) {
                err(u.span(), format!("cni_manifest: {m}"));
            }
        }
        (None, Some(p)) => {
            let s = p.get_ref();
            if s.is_empty() || s.starts_with('/') || s.split('/').any(|c| c == "..") || s.chars().any(char::is_control) {
                err(p.span(), format!("cni_manifest: path {} must be relative to the profile's directory, without `..`", v::show(s)));
            }
        }
    }
    if let Some(ps) = &c.pod_subnet {
        // The rules `kiln cluster init --pod-subnet` applies (kubeadm's), so a
        // profile never expects a pod subnet no cluster can have.
        if let Err(e) = crate::cluster::pod_subnet(ps.get_ref()) {
            err(ps.span(), format!("cni_manifest: pod_subnet: {e}; use cluster.toml's pod_subnet"));
        }
    }
}

/// One `[artifacts.NAME]`: its name, version, URL, destination, file name,
/// mode and extract list.
fn validate_artifact<E: FnMut(Range<usize>, String)>(name: &str, spec: &Spanned<ArtifactSpec>, err: &mut E) {
    use crate::inputs::validate as v;
    let table = spec.span();
    let spec = spec.get_ref();
    if let Err(m) = v::name("artifact", name) {
        err(table.clone(), format!("{m}; rename [artifacts.{}]", v::show(name)));
    }
    let ctx = |m: String| format!("artifact `{name}`: {m}");
    if let Err(m) = v::artifact_version(spec.version.get_ref()) {
        err(spec.version.span(), ctx(m));
    }
    if let Err(m) = v::url(spec.url.get_ref()) {
        err(spec.url.span(), ctx(m));
    }
    if let Some(d) = &spec.dest {
        let example = if name == "cni-plugins" { DEFAULT_CNI_BIN_DIR } else { DEFAULT_BIN_DIR };
        if let Err(m) = v::own_dir("dest", d.get_ref(), example) {
            err(d.span(), ctx(m));
        }
    }
    if let Some(f) = &spec.file_name {
        if let Err(m) = v::file_name("file_name", f.get_ref()) {
            err(f.span(), ctx(m));
        } else if spec.extract.is_some() {
            err(f.span(), ctx("file_name names a single downloaded file, but this artifact is a tarball (`extract`); remove file_name, or remove extract to install the download itself".into()));
        }
    }
    if let Some(m) = &spec.mode {
        if parse_mode(m.get_ref()).is_none() {
            err(m.span(), ctx(format!("mode {} is not octal like \"0755\"", v::show(m.get_ref()))));
        }
    }
    if let Some(list) = &spec.extract {
        let l = list.get_ref();
        if l.iter().any(|m| m == "*") && l.len() > 1 {
            err(
                list.span(),
                ctx("extract lists \"*\" (every regular file) and names too; use [\"*\"] alone or only names".into()),
            );
        }
        for m in l.iter().filter(|m| *m != "*") {
            if let Err(e) = v::file_name("extract member", m) {
                err(list.span(), ctx(format!("{e}; members are matched by base name")));
            }
        }
    }
}

fn dir_of(v: Option<&Spanned<String>>, default: &str) -> String {
    let s = v.map(|s| s.get_ref().as_str()).unwrap_or(default);
    let t = s.trim_end_matches('/');
    if t.is_empty() {
        "/".to_string()
    } else {
        t.to_string()
    }
}

/// One image as `kiln pin` recorded it in the profile.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedImage {
    /// Digest of the manifest (index) the reference resolved to: `sha256:…`.
    pub digest: String,
    /// Its platforms, `os/arch[/variant]` (e.g. `linux/arm64/v8`).
    pub platforms: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
kubernetes_version = "v1.34.2"
family = "flatcar"
architectures = ["amd64"]
[artifacts.kubelet]
version = "v1.34.2"
url = "https://dl.k8s.io/release/{version}/bin/linux/{arch}/kubelet"
sha256.amd64 = "9c5e717b774ee9b9285ce47e7d2150c29e84837eb19a7eaa24b60b1543c9d58f"
"#;

    #[test]
    fn defaults_apply() {
        let p = Profile::parse(Path::new("t.toml"), MINIMAL.to_string()).unwrap();
        assert_eq!(p.bin_dir(), "/opt/bin");
        assert_eq!(p.flex_volume_dir(), "/opt/libexec/kubernetes/kubelet-plugins/volume/exec");
        assert_eq!(p.runtime_socket(), "unix:///run/containerd/containerd.sock");
        let a = p.artifacts_for(Arch::Amd64).unwrap();
        assert_eq!(a[0].url, "https://dl.k8s.io/release/v1.34.2/bin/linux/amd64/kubelet");
        assert_eq!(a[0].install, Install::File { name: "kubelet".into() });
        assert!(p.artifacts_for(Arch::Arm64).is_err());
    }

    #[test]
    fn unknown_key_names_line_and_suggestion() {
        let text = MINIMAL.replace("family =", "famly =");
        let e = Profile::parse(Path::new("p.toml"), text).unwrap_err();
        assert!(e.message.starts_with("p.toml:4:1: unknown field `famly`"), "{}", e.message);
        assert!(e.message.contains("did you mean `family`"), "{}", e.message);
        assert!(!e.message.contains('\n'));
    }

    #[test]
    fn modes_parse_octal() {
        assert_eq!(parse_mode("0755"), Some(0o755));
        assert_eq!(parse_mode("600"), Some(0o600));
        assert_eq!(parse_mode("0999"), None);
        assert_eq!(parse_mode(""), None);
    }
}
