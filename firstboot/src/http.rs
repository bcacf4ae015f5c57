//! A small blocking HTTP/1.1 client for link-local metadata services.
//!
//! Metadata services speak plain HTTP on 169.254.169.254 (or a loopback URL in
//! tests), so no TLS stack and no async runtime: a `TcpStream`,
//! `Content-Length`, chunked and close-delimited bodies, and a retry policy.
//!
//! Nothing a server sends can crash the agent, exhaust its memory or hold it
//! past its deadline:
//!
//! * the status line and headers together are at most [`MAX_HEADER_BYTES`]
//!   (64 KiB); a header value with a control character is refused;
//! * a body is at most [`Policy::max_body`], by default [`MAX_BODY`] (1 MiB:
//!   user-data is KiB, EC2 caps it at 16 KiB); a larger `Content-Length`, chunk
//!   or close-delimited body is an error naming the limit, read no further;
//! * chunk sizes are parsed with checked arithmetic (at most 16 hex digits);
//! * one request (connect, send, every read) ends by its own deadline, the
//!   per-request timeout, and every request and retry of a run ends by the run's
//!   deadline ([`Policy::started`], `--metadata-total`): each read waits at most
//!   for the time left, so a server trickling a byte at a time cannot stretch it;
//! * request header values with control characters are refused before
//!   anything is sent (a CRLF in a token must not inject headers).
//!
//! A response that breaks a limit or the protocol is final (retrying cannot
//! help); timeouts, 5xx, 429 and truncated bodies are retried with backoff.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Upper bound on a response's status line and headers together (and a
/// chunked body's trailers).
pub const MAX_HEADER_BYTES: usize = 64 << 10;
/// Default upper bound on a response body: user-data and metadata values are KiB.
pub const MAX_BODY: usize = 1 << 20;
/// Upper bound on one chunk-size line of a chunked body.
const MAX_CHUNK_LINE: usize = 1024;

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
    /// Bound on one request: connecting, sending and reading the whole response.
    pub timeout: Duration,
    /// Attempts per request.
    pub attempts: u32,
    /// First delay between attempts (doubles).
    pub backoff: Duration,
    /// Bound on all requests and retries of a run (from [`Policy::started`]), or
    /// of one [`request`] when no run deadline is set.
    pub total: Duration,
    /// The run's deadline, shared by every request made with this policy.
    pub deadline: Option<Instant>,
    /// Largest body accepted, in bytes.
    pub max_body: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            timeout: Duration::from_secs(5),
            attempts: 6,
            backoff: Duration::from_millis(500),
            total: Duration::from_secs(180),
            deadline: None,
            max_body: MAX_BODY,
        }
    }
}

impl Policy {
    /// This policy with its run deadline fixed (now + `total`) unless one is set:
    /// every request made with the result shares one time budget.
    pub fn started(&self) -> Policy {
        let mut p = self.clone();
        p.deadline.get_or_insert_with(|| Instant::now() + self.total);
        p
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
    /// A response (or request) that breaks a limit or the protocol (not retried).
    Refused(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotFound => f.write_str("not found (404)"),
            Error::Status(s) => write!(f, "HTTP {s}"),
            Error::GaveUp(m) | Error::Refused(m) => f.write_str(m),
        }
    }
}

/// Control characters (and DEL) shown as escapes, so no input reaches a
/// terminal or a log line raw; everything else is kept.
pub fn escape(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    /// What is wrong.
    pub message: String,
    /// Whether another attempt may succeed (timeouts, truncation), as opposed to
    /// a response that breaks a limit or the protocol.
    pub transient: bool,
}

impl ReadError {
    fn refused(message: impl Into<String>) -> ReadError {
        ReadError { message: message.into(), transient: false }
    }
    fn io(what: &str, e: &std::io::Error) -> ReadError {
        ReadError { message: format!("{what}: {e}"), transient: true }
    }
}

fn kib(n: usize) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n % (1 << 10) == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

fn body_too_large(n: impl std::fmt::Display, max: usize) -> ReadError {
    ReadError::refused(format!(
        "the response body ({n} bytes) is over kiln-firstboot's {} limit for metadata",
        kib(max)
    ))
}

