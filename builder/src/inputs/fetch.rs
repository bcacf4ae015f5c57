//! Fetching pinned artifacts into the cache: HTTP(S) or a mirror, verified while streaming.
//!
//! A download is hashed as it is written to a temporary file in the cache and
//! only renamed into place when the digest matches its pin. A mismatch fails
//! closed (exit 3) with the URL and both digests, and leaves nothing behind.
//!
//! Hostile mirrors are bounded: redirects are followed by kiln itself and only
//! to `http://`/`https://` URLs ([`MAX_REDIRECTS`] hops); a body is read up to
//! the artifact's pinned size (or [`MAX_DOWNLOAD`] when none is pinned) and no
//! further; every artifact has one deadline over all its attempts
//! ([`FetchOptions::deadline`]); a mirror directory entry must be a regular file.

use crate::error::{Error, Result};
use crate::hash;
use crate::inputs::cache::{Cache, Entry};
use crate::inputs::profile::Artifact;
use crate::io::open_regular;
use crate::mirror_path::{rebase_url, url_path};
use crate::progress::{human_bytes, Progress};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The cap on an artifact download when the profile pins no size: 2 GiB.
///
/// The largest artifact kiln installs upstream (kubelet, CNI plugins) is
/// under 100 MB; 2 GiB leaves room for any release tarball while keeping a
/// hostile endless body from filling the cache's disk. Pin sizes with
/// `kiln pin` for an exact bound.
pub const MAX_DOWNLOAD: u64 = 2 << 30;

/// The cap on a checksum file (`.sha256`) read by `kiln pin`: 64 KiB.
pub const MAX_TEXT: u64 = 64 << 10;

/// Redirect hops followed per request: 10, the bound Go's HTTP client (the
/// one kubeadm, containerd and the registries' own tools use) puts on a
/// request (`net/http/client.go`, `defaultCheckRedirect`: "stopped after 10
/// redirects"); curl's `--max-redirs` default is 50. dl.k8s.io needs one or
/// two. The 11th redirect is refused.
pub const MAX_REDIRECTS: usize = 10;

/// Where artifacts come from instead of their upstream host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mirror {
    /// A local directory holding upstream paths (`DIR/release/v1.34.2/bin/linux/amd64/kubelet`).
    Dir(PathBuf),
    /// An HTTP(S) base URL serving upstream paths.
    Url(String),
}

impl Mirror {
    /// Parses `--mirror`: `http://` or `https://` is a URL, anything else a directory.
    pub fn parse(s: &str) -> Mirror {
        if s.starts_with("http://") || s.starts_with("https://") {
            Mirror::Url(s.trim_end_matches('/').to_string())
        } else {
            Mirror::Dir(PathBuf::from(s.strip_prefix("file://").unwrap_or(s)))
        }
    }

    /// Parses `--mirror` like [`Mirror::parse`] and refuses what cannot work:
    /// a URL without a host, with credentials (they would be printed and
    /// recorded), a query or fragment (kiln appends upstream's paths), or an
    /// empty directory name.
    pub fn parse_checked(s: &str) -> std::result::Result<Mirror, String> {
        match Mirror::parse(s) {
            Mirror::Url(u) => {
                crate::inputs::validate::url(&u)?;
                if !is_http_url(&u) || url_path(&u).contains(['?', '#']) {
                    return Err(format!(
                        "mirror URL `{}` must be http(s)://HOST[/PATH] without a query or fragment",
                        printable(&u)
                    ));
                }
                Ok(Mirror::Url(u))
            }
            Mirror::Dir(d) if d.as_os_str().is_empty() => {
                Err("name a mirror directory or an http(s):// URL".to_string())
            }
            dir => Ok(dir),
        }
    }
}

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Mirror to use instead of upstream hosts.
    pub mirror: Option<Mirror>,
    /// Never contact upstream hosts (the cache and a mirror only).
    pub offline: bool,
    /// Attempts per artifact for transient failures (≥ 1).
    pub attempts: u32,
    /// Timeout for connecting and for each read.
    pub timeout: Duration,
    /// First backoff delay; doubles per attempt.
    pub backoff: Duration,
    /// Parallel downloads.
    pub jobs: usize,
    /// Total time for one artifact, every attempt and backoff included.
    pub deadline: Duration,
    /// Cap on a download whose size the profile does not pin.
    pub max_size: u64,
    /// A registry (distribution API, `http(s)://HOST[/PATH]`) that serves the
    /// profile's container images instead of their own registries, as a
    /// containerd `hosts.toml` mirror does (`/v2/<repository>/…?ns=<registry>`).
    pub registry_mirror: Option<String>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            mirror: None,
            offline: false,
            attempts: 4,
            timeout: Duration::from_secs(30),
            backoff: Duration::from_millis(500),
            jobs: 4,
            // 20 minutes: a 2 GiB download at 2 MB/s, or kubelet at 100 kB/s.
            deadline: Duration::from_secs(20 * 60),
            max_size: MAX_DOWNLOAD,
            registry_mirror: None,
        }
    }
}

