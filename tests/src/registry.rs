//! The real OCI registry (distribution v3's `cmd/registry`, built by
//! `tests/k8s/build VERSION amd64 registry`) on loopback, started for one test
//! with its filesystem storage under a scratch directory, and the loopback
//! servers around it that make it look like registry.k8s.io, ghcr.io or
//! Docker Hub:
//!
//! - [`Auth::Token`]: the registry's `auth: token` (`realm`, `service`,
//!   `issuer`, `rootcertbundle`) pointed at the kit's token server
//!   (`http://localhost:PORT/token`, a host name as public registries' realms are), which
//!   answers `GET /token?service=…&scope=repository:NAME:pull` anonymously
//!   with an ES256 JWT the registry verifies (see `token.rs`);
//! - [`Config::redirect_blobs`]: the registry's own `redirect` storage
//!   middleware sends every blob `GET` (307 Temporary Redirect) to the kit's
//!   blob host (`localhost:PORT`, another host than the registry's `127.0.0.1`), which serves the storage files and, like S3 with
//!   a pre-signed URL, refuses a request that carries `Authorization`;
//! - the front ([`Registry::url`]): a proxy before the registry's API that
//!   injects a [`Fault`] on demand (corrupt a byte, serve a wrong manifest,
//!   trickle, lie about `Content-Length`, send more bytes than the
//!   descriptor, drop an architecture from an index, answer an error). Without
//!   faults it passes everything through.
//!
//! Images go in with [`Registry::push_oci_archive`] (an OCI image-layout
//! archive, as `tests/k8s/images` writes them, through the registry's own
//! API, bytes unchanged: the digests are `images.json`'s), or
//! [`Registry::push_test_images`] for all of [`test_images`].
//!
//! ```no_run
//! # fn main() -> Result<(), String> {
//! use kiln_testkit::registry::{self, Auth, Config, Fault, Registry};
//! let dir = std::env::temp_dir().join("reg");
//! let (reg, images) = registry::with_test_images(&dir, Config { auth: Auth::Token, redirect_blobs: true })?;
//! // A client pulls `{reg.host()}/kube-apiserver:v1.34.2`; now make one layer arrive corrupt:
//! reg.fault(Fault::Corrupt(images[0].layer_digest.clone()));
//! # Ok(()) }
//! ```

mod faults;
mod front;
mod push;
mod tiny;
mod token;
mod wire;

pub use faults::{Fault, Hit, Via};
pub use tiny::tiny_archive;
pub use token::{ISSUER, SERVICE};

use faults::Shared;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the registry may take to answer `/v2/` before the start fails.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The Kubernetes version whose test images [`test_images`] makes.
pub const TEST_IMAGES_VERSION: &str = "v1.34.2";

/// The command that builds the registry and exports its directory, for error messages.
pub const BUILD: &str = "tests/k8s/build v1.34.2 amd64 registry && export KILN_K8S_BIN_REGISTRY=$(tests/k8s/build --dir v1.34.2 amd64 registry)";

/// The command that builds crane and exports its directory, for error messages.
pub const BUILD_CRANE: &str =
    "tests/k8s/build v1.34.2 amd64 crane && export KILN_K8S_BIN_CRANE=$(tests/k8s/build --dir v1.34.2 amd64 crane)";

/// `$VAR/prog`, or an error that says how to build it.
fn program(var: &str, prog: &str, build: &str) -> Result<PathBuf, String> {
    let dir = std::env::var_os(var).map(PathBuf::from).ok_or_else(|| {
        format!("{var} is not set: the real {prog} is needed. Build it and say where it is, from the workspace root:\n  {build}\n(./scripts/test does this)")
    })?;
    let path = dir.join(prog);
    if !path.is_file() {
        return Err(format!("{var}={} has no {prog}; build it:\n  {build}", dir.display()));
    }
    Ok(path)
}

