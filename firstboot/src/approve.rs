//! `kiln-firstboot approve-csrs`: a control plane approves the kubelet
//! serving-certificate requests whose node, names and addresses match
//! ([`crate::csr::check`]), and leaves the rest pending, saying why.

use crate::contract::unit::APPROVE_TIMEOUT;
use crate::machine::paths::under;
use crate::machine::Machine;
use crate::runner::run_bounded;
use crate::tools::which;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// The most CSRs `approve-csrs` looks at in one run.
pub const APPROVE_MAX: usize = 500;

/// `kiln-firstboot approve-csrs` on a control plane (row 37, prevent): every
/// pending `kubernetes.io/kubelet-serving` CSR that [`crate::csr::check`] allows is
/// approved with `kubectl certificate approve` (admin.conf); the others are left
/// pending, each with the reason. Bounded by [`APPROVE_TIMEOUT`] as a whole and
/// [`APPROVE_MAX`] requests. Returns whether kubectl answered, and one line each.
pub fn approve_csrs(m: &Machine) -> (bool, Vec<String>) {
    let root = &m.root;
    let deadline = Instant::now() + APPROVE_TIMEOUT;
    let left = || deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(30));
    let admin = under(root, "/etc/kubernetes/admin.conf");
    if !admin.is_file() {
        return (false, vec![format!("{}: not found: approve-csrs runs on a control plane", admin.display())]);
    }
    let bin = crate::sources::image_defaults(root).map(|i| i.bin_dir).unwrap_or_else(|_| "/opt/bin".into());
    let kubectl = which(root, &bin, "kubectl");
    let get = |args: &[&str]| -> Result<serde_json::Value, String> {
        let (ok, out, err) = crate::runner::run_bounded_apart(
            Command::new(&kubectl).arg("--kubeconfig").arg(&admin).args(args).args(["-o", "json"]),
            left(),
        );
        if !ok {
            return Err(format!("kubectl {}: {}", args.join(" "), err.trim()));
        }
        serde_json::from_str(&out).map_err(|e| format!("kubectl {}: not JSON: {e}", args.join(" ")))
    };
    let list = match get(&["get", "certificatesigningrequests"]) {
        Ok(l) => l,
        Err(e) => return (false, vec![e]),
    };
    let mut report = Vec::new();
    let mut nodes: BTreeMap<String, Option<crate::csr::Addresses>> = BTreeMap::new();
    let items = list["items"].as_array().cloned().unwrap_or_default();
    for csr in items.iter().take(APPROVE_MAX) {
        let name = csr["metadata"]["name"].as_str().unwrap_or_default();
        // metadata.name is a DNS subdomain (apimachinery's IsDNS1123Subdomain,
        // `validate::names::dns1123_subdomain`): never an option to kubectl.
        let name_ok = crate::validate::names::dns1123_subdomain(name).is_ok();
        if !name_ok || csr["spec"]["signerName"] != crate::csr::KUBELET_SERVING || !crate::csr::pending(csr) {
            continue;
        }
        // The requester's Node, read once per node name.
        let requester = csr["spec"]["username"]
            .as_str()
            .and_then(|u| u.strip_prefix("system:node:"))
            .filter(|n| crate::validate::names::node_name(n).is_ok());
        if let Some(n) = requester {
            if !nodes.contains_key(n) {
                let v = get(&["get", "node", n]).ok().map(|v| crate::csr::addresses(&v));
                nodes.insert(n.to_string(), v);
            }
        }
        let verdict = crate::csr::check(csr, &|n| nodes.get(n).cloned().flatten());
        match verdict {
            Ok(node) => {
                let (ok, out) = run_bounded(
                    Command::new(&kubectl).arg("--kubeconfig").arg(&admin).args(["certificate", "approve", name]),
                    left(),
                );
                report.push(if ok {
                    format!("approved {name} (kubelet serving certificate of node {node})")
                } else {
                    format!("approving {name} failed: {}", out.trim())
                });
            }
            Err(why) => report.push(format!("left {name} pending: {why}")),
        }
        if Instant::now() >= deadline {
            report.push(format!("stopped after {} s", APPROVE_TIMEOUT.as_secs()));
            break;
        }
    }
    (true, report)
}
