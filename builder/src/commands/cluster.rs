//! `kiln cluster init|show|rotate-token`: the cluster definition ([`crate::cluster`]).

use crate::cli::ClusterInitArgs;
use crate::cluster::{Cluster, InitOptions};
use crate::error::Result;
use crate::progress::Progress;
use std::path::{Path, PathBuf};

/// `kiln cluster init`: creates the cluster directory (default
/// `clusters/NAME`) and prints what it holds.
pub fn init(a: ClusterInitArgs, progress: &Progress) -> Result<()> {
    let out = a.out.unwrap_or_else(|| PathBuf::from("clusters").join(&a.name));
    let c = Cluster::init(&InitOptions {
        name: a.name,
        endpoint: a.endpoint,
        kubernetes_version: a.kubernetes_version,
        pod_subnet: a.pod_subnet,
        service_subnet: a.service_subnet,
        dns_domain: a.dns_domain,
        key_algorithm: a.key_algorithm,
        token_ttl: a.token_ttl,
        out,
        force: a.force,
    })?;
    progress.step(format!("created cluster {} in {}", c.file.name, c.dir.display()));
    print!("{}", c.show());
    Ok(())
}

/// `kiln cluster show DIR`: the endpoint, CA hash, token id and what each role receives.
pub fn show(dir: &Path) -> Result<()> {
    print!("{}", Cluster::load(dir)?.show());
    Ok(())
}

/// `kiln cluster rotate-token DIR`: a new bootstrap token, and how to create it on a control plane.
pub fn rotate_token(dir: &Path, progress: &Progress) -> Result<()> {
    let mut c = Cluster::load(dir)?;
    let old = c.file.token_id.clone();
    c.rotate_token()?;
    progress.step(format!(
        "token {old}.… replaced by {}.… in {}/secrets/bootstrap-token; regenerate user-data, and on a control plane run: kubeadm token create \"$(cat {}/secrets/bootstrap-token)\" --ttl {}",
        c.file.token_id,
        c.dir.display(),
        c.dir.display(),
        c.file.token_ttl
    ));
    Ok(())
}
