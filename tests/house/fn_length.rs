//! Done-list rule of issue 22: no function over [`MAX_LINES`] lines outside
//! tests, unless its doc comment says why in a sentence containing one of
//! [`MARKERS`] ("`/// It is long because …`"). A function's lines run from
//! its `fn` line to its closing brace, attributes and doc comment not counted
//! (`fnlen.py`'s count); methods in `impl` and default methods in traits count,
//! nested functions count on their own; `#[cfg(test)]` modules and items and
//! `#[test]` functions are left out.

use crate::source::{is_test_only, item_attrs, Crate, ROOTS};
use syn::visit::Visit;

/// The longest a function may be without saying why.
pub const MAX_LINES: usize = 120;

/// A doc comment containing one of these (any case) says why its function is long.
pub const MARKERS: [&str; 2] = ["long because", "is long:"];

/// True when the doc comment in `attrs` carries a marker.
fn says_why(attrs: &[syn::Attribute]) -> bool {
    let doc: String = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(syn::MetaNameValue {
                value: syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }),
                ..
            }) => Some(s.value()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    let doc = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    MARKERS.iter().any(|m| doc.contains(m))
}

struct Lengths<'a> {
    rel: &'a str,
    /// The `impl` type being walked, for `Type::method` names.
    owner: Vec<String>,
    out: Vec<String>,
}

impl Lengths<'_> {
    fn check(&mut self, attrs: &[syn::Attribute], sig: &syn::Signature, block: &syn::Block) {
        let start = sig.fn_token.span.start().line;
        let end = block.brace_token.span.close().end().line;
        let n = end + 1 - start;
        if n > MAX_LINES && !says_why(attrs) {
            let name = match self.owner.last() {
                Some(o) => format!("{o}::{}", sig.ident),
                None => sig.ident.to_string(),
            };
            self.out.push(format!("{}:{start}: fn {name} is {n} lines", self.rel));
        }
    }
}

/// The name of an `impl`'s self type (`Fleet`, `Writer<W>` → `Writer`).
fn type_name(t: &syn::Type) -> String {
    match t {
        syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default(),
        _ => "_".into(),
    }
}

impl<'ast> Visit<'ast> for Lengths<'_> {
    fn visit_item(&mut self, i: &'ast syn::Item) {
        if !is_test_only(item_attrs(i)) {
            syn::visit::visit_item(self, i);
        }
    }
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.check(&f.attrs, &f.sig, &f.block);
        syn::visit::visit_item_fn(self, f);
    }
    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        self.owner.push(type_name(&i.self_ty));
        syn::visit::visit_item_impl(self, i);
        self.owner.pop();
    }
    fn visit_item_trait(&mut self, t: &'ast syn::ItemTrait) {
        self.owner.push(t.ident.to_string());
        syn::visit::visit_item_trait(self, t);
        self.owner.pop();
    }
    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if is_test_only(&f.attrs) {
            return;
        }
        self.check(&f.attrs, &f.sig, &f.block);
        syn::visit::visit_impl_item_fn(self, f);
    }
    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if is_test_only(&f.attrs) {
            return;
        }
        if let Some(b) = &f.default {
            self.check(&f.attrs, &f.sig, b);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
}

/// Every function over the limit without a reason, as `path:line: fn name is N lines`.
pub fn violations() -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for root in ROOTS {
        for f in Crate::load(root).files {
            if !seen.insert(f.rel.clone()) {
                continue;
            }
            let mut l = Lengths { rel: &f.rel, owner: Vec::new(), out: Vec::new() };
            l.visit_file(&f.ast);
            out.extend(l.out);
        }
    }
    out
}

#[test]
fn no_function_over_120_lines_without_a_reason() {
    let v = violations();
    assert!(
        v.is_empty(),
        "{} function(s) over {MAX_LINES} lines outside tests (issue 22): split each into named steps, or say why \
         in its doc comment with a sentence containing one of {MARKERS:?} (e.g. `/// It is long because …`):\n{}",
        v.len(),
        v.join("\n")
    );
}

#[test]
fn long_functions_are_counted_from_fn_to_brace_and_a_reason_or_a_test_exempts_them() {
    let body = "    let _ = 1;\n".repeat(MAX_LINES - 2);
    let src = format!(
        "/// Doc lines do not count.\nfn exactly() {{\n{body}}}\n\
         fn over() {{\n{body}    let _ = 2;\n}}\n\
         /// It is long because the steps share one borrow.\nfn excused() {{\n{body}    let _ = 2;\n}}\n\
         struct S;\nimpl S {{\n    fn method(&self) {{\n{body}        let _ = 2;\n    }}\n}}\n\
         #[cfg(test)]\nmod tests {{\n    fn helper() {{\n{body}        let _ = 2;\n    }}\n}}\n\
         #[test]\nfn a_test() {{\n{body}    let _ = 2;\n}}\n"
    );
    let ast = syn::parse_file(&src).unwrap();
    let mut l = Lengths { rel: "x.rs", owner: Vec::new(), out: Vec::new() };
    l.visit_file(&ast);
    let line_of = |needle: &str| src.lines().position(|l| l.contains(needle)).unwrap() + 1;
    assert_eq!(
        l.out,
        [
            format!("x.rs:{}: fn over is 121 lines", line_of("fn over")),
            format!("x.rs:{}: fn S::method is 121 lines", line_of("fn method"))
        ]
    );
}