/// Builds the blocking HTTP agent used for downloads and checksum files.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(timeout.min(Duration::from_secs(15)))
        .timeout_read(timeout)
        // ureq 2 applies the read timeout when it connects; a pooled connection
        // could outlive it, so every request gets a fresh connection.
        .max_idle_connections(0)
        // Redirects are followed by `get` below, which refuses other schemes
        // (ureq 2 panics on a redirect to `file:` or `data:`).
        .redirects(0)
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Why one attempt failed, and whether another may succeed.
pub(crate) enum Attempt {
    /// Worth retrying up to `--attempts` times: timeouts, HTTP 5xx and 429,
    /// a body cut short.
    Transient(String),
    /// Retried once at most: a refused or unreachable connection (a mirror
    /// restarting heals in seconds, a host without a listener never does),
    /// a temporary DNS failure.
    Doubtful(String),
    /// Never retried: a host name that does not resolve, 404 and other 4xx,
    /// a redirect kiln refuses, bytes that contradict the pin.
    Final(Cause),
}

/// Why an artifact could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Its bytes contradict the pin (sha256 or pinned size): exit 3. The
    /// message is complete (artifact, source, both digests, what to do).
    Mismatch(String),
    /// The source has no such file: HTTP 404, or no file at its path in a
    /// mirror directory.
    NotFound,
    /// Anything else, as one line naming neither the artifact nor its source.
    Failed(String),
}

impl Cause {
    /// The cause as printed after the artifact and its source.
    fn text(&self) -> &str {
        match self {
            Cause::Mismatch(m) | Cause::Failed(m) => m,
            Cause::NotFound => NOT_FOUND,
        }
    }
}

const NOT_FOUND: &str = "not found (HTTP 404)";

/// An artifact that could not be fetched, where kiln tried, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The artifact.
    pub artifact: Artifact,
    /// Where kiln fetched it from: a URL, or a path in a mirror directory.
    pub source: String,
    /// Why it failed (the last cause, after every attempt).
    pub cause: Cause,
}

/// What [`fetch_each`] did: the cache entry of every artifact that is in the
/// cache now (input order; `None` for a failure) and every failure.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The verified cache entry of each artifact, in input order.
    pub blobs: Vec<Option<PathBuf>>,
    /// The artifacts that could not be fetched, in input order.
    pub failures: Vec<Failure>,
    /// How many distinct artifacts had to be fetched (not in the cache).
    pub fetched: usize,
}

/// Makes sure every artifact is in the cache, fetching what is missing in parallel.
/// Returns the cache path for each artifact, in input order; when some
/// cannot be fetched, one error summarises all of them ([`failure_report`]).
pub fn fetch_all(
    cache: &Cache,
    opts: &FetchOptions,
    artifacts: &[Artifact],
    progress: &Progress,
) -> Result<Vec<PathBuf>> {
    let outcome = fetch_each(cache, opts, artifacts, progress)?;
    if !outcome.failures.is_empty() {
        return Err(failure_report(&outcome.failures, outcome.fetched, opts));
    }
    artifacts
        .iter()
        .zip(outcome.blobs)
        .map(|(a, blob)| {
            blob.ok_or_else(|| Error::build(format!("{} vanished from the cache while building; run again", a.sha256)))
        })
        .collect()
}

/// Like [`fetch_all`], but tries every artifact and returns what succeeded
/// next to what failed, so that a caller can keep the successes. Errors only
/// when nothing can be tried: the cache cannot be read, or `--offline`
/// without a mirror and some artifacts are not cached.
pub fn fetch_each(cache: &Cache, opts: &FetchOptions, artifacts: &[Artifact], progress: &Progress) -> Result<Outcome> {
    let missing = uncached(cache, artifacts, progress)?;
    if opts.offline && opts.mirror.is_none() && !missing.is_empty() {
        return Err(offline_report(cache, &missing));
    }
    if !missing.is_empty() {
        progress.step(format!("fetching {} artifact(s) into {}", missing.len(), cache.root().display()));
    }
    let fetched = missing.len();
    let mut failures = fetch_parallel(cache, opts, missing, progress);
    failures.sort_by_key(|f| artifacts.iter().position(|a| a == &f.artifact));
    let blobs = artifacts
        .iter()
        .map(|a| match failures.iter().any(|f| f.artifact.sha256 == a.sha256) {
            true => None,
            false => cache.lookup(&a.sha256),
        })
        .collect();
    Ok(Outcome { blobs, failures, fetched })
}

/// The distinct artifacts (by sha256) that are not validly in the cache;
/// corrupt entries are removed (with a warning) and count as missing.
fn uncached<'a>(cache: &Cache, artifacts: &'a [Artifact], progress: &Progress) -> Result<Vec<&'a Artifact>> {
    let mut missing: Vec<&Artifact> = Vec::new();
    let mut checked: Vec<&str> = Vec::new();
    let (mut hashed, mut stamped) = (0, 0);
    for a in artifacts {
        if checked.contains(&a.sha256.as_str()) {
            continue;
        }
        checked.push(&a.sha256);
        // Hashed again unless unchanged since it was (and hashed as it is packed).
        match cache.check(&a.sha256)? {
            Entry::Valid(_, crate::inputs::cache::Verified::Hashed) => hashed += 1,
            Entry::Valid(_, crate::inputs::cache::Verified::Stamp) => stamped += 1,
            Entry::Missing => missing.push(a),
            Entry::Corrupt(actual) => {
                progress.warn(format!(
                    "cached {} {} ({}) was corrupt (sha256 {actual}, pinned {}); removed it, fetching it again",
                    a.name, a.version, a.arch, a.sha256
                ));
                missing.push(a);
            }
        }
    }
    progress.detail(format!(
        "cache {}: {hashed} entr{} hashed, {stamped} unchanged since verified (stamp), {} to fetch",
        cache.root().display(),
        if hashed == 1 { "y" } else { "ies" },
        missing.len()
    ));
    Ok(missing)
}