/// The real `registry` program: `$KILN_K8S_BIN_REGISTRY/registry`.
pub fn bin() -> Result<PathBuf, String> {
    program("KILN_K8S_BIN_REGISTRY", "registry", BUILD)
}

/// The real `crane` program: `$KILN_K8S_BIN_CRANE/crane`.
pub fn crane() -> Result<PathBuf, String> {
    program("KILN_K8S_BIN_CRANE", "crane", BUILD_CRANE)
}

/// How clients authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Auth {
    /// No auth: every request is served.
    #[default]
    Anonymous,
    /// Bearer tokens from the kit's token server (anonymous pull, as public registries).
    Token,
}

/// How the registry runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Config {
    /// Authentication.
    pub auth: Auth,
    /// Blob downloads are redirected (307) to the blob host (`localhost:PORT`).
    pub redirect_blobs: bool,
}

/// A running registry, its token server, blob host and front; all stop when dropped.
pub struct Registry {
    child: Child,
    dir: PathBuf,
    direct: String,
    shared: Arc<Shared>,
    signer: Option<Arc<token::Signer>>,
    front: wire::Listener,
    _token: Option<wire::Listener>,
    _blobs: Option<wire::Listener>,
}

/// One image of [`test_images`] (a row of `images.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestImage {
    /// As kubeadm names it: `registry.k8s.io/kube-apiserver:v1.34.2`.
    pub reference: String,
    /// The repository in the kit's registry: the path after `registry.k8s.io/`
    /// (`kube-apiserver`, `coredns/coredns`).
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// The OCI image-layout archive.
    pub archive: PathBuf,
    /// The image index's digest (what a pin names).
    pub index_digest: String,
    /// The amd64 image manifest's digest.
    pub manifest_digest: String,
    /// Its config's digest.
    pub config_digest: String,
    /// Its one layer's digest.
    pub layer_digest: String,
}

impl TestImage {
    /// `name:tag@sha256:…`: the image as a profile pins it (its index digest).
    pub fn pin(&self) -> String {
        format!("{}@{}", self.reference, self.index_digest)
    }
}

/// The registry's config.yml.
fn config_yaml(dir: &Path, addr: &str, token_realm: Option<&str>, blob_host: Option<&str>) -> String {
    let d = dir.display();
    let mut y = format!(
        "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {d}/storage\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {addr}\n  secret: kiln-testkit\n"
    );
    if let Some(realm) = token_realm {
        y.push_str(&format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {}\n    issuer: {}\n    rootcertbundle: {d}/token-ca.pem\n",
            token::SERVICE,
            token::ISSUER
        ));
    }
    if let Some(host) = blob_host {
        y.push_str(&format!(
            "middleware:\n  storage:\n    - name: redirect\n      options:\n        baseurl: http://{host}\n"
        ));
    }
    y
}

/// A port on 127.0.0.1 free a moment ago (the registry binds it itself).
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