/// Reads one line ending in `\n` (the terminator is dropped, and a `\r` before
/// it) into `line`, spending at most `budget` bytes. `Ok(false)` at a clean EOF.
fn read_line<R: BufRead>(r: &mut R, line: &mut Vec<u8>, budget: &mut usize, what: &str) -> Result<bool, ReadError> {
    line.clear();
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::io(&format!("reading the {what}"), &e)),
        };
        if buf.is_empty() {
            if line.is_empty() {
                return Ok(false);
            }
            return Err(ReadError { message: format!("the {what} ends without a line end"), transient: true });
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if take > *budget {
            return Err(ReadError::refused(format!(
                "the {what} is over kiln-firstboot's {} limit",
                kib(MAX_HEADER_BYTES)
            )));
        }
        *budget -= take;
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(true);
        }
    }
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Reads the headers up to the empty line, within `budget`.
fn read_headers<R: BufRead>(r: &mut R, budget: &mut usize) -> Result<Vec<(String, String)>, ReadError> {
    let mut headers = Vec::new();
    let mut line = Vec::new();
    loop {
        if !read_line(r, &mut line, budget, "response header")? {
            return Err(ReadError { message: "the response ends inside its headers".into(), transient: true });
        }
        if line.is_empty() {
            return Ok(headers);
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(ReadError::refused(format!(
                "malformed response header {} (no `:`)",
                escape(&String::from_utf8_lossy(&line[..line.len().min(80)]))
            )));
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if !is_token(name) {
            return Err(ReadError::refused(format!(
                "malformed response header name {}",
                escape(&String::from_utf8_lossy(&name[..name.len().min(80)]))
            )));
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(ReadError::refused(format!("response header {name} carries a control character")));
        }
        headers.push((name, String::from_utf8_lossy(value).trim_matches([' ', '\t']).to_string()));
    }
}

/// Parses one HTTP/1.x response from `r`, reading at most `max_body` body bytes
/// and [`MAX_HEADER_BYTES`] of status line, headers and trailers. Never panics
/// and never allocates more than its limits, whatever `r` yields.
pub fn parse_response<R: BufRead>(r: &mut R, max_body: usize) -> Result<Response, ReadError> {
    let mut budget = MAX_HEADER_BYTES;
    let mut line = Vec::new();
    let (status, headers) = loop {
        if !read_line(r, &mut line, &mut budget, "status line")? {
            return Err(ReadError { message: "the connection closed before a response".into(), transient: true });
        }
        let text = String::from_utf8_lossy(&line);
        let mut parts = text.splitn(3, ' ');
        let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let status = match code.parse::<u16>() {
            Ok(c) if version.starts_with("HTTP/1.") && code.len() == 3 && (100..600).contains(&c) => c,
            _ => {
                return Err(ReadError::refused(format!(
                    "not an HTTP/1.x response: {}",
                    escape(&text.chars().take(80).collect::<String>())
                )))
            }
        };
        let headers = read_headers(r, &mut budget)?;
        // Interim answers (100 Continue) precede the real one.
        if !(100..200).contains(&status) {
            break (status, headers);
        }
    };
    fn all<'a>(headers: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a str> {
        headers.iter().filter(move |(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    let mut body = Vec::new();
    if status == 204 || status == 304 {
        return Ok(Response { status, headers, body });
    }
    if let Some(te) = all(&headers, "transfer-encoding").last() {
        if !te.rsplit(',').next().is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked")) {
            return Err(ReadError::refused(format!("unsupported Transfer-Encoding {}", escape(te))));
        }
        read_chunked(r, &mut body, max_body, &mut budget)?;
        return Ok(Response { status, headers, body });
    }
    let lengths: Vec<String> =
        all(&headers, "content-length").flat_map(|v| v.split(',')).map(|l| l.trim().to_string()).collect();
    if let Some(first) = lengths.first().map(String::as_str) {
        if lengths.iter().any(|l| l != first) {
            return Err(ReadError::refused("conflicting Content-Length headers"));
        }
        if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ReadError::refused(format!("malformed Content-Length {}", escape(first))));
        }
        let n = match first.parse::<u64>() {
            Ok(n) if n <= max_body as u64 => n,
            _ => return Err(body_too_large(first.trim_start_matches('0'), max_body)),
        };
        r.take(n).read_to_end(&mut body).map_err(|e| ReadError::io("reading the body", &e))?;
        if (body.len() as u64) < n {
            return Err(ReadError {
                message: format!("truncated body: {} of {n} bytes before the connection closed", body.len()),
                transient: true,
            });
        }
        return Ok(Response { status, headers, body });
    }
    // No length: the body ends when the connection closes.
    r.take(max_body as u64 + 1).read_to_end(&mut body).map_err(|e| ReadError::io("reading the body", &e))?;
    if body.len() > max_body {
        return Err(body_too_large(format!("more than {max_body}"), max_body));
    }
    Ok(Response { status, headers, body })
}

