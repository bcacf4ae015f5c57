//! A loopback registry for kiln's image fetch tests: the OCI distribution
//! API's pull endpoints (`/v2/<name>/manifests/<reference>`,
//! `/v2/<name>/blobs/<digest>`) with real headers (`Content-Type`,
//! `Docker-Content-Digest`, `Content-Length`), optional anonymous Bearer
//! token auth (401 + `WWW-Authenticate`, a `/token` endpoint) as
//! registry.k8s.io, ghcr.io and Docker Hub answer, optional `307` redirects of
//! blob GETs to a second loopback host (blob storage), and per-digest faults.
//! Images are synthetic multi-arch indexes (a few random layers per
//! architecture), or the tests/k8s/images archives when a test loads them.
#![allow(dead_code)]

use kiln_testkit::http::{Reply, Request, Server};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// `sha256:<hex>` of `b`.
pub fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(b)))
}

/// A seed from a name.
pub fn seed(name: &str) -> u64 {
    u64::from_le_bytes(Sha256::digest(name.as_bytes())[..8].try_into().unwrap())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut r = kiln_testkit::rng::Rng(seed | 1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&r.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// One image in the registry.
#[derive(Debug, Clone)]
pub struct Image {
    /// Repository path (`kube-apiserver`, `coredns/coredns`).
    pub repo: String,
    /// Tag.
    pub tag: String,
    /// The index digest.
    pub index: String,
    /// Per architecture: manifest digest, config digest, layer digests.
    pub archs: BTreeMap<String, (String, String, Vec<String>)>,
    /// Every blob (index and manifests included) by digest, with its media type.
    pub blobs: BTreeMap<String, (String, Vec<u8>)>,
}

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

fn desc(media: &str, b: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media, "digest": digest(b), "size": b.len()})
}

impl Image {
    /// A synthetic image with `layers` layers of `size` bytes per architecture;
    /// `shared`, when given, is every architecture's first layer.
    pub fn synthetic(
        repo: &str,
        tag: &str,
        archs: &[&str],
        layers: usize,
        size: usize,
        shared: Option<&[u8]>,
    ) -> Image {
        let mut blobs = BTreeMap::new();
        let mut per = BTreeMap::new();
        let mut entries = Vec::new();
        for arch in archs {
            let mut ls: Vec<Vec<u8>> =
                (0..layers).map(|i| bytes(seed(&format!("{repo}:{tag}/{arch}/{i}")), size)).collect();
            if let Some(s) = shared {
                ls[0] = s.to_vec();
            }
            let config = serde_json::to_vec(&serde_json::json!({
                "architecture": arch, "os": "linux",
                "config": {"Env": ["PATH=/bin"]},
                "rootfs": {"type": "layers", "diff_ids": ls.iter().map(|l| digest(l)).collect::<Vec<_>>()},
            }))
            .unwrap();
            let manifest = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2, "mediaType": MANIFEST,
                "config": desc(CONFIG, &config),
                "layers": ls.iter().map(|l| desc(LAYER, l)).collect::<Vec<_>>(),
            }))
            .unwrap();
            let mut platform = serde_json::json!({"architecture": arch, "os": "linux"});
            if *arch == "arm64" {
                platform["variant"] = "v8".into();
            }
            let mut e = desc(MANIFEST, &manifest);
            e["platform"] = platform;
            entries.push(e);
            per.insert(arch.to_string(), (digest(&manifest), digest(&config), ls.iter().map(|l| digest(l)).collect()));
            blobs.insert(digest(&config), (CONFIG.to_string(), config));
            blobs.insert(digest(&manifest), (MANIFEST.to_string(), manifest));
            for l in ls {
                blobs.insert(digest(&l), (LAYER.to_string(), l));
            }
        }
        let index =
            serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}))
                .unwrap();
        let index_digest = digest(&index);
        blobs.insert(index_digest.clone(), (INDEX.to_string(), index));
        Image { repo: repo.into(), tag: tag.into(), index: index_digest, archs: per, blobs }
    }

    /// `registry.k8s.io/<repo>:<tag>@<index digest>`, as a profile pins it.
    pub fn pin(&self) -> String {
        format!("registry.k8s.io/{}:{}@{}", self.repo, self.tag, self.index)
    }

    /// Total bytes of the blobs one architecture needs (manifest, config, layers; not the index).
    pub fn arch_bytes(&self, arch: &str) -> u64 {
        let (m, c, ls) = &self.archs[arch];
        [m, c].into_iter().chain(ls).map(|d| self.blobs[d].1.len() as u64).sum()
    }
}

