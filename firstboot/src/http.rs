//! A small blocking HTTP/1.1 client for link-local metadata services.
//!
//! Metadata services speak plain HTTP on 169.254.169.254 (or a loopback URL in
//! tests), so no TLS stack and no async runtime: a `TcpStream` with a
//! per-request timeout, `Content-Length`, chunked and close-delimited bodies,
//! and a retry policy with a total bound.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header with this (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Retry and timeout policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Timeout for connecting and for each read.
    pub timeout: Duration,
    /// Attempts per request.
    pub attempts: u32,
    /// First delay between attempts (doubles).
    pub backoff: Duration,
    /// No request sequence takes longer than this in total.
    pub total: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            timeout: Duration::from_secs(5),
            attempts: 6,
            backoff: Duration::from_millis(500),
            total: Duration::from_secs(180),
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// 404: the value does not exist (not retried).
    NotFound,
    /// Any other final answer (4xx).
    Status(u16),
    /// Retries exhausted or the total bound reached.
    GaveUp(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotFound => f.write_str("not found (404)"),
            Error::Status(s) => write!(f, "HTTP {s}"),
            Error::GaveUp(m) => f.write_str(m),
        }
    }
}

fn split_url(url: &str) -> Result<(String, String, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http:// metadata URLs are supported"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = hostport.to_string();
    let addr = if hostport.contains(':') && !hostport.ends_with(']') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    Ok((host, addr, path.to_string()))
}

/// One request, no retries.
pub fn once(method: &str, url: &str, headers: &[(&str, &str)], timeout: Duration) -> Result<Response, String> {
    let (host, addr, path) = split_url(url)?;
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut s = TcpStream::connect_timeout(&sock, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: kiln-firstboot\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "PUT" || method == "POST" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(|e| format!("sending to {addr}: {e}"))?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| format!("reading {url}: {e}"))?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{url}: not an HTTP response"))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        let n = r.read_line(&mut h).map_err(|e| format!("reading {url}: {e}"))?;
        if n == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_lowercase(), v.trim().to_string()));
        }
    }
    let len = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse::<usize>().ok());
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).map_err(|e| format!("reading {url}: {e}"))?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| format!("{url}: bad chunk size"))?;
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).map_err(|e| format!("{url}: truncated chunked body: {e}"))?;
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = len {
        body.resize(n, 0);
        r.read_exact(&mut body).map_err(|e| format!("{url}: truncated body (expected {n} bytes): {e}"))?;
    } else {
        r.read_to_end(&mut body).map_err(|e| format!("reading {url}: {e}"))?;
    }
    Ok(Response { status, headers, body })
}

/// A request with the retry policy: 5xx, 429, timeouts and truncated bodies
/// are retried with backoff; 404 means absent; other 4xx are final.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], p: &Policy) -> Result<Response, Error> {
    let start = Instant::now();
    let mut delay = p.backoff;
    let mut last = String::new();
    for attempt in 1..=p.attempts.max(1) {
        let left = p.total.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        match once(method, url, headers, p.timeout.min(left)) {
            Ok(r) if r.status == 404 => return Err(Error::NotFound),
            Ok(r) if (200..300).contains(&r.status) => return Ok(r),
            Ok(r) if r.status >= 500 || r.status == 429 => last = format!("HTTP {} from {url}", r.status),
            Ok(r) => return Err(Error::Status(r.status)),
            Err(e) => last = e,
        }
        if attempt < p.attempts {
            std::thread::sleep(delay.min(p.total.saturating_sub(start.elapsed())));
            delay = delay.saturating_mul(2);
        }
    }
    Err(Error::GaveUp(format!("{url}: {last} (gave up after {:.1} s)", start.elapsed().as_secs_f64())))
}