/// `--offline` without a mirror: every artifact the cache lacks, with what fetches it.
fn offline_report(cache: &Cache, missing: &[&Artifact]) -> Error {
    let list: Vec<String> = missing
        .iter()
        .map(|a| format!("  {} {} ({}) {} sha256={}", a.name, a.version, a.arch, a.url, a.sha256))
        .collect();
    Error::build(format!(
        "--offline and {} artifact(s) are not in the cache {}:\n{}\nfetch them once without --offline, or pass --mirror DIR holding the same paths as upstream (`kiln mirror PROFILE... --out DIR` fills one where upstream is reachable)",
        missing.len(),
        cache.root().display(),
        list.join("\n")
    ))
}

/// Fetches `missing` on `opts.jobs` threads; every artifact is tried, and
/// each one that fails is returned.
fn fetch_parallel(cache: &Cache, opts: &FetchOptions, missing: Vec<&Artifact>, progress: &Progress) -> Vec<Failure> {
    let queue = Mutex::new(missing.into_iter());
    let failures: Mutex<Vec<Failure>> = Mutex::new(Vec::new());
    let agent = agent(opts.timeout);
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1) {
            s.spawn(|| loop {
                let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
                let Some(a) = next else { break };
                if let Err(f) = fetch_one(cache, opts, &agent, a, progress) {
                    if let Ok(mut all) = failures.lock() {
                        all.push(*f);
                    }
                }
            });
        }
    });
    failures.into_inner().unwrap_or_default()
}

/// One error for every failed artifact. Verification failures come first
/// and decide the exit code (3); files missing from a mirror directory are
/// listed with their path, upstream URL and sha256; every other failure is
/// one line (artifact, source, last cause), followed by the next steps.
pub fn failure_report(failures: &[Failure], fetched: usize, opts: &FetchOptions) -> Error {
    let mut lines: Vec<String> = Vec::new();
    let mut mismatch = false;
    for f in failures {
        if let Cause::Mismatch(m) = &f.cause {
            lines.push(m.clone());
            mismatch = true;
        }
    }
    let dir = match &opts.mirror {
        Some(Mirror::Dir(d)) => Some(d),
        _ => None,
    };
    let (missing, other): (Vec<&Failure>, Vec<&Failure>) = failures
        .iter()
        .filter(|f| !matches!(f.cause, Cause::Mismatch(_)))
        .partition(|f| dir.is_some() && f.cause == Cause::NotFound);
    if let (Some(dir), false) = (dir, missing.is_empty()) {
        lines.extend(missing_report(dir, &missing));
    }
    if !other.is_empty() {
        lines.push(format!("{} of {fetched} artifact(s) to fetch could not be fetched:", other.len()));
        for f in &other {
            let a = &f.artifact;
            lines.push(format!("  {} {} ({}) {}: {}", a.name, a.version, a.arch, f.source, f.cause.text()));
        }
        lines.extend(next_steps(opts));
    }
    let message = lines.join("\n");
    if mismatch {
        Error::verify(message)
    } else {
        Error::build(message)
    }
}

/// The lines for artifacts missing from a mirror directory, and how to fill it.
fn missing_report(dir: &Path, missing: &[&Failure]) -> Vec<String> {
    let mut lines =
        vec![format!("{} artifact(s) are missing from the mirror directory {}:", missing.len(), dir.display())];
    for f in missing {
        let a = &f.artifact;
        lines.push(format!(
            "  {} {} ({}) {} (upstream {} sha256 {})",
            a.name, a.version, a.arch, f.source, a.url, a.sha256
        ));
    }
    lines.push(format!(
        "fill it with `kiln mirror PROFILE... --out {}` on a machine that reaches upstream, or copy each upstream URL to its path",
        dir.display()
    ));
    lines
}

/// What to do after network failures, depending on the mirror in use.
fn next_steps(opts: &FetchOptions) -> Vec<String> {
    let first = match &opts.mirror {
        None => "no mirror is in use: check the network (a 404 means a wrong version or URL template in the profile), or fetch from a mirror with --mirror DIR|URL".to_string(),
        Some(Mirror::Url(base)) => format!(
            "check the mirror {base}: it must be up and serve upstream's paths (a 404 means the file is missing there)"
        ),
        Some(Mirror::Dir(dir)) => format!("check the files in the mirror directory {}", dir.display()),
    };
    vec![
        first,
        "`kiln build --offline` lists every artifact missing from the cache, with its URL and sha256".to_string(),
        "`kiln mirror PROFILE... --out DIR` fills a mirror directory on a machine that reaches upstream".to_string(),
    ]
}

fn fetch_one(
    cache: &Cache,
    opts: &FetchOptions,
    agent: &ureq::Agent,
    a: &Artifact,
    progress: &Progress,
) -> Result<(), Box<Failure>> {
    let label = format!("{} {} ({})", a.name, a.version, a.arch);
    let start = Instant::now();
    let (source, result) = match &opts.mirror {
        Some(Mirror::Dir(dir)) => match mirror_path(&a.url) {
            Ok(rel) => {
                let path = dir.join(rel);
                let r = copy_from_file(cache, opts, &path, a, progress, &label);
                (path.display().to_string(), r)
            }
            Err(why) => (a.url.clone(), Err(Cause::Failed(why))),
        },
        Some(Mirror::Url(base)) => {
            let url = rebase_url(base, &a.url);
            let r = download(cache, opts, agent, &url, a, progress, &label);
            (url, r)
        }
        None => (a.url.clone(), download(cache, opts, agent, &a.url, a, progress, &label)),
    };
    match result {
        Ok(size) => {
            progress.step(format!(
                "fetched {label}: {} in {:.1} s from {source}",
                human_bytes(size),
                start.elapsed().as_secs_f64()
            ));
            Ok(())
        }
        Err(cause) => Err(Box::new(Failure { artifact: a.clone(), source, cause })),
    }
}

