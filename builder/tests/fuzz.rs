//! Fuzz targets kept in the repo: the profile parser with every rule
//! (`Profile::parse`, `check::check_for`, rendering) and the overlay manifest
//! parser (`overlay::parse_manifest`).
//!
//! A small deterministic mutation fuzzer (no nightly toolchain, no extra
//! dependencies), like `firstboot/tests/fuzz.rs`: every input under
//! `tests/fuzz/<target>/` (seeds, and crashes found earlier kept as regression
//! cases) runs first, then mutations of that corpus — bit flips, byte edits,
//! tokens of TOML and of what kiln renders (line breaks, `..`, `//`, `unix://`,
//! `%`, `$`, huge numbers), duplicated and deleted ranges, splices of two inputs.
//!
//! Beyond "no panic", an accepted profile must render files an attacker cannot
//! shape: unit files, sysctl.d, modules-load.d, the kubelet environment file
//! and crictl.yaml have exactly the lines kiln writes, output file names are
//! plain names, nothing lands under a read-only `/usr`, and every refusal is
//! `file:line:col` lines only. A failure writes the input to
//! `tests/fuzz/<target>/crash-<hash>` and fails the test.
//!
//! The normal test run does a short bounded number of cases per target; set
//! `KILN_FUZZ_CASES=N` for a long run (and `KILN_FUZZ_SEED` to vary it), e.g.
//! `KILN_FUZZ_CASES=1000000 cargo nextest run -p kiln --release --test fuzz --no-capture`.

use kiln::image::check;
use kiln::image::render;
use kiln::image::tree::{Content, Node, Origin, Tree};
use kiln::inputs::overlay;
use kiln::inputs::profile::{Arch, Install, Profile};
use kiln_testkit::rng::Rng;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Profile inputs that parsed, and that also passed every rule (reported, so
/// a run shows how deep its inputs got).
static PARSED: AtomicU64 = AtomicU64::new(0);
static ACCEPTED: AtomicU64 = AtomicU64::new(0);

/// Cases per target in the normal test run (a few seconds in debug builds).
const DEFAULT_CASES: u64 = 20_000;

/// Tokens that matter to TOML and to the files kiln renders.
const TOKENS: &[&str] = &[
    "\n",
    "\\n",
    "\r",
    "\\r",
    "\\u0000",
    "\\t",
    "\t",
    " ",
    "\"",
    "'",
    "\\",
    "=",
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    "..",
    "/",
    "//",
    "/./",
    "/../",
    "/usr",
    "/usr/bin",
    "/etc",
    "/",
    "%h",
    "$PATH",
    "`",
    ";",
    "#",
    "@",
    "user:pw@",
    "unix://",
    "tcp://",
    "file://",
    "https://",
    "http://",
    "{version}",
    "{arch}",
    "{uname_arch}",
    "{os}",
    "*",
    "-",
    "_",
    "0",
    "1",
    "-1",
    "0755",
    "07777",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "99999999999999999999",
    "v1.34.2",
    "v1.35.0-rc.1",
    "v1.26.0",
    "arm",
    "arm64",
    "amd64",
    "fcos",
    "flatcar",
    "debian",
    "cgroupfs",
    "systemd",
    "crio",
    "containerd",
    "true",
    "false",
    "ExecStartPre=/bin/sh",
    "[sysctl]",
    "[kubelet]",
    "[runtime]",
    "[artifacts.x]",
    "[paths.\"etc/a\"]",
    "name = ",
    "bin_dir = ",
    "socket = ",
    "extract = [\"*\"]",
    "file_name = ",
    "dest = ",
    "override = true",
    "mode = ",
    "uid = ",
    "gid = ",
    "é",
    "\u{202e}",
    "\u{0085}",
    "\u{2028}",
];

/// One mutation of `input` (sometimes spliced with `other`).
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    let rounds = if rng.below(2) == 0 { 1 } else { 2 + rng.below(3) };
    for _ in 0..rounds {
        let at = rng.below(v.len() + 1);
        match rng.below(9) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2..=4 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                v.splice(at..at, t.iter().copied());
            }
            5 if !v.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at.min(end)..end);
            }
            6 if !v.is_empty() => {
                let start = rng.below(v.len());
                let end = (start + 1 + rng.below(64)).min(v.len());
                let piece = v[start..end].to_vec();
                v.splice(at..at, piece);
            }
            7 if !other.is_empty() => {
                let start = rng.below(other.len());
                let end = (start + 1 + rng.below(256)).min(other.len());
                v.splice(at..at, other[start..end].iter().copied());
            }
            _ => {
                // Replace the inside of a string value with a token.
                if let Some(q) = v.iter().skip(at).position(|b| *b == b'"').map(|p| p + at) {
                    if let Some(e) = v.iter().skip(q + 1).position(|b| *b == b'"' || *b == b'\n').map(|p| p + q + 1) {
                        let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                        v.splice(q + 1..e, t.iter().copied());
                    }
                }
            }
        }
    }
    v.truncate(64 * 1024);
    v
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz").join(target)
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus_dir(target))
        .expect("corpus directory")
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).expect("corpus file")))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no seeds for {target}");
    v
}

