//! `kiln-firstboot`'s library: the contracts the builder writes and the agent reads.
//!
//! The builder (`kiln`) depends on this crate to write exactly what the agent
//! will parse, through [`contract`] only; this crate never depends on the
//! builder, so it stays tiny.
//!
//! The agent resolves, then acts: [`resolve`] turns the machine's metadata and
//! node.toml into one validated node, [`plan`] turns that node into the ordered
//! steps of a run, and [`run`] executes exactly those steps (`plan` prints them).

pub mod after_init;
pub mod approve;
pub mod contract;
pub mod csr;
pub mod diagnose;
pub mod evidence;
pub mod files;
pub mod firewall;
pub mod host;
pub mod http;
pub mod identity;
pub mod images;
pub mod journal;
pub mod kubeadm;
pub mod kubelet_fields;
pub mod machine;
pub mod options;
pub mod plan;
pub mod preflight;
pub mod providers;
pub mod reset;
pub mod resolve;
pub mod routes;
pub mod run;
pub mod runner;
pub mod sources;
pub mod state;
pub mod tools;
pub mod validate;
