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

use crate::cache::{Cache, Entry};
use crate::error::{Error, IoContext, Result};
use crate::hash;
use crate::profile::Artifact;
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

/// Redirect hops followed per request (curl's `--max-redirs` default is 50;
/// dl.k8s.io needs one or two).
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
}

/// The path part of a URL (`/release/v1.34.2/…`), which mirrors reproduce.
pub fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.find('/').map(|i| &rest[i..]).unwrap_or("/")
}

/// Rewrites an upstream URL onto a base URL with the same path.
pub fn rebase_url(base: &str, url: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), url_path(url))
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

/// Why one attempt failed.
enum Attempt {
    /// Worth retrying (timeouts, 5xx, truncated bodies).
    Transient(String),
    /// Final (404, other 4xx, checksum mismatch).
    Final(Error),
}

/// Makes sure every artifact is in the cache, fetching what is missing in parallel.
/// Returns the cache path for each artifact, in input order.
pub fn fetch_all(
    cache: &Cache,
    opts: &FetchOptions,
    artifacts: &[Artifact],
    progress: &Progress,
) -> Result<Vec<PathBuf>> {
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
            Entry::Valid(_, crate::cache::Verified::Hashed) => hashed += 1,
            Entry::Valid(_, crate::cache::Verified::Stamp) => stamped += 1,
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
    if opts.offline && opts.mirror.is_none() && !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|a| format!("  {} {} ({}) {} sha256={}", a.name, a.version, a.arch, a.url, a.sha256))
            .collect();
        return Err(Error::build(format!(
            "--offline and {} artifact(s) are not in the cache {}:\n{}\nfetch them once without --offline, or pass --mirror DIR holding the same paths as upstream",
            missing.len(),
            cache.root().display(),
            list.join("\n")
        )));
    }
    if !missing.is_empty() {
        progress.step(format!("fetching {} artifact(s) into {}", missing.len(), cache.root().display()));
    }
    let queue = Mutex::new(missing.into_iter());
    let failures: Mutex<Vec<Error>> = Mutex::new(Vec::new());
    let agent = agent(opts.timeout);
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1) {
            s.spawn(|| loop {
                let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
                let Some(a) = next else { break };
                if let Err(e) = fetch_one(cache, opts, &agent, a, progress) {
                    if let Ok(mut f) = failures.lock() {
                        f.push(e);
                    }
                    // Stop handing out work: the build fails anyway.
                    if let Ok(mut q) = queue.lock() {
                        for _ in q.by_ref() {}
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_default();
    if !failures.is_empty() {
        // A verification failure outranks others: it decides the exit code.
        failures.sort_by_key(|e| std::cmp::Reverse(e.kind.exit_code()));
        return Err(failures.swap_remove(0));
    }
    artifacts
        .iter()
        .map(|a| {
            cache
                .lookup(&a.sha256)
                .ok_or_else(|| Error::build(format!("{} vanished from the cache while building; run again", a.sha256)))
        })
        .collect()
}

fn fetch_one(cache: &Cache, opts: &FetchOptions, agent: &ureq::Agent, a: &Artifact, progress: &Progress) -> Result<()> {
    let label = format!("{} {} ({})", a.name, a.version, a.arch);
    let start = Instant::now();
    let (source, result) = match &opts.mirror {
        Some(Mirror::Dir(dir)) => {
            let path = dir.join(url_path(&a.url).trim_start_matches('/'));
            let r = copy_from_file(cache, opts, &path, a, progress, &label);
            (path.display().to_string(), r)
        }
        Some(Mirror::Url(base)) => {
            let url = rebase_url(base, &a.url);
            let r = download(cache, opts, agent, &url, a, progress, &label);
            (url, r)
        }
        None => (a.url.clone(), download(cache, opts, agent, &a.url, a, progress, &label)),
    };
    let size = result?;
    progress.step(format!(
        "fetched {label}: {} in {:.1} s from {source}",
        human_bytes(size),
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn copy_from_file(
    cache: &Cache,
    opts: &FetchOptions,
    path: &Path,
    a: &Artifact,
    progress: &Progress,
    label: &str,
) -> Result<u64> {
    let src = open_regular(path).map_err(|e| {
        Error::build(format!("{label}: mirror file {} cannot be read: {e}; copy {} there", path.display(), a.url))
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
        let mut out = BufWriter::new(File::create(&tmp).io_ctx(tmp.display())?);
        let (n, sha) = hash::copy_hashed(&mut src, &mut out, |k| bar.inc(k)).map_err(|e| {
            if is_too_large(&e) {
                too_large(label, &source, a, limit)
            } else {
                Error::build(format!("{source}: {e}"))
            }
        })?;
        out.flush().io_ctx(tmp.display())?;
        check_digest(&source, a, &sha)?;
        cache.commit(&tmp, &a.sha256)?;
        Ok(n)
    })();
    bar.finish_and_clear();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn check_digest(source: &str, a: &Artifact, actual: &str) -> Result<()> {
    if actual.eq_ignore_ascii_case(&a.sha256) {
        return Ok(());
    }
    Err(Error::verify(format!(
        "checksum mismatch for {} {} ({}): {source}\n  expected sha256 {}\n  actual   sha256 {actual}\nnothing was cached or written; if upstream really changed, review it and update the pin with `kiln pin`",
        a.name, a.version, a.arch, a.sha256
    )))
}

fn download(
    cache: &Cache,
    opts: &FetchOptions,
    agent: &ureq::Agent,
    url: &str,
    a: &Artifact,
    progress: &Progress,
    label: &str,
) -> Result<u64> {
    let deadline = Instant::now() + opts.deadline;
    let mut delay = opts.backoff;
    let mut last = String::new();
    for attempt in 1..=opts.attempts.max(1) {
        match download_once(cache, opts, agent, url, a, deadline, progress, label) {
            Ok(n) => return Ok(n),
            Err(Attempt::Final(e)) => return Err(e),
            Err(Attempt::Transient(msg)) => {
                last = msg;
                let left = deadline.saturating_duration_since(Instant::now());
                if left < delay {
                    return Err(Error::build(format!(
                        "{label}: no complete download from {url} within the deadline of {} s per artifact (attempt {attempt}): {last}; check the network or use --mirror",
                        opts.deadline.as_secs()
                    )));
                }
                if attempt < opts.attempts {
                    progress.warn(format!(
                        "{label}: {last}; retrying in {:.1} s (attempt {attempt} of {})",
                        delay.as_secs_f64(),
                        opts.attempts
                    ));
                    std::thread::sleep(delay);
                    delay = delay.saturating_mul(2);
                }
            }
        }
    }
    Err(Error::build(format!(
        "{label}: giving up on {url} after {} attempts: {last}; check the network or use --mirror",
        opts.attempts.max(1)
    )))
}

/// Whether `url` is an `http://` or `https://` URL (the only schemes kiln fetches).
pub fn is_http_url(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

/// A redirect target as printed in errors: control characters escaped.
fn printable(s: &str) -> String {
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
    label: &str,
) -> Result<(ureq::Response, String), Attempt> {
    let mut current = url.to_string();
    for _ in 0..=MAX_REDIRECTS {
        if !is_http_url(&current) {
            return Err(Attempt::Final(Error::build(format!(
                "{label}: `{}` is not an http:// or https:// URL; kiln fetches only those",
                printable(&current)
            ))));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Attempt::Transient(format!("deadline reached before requesting {current}")));
        }
        // ureq's overall timeout replaces its per-read one: set it only when the
        // deadline is nearer than a read timeout. Otherwise `Bounded` enforces it.
        let request = agent.request(method, &current);
        let request = if left < read_timeout { request.timeout(left) } else { request };
        let resp = match request.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(404, _)) => {
                return Err(Attempt::Final(Error::build(format!(
                    "{label}: {current} does not exist (404); check the version and URL template in the profile"
                ))))
            }
            Err(ureq::Error::Status(code, _)) if code == 429 || code >= 500 => {
                return Err(Attempt::Transient(format!("HTTP {code} from {current}")))
            }
            Err(ureq::Error::Status(code, _)) => {
                return Err(Attempt::Final(Error::build(format!("{label}: HTTP {code} from {current}"))))
            }
            Err(ureq::Error::Transport(t)) => return Err(Attempt::Transient(t.to_string())),
        };
        if !(300..400).contains(&resp.status()) {
            return Ok((resp, current));
        }
        let Some(location) = resp.header("Location").map(str::to_string) else {
            return Err(Attempt::Final(Error::build(format!(
                "{label}: HTTP {} from {current} without a Location header",
                resp.status()
            ))));
        };
        let next = url::Url::parse(&current).and_then(|base| base.join(location.trim()));
        match next {
            Ok(n) if matches!(n.scheme(), "http" | "https") && n.host_str().is_some() => current = n.to_string(),
            _ => {
                return Err(Attempt::Final(Error::build(format!(
                    "{label}: {current} redirects to `{}`; kiln follows redirects only to http:// and https:// URLs; fix the mirror or download the file yourself and pass --mirror DIR",
                    printable(&location)
                ))))
            }
        }
    }
    Err(Attempt::Final(Error::build(format!(
        "{label}: more than {MAX_REDIRECTS} redirects starting at {url}; the mirror redirects in a loop"
    ))))
}

/// A reader that fails once more than `limit` bytes arrive or `deadline` passes.
struct Bounded<R> {
    inner: R,
    read: u64,
    limit: u64,
    deadline: Option<Instant>,
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

fn is_too_large(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<TooLarge>())
}

/// The error for a body longer than allowed: exit 3 against a pinned size, 1 against the cap.
fn too_large(label: &str, source: &str, a: &Artifact, cap: u64) -> Error {
    match a.size {
        Some(size) => Error::verify(format!(
            "{label}: {source} sent more than the pinned size of {size} bytes; nothing was cached; if upstream really changed, review it and update the pin with `kiln pin`"
        )),
        None => Error::build(format!(
            "{label}: {source} sent more than {cap} bytes, kiln's cap for an artifact without a pinned size; run `kiln pin` to record sizes in the profile"
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
    let (resp, from) = get(agent, "GET", url, opts.timeout, deadline, label)?;
    let limit = a.size.unwrap_or(opts.max_size);
    let expected_len = resp.header("Content-Length").and_then(|v| v.trim().parse::<u64>().ok());
    if expected_len.is_some_and(|n| n > limit) {
        return Err(Attempt::Final(too_large(label, &from, a, limit)));
    }
    let bar = progress.bar(label, expected_len.or(a.size));
    let tmp = cache.tmp_path(&a.name);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| Attempt::Final(Error::build(format!("{}: {e}", tmp.display()))))?;
        let mut out = BufWriter::new(file);
        let mut body = Bounded { inner: resp.into_reader(), read: 0, limit, deadline: Some(deadline) };
        let (n, sha) = hash::copy_hashed(&mut body, &mut out, |k| bar.inc(k)).map_err(|e| {
            if is_too_large(&e) {
                Attempt::Final(too_large(label, &from, a, limit))
            } else {
                Attempt::Transient(format!("reading {from}: {e}"))
            }
        })?;
        out.flush().map_err(|e| Attempt::Final(Error::build(format!("{}: {e}", tmp.display()))))?;
        if let Some(len) = expected_len.or(a.size) {
            if n != len {
                return Err(Attempt::Transient(format!("truncated body from {from}: {n} of {len} bytes")));
            }
        }
        check_digest(&from, a, &sha).map_err(Attempt::Final)?;
        cache.commit(&tmp, &a.sha256).map_err(Attempt::Final)?;
        Ok(n)
    })();
    bar.finish_and_clear();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Opens a local file for reading only if it is a regular file: a FIFO is
/// opened without blocking and refused, a device (`/dev/zero`) is refused.
pub fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, device or directory is never read)",
        ));
    }
    Ok(f)
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
    let mut delay = opts.backoff;
    let mut last = String::new();
    for attempt in 1..=opts.attempts.max(1) {
        match get(agent, "HEAD", url, opts.timeout, deadline, url) {
            Ok((r, _)) => return Ok(r.header("Content-Length").and_then(|v| v.trim().parse::<u64>().ok())),
            Err(Attempt::Final(e)) => return Err(e),
            Err(Attempt::Transient(m)) => last = m,
        }
        if attempt < opts.attempts && deadline.saturating_duration_since(Instant::now()) > delay {
            std::thread::sleep(delay);
            delay = delay.saturating_mul(2);
        }
    }
    Err(Error::build(format!("{url}: {last}")))
}

/// Fetches a small text document (a `.sha256` file, at most [`MAX_TEXT`]
/// bytes) with the same retry, redirect and deadline policy as downloads.
pub fn fetch_text(opts: &FetchOptions, agent: &ureq::Agent, url: &str) -> Result<String> {
    if let Some(path) = url.strip_prefix("file://") {
        return read_small_file(Path::new(path), MAX_TEXT).map_err(|e| Error::build(format!("{url}: {e}")));
    }
    let deadline = Instant::now() + opts.deadline;
    let mut delay = opts.backoff;
    let mut last = String::new();
    for attempt in 1..=opts.attempts.max(1) {
        match get(agent, "GET", url, opts.timeout, deadline, url) {
            Ok((r, from)) => {
                let mut body = Bounded { inner: r.into_reader(), read: 0, limit: MAX_TEXT, deadline: Some(deadline) };
                let mut bytes = Vec::new();
                match body.read_to_end(&mut bytes) {
                    Ok(_) => return Ok(String::from_utf8_lossy(&bytes).into_owned()),
                    Err(e) if is_too_large(&e) => {
                        return Err(Error::build(format!(
                            "{from}: longer than {MAX_TEXT} bytes; is it a checksum file?"
                        )))
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            Err(Attempt::Final(e)) => {
                return Err(match e.message.contains("(404)") {
                    true => Error::build(format!("{url}: HTTP 404; is the version published?")),
                    false => e,
                })
            }
            Err(Attempt::Transient(m)) => last = m,
        }
        if attempt < opts.attempts {
            if deadline.saturating_duration_since(Instant::now()) < delay {
                break;
            }
            std::thread::sleep(delay);
            delay = delay.saturating_mul(2);
        }
    }
    Err(Error::build(format!("{url}: {last}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{Arch, Install};
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
        assert_eq!(
            rebase_url("http://127.0.0.1:8080/", u),
            "http://127.0.0.1:8080/release/v1.34.2/bin/linux/amd64/kubelet"
        );
        assert_eq!(Mirror::parse("/srv/m"), Mirror::Dir("/srv/m".into()));
        assert_eq!(Mirror::parse("http://x/"), Mirror::Url("http://x".into()));
    }
}
