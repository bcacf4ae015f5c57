//! Hostile metadata, user-data and command lines (issue 10, B10–B14 and the weak
//! points): one bad value gives one clear error — never a crash, a read or write
//! outside `--root`, an injected header or flag, or an unbounded run.
//!
//! Metadata servers here are real TCP servers on 127.0.0.1: the test kit's HTTP
//! server for well-formed answers, and a raw socket writer for malformed ones.

use kiln_firstboot::contract::node::NodeConfig;
use kiln_firstboot::http::Policy;
use kiln_firstboot::providers::{aws::Aws, Provider};
use kiln_testkit::http::{Reply, Request, Server};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A raw server on 127.0.0.1: reads each request's head, then `answer` writes
/// whatever it likes to the socket. Returns the base URL.
fn raw_server(answer: impl Fn(&mut TcpStream) + Send + Sync + Clone + 'static) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
                    match s.read(&mut b) {
                        Ok(1) => head.push(b[0]),
                        _ => return,
                    }
                }
                answer(&mut s);
            });
        }
    });
    url
}

/// Writes `head`, then `total` bytes of `fill` (as fast as the client reads).
fn flood(s: &mut TcpStream, head: &[u8], fill: u8, total: usize) {
    if s.write_all(head).is_err() {
        return;
    }
    let block = vec![fill; 64 << 10];
    let mut sent = 0;
    while sent < total {
        if s.write_all(&block).is_err() {
            return;
        }
        sent += block.len();
    }
}

