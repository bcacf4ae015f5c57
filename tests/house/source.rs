//! The workspace's Rust sources as the house tests see them: each crate's
//! module tree, followed from its root (`lib.rs`, `main.rs`) through `mod`
//! declarations, parsed with `syn`, test-only code (`#[cfg(test)]` items and
//! `#[test]` fns) left out; and every path a file names, resolved to the file
//! that defines the module it reaches (`crate::inputs::fetch::open_regular` →
//! `builder/src/inputs/fetch.rs`).
//!
//! Resolution follows what the paths say, not the compiler: `crate::`, `self::`,
//! `super::`, a child module's name, or a name a `use` in the file brought in
//! (`use crate::inputs::fetch; … fetch::get()`); in macro bodies the same
//! paths are found in the tokens. A path that reaches a module re-exporting an
//! item (`pub use`) ends at that module's file. Other crates' paths (`kiln::`,
//! `kiln_firstboot::`, std) are not edges: a crate cannot use its dependents,
//! so no circle crosses crates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::visit::Visit;

/// The workspace root (this crate is `tests/`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The crate roots the house rules cover: both crates, library and binary.
pub const ROOTS: [&str; 4] =
    ["builder/src/lib.rs", "builder/src/main.rs", "firstboot/src/lib.rs", "firstboot/src/main.rs"];

/// One source file of a crate's module tree (not a test-only one).
pub struct SourceFile {
    /// Path from the workspace root, e.g. `builder/src/inputs/fetch.rs`.
    pub rel: String,
    /// The module this file is, from the crate root (`["inputs", "fetch"]`).
    pub module: Vec<String>,
    /// Its syntax tree.
    pub ast: syn::File,
}

/// A crate's module tree: its files and which file defines each module.
pub struct Crate {
    /// Every file of the tree, the root first.
    pub files: Vec<SourceFile>,
    /// Module path (inline modules included) → index into `files`.
    pub modules: BTreeMap<Vec<String>, usize>,
}

/// A path from one file to another's module: `from` names `to` on `line`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    /// Index of the file the path is written in.
    pub from: usize,
    /// Index of the file defining the module it reaches.
    pub to: usize,
    /// The line of the first such path in `from`.
    pub line: usize,
    /// The path as written, `::`-joined.
    pub path: String,
}

/// True for `#[cfg(test)]`, `#[cfg(all(test, …))]` and `#[test]`: code that is
/// only compiled for the crate's own unit tests.
pub fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        if a.path().is_ident("test") {
            return true;
        }
        if !a.path().is_ident("cfg") {
            return false;
        }
        let Ok(list) = a.meta.require_list() else { return false };
        let t: String = list.tokens.to_string().chars().filter(|c| !c.is_whitespace()).collect();
        t == "test" || (t.starts_with("all(") && t[4..t.len() - 1].split(',').any(|p| p == "test"))
    })
}

/// The attributes of an item (none for verbatim tokens).
pub fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    use syn::Item::*;
    match item {
        Const(i) => &i.attrs,
        Enum(i) => &i.attrs,
        ExternCrate(i) => &i.attrs,
        Fn(i) => &i.attrs,
        ForeignMod(i) => &i.attrs,
        Impl(i) => &i.attrs,
        Macro(i) => &i.attrs,
        Mod(i) => &i.attrs,
        Static(i) => &i.attrs,
        Struct(i) => &i.attrs,
        Trait(i) => &i.attrs,
        TraitAlias(i) => &i.attrs,
        Type(i) => &i.attrs,
        Union(i) => &i.attrs,
        Use(i) => &i.attrs,
        _ => &[],
    }
}

/// Reads and parses `rel` (from the workspace root); a file that does not parse fails the test.
pub fn parse(rel: &str) -> syn::File {
    let path = repo().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    syn::parse_file(&text).unwrap_or_else(|e| {
        let at = e.span().start();
        panic!("{rel}:{}:{}: does not parse: {e}", at.line, at.column + 1)
    })
}

/// The `#[path = "…"]` of a `mod` declaration.
fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find(|a| a.path().is_ident("path")).and_then(|a| match &a.meta {
        syn::Meta::NameValue(syn::MetaNameValue {
            value: syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }),
            ..
        }) => Some(s.value()),
        _ => None,
    })
}

