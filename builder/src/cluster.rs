//! `kiln cluster`: a cluster defined once, before any machine boots.
//!
//! `kiln cluster init` creates the CAs kubeadm expects (cluster, front-proxy,
//! etcd), the service-account key pair and a bootstrap token, the way Cluster
//! API's kubeadm bootstrap provider pre-generates them, so that control planes
//! receive CA material directly (no `--upload-certs` two-hour window) and
//! workers can be given the discovery hash before the cluster exists.
//!
//! Layout of a cluster directory:
//!
//! ```text
//! cluster.toml            public: name, endpoint, version, subnets, CA hash, token id
//! pki/ca.crt  pki/front-proxy-ca.crt  pki/etcd-ca.crt  pki/sa.pub      public
//! secrets/    (0700)      ca.key front-proxy-ca.key etcd-ca.key sa.key bootstrap-token (0600)
//! ```

use crate::error::{Error, IoContext, Result};
use crate::hash;
use crate::inputs::version::Version;
use kiln_firstboot::contract::node::{is_bootstrap_token, Secret};
use kiln_firstboot::contract::validate;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Key algorithm for the CAs and the service-account key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// ECDSA P-256: the default. Keys are ~230 bytes, so a control plane's
    /// user-data stays far below EC2's 16 KiB; kubeadm loads ECDSA CA and
    /// service-account keys (`pkiutil.TryLoadKeyFromDisk`, `keyutil.ParsePrivateKeyPEM`)
    /// and generates ECDSA-P256 itself with `encryptionAlgorithm` (v1beta4).
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// RSA 2048: kubeadm's own default, for tooling that expects RSA.
    #[serde(rename = "rsa-2048")]
    Rsa2048,
}

impl KeyAlgorithm {
    /// Every value, in the order `--help` lists them.
    pub const ALL: [KeyAlgorithm; 2] = [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048];

    /// What `--help` says of this value.
    pub fn help(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ECDSA P-256: the default. Keys are ~230 bytes, so a control plane's user-data stays far below EC2's 16 KiB; kubeadm loads ECDSA CA and service-account keys (`pkiutil.TryLoadKeyFromDisk`, `keyutil.ParsePrivateKeyPEM`) and generates ECDSA-P256 itself with `encryptionAlgorithm` (v1beta4)",
            KeyAlgorithm::Rsa2048 => "RSA 2048: kubeadm's own default, for tooling that expects RSA",
        }
    }

    /// The spelling used on the command line and in cluster.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::Rsa2048 => "rsa-2048",
        }
    }
}

/// `cluster.toml`: the public half of a cluster definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Cluster name.
    pub name: String,
    /// Control-plane Kubernetes version.
    pub kubernetes_version: String,
    /// `host:port` (IPv6 `[addr]:port`) every node reaches the API server at.
    pub control_plane_endpoint: String,
    /// Pod network CIDR.
    pub pod_subnet: String,
    /// Service network CIDR.
    pub service_subnet: String,
    /// Cluster DNS domain.
    pub dns_domain: String,
    /// Key algorithm of the CAs.
    pub key_algorithm: KeyAlgorithm,
    /// Discovery hashes (`sha256:` + hex of the CA's SubjectPublicKeyInfo).
    pub ca_cert_hashes: Vec<String>,
    /// Public id of the current bootstrap token (the part before the dot).
    pub token_id: String,
    /// Lifetime the init node gives the token (Go duration; `0` never expires).
    pub token_ttl: String,
}

/// Options for `kiln cluster init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Cluster name.
    pub name: String,
    /// `HOST[:PORT]`.
    pub endpoint: String,
    /// Kubernetes version.
    pub kubernetes_version: String,
    /// Pod CIDR.
    pub pod_subnet: String,
    /// Service CIDR.
    pub service_subnet: String,
    /// DNS domain.
    pub dns_domain: String,
    /// Key algorithm.
    pub key_algorithm: KeyAlgorithm,
    /// Token lifetime.
    pub token_ttl: String,
    /// Output directory.
    pub out: PathBuf,
    /// Replace an existing cluster directory.
    pub force: bool,
}

/// The CA files of a cluster: (certificate in pki/, key in secrets/, common name).
pub const CAS: [(&str, &str, &str); 3] = [
    ("ca.crt", "ca.key", "kubernetes"),
    ("front-proxy-ca.crt", "front-proxy-ca.key", "front-proxy-ca"),
    ("etcd-ca.crt", "etcd-ca.key", "etcd-ca"),
];

/// A loaded cluster directory.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The directory.
    pub dir: PathBuf,
    /// `cluster.toml`.
    pub file: ClusterFile,
}

/// Fills `buf` from the OS CSPRNG.
fn random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::build(format!("the OS random number generator failed: {e}")))
}

