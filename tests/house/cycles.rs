//! Done-list rule of issue 22: no circle of `use` between files, in either
//! crate. File A uses file B when a path in A (a `use`, an expression, a type,
//! a macro's tokens; test-only code left out) reaches the module B defines.
//! A `mod.rs` (or crate root) and its direct children count as one folder:
//! the parent declaring and dispatching to a child, and the child using its
//! parent's shared items, are not edges; edges between siblings are.

use crate::source::{Crate, Edge, ROOTS};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// True when `a` and `b` are a module and one of its direct children.
fn parent_and_child(a: &[String], b: &[String]) -> bool {
    (a.len() + 1 == b.len() && b.starts_with(a)) || (b.len() + 1 == a.len() && a.starts_with(b))
}

/// The file graph of `krate`: from → {to}, parent/child pairs left out.
fn graph(krate: &Crate, edges: &[Edge]) -> BTreeMap<usize, BTreeSet<usize>> {
    let mut g: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for e in edges {
        if !parent_and_child(&krate.files[e.from].module, &krate.files[e.to].module) {
            g.entry(e.from).or_default().insert(e.to);
        }
    }
    g
}

/// Strongly connected components with more than one file (Tarjan).
fn components(n: usize, g: &BTreeMap<usize, BTreeSet<usize>>) -> Vec<Vec<usize>> {
    struct T<'a> {
        g: &'a BTreeMap<usize, BTreeSet<usize>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(t: &mut T, v: usize) {
        t.index[v] = Some(t.next);
        t.low[v] = t.next;
        t.next += 1;
        t.stack.push(v);
        t.on[v] = true;
        for &w in t.g.get(&v).into_iter().flatten() {
            match t.index[w] {
                None => {
                    visit(t, w);
                    t.low[v] = t.low[v].min(t.low[w]);
                }
                Some(i) if t.on[w] => t.low[v] = t.low[v].min(i),
                Some(_) => {}
            }
        }
        if Some(t.low[v]) == t.index[v] {
            let mut c = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on[w] = false;
                c.push(w);
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                c.sort();
                t.out.push(c);
            }
        }
    }
    let mut t =
        T { g, index: vec![None; n], low: vec![0; n], on: vec![false; n], stack: Vec::new(), next: 0, out: Vec::new() };
    for v in 0..n {
        if t.index[v].is_none() {
            visit(&mut t, v);
        }
    }
    t.out
}

/// One shortest circle through each edge of each component, rotated to start
/// at its smallest file and deduplicated.
fn circles(g: &BTreeMap<usize, BTreeSet<usize>>, comp: &[usize]) -> BTreeSet<Vec<usize>> {
    let inside: BTreeSet<usize> = comp.iter().copied().collect();
    let mut out = BTreeSet::new();
    for &u in comp {
        for &v in g.get(&u).into_iter().flatten().filter(|v| inside.contains(v)) {
            // Shortest path v → u inside the component.
            let mut prev: BTreeMap<usize, usize> = BTreeMap::new();
            let mut queue = VecDeque::from([v]);
            let mut seen = BTreeSet::from([v]);
            while let Some(x) = queue.pop_front() {
                if x == u {
                    break;
                }
                for &y in g.get(&x).into_iter().flatten().filter(|y| inside.contains(y)) {
                    if seen.insert(y) {
                        prev.insert(y, x);
                        queue.push_back(y);
                    }
                }
            }
            let mut path = vec![u];
            let mut x = u;
            while x != v {
                x = prev[&x];
                path.push(x);
            }
            path.reverse(); // v … u
            let mut circle = vec![u];
            circle.extend(path.iter().copied().take(path.len() - 1));
            let min = circle.iter().enumerate().min_by_key(|(_, f)| **f).map(|(i, _)| i).unwrap_or(0);
            circle.rotate_left(min);
            out.insert(circle);
        }
    }
    out
}

/// Every circle of every crate, as `cycle: a.rs -> b.rs -> a.rs`, each
/// followed by the paths that make its edges.
pub fn violations() -> Vec<String> {
    let mut out = Vec::new();
    for root in ROOTS {
        let krate = Crate::load(root);
        let edges = krate.edges();
        let g = graph(&krate, &edges);
        let by: BTreeMap<(usize, usize), &Edge> = edges.iter().map(|e| ((e.from, e.to), e)).collect();
        for comp in components(krate.files.len(), &g) {
            for c in circles(&g, &comp) {
                let mut names: Vec<&str> = c.iter().map(|&f| krate.files[f].rel.as_str()).collect();
                names.push(&krate.files[c[0]].rel);
                let mut line = format!("cycle: {}", names.join(" -> "));
                for (i, &f) in c.iter().enumerate() {
                    let e = by[&(f, c[(i + 1) % c.len()])];
                    line.push_str(&format!("\n    {}:{}: {}", krate.files[f].rel, e.line, e.path));
                }
                out.push(line);
            }
        }
    }
    out
}

#[test]
fn no_circles_between_files() {
    let v = violations();
    assert!(
        v.is_empty(),
        "{} circle(s) of `use` between files (issue 22: a type or helper in the wrong file; move it so the \
         dependency points one way):\n{}",
        v.len(),
        v.join("\n")
    );
}

#[test]
fn a_circle_is_found_once_and_parent_child_pairs_are_one_folder() {
    use crate::source::crate_of;
    let k = crate_of(&[
        ("lib.rs", &[], "pub mod a;\npub mod b;\npub mod c;\npub mod p;\n"),
        ("a.rs", &["a"], "use crate::b::X;\n"),
        ("b.rs", &["b"], "pub struct X;\nuse crate::c::Y;\n"),
        ("c.rs", &["c"], "pub struct Y;\nuse crate::a::Z;\nuse crate::p::q::W;\n"),
        ("p/mod.rs", &["p"], "pub mod q;\nuse q::W;\n"),
        ("p/q.rs", &["p", "q"], "pub struct W;\nuse super::V;\n"),
    ]);
    let edges = k.edges();
    let g = graph(&k, &edges);
    let comps = components(k.files.len(), &g);
    assert_eq!(comps, [vec![1, 2, 3]], "a -> b -> c -> a, and p/mod.rs <-> p/q.rs is no circle");
    assert_eq!(circles(&g, &comps[0]).into_iter().collect::<Vec<_>>(), [vec![1, 2, 3]]);
}
