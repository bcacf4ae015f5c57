//! `kiln userdata`: one node's user-data from a cluster directory.
//!
//! Three formats carry the same node description:
//! * `toml`: the `node.toml` `kiln-firstboot` reads (firstboot's own contract type);
//! * `ignition`: an Ignition config (spec 3.3.0 by default, 3.4.0 on request) that
//!   writes `/etc/kiln/node.toml` and the PKI files and enables `kiln-firstboot.service`
//!   ([`crate::ignition`]'s document model, which `--image X.ign` merges it into);
//! * `cloud-config`: `#cloud-config` `write_files` doing the same for cloud-init;
//!   with `--image <tarball> --base-url URL` it also carries a script that
//!   brings kiln's image onto a stock cloud image (downloaded, verified against
//!   its sha256, extracted) before it starts `kiln-firstboot`.
//!
//! Workers receive the CA certificate, the discovery hash and the token, never a
//! private key. Control planes and the init node also receive the CA keys and
//! the service-account key pair, so no `--upload-certs` window is needed.

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::ignition::{self, b64, gzip};
use kiln_firstboot::contract::node::{
    Cluster as ClusterSection, Node, NodeConfig, Pki, Role, Secret, NODE_TOML_PATH, PKI_DIR,
};

/// EC2's user-data limit (16 KiB); other clouds allow more, so it is a warning.
pub const EC2_LIMIT: usize = 16 * 1024;

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `node.toml` for kiln-firstboot (NoCloud seed, boot partition, any user-data field).
    Toml,
    /// An Ignition config for Fedora CoreOS and Flatcar.
    Ignition,
    /// A `#cloud-config` for cloud-init distros.
    CloudConfig,
}

impl Format {
    /// Every value, in the order `--help` lists them.
    pub const ALL: [Format; 3] = [Format::Toml, Format::Ignition, Format::CloudConfig];

    /// What `--help` says of this value.
    pub fn help(self) -> &'static str {
        match self {
            Format::Toml => "`node.toml` for kiln-firstboot (NoCloud seed, boot partition, any user-data field)",
            Format::Ignition => "An Ignition config for Fedora CoreOS and Flatcar",
            Format::CloudConfig => "A `#cloud-config` for cloud-init distros",
        }
    }

    /// The spelling used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Toml => "toml",
            Format::Ignition => "ignition",
            Format::CloudConfig => "cloud-config",
        }
    }
}

/// One file the user-data places on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFile {
    /// Absolute path on the node.
    pub path: String,
    /// Content.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// The PKI a role receives: (file name, `[pki]` key, secret?).
fn pki_files(role: Role) -> Vec<(&'static str, bool)> {
    let mut v = vec![("ca.crt", false)];
    if role.is_control_plane() {
        v.extend([
            ("ca.key", true),
            ("front-proxy-ca.crt", false),
            ("front-proxy-ca.key", true),
            ("etcd-ca.crt", false),
            ("etcd-ca.key", true),
            ("sa.key", true),
            ("sa.pub", false),
        ]);
    }
    v
}

/// Builds the node description and, unless `inline`, the PKI files it points at.
pub fn node_config(
    cluster: &Cluster,
    role: Role,
    node_name: Option<&str>,
    inline: bool,
) -> Result<(NodeConfig, Vec<NodeFile>)> {
    let f = &cluster.file;
    let mut files = Vec::new();
    let mut pki = Pki::default();
    for (name, secret) in pki_files(role) {
        let text = if secret { cluster.secret(name)?.expose().to_string() } else { cluster.public(name)?.to_string() };
        let value = if inline {
            text.clone()
        } else {
            let path = format!("{PKI_DIR}/{name}");
            files.push(NodeFile {
                path: path.clone(),
                data: text.into_bytes(),
                mode: if secret { 0o600 } else { 0o644 },
            });
            path
        };
        match name {
            "ca.crt" => pki.ca_cert = Some(value),
            "ca.key" => pki.ca_key = Some(Secret(value)),
            "front-proxy-ca.crt" => pki.front_proxy_ca_cert = Some(value),
            "front-proxy-ca.key" => pki.front_proxy_ca_key = Some(Secret(value)),
            "etcd-ca.crt" => pki.etcd_ca_cert = Some(value),
            "etcd-ca.key" => pki.etcd_ca_key = Some(Secret(value)),
            "sa.key" => pki.sa_key = Some(Secret(value)),
            _ => pki.sa_pub = Some(value),
        }
    }
    let config = NodeConfig {
        cluster: Some(ClusterSection {
            name: Some(f.name.clone()),
            kubernetes_version: Some(f.kubernetes_version.clone()),
            control_plane_endpoint: Some(f.control_plane_endpoint.clone()),
            pod_subnet: Some(f.pod_subnet.clone()),
            service_subnet: Some(f.service_subnet.clone()),
            dns_domain: Some(f.dns_domain.clone()),
            ca_cert_hashes: Some(f.ca_cert_hashes.clone()),
            bootstrap_token: Some(cluster.token()?),
            token_ttl: Some(f.token_ttl.clone()),
            ..ClusterSection::default()
        }),
        node: Some(Node { role: Some(role), name: node_name.map(str::to_string), ..Node::default() }),
        pki: Some(pki),
    };
    Ok((config, files))
}