fn read_chunked<R: BufRead>(r: &mut R, body: &mut Vec<u8>, max: usize, budget: &mut usize) -> Result<(), ReadError> {
    let mut line = Vec::new();
    loop {
        let mut line_budget = MAX_CHUNK_LINE;
        if !read_line(r, &mut line, &mut line_budget, "chunk size line")? {
            return Err(ReadError { message: "truncated chunked body".into(), transient: true });
        }
        let text = String::from_utf8_lossy(&line);
        let hex = text.split(';').next().unwrap_or("").trim_matches([' ', '\t']);
        if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ReadError::refused(format!(
                "malformed chunk size {}",
                escape(&text.chars().take(40).collect::<String>())
            )));
        }
        let n = u64::from_str_radix(hex, 16).map_err(|_| ReadError::refused("malformed chunk size"))?;
        if n == 0 {
            // Trailers, up to the empty line.
            read_headers(r, budget)?;
            return Ok(());
        }
        let total = (body.len() as u64).checked_add(n).filter(|t| *t <= max as u64);
        if total.is_none() {
            return Err(body_too_large(format!("over {}", body.len() as u128 + n as u128), max));
        }
        let before = body.len() as u64;
        r.take(n).read_to_end(body).map_err(|e| ReadError::io("reading a chunk", &e))?;
        if body.len() as u64 - before < n {
            return Err(ReadError { message: "truncated chunked body".into(), transient: true });
        }
        let mut end_budget = 2;
        match read_line(r, &mut line, &mut end_budget, "chunk end") {
            Ok(true) if line.is_empty() => {}
            Ok(false) => return Err(ReadError { message: "truncated chunked body".into(), transient: true }),
            Err(e) if e.transient => return Err(e),
            _ => return Err(ReadError::refused("a chunk does not end with CRLF")),
        }
    }
}

/// A socket whose every read waits at most until `deadline`.
struct Timed {
    s: TcpStream,
    deadline: Instant,
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the deadline passed"));
        }
        self.s.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        self.s.read(buf)
    }
}

fn split_url(url: &str) -> Result<(String, String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{}: only http:// metadata URLs are supported", escape(url)))?;
    if rest.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!("{}: a URL with spaces or control characters", escape(url)));
    }
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

/// The request head, or why a header cannot be sent: names must be tokens and
/// values free of control characters (a CRLF would inject headers). Values are
/// never echoed: they may be secrets.
fn request_head(method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> Result<String, String> {
    if !is_token(method.as_bytes()) {
        return Err(format!("HTTP method {} is not a token", escape(method)));
    }
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: kiln-firstboot\r\n");
    for (k, v) in headers {
        if !is_token(k.as_bytes()) {
            return Err(format!("request header name {} is not a token", escape(k)));
        }
        if v.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(format!("request header {k} carries a control character; refused (it would inject headers)"));
        }
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "PUT" || method == "POST" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    Ok(req)
}

/// One exchange that ends by `deadline`.
fn exchange(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    deadline: Instant,
    max_body: usize,
) -> Result<Response, ReadError> {
    let (host, addr, path) = split_url(url).map_err(ReadError::refused)?;
    let req = request_head(method, &host, &path, headers).map_err(ReadError::refused)?;
    let url = escape(url);
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| ReadError::io(&escape(&addr), &e))?
        .next()
        .ok_or_else(|| ReadError { message: format!("{}: no address", escape(&addr)), transient: true })?;
    let mut s = TcpStream::connect_timeout(&sock, left()).map_err(|e| ReadError::io(&format!("connect {sock}"), &e))?;
    s.set_write_timeout(Some(left())).map_err(|e| ReadError::io("socket", &e))?;
    s.write_all(req.as_bytes()).map_err(|e| ReadError::io(&format!("sending to {sock}"), &e))?;
    let mut r = BufReader::with_capacity(8 << 10, Timed { s, deadline });
    parse_response(&mut r, max_body).map_err(|e| ReadError { message: format!("{url}: {}", e.message), ..e })
}

