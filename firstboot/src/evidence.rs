//! What a failed kubeadm attempt leaves for `doctor`: kubeadm's own output and
//! what kubelet's journal and the runtime say, each bounded in time and size.

use crate::machine::Machine;
use crate::resolve::Resolved;
use crate::runner::run_bounded;
use crate::tools::host_tool;
use std::process::Command;
use std::time::Duration;

/// kubeadm's output of the last attempt (redacted), for `doctor`.
pub const KUBEADM_LOG: &str = "/var/log/kiln/kubeadm.log";

/// What kubelet's journal and the runtime say, bounded in time and size.
pub const EVIDENCE_LOG: &str = "/var/log/kiln/evidence.log";

/// How many lines of a container's log [`evidence`] reads (`crictl logs --tail`).
pub const CONTAINER_LOG_LINES: u32 = 100;

/// The bound on each evidence program's run and on the text kept of it.
const EVIDENCE_TIME: Duration = Duration::from_secs(10);
const EVIDENCE_BYTES: usize = 64 << 10;

/// The last [`EVIDENCE_BYTES`] of `s` (the newest lines are at the end).
fn tail(s: String) -> String {
    if s.len() <= EVIDENCE_BYTES {
        return s;
    }
    let mut cut = s.len() - EVIDENCE_BYTES;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    s[cut..].to_string()
}

/// A container id as `crictl ps -q` prints it (hex; a full id is 64 characters):
/// anything else is not passed on as an argument.
fn container_id(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then_some(s)
}

/// What the troubleshooting guide reads when kubeadm only says "the kubelet is not
/// healthy" (row 42): kubelet's journal since `since` (seconds since the epoch: this
/// attempt's start, not an earlier attempt or boot), `crictl ps -a`, and the log tail
/// of the newest kube-proxy container (`crictl ps -a --name kube-proxy -q`, then
/// `crictl logs --tail` [`CONTAINER_LOG_LINES`]: kube-proxy falling back to
/// loopback before the node has an address is only in its own log, row 25). Each
/// program is bounded to 10 s, each text to its last 64 KiB.
pub fn evidence(m: &Machine, r: &Resolved, since: u64) -> String {
    let mut out = String::new();
    let bin = &r.image.bin_dir;
    let run = |cmd: &mut Command| tail(run_bounded(cmd, EVIDENCE_TIME).1);
    if let Some(j) = host_tool(&m.root, bin, "journalctl") {
        let o = run(Command::new(j)
            .args(["-u", "kubelet", "--no-pager", "-n", "200", "-o", "cat", "--since"])
            .arg(format!("@{since}")));
        out.push_str(&format!("--- journalctl -u kubelet --since @{since} (last 200 lines)\n{o}\n"));
    }
    if let Some(c) = host_tool(&m.root, bin, "crictl") {
        let crictl = || {
            let mut cmd = Command::new(&c);
            cmd.arg("--runtime-endpoint").arg(&r.kubeadm.cri_socket);
            cmd
        };
        let o = run(crictl().args(["ps", "-a"]));
        out.push_str(&format!("--- crictl ps -a\n{o}\n"));
        // Newest first (cri-tools cmd/crictl/container.go containerByCreated sorts by
        // CreatedAt, descending): the current kube-proxy.
        let (ok, ids) = run_bounded(crictl().args(["ps", "-a", "--name", "kube-proxy", "-q"]), EVIDENCE_TIME);
        if let Some(id) = ids.lines().next().filter(|_| ok).and_then(container_id) {
            let o = run(crictl().args(["logs", "--tail", &CONTAINER_LOG_LINES.to_string(), id]));
            out.push_str(&format!("--- crictl logs --tail {CONTAINER_LOG_LINES} {id} (kube-proxy)\n{o}\n"));
        }
    }
    out
}