/// The node's files: `node.toml` (0600, it holds the token) first, then the PKI.
pub fn node_files(config: &NodeConfig, pki: Vec<NodeFile>) -> Vec<NodeFile> {
    let mut files =
        vec![NodeFile { path: NODE_TOML_PATH.to_string(), data: config.to_toml().into_bytes(), mode: 0o600 }];
    files.extend(pki);
    files
}

/// An Ignition config placing `files` and enabling `kiln-firstboot.service`.
pub fn ignition(files: &[NodeFile], version: &str) -> Result<serde_json::Value> {
    let mut config = ignition::Config::new(version)?;
    config.storage.files = files.iter().map(|f| ignition::File::inline(&f.path, &f.data, f.mode)).collect();
    config.systemd.units = vec![ignition::Unit::enabled(kiln_firstboot::contract::unit::UNIT_NAME)];
    config.to_value()
}

/// A `#cloud-config` placing `files` and, with `image`, bringing kiln's
/// image onto a stock cloud image first ([`install_script`]); without one, the
/// machine must already be a kiln image (kiln-firstboot.service installed).
pub fn cloud_config(files: &[NodeFile], image: Option<&PublishedImage>) -> String {
    let mut y =
        String::from("#cloud-config\n# Written by kiln userdata. Holds secrets: treat it like a key.\nwrite_files:\n");
    let mut all = files.to_vec();
    if let Some(image) = image {
        all.push(NodeFile { path: INSTALLER_PATH.into(), data: install_script(image).into_bytes(), mode: 0o700 });
    }
    for f in &all {
        y.push_str(&format!(
            "  - path: {}\n    owner: root:root\n    permissions: '{:04o}'\n    encoding: gz+b64\n    content: {}\n",
            f.path,
            f.mode,
            b64(&gzip(&f.data))
        ));
    }
    // runcmd runs once per instance, in cloud-final (after write_files).
    match image {
        Some(_) => y.push_str(&format!("runcmd:\n  - [{INSTALLER_PATH}]\n")),
        None => y.push_str(&format!(
            "runcmd:\n  - [systemctl, enable, --now, --no-block, {}]\n",
            kiln_firstboot::contract::unit::UNIT_NAME
        )),
    }
    y
}

/// Where the cloud-config writes the image installer on the node.
pub const INSTALLER_PATH: &str = "/var/lib/kiln/install-image";

/// A kiln image tarball as it will be served: the file built by `kiln build`,
/// its URL under `--base-url`, and its size and sha256 read from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedImage {
    /// The URL the node downloads the tarball from.
    pub url: String,
    /// sha256 of the tarball (hex).
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    /// `true` for a `.tar.zst`, `false` for a `.tar.gz`.
    pub zstd: bool,
}

impl PublishedImage {
    /// Reads the tarball `file` (from `kiln build --format tar` or `tar.zst`)
    /// that will be served at `base_url/<its file name>`.
    pub fn read(file: &std::path::Path, base_url: &str) -> Result<PublishedImage> {
        let name = file.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let zstd = name.ends_with(".tar.zst");
        if !zstd && !name.ends_with(".tar.gz") {
            return Err(Error::config(format!(
                "--image {}: a cloud-config installs a kiln tarball (<profile>-<arch>.tar.gz or .tar.zst from `kiln build --format tar`); an Ignition image config (.ign) goes with --format ignition",
                file.display()
            )));
        }
        if !base_url.starts_with("https://") && !base_url.starts_with("http://") {
            return Err(Error::config(format!(
                "--base-url {base_url}: cloud-init's nodes download the image over http:// or https://; give the URL dist/ is served from"
            )));
        }
        let (size, sha256) = crate::io::hash_regular(file).map_err(|e| {
            Error::config(format!("--image {}: {e}; build it with `kiln build --format tar`", file.display()))
        })?;
        let url = format!("{}/{}", base_url.trim_end_matches('/'), percent_encode_name(&name));
        Ok(PublishedImage { url, sha256, size, zstd })
    }
}

