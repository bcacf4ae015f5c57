//! What a bootstrap leaves on the machine for the next boot and for `status`:
//! the success state (which machine joined, as what), the start record, the
//! failure marker and Cluster API's sentinel.

use crate::files;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Where the success state lives.
pub const STATE_PATH: &str = "/var/lib/kiln/state.json";
/// Written on failure, with the reason.
pub const FAILED_PATH: &str = "/run/kiln/bootstrap-failed";
/// Cluster API's bootstrap success sentinel.
pub const CAPI_SENTINEL: &str = "/run/cluster-api/bootstrap-success.complete";

/// Written before the first kubeadm attempt on a machine (the machine id) and kept:
/// kubeadm's files beside it and no [`STATE_PATH`] are kiln's own interrupted attempt
/// (reset and retry), without it someone else's bootstrap (left alone).
pub const STARTED_PATH: &str = "/var/lib/kiln/started";

/// The largest state file read: kiln writes about 300 bytes.
pub const MAX_STATE: usize = 64 << 10;

/// The success state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// `/etc/machine-id` of the machine that bootstrapped.
    pub machine_id: String,
    /// Platform instance id, when known.
    pub instance_id: Option<String>,
    /// Role.
    pub role: String,
    /// Node name.
    pub node_name: String,
    /// Kubernetes version.
    pub kubernetes_version: String,
    /// Seconds since the epoch when it succeeded.
    pub time: u64,
}

/// Reads the state file: `Ok(None)` when there is none; an error when it is there
/// but is not kiln's state (empty, garbage, larger than [`MAX_STATE`], not a file):
/// then whether this machine joined is unknown.
pub fn load_state(root: &Path) -> Result<Option<State>, String> {
    let path = files::resolve(root, STATE_PATH).map_err(|e| format!("{STATE_PATH}: {e}"))?;
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let bytes = crate::machine::paths::read_file_capped(&path, MAX_STATE).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            format!("{}: empty", path.display())
        } else {
            format!("{}: not kiln's state ({e})", path.display())
        }
    })
}

/// The state file, if there is one and it is kiln's ([`load_state`]).
pub fn read_state(root: &Path) -> Option<State> {
    load_state(root).ok().flatten()
}

/// Whether `path` (absolute on the node) is there under `root`, resolved inside it;
/// a link counts, whatever it points at.
pub fn exists(root: &Path, path: &str) -> bool {
    files::resolve(root, path).map(|p| std::fs::symlink_metadata(p).is_ok()).unwrap_or(false)
}