/// One request, no retries, bounded as a whole by `timeout`, body capped at [`MAX_BODY`].
pub fn once(method: &str, url: &str, headers: &[(&str, &str)], timeout: Duration) -> Result<Response, String> {
    exchange(method, url, headers, Instant::now() + timeout, MAX_BODY).map_err(|e| e.message)
}

/// A request with the retry policy: 5xx, 429, timeouts and truncated bodies
/// are retried with backoff; 404 means absent; other 4xx are final, and so is a
/// response that breaks a limit or the protocol. Ends by the policy's run
/// deadline, and within `total` of its start.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], p: &Policy) -> Result<Response, Error> {
    let start = Instant::now();
    let deadline = p.deadline.map_or(start + p.total, |d| d.min(start + p.total));
    let mut delay = p.backoff;
    let mut last = String::from("no time left for a request");
    for attempt in 1..=p.attempts.max(1) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match exchange(method, url, headers, Instant::now() + p.timeout.min(left), p.max_body) {
            Ok(r) if r.status == 404 => return Err(Error::NotFound),
            Ok(r) if (200..300).contains(&r.status) => return Ok(r),
            Ok(r) if r.status >= 500 || r.status == 429 => last = format!("HTTP {} from {}", r.status, escape(url)),
            Ok(r) => return Err(Error::Status(r.status)),
            Err(e) if !e.transient => return Err(Error::Refused(e.message)),
            Err(e) => last = e.message,
        }
        if attempt < p.attempts {
            std::thread::sleep(delay.min(deadline.saturating_duration_since(Instant::now())));
            delay = delay.saturating_mul(2);
        }
    }
    Err(Error::GaveUp(format!("{last} (gave up after {:.1} s)", start.elapsed().as_secs_f64())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> Result<Response, ReadError> {
        parse_response(&mut &b[..], MAX_BODY)
    }

    #[test]
    fn bodies_of_every_kind() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX: y\r\n\r\nabcdef").unwrap();
        assert_eq!((r.status, r.body.as_slice(), r.header("x")), (200, &b"abc"[..], Some("y")));
        let r =
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n")
                .unwrap();
        assert_eq!(r.body, b"abcde");
        let r = parse(b"HTTP/1.0 200 OK\n\nuntil close").unwrap();
        assert_eq!(r.body, b"until close");
        let r = parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(r.status, 404);
    }

    #[test]
    fn limits_and_malformed_answers_are_final_errors() {
        for (bad, want) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n"[..], "1 MiB"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1048577\r\n\r\n", "1 MiB"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "conflicting"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "malformed"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n", "1 MiB"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n", "chunk size"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", "chunk size"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", "CRLF"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "Transfer-Encoding"),
            (b"HTTP/1.1 200 OK\r\nX: a\x1bb\r\n\r\n", "control character"),
            (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "malformed"),
            (b"SSH-2.0-OpenSSH\r\n", "not an HTTP"),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(!e.transient && e.message.contains(want), "{}: {e:?}", String::from_utf8_lossy(bad));
        }
        let mut endless = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        endless.resize(200 << 10, b'a');
        assert!(parse(&endless).unwrap_err().message.contains("64 KiB"));
        let mut body = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        body.resize(3 << 20, b'a');
        assert!(parse(&body).unwrap_err().message.contains("1 MiB"));
        for cut in [&b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc"[..], b"HTTP/1.1 200 OK\r\nX: y", b""] {
            assert!(parse(cut).unwrap_err().transient, "{}", String::from_utf8_lossy(cut));
        }
    }

    #[test]
    fn request_headers_with_control_characters_are_refused_unechoed() {
        let e = request_head("GET", "h", "/", &[("X-aws-ec2-metadata-token", "s3cret\r\nX-Injected: 1")]).unwrap_err();
        assert!(e.contains("control character") && !e.contains("s3cret"), "{e}");
        assert!(request_head("GET", "h", "/", &[("Bad Name", "v")]).is_err());
        assert!(request_head("G T", "h", "/", &[]).is_err());
        assert!(split_url("http://h/a\r\nX: 1").is_err());
    }

    #[test]
    fn escape_shows_control_characters() {
        assert_eq!(escape("a\u{1b}[31m\n\u{7f}é"), "a\\u{1b}[31m\\n\\u{7f}é");
    }
}
