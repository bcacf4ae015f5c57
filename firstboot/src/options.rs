//! How a run behaves: attempts, waits and bounds, set by `kiln-firstboot`'s
//! options and shared by resolve (the metadata service), run and reset.

use std::time::Duration;

/// How `run` behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// kubeadm attempts before giving up.
    pub attempts: u32,
    /// How long a join waits for the endpoint to answer.
    pub wait: Duration,
    /// Delay between attempts (doubles).
    pub backoff: Duration,
    /// Metadata service base URL (tests point it at loopback).
    pub metadata_url: Option<String>,
    /// Metadata HTTP policy.
    pub http: crate::http::Policy,
    /// Bound on `kubeadm reset` (a stuck runtime blocks it; seed item 22), in `run`'s
    /// retry path and in `kiln-firstboot reset` alike.
    pub reset_timeout: Duration,
    /// Bound on one `kubeadm init|join` attempt (`--kubeadm-timeout`); `None`, the
    /// default, follows kubeadm's own timeouts (`kubeadm::attempt_bound`).
    pub kubeadm_timeout: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            attempts: 3,
            wait: Duration::from_secs(600),
            backoff: Duration::from_secs(10),
            metadata_url: None,
            http: crate::http::Policy::default(),
            reset_timeout: Duration::from_secs(120),
            kubeadm_timeout: None,
        }
    }
}
