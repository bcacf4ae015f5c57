//! The front (a loopback proxy before the real registry's API that injects
//! [`Fault`]s) and the blob host (the second loopback host (`localhost:PORT`) the real
//! registry's `redirect` storage middleware sends blob downloads to, as
//! registry.k8s.io sends them to cloud storage).
//!
//! The front forwards `GET` and `HEAD` with the client's `Accept` and
//! `Authorization` and answers with the registry's status and headers (its
//! `WWW-Authenticate` challenges, `Docker-Content-Digest`, `Location`), the
//! body changed only as a fault says. The blob host serves the registry's
//! filesystem storage at the paths the middleware names
//! (`/docker/registry/v2/blobs/sha256/XX/HEX/data`) and, as S3 does for a
//! pre-signed URL, refuses a request that also carries `Authorization`
//! (400 `InvalidArgument`): a client that forwards the registry's token
//! across hosts fails here.

use super::faults::{Fault, Hit, Shared, Via};
use super::wire::{self, Listener, Request};
use std::io::{Cursor, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Manifests (and unsized bodies) are read whole up to this size.
const MAX_MANIFEST: u64 = 4 << 20;

/// Headers of the registry's answer the front does not pass on (it sets its own length and closes).
const HOP: [&str; 4] = ["content-length", "transfer-encoding", "connection", "keep-alive"];

/// What the answer to a request names: the last path element (tag or digest).
fn reference_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or_default()
}

fn error_json(code: u16) -> Vec<u8> {
    let kind = match code {
        404 => "MANIFEST_UNKNOWN",
        401 => "UNAUTHORIZED",
        429 => "TOOMANYREQUESTS",
        _ => "UNAVAILABLE",
    };
    format!(r#"{{"errors":[{{"code":"{kind}","message":"injected by the kiln testkit","detail":null}}]}}"#).into_bytes()
}

/// The manifest `body` as `faults` change it (`WrongManifest`, `DropPlatform`),
/// and whether `Docker-Content-Digest` must then be recomputed.
fn rewrite_manifest(body: Vec<u8>, faults: &[Fault]) -> (Vec<u8>, bool) {
    let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(&body) else { return (body, false) };
    let mut changed = (false, false);
    for f in faults {
        match f {
            Fault::WrongManifest(_) => {
                if let Some(obj) = doc.as_object_mut() {
                    let notes = obj.entry("annotations").or_insert_with(|| serde_json::json!({}));
                    notes["io.kiln.testkit.wrong-manifest"] = serde_json::json!("true");
                    changed.0 = true;
                }
            }
            Fault::DropPlatform(arch) => {
                if let Some(list) = doc.get_mut("manifests").and_then(|m| m.as_array_mut()) {
                    let before = list.len();
                    list.retain(|m| m.pointer("/platform/architecture").and_then(|a| a.as_str()) != Some(arch));
                    changed.1 |= list.len() != before;
                }
            }
            _ => {}
        }
    }
    match changed {
        (false, false) => (body, false),
        (_, recompute) => (serde_json::to_vec(&doc).unwrap_or(body), recompute && !changed.0),
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", crate::standin::sha256(data))
}

/// Asks the registry at `upstream` for `req`, forwarding the headers a registry client sends.
fn forward(agent: &ureq::Agent, upstream: &str, req: &Request) -> Result<ureq::Response, String> {
    let mut r = agent.request(&req.method, &format!("{upstream}{}", req.target)).set("Accept-Encoding", "identity");
    for h in ["accept", "authorization", "user-agent", "range"] {
        for (_, v) in req.headers.iter().filter(|(k, _)| k == h) {
            r = r.set(h, v);
        }
    }
    match r.call() {
        Ok(resp) | Err(ureq::Error::Status(_, resp)) => Ok(resp),
        Err(e) => Err(e.to_string()),
    }
}

fn proxy(mut sock: TcpStream, agent: &ureq::Agent, upstream: &str, shared: &Shared) {
    let Some(req) = wire::read_request(&mut sock) else { return };
    let mut hit = Hit {
        via: Via::Front,
        method: req.method.clone(),
        target: req.target.clone(),
        authorization: req.header("authorization").is_some(),
        status: 0,
    };
    let reference = reference_of(req.path()).to_string();
    if let Some(code) = shared.take_status(&reference) {
        hit.status = code;
        shared.record(hit);
        let json = [("Content-Type".to_string(), "application/json".to_string())];
        return wire::respond(&mut sock, code, &json, &error_json(code));
    }
    if req.method != "GET" && req.method != "HEAD" {
        hit.status = 405;
        shared.record(hit);
        return wire::respond(&mut sock, 405, &[], b"the kit's front takes GET and HEAD; push to direct_url()\n");
    }
    let resp = match forward(agent, upstream, &req) {
        Ok(r) => r,
        Err(e) => {
            hit.status = 502;
            shared.record(hit);
            return wire::respond(&mut sock, 502, &[], format!("the registry: {e}\n").as_bytes());
        }
    };
    hit.status = resp.status();
    shared.record(hit);
    relay(&mut sock, resp, &req, &reference, shared);
}

/// Passes the registry's answer `resp` on, faults applied to a 200's body.
fn relay(sock: &mut TcpStream, resp: ureq::Response, req: &Request, reference: &str, shared: &Shared) {
    let code = resp.status();
    let mut headers: Vec<(String, String)> = Vec::new();
    for name in resp.headers_names() {
        if !HOP.contains(&name.as_str()) {
            headers.extend(resp.all(&name).into_iter().map(|v| (name.clone(), v.to_string())));
        }
    }
    let length: Option<u64> = resp.header("content-length").and_then(|l| l.parse().ok());
    let digest = resp.header("docker-content-digest").map(str::to_string);
    let faults = if code == 200 { shared.matching(reference, digest.as_deref()) } else { Vec::new() };
    let head_only = req.method == "HEAD";
    let manifest = req.path().contains("/manifests/");
    let mut reader = resp.into_reader();
    if head_only || (!manifest && length.is_some_and(|l| l > MAX_MANIFEST)) {
        let n = length.unwrap_or(0);
        if code == 200 {
            wire::send_body(sock, &headers, reader, n, &faults, head_only);
        } else {
            wire::write_head(sock, code, &headers, n);
        }
        return;
    }
    let mut body = Vec::new();
    if reader.by_ref().take(64 * MAX_MANIFEST).read_to_end(&mut body).is_err() {
        return;
    }
    if manifest && code == 200 {
        let (new, recompute) = rewrite_manifest(body, &faults);
        body = new;
        if recompute {
            headers.retain(|(k, _)| k != "docker-content-digest");
            headers.push(("docker-content-digest".into(), sha256(&body)));
        }
    }
    if code == 200 {
        wire::send_body(sock, &headers, Cursor::new(&body), body.len() as u64, &faults, false);
    } else {
        wire::respond(sock, code, &headers, &body);
    }
}

/// Starts the front on 127.0.0.1 before the registry at `upstream` (`http://HOST:PORT`).
pub(crate) fn serve_front(upstream: String, shared: Arc<Shared>) -> Result<Listener, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("front: bind 127.0.0.1: {e}"))?;
    let agent = ureq::AgentBuilder::new().redirects(0).timeout_connect(Duration::from_secs(10)).build();
    Ok(Listener::spawn(listener, move |sock| proxy(sock, &agent, &upstream, &shared)))
}

