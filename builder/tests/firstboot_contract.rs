//! The builder imports nothing of `kiln-firstboot` outside its contract
//! module (`kiln_firstboot::contract`: node.toml, image.toml, the units, the
//! CNI check and the validation rules both sides apply; issue 22). Every
//! Rust file of the builder (`src`, `tests`, `benches`, `examples`) and of the
//! shared test kit is read, and every path into the firstboot crate must name
//! `contract` first: no other module, no braced `use` list at the crate root,
//! no alias of the crate.

use std::fs;
use std::path::{Path, PathBuf};

/// The firstboot crate's name as it appears in paths.
const CRATE: &str = "kiln_firstboot";

/// Every `.rs` file below `dir` (none if `dir` does not exist).
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The uses of the firstboot crate in `text` that do not go through the
/// contract, as `line: text`.
fn outside_contract(text: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find(CRATE) {
            let before = rest[..i].chars().next_back();
            let after = &rest[i + CRATE.len()..];
            rest = after;
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // part of a longer name, e.g. `starts_kiln_firstboot`
            }
            let ok = match after.strip_prefix("::") {
                Some(path) => path
                    .strip_prefix("contract")
                    .is_some_and(|p| !p.starts_with(|c: char| c.is_alphanumeric() || c == '_')),
                // `kiln_firstboot as x`, `extern crate kiln_firstboot`, `use kiln_firstboot;`
                None => {
                    !after.trim_start().starts_with("as ")
                        && !line.contains("extern crate")
                        && !line.trim_start().starts_with("use ")
                }
            };
            if !ok {
                bad.push(format!("{}: {}", n + 1, line.trim()));
            }
        }
    }
    bad
}

#[test]
fn the_builder_uses_firstboot_only_through_its_contract() {
    let builder = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches", "examples"] {
        rust_files(&builder.join(dir), &mut files);
    }
    rust_files(&builder.join("../tests/src"), &mut files);
    assert!(files.len() > 20, "too few files found under {}: {files:?}", builder.display());
    let me = Path::new(file!()).file_name().expect("this file's name");
    let mut problems = Vec::new();
    for f in files.iter().filter(|f| f.file_name() != Some(me)) {
        let text = fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for b in outside_contract(&text) {
            problems.push(format!("{}:{b}", f.display()));
        }
    }
    assert!(
        problems.is_empty(),
        "the builder reaches into kiln-firstboot outside `kiln_firstboot::contract` (move what it needs into firstboot/src/contract/):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_check_sees_every_way_around_the_contract() {
    for bad in [
        "use kiln_firstboot::agent::run;",
        "let x = kiln_firstboot::validate::names::node_name(s);",
        "use kiln_firstboot::{contract, agent};",
        "use kiln_firstboot::contractual::X;",
        "use kiln_firstboot as fb;",
        "use kiln_firstboot;",
        "extern crate kiln_firstboot;",
    ] {
        assert_eq!(outside_contract(bad).len(), 1, "{bad}");
    }
    for ok in [
        "use kiln_firstboot::contract::node::Role;",
        "use kiln_firstboot::contract::{node, unit};",
        "pub use kiln_firstboot::contract::cni as cni_manifest;",
        "fn starts_kiln_firstboot() {}",
        "// kiln-firstboot reads kiln_firstboot's contract (prose)",
    ] {
        assert_eq!(outside_contract(ok), Vec::<String>::new(), "{ok}");
    }
}
