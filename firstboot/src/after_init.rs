//! What the init node does once `kubeadm init` succeeded: admin.conf stays root's
//! alone, the pinned CNI manifest is applied (CoreDNS stays Pending until a pod
//! network exists), and the configured user gets a kubeconfig of their own (row 40).
//! Each is logged; none stops the run (the cluster is up).

use crate::files;
use crate::journal::log;
use crate::kubeadm;
use crate::machine::paths::under;
use crate::machine::Machine;
use crate::resolve::Resolved;
use crate::runner::run_bounded;
use crate::tools::which;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where the init node keeps the `kubeadm kubeconfig user` config and the admin
/// user's RBAC objects (0600, on tmpfs: nothing of it is needed after boot).
pub const USER_CONFIG_PATH: &str = "/run/kiln/kubeconfig-user.json";
/// The admin user's ClusterRoleBindings, applied with admin.conf.
pub const USER_RBAC_PATH: &str = "/run/kiln/admin-user-rbac.json";

/// `/etc/kubernetes/admin.conf` under the root.
fn admin_conf(root: &Path) -> PathBuf {
    under(root, "/etc/kubernetes/admin.conf")
}

/// `/etc/kubernetes/admin.conf` stays root's alone (0600).
pub fn protect_admin_conf(m: &Machine) {
    let admin = admin_conf(&m.root);
    // kubeadm writes it 0600 (kubeconfig phase); nothing kiln does widens it.
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o600)) {
        log(4, &format!("kiln-firstboot: {}: {e}", admin.display()));
    }
}

/// The pinned CNI manifest, if node.toml names one, applied with admin.conf.
pub fn apply_cni(m: &Machine, r: &Resolved) {
    let root = &m.root;
    let Some(manifest) = &r.cni_manifest else { return };
    match crate::machine::paths::contained(root, manifest) {
        Ok(path) => {
            let kubectl = which(root, &r.image.bin_dir, "kubectl");
            let (ok, out) = run_bounded(
                Command::new(kubectl).arg("--kubeconfig").arg(admin_conf(root)).arg("apply").arg("-f").arg(path),
                Duration::from_secs(300),
            );
            log(if ok { 6 } else { 4 }, &format!("kiln-firstboot: kubectl apply -f {manifest}: {}", out.trim()));
        }
        Err(e) => log(4, &format!("kiln-firstboot: cni_manifest {e}; not applied")),
    }
}

/// The admin user's own kubeconfig, if node.toml names the user (`user_kubeconfig`), logged.
pub fn admin_kubeconfig(m: &Machine, r: &Resolved) {
    let Some(user) = &r.admin_user else { return };
    match user_kubeconfig(m, r, user, &admin_conf(&m.root)) {
        Ok(()) => log(
            6,
            &format!(
                "kiln-firstboot: wrote ~{user}/.kube/config (0600): client certificate CN={user}, bound to ClusterRole {} ([cluster] admin_role)",
                r.admin_role.as_str()
            ),
        ),
        Err(e) => log(4, &format!("kiln-firstboot: {e}")),
    }
}

/// The admin user's own kubeconfig (row 40; the kubeadm guide: admin.conf is the
/// superuser, hand out per-user credentials): `kubeadm kubeconfig user --client-name
/// <user>` signs a client certificate with CN `<user>` and no organisation (so no
/// group: not `kubeadm:cluster-admins`, not `system:masters`) with the cluster CA on
/// disk, kubectl binds that user to [`Resolved::admin_role`] with admin.conf, and
/// the kubeconfig lands in the user's home (from `/etc/passwd`, under the root),
/// 0600 and theirs. Each program bounded to 60 s.
fn user_kubeconfig(m: &Machine, r: &Resolved, user: &str, admin: &Path) -> Result<(), String> {
    let root = &m.root;
    // The home directory comes from /etc/passwd: resolved under root, never out of it.
    let passwd = std::fs::read_to_string(under(root, "/etc/passwd")).unwrap_or_default();
    let (dest, uid, gid) = crate::machine::paths::admin_kubeconfig(root, &passwd, user)?;
    let pki = under(root, "/etc/kubernetes/pki");
    let config = kubeadm::user_kubeconfig_config(&r.kubeadm, &pki.to_string_lossy());
    let config = files::write(root, USER_CONFIG_PATH, config.as_bytes(), 0o600)
        .map_err(|e| format!("writing {USER_CONFIG_PATH}: {e}"))?;
    let kubeadm_bin = which(root, &r.image.bin_dir, "kubeadm");
    let (ok, conf, err) = crate::runner::run_bounded_apart(
        Command::new(kubeadm_bin).args(["kubeconfig", "user", "--client-name", user, "--config"]).arg(&config),
        Duration::from_secs(60),
    );
    let last = |t: &str| t.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output").trim().to_string();
    // kubeadm prints the kubeconfig on stdout (kubeconfig phase, WriteKubeConfigWithClientCert).
    // Its stdout may hold a private key: only stderr is ever quoted.
    if !ok || !conf.starts_with("apiVersion: v1") || !conf.contains("client-key-data:") {
        let why = if ok { "it printed no kubeconfig with a client key".to_string() } else { last(&err) };
        return Err(format!(
            "admin_user {user}: `kubeadm kubeconfig user --client-name {user}` failed ({why}); no kubeconfig written: on this node run it by hand with {USER_CONFIG_PATH} and copy the output to ~{user}/.kube/config"
        ));
    }
    let rbac = serde_json::to_string_pretty(&kubeadm::admin_user_rbac(user, r.admin_role)).unwrap_or_default();
    let rbac = files::write(root, USER_RBAC_PATH, rbac.as_bytes(), 0o600)
        .map_err(|e| format!("writing {USER_RBAC_PATH}: {e}"))?;
    let kubectl = which(root, &r.image.bin_dir, "kubectl");
    let (ok, out) = run_bounded(
        Command::new(kubectl).arg("--kubeconfig").arg(admin).arg("apply").arg("-f").arg(&rbac),
        Duration::from_secs(60),
    );
    if !ok {
        // The kubeconfig is still written: the user authenticates, and the binding can
        // be applied again by hand.
        log(
            4,
            &format!(
                "kiln-firstboot: admin_user {user}: binding to ClusterRole {} failed ({}): run `kubectl --kubeconfig /etc/kubernetes/admin.conf apply -f {USER_RBAC_PATH}` as root",
                r.admin_role.as_str(),
                last(&out)
            ),
        );
    }
    let dest = files::node_path(root, &dest).map_err(|e| format!("admin_user {user}: {e}"))?;
    files::write_owned(root, &dest, conf.as_bytes(), 0o600, Some((uid, gid)))
        .map(|_| ())
        .map_err(|e| format!("admin_user {user}: {e}"))
}
