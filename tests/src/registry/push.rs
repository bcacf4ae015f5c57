//! Pushes OCI image-layout archives (what `tests/k8s/images` writes) into the
//! real registry through its own API (distribution `docs/spec/api.md`): every
//! blob by `POST /v2/NAME/blobs/uploads/` then `PUT <Location>&digest=…`,
//! each image manifest by its digest, then the image index by the tag. The
//! bytes are the archive's, so the registry serves the same digests
//! `images.json` names.

use super::token::Signer;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;

/// Blobs up to this size are kept in memory while the archive is read
/// (manifests, indexes, configs); larger ones are uploaded as they stream past.
const SMALL: u64 = 4 << 20;

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A client of the registry's API, with a push token when it wants one.
pub(crate) struct Pusher<'a> {
    pub(crate) agent: ureq::Agent,
    /// `http://HOST:PORT` of the registry itself.
    pub(crate) base: &'a str,
    pub(crate) signer: Option<&'a Signer>,
}

/// What an archive's reading left: the descriptors `index.json` names, the
/// small blobs, and the digests of the large ones already uploaded.
struct Archive {
    top: Vec<Value>,
    small: HashMap<String, Vec<u8>>,
    uploaded: HashSet<String>,
}

fn describe(e: ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, r) => {
            let url = r.get_url().to_string();
            format!("{url}: HTTP {code}: {}", r.into_string().unwrap_or_default().trim())
        }
        e => e.to_string(),
    }
}