impl Registry {
    /// Starts the registry `bin` with its config, storage and log under `dir`
    /// (created if missing), and the servers `config` asks for; waits until
    /// `/v2/` answers (at most [`START_TIMEOUT`]).
    pub fn start(bin: &Path, dir: &Path, config: Config) -> Result<Registry, String> {
        std::fs::create_dir_all(dir.join("storage")).map_err(|e| format!("{}: {e}", dir.display()))?;
        let shared = Arc::new(Shared::default());
        let (signer, token_server) = match config.auth {
            Auth::Anonymous => (None, None),
            Auth::Token => {
                let signer = Arc::new(token::Signer::new()?);
                let pem = dir.join("token-ca.pem");
                std::fs::write(&pem, signer.cert_pem()).map_err(|e| format!("{}: {e}", pem.display()))?;
                let server = token::serve(Arc::clone(&signer), Arc::clone(&shared))?;
                (Some(signer), Some(server))
            }
        };
        let blobs = match config.redirect_blobs {
            false => None,
            true => Some(front::serve_blob_host(front::bind_blob_host()?, dir.join("storage"), Arc::clone(&shared))),
        };
        // The realm and the blob host by name (`localhost:PORT`), as public
        // registries name theirs (auth.docker.io, ghcr.io, storage hosts).
        let realm = token_server.as_ref().map(|t| format!("http://{}/token", front::blob_host_name(t.addr())));
        // The registry binds its port itself: another process may take it between
        // free_port and the bind, so a bind failure is retried with another port.
        let mut last = String::new();
        for _ in 0..5 {
            let addr = format!("127.0.0.1:{}", free_port()?);
            let blob_host = blobs.as_ref().map(|b| front::blob_host_name(b.addr()));
            let yaml = config_yaml(dir, &addr, realm.as_deref(), blob_host.as_deref());
            match Self::launch(bin, dir, &yaml, &addr) {
                Ok(child) => {
                    let direct = format!("http://{addr}");
                    let front = front::serve_front(direct.clone(), Arc::clone(&shared))?;
                    let dir = dir.to_path_buf();
                    return Ok(Registry {
                        child,
                        dir,
                        direct,
                        shared,
                        signer,
                        front,
                        _token: token_server,
                        _blobs: blobs,
                    });
                }
                Err((e, true)) => last = e,
                Err((e, false)) => return Err(e),
            }
        }
        Err(last)
    }

    /// Runs the registry on `addr` and waits for `/v2/`; an error says
    /// whether another port may help (the address was taken).
    fn launch(bin: &Path, dir: &Path, yaml: &str, addr: &str) -> Result<Child, (String, bool)> {
        let fail = |e: String| (e, false);
        let conf = dir.join("config.yml");
        std::fs::write(&conf, yaml).map_err(|e| fail(format!("{}: {e}", conf.display())))?;
        let log_path = dir.join("registry.log");
        let log = std::fs::File::create(&log_path).map_err(|e| fail(format!("{}: {e}", log_path.display())))?;
        let err = log.try_clone().map_err(|e| fail(e.to_string()))?;
        let mut child = Command::new(bin)
            .arg("serve")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| fail(format!("{}: {e}", bin.display())))?;
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
        let start = Instant::now();
        while start.elapsed() < START_TIMEOUT {
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                let retry = text.contains("address already in use");
                return Err((format!("{} serve {} exited ({status}):\n{text}", bin.display(), conf.display()), retry));
            }
            match agent.get(&format!("http://{addr}/v2/")).call() {
                Ok(_) | Err(ureq::Error::Status(401, _)) => return Ok(child),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        Err((format!("{} did not answer http://{addr}/v2/ within {START_TIMEOUT:?}:\n{text}", bin.display()), false))
    }

    /// The front's base URL (`http://127.0.0.1:PORT`): the registry's API with faults.
    pub fn url(&self) -> String {
        format!("http://{}", self.front.addr())
    }

    /// The front's `127.0.0.1:PORT`, the registry part of image references
    /// (`{host}/kube-apiserver:v1.34.2`; a loopback registry is spoken to in plain HTTP).
    pub fn host(&self) -> &str {
        self.front.addr()
    }

    /// The registry's own base URL, without the front (no faults; pushes go here).
    pub fn direct_url(&self) -> &str {
        &self.direct
    }

    /// The registry's `127.0.0.1:PORT`, for image references without the front.
    pub fn direct_host(&self) -> &str {
        self.direct.trim_start_matches("http://")
    }

    /// The scratch directory (config.yml, storage/, registry.log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The registry's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// Injects a fault (in addition to those in force).
    pub fn fault(&self, fault: Fault) {
        self.shared.add(fault);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.shared.clear();
    }

    /// Every request the front, the blob host and the token server answered, in order.
    pub fn hits(&self) -> Vec<Hit> {
        self.shared.log()
    }

