//! The real containerd (built by `tests/k8s/build VERSION amd64 containerd`),
//! started for one test with everything it writes under a scratch directory.
//!
//! containerd's config puts `root`, `state`, the gRPC, ttrpc and debug sockets,
//! the `opt` plugin's directory, CNI's and CDI's directories under the scratch
//! directory and turns off NRI (whose socket is `/var/run/nri/nri.sock`) and the
//! snapshotters and tracing this machine has no use for. What containerd v2.1.5
//! still writes at fixed host paths — the shims' sockets under
//! `/run/containerd/s/` (`pkg/shim/util_unix.go`, `defaults.DefaultStateDir`),
//! runc's state under `/run/containerd/runc/`, ctr's stdio FIFOs under
//! `/run/containerd/fifo/` — lands on a private tmpfs: containerd runs in its own
//! mount namespace (`unshare --mount --propagation private`) with a fresh `/run`,
//! and [`Containerd::ctr`] runs ctr inside that namespace (`nsenter --mount`).
//! The overlay snapshots' mounts stay in that namespace too. No network: the CRI
//! plugin starts without a CNI config, and its streaming server listens on
//! 127.0.0.1 only.
//!
//! Needs root (containerd's snapshots, mount namespaces), `unshare` and `nsenter`
//! (util-linux). [`Containerd`]'s `Drop` kills containerd, its shims and their
//! containers (every process in its mount namespace and every descendant of one)
//! and removes the cgroups named by [`Containerd::cgroup`].

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long containerd may take to serve its socket before the start fails.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The command that builds containerd and exports its directory, for error messages.
pub const BUILD: &str = "tests/k8s/build v1.34.2 amd64 containerd && export KILN_K8S_BIN_CONTAINERD=$(tests/k8s/build --dir v1.34.2 amd64 containerd)";

/// The directory holding the real `containerd`, `ctr` and `containerd-shim-runc-v2`:
/// `$KILN_K8S_BIN_CONTAINERD`, or an error that says how to build it.
pub fn bin_dir() -> Result<PathBuf, String> {
    let dir = std::env::var_os("KILN_K8S_BIN_CONTAINERD").map(PathBuf::from).ok_or_else(|| {
        format!("KILN_K8S_BIN_CONTAINERD is not set: the real containerd is needed. Build it and say where it is, from the workspace root:\n  {BUILD}\n(./scripts/test does this)")
    })?;
    for prog in ["containerd", "ctr", "containerd-shim-runc-v2"] {
        if !dir.join(prog).is_file() {
            return Err(format!("KILN_K8S_BIN_CONTAINERD={} has no {prog}; build it:\n  {BUILD}", dir.display()));
        }
    }
    Ok(dir)
}

/// A running containerd whose state is all under one scratch directory.
pub struct Containerd {
    child: Child,
    bin: PathBuf,
    dir: PathBuf,
    mnt_ns: String,
}

/// containerd's config: every path under `dir`, plugins that write elsewhere off.
fn config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 3
root = '{d}/root'
state = '{d}/state'
disabled_plugins = ['io.containerd.nri.v1.nri', 'io.containerd.internal.v1.tracing', 'io.containerd.tracing.processor.v1.otlp', 'io.containerd.snapshotter.v1.devmapper', 'io.containerd.snapshotter.v1.zfs', 'io.containerd.snapshotter.v1.btrfs', 'io.containerd.snapshotter.v1.blockfile', 'io.containerd.snapshotter.v1.erofs', 'io.containerd.differ.v1.erofs']

[grpc]
  address = '{d}/containerd.sock'
[ttrpc]
  address = '{d}/containerd.sock.ttrpc'
[debug]
  address = '{d}/debug.sock'

[plugins.'io.containerd.internal.v1.opt']
  path = '{d}/opt'
[plugins.'io.containerd.image-verifier.v1.bindir']
  bin_dir = '{d}/image-verifier'
[plugins.'io.containerd.cri.v1.runtime']
  cdi_spec_dirs = ['{d}/cdi']
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ['{d}/cni/bin']
  conf_dir = '{d}/cni/net.d'
"#
    )
}

