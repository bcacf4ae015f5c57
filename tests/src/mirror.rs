//! A loopback HTTP/1.1 file server with fault injection (plain std::net, so
//! faults such as a body cut short end exactly as they would on the wire).
//!
//! It serves `root/<path>` for `GET /<path>` with a real `Content-Length`,
//! answers 404 for missing files, and can be told per path to fail with a
//! status a number of times, to stall before answering, to cut the body short,
//! to throttle its sending rate, to redirect anywhere, or to send a body that
//! never ends. Every request is logged.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A fault to inject for one path.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status the next `times` requests.
    Status { code: u16, times: u32 },
    /// Wait this long before answering (every request).
    Stall(Duration),
    /// Declare the full length but send only this many bytes, then close (every request).
    Truncate(usize),
    /// Send at most this many bytes per second (every request).
    Throttle(u64),
    /// Answer `302 Found` with this `Location` (every request): any scheme,
    /// absolute or relative, exactly as given.
    Redirect(String),
    /// Answer 200 with no `Content-Length` and a body of zeros that never
    /// ends (every request): only the client can stop it.
    Endless,
}

#[derive(Default)]
struct State {
    faults: HashMap<String, Fault>,
    log: Vec<(String, String, u16)>,
}

/// A running server; stops when dropped.
pub struct Mirror {
    addr: String,
    root: PathBuf,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Mirror {
    /// Serves `root` on an ephemeral port of 127.0.0.1 (one thread per connection,
    /// HTTP/1.1 with `Connection: close`).
    pub fn serve(root: &Path) -> Mirror {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = format!("http://{}", listener.local_addr().expect("local addr"));
        listener.set_nonblocking(true).expect("nonblocking listener");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop, root) = (Arc::clone(&state), Arc::clone(&stop), root.to_path_buf());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((sock, _)) => {
                            let (state, root) = (Arc::clone(&state), root.clone());
                            std::thread::spawn(move || handle(&root, &state, sock));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Mirror { addr, root: root.to_path_buf(), state, stop, thread: Some(thread) }
    }

    /// Base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.addr
    }

    /// The directory being served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Injects a fault for `path` (as requested, e.g. `/release/v1/kubelet`).
    pub fn fault(&self, path: &str, fault: Fault) {
        self.state.lock().unwrap().faults.insert(path.to_string(), fault);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    /// `(method, path, status)` of every request so far.
    pub fn log(&self) -> Vec<(String, String, u16)> {
        self.state.lock().unwrap().log.clone()
    }

    /// Number of `GET` requests for `path` (downloads, not `HEAD`s).
    pub fn gets(&self, path: &str) -> usize {
        self.log().iter().filter(|(m, p, _)| m == "GET" && p == path).count()
    }

    /// Number of requests for `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.log().iter().filter(|(_, p, _)| p == path).count()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads the request head; returns (method, path).
fn read_head(sock: &mut TcpStream) -> Option<(String, String)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || sock.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut first = text.lines().next()?.split_whitespace();
    Some((first.next()?.to_string(), first.next()?.to_string()))
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn handle(root: &Path, state: &Mutex<State>, mut sock: TcpStream) {
    let _ = sock.set_nonblocking(false);
    let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
    let Some((method, target)) = read_head(&mut sock) else { return };
    let path = target.split('?').next().unwrap_or("/").to_string();
    let fault = {
        let mut s = state.lock().unwrap();
        let f = s.faults.get(&path).cloned();
        if let Some(Fault::Status { code, times }) = &f {
            if *times <= 1 {
                s.faults.remove(&path);
            } else {
                s.faults.insert(path.clone(), Fault::Status { code: *code, times: times - 1 });
            }
        }
        f
    };
    let rel = path.trim_start_matches('/');
    let file = root.join(rel);
    let status = match (&fault, rel.split('/').any(|c| c == "..")) {
        (_, true) => 400,
        (Some(Fault::Status { code, .. }), _) => *code,
        (Some(Fault::Redirect(_)), _) => 302,
        (Some(Fault::Endless), _) => 200,
        _ if file.is_file() => 200,
        _ => 404,
    };
    state.lock().unwrap().log.push((method.clone(), path.clone(), status));
    if let Some(Fault::Stall(d)) = &fault {
        std::thread::sleep(*d);
    }
    if let Some(Fault::Redirect(location)) = &fault {
        let head =
            format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = sock.write_all(head.as_bytes());
        return;
    }
    if let Some(Fault::Endless) = &fault {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n";
        if sock.write_all(head.as_bytes()).is_err() || method == "HEAD" {
            return;
        }
        let zeros = vec![0u8; 64 * 1024];
        // Until the client hangs up.
        while sock.write_all(&zeros).is_ok() {}
        return;
    }
    let body =
        if status == 200 { std::fs::read(&file).unwrap_or_default() } else { format!("{status}\n").into_bytes() };
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    if sock.write_all(head.as_bytes()).is_err() || method == "HEAD" {
        return;
    }
    let (limit, rate) = match fault {
        Some(Fault::Truncate(n)) => (n.min(body.len()), None),
        Some(Fault::Throttle(r)) => (body.len(), Some(r)),
        _ => (body.len(), None),
    };
    let chunk = rate.map(|r| (r / 20).max(1) as usize).unwrap_or(256 * 1024);
    for part in body[..limit].chunks(chunk) {
        if sock.write_all(part).is_err() {
            return;
        }
        if rate.is_some() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = sock.flush();
    // Dropping the socket closes the connection: a truncated body ends in EOF.
}
