//! `ARCHITECTURE.md` stays true: every source file or folder it names in
//! backticks (`io.rs`, `outputs/card/`, `firstboot/tests/run.rs`) exists,
//! looked up under `builder/src`, `firstboot/src` or the repository root.

use crate::source::repo;

/// The backticked names in `text` that look like a file or folder of the repo.
fn named_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, chunk) in text.split('`').enumerate() {
        // Odd chunks are inside backticks.
        if i % 2 == 0 || chunk.contains(' ') || chunk.contains("::") {
            continue;
        }
        let looks_like_path = chunk.ends_with(".rs") || chunk.ends_with('/') || chunk.ends_with(".allow");
        if looks_like_path && !chunk.starts_with('-') {
            out.push(chunk.to_string());
        }
    }
    out
}

#[test]
fn every_module_the_architecture_page_names_exists() {
    let text = std::fs::read_to_string(repo().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md at the repository root");
    let roots = ["builder/src", "firstboot/src", ""];
    let missing: Vec<String> = named_paths(&text)
        .into_iter()
        .filter(|p| !roots.iter().any(|r| repo().join(r).join(p.trim_end_matches('/')).exists()))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names files that do not exist (a module moved or was renamed: update the page):\n{}",
        missing.join("\n")
    );
}

#[test]
fn backticked_paths_are_picked_and_prose_is_not() {
    let got = named_paths("`io.rs` and `outputs/card/` but not `kiln check` or `crate::io` or `--root`");
    assert_eq!(got, ["io.rs", "outputs/card/"]);
}
