//! kiln: build pinned, verified, reproducible Kubernetes node images.
//!
//! The data path has a folder each: [`inputs`] (a profile, checked where it is
//! parsed; its overlays; its pinned artifacts, fetched and verified into a
//! content-addressed cache) → [`image`] (the image tree, with kiln's rendered
//! files, under the rules of `kiln check`) → [`outputs`] (tarball, sysext,
//! Ignition, card; committed as one generation with `manifest.json` and
//! `SHA256SUMS`). [`build`] drives it all. Beside it: the cluster's PKI
//! ([`cluster`]), per-node user-data ([`userdata`]) and Raspberry Pi fleets
//! ([`fleet`]).
//! Shared by both stages: file helpers ([`io`]: regular files only, hashing
//! readers, atomic writes, liveness locks), the Ignition document model
//! ([`ignition`], written by the Ignition output and by `userdata`). The
//! `kiln` command parses its arguments in [`cli`] and hands each verb to its
//! driver in [`commands`].
//!
//! Code and tests name each module by its stage (`kiln::inputs::profile`,
//! `kiln::outputs::tarball`): a path says where in the data path it sits.
//! Nothing is re-exported at the crate root.

pub mod build;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod error;
pub mod fleet;
pub mod hash;
pub mod ignition;
pub mod image;
pub mod inputs;
pub mod io;
pub mod mirror_path;
pub mod outputs;
pub mod progress;
pub mod userdata;
