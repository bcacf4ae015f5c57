//! Helper programs (kubeadm above all) run within a time bound, whatever they print
//! and whatever they leave behind (issue 24, B19).
//!
//! * stdout and stderr are read while the program runs, by one thread each, so a
//!   program that prints more than a pipe holds (64 KiB on Linux) never blocks on it;
//!   only the first and the last [`KEEP`] bytes of each are kept, for diagnosis;
//! * the program runs in a process group of its own (`setpgid(0, 0)`), and the whole
//!   group is killed at the bound, so its children die with it;
//! * once the program has exited (or was killed), its output gets [`GRACE`] to end:
//!   a descendant that still holds the pipe (one that left the group with `setsid`)
//!   is left behind, not waited for, and the group is killed first.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes kept of the start and of the end of each output stream.
pub const KEEP: usize = 64 << 10;

/// How long the output may take to end after the program exited or was killed.
pub const GRACE: Duration = Duration::from_secs(2);

/// The head and the tail of one stream, and how much was dropped between them.
#[derive(Default)]
struct Capture {
    head: Vec<u8>,
    tail: Vec<u8>,
    dropped: u64,
    done: bool,
}

impl Capture {
    fn push(&mut self, mut b: &[u8]) {
        let room = KEEP - self.head.len();
        if room > 0 {
            let n = room.min(b.len());
            self.head.extend_from_slice(&b[..n]);
            b = &b[n..];
        }
        self.tail.extend_from_slice(b);
        // Trimmed in batches: amortised, whatever the chunk sizes.
        if self.tail.len() > 2 * KEEP {
            let cut = self.tail.len() - KEEP;
            self.dropped += cut as u64;
            self.tail.drain(..cut);
        }
    }

    fn text(&self) -> String {
        let mut tail: &[u8] = &self.tail;
        let mut dropped = self.dropped;
        if tail.len() > KEEP {
            dropped += (tail.len() - KEEP) as u64;
            tail = &tail[tail.len() - KEEP..];
        }
        let mut s = String::from_utf8_lossy(&self.head).into_owned();
        if dropped > 0 {
            s.push_str(&format!("\n[... {dropped} bytes of output left out ...]\n"));
        }
        s.push_str(&String::from_utf8_lossy(tail));
        s
    }
}

/// Reads `r` to its end (or an error) into `cap` on a thread of its own.
fn drain(mut r: impl Read + Send + 'static) -> Arc<Mutex<Capture>> {
    let cap = Arc::new(Mutex::new(Capture::default()));
    let c = Arc::clone(&cap);
    let spawned = std::thread::Builder::new().name("kiln-drain".into()).spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Ok(mut g) = c.lock() {
                        g.push(&buf[..n]);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if let Ok(mut g) = c.lock() {
            g.done = true;
        }
    });
    if spawned.is_err() {
        // No thread: nothing reads the pipe; say so rather than wait for it.
        if let Ok(mut g) = cap.lock() {
            g.push(b"(kiln-firstboot: could not start a thread to read this output)\n");
            g.done = true;
        }
    }
    cap
}

/// Kills every process of the group `pgid` (the program and the children it left).
fn kill_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else { return };
    // SAFETY: kill(2) with a negative pid signals that process group; it takes no
    // pointers and cannot affect this process's memory. ESRCH (the group is gone)
    // is the expected outcome once every member exited.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Runs `cmd` with stdin from `/dev/null` within `limit`, returning (success, its
/// stdout then its stderr, each the first and the last [`KEEP`] bytes). At `limit` the
/// program's process group is killed and the text ends with "timed out after N s and
/// was killed"; the call returns within `limit` plus [`GRACE`] (plus scheduling)
/// whatever the program's descendants do.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> (bool, String) {
    let (ok, out, err) = run_bounded_apart(cmd, limit);
    (ok, out + &err)
}

/// [`run_bounded`] with the program's stdout and its stderr (and the notes on
/// timeouts and held pipes) apart: (success, stdout, stderr), for a program whose
/// stdout is its product (`kubeadm kubeconfig user` prints the kubeconfig).
pub fn run_bounded_apart(cmd: &mut Command, limit: Duration) -> (bool, String, String) {
    run_bounded_fed(cmd, limit, None)
}

/// What writes a program's stdin, on a thread of its own: the pipe closes when it returns.
pub type Feed = Box<dyn FnOnce(&mut dyn Write) -> std::io::Result<()> + Send>;

