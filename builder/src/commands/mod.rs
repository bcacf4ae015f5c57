//! One driver per `kiln` verb: each takes the arguments clap parsed
//! ([`crate::cli`]), turns them into the library's options, calls the stage
//! that does the work and prints the result. Nothing here parses text or
//! decides what goes into an image; `main.rs` only picks the driver.

pub mod build;
pub mod check;
pub mod cluster;
pub mod completions;
pub mod flash;
pub mod fleet;
pub mod mirror;
pub mod pin;
pub mod userdata;