fn hash(bytes: &[u8]) -> String {
    // FNV-1a, enough to name a crash file.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// How far an input got: 0 refused early, higher is deeper. Mutants that got
/// deep become parents of later mutants (a crude stand-in for coverage).
type Depth = u8;

/// Runs `one` on every corpus input, then on mutations until `cases` inputs
/// ran. Returns (inputs run, seconds). A panic or a broken property saves the
/// input as a regression case and fails.
fn fuzz(target: &str, one: &dyn Fn(&[u8]) -> Result<Depth, String>) -> (u64, f64) {
    let cases: u64 = std::env::var("KILN_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_CASES);
    let seed: u64 = std::env::var("KILN_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x6b69_6c6e);
    let seeds = corpus(target);
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    let mut ran = 0u64;
    let mut pool: Vec<Vec<u8>> = seeds.iter().map(|(_, b)| b.clone()).collect();
    let next = |ran: u64, rng: &mut Rng, pool: &[Vec<u8>]| -> Vec<u8> {
        if (ran as usize) < seeds.len() {
            return seeds[ran as usize].1.clone();
        }
        // Mostly the seeds, sometimes a kept mutant, as parent.
        let a = if rng.below(2) == 0 { rng.below(seeds.len()) } else { rng.below(pool.len()) };
        let b = rng.below(pool.len());
        mutate(rng, &pool[a], &pool[b])
    };
    let mut best: Depth = 0;
    while ran < cases.max(seeds.len() as u64) {
        let input = next(ran, &mut rng, &pool);
        let outcome = catch_unwind(AssertUnwindSafe(|| one(&input)));
        let failure = match outcome {
            Ok(Ok(depth)) => {
                best = best.max(depth);
                if depth > 0 && depth + 1 >= best && (ran as usize) >= seeds.len() && rng.below(4) == 0 {
                    if pool.len() < 512 {
                        pool.push(input.clone());
                    } else {
                        let i = seeds.len() + rng.below(512 - seeds.len());
                        pool[i] = input.clone();
                    }
                }
                None
            }
            Ok(Err(why)) => Some(why),
            Err(p) => Some(format!(
                "panic: {}",
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        };
        if let Some(why) = failure {
            let path = corpus_dir(target).join(format!("crash-{}", hash(&input)));
            std::fs::write(&path, &input).expect("write crash input");
            panic!("{target}: input {ran} fails ({why}); saved as {}", path.display());
        }
        ran += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("fuzz {target}: {ran} inputs in {secs:.1} s ({:.0}/s), seed {seed}", ran as f64 / secs.max(1e-9));
    (ran, secs)
}

/// Lines of a rendered text file, by image path.
fn texts(tree: &Tree) -> BTreeMap<String, String> {
    tree.iter()
        .filter_map(|(p, e)| match &e.node {
            Node::File(Content::Inline(b)) => Some((p.clone(), String::from_utf8_lossy(b).into_owned())),
            _ => None,
        })
        .collect()
}

/// Line counts of the files whose shape does not depend on the profile,
/// from rendering the base seed.
fn reference_shapes() -> BTreeMap<String, usize> {
    let text = String::from_utf8(std::fs::read(corpus_dir("profile").join("seed-everything.toml")).expect("seed"))
        .expect("utf-8 seed");
    let p = Profile::parse(&fuzz_profile_path(), text).expect("seed parses");
    let mut t = Tree::new();
    render::render(&p, Arch::Amd64, &mut t).expect("seed renders");
    texts(&t)
        .into_iter()
        .filter(|(k, _)| {
            !k.starts_with("etc/sysctl.d/") && !k.starts_with("etc/modules-load.d/") && k != "etc/kiln/image.toml"
        })
        .filter(|(k, _)| k != "etc/containerd/config.toml")
        .map(|(k, v)| (k, v.lines().count()))
        .collect()
}

/// Profiles are parsed as if they were `profiles/fuzz.toml` of this
/// repository, so their overlays resolve to the real `overlays/`.
fn fuzz_profile_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/fuzz.toml")
}

fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
}

fn is_plain_file_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.chars().any(char::is_control) && !s.contains(' ')
}

fn is_normal_abs(s: &str) -> bool {
    s.starts_with('/')
        && (s == "/" || s[1..].split('/').all(|c| !c.is_empty() && c != "." && c != ".."))
        && !s.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// The profile target: parse, every rule, rendering for every architecture.
fn profile_case(bytes: &[u8], shapes: &BTreeMap<String, usize>) -> Result<Depth, String> {
    let path = &fuzz_profile_path();
    let prefix = format!("{}:", path.display());
    let text = String::from_utf8_lossy(bytes).into_owned();
    let p = match Profile::parse(path, text) {
        Ok(p) => p,
        Err(e) => {
            // A refusal is file:line:col lines only: no value adds a line.
            for l in e.message.lines() {
                if !l.starts_with(&prefix) || l.chars().any(|c| c.is_control() && c != '\t') {
                    return Err(format!("refusal line not located or not clean: {l:?}"));
                }
            }
            return Ok(0);
        }
    };
    PARSED.fetch_add(1, Ordering::Relaxed);
    let findings = check::check(&p);
    if check::has_errors(&findings) {
        return Ok(1);
    }
    ACCEPTED.fetch_add(1, Ordering::Relaxed);
    // Accepted: everything derived from it must be plain.
    if !is_name(p.name()) {
        return Err(format!("accepted name {:?}", p.name()));
    }
    for dir in [p.bin_dir(), p.cni_bin_dir(), p.flex_volume_dir()] {
        if !is_normal_abs(&dir) || dir == "/" {
            return Err(format!("accepted directory {dir:?}"));
        }
        if p.family().read_only_usr() && (dir == "/usr" || dir.starts_with("/usr/")) {
            return Err(format!("accepted {dir:?} under read-only /usr"));
        }
    }
    let socket = p.runtime_socket();
    if !socket.starts_with("unix:///") || socket.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("accepted socket {socket:?}"));
    }
    for arch in p.architectures() {
        for file in [format!("{}-{arch}.tar.gz", p.name()), kiln::outputs::sysext::file_name(&p, arch)] {
            if !is_plain_file_name(&file) {
                return Err(format!("output file name {file:?}"));
            }
        }
        if let Ok(arts) = p.artifacts_for(arch) {
            for a in arts {
                if !is_normal_abs(&a.dest) {
                    return Err(format!("artifact dest {:?}", a.dest));
                }
                let names = match &a.install {
                    Install::File { name } => vec![name.clone()],
                    Install::Extract { members } => members.clone().unwrap_or_default(),
                };
                if let Some(n) = names.iter().find(|n| !is_plain_file_name(n)) {
                    return Err(format!("artifact file name {n:?}"));
                }
                let authority = a.url.split("://").nth(1).and_then(|r| r.split(['/', '?', '#']).next()).unwrap_or("");
                if authority.is_empty() || authority.contains('@') || a.url.chars().any(|c| c.is_whitespace()) {
                    return Err(format!("artifact url {:?}", a.url));
                }
            }
        }
        let mut tree = Tree::new();
        if render::render(&p, arch, &mut tree).is_err() {
            continue;
        }
        let files = texts(&tree);
        for (k, lines) in shapes {
            if let Some(text) = files.get(k) {
                if text.lines().count() != *lines {
                    return Err(format!("/{k} has {} lines, kiln writes {lines}:\n{text}", text.lines().count()));
                }
            }
        }
        let mods = &files["etc/modules-load.d/kiln-kubernetes.conf"];
        if mods.lines().count() != 1 + p.kernel_modules().len() {
            return Err(format!("modules-load.d has extra lines:\n{mods}"));
        }
        let sysctl = &files["etc/sysctl.d/90-kiln-kubernetes.conf"];
        if sysctl.lines().count() != 1 + p.sysctls().len()
            || sysctl.lines().skip(1).any(|l| l.split_once(" = ").is_none_or(|(k, _)| k.contains([' ', '='])))
        {
            return Err(format!("sysctl.d has a bad line:\n{sysctl}"));
        }
        if toml::from_str::<toml::Value>(&files["etc/kiln/image.toml"]).is_err() {
            return Err("image.toml does not parse".into());
        }
        for (k, e) in tree.iter() {
            if k.chars().any(char::is_control) {
                return Err(format!("tree path {k:?}"));
            }
            if p.family().read_only_usr() && (k == "usr" || k.starts_with("usr/")) && e.origin == Origin::Rendered {
                return Err(format!("rendered /{k} under read-only /usr"));
            }
        }
    }
    Ok(2)
}

/// The overlay manifest target: never a panic; a refusal is one located line.
fn overlay_case(bytes: &[u8]) -> Result<Depth, String> {
    let text = String::from_utf8_lossy(bytes);
    match overlay::parse_manifest(Path::new("o/.kiln-overlay.toml"), &text) {
        Ok(()) => Ok(1),
        Err(e) if e.message.lines().count() == 1 && e.message.starts_with("o/.kiln-overlay.toml:") => Ok(0),
        Err(e) => Err(format!("refusal not one located line: {:?}", e.message)),
    }
}

#[test]
fn fuzz_profile_parser_and_rules() {
    let shapes = reference_shapes();
    assert!(shapes.contains_key("etc/systemd/system/kubelet.service"), "{shapes:?}");
    let (ran, _) = fuzz("profile", &|b| profile_case(b, &shapes));
    let (parsed, accepted) = (PARSED.load(Ordering::Relaxed), ACCEPTED.load(Ordering::Relaxed));
    eprintln!("fuzz profile: {parsed} of {ran} parsed, {accepted} passed every rule and were rendered");
    // The mutations must reach the rules and the renderer, not only the TOML parser.
    assert!(parsed * 20 >= ran && accepted * 100 >= ran, "too shallow: {parsed} parsed, {accepted} accepted");
}

#[test]
fn fuzz_overlay_manifest_parser() {
    fuzz("overlay_manifest", &overlay_case);
}

/// The properties hold for hostile inputs written by hand too (these are
/// refused; the fuzzer checks refusals are clean).
#[test]
fn handwritten_hostile_profiles_keep_the_properties() {
    let shapes = reference_shapes();
    let base =
        String::from_utf8(std::fs::read(corpus_dir("profile").join("seed-base.toml")).expect("seed")).expect("utf-8");
    for edit in [
        base.replace("name = \"t\"", "name = \"a\\nb\""),
        base.replace("name = \"t\"", "name = \"../x\""),
        base.replace("overlays =", "bin_dir = \"/opt/bin\\nExecStartPre=/bin/sh\"\noverlays ="),
        base.replace("overlays =", "bin_dir = \"/./usr/bin\"\noverlays ="),
    ] {
        assert!(Profile::parse(&fuzz_profile_path(), edit.clone()).is_err(), "{edit}");
        profile_case(edit.as_bytes(), &shapes).unwrap();
    }
}
