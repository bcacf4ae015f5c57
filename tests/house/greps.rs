//! Done-list rules of issue 22 about where paths may point, each checked two
//! ways: the text the Done list greps for (every line, tests included), and
//! the resolved `use` graph of [`crate::source`] (which also sees grouped
//! `use crate::{cli, …}` and names brought in by a `use`).
//!
//! * `crate::cli` only in `builder/src/main.rs` and `builder/src/commands/`;
//! * nothing under `builder/src/outputs` uses `inputs::fetch` or `inputs::cache`
//!   (an output writes the assembled tree; it does not reach back into the inputs);
//! * no `pub use` of the crate's own modules at `builder/src/lib.rs` (every path names its stage);
//! * clap named only in `cli.rs`, `main.rs` and `commands/` (library types get their `ValueEnum` in `cli.rs`).

use crate::source::{parse, repo, rust_files, Crate};

/// `path:line: text` for each line of the `.rs` files under `dir` that contains one of `needles`, except in `skip` files.
fn grep(dir: &str, needles: &[&str], skip: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for rel in rust_files(dir) {
        if skip(&rel) {
            continue;
        }
        let text = std::fs::read_to_string(repo().join(&rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        for (i, l) in text.lines().enumerate() {
            if needles.iter().any(|n| l.contains(n)) {
                out.push(format!("{rel}:{}: {}", i + 1, l.trim()));
            }
        }
    }
    out
}

/// `path:line: path` for each resolved use in the builder (library and binary)
/// from a file `from` accepts into a module `to` accepts.
fn uses(from: &dyn Fn(&str) -> bool, to: &dyn Fn(&[String]) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for root in ["builder/src/lib.rs", "builder/src/main.rs"] {
        let krate = Crate::load(root);
        for e in krate.edges() {
            let (f, t) = (&krate.files[e.from], &krate.files[e.to]);
            if from(&f.rel) && to(&t.module) {
                out.push(format!("{}:{}: {} (reaches {})", f.rel, e.line, e.path, t.rel));
            }
        }
    }
    out
}

/// `a` and `b` merged, one line per `path:line:` (the text's line kept), sorted.
fn merged(mut a: Vec<String>, b: Vec<String>) -> Vec<String> {
    let at = |l: &str| l.splitn(3, ':').take(2).collect::<Vec<_>>().join(":");
    let have: std::collections::BTreeSet<String> = a.iter().map(|l| at(l)).collect();
    a.extend(b.into_iter().filter(|l| !have.contains(&at(l))));
    let key = |l: &String| {
        let mut p = l.splitn(3, ':');
        (p.next().unwrap_or_default().to_string(), p.next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0))
    };
    a.sort_by_key(key);
    a
}

fn cli_allowed(rel: &str) -> bool {
    rel == "builder/src/main.rs"
        || rel.starts_with("builder/src/commands/")
        || rel == "builder/src/cli.rs"
        || rel.starts_with("builder/src/cli/")
}

/// Uses of `crate::cli` outside `main.rs` and `commands/`.
pub fn cli_violations() -> Vec<String> {
    let skip = |rel: &str| rel == "builder/src/main.rs" || rel.starts_with("builder/src/commands/");
    merged(
        grep("builder/src", &["crate::cli"], &skip),
        uses(&|rel| !cli_allowed(rel), &|m| m.first().is_some_and(|s| s == "cli")),
    )
}

/// Uses of `inputs::fetch` / `inputs::cache` under `builder/src/outputs`.
pub fn outputs_violations() -> Vec<String> {
    let needles = ["crate::fetch", "crate::cache", "inputs::fetch", "inputs::cache"];
    let stage = |m: &[String]| m.len() >= 2 && m[0] == "inputs" && (m[1] == "fetch" || m[1] == "cache");
    merged(
        grep("builder/src/outputs", &needles, &|_| false),
        uses(&|rel| rel.starts_with("builder/src/outputs/"), &stage),
    )
}

/// `pub use` items of `builder/src/lib.rs` that re-export the crate's own modules.
pub fn reexport_violations() -> Vec<String> {
    let lib = parse("builder/src/lib.rs");
    let local: Vec<String> = lib
        .items
        .iter()
        .filter_map(|i| match i {
            syn::Item::Mod(m) => Some(m.ident.to_string()),
            _ => None,
        })
        .chain(["crate", "self", "super"].map(String::from))
        .collect();
    lib.items
        .iter()
        .filter_map(|i| match i {
            syn::Item::Use(u) if !matches!(u.vis, syn::Visibility::Inherited) => Some(u),
            _ => None,
        })
        .filter(|u| {
            let head = match &u.tree {
                syn::UseTree::Path(p) => p.ident.to_string(),
                syn::UseTree::Name(n) => n.ident.to_string(),
                syn::UseTree::Rename(r) => r.ident.to_string(),
                syn::UseTree::Glob(_) | syn::UseTree::Group(_) => "crate".into(),
            };
            local.contains(&head)
        })
        .map(|u| format!("builder/src/lib.rs:{}: a pub use of the crate's own modules", u.use_token.span.start().line))
        .collect()
}

#[test]
fn cli_types_only_in_main_and_commands() {
    let v = cli_violations();
    assert!(
        v.is_empty(),
        "crate::cli outside builder/src/main.rs and builder/src/commands/ (issue 22: clap types stay at the edge; \
         pass plain options inward):\n{}",
        v.join("\n")
    );
}

#[test]
fn outputs_do_not_reach_back_into_fetch_or_cache() {
    let v = outputs_violations();
    assert!(
        v.is_empty(),
        "builder/src/outputs uses inputs::fetch or inputs::cache (issue 22: an output writes the assembled tree; \
         shared file helpers live in the io module):\n{}",
        v.join("\n")
    );
}

#[test]
fn no_stage_reexports_at_the_builder_root() {
    let v = reexport_violations();
    assert!(
        v.is_empty(),
        "root re-exports (issue 22: every path names its stage, crate::inputs::fetch):\n{}",
        v.join("\n")
    );
}

/// `path:line: text` for each line of `builder/src` naming clap outside
/// `cli.rs`, `main.rs` and `commands/`.
fn clap_violations() -> Vec<String> {
    let edge = |rel: &str| {
        rel == "builder/src/cli.rs" || rel == "builder/src/main.rs" || rel.starts_with("builder/src/commands/")
    };
    grep("builder/src", &["clap::", "use clap"], &edge)
}

#[test]
fn clap_only_in_cli_main_and_commands() {
    let v = clap_violations();
    assert!(
        v.is_empty(),
        "clap outside builder/src/cli.rs, main.rs and commands/ (issue 22: every clap type in cli.rs; a library \
         value type gets its clap::ValueEnum in cli.rs's value_enum! from its ALL, as_str and help):\n{}",
        v.join("\n")
    );
}
