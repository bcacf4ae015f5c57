//! The image tree every output is written from: an ordered map from absolute
//! path to entry ([`tree`]), filled with the files kiln renders ([`render`]:
//! units, drop-ins, sysctl and module lists) and the artifacts and overlays,
//! under the rules every build and `kiln check` enforce ([`check`], reporting
//! [`finding`]s), in one
//! assembly both run ([`assemble`]);
//! containerd's config, written and read by containerd's rules ([`containerd`]).

pub mod assemble;
pub mod check;
pub mod containerd;
pub mod finding;
pub mod render;
pub mod tree;