/// The path of `url` inside a mirror directory: its URL path without the
/// leading `/` (the host is dropped, as on an HTTP mirror).
///
/// Refused, so that nothing is read or written outside the directory: a URL
/// that is not `http(s)://HOST/…`, a query or fragment, an empty, `.` or `..`
/// segment (also percent-encoded, as an HTTP server serving the directory
/// would decode it), an encoded `/`, `\` or NUL, a control character.
pub fn mirror_path(url: &str) -> std::result::Result<PathBuf, String> {
    let refuse = |why: &str| Err(format!("URL `{}` cannot name a file in a mirror directory: {why}", printable(url)));
    if !is_http_url(url) {
        return refuse("it is not an http:// or https:// URL with a host");
    }
    let path = url_path(url);
    if path.contains(['?', '#']) {
        return refuse("it has a query or fragment");
    }
    let mut rel = PathBuf::new();
    for segment in path.trim_start_matches('/').split('/') {
        let lower = segment.to_ascii_lowercase();
        let decoded = lower.replace("%2e", ".");
        if segment.is_empty() || decoded == "." || decoded == ".." {
            return refuse("its path has an empty, `.` or `..` segment");
        }
        if ["%2f", "%5c", "%00"].iter().any(|e| lower.contains(e)) || segment.chars().any(char::is_control) {
            return refuse("its path has an encoded `/`, `\\` or NUL, or a control character");
        }
        rel.push(segment);
    }
    Ok(rel)
}

fn copy_from_file(
    cache: &Cache,
    opts: &FetchOptions,
    path: &Path,
    a: &Artifact,
    progress: &Progress,
    label: &str,
) -> Result<u64, Cause> {
    let src = open_regular(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Cause::NotFound,
        _ => Cause::Failed(format!("cannot be read: {e}")),
    })?;
    let total = src.metadata().map(|m| m.len()).ok();
    let limit = a.size.unwrap_or(opts.max_size);
    let source = path.display().to_string();
    if total.is_some_and(|n| n > limit) {
        return Err(too_large(label, &source, a, limit));
    }
    // The file may grow while it is copied: read one byte past the limit at most.
    let mut src = Bounded { inner: src, read: 0, limit, deadline: None };
    let bar = progress.bar(label, total);
    let tmp = cache.tmp_path(&a.name);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| Cause::Failed(format!("{}: {e}", tmp.display())))?;
        let mut out = BufWriter::new(file);
        let (n, sha) = hash::copy_hashed(&mut src, &mut out, |k| bar.inc(k)).map_err(|e| {
            if is_too_large(&e) {
                too_large(label, &source, a, limit)
            } else {
                Cause::Failed(format!("reading it: {e}"))
            }
        })?;
        out.flush().map_err(|e| Cause::Failed(format!("{}: {e}", tmp.display())))?;
        check_digest(&source, a, &sha)?;
        cache.commit(&tmp, &a.sha256).map_err(|e| Cause::Failed(e.message))?;
        Ok(n)
    })();
    bar.finish_and_clear();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn check_digest(source: &str, a: &Artifact, actual: &str) -> Result<(), Cause> {
    if actual.eq_ignore_ascii_case(&a.sha256) {
        return Ok(());
    }
    Err(Cause::Mismatch(format!(
        "checksum mismatch for {} {} ({}): {source}\n  expected sha256 {}\n  actual   sha256 {actual}\nnothing was cached or written; if upstream really changed, review it and update the pin with `kiln pin`",
        a.name, a.version, a.arch, a.sha256
    )))
}

/// "1 attempt", "4 attempts".
fn attempts(n: u32) -> String {
    format!("{n} attempt{}", if n == 1 { "" } else { "s" })
}

fn download(
    cache: &Cache,
    opts: &FetchOptions,
    agent: &ureq::Agent,
    url: &str,
    a: &Artifact,
    progress: &Progress,
    label: &str,
) -> Result<u64, Cause> {
    let deadline = Instant::now() + opts.deadline;
    let warn = |cause: &str, attempt: u32, most: u32, delay: Duration| {
        progress
            .warn(format!("{label}: {cause}; retrying in {:.1} s (attempt {attempt} of {most})", delay.as_secs_f64()))
    };
    retry(opts, deadline, warn, || download_once(cache, opts, agent, url, a, deadline, progress, label))
}