    fn pusher(&self) -> push::Pusher<'_> {
        let agent = ureq::AgentBuilder::new().redirects(0).timeout(Duration::from_secs(300)).build();
        push::Pusher { agent, base: &self.direct, signer: self.signer.as_deref() }
    }

    /// Pushes the OCI image-layout archive at `path` (one image, as
    /// `tests/k8s/images` writes) as `reference` (`name:tag`, the name a
    /// repository path in this registry); returns the digest the tag names.
    pub fn push_oci_archive(&self, path: &Path, reference: &str) -> Result<String, String> {
        let (name, tag) = split(reference)?;
        self.pusher().archive(path, name, tag).map_err(|e| format!("pushing {} as {reference}: {e}", path.display()))
    }

    /// Pushes the archives at `paths` (one platform each, e.g. the amd64 and
    /// arm64 builds of one image) as one image index `reference` listing all
    /// their manifests; returns its digest.
    pub fn push_multi_platform(&self, paths: &[&Path], reference: &str) -> Result<String, String> {
        let (name, tag) = split(reference)?;
        self.pusher().merged(paths, name, tag).map_err(|e| format!("pushing {reference}: {e}"))
    }

    /// Pushes every test image as `repository:tag`, checking that the tag
    /// names `index_digest`.
    pub fn push_test_images(&self, images: &[TestImage]) -> Result<(), String> {
        for i in images {
            let got = self.push_oci_archive(&i.archive, &format!("{}:{}", i.repository, i.tag))?;
            if got != i.index_digest {
                return Err(format!("{}: pushed as {got}, but images.json says {}", i.reference, i.index_digest));
            }
        }
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The seven test images made under `dir/images` ([`test_images`]) and the
/// real registry ([`bin`]) started under `dir/registry` with `config`,
/// holding them ([`Registry::push_test_images`]).
pub fn with_test_images(dir: &Path, config: Config) -> Result<(Registry, Vec<TestImage>), String> {
    let images = test_images(&dir.join("images"))?;
    let reg = Registry::start(&bin()?, &dir.join("registry"), config)?;
    reg.push_test_images(&images)?;
    Ok((reg, images))
}

/// `name:tag` split at the last `:` after the last `/`.
fn split(reference: &str) -> Result<(&str, &str), String> {
    match reference.rsplit_once(':') {
        Some((n, t)) if !n.is_empty() && !t.is_empty() && !t.contains('/') => Ok((n, t)),
        _ => Err(format!("`{reference}` is not NAME:TAG")),
    }
}

/// Runs `tests/k8s/images v1.34.2 amd64 out` (the real programs' images; the
/// programs must be built, or it fails with their build commands) and reads
/// its `images.json`.
pub fn test_images(out: &Path) -> Result<Vec<TestImage>, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/images");
    let o = Command::new(&script)
        .args([TEST_IMAGES_VERSION, "amd64"])
        .arg(out)
        .output()
        .map_err(|e| format!("{}: {e} (python3 is needed)", script.display()))?;
    if !o.status.success() {
        return Err(format!(
            "tests/k8s/images {TEST_IMAGES_VERSION} amd64 {} failed:\n{}{}",
            out.display(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let path = out.join("images.json");
    let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: serde_json::Value = serde_json::from_slice(&data).map_err(|e| format!("{}: {e}", path.display()))?;
    let list = doc["images"].as_array().ok_or_else(|| format!("{}: no images list", path.display()))?;
    list.iter()
        .map(|i| {
            let s = |k: &str| {
                i[k].as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{}: an image without {k}: {i}", path.display()))
            };
            let reference = s("reference")?;
            let (name, tag) = split(&reference)?;
            let repository = name.split_once('/').map_or(name, |(_, r)| r).to_string();
            Ok(TestImage {
                repository,
                tag: tag.to_string(),
                archive: out.join(s("archive")?),
                index_digest: s("index_digest")?,
                manifest_digest: s("manifest_digest")?,
                config_digest: s("config_digest")?,
                layer_digest: s("layer_digest")?,
                reference,
            })
        })
        .collect()
}