/// A file name as one URL path segment (RFC 3986 unreserved characters kept).
fn percent_encode_name(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A single-quoted POSIX shell word.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The default bound on the whole download (retries included), in seconds;
/// `KILN_INSTALL_TIMEOUT=SECONDS` overrides it when the script is run by hand.
pub const INSTALL_TIMEOUT_SECS: u32 = 900;

/// The installer's body: python3 (cloud-init's own interpreter, so present
/// wherever the script runs), fed to `python3 -` by [`install_script`].
const INSTALLER_PY: &str = include_str!("install_image.py");

/// The script the cloud-config runs (once per instance, from cloud-final) on a
/// stock cloud image: download the tarball with python3 within a wall-clock
/// bound ([`INSTALL_TIMEOUT_SECS`]), refuse it unless its sha256 is the pinned
/// one, unpack it into a staging directory beside the download in
/// `/var/lib/kiln` (the target's filesystem), then move it into place:
/// everything outside `etc/systemd` first, the unit files next, the links that
/// enable units last, and only then record the sha256; the download and the
/// staging directory are removed on every exit and by the next run after a
/// kill. Every path is resolved inside the root as chroot would (a link's
/// absolute target starts at the root, `..` stops there), so nothing lands
/// outside it. Then let systemd load the units, modules and sysctls the image
/// carries, and start containerd (if the image has its unit) and
/// kiln-firstboot without waiting. Every step logs `kiln-install: …` to the
/// journal (cloud-final's output).
///
/// `KILN_INSTALL_ROOT=DIR` installs into another root instead of `/` (a
/// mounted disk image, or kiln's tests) and then leaves systemd alone.
pub fn install_script(image: &PublishedImage) -> String {
    // Comment lines stripped: user-data is small (EC2 allows 16 KiB).
    let py: String =
        INSTALLER_PY.lines().filter(|l| !l.trim_start().starts_with('#')).flat_map(|l| [l, "\n"]).collect();
    let (kind, tool) = if image.zstd {
        ("zst", "\n  command -v zstd >/dev/null 2>&1 || fail \"zstd is missing: this image is a .tar.zst\"")
    } else {
        ("gz", "")
    };
    format!(
        r#"#!/bin/sh
# Written by kiln userdata: installs kiln's node image, then starts kiln-firstboot.
set -eu
url={url}
sha256={sha}
size={size}
root=${{KILN_INSTALL_ROOT:-/}}
timeout=${{KILN_INSTALL_TIMEOUT:-{timeout}}}
log() {{ echo "kiln-install: $*"; }}
fail() {{ log "$*"; exit 1; }}
command -v python3 >/dev/null 2>&1 || fail "python3 is missing: this script needs python3 (cloud-init's own interpreter)"{tool}
# The installer proper: builder/src/install_image.py in kiln's source (here without its comments).
python3 - "$url" "$sha256" "$size" "$root" {kind} "$timeout" "$0" <<'KILN_INSTALLER_PY' || exit $?
{py}KILN_INSTALLER_PY
if [ "$root" != / ]; then
  log "installed into $root; systemd there starts kiln-firstboot when it boots"
  exit 0
fi
# Units, modules-load.d and sysctl.d from the image (daemon-reload also
# re-reads system.conf.d: systemd commit 06af2a04, "Reload manager defaults
# at daemon-reload").
systemctl daemon-reload
systemctl restart systemd-modules-load.service systemd-sysctl.service || log "modules/sysctls: kiln-firstboot sets them itself"
start="{unit}"
[ ! -f /etc/systemd/system/containerd.service ] || start="containerd.service $start"
# timers.target.wants is read at boot only: start the CSR-approval timer now too.
[ ! -f /etc/systemd/system/{timer} ] || start="$start {timer}"
log "starting $start"
systemctl start --no-block $start
"#,
        url = sh_quote(&image.url),
        sha = sh_quote(&image.sha256),
        size = image.size,
        timeout = INSTALL_TIMEOUT_SECS,
        unit = kiln_firstboot::contract::unit::UNIT_NAME,
        timer = kiln_firstboot::contract::unit::APPROVE_TIMER,
    )
}

/// Renders a role's user-data in `format` (a cloud-config that installs
/// `image` first, if one is given).
pub fn render(
    cluster: &Cluster,
    role: Role,
    node: Option<&str>,
    format: Format,
    ignition_version: &str,
    image: Option<&PublishedImage>,
) -> Result<Vec<u8>> {
    let inline = format == Format::Toml;
    let (config, pki) = node_config(cluster, role, node, inline)?;
    Ok(match format {
        Format::Toml => format!(
            "# kiln-firstboot node description for a {} node of cluster {}. Holds secrets.\n{}",
            role.as_str(),
            cluster.file.name,
            config.to_toml()
        )
        .into_bytes(),
        Format::Ignition => {
            let doc = ignition(&node_files(&config, pki), ignition_version)?;
            let mut s = serde_json::to_string_pretty(&doc).map_err(|e| Error::build(e.to_string()))?;
            s.push('\n');
            s.into_bytes()
        }
        Format::CloudConfig => cloud_config(&node_files(&config, pki), image).into_bytes(),
    })
}

/// Combines an image config (`kiln build --format ignition`) with a node's
/// Ignition user-data into one config: what a user pastes into a cloud console
/// or hands to `coreos-installer install -i`.
pub fn combine(image_path: &std::path::Path, node: &[u8]) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(image_path).map_err(|e| {
        Error::config(format!("--image {}: {e}; build it with `kiln build --format ignition`", image_path.display()))
    })?;
    let image: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::config(format!(
            "--image {}:{}:{}: not an Ignition config: {e}",
            image_path.display(),
            e.line(),
            e.column()
        ))
    })?;
    let node: serde_json::Value = serde_json::from_slice(node).map_err(|e| Error::build(e.to_string()))?;
    if image["ignition"]["version"] != node["ignition"]["version"] {
        return Err(Error::config(format!(
            "--image {} is Ignition {} but the user-data is {}; pass the same --ignition-version to both",
            image_path.display(),
            image["ignition"]["version"],
            node["ignition"]["version"]
        )));
    }
    let merged = ignition::merge(image, &node)?;
    let mut s = serde_json::to_string_pretty(&merged).map_err(|e| Error::build(e.to_string()))?;
    s.push('\n');
    Ok(s.into_bytes())
}