/// Runs `once` until it succeeds, fails for good, or runs out of attempts
/// (`opts.attempts` for a transient cause, 2 at most for a doubtful one) or
/// of time before `deadline`; the delay between attempts starts at
/// `opts.backoff` and doubles. `on_retry(cause, attempt, most, delay)` is
/// called before each wait. The final cause counts the attempts made.
pub(crate) fn retry<T>(
    opts: &FetchOptions,
    deadline: Instant,
    on_retry: impl Fn(&str, u32, u32, Duration),
    mut once: impl FnMut() -> Result<T, Attempt>,
) -> Result<T, Cause> {
    let mut delay = opts.backoff;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (cause, most) = match once() {
            Ok(v) => return Ok(v),
            Err(Attempt::Final(cause)) => return Err(cause),
            Err(Attempt::Transient(cause)) => (cause, opts.attempts.max(1)),
            Err(Attempt::Doubtful(cause)) => (cause, opts.attempts.clamp(1, 2)),
        };
        if attempt >= most {
            return Err(Cause::Failed(format!("{cause}; {}", attempts(attempt))));
        }
        if deadline.saturating_duration_since(Instant::now()) < delay {
            return Err(Cause::Failed(format!(
                "no complete download within the deadline of {} s per artifact: {cause}; {}",
                opts.deadline.as_secs(),
                attempts(attempt)
            )));
        }
        on_retry(&cause, attempt, most, delay);
        std::thread::sleep(delay);
        delay = delay.saturating_mul(2);
    }
}

/// Whether `url` is an `http://` or `https://` URL (the only schemes kiln fetches).
pub fn is_http_url(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

/// A redirect target as printed in errors: control characters escaped.
pub(crate) fn printable(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

/// `GET url`, following at most [`MAX_REDIRECTS`] redirects to `http`/`https`
/// URLs only, each request bounded by what is left until `deadline`.
/// Returns the response (status < 300) and the URL it came from.
fn get(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    read_timeout: Duration,
    deadline: Instant,
) -> Result<(ureq::Response, String), Attempt> {
    let mut current = url.to_string();
    for _ in 0..=MAX_REDIRECTS {
        // Where a cause happened, when a redirect took kiln elsewhere.
        let at = redirected(url, &current);
        if !is_http_url(&current) {
            return Err(Attempt::Final(Cause::Failed(format!(
                "`{}` is not an http:// or https:// URL; kiln fetches only those",
                printable(&current)
            ))));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Attempt::Transient(format!("deadline reached before requesting{at}")));
        }
        // ureq's overall timeout replaces its per-read one: set it only when the
        // deadline is nearer than a read timeout. Otherwise `Bounded` enforces it.
        let request = agent.request(method, &current);
        let request = if left < read_timeout { request.timeout(left) } else { request };
        let resp = match request.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(404, _)) if at.is_empty() => return Err(Attempt::Final(Cause::NotFound)),
            Err(ureq::Error::Status(code, _)) if code == 429 || code >= 500 => {
                return Err(Attempt::Transient(format!("HTTP {code}{at}")))
            }
            Err(ureq::Error::Status(code, _)) => return Err(Attempt::Final(Cause::Failed(format!("HTTP {code}{at}")))),
            Err(ureq::Error::Transport(t)) => return Err(transport_attempt(&t, &current, &at)),
        };
        if !(300..400).contains(&resp.status()) {
            return Ok((resp, current));
        }
        let Some(location) = resp.header("Location").map(str::to_string) else {
            return Err(Attempt::Final(Cause::Failed(format!("HTTP {}{at} without a Location header", resp.status()))));
        };
        let next = url::Url::parse(&current).and_then(|base| base.join(location.trim()));
        match next {
            Ok(n) if matches!(n.scheme(), "http" | "https") && n.host_str().is_some() => current = n.to_string(),
            _ => {
                return Err(Attempt::Final(Cause::Failed(format!(
                    "redirects{at} to `{}`; kiln follows redirects only to http:// and https:// URLs; fix the mirror or download the file yourself and pass --mirror DIR",
                    printable(&location)
                ))))
            }
        }
    }
    Err(Attempt::Final(Cause::Failed(format!(
        "redirect {} (to `{}`) refused: kiln follows at most {MAX_REDIRECTS} redirects per request; the server redirects in a loop or too deep — fix the mirror or download the file yourself and pass --mirror DIR",
        MAX_REDIRECTS + 1,
        printable(&current)
    ))))
}

/// Classifies a failed request that got no HTTP status: a name that does not
/// resolve is final; a temporary DNS failure, a refused or unreachable
/// connection is retried once at most; timeouts and broken connections are
/// transient. The cause names the host, never the whole URL again.
pub(crate) fn transport_attempt(t: &ureq::Transport, current: &str, at: &str) -> Attempt {
    use std::error::Error as _;
    let host = url::Url::parse(current).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
    let io = t.source().and_then(|s| s.downcast_ref::<io::Error>());
    let why = match t.source() {
        Some(s) => s.to_string(),
        None => t.message().unwrap_or("no detail").to_string(),
    };
    match t.kind() {
        ureq::ErrorKind::Dns => {
            let why = why.trim_start_matches("failed to lookup address information: ");
            let cause = format!("cannot resolve host {host}: {why}");
            if why.contains("Temporary failure") {
                Attempt::Doubtful(cause)
            } else {
                Attempt::Final(Cause::Failed(format!("{cause}; not retried")))
            }
        }
        ureq::ErrorKind::ConnectionFailed => match io.map(io::Error::kind) {
            Some(io::ErrorKind::ConnectionRefused) => Attempt::Doubtful(format!("connection refused by {host}{at}")),
            Some(io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable) => {
                Attempt::Doubtful(format!("cannot reach {host}{at}: {why}"))
            }
            Some(io::ErrorKind::InvalidData) => {
                Attempt::Final(Cause::Failed(format!("TLS with {host}{at} failed: {why}; not retried")))
            }
            _ => Attempt::Transient(format!("cannot connect to {host}{at}: {why}")),
        },
        _ => Attempt::Transient(format!("{}{at}: {why}", t.kind())),
    }
}