impl Crate {
    /// Loads the module tree of the crate rooted at `root` (from the workspace root).
    pub fn load(root: &str) -> Crate {
        let mut krate = Crate { files: Vec::new(), modules: BTreeMap::new() };
        let mut queue = vec![(root.to_string(), Vec::<String>::new())];
        while let Some((rel, module)) = queue.pop() {
            let ast = parse(&rel);
            let idx = krate.files.len();
            krate.modules.insert(module.clone(), idx);
            // Where `mod x;` in this file looks for x: beside a root or mod.rs, else in a folder named for the file.
            let file = Path::new(&rel);
            let dir = file.parent().expect("a file in a folder");
            let stem = file.file_stem().and_then(|s| s.to_str()).expect("utf-8 name");
            let base = if matches!(stem, "mod" | "lib" | "main") { dir.to_path_buf() } else { dir.join(stem) };
            let mut found = Vec::new();
            declared_modules(&ast.items, &module, dir, &base, &mut found, &mut |m| {
                krate.modules.insert(m, idx);
            });
            for (m, p) in found {
                queue.push((p, m));
            }
            krate.files.push(SourceFile { rel, module, ast });
        }
        krate
    }

    /// The file defining the longest known module prefix of `abs`.
    fn file_of(&self, abs: &[String]) -> usize {
        (0..=abs.len()).rev().find_map(|n| self.modules.get(&abs[..n]).copied()).expect("the crate root is a module")
    }

    /// Every path each file names that reaches another file's module (test-only code left out),
    /// one edge per (from, to) pair at its first line.
    pub fn edges(&self) -> Vec<Edge> {
        let mut first: BTreeMap<(usize, usize), (usize, String)> = BTreeMap::new();
        for (idx, f) in self.files.iter().enumerate() {
            let mut aliases = BTreeMap::new();
            let mut c = Collector {
                krate: self,
                module: f.module.clone(),
                aliases: &mut aliases,
                found: Vec::new(),
                pass: Pass::Aliases,
            };
            c.visit_file(&f.ast);
            let mut c = Collector {
                krate: self,
                module: f.module.clone(),
                aliases: &mut aliases,
                found: Vec::new(),
                pass: Pass::Paths,
            };
            c.visit_file(&f.ast);
            for (abs, line, path) in c.found {
                let to = self.file_of(&abs);
                if to != idx {
                    let e = first.entry((idx, to)).or_insert((line, path.clone()));
                    if line < e.0 {
                        *e = (line, path);
                    }
                }
            }
        }
        first.into_iter().map(|((from, to), (line, path))| Edge { from, to, line, path }).collect()
    }
}

/// Walks `items` (a file's, or an inline module's) for `mod` declarations: inline
/// modules are reported through `inline` (same file), file modules pushed onto
/// `found` with the file that holds them. Test-only modules are skipped.
fn declared_modules(
    items: &[syn::Item],
    module: &[String],
    dir: &Path,
    base: &Path,
    found: &mut Vec<(Vec<String>, String)>,
    inline: &mut dyn FnMut(Vec<String>),
) {
    for item in items {
        let syn::Item::Mod(m) = item else { continue };
        if is_test_only(&m.attrs) {
            continue;
        }
        let mut sub = module.to_vec();
        sub.push(m.ident.to_string());
        match &m.content {
            Some((_, inner)) => {
                inline(sub.clone());
                declared_modules(inner, &sub, dir, &base.join(m.ident.to_string()), found, inline);
            }
            None => {
                let name = m.ident.to_string();
                let at = |p: &Path| repo().join(p).is_file();
                let path = match path_attr(&m.attrs) {
                    Some(p) => dir.join(p),
                    None if at(&base.join(format!("{name}.rs"))) || !at(&base.join(&name).join("mod.rs")) => {
                        base.join(format!("{name}.rs"))
                    }
                    None => base.join(&name).join("mod.rs"),
                };
                found.push((sub, path.to_string_lossy().into_owned()));
            }
        }
    }
}

#[derive(PartialEq)]
enum Pass {
    /// Collect what each `use` binds to a name.
    Aliases,
    /// Collect every path, resolved.
    Paths,
}

