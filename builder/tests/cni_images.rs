//! Seed row 43: every image of the CNI manifest exists for every architecture
//! the profile builds. `kiln pin --cni-manifest` resolves the images through a
//! loopback registry speaking the OCI distribution API with anonymous Bearer
//! token auth; `kiln check` (offline) refuses an architecture an image lacks.

mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

const TOKEN: &str = "tok-kiln-test";

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", kiln::hash::hex(&Sha256::digest(b)))
}

/// A registry on 127.0.0.1: `cni/multi` is an OCI index (amd64, arm64/v8 and
/// an attestation), `cni/single` a single amd64 manifest whose config blob is
/// redirected to `/cdn/…`, `cni/moved` redirects to `cni/multi`. Every `/v2/`
/// request without the token gets a 401 Bearer challenge; `/token` hands it out.
struct Registry {
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Registry {
    fn start() -> Registry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
        let single = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[]}}"#,
            sha(&config),
            config.len()
        )
        .into_bytes();
        let plat = |a: &str, v: &str| {
            let var = if v.is_empty() { String::new() } else { format!(r#","variant":"{v}""#) };
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1,"platform":{{"architecture":"{a}","os":"{}"{var}}}}}"#,
                sha(a.as_bytes()),
                if a == "unknown" { "unknown" } else { "linux" }
            )
        };
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{},{},{}]}}"#,
            plat("amd64", ""),
            plat("arm64", "v8"),
            plat("unknown", "")
        )
        .into_bytes();
        let (l, a) = (Arc::clone(&log), addr.clone());
        std::thread::spawn(move || {
            for sock in listener.incoming().flatten() {
                let mut r = BufReader::new(sock);
                let mut first = String::new();
                if r.read_line(&mut first).is_err() {
                    continue;
                }
                let mut auth = String::new();
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.strip_prefix("Authorization:").or_else(|| h.strip_prefix("authorization:")) {
                        auth = v.trim().to_string();
                    }
                }
                let path = first.split_whitespace().nth(1).unwrap_or_default().to_string();
                l.lock().unwrap().push(format!("{path} auth={}", !auth.is_empty()));
                let cfg_path = format!("/v2/cni/single/blobs/{}", sha(&config));
                let (status, headers, body): (&str, String, Vec<u8>) = if path.starts_with("/token?") {
                    ("200 OK", String::new(), format!(r#"{{"token":"{TOKEN}"}}"#).into_bytes())
                } else if path.starts_with("/cdn/") {
                    ("200 OK", String::new(), config.clone())
                } else if path.starts_with("/v2/") && auth != format!("Bearer {TOKEN}") {
                    let repo = path.trim_start_matches("/v2/").split("/manifests/").next().unwrap_or_default();
                    let repo = repo.split("/blobs/").next().unwrap_or_default();
                    (
                        "401 Unauthorized",
                        format!("WWW-Authenticate: Bearer realm=\"http://{a}/token\",service=\"kiln-test\",scope=\"repository:{repo}:pull\"\r\n"),
                        b"{}".to_vec(),
                    )
                } else if path == "/v2/cni/multi/manifests/v1" {
                    ("200 OK", format!("Docker-Content-Digest: {}\r\n", sha(&index)), index.clone())
                } else if path == "/v2/cni/single/manifests/v1" {
                    ("200 OK", format!("Docker-Content-Digest: {}\r\n", sha(&single)), single.clone())
                } else if path == "/v2/cni/moved/manifests/v1" {
                    ("302 Found", "Location: /v2/cni/multi/manifests/v1\r\n".into(), Vec::new())
                } else if path == cfg_path {
                    ("307 Temporary Redirect", format!("Location: http://{a}/cdn/{}\r\n", sha(&config)), Vec::new())
                } else {
                    ("404 Not Found", String::new(), b"{}".to_vec())
                };
                let mut s = r.into_inner();
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(&body);
            }
        });
        Registry { addr, log }
    }
}

fn manifest(images: &[String]) -> String {
    let mut y =
        String::from("apiVersion: apps/v1\nkind: DaemonSet\nspec:\n  template:\n    spec:\n      initContainers:\n");
    for (i, img) in images.iter().enumerate() {
        if i == 1 {
            y.push_str("      containers:\n");
        }
        y.push_str(&format!("      - name: c{i}\n        image: \"{img}\"\n"));
    }
    y
}

fn pin_with(s: &Scratch, m: &std::path::Path) -> std::process::Output {
    run(kiln()
        .arg("pin")
        .arg("--profile")
        .arg(s.profile("debian-1.34"))
        .arg("--base-url")
        .arg(s.mirror.url())
        .arg("--cni-manifest")
        .arg(m))
}

