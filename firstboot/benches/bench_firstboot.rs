//! Benchmark (not a test): time from starting `kiln-firstboot run` to the
//! moment kubeadm is executed, with an IMDSv2 metadata server on loopback,
//! plus the binary's size and peak RSS. Run with `./scripts/bench`.

use kiln_testkit::http::{Reply, Request, Server};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `kiln-firstboot` binary cargo built with this benchmark (`target/release/kiln-firstboot`).
fn bin() -> PathBuf {
    let b = PathBuf::from(env!("CARGO_BIN_EXE_kiln-firstboot"));
    assert!(b.is_file(), "{} missing: run `cargo bench -p kiln-firstboot --bench bench_firstboot`", b.display());
    b
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn main() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = listener.local_addr().expect("addr").to_string();
    let ud = format!("[cluster]\ncontrol_plane_endpoint = \"{endpoint}\"\nbootstrap_token = \"abcdef.0123456789abcdef\"\nca_cert_hashes = [\"sha256:00\"]\n[node]\nrole = \"join\"\n");
    let imds = Server::start(move |r: &Request| {
        if r.method == "PUT" {
            return Reply::ok("tok");
        }
        if r.header("x-aws-ec2-metadata-token") != Some("tok") {
            return Reply::status(401);
        }
        match r.path() {
            "/latest/meta-data/instance-id" => Reply::ok("i-1"),
            "/latest/meta-data/local-hostname" => Reply::ok("ip-10-0-0-5"),
            // kubelet refuses a loopback --node-ip, and so does kiln-firstboot
            // (validate::endpoint::node_ip): a private address, as EC2 gives.
            "/latest/meta-data/local-ipv4" => Reply::ok("10.0.0.5"),
            "/latest/user-data" => Reply::ok(ud.clone()),
            _ => Reply::status(404),
        }
    });
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("root");
    write(&root, "etc/kiln/image.toml", "schema = 1\nprofile = \"b\"\nfamily = \"flatcar\"\narch = \"amd64\"\nkubernetes_version = \"v1.34.2\"\nkubeadm_version = \"v1.34.2\"\nkubelet_version = \"v1.34.2\"\nbin_dir = \"/opt/bin\"\ncni_bin_dir = \"/opt/cni/bin\"\nflex_volume_dir = \"/opt/libexec/kubernetes/kubelet-plugins/volume/exec\"\nruntime = \"containerd\"\nruntime_socket = \"unix:///run/containerd/containerd.sock\"\ncgroup_driver = \"systemd\"\n");
    write(&root, "etc/machine-id", "0123\n");
    write(&root, "proc/cmdline", "ignition.platform.id=aws");
    write(&root, "sys/fs/cgroup/cgroup.controllers", "cpu memory\n");
    write(&root, "run/containerd/containerd.sock", "");
    for k in ["net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables", "net/ipv4/ip_forward"] {
        write(&root, &format!("proc/sys/{k}"), "1\n");
    }
    // preflight's executables check looks for kubeadm's tools under --root.
    for t in ["losetup", "mount", "cp", "conntrack", "ip", "iptables", "nsenter", "ethtool", "socat", "tc"] {
        write(&root, &format!("usr/sbin/{t}"), "");
    }
    let stamp = tmp.path().join("kubeadm-start");
    let fake = tmp.path().join("bin");
    for t in
        ["kubeadm", "modprobe", "swapoff", "conntrack", "ip", "iptables", "mount", "nsenter", "ethtool", "socat", "tc"]
    {
        let body = if t == "kubeadm" {
            format!("#!/bin/sh\ndate +%s%N > {}\nexit 0\n", stamp.display())
        } else {
            "#!/bin/sh\nexit 0\n".into()
        };
        write(&fake, t, &body);
        std::fs::set_permissions(fake.join(t), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    }
    let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap_or_default());
    let run = |timed: bool| {
        let _ = std::fs::remove_file(root.join("var/lib/kiln/state.json"));
        let mut c = if timed {
            let mut c = Command::new("/usr/bin/time");
            c.args(["-f", "%M", "-o"]).arg(tmp.path().join("rss")).arg(bin());
            c
        } else {
            Command::new(bin())
        };
        c.arg("--root").arg(&root).args(["--metadata-url", imds.url(), "--backoff", "0", "run"]).env("PATH", &path);
        let t0 = now_ns();
        let o = c.output().expect("run");
        if !o.status.success() {
            // Its journal lines (stdout) say why; so may stderr.
            eprintln!(
                "kiln-firstboot run failed ({}):\n{}{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            std::process::exit(1);
        }
        let t1: u128 = std::fs::read_to_string(&stamp).expect("stamp").trim().parse().expect("ns");
        Duration::from_nanos((t1.saturating_sub(t0)) as u64)
    };
    run(false); // warm the page cache
    let mut times: Vec<Duration> = (0..30).map(|_| run(false)).collect();
    times.sort();
    run(true);
    let rss: u64 = std::fs::read_to_string(tmp.path().join("rss"))
        .ok()
        .and_then(|s| s.trim().lines().last()?.parse().ok())
        .unwrap_or(0);
    let size = std::fs::metadata(bin()).map(|m| m.len()).unwrap_or(0);
    println!("kiln-firstboot start -> kubeadm exec (IMDSv2 on loopback, 30 runs): median {:.1} ms, min {:.1} ms, max {:.1} ms (goal <= 20 ms)",
        times[15].as_secs_f64() * 1e3, times[0].as_secs_f64() * 1e3, times[29].as_secs_f64() * 1e3);
    println!(
        "kiln-firstboot binary: {:.2} MB stripped (goal <= 2 MB), peak RSS {:.1} MB",
        size as f64 / 1e6,
        rss as f64 / 1024.0
    );
    println!("metadata requests served: {}", imds.log().len());
    drop(listener);
}