/// kubeadm v1.34.2's images (`kubeadm config images list`), as small synthetic images.
pub fn kubeadm_v1_34(archs: &[&str], size: usize) -> Vec<Image> {
    let shared = bytes(42, size);
    [
        ("kube-apiserver", "v1.34.2"),
        ("kube-controller-manager", "v1.34.2"),
        ("kube-scheduler", "v1.34.2"),
        ("kube-proxy", "v1.34.2"),
        ("coredns/coredns", "v1.12.1"),
        ("pause", "3.10.1"),
        ("etcd", "3.6.5-0"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (r, t))| Image::synthetic(r, t, archs, 2, size, (i < 3).then_some(shared.as_slice())))
    .collect()
}

/// A fault on one digest.
#[derive(Debug, Clone)]
pub enum Fault {
    /// One byte flipped (same length).
    Corrupt,
    /// Other bytes served for it (with their own length).
    Replace(Vec<u8>),
    /// One byte every this long.
    Trickle(Duration),
    /// `Content-Length` says this, the body is the real one.
    Length(u64),
    /// The real body plus this many bytes, `Content-Length` matching it.
    Extra(usize),
    /// HTTP 404.
    Missing,
}

/// One repository: tag -> digest, digest -> (media type, bytes).
type Repo = (BTreeMap<String, String>, BTreeMap<String, (String, Vec<u8>)>);

#[derive(Default)]
struct State {
    repos: BTreeMap<String, Repo>,
    faults: BTreeMap<String, Fault>,
    token: bool,
    redirect: bool,
}

/// A running loopback registry (and its blob storage host).
pub struct Registry {
    /// The registry.
    pub server: Server,
    /// The blob storage host redirects point at.
    pub storage: Server,
    state: Arc<Mutex<State>>,
}

impl Registry {
    /// Starts a registry serving `images`; `token`: Bearer auth; `redirect`: blobs 307 to storage.
    pub fn start(images: &[Image], token: bool, redirect: bool) -> Registry {
        let state = Arc::new(Mutex::new(State { token, redirect, ..State::default() }));
        {
            let mut s = state.lock().unwrap();
            for img in images {
                let e = s.repos.entry(img.repo.clone()).or_default();
                e.0.insert(img.tag.clone(), img.index.clone());
                e.1.extend(img.blobs.clone());
            }
        }
        let storage_state = Arc::clone(&state);
        let storage = Server::start(move |r| {
            // /blob/<repo…>/<digest>: storage never sees a credential.
            if r.header("authorization").is_some() {
                return Reply::status(400);
            }
            let path = r.path().trim_start_matches("/blob/");
            let Some((repo, d)) = path.rsplit_once('/') else { return Reply::status(404) };
            serve_blob(&storage_state.lock().unwrap(), repo, d, false)
        });
        let storage_url: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
        let _ = storage_url.set(storage.url().to_string());
        let self_url: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
        let (st, su, me) = (Arc::clone(&state), Arc::clone(&storage_url), Arc::clone(&self_url));
        let server = Server::start(move |r| handle(&st.lock().unwrap(), r, su.get().unwrap(), me.get().unwrap()));
        let _ = self_url.set(server.url().to_string());
        Registry { server, storage, state }
    }