/// Most bytes of `etc/kiln/image.toml` read from an `--image` (kiln writes a
/// few hundred).
const IMAGE_TOML_MAX: u64 = 64 * 1024;

/// The defaults baked into an `--image` (`/etc/kiln/image.toml`): from the
/// tarball's `etc/kiln/image.toml` (`.tar.gz`, `.tar.zst`) or the inline file
/// of an Ignition image config (`.ign`).
pub fn image_defaults(image: &std::path::Path) -> Result<kiln_firstboot::contract::image::ImageDefaults> {
    use kiln_firstboot::contract::image::{ImageDefaults, IMAGE_TOML_PATH};
    let bad = |why: String| Error::config(format!("--image {}: {why}", image.display()));
    let rebuild = rebuild_hint(image);
    let data = image_file(image, IMAGE_TOML_PATH, IMAGE_TOML_MAX)?.ok_or_else(|| {
        if rebuild.ends_with("ignition") {
            bad(format!("holds no {IMAGE_TOML_PATH}: not a kiln image config; build it with `{rebuild}`"))
        } else {
            let member = IMAGE_TOML_PATH.trim_start_matches('/');
            bad(format!("holds no {member}: not a kiln image; build it with `{rebuild}`"))
        }
    })?;
    let text = String::from_utf8(data).map_err(|_| bad(format!("its {IMAGE_TOML_PATH} is not UTF-8")))?;
    ImageDefaults::from_toml(&text)
        .map_err(|e| bad(format!("its {IMAGE_TOML_PATH} does not parse ({e}); rebuild it with `{rebuild}`")))
}

fn rebuild_hint(image: &std::path::Path) -> &'static str {
    if image.to_string_lossy().ends_with(".ign") {
        "kiln build --format ignition"
    } else {
        "kiln build --format tar"
    }
}