/// A reader that fails once more than `limit` bytes arrive or `deadline` passes.
pub(crate) struct Bounded<R> {
    /// The body.
    pub(crate) inner: R,
    /// Bytes read so far.
    pub(crate) read: u64,
    /// The most bytes allowed.
    pub(crate) limit: u64,
    /// When reading must stop.
    pub(crate) deadline: Option<Instant>,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.deadline.is_some_and(|d| Instant::now() > d) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the artifact's deadline passed"));
        }
        // Ask for at most one byte past the limit: enough to know it was exceeded.
        let room = self.limit.saturating_sub(self.read).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::other(TooLarge));
        }
        Ok(n)
    }
}

/// Marker for a body longer than its limit.
#[derive(Debug)]
struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("body exceeds its size limit")
    }
}

impl std::error::Error for TooLarge {}

pub(crate) fn is_too_large(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<TooLarge>())
}

/// The cause for a body longer than allowed: a mismatch (exit 3) against a
/// pinned size, a failure (exit 1) against the cap.
fn too_large(label: &str, source: &str, a: &Artifact, cap: u64) -> Cause {
    match a.size {
        Some(size) => Cause::Mismatch(format!(
            "{label}: {source} sent more than the pinned size of {size} bytes; nothing was cached; if upstream really changed, review it and update the pin with `kiln pin`"
        )),
        None => Cause::Failed(format!(
            "sent more than {cap} bytes, kiln's cap for an artifact without a pinned size; run `kiln pin` to record sizes in the profile"
        )),
    }
}

#[allow(clippy::too_many_arguments)]
fn download_once(
    cache: &Cache,
    opts: &FetchOptions,
    agent: &ureq::Agent,
    url: &str,
    a: &Artifact,
    deadline: Instant,
    progress: &Progress,
    label: &str,
) -> Result<u64, Attempt> {
    let (resp, from) = get(agent, "GET", url, opts.timeout, deadline)?;
    let limit = a.size.unwrap_or(opts.max_size);
    let expected_len = resp.header("Content-Length").and_then(|v| v.trim().parse::<u64>().ok());
    if expected_len.is_some_and(|n| n > limit) {
        return Err(Attempt::Final(too_large(label, &from, a, limit)));
    }
    let bar = progress.bar(label, expected_len.or(a.size));
    let tmp = cache.tmp_path(&a.name);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| Attempt::Final(Cause::Failed(format!("{}: {e}", tmp.display()))))?;
        let mut out = BufWriter::new(file);
        let mut body = Bounded { inner: resp.into_reader(), read: 0, limit, deadline: Some(deadline) };
        let copied = hash::copy_hashed(&mut body, &mut out, |k| bar.inc(k));
        let (n, sha) = copied.map_err(|e| match e.kind() {
            _ if is_too_large(&e) => Attempt::Final(too_large(label, &from, a, limit)),
            io::ErrorKind::UnexpectedEof => {
                let of = expected_len.or(a.size).map(|len| format!(" of {len}")).unwrap_or_default();
                Attempt::Transient(format!("truncated body{}: {}{of} bytes", redirected(url, &from), body.read))
            }
            _ => Attempt::Transient(format!("reading the body{}: {e}", redirected(url, &from))),
        })?;
        out.flush().map_err(|e| Attempt::Final(Cause::Failed(format!("{}: {e}", tmp.display()))))?;
        if let Some(len) = expected_len.or(a.size) {
            if n != len {
                return Err(Attempt::Transient(format!(
                    "truncated body{}: {n} of {len} bytes",
                    redirected(url, &from)
                )));
            }
        }
        check_digest(&from, a, &sha).map_err(Attempt::Final)?;
        cache.commit(&tmp, &a.sha256).map_err(|e| Attempt::Final(Cause::Failed(e.message)))?;
        Ok(n)
    })();
    bar.finish_and_clear();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// ` at URL` when a redirect took a download from `url` to `from`, else nothing.
pub(crate) fn redirected(url: &str, from: &str) -> String {
    if url == from {
        String::new()
    } else {
        format!(" at {from}")
    }
}

/// Reads a small local text file (at most `cap` bytes), refusing non-regular files.
fn read_small_file(path: &Path, cap: u64) -> io::Result<String> {
    let f = open_regular(path)?;
    let mut text = String::new();
    f.take(cap.saturating_add(1)).read_to_string(&mut text)?;
    if text.len() as u64 > cap {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("longer than {cap} bytes")));
    }
    Ok(text)
}

/// The size of the file at `url` without downloading it: `HEAD` (following
/// redirects like a download) and its `Content-Length`; `file://` reads the
/// file's metadata. `None` when the server does not say.
pub fn fetch_size(opts: &FetchOptions, agent: &ureq::Agent, url: &str) -> Result<Option<u64>> {
    if let Some(path) = url.strip_prefix("file://") {
        let f = open_regular(Path::new(path)).map_err(|e| Error::build(format!("{url}: {e}")))?;
        return Ok(f.metadata().ok().map(|m| m.len()));
    }
    let deadline = Instant::now() + opts.deadline;
    retry(
        opts,
        deadline,
        |_, _, _, _| {},
        || {
            let (r, _) = get(agent, "HEAD", url, opts.timeout, deadline)?;
            Ok(r.header("Content-Length").and_then(|v| v.trim().parse::<u64>().ok()))
        },
    )
    .map_err(|cause| cause_error(url, cause))
}