/// A new bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}` from the OS CSPRNG
/// (kubeadm `bootstraputil.BootstrapTokenRegexp`; rejection sampling keeps it uniform).
pub fn new_token() -> Result<Secret> {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(23);
    let mut buf = [0u8; 64];
    while out.len() < 23 {
        random(&mut buf)?;
        for b in buf {
            if out.len() == 23 {
                break;
            }
            if out.len() == 6 {
                out.push('.');
            }
            // 252 = 7 * 36: bytes above it would bias the first letters.
            if b < 252 {
                out.push(ALPHABET[(b % 36) as usize] as char);
            }
        }
    }
    debug_assert!(is_bootstrap_token(&out));
    Ok(Secret(out))
}

/// Normalises `HOST[:PORT]` to `host:port` (IPv6 as `[addr]:port`, default
/// port 6443, DNS names lower-cased) with kubeadm's rules
/// ([`kiln_firstboot::contract::validate::endpoint::parse`]).
pub fn normalize_endpoint(s: &str) -> Result<String> {
    validate::endpoint::parse(s).map(|e| e.to_string()).map_err(|m| Error::config(format!("--endpoint: {m}")))
}

/// A parsed CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` or `x::/n`.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = s.split_once('/')?;
        let addr: IpAddr = a.parse().ok()?;
        let prefix: u8 = p.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    fn bits(&self) -> (u128, u8) {
        match self.addr {
            IpAddr::V4(v) => (u32::from(v) as u128, 32),
            IpAddr::V6(v) => (u128::from(v), 128),
        }
    }

    /// Whether two networks share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        let ((a, wa), (b, wb)) = (self.bits(), other.bits());
        if wa != wb {
            return false;
        }
        let p = self.prefix.min(other.prefix);
        if p == 0 {
            return true;
        }
        let shift = wa - p;
        (a >> shift) == (b >> shift)
    }
}

impl Cidr {
    /// `addr/prefix` as written.
    pub fn show(&self) -> String {
        format!("{}/{}", self.addr, self.prefix)
    }

    /// Address bits of the family: 32 or 128.
    fn width(&self) -> u8 {
        if self.addr.is_ipv4() {
            32
        } else {
            128
        }
    }
}

/// Parses `CIDR` or a dual-stack pair `CIDR,CIDR` (one IPv4 and one IPv6, as
/// kubeadm's `ValidateIPNetFromString` with `netutils.IsDualStackCIDRs` wants).
pub fn subnets(flag: &str, s: &str, example: &str) -> Result<Vec<Cidr>> {
    let parts: Vec<&str> = s.split(',').collect();
    let mut out = Vec::new();
    for p in &parts {
        let c = Cidr::parse(p.trim()).ok_or_else(|| {
            Error::config(format!(
                "{flag} `{s}`: `{p}` is not a CIDR like {example} (dual-stack: one IPv4 and one IPv6 CIDR, comma-separated)"
            ))
        })?;
        out.push(c);
    }
    let dual_ok = out.len() == 1 || (out.len() == 2 && out[0].addr.is_ipv4() != out[1].addr.is_ipv4());
    if !dual_ok {
        return Err(Error::config(format!(
            "{flag} `{s}`: give one CIDR, or two for dual-stack (one IPv4 and one IPv6), as kubeadm accepts"
        )));
    }
    Ok(out)
}

/// `kiln cluster init`'s default `--pod-subnet` (and a profile's when its
/// `[cni_manifest]` names none), the same as kiln-firstboot's when node.toml
/// sets none.
pub const DEFAULT_POD_SUBNET: &str = kiln_firstboot::contract::node::DEFAULT_POD_SUBNET;
/// kubeadm's `MaximumBitsForServiceSubnet = 20` (cmd/kubeadm/app/constants/constants.go):
/// a service subnet has at most 2^20 addresses.
pub const MAX_SERVICE_SUBNET_BITS: u8 = 20;
/// kube-controller-manager's default `--node-cidr-mask-size-ipv4` / `-ipv6`
/// (`defaultNodeMaskCIDRIPv4 = 24`, `defaultNodeMaskCIDRIPv6 = 64` in
/// cmd/kubeadm/app/apis/kubeadm/validation/validation.go `getClusterNodeMask`).
pub const NODE_MASK: (u8, u8) = (24, 64);
/// kubeadm's `PodSubnetNodeMaskMaxDiff = 16` (constants.go): at most 2^16 node ranges.
pub const POD_SUBNET_NODE_MASK_MAX_DIFF: u8 = 16;

/// kubeadm's `ValidateServiceSubnetSize`: for 32-bit addresses the mask must
/// be >= /12, for 128-bit >= /108.
fn check_service_subnets(svc: &[Cidr]) -> Result<()> {
    for c in svc {
        let min = c.width() - MAX_SERVICE_SUBNET_BITS;
        if c.prefix < min {
            return Err(Error::config(format!(
                "--service-subnet {} is wider than kubeadm allows: for IPv{} the prefix must be /{min} or longer (kubeadm's MaximumBitsForServiceSubnet = {MAX_SERVICE_SUBNET_BITS}); e.g. {}",
                c.show(),
                if c.addr.is_ipv4() { 4 } else { 6 },
                if c.addr.is_ipv4() { "10.96.0.0/12" } else { "fd00:10:96::/108" }
            )));
        }
    }
    Ok(())
}

