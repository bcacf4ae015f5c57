//! A loopback HTTP/1.1 server driven by a handler function, for metadata
//! services: tests decide, per request, the status, headers and body, and may
//! stall or cut the body short, exactly as a real service could.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Path with query.
    pub target: String,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("/")
    }
}

/// What to answer.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Wait this long before answering.
    pub stall: Option<Duration>,
    /// Declare the full length but send only this many bytes, then close.
    pub truncate: Option<usize>,
    /// Declare this `Content-Length` instead of the body's (a lying server).
    pub content_length: Option<u64>,
    /// Send the body one byte at a time, waiting this long before each (a trickling server).
    pub trickle: Option<Duration>,
}

impl Reply {
    /// 200 with a body.
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply { status: 200, body: body.into(), ..Reply::default() }
    }
    /// A bare status.
    pub fn status(code: u16) -> Reply {
        Reply { status: code, body: format!("{code}\n").into_bytes(), ..Reply::default() }
    }
    /// Adds a header.
    pub fn with(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// A running server; stops when dropped.
pub struct Server {
    addr: String,
    log: Arc<Mutex<Vec<(Request, u16)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts a server on 127.0.0.1 with `handler`.
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = format!("http://{}", listener.local_addr().expect("addr"));
        let handler: Arc<Handler> = Arc::new(handler);
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        // Blocking accept (no polling delay in measured paths); Drop wakes it
        // with a connection of its own after setting `stop`.
        let thread = {
            let (handler, log, stop) = (Arc::clone(&handler), Arc::clone(&log), Arc::clone(&stop));
            std::thread::spawn(move || {
                for sock in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(sock) = sock else { continue };
                    let (handler, log) = (Arc::clone(&handler), Arc::clone(&log));
                    std::thread::spawn(move || serve(sock, &*handler, &log));
                }
            })
        };
        Server { addr, log, stop, thread: Some(thread) }
    }

    /// Base URL.
    pub fn url(&self) -> &str {
        &self.addr
    }

    /// Requests so far with the status answered.
    pub fn log(&self) -> Vec<(Request, u16)> {
        self.log.lock().unwrap().clone()
    }

    /// How many requests went to `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.log().iter().filter(|(r, _)| r.path() == path).count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr.trim_start_matches("http://"));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(sock: TcpStream, handler: &Handler, log: &Mutex<Vec<(Request, u16)>>) {
    let _ = sock.set_nonblocking(false);
    let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(read_half) = sock.try_clone() else { return };
    let mut r = BufReader::new(read_half);
    let mut first = String::new();
    if r.read_line(&mut first).is_err() {
        return;
    }
    let mut parts = first.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else { return };
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        match r.read_line(&mut h) {
            Ok(0) | Err(_) => break,
            Ok(_) if h == "\r\n" || h == "\n" => break,
            Ok(_) => {
                if let Some((k, v)) = h.split_once(':') {
                    headers.push((k.trim().to_lowercase(), v.trim().to_string()));
                }
            }
        }
    }
    let req = Request { method: method.to_string(), target: target.to_string(), headers };
    let reply = handler(&req);
    log.lock().unwrap().push((req, reply.status));
    if let Some(d) = reply.stall {
        std::thread::sleep(d);
    }
    let mut w = sock;
    let length = reply.content_length.unwrap_or(reply.body.len() as u64);
    let mut head = format!("HTTP/1.1 {} X\r\nContent-Length: {length}\r\nConnection: close\r\n", reply.status);
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let n = reply.truncate.unwrap_or(reply.body.len()).min(reply.body.len());
    let _ = w.write_all(head.as_bytes());
    match reply.trickle {
        Some(pause) => {
            for b in &reply.body[..n] {
                std::thread::sleep(pause);
                if w.write_all(std::slice::from_ref(b)).and_then(|()| w.flush()).is_err() {
                    return;
                }
            }
        }
        None => {
            let _ = w.write_all(&reply.body[..n]);
        }
    }
    let _ = w.flush();
}