/// Fetches a small text document (a `.sha256` file, at most [`MAX_TEXT`]
/// bytes) with the same retry, redirect and deadline policy as downloads.
pub fn fetch_text(opts: &FetchOptions, agent: &ureq::Agent, url: &str) -> Result<String> {
    fetch_text_up_to(opts, agent, url, MAX_TEXT, "a checksum file")
}

/// [`fetch_text`] for a document of at most `limit` bytes; a longer body is
/// refused as not being `what` (e.g. "a CNI manifest").
pub fn fetch_text_up_to(opts: &FetchOptions, agent: &ureq::Agent, url: &str, limit: u64, what: &str) -> Result<String> {
    if let Some(path) = url.strip_prefix("file://") {
        return read_small_file(Path::new(path), limit).map_err(|e| Error::build(format!("{url}: {e}")));
    }
    let deadline = Instant::now() + opts.deadline;
    retry(
        opts,
        deadline,
        |_, _, _, _| {},
        || {
            let (r, from) = get(agent, "GET", url, opts.timeout, deadline)?;
            let mut body = Bounded { inner: r.into_reader(), read: 0, limit, deadline: Some(deadline) };
            let mut bytes = Vec::new();
            match body.read_to_end(&mut bytes) {
                Ok(_) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
                Err(e) if is_too_large(&e) => Err(Attempt::Final(Cause::Failed(format!(
                    "longer than {limit} bytes{}; is it {what}?",
                    redirected(url, &from)
                )))),
                Err(e) => Err(Attempt::Transient(format!("reading the body{}: {e}", redirected(url, &from)))),
            }
        },
    )
    .map_err(|cause| match cause {
        Cause::NotFound => Error::build(format!("{url}: HTTP 404; is the version published?")),
        other => cause_error(url, other),
    })
}