/// Row 43: an amd64-only image in the CNI manifest of an amd64+arm64 profile
/// is refused by `kiln check`, naming the image, the arch and the profile's
/// `file:line:col`; the multi-arch images (one behind a redirect) pass. Every
/// registry request first got a 401 Bearer challenge and the token was used.
#[test]
fn a_cni_image_without_an_arm64_build_is_refused_for_an_arm64_profile() {
    let s = Scratch::new(&["debian-1.34"]);
    let reg = Registry::start();
    let [multi, moved, single] = ["multi", "moved", "single"].map(|n| format!("{}/cni/{n}:v1", reg.addr));
    let m = s.path("cni.yaml");
    std::fs::write(&m, manifest(&[multi.clone(), moved.clone(), single.clone()])).unwrap();
    let o = pin_with(&s, &m);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(s.profile("debian-1.34")).unwrap();
    for img in [&multi, &moved, &single] {
        assert!(text.contains(&format!("[cni_images.\"{img}\"]")), "{img} recorded:\n{text}");
    }
    assert!(text.contains(r#"platforms = ["linux/amd64", "linux/arm64/v8"]"#), "{text}");
    assert!(text.contains(r#"platforms = ["linux/amd64"]"#), "{text}");
    assert!(!text.contains("unknown/unknown"), "attestations are not platforms: {text}");
    let log = reg.log.lock().unwrap().clone();
    assert!(
        log.iter().any(|l| l.starts_with("/token?") && l.contains("scope=repository%3Acni%2Fsingle%3Apull")),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l == "/v2/cni/single/manifests/v1 auth=false"), "{log:?}");
    assert!(log.iter().any(|l| l == "/v2/cni/single/manifests/v1 auth=true"), "{log:?}");
    assert!(log.iter().any(|l| l.starts_with("/cdn/")), "the config blob's redirect is followed: {log:?}");

    let o = run(kiln().arg("check").arg(s.profile("debian-1.34")));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let bad: Vec<&str> = err.lines().filter(|l| l.contains("cni-image-arch")).collect();
    assert_eq!(bad.len(), 1, "only the single-arch image, only arm64: {err}");
    let line = text.lines().position(|l| l.contains(&format!("[cni_images.\"{single}\"]"))).unwrap() + 1;
    assert!(bad[0].contains(&format!("debian-1.34.toml:{line}:")), "{}", bad[0]);
    assert!(bad[0].contains(&format!("`{single}` has no linux/arm64 build")), "{}", bad[0]);

    // Without the single-arch image the profile checks clean.
    std::fs::write(&m, manifest(&[multi, moved])).unwrap();
    let o = pin_with(&s, &m);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!std::fs::read_to_string(s.profile("debian-1.34")).unwrap().contains("cni/single"));
    let o = run(kiln().arg("check").arg(s.profile("debian-1.34")));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A manifest naming an image the registry does not have fails the pin
/// (exit 1, naming the image) and leaves the profile unchanged.
#[test]
fn a_cni_image_the_registry_lacks_fails_the_pin_and_changes_nothing() {
    let s = Scratch::new(&["debian-1.34"]);
    let reg = Registry::start();
    let before = std::fs::read_to_string(s.profile("debian-1.34")).unwrap();
    let m = s.path("cni.yaml");
    let missing = format!("{}/cni/nothere:v1", reg.addr);
    std::fs::write(&m, manifest(std::slice::from_ref(&missing))).unwrap();
    let o = pin_with(&s, &m);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("resolving {missing}")) && err.contains("HTTP 404"), "{err}");
    assert_eq!(std::fs::read_to_string(s.profile("debian-1.34")).unwrap(), before);
}

/// Row 43 from the pinned manifest: `kiln check` refuses a profile whose own
/// `[cni_manifest]` names an image `[cni_images]` does not record ("run kiln
/// pin"); `kiln pin` without `--cni-manifest` resolves exactly that manifest's
/// images, so `cni-image-arch` checks the images the init node applies.
#[test]
fn kiln_pin_resolves_the_images_of_the_profiles_own_cni_manifest() {
    let s = Scratch::new(&["debian-1.34"]);
    let reg = Registry::start();
    let [multi, single] = ["multi", "single"].map(|n| format!("{}/cni/{n}:v1", reg.addr));
    std::fs::create_dir_all(s.path("profiles/cni")).unwrap();
    let file = s.path("profiles/cni/cni.yaml");
    std::fs::write(&file, manifest(&[multi.clone(), single.clone()])).unwrap();
    let p = s.profile("debian-1.34");
    let base = std::fs::read_to_string(&p).unwrap();
    let with_manifest = |text: &str| {
        let sha = kiln::hash::hex(&Sha256::digest(text.as_bytes()));
        std::fs::write(&file, text).unwrap();
        std::fs::write(&p, format!("{base}\n[cni_manifest]\npath = \"cni/cni.yaml\"\nsha256 = \"{sha}\"\n")).unwrap();
    };
    with_manifest(&manifest(&[multi.clone(), single.clone()]));
    let check = || run(kiln().arg("check").arg(&p));
    let o = check();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for img in [&multi, &single] {
        assert!(
            err.lines().any(|l| l.contains("cni-image-pinned")
                && l.contains(&format!("names image `{img}`"))
                && l.contains("run `kiln pin --profile")),
            "{img}: {err}"
        );
    }
    let pin = || run(kiln().arg("pin").arg("--profile").arg(&p).arg("--base-url").arg(s.mirror.url()));
    let o = pin();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&p).unwrap();
    for img in [&multi, &single] {
        assert!(text.contains(&format!("[cni_images.\"{img}\"]")), "{img} recorded:\n{text}");
    }
    let o = check();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("cni-image-pinned"), "{err}");
    let bad: Vec<&str> = err.lines().filter(|l| l.contains("cni-image-arch")).collect();
    assert_eq!(bad.len(), 1, "{err}");
    assert!(bad[0].contains(&format!("`{single}` has no linux/arm64 build")), "{}", bad[0]);
    // The manifest drops the single-arch image: re-pinned, its record goes too.
    with_manifest(&manifest(std::slice::from_ref(&multi)));
    let o = pin();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!std::fs::read_to_string(&p).unwrap().contains("cni/single"));
    let o = check();
    assert!(o.status.success(), "{}", stderr(&o));
}