/// A `--pod-subnet` (cluster.toml `pod_subnet`, a profile's `[cni_manifest]
/// pod_subnet`) by kubeadm's rules: one CIDR or a dual-stack pair
/// ([`subnets`]), each holding at least one node's range and at most 2^16.
pub fn pod_subnet(s: &str) -> Result<Vec<Cidr>> {
    let pod = subnets("--pod-subnet", s, DEFAULT_POD_SUBNET)?;
    check_pod_subnets(&pod)?;
    Ok(pod)
}

/// kubeadm's `ValidatePodSubnetNodeMask` with the default node masks: the
/// pod subnet holds at least one node's range and at most 2^16 of them.
fn check_pod_subnets(pod: &[Cidr]) -> Result<()> {
    for c in pod {
        let (node, family) = if c.addr.is_ipv4() { (NODE_MASK.0, 4) } else { (NODE_MASK.1, 6) };
        if c.prefix > node {
            return Err(Error::config(format!(
                "--pod-subnet {} is narrower than one node's pod range (/{node}, kube-controller-manager's default --node-cidr-mask-size-ipv{family}; kubeadm's ValidatePodSubnetNodeMask refuses it): use /{node} or wider, e.g. {}",
                c.show(),
                if family == 4 { "10.244.0.0/16" } else { "fd00:10:244::/56" }
            )));
        }
        if node - c.prefix > POD_SUBNET_NODE_MASK_MAX_DIFF {
            return Err(Error::config(format!(
                "--pod-subnet {} is wider than kubeadm allows: with node ranges of /{node} the prefix must be /{} or longer (kubeadm's PodSubnetNodeMaskMaxDiff = {POD_SUBNET_NODE_MASK_MAX_DIFF})",
                c.show(),
                node - POD_SUBNET_NODE_MASK_MAX_DIFF
            )));
        }
    }
    Ok(())
}

/// Creates `path` with exactly `mode` (created at most that open, then set:
/// the umask only narrows, and 000 would leave it wider).
fn make_dir(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().mode(mode & 0o700).create(path).io_ctx(path.display())?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).io_ctx(path.display())
}

/// Marks the temporary directories `kiln cluster init` writes beside the
/// cluster directory: `.NAME.kiln-tmp-PID`, with the lock file
/// `.NAME.kiln-tmp-PID.lock` its writer holds with `flock(2)` while it lives.
const TMP_MARK: &str = ".kiln-tmp-";

/// Paths to remove when SIGINT, SIGTERM or SIGHUP arrives (the temporary
/// directories being written and their lock files). Held while a directory
/// is committed, so a signal waits for the rename to finish.
static ON_SIGNAL: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
/// Write end of the pipe the signal handler wakes the cleanup thread with.
static SIGNAL_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(std::sync::atomic::Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; `b` outlives the call.
        unsafe { libc::write(fd, std::ptr::addr_of!(b).cast(), 1) };
    }
}

/// Installs (once) handlers for SIGINT, SIGTERM and SIGHUP that remove the
/// paths in [`ON_SIGNAL`] and exit with 128 + the signal, as the shell reports a
/// kill. The handler only writes a byte to a pipe; a thread does the work.
fn remove_on_signal() -> Result<()> {
    static ONCE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 fills the two descriptors of the array it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(format!("creating a pipe: {}", std::io::Error::last_os_error()));
        }
        SIGNAL_PIPE.store(fds[1], std::sync::atomic::Ordering::Relaxed);
        let read_fd = fds[0];
        std::thread::spawn(move || loop {
            let mut b = 0u8;
            // SAFETY: reads one byte into `b` from the pipe this thread owns.
            let n = unsafe { libc::read(read_fd, std::ptr::addr_of_mut!(b).cast(), 1) };
            if n == 1 {
                let paths = ON_SIGNAL.lock().map(|g| g.clone()).unwrap_or_default();
                for p in &paths {
                    remove_while_written(p);
                }
                std::process::exit(128 + i32::from(b));
            }
        });
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: a zeroed sigaction with a handler that only calls write(2).
            let ok = unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut()) == 0
            };
            if !ok {
                return Err(format!("installing a signal handler: {}", std::io::Error::last_os_error()));
            }
        }
        Ok(())
    })
    .clone()
    .map_err(Error::build)
}

/// Removes `p` (a directory tree or a file) while the main thread may still
/// be writing into it: `remove_dir_all` fails with `ENOTEMPTY` when a key is
/// created between its scan of a directory and that directory's `rmdir`, which
/// would leave CA keys behind. So it is retried until `p` is gone; each retry
/// removes what was written meanwhile, and once `p` itself is gone the writer's
/// next file fails with `ENOENT` (the writer never recreates `p`). Bounded at
/// 1000 tries.
fn remove_while_written(p: &Path) {
    for _ in 0..1000 {
        if fs::symlink_metadata(p).is_err() || fs::remove_dir_all(p).or_else(|_| fs::remove_file(p)).is_ok() {
            return;
        }
    }
}

/// A temporary cluster directory (0700) and the lock that marks its writer
/// alive; removed when dropped unless committed, and on SIGINT/SIGTERM/SIGHUP.
struct TempDir {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: fs::File,
}

