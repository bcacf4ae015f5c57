//! Every verbatim kubeadm/kubelet/crictl text in `tests/fixtures/kubeadm-texts/`
//! is diagnosed as its `# expect:` header says and never as any id its `# not:`
//! header lists (a second, wrong cause printed below the right one misleads just
//! the same), healthy texts match nothing, and every known failure is exercised by
//! at least one text.

use std::collections::BTreeSet;
use std::path::PathBuf;

use kiln_firstboot::diagnose::{diagnose, ids};

struct Fixture {
    name: String,
    source: String,
    expect: String,
    /// Ids that must not be found at all (`# not: a, b`).
    not: Vec<String>,
    text: String,
}

fn fixtures() -> Vec<Fixture> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/kubeadm-texts");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("txt") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let raw = std::fs::read_to_string(&path).unwrap();
        let (head, text) = raw.split_once("\n\n").unwrap_or_else(|| panic!("{name}: no blank line after the headers"));
        let header = |key: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(&format!("# {key}:")))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        assert!(head.lines().all(|l| l.starts_with('#')), "{name}: every header line starts with #");
        assert!(!text.trim().is_empty(), "{name}: no text");
        let not = header("not").split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
        out.push(Fixture { source: header("source"), expect: header("expect"), not, text: text.to_string(), name });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[test]
fn every_fixture_is_diagnosed_as_expected() {
    let all = fixtures();
    assert!(all.len() >= 40, "only {} fixtures", all.len());
    let known: BTreeSet<&str> = ids().collect();
    let mut wrong = Vec::new();
    for f in &all {
        assert!(!f.source.is_empty(), "{}: no `# source:` header", f.name);
        assert!(!f.expect.is_empty(), "{}: no `# expect:` header", f.name);
        assert!(f.expect == "none" || known.contains(f.expect.as_str()), "{}: unknown id {}", f.name, f.expect);
        let found: Vec<&str> = diagnose(&f.text).into_iter().map(|d| d.id).collect();
        let first = found.first().copied().unwrap_or("none");
        if first != f.expect {
            wrong.push(format!("{}: expected {}, got {:?}", f.name, f.expect, found));
        }
        for id in &f.not {
            assert!(known.contains(id.as_str()), "{}: `# not:` names unknown id {id}", f.name);
            if found.contains(&id.as_str()) {
                wrong.push(format!("{}: must not be diagnosed as {id}, got {:?}", f.name, found));
            }
        }
    }
    assert!(wrong.is_empty(), "misdiagnosed:\n{}", wrong.join("\n"));
}

#[test]
fn healthy_texts_match_nothing() {
    for f in fixtures().iter().filter(|f| f.expect == "none") {
        let found: Vec<&str> = diagnose(&f.text).into_iter().map(|d| d.id).collect();
        assert!(found.is_empty(), "{} is a healthy run but matched {found:?}", f.name);
    }
}

#[test]
fn every_known_failure_has_a_fixture() {
    let expected: BTreeSet<String> = fixtures().into_iter().map(|f| f.expect).collect();
    let untested: Vec<&str> = ids().filter(|id| !expected.contains(*id)).collect();
    assert!(untested.is_empty(), "no fixture expects {untested:?}");
}

#[test]
fn each_id_at_most_once() {
    for f in fixtures() {
        let found: Vec<&str> = diagnose(&f.text).into_iter().map(|d| d.id).collect();
        let unique: BTreeSet<&str> = found.iter().copied().collect();
        assert_eq!(unique.len(), found.len(), "{}: {found:?}", f.name);
    }
}

/// Row 37: a client of the kubelet's port 10250 (metrics-server, the API server for
/// `kubectl logs`) failing on the kubelet's self-signed serving certificate is the
/// serving-certificate case and never "the cluster CA is wrong"; the API server's
/// certificate failing against the cluster CA still is.
#[test]
fn serving_cert_failures_never_blame_the_cluster_ca() {
    let all = fixtures();
    let by_name = |name: &str| -> Vec<&'static str> {
        let f = all.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no fixture {name}"));
        diagnose(&f.text).into_iter().map(|d| d.id).collect()
    };
    for serving in
        ["kubelet-serving-cert", "kubelet-serving-cert-unknown-authority", "kubelet-serving-cert-kubectl-logs"]
    {
        let found = by_name(serving);
        assert_eq!(found, ["kubelet-serving-cert"], "{serving}");
    }
    for ca in ["x509-unknown-authority", "x509-unknown-authority-join"] {
        let found = by_name(ca);
        assert_eq!(found, ["x509-unknown-authority"], "{ca}");
    }
}