/// A scratch root that resolves through the Hetzner provider at `url`.
fn root_for(url: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let w = |rel: &str, text: &str| {
        let p = d.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w("etc/kiln/image.toml", IMAGE);
    w("etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    w("etc/hostname", "w1\n");
    w("proc/cmdline", "console=ttyS0 kiln.platform=hetzner");
    let _ = url;
    d
}

const IMAGE: &str = "schema = 1\nprofile = \"t\"\nfamily = \"fcos\"\narch = \"amd64\"\nkubernetes_version = \"v1.34.2\"\nkubeadm_version = \"v1.34.2\"\nkubelet_version = \"v1.34.2\"\nbin_dir = \"/opt/bin\"\ncni_bin_dir = \"/opt/cni/bin\"\nflex_volume_dir = \"/opt/libexec/kubernetes/kubelet-plugins/volume/exec/\"\nruntime = \"containerd\"\nruntime_socket = \"unix:///run/containerd/containerd.sock\"\ncgroup_driver = \"systemd\"\n";

/// Runs kiln-firstboot, killing it after `limit` (a hang is a failure, not a stuck suite).
fn firstboot(args: &[&str], limit: Duration) -> (Output, Duration) {
    firstboot_wrapped(&[], args, limit)
}

fn firstboot_wrapped(wrapper: &[&str], args: &[&str], limit: Duration) -> (Output, Duration) {
    let bin = env!("CARGO_BIN_EXE_kiln-firstboot");
    let mut cmd = match wrapper.split_first() {
        Some((w, rest)) => {
            let mut c = Command::new(w);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let start = Instant::now();
    let mut child = cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let t1 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t2 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    let out = Output { status, stdout: t1.join().unwrap(), stderr: t2.join().unwrap() };
    (out, elapsed)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn run_args<'a>(root: &'a Path, url: &'a str, cmd: &'a str) -> Vec<&'a str> {
    vec![
        "--root",
        root.to_str().unwrap(),
        "--metadata-url",
        url,
        "--metadata-timeout",
        "2",
        "--metadata-total",
        "4",
        cmd,
    ]
}

/// B10: a huge Content-Length or chunk size is one clear error and a failure
/// marker, never an abort (exit 134) or a panic (exit 101).
#[test]
fn b10_huge_lengths_are_an_error_not_a_crash() {
    let heads: [&[u8]; 4] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffffffff\r\nabc",
    ];
    for head in heads {
        let url = raw_server(move |s| {
            let _ = s.write_all(head);
        });
        let d = root_for(&url);
        let (o, _) = firstboot(&run_args(d.path(), &url, "run"), Duration::from_secs(20));
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{}: {t}", String::from_utf8_lossy(head));
        assert!(!t.contains("panicked"), "{t}");
        assert!(t.contains("hetzner metadata"), "{t}");
        let marker = std::fs::read_to_string(d.path().join("run/kiln/bootstrap-failed")).unwrap_or_default();
        assert!(marker.contains("metadata"), "no failure marker: {t}");
    }
}

/// B11: an endless body stops at the body cap and an endless header line at the
/// header cap; peak RSS stays under 16 MB; the run ends within --metadata-total
/// plus one request timeout.
#[test]
fn b11_endless_body_and_header_are_capped_in_memory_and_time() {
    let cases: [(&[u8], &str); 2] =
        [(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", "1 MiB"), (b"HTTP/1.1 200 OK\r\nX-Endless: ", "64 KiB")];
    for (head, limit) in cases {
        // 64 MiB stands for "endless": enough to show the cap, bounded if there is none.
        let url = raw_server(move |s| flood(s, head, b'a', 64 << 20));
        let d = root_for(&url);
        let args = run_args(d.path(), &url, "plan");
        let (o, took, rss_kb) = with_peak_rss(&args, Duration::from_secs(30));
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{t}");
        assert!(t.contains(limit), "the error names the {limit} limit: {t}");
        assert!(rss_kb < 16 * 1024, "peak RSS {rss_kb} kB against an endless {limit} stream");
        assert!(took < Duration::from_secs(4 + 2 + 1), "took {took:?}");
        eprintln!("endless stream ({limit} cap): peak RSS {rss_kb} kB, {took:?}");
    }
}

/// Peak RSS of a kiln-firstboot run in kB: GNU time's %M when installed, else
/// VmHWM polled from /proc while it runs.
fn with_peak_rss(args: &[&str], limit: Duration) -> (Output, Duration, u64) {
    if Path::new("/usr/bin/time").exists() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("rss");
        let fs = f.to_str().unwrap().to_string();
        let (o, took) = firstboot_wrapped(&["/usr/bin/time", "-o", &fs, "-f", "%M"], args, limit);
        let kb = std::fs::read_to_string(&f)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<u64>().ok())
            .next_back()
            .unwrap_or(u64::MAX);
        return (o, took, kb);
    }
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln-firstboot"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak = 0;
    let status = loop {
        let st = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        if let Some(kb) =
            st.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
        {
            peak = peak.max(kb);
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut err = Vec::new();
    let _ = child.stderr.take().unwrap().read_to_end(&mut err);
    (Output { status, stdout: Vec::new(), stderr: err }, start.elapsed(), peak)
}

/// B12: a server trickling a byte at a time (each read well inside the
/// per-request timeout) cannot hold a run past --metadata-total.
#[test]
fn b12_trickling_server_is_bounded_by_metadata_total() {
    let url = raw_server(|s| {
        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n").is_err() {
            return;
        }
        for _ in 0..300 {
            std::thread::sleep(Duration::from_millis(300));
            if s.write_all(b"a").is_err() {
                return;
            }
        }
    });
    let d = root_for(&url);
    let (o, took) = firstboot(&run_args(d.path(), &url, "plan"), Duration::from_secs(40));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    // --metadata-total 4 plus one request timeout (2 s), and a little slack.
    assert!(took < Duration::from_millis(6500), "a trickle held the run for {took:?}: {t}");
    eprintln!("trickling server, --metadata-total 4 --metadata-timeout 2: ended after {took:?}");
}

fn aws(local_ipv4: &'static str, role: &'static str, token: Vec<u8>) -> Server {
    Server::start(move |r: &Request| {
        if r.method == "PUT" {
            return Reply::ok(token.clone());
        }
        if r.headers.iter().any(|(k, _)| k == "x-injected") {
            return Reply::status(418);
        }
        match r.path() {
            "/latest/meta-data/instance-id" => Reply::ok("i-1"),
            "/latest/meta-data/local-ipv4" => Reply::ok(local_ipv4),
            "/latest/meta-data/tags/instance/kiln-role" => Reply::ok(role),
            _ => Reply::status(404),
        }
    })
}

fn fast() -> Policy {
    Policy {
        timeout: Duration::from_secs(2),
        attempts: 2,
        backoff: Duration::from_millis(10),
        total: Duration::from_secs(5),
        ..Policy::default()
    }
}

/// B13: a node IP with a flag appended is refused where it is parsed: in the
/// metadata answer and in user-data.
#[test]
fn b13_node_ip_with_a_flag_is_refused_where_parsed() {
    let s = aws("10.0.0.5 --anonymous-auth=true", "join", b"tok".to_vec());
    let e = Aws { base: s.url().into() }.fetch(&fast()).unwrap_err();
    assert!(e.contains("local-ipv4") && e.contains("node IP"), "{e}");
    let e = NodeConfig::parse(b"[node]\nrole = \"join\"\nnode_ip = \"10.0.0.5 --anonymous-auth=true\"\n").unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("node IP"), "{e}");
    // The same through a whole run's user-data: exit 2, and the flag never reaches a plan.
    let url = Server::start(|r: &Request| match r.path() {
        "/hetzner/v1/userdata" => Reply::ok("[node]\nrole = \"join\"\nnode_ip = \"10.0.0.5 --anonymous-auth=true\"\n"),
        _ => Reply::status(404),
    });
    let d = root_for(url.url());
    let (o, _) = firstboot(&run_args(d.path(), url.url(), "plan"), Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("hetzner user-data:3:"), "{}", text(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("anonymous-auth"));
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

const PEM_KEY: &str = "-----BEGIN PRIVATE KEY-----\nb3V0c2lkZQ==\n-----END PRIVATE KEY-----\n";
const PEM_CERT: &str = "-----BEGIN CERTIFICATE-----\nY2VydA==\n-----END CERTIFICATE-----\n";

/// An init node.toml whose `ca_key` is `ca_key`, every other PKI value inline.
fn init_node(ca_key: &str) -> String {
    let mut s = String::from("[cluster]\ncontrol_plane_endpoint = \"api.example.test:6443\"\nbootstrap_token = \"abcdef.0123456789abcdef\"\n[node]\nrole = \"init\"\nnode_ip = \"10.0.0.5\"\n[pki]\n");
    s.push_str(&format!("ca_key = \"{ca_key}\"\n"));
    for k in ["ca_cert", "front_proxy_ca_cert", "etcd_ca_cert", "sa_pub"] {
        s.push_str(&format!("{k} = \"\"\"\n{PEM_CERT}\"\"\"\n"));
    }
    for k in ["front_proxy_ca_key", "etcd_ca_key", "sa_key"] {
        s.push_str(&format!("{k} = \"\"\"\n{PEM_KEY}\"\"\"\n"));
    }
    s
}

/// B14: `[pki]` paths are read under --root: `..` that leaves it, and symlinks
/// that leave it, are refused; a path inside it still works.
#[test]
fn b14_pki_paths_stay_under_the_root() {
    let outer = tempfile::tempdir().unwrap();
    write(outer.path(), "outside/ca.key", PEM_KEY);
    let root = outer.path().join("root");
    write(&root, "etc/kiln/image.toml", IMAGE);
    write(&root, "etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    write(&root, "proc/cmdline", "console=ttyS0");
    write(&root, "etc/kiln/pki/inside.key", PEM_KEY);
    std::os::unix::fs::symlink("../../../../outside/ca.key", root.join("etc/kiln/pki/rel-link.key")).unwrap();
    std::os::unix::fs::symlink(outer.path().join("outside/ca.key"), root.join("etc/kiln/pki/abs-link.key")).unwrap();
    std::os::unix::fs::symlink("inside.key", root.join("etc/kiln/pki/ok-link.key")).unwrap();
    let plan = |ca_key: &str| {
        write(&root, "etc/kiln/node.toml", &init_node(ca_key));
        firstboot(&["--root", root.to_str().unwrap(), "plan"], Duration::from_secs(20)).0
    };
    for bad in ["../outside/ca.key", "/../outside/ca.key", "/etc/kiln/pki/rel-link.key", "/etc/kiln/pki/abs-link.key"] {
        let o = plan(bad);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", text(&o));
        assert!(text(&o).contains("[pki]"), "{bad}: {}", text(&o));
    }
    for good in ["/etc/kiln/pki/inside.key", "/etc/kiln/pki/ok-link.key", "/etc/kiln/../kiln/pki/inside.key"] {
        let o = plan(good);
        assert!(o.status.success(), "{good}: {}", text(&o));
    }
}

/// Weak point: a CRLF in the IMDS token would inject request headers; a huge
/// token is refused at its own small cap; both with one clear error.
#[test]
fn imds_token_is_checked() {
    let s = aws("10.0.0.5", "join", b"tok\r\nX-Injected: 1".to_vec());
    let e = Aws { base: s.url().into() }.fetch(&fast()).unwrap_err();
    assert!(e.contains("token") && e.contains("control character"), "{e}");
    assert!(s.log().iter().all(|(r, _)| r.header("x-injected").is_none()), "a header was injected");
    let s = aws("10.0.0.5", "join", vec![b'a'; 8 << 20]);
    let t = Instant::now();
    let e = Aws { base: s.url().into() }.fetch(&fast()).unwrap_err();
    assert!(e.contains("token") && e.contains("KiB"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
    // Request headers with control characters are refused before anything is sent.
    let e = kiln_firstboot::http::once("GET", &format!("{}/x", s.url()), &[("A", "b\nC: d")], Duration::from_secs(1))
        .unwrap_err();
    assert!(e.contains("control character"), "{e}");
}

/// Weak point: an unknown `kiln-role` tag is an error, not silently ignored.
#[test]
fn unknown_kiln_role_tag_is_an_error() {
    let s = aws("10.0.0.5", "boss\u{1b}[31m", b"tok".to_vec());
    let e = Aws { base: s.url().into() }.fetch(&fast()).unwrap_err();
    assert!(e.contains("kiln-role") && e.contains("boss"), "{e}");
    assert!(!e.contains('\u{1b}'), "raw control character in {e:?}");
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Weak point: gzip user-data over the limit is an error naming it (never a
/// silent cut), and every gzip member is read.
#[test]
fn gzip_user_data_limit_and_members() {
    let mut big = b"[node]\nrole = \"join\"\n".to_vec();
    while big.len() < 5 << 20 {
        big.extend_from_slice(b"# padding padding padding padding padding padding padding padding\n");
    }
    let e = NodeConfig::parse(&gzip(&big)).unwrap_err();
    assert!(e.message.contains("MiB"), "{e}");
    let mut two = gzip(b"[node]\nrole = \"join\"\n");
    two.extend(gzip(b"[cluster]\nname = \"prod\"\n"));
    let c = NodeConfig::parse(&two).unwrap();
    assert_eq!(c.cluster.and_then(|c| c.name).as_deref(), Some("prod"), "the second gzip member was dropped");
    // Plain text over the limit too.
    assert!(NodeConfig::parse(&big).unwrap_err().message.contains("MiB"));
}

fn plan_with_cmdline(cmdline: &str) -> Output {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "etc/kiln/image.toml", IMAGE);
    write(d.path(), "etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    write(d.path(), "proc/cmdline", cmdline);
    write(
        d.path(),
        "etc/kiln/node.toml",
        "[cluster]\ncontrol_plane_endpoint = \"api.example.test:6443\"\nbootstrap_token = \"abcdef.0123456789abcdef\"\nca_cert_hashes = [\"sha256:00\"]\n[node]\nnode_ip = \"10.0.0.5\"\n",
    );
    firstboot(&["--root", d.path().to_str().unwrap(), "plan"], Duration::from_secs(20)).0
}

/// Weak points: the kernel command line — a key given twice, a quoted value
/// with a space, control characters echoed raw.
#[test]
fn cmdline_values_are_checked_and_escaped() {
    let o = plan_with_cmdline("ro kiln.role=join kiln.node-name=w-1");
    assert!(o.status.success(), "{}", text(&o));
    let o = plan_with_cmdline("ro kiln.role=init kiln.role=join");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("kiln.role") && text(&o).contains("more than once"), "{}", text(&o));
    let o = plan_with_cmdline("ro kiln.role=join kiln.node-name=\"a b\"");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("kiln.node-name"), "{}", text(&o));
    let o = plan_with_cmdline("ro kiln.role=\u{1b}[2Jboss\u{7}");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!text(&o).contains('\u{1b}') && !text(&o).contains('\u{7}'), "raw control characters: {:?}", text(&o));
    assert!(text(&o).contains("\\u{1b}"), "{}", text(&o));
}

/// Weak point: label values with `,` would inject labels; refused when they
/// come from metadata user-data too.
#[test]
fn label_with_comma_from_metadata_user_data_is_refused() {
    let s = Server::start(|r: &Request| {
        match r.path() {
        "/hetzner/v1/userdata" => Reply::ok(
            "[cluster]\ncontrol_plane_endpoint = \"api.example.test:6443\"\nbootstrap_token = \"abcdef.0123456789abcdef\"\nca_cert_hashes = [\"sha256:00\"]\n[node]\nrole = \"join\"\nnode_ip = \"10.0.0.5\"\nlabels = { pool = \"a,node-role.kubernetes.io/control-plane=\" }\n",
        ),
        _ => Reply::status(404),
    }
    });
    let d = root_for(s.url());
    let (o, _) = firstboot(&run_args(d.path(), s.url(), "plan"), Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("label"), "{}", text(&o));
}

/// Weak point: `kiln-firstboot plan | head -c1` — a closed stdout is no panic.
#[test]
fn closed_stdout_is_no_panic() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "etc/kiln/image.toml", IMAGE);
    write(d.path(), "etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    write(d.path(), "proc/cmdline", "ro kiln.role=join");
    write(
        d.path(),
        "etc/kiln/node.toml",
        "[cluster]\ncontrol_plane_endpoint = \"api.example.test:6443\"\nbootstrap_token = \"abcdef.0123456789abcdef\"\nca_cert_hashes = [\"sha256:00\"]\n[node]\nnode_ip = \"10.0.0.5\"\n",
    );
    for cmd in ["plan", "status", "doctor", "--help"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln-firstboot"))
            .args(["--root", d.path().to_str().unwrap(), cmd])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{cmd}: {err}");
        assert_ne!(o.status.code(), Some(101), "{cmd}: {err}");
    }
}

/// A root whose node.toml resolves to a worker (no role: the command line gives it).
fn worker_root() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "etc/kiln/image.toml", IMAGE);
    write(d.path(), "etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    write(
        d.path(),
        "etc/kiln/node.toml",
        "[cluster]\ncontrol_plane_endpoint = \"api.example.test:6443\"\nbootstrap_token = \"abcdef.0123456789abcdef\"\nca_cert_hashes = [\"sha256:00\"]\n[node]\nnode_ip = \"10.0.0.5\"\n",
    );
    d
}

/// Issue 24 partial: one non-UTF-8 byte in /proc/cmdline drops only its own
/// parameter (with a warning naming it), not the whole command line.
#[test]
fn a_non_utf8_cmdline_parameter_is_skipped_alone() {
    let d = worker_root();
    std::fs::create_dir_all(d.path().join("proc")).unwrap();
    std::fs::write(d.path().join("proc/cmdline"), b"ro kiln.role=join bad=\xff\xfe kiln.node-name=w-1\n").unwrap();
    let (o, _) = firstboot(&["--root", d.path().to_str().unwrap(), "plan"], Duration::from_secs(20));
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("node w-1 (join)"), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("parameter 3") && err.contains("not UTF-8") && err.contains("skipped"), "{err}");
}

/// Issue 24 partial: `--cmdline /dev/zero`, a FIFO and a 100 KiB file are refused at
/// once with exit 2 (the read is capped at 64 KiB and opened non-blocking).
#[test]
fn a_cmdline_that_is_a_device_a_fifo_or_huge_is_refused_at_once() {
    let d = worker_root();
    let fifo = d.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let big = d.path().join("big");
    std::fs::write(&big, "a ".repeat(50 << 10)).unwrap();
    for (file, says) in [
        ("/dev/zero", "not a regular file"),
        (fifo.to_str().unwrap(), "not a regular file"),
        (big.to_str().unwrap(), "64 KiB"),
    ] {
        let (o, took) =
            firstboot(&["--root", d.path().to_str().unwrap(), "--cmdline", file, "plan"], Duration::from_secs(20));
        assert_eq!(o.status.code(), Some(2), "{file}: {}", text(&o));
        assert!(took < Duration::from_secs(5), "{file}: {took:?}");
        assert!(text(&o).contains("kernel command line") && text(&o).contains(says), "{file}: {}", text(&o));
    }
}

/// Issue 24 partial: two boot-partition node.toml files are refused naming both; one
/// file reached by both names (`/boot/firmware -> /boot`) is one file.
#[test]
fn two_boot_partition_node_tomls_are_refused_with_both_paths() {
    let d = worker_root();
    write(d.path(), "proc/cmdline", "ro");
    write(d.path(), "boot/firmware/kiln/node.toml", "[node]\nrole = \"join\"\nname = \"from-firmware\"\n");
    write(d.path(), "boot/kiln/node.toml", "[node]\nrole = \"join\"\nname = \"from-boot\"\n");
    let (o, _) = firstboot(&["--root", d.path().to_str().unwrap(), "plan"], Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("boot/firmware/kiln/node.toml") && t.contains("boot/kiln/node.toml") && t.contains("keep one"),
        "{t}"
    );
    std::fs::remove_dir_all(d.path().join("boot/firmware")).unwrap();
    std::os::unix::fs::symlink("/boot", d.path().join("boot/firmware")).unwrap();
    let (o, _) = firstboot(&["--root", d.path().to_str().unwrap(), "plan"], Duration::from_secs(20));
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("node from-boot (join)"), "{}", text(&o));
}

/// Issue 20 finding 6: a `[node] kubelet` value of the wrong type (kubelet would
/// crash-loop on it) is refused at its file:line:col; an unknown key gets the likely one.
#[test]
fn kubelet_settings_are_type_checked_with_their_place() {
    let d = worker_root();
    let node = std::fs::read_to_string(d.path().join("etc/kiln/node.toml")).unwrap();
    let path = d.path().join("etc/kiln/node.toml");
    for (extra, says) in [
        (
            "kubelet = { maxPods = \"42\" }\n",
            ":7:23: [node] kubelet: maxPods: KubeletConfiguration.maxPods is an integer",
        ),
        (
            "kubelet = { maxPod = 42 }\n",
            ":7:13: [node] kubelet: `maxPod`: not a KubeletConfiguration field; did you mean `maxPods`?",
        ),
    ] {
        std::fs::write(&path, format!("{node}{extra}")).unwrap();
        let (o, _) = firstboot(&["--root", d.path().to_str().unwrap(), "plan"], Duration::from_secs(20));
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let want = format!("{}{says}", path.display());
        assert!(text(&o).contains(&want), "want {want}\n got {}", text(&o));
    }
}

/// Issue 21 item 4: kubeadm's own knobs in `[node]` — a bad duration, a negative or
/// zero one, an unknown `Timeouts` field, a value of the wrong type, a pull policy
/// kubeadm does not know, a static pod kubeadm does not patch — each refused at its
/// file:line:col with the valid names (exit 2, no panic); timeouts for a kubeadm
/// that reads only v1beta3, and static pod patches on a worker, refused by name.
#[test]
fn kubeadm_knobs_are_checked_with_their_place() {
    let d = worker_root();
    write(d.path(), "proc/cmdline", "ro kiln.role=join");
    let node = std::fs::read_to_string(d.path().join("etc/kiln/node.toml")).unwrap();
    let path = d.path().join("etc/kiln/node.toml");
    let plan = |extra: &str| {
        std::fs::write(&path, format!("{node}{extra}")).unwrap();
        firstboot(&["--root", d.path().to_str().unwrap(), "plan"], Duration::from_secs(20)).0
    };
    for (extra, says) in [
        (
            "kubeadm_timeouts = { kubeletHealthCheck = \"8 min\" }\n",
            ":7:43: [node] kubeadm_timeouts: kubeletHealthCheck: `8 min` is not a Go duration",
        ),
        ("kubeadm_timeouts = { discovery = \"-5m\" }\n", ":7:34: [node] kubeadm_timeouts: discovery: `-5m` is negative"),
        ("kubeadm_timeouts = { discovery = \"0s\" }\n", ":7:34: [node] kubeadm_timeouts: discovery: `0s` is zero"),
        (
            "kubeadm_timeouts = { controlPlaneHealthCheck = \"10m\" }\n",
            ":7:22: [node] kubeadm_timeouts: `controlPlaneHealthCheck` is not a field of kubeadm's Timeouts (kubeadm.k8s.io/v1beta4); the fields are controlPlaneComponentHealthCheck, discovery, etcdAPICall, kubeletHealthCheck, kubernetesAPICall, tlsBootstrap, upgradeManifests",
        ),
        (
            "kubeadm_timeouts = { tlsBootstrap = 300 }\n",
            ":7:37: [node] kubeadm_timeouts: tlsBootstrap is a Go duration string such as \"5m0s\", not integer `300`",
        ),
        (
            "image_pull_policy = \"IfNotPresen\"\n",
            ":7:21: image_pull_policy: `IfNotPresen` is not a pull policy (did you mean `IfNotPresent`?); write one of \"Always\", \"IfNotPresent\", \"Never\"",
        ),
        ("image_pull_policy = true\n", ":7:21: image_pull_policy: boolean `true` is not a pull policy"),
        (
            "static_pod_patches = { kube-proxy = {} }\n",
            ":7:24: [node] static_pod_patches: `kube-proxy` is not a static pod kubeadm patches; the targets are etcd, kube-apiserver, kube-controller-manager, kube-scheduler",
        ),
    ] {
        let o = plan(extra);
        assert_eq!(o.status.code(), Some(2), "{extra}: {}", text(&o));
        let want = format!("{}{says}", path.display());
        assert!(text(&o).contains(&want), "want {want}\n got {}", text(&o));
        assert!(!text(&o).contains("panicked"), "{}", text(&o));
    }
    let o = plan("static_pod_patches = { kube-apiserver = { metadata = { annotations = { a = \"b\" } } } }\n");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("a join (worker) node runs no control-plane static pods"), "{}", text(&o));
    // A kubeadm that reads only v1beta3 has no timeouts; the pull policy it has.
    let image = IMAGE
        .replace("kubeadm_version = \"v1.34.2\"", "kubeadm_version = \"v1.30.14\"")
        .replace("kubelet_version = \"v1.34.2\"\n", "kubelet_version = \"v1.30.14\"\n");
    write(
        d.path(),
        "etc/kiln/image.toml",
        &image.replace("kubernetes_version = \"v1.34.2\"", "kubernetes_version = \"v1.30.14\""),
    );
    let o = plan("kubeadm_timeouts = { discovery = \"10m\" }\n");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(
            "[node] kubeadm_timeouts: the image's kubeadm v1.30.14 reads kubeadm.k8s.io/v1beta3, which has no timeouts"
        ),
        "{}",
        text(&o)
    );
    let o = plan("image_pull_policy = \"Never\"\n");
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"imagePullPolicy\": \"Never\""), "{}", text(&o));
}