impl TempDir {
    fn create(parent: &Path, name: &str) -> Result<TempDir> {
        remove_on_signal()?;
        let dir = parent.join(format!(".{name}{TMP_MARK}{}", std::process::id()));
        let lock_path = parent.join(format!(".{name}{TMP_MARK}{}.lock", std::process::id()));
        let lock = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .io_ctx(lock_path.display())?;
        if !crate::io::try_lock(&lock) {
            return Err(Error::build(format!("{} is locked by another process", lock_path.display())));
        }
        if let Ok(mut g) = ON_SIGNAL.lock() {
            g.push(dir.clone());
            g.push(lock_path.clone());
        }
        let t = TempDir { dir, lock_path, _lock: lock };
        let _ = fs::remove_dir_all(&t.dir);
        make_dir(&t.dir, 0o700)?;
        Ok(t)
    }

    /// Moves the finished directory to `out` (0755), replacing a cluster
    /// there atomically (`RENAME_EXCHANGE`: the old one is in the temporary
    /// path until it is removed, so a kill at any point leaves one complete
    /// cluster at `out` and the next run removes the rest).
    fn commit(self, out: &Path) -> Result<()> {
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o755)).io_ctx(self.dir.display())?;
        let guard = ON_SIGNAL.lock();
        if fs::symlink_metadata(out).is_ok() {
            exchange(&self.dir, out)?;
        } else {
            fs::rename(&self.dir, out).io_ctx(out.display())?;
        }
        drop(guard);
        Ok(())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
        let _ = fs::remove_file(&self.lock_path);
        if let Ok(mut g) = ON_SIGNAL.lock() {
            g.retain(|p| *p != self.dir && *p != self.lock_path);
        }
    }
}

/// Swaps two paths atomically (renameat2 `RENAME_EXCHANGE`).
fn exchange(a: &Path, b: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| Error::config(format!("{}: a NUL byte in the path", p.display())))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: two NUL-terminated paths that outlive the call.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    if r != 0 {
        return Err(Error::build(format!(
            "replacing {} with {}: {}",
            b.display(),
            a.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Removes what killed `kiln cluster init`s left in `parent`: a temporary
/// directory whose lock file nobody holds (exact, whatever the PID is now),
/// a lock file without its directory, and a directory from an older kiln
/// (no lock file) whose PID no longer runs.
fn remove_stale_temps(parent: &Path) {
    use crate::io::{probe_lock, LockState};
    let Ok(entries) = fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((_, pid)) = name.strip_prefix('.').and_then(|n| n.rsplit_once(TMP_MARK)) else { continue };
        if let Some(pid) = pid.strip_suffix(".lock") {
            if pid.bytes().all(|b| b.is_ascii_digit()) {
                if let LockState::Free(_held) = probe_lock(&e.path()) {
                    let dir = e.path().with_file_name(name.trim_end_matches(".lock"));
                    if fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                        let _ = fs::remove_dir_all(&dir);
                    }
                    let _ = fs::remove_file(e.path());
                }
            }
            continue;
        }
        let Ok(pid) = pid.parse::<u32>() else { continue };
        let lock = e.path().with_file_name(format!("{name}.lock"));
        let is_dir = fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_dir());
        if is_dir && !lock.exists() && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).io_ctx(path.display())?;
    f.write_all(data).io_ctx(path.display())?;
    f.sync_all().io_ctx(path.display())?;
    // The umask may have narrowed the mode; set it exactly.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).io_ctx(path.display())
}

fn new_key(alg: KeyAlgorithm) -> Result<KeyPair> {
    let err = |e: &dyn std::fmt::Display| Error::build(format!("generating a key: {e}"));
    match alg {
        KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| err(&e)),
        KeyAlgorithm::Rsa2048 => {
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).map_err(|e| err(&e))?;
            let pem = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).map_err(|e| err(&e))?;
            KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).map_err(|e| err(&e))
        }
    }
}

/// A self-signed CA as kubeadm creates them (`pkiutil.NewSelfSignedCACert`):
/// CA:TRUE, keyCertSign + digitalSignature + keyEncipherment, NotBefore
/// backdated 5 minutes for clock skew, valid 10 years.
fn new_ca(common_name: &str, key: &KeyPair) -> Result<String> {
    let err = |e: rcgen::Error| Error::build(format!("creating CA `{common_name}`: {e}"));
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(3650);
    let mut serial = [0u8; 16];
    random(&mut serial)?;
    serial[0] &= 0x7f; // positive
    params.serial_number = Some(SerialNumber::from(serial.to_vec()));
    Ok(params.self_signed(key).map_err(err)?.pem())
}

/// `sha256:` + hex(SHA-256(DER SubjectPublicKeyInfo)): kubeadm's discovery hash
/// (`pubkeypin.Hash`), what `--discovery-token-ca-cert-hash` expects.
pub fn discovery_hash(key: &impl PublicKeyData) -> String {
    format!("sha256:{}", hash::hex(&Sha256::digest(key.subject_public_key_info())))
}