/// Collects the resolved paths of one file.
struct Collector<'a> {
    krate: &'a Crate,
    /// The module being walked (inline modules pushed).
    module: Vec<String>,
    /// (module, name) → the absolute path a `use` bound the name to.
    aliases: &'a mut BTreeMap<(Vec<String>, String), Vec<String>>,
    /// (absolute path, line, path as written).
    found: Vec<(Vec<String>, usize, String)>,
    pass: Pass,
}

impl Collector<'_> {
    /// The absolute path `segs` names from the current module, when it names something of this crate.
    fn resolve(&self, segs: &[String]) -> Option<Vec<String>> {
        let (head, rest) = segs.split_first()?;
        let mut abs = match head.as_str() {
            "crate" => Vec::new(),
            "self" => self.module.clone(),
            "super" => {
                let mut m = self.module.clone();
                let mut rest = rest;
                m.pop()?;
                while rest.first().map(String::as_str) == Some("super") {
                    m.pop()?;
                    rest = &rest[1..];
                }
                m.extend(rest.iter().cloned());
                return Some(m);
            }
            _ => {
                let mut child = self.module.clone();
                child.push(head.clone());
                if self.krate.modules.contains_key(&child) {
                    child
                } else {
                    self.aliases.get(&(self.module.clone(), head.clone())).cloned()?
                }
            }
        };
        abs.extend(rest.iter().cloned());
        Some(abs)
    }

    fn record(&mut self, segs: &[String], line: usize) {
        if let Some(abs) = self.resolve(segs) {
            self.found.push((abs, line, segs.join("::")));
        }
    }

    /// Flattens a use tree: each leaf's path, the name it binds (none for a glob).
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree, line: usize) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree, line);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.use_leaf(prefix, &n.ident, &n.ident, line),
            syn::UseTree::Rename(r) => self.use_leaf(prefix, &r.ident, &r.rename, line),
            syn::UseTree::Glob(_) => {
                if self.pass == Pass::Paths {
                    self.record(&prefix.clone(), line);
                }
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t, line);
                }
            }
        }
    }

    fn use_leaf(&mut self, prefix: &[String], ident: &syn::Ident, bound: &syn::Ident, line: usize) {
        let mut segs = prefix.to_vec();
        if ident != "self" {
            segs.push(ident.to_string());
        }
        match self.pass {
            Pass::Aliases => {
                if let Some(abs) = self.resolve(&segs) {
                    let name =
                        if ident == "self" { prefix.last().cloned().unwrap_or_default() } else { bound.to_string() };
                    self.aliases.insert((self.module.clone(), name), abs);
                }
            }
            Pass::Paths => self.record(&segs, line),
        }
    }

    /// Paths in a macro's tokens: `a::b::c` sequences whose head resolves.
    fn tokens(&mut self, tokens: proc_macro2::TokenStream) {
        use proc_macro2::TokenTree;
        let tts: Vec<TokenTree> = tokens.into_iter().collect();
        let sep = |i: usize| matches!((tts.get(i), tts.get(i + 1)), (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) if a.as_char() == ':' && b.as_char() == ':');
        let mut i = 0;
        while i < tts.len() {
            match &tts[i] {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(id) if sep(i + 1) && !(i >= 2 && sep(i - 2)) => {
                    let line = id.span().start().line;
                    let mut segs = vec![id.to_string()];
                    let mut j = i + 1;
                    while sep(j) {
                        match tts.get(j + 2) {
                            Some(TokenTree::Ident(next)) => segs.push(next.to_string()),
                            _ => break,
                        }
                        j += 3;
                    }
                    if segs.len() >= 2 {
                        self.record(&segs, line);
                    }
                    i = j;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item(&mut self, i: &'ast syn::Item) {
        if !is_test_only(item_attrs(i)) {
            syn::visit::visit_item(self, i);
        }
    }
    fn visit_impl_item(&mut self, i: &'ast syn::ImplItem) {
        let attrs = match i {
            syn::ImplItem::Fn(f) => &f.attrs,
            syn::ImplItem::Const(c) => &c.attrs,
            syn::ImplItem::Type(t) => &t.attrs,
            syn::ImplItem::Macro(m) => &m.attrs,
            _ => return syn::visit::visit_impl_item(self, i),
        };
        if !is_test_only(attrs) {
            syn::visit::visit_impl_item(self, i);
        }
    }
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if let Some((_, items)) = &m.content {
            self.module.push(m.ident.to_string());
            for i in items {
                self.visit_item(i);
            }
            self.module.pop();
        }
    }
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let line = u.use_token.span.start().line;
        self.use_tree(&mut Vec::new(), &u.tree, line);
    }
    fn visit_path(&mut self, p: &'ast syn::Path) {
        if self.pass == Pass::Paths && p.segments.len() >= 2 {
            let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
            let line = p.segments[0].ident.span().start().line;
            self.record(&segs, line);
        }
        syn::visit::visit_path(self, p);
    }
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        if self.pass == Pass::Paths {
            self.tokens(m.tokens.clone());
        }
        syn::visit::visit_macro(self, m);
    }
}

