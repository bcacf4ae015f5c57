//! kiln-firstboot's dependency tree stays on a committed allow-list
//! (`tests/dependencies.allow`): the agent is a tiny static binary on every
//! node, so a new crate in its tree (an async runtime, a TLS stack, a YAML
//! library pulled in by a convenience) must be a decision, not an accident.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The crate names of kiln-firstboot's normal (non-dev, non-build) dependency
/// tree on every target, from `cargo tree` over the lock file (offline, locked).
fn dependency_names(workspace: &Path) -> BTreeSet<String> {
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let manifest = workspace.join("Cargo.toml");
    let out = Command::new(cargo)
        .args(["tree", "-p", "kiln-firstboot", "-e", "normal", "--prefix", "none", "--target", "all"])
        .args(["--locked", "--offline", "--color", "never", "--manifest-path"])
        .arg(&manifest)
        .output()
        .unwrap_or_else(|e| panic!("spawn {cargo} tree: {e}"));
    assert!(out.status.success(), "{cargo} tree failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The names in the allow-list file: one a line, `#` comments and blank lines skipped.
fn allowed(text: &str) -> BTreeSet<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect()
}

#[test]
fn firstboot_dependency_tree_stays_on_the_allow_list() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let list = here.join("tests/dependencies.allow");
    let allow = allowed(&std::fs::read_to_string(&list).unwrap_or_else(|e| panic!("{}: {e}", list.display())));
    let tree = dependency_names(here.parent().expect("workspace root"));
    assert!(tree.contains("kiln-firstboot") && tree.contains("serde"), "cargo tree printed no tree: {tree:?}");
    let added: Vec<&String> = tree.difference(&allow).collect();
    let gone: Vec<&String> = allow.difference(&tree).collect();
    assert!(
        added.is_empty(),
        "kiln-firstboot's dependency tree grew beyond {}: {added:?}.\n\
         firstboot stays tiny (a static binary on every node: no async runtime, no TLS stack, no YAML library). \
         Drop the dependency, or add each name to the list with the reason in the commit message.",
        list.display()
    );
    assert!(
        gone.is_empty(),
        "{} names crates kiln-firstboot no longer depends on: {gone:?}; remove them from the list so it stays exact",
        list.display()
    );
}