impl Cluster {
    /// `kiln cluster init`: creates the directory atomically.
    pub fn init(o: &InitOptions) -> Result<Cluster> {
        if o.name.is_empty() || !o.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(Error::config(format!("cluster name `{}` must be letters, digits, `-` or `_`", o.name)));
        }
        let version = crate::inputs::version::kubernetes(&o.kubernetes_version)
            .map_err(|m| Error::config(format!("--kubernetes-version: {m}")))?;
        let endpoint = normalize_endpoint(&o.endpoint)?;
        // kubeadm reads bootstrapTokens[].ttl with Go's time.ParseDuration; a
        // bad value would only surface on the init node at first boot.
        validate::duration::token_ttl(&o.token_ttl).map_err(|m| Error::config(format!("--token-ttl: {m}")))?;
        let pod = subnets("--pod-subnet", &o.pod_subnet, "10.244.0.0/16")?;
        let svc = subnets("--service-subnet", &o.service_subnet, "10.96.0.0/12")?;
        for p in &pod {
            if let Some(s) = svc.iter().find(|s| p.overlaps(s)) {
                return Err(Error::config(format!(
                    "--pod-subnet {} overlaps --service-subnet {}; pick disjoint ranges",
                    p.show(),
                    s.show()
                )));
            }
        }
        check_service_subnets(&svc)?;
        check_pod_subnets(&pod)?;
        if o.out.exists() && !o.force {
            return Err(Error::config(format!(
                "{} already exists; it holds a cluster's CA keys. Use another --out, or --force to replace it (nodes built for the old CA will not join)",
                o.out.display()
            )));
        }
        let parent = match o.out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).io_ctx(parent.display())?;
        remove_stale_temps(&parent);
        let tmp = TempDir::create(&parent, &o.name)?;
        Self::write_new(&tmp.dir, o, &version, &endpoint)?;
        tmp.commit(&o.out)?;
        Cluster::load(&o.out)
    }

    fn write_new(dir: &Path, o: &InitOptions, version: &Version, endpoint: &str) -> Result<()> {
        // Modes set exactly whatever the umask: the public pki/ 0755, secrets/ 0700.
        make_dir(&dir.join("pki"), 0o755)?;
        let secrets = dir.join("secrets");
        make_dir(&secrets, 0o700)?;
        let mut hashes = Vec::new();
        for (cert, key_file, cn) in CAS {
            let key = new_key(o.key_algorithm)?;
            let pem = new_ca(cn, &key)?;
            write_file(&dir.join("pki").join(cert), pem.as_bytes(), 0o644)?;
            write_file(&secrets.join(key_file), key.serialize_pem().as_bytes(), 0o600)?;
            if cn == "kubernetes" {
                hashes.push(discovery_hash(&key));
            }
        }
        let sa = new_key(o.key_algorithm)?;
        write_file(&secrets.join("sa.key"), sa.serialize_pem().as_bytes(), 0o600)?;
        write_file(&dir.join("pki/sa.pub"), sa.public_key_pem().as_bytes(), 0o644)?;
        let token = new_token()?;
        write_file(&secrets.join("bootstrap-token"), format!("{}\n", token.expose()).as_bytes(), 0o600)?;
        let file = ClusterFile {
            name: o.name.clone(),
            kubernetes_version: version.to_string(),
            control_plane_endpoint: endpoint.to_string(),
            pod_subnet: o.pod_subnet.clone(),
            service_subnet: o.service_subnet.clone(),
            dns_domain: o.dns_domain.clone(),
            key_algorithm: o.key_algorithm,
            ca_cert_hashes: hashes,
            token_id: token.expose()[..6].to_string(),
            token_ttl: o.token_ttl.clone(),
        };
        write_file(&dir.join("cluster.toml"), cluster_toml(&file).as_bytes(), 0o644)
    }

    /// Loads a cluster directory created by `kiln cluster init`.
    pub fn load(dir: &Path) -> Result<Cluster> {
        let path = dir.join("cluster.toml");
        let text = fs::read_to_string(&path).map_err(|e| {
            let hint = match similar_cluster_dir(dir) {
                Some(d) => format!("did you mean {}? Otherwise create", d.display()),
                None => "create".to_string(),
            };
            Error::config(format!(
                "{}: {e}; {hint} the cluster with `kiln cluster init NAME --endpoint HOST[:PORT] --kubernetes-version vX.Y.Z`",
                path.display()
            ))
        })?;
        let file: ClusterFile = toml::from_str(&text).map_err(|e| {
            Error::config(crate::inputs::location::at(
                &path,
                &text,
                e.span(),
                &crate::inputs::location::explain_toml_message(e.message()),
            ))
        })?;
        // A hand-edited cluster.toml must not hand nodes a TTL kubeadm cannot read.
        validate::duration::token_ttl(&file.token_ttl)
            .map_err(|m| Error::config(format!("{}: token_ttl: {m}", path.display())))?;
        let cluster = Cluster { dir: dir.to_path_buf(), file };
        cluster.check_pki()?;
        Ok(cluster)
    }

    /// Parses the CA material as kubeadm will (it may have been replaced by
    /// hand, e.g. with an existing CA): each CA certificate is a CA
    /// (basicConstraints CA:TRUE, keyUsage keyCertSign; kubeadm's
    /// `pkiutil.TryLoadCertFromDisk` + `validateSignedCert` path checks `IsCA`),
    /// each key is RSA or ECDSA (`pkiutil.TryLoadKeyFromDisk` refuses others),
    /// each key belongs to its certificate and `sa.key` to `sa.pub` (kubeadm
    /// does not check either: a mismatch gives certificates or tokens that do
    /// not verify), and `ca_cert_hashes` holds the CA's discovery hash.
    /// Files that are absent are left to the reader that needs them.
    pub fn check_pki(&self) -> Result<()> {
        for (cert, key, _) in CAS {
            let cert_path = self.dir.join("pki").join(cert);
            let Some(text) = read_pem_file(&cert_path)? else { continue };
            let spki = pki::ca_certificate(&text).map_err(|m| pki_error(&cert_path, &m))?;
            if cert == "ca.crt" {
                let hash = format!("sha256:{}", hash::hex(&Sha256::digest(&spki.der)));
                if !self.file.ca_cert_hashes.contains(&hash) {
                    return Err(Error::config(format!(
                        "{}: ca_cert_hashes does not hold {hash}, the discovery hash of {}; joining nodes would refuse the cluster: add it to ca_cert_hashes",
                        self.dir.join("cluster.toml").display(),
                        cert_path.display()
                    )));
                }
            }
            let key_path = self.dir.join("secrets").join(key);
            let Some(text) = read_pem_file(&key_path)? else { continue };
            let public = pki::private_key(&text).map_err(|m| pki_error(&key_path, &m))?;
            if public != spki.key {
                return Err(Error::config(format!(
                    "{} is not the private key of {}: put the certificate's own key there (or the certificate of this key)",
                    key_path.display(),
                    cert_path.display()
                )));
            }
        }
        let (sa_key, sa_pub) = (self.dir.join("secrets/sa.key"), self.dir.join("pki/sa.pub"));
        if let (Some(k), Some(p)) = (read_pem_file(&sa_key)?, read_pem_file(&sa_pub)?) {
            let private = pki::private_key(&k).map_err(|m| pki_error(&sa_key, &m))?;
            let public = pki::public_key(&p).map_err(|m| pki_error(&sa_pub, &m))?;
            if private != public {
                return Err(Error::config(format!(
                    "{} is not the public key of {}: service-account tokens signed with the key would not verify; derive it with `openssl pkey -in {} -pubout`",
                    sa_pub.display(),
                    sa_key.display(),
                    sa_key.display()
                )));
            }
        }
        Ok(())
    }

    /// Reads a public file under `pki/`.
    pub fn public(&self, name: &str) -> Result<String> {
        let p = self.dir.join("pki").join(name);
        fs::read_to_string(&p)
            .map_err(|e| Error::config(format!("{}: {e}; is the cluster directory complete?", p.display())))
    }

    /// Reads a secret under `secrets/`.
    pub fn secret(&self, name: &str) -> Result<Secret> {
        let p = self.dir.join("secrets").join(name);
        let text = fs::read_to_string(&p).map_err(|e| {
            Error::config(format!("{}: {e}; secrets/ must be the one `kiln cluster init` wrote", p.display()))
        })?;
        Ok(Secret(text))
    }

    /// The current bootstrap token.
    pub fn token(&self) -> Result<Secret> {
        let t = self.secret("bootstrap-token")?;
        let t = t.expose().trim().to_string();
        if !is_bootstrap_token(&t) {
            return Err(Error::config(format!(
                "{}/secrets/bootstrap-token is not a bootstrap token; run `kiln cluster rotate-token`",
                self.dir.display()
            )));
        }
        Ok(Secret(t))
    }

    /// `kiln cluster rotate-token`: a new token; CA material is untouched.
    pub fn rotate_token(&mut self) -> Result<Secret> {
        let token = new_token()?;
        let secret = format!("{}\n", token.expose());
        crate::io::write_atomic_exact(&self.dir.join("secrets/bootstrap-token"), secret.as_bytes(), 0o600)?;
        self.file.token_id = token.expose()[..6].to_string();
        crate::io::write_atomic_exact(&self.dir.join("cluster.toml"), cluster_toml(&self.file).as_bytes(), 0o644)?;
        Ok(token)
    }

    /// `kiln cluster show`: what the cluster is and what each role receives (no secrets).
    pub fn show(&self) -> String {
        let f = &self.file;
        format!(
            "cluster {name}\n  endpoint            {ep}\n  kubernetes          {v}\n  pod / service CIDR  {pod} / {svc}\n  dns domain          {dns}\n  key algorithm       {alg}\n  CA cert hash        {hash}\n  bootstrap token     {id}.<secret in {dir}/secrets/bootstrap-token> (ttl {ttl})\n\nwhat each role receives (kiln userdata --role …):\n  init           CA, front-proxy CA, etcd CA (certs + keys), sa.key + sa.pub, token (creates it), endpoint\n  control-plane  CA, front-proxy CA, etcd CA (certs + keys), sa.key + sa.pub, token, CA hash, endpoint\n  join           CA certificate, CA hash, token, endpoint (no private key)\n",
            name = f.name,
            ep = f.control_plane_endpoint,
            v = f.kubernetes_version,
            pod = f.pod_subnet,
            svc = f.service_subnet,
            dns = f.dns_domain,
            alg = f.key_algorithm.as_str(),
            hash = f.ca_cert_hashes.join(", "),
            id = f.token_id,
            ttl = f.token_ttl,
            dir = self.dir.display(),
        )
    }
}

