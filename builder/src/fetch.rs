//! Fetching pinned artifacts into the cache: HTTP(S) or a mirror, verified while streaming.
//!
//! A download is hashed as it is written to a temporary file in the cache and
//! only renamed into place when the digest matches its pin. A mismatch fails
//! closed (exit 3) with the URL and both digests, and leaves nothing behind.

use crate::cache::Cache;
use crate::error::{Error, IoContext, Result};
use crate::hash;
use crate::profile::Artifact;
use crate::progress::{human_bytes, Progress};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    for a in artifacts {
        if cache.lookup(&a.sha256).is_none() && !missing.iter().any(|m| m.sha256 == a.sha256) {
            missing.push(a);
        }
    }
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
            let r = copy_from_file(cache, &path, a, progress, &label);
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

fn copy_from_file(cache: &Cache, path: &Path, a: &Artifact, progress: &Progress, label: &str) -> Result<u64> {
    let mut src = File::open(path).map_err(|e| {
        Error::build(format!("{label}: mirror file {} cannot be read: {e}; copy {} there", path.display(), a.url))
    })?;
    let total = src.metadata().map(|m| m.len()).ok();
    let bar = progress.bar(label, total);
    let tmp = cache.tmp_path(&a.name);
    let result = (|| {
        let mut out = BufWriter::new(File::create(&tmp).io_ctx(tmp.display())?);
        let (n, sha) = hash::copy_hashed(&mut src, &mut out, |k| bar.inc(k)).io_ctx(path.display())?;
        out.flush().io_ctx(tmp.display())?;
        check_digest(&path.display().to_string(), a, &sha)?;
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
    let mut delay = opts.backoff;
    let mut last = String::new();
    for attempt in 1..=opts.attempts.max(1) {
        match download_once(cache, agent, url, a, progress, label) {
            Ok(n) => return Ok(n),
            Err(Attempt::Final(e)) => return Err(e),
            Err(Attempt::Transient(msg)) => {
                last = msg;
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

fn download_once(
    cache: &Cache,
    agent: &ureq::Agent,
    url: &str,
    a: &Artifact,
    progress: &Progress,
    label: &str,
) -> Result<u64, Attempt> {
    let resp = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(404, _)) => {
            return Err(Attempt::Final(Error::build(format!(
                "{label}: {url} does not exist (404); check the version and URL template in the profile"
            ))))
        }
        Err(ureq::Error::Status(code, _)) if code == 429 || code >= 500 => {
            return Err(Attempt::Transient(format!("HTTP {code} from {url}")))
        }
        Err(ureq::Error::Status(code, _)) => {
            return Err(Attempt::Final(Error::build(format!("{label}: HTTP {code} from {url}"))))
        }
        Err(ureq::Error::Transport(t)) => return Err(Attempt::Transient(t.to_string())),
    };
    let expected_len = resp.header("Content-Length").and_then(|v| v.trim().parse::<u64>().ok());
    let bar = progress.bar(label, expected_len);
    let tmp = cache.tmp_path(&a.name);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| Attempt::Final(Error::build(format!("{}: {e}", tmp.display()))))?;
        let mut out = BufWriter::new(file);
        let mut body = resp.into_reader();
        let (n, sha) = hash::copy_hashed(&mut body, &mut out, |k| bar.inc(k))
            .map_err(|e| Attempt::Transient(format!("reading {url}: {e}")))?;
        out.flush().map_err(|e| Attempt::Final(Error::build(format!("{}: {e}", tmp.display()))))?;
        if let Some(len) = expected_len {
            if n != len {
                return Err(Attempt::Transient(format!("truncated body from {url}: {n} of {len} bytes")));
            }
        }
        check_digest(url, a, &sha).map_err(Attempt::Final)?;
        cache.commit(&tmp, &a.sha256).map_err(Attempt::Final)?;
        Ok(n)
    })();
    bar.finish_and_clear();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Fetches a small text document (a `.sha256` file) with the same retry policy.
pub fn fetch_text(opts: &FetchOptions, agent: &ureq::Agent, url: &str) -> Result<String> {
    if let Some(path) = url.strip_prefix("file://") {
        return fs::read_to_string(path).map_err(|e| Error::build(format!("{url}: {e}")));
    }
    let mut delay = opts.backoff;
    let mut last = String::new();
    for attempt in 1..=opts.attempts.max(1) {
        match agent.get(url).call() {
            Ok(r) => match r.into_string() {
                Ok(s) => return Ok(s),
                Err(e) => last = e.to_string(),
            },
            Err(ureq::Error::Status(code, _)) if code != 429 && code < 500 => {
                return Err(Error::build(format!("{url}: HTTP {code}; is the version published?")))
            }
            Err(e) => last = e.to_string(),
        }
        if attempt < opts.attempts {
            std::thread::sleep(delay);
            delay = delay.saturating_mul(2);
        }
    }
    Err(Error::build(format!("{url}: {last}")))
}

#[cfg(test)]
mod tests {
    use super::*;

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