/// Every `.rs` file under `dir` (from the workspace root), sorted.
pub fn rust_files(dir: &str) -> Vec<String> {
    fn walk(d: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.insert(p);
            }
        }
    }
    let root = repo();
    let mut out = BTreeSet::new();
    walk(&root.join(dir), &mut out);
    out.into_iter().map(|p| p.strip_prefix(&root).unwrap_or(&p).to_string_lossy().into_owned()).collect()
}

/// A crate made of in-memory files `(path, module, text)`, for the house tests' own tests.
#[cfg(test)]
pub fn crate_of(files: &[(&str, &[&str], &str)]) -> Crate {
    let mut krate = Crate { files: Vec::new(), modules: BTreeMap::new() };
    for (rel, module, text) in files {
        let module: Vec<String> = module.iter().map(|s| s.to_string()).collect();
        krate.modules.insert(module.clone(), krate.files.len());
        let ast = syn::parse_file(text).expect("test source parses");
        krate.files.push(SourceFile { rel: rel.to_string(), module, ast });
    }
    krate
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The edges as `from -> to @line`.
    fn edges(krate: &Crate) -> Vec<String> {
        krate
            .edges()
            .iter()
            .map(|e| format!("{} -> {} @{}", krate.files[e.from].rel, krate.files[e.to].rel, e.line))
            .collect()
    }

    #[test]
    fn every_spelling_of_a_path_is_an_edge_and_test_code_is_not() {
        let k = crate_of(&[
            ("lib.rs", &[], "pub mod a;\npub mod b;\npub mod c;\npub mod d;\npub mod e;\n"),
            // grouped and nested use; a glob; an alias used later
            ("a.rs", &["a"], "use crate::{b, c::X};\nuse crate::d::*;\nfn f() { b::g(); }\n"),
            // super:: and a path in an expression
            ("b.rs", &["b"], "fn g() {\n    super::e::h();\n}\n"),
            // a path in a macro's tokens
            ("c.rs", &["c"], "pub struct X;\nfn f() {\n    println!(\"{}\", crate::a::N);\n}\n"),
            // test-only code is no edge
            ("d.rs", &["d"], "#[cfg(test)]\nmod tests { use crate::a::N; }\n#[test]\nfn t() { crate::b::g(); }\n"),
            // a self:: path to the own file and an extern crate are no edges
            ("e.rs", &["e"], "fn h() { self::h(); std::mem::drop(1); }\n"),
        ]);
        assert_eq!(
            edges(&k),
            ["a.rs -> b.rs @1", "a.rs -> c.rs @1", "a.rs -> d.rs @2", "b.rs -> e.rs @2", "c.rs -> a.rs @3"]
        );
    }

    #[test]
    fn cfg_test_and_test_attributes_are_test_only_and_cfg_not_test_is_not() {
        let attrs = |src: &str| syn::parse_str::<syn::ItemFn>(&format!("{src} fn f() {{}}")).unwrap().attrs;
        for src in ["#[cfg(test)]", "#[test]", "#[cfg(all(test, unix))]"] {
            assert!(is_test_only(&attrs(src)), "{src}");
        }
        for src in ["#[cfg(not(test))]", "#[cfg(any(test, unix))]", "#[cfg(unix)]", "#[inline]"] {
            assert!(!is_test_only(&attrs(src)), "{src}");
        }
    }
}