/// The cluster directory beside `dir` (holding a `cluster.toml`) whose name
/// is closest to `dir`'s, for a "did you mean" on a typo.
fn similar_cluster_dir(dir: &Path) -> Option<PathBuf> {
    let name = dir.file_name()?.to_string_lossy().into_owned();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::read_dir(parent)
        .ok()?
        .flatten()
        .filter(|e| e.path().join("cluster.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .map(|n| (strsim::jaro_winkler(&name, &n), n))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| parent.join(n))
}

/// A PEM file of the cluster directory as text; `None` when it is absent.
fn read_pem_file(path: &Path) -> Result<Option<String>> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::config(format!("{}: {e}", path.display()))),
        Ok(m) if !m.is_file() => {
            return Err(Error::config(format!("{}: not a regular file; put the PEM file itself there", path.display())))
        }
        Ok(m) if m.len() > 1 << 20 => {
            return Err(Error::config(format!(
                "{}: {} bytes is too large for a PEM key or certificate",
                path.display(),
                m.len()
            )))
        }
        Ok(_) => {}
    }
    let bytes = fs::read(path).map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| Error::config(format!("{}: not PEM text (not UTF-8)", path.display())))
}

fn pki_error(path: &Path, m: &str) -> Error {
    Error::config(format!("{}: {m}", path.display()))
}