impl Pusher<'_> {
    fn authorize(&self, req: ureq::Request, repo: &str) -> Result<ureq::Request, String> {
        match self.signer {
            None => Ok(req),
            Some(s) => {
                let token = s.token(&[(repo.to_string(), vec!["pull".into(), "push".into()])])?;
                Ok(req.set("Authorization", &format!("Bearer {token}")))
            }
        }
    }

    /// Uploads one blob of `size` bytes read from `body`.
    fn upload(&self, repo: &str, digest: &str, size: u64, body: impl Read) -> Result<(), String> {
        let start = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let resp = self.authorize(self.agent.post(&start), repo)?.call().map_err(describe)?;
        let location = resp.header("Location").ok_or_else(|| format!("{start}: no Location in the answer"))?;
        let mut url = url::Url::parse(&start).and_then(|b| b.join(location)).map_err(|e| format!("{location}: {e}"))?;
        url.query_pairs_mut().append_pair("digest", digest);
        let put = self
            .authorize(self.agent.put(url.as_str()), repo)?
            .set("Content-Type", "application/octet-stream")
            .set("Content-Length", &size.to_string());
        put.send(body).map_err(describe).map(|_| ())
    }

    fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Result<(), String> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let req = self.authorize(self.agent.put(&url), repo)?.set("Content-Type", media_type);
        req.send_bytes(body).map_err(describe).map(|_| ())
    }

    /// Reads the archive at `path`, uploading its large blobs.
    fn read(&self, repo: &str, path: &Path) -> Result<Archive, String> {
        let at = |e: std::io::Error| format!("{}: {e}", path.display());
        let file = std::fs::File::open(path).map_err(at)?;
        let mut archive = Archive { top: Vec::new(), small: HashMap::new(), uploaded: HashSet::new() };
        let mut tar = tar::Archive::new(file);
        for entry in tar.entries().map_err(at)? {
            let mut entry = entry.map_err(at)?;
            let name = entry.path().map_err(at)?.to_string_lossy().trim_start_matches("./").to_string();
            let size = entry.size();
            if name == "index.json" {
                let mut data = Vec::new();
                entry.by_ref().take(SMALL).read_to_end(&mut data).map_err(at)?;
                let doc: Value =
                    serde_json::from_slice(&data).map_err(|e| format!("{}: index.json: {e}", path.display()))?;
                archive.top = doc["manifests"].as_array().cloned().unwrap_or_default();
            } else if let Some(hex) = name.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
                let digest = format!("sha256:{hex}");
                if size <= SMALL {
                    let mut data = Vec::new();
                    entry.read_to_end(&mut data).map_err(at)?;
                    archive.small.insert(digest, data);
                } else {
                    self.upload(repo, &digest, size, &mut entry)
                        .map_err(|e| format!("{}: {digest}: {e}", path.display()))?;
                    archive.uploaded.insert(digest);
                }
            }
        }
        if archive.top.is_empty() {
            return Err(format!("{}: index.json names no image; is it an OCI image layout archive?", path.display()));
        }
        Ok(archive)
    }

    /// Pushes the blob `digest`: uploaded already when large, else from the archive.
    fn blob(&self, repo: &str, archive: &Archive, digest: &str) -> Result<(), String> {
        if archive.uploaded.contains(digest) {
            return Ok(());
        }
        let data = archive.small.get(digest).ok_or_else(|| format!("the archive lacks blob {digest}"))?;
        self.upload(repo, digest, data.len() as u64, data.as_slice())
    }

    /// Pushes the manifest or index `desc` names, and everything it names, by digest.
    fn tree(&self, repo: &str, archive: &Archive, desc: &Value) -> Result<(), String> {
        let digest = desc["digest"].as_str().ok_or_else(|| format!("descriptor without a digest: {desc}"))?;
        let data = archive.small.get(digest).ok_or_else(|| format!("the archive lacks manifest {digest}"))?;
        let doc: Value = serde_json::from_slice(data).map_err(|e| format!("{digest}: not JSON: {e}"))?;
        let media_type = doc["mediaType"].as_str().or(desc["mediaType"].as_str()).unwrap_or(INDEX).to_string();
        if let Some(children) = doc["manifests"].as_array() {
            for child in children {
                self.tree(repo, archive, child)?;
            }
        } else {
            let mut blobs: Vec<&Value> = vec![&doc["config"]];
            blobs.extend(doc["layers"].as_array().into_iter().flatten());
            for b in blobs {
                let d = b["digest"].as_str().ok_or_else(|| format!("{digest}: a descriptor without a digest"))?;
                self.blob(repo, archive, d)?;
            }
        }
        self.put_manifest(repo, digest, &media_type, data)
    }

    /// Pushes the archive at `path` as `repo:tag`; returns the digest the tag names.
    pub(crate) fn archive(&self, path: &Path, repo: &str, tag: &str) -> Result<String, String> {
        let archive = self.read(repo, path)?;
        let top = &archive.top[0];
        let digest = top["digest"].as_str().unwrap_or_default().to_string();
        if archive.top.iter().any(|d| d["digest"].as_str() != Some(&digest)) {
            return Err(format!("{}: index.json names more than one image; push them one by one", path.display()));
        }
        self.tree(repo, &archive, top).map_err(|e| format!("{}: {e}", path.display()))?;
        let data = &archive.small[&digest];
        let media_type = top["mediaType"].as_str().unwrap_or(INDEX);
        self.put_manifest(repo, tag, media_type, data)?;
        Ok(digest)
    }

    /// Pushes the archives at `paths` (one platform's image each) as one
    /// image index `repo:tag` listing every archive's manifests, in order;
    /// returns its digest.
    pub(crate) fn merged(&self, paths: &[&Path], repo: &str, tag: &str) -> Result<String, String> {
        let mut manifests = Vec::new();
        for path in paths {
            let archive = self.read(repo, path)?;
            let top = &archive.top[0];
            self.tree(repo, &archive, top).map_err(|e| format!("{}: {e}", path.display()))?;
            let data = &archive.small[top["digest"].as_str().unwrap_or_default()];
            let doc: Value = serde_json::from_slice(data).map_err(|e| format!("{}: {e}", path.display()))?;
            match doc["mediaType"].as_str() {
                Some(INDEX | DOCKER_LIST) => manifests.extend(doc["manifests"].as_array().cloned().unwrap_or_default()),
                _ => manifests.push(top.clone()),
            }
        }
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests});
        let body = serde_json::to_vec(&index).map_err(|e| e.to_string())?;
        self.put_manifest(repo, tag, INDEX, &body)?;
        Ok(format!("sha256:{}", crate::standin::sha256(&body)))
    }
}
