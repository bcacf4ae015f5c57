//! What the suite's shell harnesses print when something fails, read from their
//! last lines (all a CI log shows): `scripts/steps.sh` (scripts/test's steps) and
//! `tests/vm/lib.sh` (the VM harnesses' checks and summary), each sourced by bash
//! in a scratch directory.

use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// bash -c SCRIPT in the repository, with TMPDIR under `tmp`: (exit code, stdout + stderr).
fn bash(script: &str, tmp: &Path) -> (i32, String) {
    let o = Command::new("bash").arg("-c").arg(script).current_dir(repo()).env("TMPDIR", tmp).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
    )
}

/// A failed step's failure lines come again after everything it printed, above the
/// per-step times; a passing step's do not, nor a failed step's other lines; the
/// steps' logs are removed.
#[test]
fn a_failed_steps_failure_lines_are_printed_again_last() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, out) = bash(
        "set -euo pipefail; . scripts/steps.sh; trap print_timings EXIT
         timed 'good step' sh -c 'echo \"vm: FAIL not a failure: the step passed\"'
         timed 'bad step' sh -c 'echo \"vm: FAIL the check\"; echo noise; echo \"    FAIL [   1.0s] kiln::t\"; exit 3' || true
         echo last words of the run",
        tmp.path(),
    );
    assert_eq!(code, 0, "{out}");
    let tail = &out[out.find("last words of the run").unwrap()..];
    let digest = tail.find("scripts/test: what failed in bad step").unwrap_or_else(|| panic!("{out}"));
    let times = tail.find("scripts/test: wall time per step").unwrap();
    assert!(digest < times, "{out}");
    let lines = &tail[digest..times];
    assert!(lines.contains("vm: FAIL the check") && lines.contains("FAIL [   1.0s] kiln::t"), "{out}");
    assert!(!lines.contains("noise") && !tail.contains("good step (its") && !tail.contains("not a failure"), "{out}");
    assert!(tail[times..].contains("good step") && tail[times..].contains("bad step (exit 3)"), "{out}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "step logs left behind");
}

/// A failed check says what the report held instead, and the failed checks are
/// listed again just before the summary line.
#[test]
fn the_vm_summary_ends_with_the_failed_checks_and_what_they_read() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("b-1.report"), "KILNVM kubelet_nrestarts=1\nKILNVM flags=--v=2\n").unwrap();
    let script = format!(
        "tag=vm work={} started=$(date +%s) cache={}; . tests/vm/lib.sh
         check b-1 'kubelet never restarted' is b-1 kubelet_nrestarts 0
         check b-1 'flags hold --v=2' has b-1 flags --v=2
         check b-1 'flags hold --node-ip' has b-1 flags --node-ip=1.2.3.4
         vm_summary",
        tmp.path().display(),
        tmp.path().display()
    );
    let (code, out) = bash(&script, tmp.path());
    assert_ne!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let n = lines.len();
    assert_eq!(lines[n - 1], "1 passed, 2 failed", "{out}");
    assert_eq!(lines[n - 3], "vm: FAILED: kubelet never restarted -- kubelet_nrestarts was '1', want '0'", "{out}");
    assert_eq!(
        lines[n - 2],
        "vm: FAILED: flags hold --node-ip -- flags was '--v=2', want it to hold '--node-ip=1.2.3.4'",
        "{out}"
    );
}