/// Parsing of CA certificates and keys as kubeadm loads them.
mod pki {
    use x509_parser::prelude::{FromDer, SubjectPublicKeyInfo, X509Certificate};

    /// A certificate's public key: the SubjectPublicKeyInfo DER and the key bits.
    pub struct Spki {
        /// DER of the SubjectPublicKeyInfo (what the discovery hash is over).
        pub der: Vec<u8>,
        /// The subjectPublicKey bits (compared with a private key's public half).
        pub key: Vec<u8>,
    }

    fn only_block(text: &str, labels: &[&str]) -> Result<(String, Vec<u8>), String> {
        let mut blocks = x509_parser::pem::Pem::iter_from_buffer(text.as_bytes());
        let first = match blocks.next() {
            Some(Ok(p)) => p,
            Some(Err(e)) => return Err(format!("not PEM ({e})")),
            None => return Err(format!("no PEM block (expected -----BEGIN {}-----)", labels[0])),
        };
        if !labels.contains(&first.label.as_str()) {
            return Err(format!("holds a PEM {} block, expected {}", first.label, labels.join(" or ")));
        }
        Ok((first.label, first.contents))
    }

    /// kubeadm accepts RSA and ECDSA keys only (`TryLoadKeyFromDisk`).
    fn check_algorithm(oid: &str) -> Result<(), String> {
        match oid {
            "1.2.840.113549.1.1.1" | "1.2.840.10045.2.1" => Ok(()),
            other => Err(format!("key algorithm {other} is neither RSA nor ECDSA, the only keys kubeadm loads")),
        }
    }

    /// A CA certificate: parsed, CA:TRUE, keyCertSign, RSA or ECDSA key.
    pub fn ca_certificate(text: &str) -> Result<Spki, String> {
        let (_, der) = only_block(text, &["CERTIFICATE"])?;
        let (_, cert) = X509Certificate::from_der(&der).map_err(|e| format!("not an X.509 certificate ({e})"))?;
        let spki = cert.public_key();
        check_algorithm(&spki.algorithm.algorithm.to_id_string())?;
        if !cert.is_ca() {
            return Err(
                "is not a CA certificate (basicConstraints CA:TRUE is missing); kubeadm refuses it as a CA".into()
            );
        }
        match cert.key_usage() {
            Ok(Some(ku)) if !ku.value.key_cert_sign() => {
                return Err("keyUsage lacks keyCertSign: the CA could not sign the cluster's certificates".into())
            }
            Err(e) => return Err(format!("unreadable keyUsage ({e})")),
            _ => {}
        }
        Ok(Spki { der: spki.raw.to_vec(), key: spki.subject_public_key.data.to_vec() })
    }

    /// A `PUBLIC KEY` (SubjectPublicKeyInfo) PEM: its key bits.
    pub fn public_key(text: &str) -> Result<Vec<u8>, String> {
        let (_, der) = only_block(text, &["PUBLIC KEY"])?;
        let (_, spki) = SubjectPublicKeyInfo::from_der(&der).map_err(|e| format!("not a public key ({e})"))?;
        check_algorithm(&spki.algorithm.algorithm.to_id_string())?;
        Ok(spki.subject_public_key.data.to_vec())
    }