impl Containerd {
    /// Starts `BIN/containerd` with its state under `dir` (created if missing)
    /// and `path` before `BIN` on the `PATH` its shims inherit (e.g. runc's
    /// directory), and waits until `ctr version` answers (at most [`START_TIMEOUT`]).
    pub fn start(bin: &Path, dir: &Path, path: &[&Path]) -> Result<Containerd, String> {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let conf = dir.join("config.toml");
        fs::write(&conf, config(dir)).map_err(|e| format!("{}: {e}", conf.display()))?;
        let log = fs::File::create(dir.join("containerd.log")).map_err(|e| format!("{}: {e}", dir.display()))?;
        let log2 = log.try_clone().map_err(|e| format!("containerd.log: {e}"))?;
        let mut dirs: Vec<PathBuf> = path.iter().map(|p| p.to_path_buf()).collect();
        dirs.push(bin.to_path_buf());
        dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
        let search = std::env::join_paths(dirs).map_err(|e| format!("PATH: {e}"))?;
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o mode=0755 kiln-test-run /run && exec "$0" --config "$1""#)
            .arg(bin.join("containerd"))
            .arg(&conf)
            .env("PATH", search)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("unshare (util-linux) to start containerd: {e}"))?;
        let mut c = Containerd { child, bin: bin.to_path_buf(), dir: dir.to_path_buf(), mnt_ns: String::new() };
        c.wait_ready()?;
        Ok(c)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("containerd exited ({status}) before serving its socket:\n{}", self.log_tail()));
            }
            if self.socket().exists() {
                let ns = fs::read_link(format!("/proc/{}/ns/mnt", self.child.id()))
                    .map_err(|e| format!("containerd's mount namespace: {e}"))?;
                let own = fs::read_link("/proc/self/ns/mnt").map_err(|e| format!("own mount namespace: {e}"))?;
                if ns != own {
                    self.mnt_ns = ns.display().to_string();
                    let ok = self.ctr().arg("version").output().map(|o| o.status.success()).unwrap_or(false);
                    if ok {
                        return Ok(());
                    }
                }
            }
            if start.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "containerd did not answer on {} within {} s:\n{}",
                    self.socket().display(),
                    START_TIMEOUT.as_secs(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The gRPC socket (`ctr --address`, `crictl --runtime-endpoint unix://…`).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// containerd's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A cgroup path for a container this test runs (`ctr run --cgroup`): one level
    /// under the root (runc removes it when the task is deleted; ctr's default
    /// `/NAMESPACE/ID` would leave `/NAMESPACE` behind), named after this
    /// containerd so `Drop` removes any a failed test left.
    pub fn cgroup(&self, name: &str) -> String {
        format!("/kiln-test-{}-{name}", self.child.id())
    }

    /// The last 40 lines of containerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `crictl` (the program at `crictl`) with this containerd as its runtime
    /// and image endpoint.
    pub fn crictl(&self, crictl: &Path) -> Command {
        let endpoint = format!("unix://{}", self.socket().display());
        let mut c = Command::new(crictl);
        c.args(["--runtime-endpoint", &endpoint, "--image-endpoint", &endpoint]);
        c
    }

    /// `ctr --address SOCKET`, run inside containerd's mount namespace (so the
    /// FIFOs `ctr run` makes are where the shim looks for them).
    pub fn ctr(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--target={}", self.child.id()))
            .args(["--mount", "--"])
            .arg(self.bin.join("ctr"))
            .arg("--address")
            .arg(self.socket());
        c
    }
}

/// Every process in the mount namespace `ns` and every descendant of one.
fn processes_of(ns: &str) -> Vec<u32> {
    let mut parent = Vec::new();
    let mut ours = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let status = fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let ppid = status.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|v| v.trim().parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent.push((pid, ppid));
        }
        if fs::read_link(entry.path().join("ns/mnt")).is_ok_and(|l| l.display().to_string() == ns) {
            ours.push(pid);
        }
    }
    loop {
        let more: Vec<u32> =
            parent.iter().filter(|(p, pp)| ours.contains(pp) && !ours.contains(p)).map(|(p, _)| *p).collect();
        if more.is_empty() {
            return ours;
        }
        ours.extend(more);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let pids = if self.mnt_ns.is_empty() { Vec::new() } else { processes_of(&self.mnt_ns) };
        let _ = self.child.kill();
        if !pids.is_empty() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(pids.iter().map(|p| p.to_string()))
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.wait();
        remove_cgroups(&format!("kiln-test-{}-", self.child.id()));
    }
}

/// Removes the (empty, their processes killed) cgroups named PREFIX* in every
/// hierarchy under /sys/fs/cgroup, retrying for 2 s while the kernel reaps them.
fn remove_cgroups(prefix: &str) {
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    roots.extend(fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten().map(|e| e.path()));
    let ours: Vec<PathBuf> = roots
        .iter()
        .flat_map(|r| fs::read_dir(r).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    let start = Instant::now();
    for dir in ours {
        while fs::remove_dir(&dir).is_err() && dir.exists() && start.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
