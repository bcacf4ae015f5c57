//! HTTP/1.1 on loopback for the registry kit's own servers (front, blob host,
//! token server): one thread per connection, `Connection: close`, request
//! heads read by hand and responses written by hand, so the faults reach the
//! client exactly as they would on the wire.

use super::faults::Fault;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The largest request head read.
const MAX_HEAD: usize = 64 * 1024;

/// A request head.
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) target: String,
    /// Names lowercased.
    pub(crate) headers: Vec<(String, String)>,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub(crate) fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("/")
    }
}

/// A listening server; stops accepting when dropped.
pub(crate) struct Listener {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Serves `listener`, one thread per connection running `handle`.
    pub(crate) fn spawn(listener: TcpListener, handle: impl Fn(TcpStream) + Send + Sync + 'static) -> Listener {
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = Arc::new(handle);
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for sock in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(sock) = sock else { continue };
                    let handle = Arc::clone(&handle);
                    std::thread::spawn(move || {
                        let _ = sock.set_read_timeout(Some(Duration::from_secs(30)));
                        handle(sock)
                    });
                }
            })
        };
        Listener { addr, stop, thread: Some(thread) }
    }

    /// `HOST:PORT`.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the blocking accept.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads a request head (no body: the kit's servers take GET and HEAD only).
pub(crate) fn read_request(sock: &mut TcpStream) -> Option<Request> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_HEAD || sock.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Request { method, target, headers })
}

pub(crate) fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Writes the status line and `headers`, then `Content-Length` and `Connection: close`.
pub(crate) fn write_head(sock: &mut TcpStream, code: u16, headers: &[(String, String)], length: u64) -> bool {
    let mut head = format!("HTTP/1.1 {code} {}\r\n", reason(code));
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {length}\r\nConnection: close\r\n\r\n"));
    sock.write_all(head.as_bytes()).is_ok()
}

/// A whole small response.
pub(crate) fn respond(sock: &mut TcpStream, code: u16, headers: &[(String, String)], body: &[u8]) {
    if write_head(sock, code, headers, body.len() as u64) {
        let _ = sock.write_all(body);
    }
}

/// Sends `length` bytes from `body` after `headers`, as the byte faults among
/// `faults` (the first of `Corrupt`, `Trickle`, `LieContentLength`,
/// `ExtraBytes`) say; `head_only` sends the head alone (HEAD). Returns false
/// when the client went away.
pub(crate) fn send_body(
    sock: &mut TcpStream,
    headers: &[(String, String)],
    mut body: impl Read,
    length: u64,
    faults: &[Fault],
    head_only: bool,
) -> bool {
    let fault = faults.iter().find(|f| {
        matches!(f, Fault::Corrupt(_) | Fault::Trickle(_) | Fault::LieContentLength { .. } | Fault::ExtraBytes { .. })
    });
    let (declared, real, extra) = match fault {
        Some(Fault::LieContentLength { length: l, .. }) => (*l, length.min(*l), 0),
        Some(Fault::ExtraBytes { extra, .. }) => (length + extra, length, *extra),
        _ => (length, length, 0),
    };
    if !write_head(sock, 200, headers, declared) || head_only {
        return true;
    }
    let corrupt_at = matches!(fault, Some(Fault::Corrupt(_))).then_some(length / 2);
    let chunk = if matches!(fault, Some(Fault::Trickle(_))) { 1 } else { 64 * 1024 };
    let mut buf = vec![0u8; chunk];
    let mut sent = 0u64;
    while sent < real {
        let want = (real - sent).min(chunk as u64) as usize;
        let Ok(n) = body.read(&mut buf[..want]) else { return false };
        if n == 0 {
            break;
        }
        if let Some(at) = corrupt_at.filter(|at| (sent..sent + n as u64).contains(at)) {
            buf[(at - sent) as usize] ^= 0x01;
        }
        if sock.write_all(&buf[..n]).is_err() {
            return false;
        }
        sent += n as u64;
        if chunk == 1 {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let zeros = vec![0u8; extra.min(64 * 1024) as usize];
    let mut left = extra;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        if sock.write_all(&zeros[..n]).is_err() {
            return false;
        }
        left -= n as u64;
    }
    sock.flush().is_ok()
}
