//! Shared by the benchmarks (`builder/benches/`).

use std::path::PathBuf;

/// The `kiln` binary cargo built with this benchmark (`target/release/kiln`).
pub fn kiln_bin() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_kiln"));
    assert!(bin.is_file(), "{} missing: run `cargo bench -p kiln --bench NAME` (./scripts/bench does)", bin.display());
    bin
}