    /// A private key as kubeadm reads them (`keyutil.ParsePrivateKeyPEM`:
    /// PKCS#1 `RSA PRIVATE KEY`, SEC1 `EC PRIVATE KEY`, PKCS#8 `PRIVATE KEY`),
    /// RSA or ECDSA only: the bits of its public key, as in an SPKI.
    pub fn private_key(text: &str) -> Result<Vec<u8>, String> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::EncodePrivateKey;
        let (label, der) = only_block(text, &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"])?;
        let pkcs8 = match label.as_str() {
            "RSA PRIVATE KEY" => rsa::RsaPrivateKey::from_pkcs1_der(&der)
                .map_err(|e| format!("not an RSA private key ({e})"))?
                .to_pkcs8_der()
                .map_err(|e| format!("not an RSA private key ({e})"))?
                .as_bytes()
                .to_vec(),
            "EC PRIVATE KEY" => sec1_to_pkcs8(&der)?,
            _ => der,
        };
        let algorithms: [&'static rcgen::SignatureAlgorithm; 4] = [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_RSA_SHA256,
            &rcgen::PKCS_ED25519,
        ];
        let key = load_pkcs8(&pkcs8, &algorithms).ok_or_else(|| {
            "not a private key kubeadm can use (RSA of 2048 bits or more, or ECDSA P-256/P-384)".to_string()
        })?;
        if key.algorithm() == &rcgen::PKCS_ED25519 {
            return Err("is an Ed25519 key; kubeadm loads only RSA and ECDSA keys".into());
        }
        Ok(key.public_key_raw().to_vec())
    }

    /// Loads PKCS#8 `der` with the first signature algorithm that accepts it.
    fn load_pkcs8(der: &[u8], algs: &[&'static rcgen::SignatureAlgorithm]) -> Option<rcgen::KeyPair> {
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der)
        );
        algs.iter().find_map(|a| rcgen::KeyPair::from_pem_and_sign_algo(&pem, a).ok())
    }

    /// DER length octets.
    fn len(n: usize) -> Vec<u8> {
        if n < 0x80 {
            return vec![n as u8];
        }
        let bytes: Vec<u8> = n.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        let mut out = vec![0x80 | bytes.len() as u8];
        out.extend(bytes);
        out
    }

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend(len(content.len()));
        out.extend_from_slice(content);
        out
    }

    /// Wraps a SEC1 `ECPrivateKey` in PKCS#8 (RFC 5915 §3 inside RFC 5208),
    /// taking the curve from its `parameters [0]`.
    fn sec1_to_pkcs8(sec1: &[u8]) -> Result<Vec<u8>, String> {
        const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
        const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
        let curve = [P256, P384]
            .into_iter()
            .find(|c| sec1.windows(c.len()).any(|w| w == *c))
            .ok_or_else(|| "is an EC key on a curve kubeadm does not use (P-256 or P-384 expected)".to_string())?;
        let mut alg = EC_PUBLIC_KEY.to_vec();
        alg.extend_from_slice(curve);
        let mut body = vec![0x02, 0x01, 0x00];
        body.extend(tlv(0x30, &alg));
        body.extend(tlv(0x04, sec1));
        Ok(tlv(0x30, &body))
    }
}

fn cluster_toml(f: &ClusterFile) -> String {
    format!(
        "# Written by `kiln cluster init`. Public: safe to commit. Secrets live in secrets/.\n{}",
        toml::to_string(f).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_normalise() {
        assert_eq!(normalize_endpoint("api.example.com").unwrap(), "api.example.com:6443");
        assert_eq!(normalize_endpoint("10.0.0.1:443").unwrap(), "10.0.0.1:443");
        assert_eq!(normalize_endpoint("2001:db8::1").unwrap(), "[2001:db8::1]:6443");
        assert_eq!(normalize_endpoint("[2001:db8::1]:8443").unwrap(), "[2001:db8::1]:8443");
        assert_eq!(normalize_endpoint("API.Example.com").unwrap(), "api.example.com:6443");
        for bad in ["", "api:0", "api:x", "[2001:db8::1", "[nothex]:1", "bad_host:6443", "-a.b", "https://api:6443"] {
            let e = normalize_endpoint(bad).unwrap_err();
            assert_eq!(e.kind, crate::error::Kind::Config, "{bad}");
            assert!(e.message.starts_with("--endpoint: "), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn cidrs_overlap() {
        let c = |s| Cidr::parse(s).unwrap();
        assert!(c("10.96.0.0/12").overlaps(&c("10.100.0.0/16")));
        assert!(!c("10.244.0.0/16").overlaps(&c("10.96.0.0/12")));
        assert!(!c("10.0.0.0/8").overlaps(&c("fd00::/8")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
    }

    #[test]
    fn tokens_match_kubeadm_format() {
        for _ in 0..100 {
            assert!(is_bootstrap_token(new_token().unwrap().expose()));
        }
    }
}