/// A [`Cause`] as an error about `url` (for `kiln pin`'s single requests).
fn cause_error(url: &str, cause: Cause) -> Error {
    match cause {
        Cause::Mismatch(m) => Error::verify(m),
        other => Error::build(format!("{url}: {}", other.text())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::profile::{Arch, Install};
    use kiln_testkit::mirror::{Fault, Mirror as TestMirror};

    fn artifact(path: &str, sha256: &str, size: Option<u64>) -> Artifact {
        Artifact {
            name: "kubelet".into(),
            version: "v1".into(),
            arch: Arch::Amd64,
            url: format!("https://dl.k8s.io{path}"),
            sha256: sha256.into(),
            size,
            dest: "/opt/bin".into(),
            mode: 0o755,
            install: Install::File { name: "kubelet".into() },
        }
    }

    /// B7: without a pinned size an endless body stops at the cap, nothing cached.
    #[test]
    fn an_endless_body_without_a_pinned_size_stops_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("mirror");
        let sha = kiln_testkit::standin::publish(&root, "/k", b"small", false);
        let m = TestMirror::serve(&root);
        m.fault("/k", Fault::Endless);
        let cache = Cache::open(Some(&dir.path().join("cache"))).unwrap();
        let opts = FetchOptions {
            mirror: Some(Mirror::Url(m.url().to_string())),
            attempts: 1,
            max_size: 1 << 20,
            ..FetchOptions::default()
        };
        let e = fetch_all(&cache, &opts, &[artifact("/k", &sha, None)], &Progress::quiet()).unwrap_err();
        assert_eq!(e.kind, crate::error::Kind::Build, "{e}");
        assert!(e.message.contains("more than 1048576 bytes") && e.message.contains("kiln pin"), "{e}");
        assert_eq!(fs::read_dir(cache.root().join("tmp")).unwrap().count(), 0);
        assert_eq!(MAX_DOWNLOAD, 2 << 30);
    }

    /// B7: one deadline per artifact over every attempt, even when each read is quick.
    #[test]
    fn a_trickling_mirror_meets_the_per_artifact_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("mirror");
        let sha = kiln_testkit::standin::publish(&root, "/k", &vec![7u8; 1 << 20], false);
        let m = TestMirror::serve(&root);
        m.fault("/k", Fault::Throttle(2000));
        let cache = Cache::open(Some(&dir.path().join("cache"))).unwrap();
        let opts = FetchOptions {
            mirror: Some(Mirror::Url(m.url().to_string())),
            attempts: 3,
            backoff: Duration::from_millis(100),
            deadline: Duration::from_secs(2),
            ..FetchOptions::default()
        };
        let t = Instant::now();
        let e = fetch_all(&cache, &opts, &[artifact("/k", &sha, Some(1 << 20))], &Progress::quiet()).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(6), "took {:?}", t.elapsed());
        assert!(e.message.contains("deadline"), "{e}");
        assert_eq!(fs::read_dir(cache.root().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn mirror_paths_follow_upstream() {
        let u = "https://dl.k8s.io/release/v1.34.2/bin/linux/amd64/kubelet";
        assert_eq!(url_path(u), "/release/v1.34.2/bin/linux/amd64/kubelet");
        assert_eq!(Mirror::parse("/srv/m"), Mirror::Dir("/srv/m".into()));
        assert_eq!(Mirror::parse("http://x/"), Mirror::Url("http://x".into()));
    }

    #[test]
    fn mirror_directory_paths_never_leave_the_directory() {
        let ok = [
            ("https://dl.k8s.io/release/v1.34.2/bin/linux/amd64/kubelet", "release/v1.34.2/bin/linux/amd64/kubelet"),
            (
                "https://cdimage.ubuntu.com/releases/24.04.3/release/ubuntu-24.04.3-preinstalled-server-arm64+raspi.img.xz",
                "releases/24.04.3/release/ubuntu-24.04.3-preinstalled-server-arm64+raspi.img.xz",
            ),
            ("http://127.0.0.1:8080/a/..b/c..", "a/..b/c.."),
        ];
        for (url, rel) in ok {
            assert_eq!(mirror_path(url), Ok(PathBuf::from(rel)), "{url}");
        }
        for bad in [
            "https://dl.k8s.io/release/../../../etc/passwd",
            "https://dl.k8s.io/..",
            "https://dl.k8s.io/a/./b",
            "https://dl.k8s.io/a//b",
            "https://dl.k8s.io/a/",
            "https://dl.k8s.io/",
            "https://dl.k8s.io",
            "https://dl.k8s.io/%2e%2e/x",
            "https://dl.k8s.io/.%2E/x",
            "https://dl.k8s.io/a%2Fb",
            "https://dl.k8s.io/a%5c..",
            "https://dl.k8s.io/a%00b",
            "https://dl.k8s.io/a?x=1",
            "https://dl.k8s.io/a#f",
            "https://dl.k8s.io/a\u{1b}b",
            "file:///etc/passwd",
            "/etc/passwd",
        ] {
            let e = mirror_path(bad).expect_err(bad);
            assert!(e.contains("cannot name a file in a mirror directory"), "{bad}: {e}");
            assert!(!e.chars().any(char::is_control), "{e:?}");
        }
    }

    #[test]
    fn mirror_arguments_are_checked_where_they_are_parsed() {
        assert_eq!(Mirror::parse_checked("https://m.example/k8s/"), Ok(Mirror::Url("https://m.example/k8s".into())));
        assert_eq!(Mirror::parse_checked("file:///srv/m"), Ok(Mirror::Dir("/srv/m".into())));
        for bad in ["https://user:pw@m.example/", "https://m.example/?x=1", "https://m.example/#x", "http://", ""] {
            assert!(Mirror::parse_checked(bad).is_err(), "{bad}");
        }
    }

    fn failure(name: &str, source: &str, cause: Cause) -> Failure {
        let mut a = artifact(&format!("/release/v1/{name}"), &"a".repeat(64), None);
        a.name = name.into();
        Failure { artifact: a, source: source.into(), cause }
    }

    #[test]
    fn the_report_lists_every_failure_once_and_the_next_step_for_the_mirror_in_use() {
        let failures = [
            failure("kubelet", "https://dl.k8s.io/release/v1/kubelet", Cause::Failed("HTTP 503; 4 attempts".into())),
            failure("kubeadm", "https://dl.k8s.io/release/v1/kubeadm", Cause::NotFound),
        ];
        let e = failure_report(&failures, 5, &FetchOptions::default());
        assert_eq!(e.kind, crate::error::Kind::Build);
        let lines: Vec<&str> = e.message.lines().collect();
        assert_eq!(
            lines[..3],
            [
                "2 of 5 artifact(s) to fetch could not be fetched:",
                "  kubelet v1 (amd64) https://dl.k8s.io/release/v1/kubelet: HTTP 503; 4 attempts",
                "  kubeadm v1 (amd64) https://dl.k8s.io/release/v1/kubeadm: not found (HTTP 404)",
            ]
        );
        assert!(lines[3].starts_with("no mirror is in use: ") && lines[3].contains("--mirror DIR|URL"), "{e}");
        assert!(lines.iter().any(|l| l.starts_with("`kiln build --offline` lists")), "{e}");
        assert!(lines.iter().any(|l| l.starts_with("`kiln mirror PROFILE... --out DIR` fills")), "{e}");
        let with_mirror = FetchOptions { mirror: Some(Mirror::Url("http://m".into())), ..FetchOptions::default() };
        let e = failure_report(&failures, 5, &with_mirror);
        assert!(e.message.contains("\ncheck the mirror http://m: ") && !e.message.contains("no mirror"), "{e}");
        // A mismatch comes first, whole, and makes it exit 3.
        let mismatch = failure("crictl", "x", Cause::Mismatch("checksum mismatch for crictl\n  expected…".into()));
        let e = failure_report(&[failures[0].clone(), mismatch], 5, &FetchOptions::default());
        assert_eq!(e.kind, crate::error::Kind::Verify);
        assert!(e.message.starts_with("checksum mismatch for crictl\n  expected…\n1 of 5"), "{e}");
    }

    #[test]
    fn files_missing_from_a_mirror_directory_are_listed_with_path_url_and_sha256() {
        let dir = Mirror::Dir("/srv/m".into());
        let failures = [
            failure("kubelet", "/srv/m/release/v1/kubelet", Cause::NotFound),
            failure("kubeadm", "/srv/m/release/v1/kubeadm", Cause::NotFound),
        ];
        let e = failure_report(&failures, 2, &FetchOptions { mirror: Some(dir), ..FetchOptions::default() });
        let sha = "a".repeat(64);
        assert_eq!(
            e.message,
            format!(
                "2 artifact(s) are missing from the mirror directory /srv/m:\n  kubelet v1 (amd64) /srv/m/release/v1/kubelet (upstream https://dl.k8s.io/release/v1/kubelet sha256 {sha})\n  kubeadm v1 (amd64) /srv/m/release/v1/kubeadm (upstream https://dl.k8s.io/release/v1/kubeadm sha256 {sha})\nfill it with `kiln mirror PROFILE... --out /srv/m` on a machine that reaches upstream, or copy each upstream URL to its path"
            )
        );
    }
}