/// [`run_bounded_apart`] with stdin written by `feed` (from `/dev/null` when `None`).
/// The feeding is bounded with the program: at `limit` the group is killed, the pipe
/// breaks and the feed's write fails. A feed that failed fails the call, with why.
pub fn run_bounded_fed(cmd: &mut Command, limit: Duration, feed: Option<Feed>) -> (bool, String, String) {
    let start = Instant::now();
    let stdin = if feed.is_some() { Stdio::piped() } else { Stdio::null() };
    let spawned = cmd.stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return (false, String::new(), format!("cannot start {:?}: {e}", cmd.get_program())),
    };
    let pgid = child.id();
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    // The feed's outcome comes back on a channel: waited for a bounded time, never joined.
    let fed = match (feed, child.stdin.take()) {
        (Some(f), Some(mut pipe)) => {
            let (tx, rx) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new().name("kiln-feed".into()).spawn(move || {
                let _ = tx.send(f(&mut pipe));
            });
            Some(spawned.map(|_| rx))
        }
        _ => None,
    };
    // Poll quickly at first (most helpers exit within milliseconds), then back off.
    let mut poll = Duration::from_micros(250);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() >= limit => {
                kill_group(pgid);
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => {
                std::thread::sleep(poll.min(limit.saturating_sub(start.elapsed())).max(Duration::from_micros(100)));
                poll = (poll * 2).min(Duration::from_millis(50));
            }
            Err(_) => {
                kill_group(pgid);
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let streams: Vec<&Arc<Mutex<Capture>>> = out.iter().chain(err.iter()).collect();
    let ended = || streams.iter().all(|c| c.lock().map(|g| g.done).unwrap_or(true));
    let grace = Instant::now() + GRACE;
    while !ended() && Instant::now() < grace {
        std::thread::sleep(Duration::from_millis(5));
    }
    if !ended() {
        // Children of a program that exited still hold its output: they go with it.
        kill_group(pgid);
        let last = Instant::now() + Duration::from_millis(200);
        while !ended() && Instant::now() < last {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let text =
        |c: &Option<Arc<Mutex<Capture>>>| c.as_ref().and_then(|c| c.lock().ok().map(|g| g.text())).unwrap_or_default();
    let (stdout, mut stderr) = (text(&out), text(&err));
    if !ended() {
        stderr.push_str("\n(its output was still open after it exited: a process it started holds it; left behind)");
    }
    // The program has ended (or was killed): the pipe is closed, so the feed ends too.
    let fed = match fed {
        None => Ok(()),
        Some(Err(e)) => Err(format!("could not start a thread to write its input: {e}")),
        Some(Ok(rx)) => match rx.recv_timeout(GRACE) {
            Ok(r) => r.map_err(|e| format!("writing its input: {e}")),
            Err(_) => Err("its input was still being written after it ended; left behind".to_string()),
        },
    };
    match (status, fed) {
        (Some(s), Ok(())) => (s.success(), stdout, stderr),
        (Some(_), Err(e)) => (false, stdout, format!("{stderr}\n({e})")),
        (None, _) => (false, stdout, format!("{stderr}\n(timed out after {} s and was killed)", limit.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_writes_stdin_and_its_failure_fails_the_call() {
        let feed: Feed = Box::new(|w| w.write_all(b"fed through stdin\n"));
        let (ok, out, _) = run_bounded_fed(Command::new("cat").arg("-"), Duration::from_secs(10), Some(feed));
        assert!(ok && out == "fed through stdin\n", "{out}");
        let feed: Feed = Box::new(|w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("the archive ended early"))
        });
        let (ok, _, err) = run_bounded_fed(Command::new("cat").arg("-"), Duration::from_secs(10), Some(feed));
        assert!(!ok && err.contains("writing its input: the archive ended early"), "{err}");
    }

    #[test]
    fn keeps_the_head_and_the_tail() {
        let mut c = Capture::default();
        c.push(b"start ");
        for _ in 0..100 {
            c.push(&[b'x'; 10_000]);
        }
        c.push(b" end");
        let t = c.text();
        assert!(t.starts_with("start xx") && t.ends_with("xx end"), "{}", &t[..40]);
        assert!(t.len() <= 2 * KEEP + 100 && t.contains("bytes of output left out"));
    }
}