    /// The registry's base URL.
    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// Sets a fault on `digest`.
    pub fn fault(&self, digest: &str, f: Fault) {
        self.state.lock().unwrap().faults.insert(digest.to_string(), f);
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    /// Adds or moves a tag to an image (and its blobs).
    pub fn push(&self, img: &Image) {
        let mut s = self.state.lock().unwrap();
        let e = s.repos.entry(img.repo.clone()).or_default();
        e.0.insert(img.tag.clone(), img.index.clone());
        e.1.extend(img.blobs.clone());
    }

    /// GETs of blobs and manifests by digest, on the registry and storage together.
    pub fn gets_of(&self, digest: &str) -> usize {
        let on =
            |s: &Server| s.log().iter().filter(|(r, c)| r.path().ends_with(digest) && *c != 401 && *c != 307).count();
        on(&self.server) + on(&self.storage)
    }
}

fn handle(s: &State, r: &Request, storage: &str, me: &str) -> Reply {
    if r.path() == "/token" {
        return Reply::ok(r#"{"token":"t0k"}"#).with("Content-Type", "application/json");
    }
    let Some(rest) = r.path().strip_prefix("/v2/") else { return Reply::status(404) };
    let (repo, kind, reference) = if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        (repo, "manifests", reference)
    } else if let Some((repo, reference)) = rest.rsplit_once("/blobs/") {
        (repo, "blobs", reference)
    } else {
        return Reply::status(404);
    };
    if s.token && r.header("authorization") != Some("Bearer t0k") {
        let challenge = format!(r#"Bearer realm="{me}/token",service="test-registry",scope="repository:{repo}:pull""#);
        return Reply::status(401).with("WWW-Authenticate", &challenge);
    }
    if kind == "manifests" {
        let Some((tags, _)) = s.repos.get(repo) else { return Reply::status(404) };
        let d = tags.get(reference).cloned().unwrap_or_else(|| reference.to_string());
        return serve_blob(s, repo, &d, true);
    }
    if s.redirect {
        return Reply { status: 307, ..Reply::default() }
            .with("Location", &format!("{storage}/blob/{repo}/{reference}"));
    }
    serve_blob(s, repo, reference, false)
}

fn serve_blob(s: &State, repo: &str, d: &str, manifest: bool) -> Reply {
    let Some((media, body)) = s.repos.get(repo).and_then(|(_, b)| b.get(d)).cloned() else { return Reply::status(404) };
    let mut reply = Reply::ok(body.clone());
    if manifest {
        reply = reply.with("Content-Type", &media).with("Docker-Content-Digest", d);
    }
    match s.faults.get(d) {
        None => reply,
        Some(Fault::Corrupt) => {
            let mut b = body;
            let mid = b.len() / 2;
            b[mid] ^= 0xff;
            Reply { body: b, ..reply }
        }
        Some(Fault::Replace(other)) => Reply { body: other.clone(), ..reply },
        Some(Fault::Trickle(t)) => Reply { trickle: Some(*t), ..reply },
        Some(Fault::Length(n)) => Reply { content_length: Some(*n), ..reply },
        Some(Fault::Extra(n)) => {
            let mut b = body;
            b.extend(std::iter::repeat_n(b'x', *n));
            Reply { body: b, ..reply }
        }
        Some(Fault::Missing) => Reply::status(404),
    }
}

/// The images of a `tests/k8s/images` output directory (each `NAME_TAG.tar`
/// an OCI layout whose `index.json` names the image index by
/// `io.containerd.image.name`), as the registry serves them.
pub fn from_archives(dir: &std::path::Path) -> Vec<Image> {
    let mut out = Vec::new();
    let mut archives: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tar"))
        .collect();
    archives.sort();
    for a in archives {
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut t = tar::Archive::new(std::fs::File::open(&a).unwrap());
        for e in t.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().trim_start_matches("./").to_string();
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut b).unwrap();
            files.insert(name, b);
        }
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let d = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["annotations"]["io.containerd.image.name"].as_str().is_some_and(|n| !n.contains('@')))
            .unwrap();
        let reference = d["annotations"]["io.containerd.image.name"].as_str().unwrap();
        let (name, tag) = reference.rsplit_once(':').unwrap();
        let mut blobs = BTreeMap::new();
        for (path, b) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                let media = serde_json::from_slice::<serde_json::Value>(b)
                    .ok()
                    .and_then(|v| v["mediaType"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "application/octet-stream".into());
                blobs.insert(format!("sha256:{hex}"), (media, b.clone()));
            }
        }
        out.push(Image {
            repo: name.trim_start_matches("registry.k8s.io/").to_string(),
            tag: tag.to_string(),
            index: d["digest"].as_str().unwrap().to_string(),
            archs: BTreeMap::new(),
            blobs,
        });
    }
    out
}