/// The digest a storage path names (`…/blobs/sha256/XX/HEX/data`).
fn digest_of(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('/').collect();
    let i = parts.iter().position(|p| *p == "blobs")?;
    match parts.get(i + 1..) {
        Some([alg, _, hex, "data"]) => Some(format!("{alg}:{hex}")),
        _ => None,
    }
}

fn blob(mut sock: TcpStream, storage: &Path, shared: &Shared) {
    let Some(req) = wire::read_request(&mut sock) else { return };
    let path = req.path().to_string();
    let digest = digest_of(&path);
    let file: Option<PathBuf> =
        (!path.split('/').any(|c| c == "..")).then(|| storage.join(path.trim_start_matches('/')));
    let authorization = req.header("authorization").is_some();
    let code = match (&digest, &file) {
        _ if authorization => 400,
        (Some(d), _) if shared.take_status(d).is_some() => 503,
        (Some(_), Some(f)) if f.is_file() => 200,
        _ => 404,
    };
    shared.record(Hit {
        via: Via::BlobHost,
        method: req.method.clone(),
        target: req.target.clone(),
        authorization,
        status: code,
    });
    let xml = [("Content-Type".to_string(), "application/xml".to_string())];
    match code {
        400 => wire::respond(&mut sock, 400, &xml, b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified</Message></Error>"),
        200 => {
            let (Some(d), Some(f)) = (digest, file) else { return };
            let Ok(data) = std::fs::File::open(&f) else { return };
            let n = data.metadata().map(|m| m.len()).unwrap_or(0);
            let faults = shared.matching(&d, Some(&d));
            let octets = [("Content-Type".to_string(), "application/octet-stream".to_string())];
            wire::send_body(&mut sock, &octets, data, n, &faults, req.method == "HEAD");
        }
        _ => wire::respond(&mut sock, code, &xml, b"<Error><Code>NoSuchKey</Code></Error>"),
    }
}

/// Binds the blob host on 127.0.0.1; the registry names it `localhost:PORT`
/// (see [`blob_host_name`]).
pub(crate) fn bind_blob_host() -> Result<TcpListener, String> {
    TcpListener::bind("127.0.0.1:0").map_err(|e| format!("blob host: bind 127.0.0.1: {e}"))
}

/// `localhost:PORT` for a server bound on `127.0.0.1:PORT`: another host than
/// the registry's `127.0.0.1` (so a client must drop the registry's
/// credential), and a name, as cloud storage hosts are: go-containerregistry
/// v0.22 (crane) refuses to follow a redirect to, or take a token from, a
/// loopback or private IP literal (`pkg/v1/remote/transport/bearer.go`
/// `validateRealmURL`, its redirect policy's "SSRF protection").
pub(crate) fn blob_host_name(addr: &str) -> String {
    addr.replace("127.0.0.1", "localhost")
}

/// Serves the registry's filesystem `storage` root on `listener`.
pub(crate) fn serve_blob_host(listener: TcpListener, storage: PathBuf, shared: Arc<Shared>) -> Listener {
    Listener::spawn(listener, move |sock| blob(sock, &storage, &shared))
}
