//! The registry kit (`kiln_testkit::registry`) held to the real programs: the
//! registry and crane `tests/k8s/build` built report the versions their
//! wrapper modules pin; the seven test images (`tests/k8s/images`) push into the
//! real distribution registry and come back, by tag and by digest, through
//! the kit's front with token auth, blob downloads redirected to the blob
//! host; the real crane pulls through it too; each fault does to the bytes
//! what it says.
//!
//! Needs `KILN_K8S_BIN_REGISTRY` and `KILN_K8S_BIN_CRANE` (set by
//! `./scripts/test` from `tests/k8s/build`) and the programs `tests/k8s/images`
//! makes the images of (`KILN_K8S_BIN_V1_34_2`'s kubeadm, the v1.34.2
//! control-plane, etcd, coredns and pause targets): missing, each is a failure
//! naming its build command, never a skip.

use kiln_testkit::registry::{self, Auth, Config, Fault, Registry, TestImage, Via};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// The version `tests/k8s/NAME/go.mod` requires of `module`.
fn pinned(name: &str, module: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s").join(name).join("go.mod");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .find_map(|l| l.trim().trim_start_matches("require ").strip_prefix(&format!("{module} ")))
        .map(|v| v.split_whitespace().next().unwrap_or_default().to_string())
        .unwrap_or_else(|| panic!("{} does not require {module}", path.display()))
}

fn said(prog: &Path, args: &[&str]) -> String {
    let o = Command::new(prog).args(args).output().unwrap_or_else(|e| panic!("{}: {e}", prog.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{} {args:?} failed: {text}", prog.display());
    text
}

#[test]
fn the_built_registry_and_crane_report_the_versions_their_wrapper_modules_pin() {
    let want = pinned("registry", "github.com/distribution/distribution/v3");
    // distribution version/print.go: os.Args[0], mainpkg, version (the Makefile's ldflags).
    let text = said(&ok(registry::bin()), &["--version"]);
    assert!(
        text.trim_end().ends_with(&format!(" github.com/distribution/distribution/v3 {want}")),
        "registry --version printed {text:?}, not distribution {want}"
    );
    let want = pinned("crane", "github.com/google/go-containerregistry");
    assert_eq!(said(&ok(registry::crane()), &["version"]).trim(), want, "crane version");
}

/// The test images and a registry holding them (token auth, blobs redirected).
struct Setup {
    _dir: tempfile::TempDir,
    images: Vec<TestImage>,
    reg: Registry,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    let (reg, images) = ok(registry::with_test_images(dir.path(), Config { auth: Auth::Token, redirect_blobs: true }));
    eprintln!("made and pushed {} images in {:.1} s", images.len(), t.elapsed().as_secs_f64());
    Setup { _dir: dir, images, reg }
}

fn image<'a>(s: &'a Setup, name: &str) -> &'a TestImage {
    s.images.iter().find(|i| i.repository.ends_with(name)).unwrap_or_else(|| panic!("no {name} in {:?}", s.images))
}

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json";

/// An answer: status, headers (lowercased names), body (what arrived before any error).
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    error: Option<String>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

fn get(url: &str, token: Option<&str>) -> Got {
    let agent = ureq::AgentBuilder::new().redirects(0).timeout(Duration::from_secs(60)).build();
    let mut req = agent.get(url).set("Accept", ACCEPT);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let resp = match req.call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .map(|n| (n.clone(), resp.header(&n).unwrap_or_default().to_string()))
        .collect();
    let mut body = Vec::new();
    let error = resp.into_reader().read_to_end(&mut body).err().map(|e| e.to_string());
    Got { status, headers, body, error }
}

