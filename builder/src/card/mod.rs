//! Raspberry Pi card images: a pinned base OS image plus kiln's image tree,
//! written as a sparse disk image and its block map — without root, mounts
//! or loop devices.

pub mod bmap;
