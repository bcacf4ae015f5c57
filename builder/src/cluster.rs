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
use crate::version::{Version, VersionExt};
use kiln_firstboot::node::{is_bootstrap_token, Secret};
use kiln_firstboot::validate;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Key algorithm for the CAs and the service-account key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// ECDSA P-256: the default. Keys are ~230 bytes, so a control plane's
    /// user-data stays far below EC2's 16 KiB; kubeadm loads ECDSA CA and
    /// service-account keys (`pkiutil.TryLoadKeyFromDisk`, `keyutil.ParsePrivateKeyPEM`)
    /// and generates ECDSA-P256 itself with `encryptionAlgorithm` (v1beta4).
    #[value(name = "ecdsa-p256")]
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// RSA 2048: kubeadm's own default, for tooling that expects RSA.
    #[value(name = "rsa-2048")]
    #[serde(rename = "rsa-2048")]
    Rsa2048,
}

impl KeyAlgorithm {
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
/// ([`kiln_firstboot::validate::endpoint`]).
pub fn normalize_endpoint(s: &str) -> Result<String> {
    validate::endpoint(s).map(|e| e.to_string()).map_err(|m| Error::config(format!("--endpoint: {m}")))
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
        let version =
            Version::parse(&o.kubernetes_version).map_err(|m| Error::config(format!("--kubernetes-version: {m}")))?;
        let endpoint = normalize_endpoint(&o.endpoint)?;
        // kubeadm reads bootstrapTokens[].ttl with Go's time.ParseDuration; a
        // bad value would only surface on the init node at first boot.
        validate::token_ttl(&o.token_ttl).map_err(|m| Error::config(format!("--token-ttl: {m}")))?;
        let pod = Cidr::parse(&o.pod_subnet).ok_or_else(|| {
            Error::config(format!("--pod-subnet `{}` is not a CIDR like 10.244.0.0/16", o.pod_subnet))
        })?;
        let svc = Cidr::parse(&o.service_subnet).ok_or_else(|| {
            Error::config(format!("--service-subnet `{}` is not a CIDR like 10.96.0.0/12", o.service_subnet))
        })?;
        if pod.overlaps(&svc) {
            return Err(Error::config(format!(
                "--pod-subnet {} overlaps --service-subnet {}; pick disjoint ranges",
                o.pod_subnet, o.service_subnet
            )));
        }
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
        let tmp = parent.join(format!(".{}.kiln-tmp-{}", o.name, std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let result = Self::write_new(&tmp, o, &version, &endpoint);
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if o.out.exists() {
            fs::remove_dir_all(&o.out).io_ctx(o.out.display())?;
        }
        fs::rename(&tmp, &o.out).io_ctx(o.out.display())?;
        Cluster::load(&o.out)
    }

    fn write_new(dir: &Path, o: &InitOptions, version: &Version, endpoint: &str) -> Result<()> {
        fs::create_dir_all(dir.join("pki")).io_ctx(dir.display())?;
        let secrets = dir.join("secrets");
        fs::create_dir(&secrets).io_ctx(secrets.display())?;
        fs::set_permissions(&secrets, fs::Permissions::from_mode(0o700)).io_ctx(secrets.display())?;
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
            Error::config(format!(
                "{}: {e}; create the cluster with `kiln cluster init NAME --endpoint HOST[:PORT] --kubernetes-version vX.Y.Z`",
                path.display()
            ))
        })?;
        let file: ClusterFile = toml::from_str(&text).map_err(|e| {
            Error::config(crate::location::at(
                &path,
                &text,
                e.span(),
                &crate::location::explain_toml_message(e.message()),
            ))
        })?;
        // A hand-edited cluster.toml must not hand nodes a TTL kubeadm cannot read.
        validate::token_ttl(&file.token_ttl)
            .map_err(|m| Error::config(format!("{}: token_ttl: {m}", path.display())))?;
        Ok(Cluster { dir: dir.to_path_buf(), file })
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
        let tmp = self.dir.join(format!("secrets/.bootstrap-token.{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        write_file(&tmp, format!("{}\n", token.expose()).as_bytes(), 0o600)?;
        fs::rename(&tmp, self.dir.join("secrets/bootstrap-token")).io_ctx(self.dir.display())?;
        self.file.token_id = token.expose()[..6].to_string();
        let ctmp = self.dir.join(format!(".cluster.toml.{}", std::process::id()));
        let _ = fs::remove_file(&ctmp);
        write_file(&ctmp, cluster_toml(&self.file).as_bytes(), 0o644)?;
        fs::rename(&ctmp, self.dir.join("cluster.toml")).io_ctx(self.dir.display())?;
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
