//! `kiln-firstboot`'s library: the contracts the builder writes and the agent reads.
//!
//! The builder (`kiln`) depends on this crate to write exactly what the agent
//! will parse, through [`contract`] only; this crate never depends on the
//! builder, so it stays tiny.

pub mod agent;
pub mod contract;
pub mod csr;
pub mod diagnose;
pub mod files;
pub mod firewall;
pub mod host;
pub mod http;
pub mod identity;
pub mod kubeadm;
pub mod kubelet_fields;
pub mod machine;
pub mod preflight;
pub mod providers;
pub mod routes;
pub mod runner;
pub mod sources;
pub mod validate;