/// Follows a 401's Bearer challenge to the token server, as a client does.
fn token_for(challenge: &Got) -> String {
    assert_eq!(challenge.status, 401, "{}", String::from_utf8_lossy(&challenge.body));
    let h = challenge.header("www-authenticate").expect("a 401 names its token server");
    let param = |k: &str| {
        h.split(&format!("{k}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or_else(|| panic!("{k} in {h}"))
    };
    let mut url = url::Url::parse(param("realm")).expect("realm is a URL");
    url.query_pairs_mut().append_pair("service", param("service")).append_pair("scope", param("scope"));
    let got = get(url.as_str(), None);
    assert_eq!(got.status, 200, "{url}: {}", String::from_utf8_lossy(&got.body));
    let v: serde_json::Value = serde_json::from_slice(&got.body).expect("token JSON");
    v["token"].as_str().expect("a token").to_string()
}

/// Every test image by tag and by digest through the front, its manifest
/// and config by digest, its layer through the registry's 307 to the blob
/// host, each hashing to what `images.json` names; the token is the token
/// server's and is good for its repository only.
#[test]
fn the_seven_test_images_come_back_by_tag_and_digest_through_the_front_with_token_auth() {
    let s = setup();
    assert_eq!(s.images.len(), 7, "kubeadm v1.34.2's seven images: {:?}", s.images);
    let base = s.reg.url();
    for i in &s.images {
        let by_tag = format!("{base}/v2/{}/manifests/{}", i.repository, i.tag);
        let challenge = get(&by_tag, None);
        let want = format!("scope=\"repository:{}:pull\"", i.repository);
        assert!(challenge.header("www-authenticate").is_some_and(|h| h.contains(&want)), "{:?}", challenge.headers);
        let token = token_for(&challenge);
        for url in [by_tag.clone(), format!("{base}/v2/{}/manifests/{}", i.repository, i.index_digest)] {
            let got = get(&url, Some(&token));
            assert_eq!((got.status, sha(&got.body)), (200, i.index_digest.clone()), "{url}");
            assert_eq!(got.header("docker-content-digest"), Some(i.index_digest.as_str()), "{url}");
        }
        let manifest = get(&format!("{base}/v2/{}/manifests/{}", i.repository, i.manifest_digest), Some(&token));
        assert_eq!(sha(&manifest.body), i.manifest_digest);
        for blob in [&i.config_digest, &i.layer_digest] {
            let url = format!("{base}/v2/{}/blobs/{blob}", i.repository);
            let redirect = get(&url, Some(&token));
            assert_eq!(redirect.status, 307, "{url}: the registry redirects blob downloads");
            let location = redirect.header("location").expect("Location").to_string();
            assert!(location.starts_with("http://localhost:"), "{location}");
            assert_eq!(get(&location, Some(&token)).status, 400, "the blob host refuses a forwarded credential");
            let got = get(&location, None);
            assert_eq!((got.status, sha(&got.body)), (200, blob.clone()), "{location}");
        }
    }
    // The registry checks the token's access claim: pause's token is no good for etcd.
    let pause = image(&s, "pause");
    let token = token_for(&get(&format!("{base}/v2/{}/manifests/{}", pause.repository, pause.tag), None));
    let etcd = image(&s, "etcd");
    let refused = get(&format!("{base}/v2/{}/manifests/{}", etcd.repository, etcd.tag), Some(&token));
    assert_eq!(refused.status, 401, "a token for {} opened {}", pause.repository, etcd.repository);
    assert!(
        refused.header("www-authenticate").is_some_and(|h| h.contains("insufficient_scope")),
        "{:?}",
        refused.headers
    );
    let hits = s.reg.hits();
    assert!(hits.iter().any(|h| h.via == Via::TokenServer && h.status == 200), "{hits:?}");
    assert!(hits.iter().any(|h| h.via == Via::BlobHost && h.status == 200 && !h.authorization), "{hits:?}");
}

/// The real crane resolves every test image through the front (token auth,
/// the 307 to the blob host) to `index_digest`, and pulls one as an OCI layout.
#[test]
fn the_real_crane_resolves_and_pulls_the_test_images_through_the_front() {
    let s = setup();
    let crane = ok(registry::crane());
    for i in &s.images {
        let r = format!("{}/{}:{}", s.reg.host(), i.repository, i.tag);
        assert_eq!(said(&crane, &["digest", "--insecure", &r]).trim(), i.index_digest, "crane digest {r}");
    }
    let out = s._dir.path().join("layout");
    let pause = image(&s, "pause");
    let r = format!("{}/{}:{}", s.reg.host(), pause.repository, pause.tag);
    said(&crane, &["pull", "--insecure", "--format", "oci", &r, out.to_str().expect("utf-8 path")]);
    let hex = pause.layer_digest.trim_start_matches("sha256:");
    let layer = std::fs::read(out.join("blobs/sha256").join(hex)).expect("crane pulled the layer");
    assert_eq!(sha(&layer), pause.layer_digest);
    assert!(s.reg.hits().iter().any(|h| h.via == Via::BlobHost && h.status == 200), "crane followed the redirect");
}

/// Each fault changes the bytes as it says, and only for its target;
/// `clear_faults` restores the registry's answers.
#[test]
fn each_fault_does_what_it_says_to_the_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = ok(Registry::start(&ok(registry::bin()), &dir.path().join("registry"), Config::default()));
    let paths = ["amd64", "arm64"].map(|a| ok(registry::tiny_archive(&dir.path().join(format!("tiny-{a}.tar")), a)));
    let multi = ok(reg.push_multi_platform(&[&paths[0], &paths[1]], "tiny:multi"));
    let single = ok(reg.push_oci_archive(&paths[0], "tiny:amd64"));
    let base = reg.url();
    let index = get(&format!("{base}/v2/tiny/manifests/multi"), None);
    assert_eq!((index.status, sha(&index.body)), (200, multi.clone()));
    let doc: serde_json::Value = serde_json::from_slice(&index.body).expect("index JSON");
    let arches: Vec<&str> = doc["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| m.pointer("/platform/architecture")?.as_str())
        .collect();
    assert_eq!(arches, ["amd64", "arm64"]);
    let manifest: serde_json::Value = serde_json::from_slice(
        &get(&format!("{base}/v2/tiny/manifests/{}", doc["manifests"][0]["digest"].as_str().expect("digest")), None)
            .body,
    )
    .expect("manifest JSON");
    let config = manifest["config"]["digest"].as_str().expect("config").to_string();
    let blob_url = format!("{base}/v2/tiny/blobs/{config}");
    let clean = get(&blob_url, None).body;
    assert_eq!(sha(&clean), config);

    reg.fault(Fault::DropPlatform("arm64".into()));
    let dropped = get(&format!("{base}/v2/tiny/manifests/multi"), None);
    let d: serde_json::Value = serde_json::from_slice(&dropped.body).expect("JSON");
    assert_eq!(d["manifests"].as_array().map(Vec::len), Some(1), "{d}");
    assert_eq!(
        dropped.header("docker-content-digest"),
        Some(sha(&dropped.body).as_str()),
        "an honest digest of what is sent"
    );
    assert_eq!(
        sha(&get(&format!("{base}/v2/tiny/manifests/amd64"), None).body),
        single,
        "a one-platform index is unchanged"
    );
    reg.clear_faults();

    reg.fault(Fault::WrongManifest("multi".into()));
    let wrong = get(&format!("{base}/v2/tiny/manifests/multi"), None);
    assert_ne!(sha(&wrong.body), multi);
    assert_eq!(wrong.header("docker-content-digest"), Some(multi.as_str()), "the lie keeps the real digest");
    assert!(serde_json::from_slice::<serde_json::Value>(&wrong.body).is_ok(), "well-formed");
    reg.clear_faults();

    reg.fault(Fault::Corrupt(config.clone()));
    let bad = get(&blob_url, None).body;
    assert_eq!(bad.len(), clean.len());
    assert_eq!(bad.iter().zip(&clean).filter(|(a, b)| a != b).count(), 1, "exactly one byte differs");
    reg.clear_faults();

    reg.fault(Fault::ExtraBytes { target: config.clone(), extra: 10 });
    assert_eq!(get(&blob_url, None).body.len(), clean.len() + 10);
    reg.clear_faults();

    reg.fault(Fault::LieContentLength { target: config.clone(), length: clean.len() as u64 + 100 });
    let short = get(&blob_url, None);
    assert_eq!(short.header("content-length"), Some((clean.len() + 100).to_string().as_str()));
    assert_eq!(short.body, clean, "the real bytes, then the connection closes");
    assert!(short.error.is_some(), "the client sees the body end early");
    reg.clear_faults();

    reg.fault(Fault::Status { target: "multi".into(), code: 503, times: 1 });
    assert_eq!(get(&format!("{base}/v2/tiny/manifests/multi"), None).status, 503);
    assert_eq!(get(&format!("{base}/v2/tiny/manifests/multi"), None).status, 200, "only once");

    reg.fault(Fault::Trickle(config.clone()));
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_millis(2500)).build();
    let mut body = Vec::new();
    let started = Instant::now();
    let r = agent.get(&blob_url).call().expect("the head arrives at once");
    let _ = r.into_reader().read_to_end(&mut body);
    assert!(
        started.elapsed() >= Duration::from_secs(2) && body.len() <= 3,
        "{} bytes in {:?}",
        body.len(),
        started.elapsed()
    );
    reg.clear_faults();
    assert_eq!(get(&blob_url, None).body, clean, "no faults, the registry's bytes");
}