/// The file at `path` (absolute, as on the node) in an `--image`: a member of
/// the tarball (`.tar.gz`, `.tar.zst`) or an inline file of an Ignition image
/// config (`.ign`), at most `max` bytes; `None` when the image has none.
fn image_file(image: &std::path::Path, path: &str, max: u64) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let name = image.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let bad = |why: String| Error::config(format!("--image {}: {why}", image.display()));
    let rebuild = rebuild_hint(image);
    let file = crate::io::open_regular(image).map_err(|e| bad(format!("{e}; build it with `{rebuild}`")))?;
    if name.ends_with(".ign") {
        let v: serde_json::Value = serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| {
            Error::config(format!(
                "--image {}:{}:{}: not an Ignition config: {e}",
                image.display(),
                e.line(),
                e.column()
            ))
        })?;
        return ignition::inline_file(&v, path, max).map_err(bad);
    }
    let reader: Box<dyn Read> = if name.ends_with(".tar.zst") {
        Box::new(zstd::stream::read::Decoder::new(file).map_err(|e| bad(e.to_string()))?)
    } else {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file)))
    };
    let mut archive = tar::Archive::new(reader);
    let unreadable = |e: std::io::Error| bad(format!("not a readable kiln tarball ({e}); build it with `{rebuild}`"));
    let want = path.trim_start_matches('/');
    for entry in archive.entries().map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let at = entry.path().map_err(unreadable)?.to_string_lossy().trim_start_matches("./").to_string();
        if at == want {
            let mut data = Vec::new();
            entry.take(max).read_to_end(&mut data).map_err(|e| bad(format!("its {want}: {e}")))?;
            return Ok(Some(data));
        }
    }
    Ok(None)
}

/// Row 35 against the cluster: the CNI manifest an `--image` carries
/// ([`crate::inputs::profile::CNI_MANIFEST_PATH`], applied by the init node) must give
/// pods addresses inside cluster.toml's `pod_subnet` ([`crate::inputs::cni_manifest::check`],
/// the rule kiln-firstboot applies again on the init node before kubeadm).
/// cluster.toml wins: the profile's `[cni_manifest] pod_subnet` is only what
/// `kiln check` expects of the manifest before any cluster exists.
pub fn check_image_cni(image: &std::path::Path, cluster: &Cluster) -> Result<()> {
    let path = crate::inputs::profile::CNI_MANIFEST_PATH;
    let Some(data) = image_file(image, path, crate::inputs::profile::CNI_MANIFEST_MAX)? else {
        return Ok(());
    };
    let subnet = &cluster.file.pod_subnet;
    crate::inputs::cni_manifest::check(&String::from_utf8_lossy(&data), subnet).map(|_| ()).map_err(|errors| {
        Error::config(format!(
            "--image {}: its CNI manifest {path} does not fit cluster {}'s pod_subnet {subnet} ({}): {}; kiln-firstboot would refuse it on the init node. Set the profile's [cni_manifest] pod_subnet to {subnet}, fix the manifest, `kiln pin` and rebuild the image — or use a cluster made with `kiln cluster init --pod-subnet` of the manifest's network",
            image.display(),
            cluster.file.name,
            cluster.dir.join("cluster.toml").display(),
            crate::inputs::cni_manifest::at(path, &errors)
        ))
    })
}

/// Refuses an `--image` whose kubeadm and kubelet cannot bring `cluster`'s
/// Kubernetes version up for `role`: the rule kiln-firstboot applies at boot
/// (`kiln_firstboot::contract::validate::version::skew`, kubeadm's skew policy), checked here so
/// the mistake is caught where it is made instead of on the node.
pub fn check_image_versions(image: &std::path::Path, cluster: &Cluster, role: Role) -> Result<()> {
    use kiln_firstboot::contract::validate;
    let d = image_defaults(image)?;
    let bad = |why: String| Error::config(format!("--image {}: {why}", image.display()));
    let kubeadm = validate::version::parse(&d.kubeadm_version).map_err(|e| bad(format!("its kubeadm_version: {e}")))?;
    let kubelet = validate::version::parse(&d.kubelet_version).map_err(|e| bad(format!("its kubelet_version: {e}")))?;
    let version = &cluster.file.kubernetes_version;
    let wanted = validate::version::parse(version).map_err(|e| {
        Error::config(format!("{}: kubernetes_version: {e}", cluster.dir.join("cluster.toml").display()))
    })?;
    validate::version::skew(&kubeadm, &kubelet, &wanted, role != Role::Init).map_err(|e| {
        bad(format!(
            "image {} cannot serve cluster {} (kubernetes_version = \"{version}\"): {e}; kiln-firstboot would refuse it at boot. Pass an image built for {version} (a profile pinning that Kubernetes version), or use a cluster of the image's version",
            d.profile, cluster.file.name
        ))
    })
}
