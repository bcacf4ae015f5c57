//! Shared by the benchmark examples.

use std::path::{Path, PathBuf};

/// The release `kiln` binary beside this example (`target/release/kiln`).
pub fn kiln_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("kiln");
    assert!(bin.is_file(), "{} missing: run `cargo build --release --workspace` first", bin.display());
    bin
}
