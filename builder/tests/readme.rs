//! Every command block of `README.md`, run in document order on one scratch
//! directory against the loopback mirror, must exit as the README says (issue
//! 13). The README is read from the repository at test time, never copied.
//!
//! Marker convention (an HTML comment on the line right before a block's
//! opening fence, indented like the fence or not):
//!
//! * a fenced block whose info string is `sh` is run with `bash -euo pipefail`,
//!   as one script, and must exit 0;
//! * `<!-- readme-test: exit N -->` before an `sh` block: it must exit N;
//! * `<!-- readme-test: skip: REASON -->` before an `sh` block: not run (the
//!   reason is printed). Only for what cannot run here: root, block devices,
//!   a card reader, building kiln from source, upstream-only versions;
//! * `<!-- readme-test: file PATH -->` before any other block (e.g. ```toml):
//!   its content is written to PATH (relative) in the scratch directory before
//!   the first command block runs.
//!
//! A marker anywhere else, or one this test does not know, fails the test.
//!
//! The scratch directory holds the repository's profiles re-pinned to
//! stand-ins on the loopback mirror (card profiles' `[base_image]` a Pi-like
//! image), and the stand-ins the "Adding a Kubernetes version" block pins.
//! `PATH` starts with a directory holding `kiln` and `kiln-firstboot` (this
//! build's), `KILN_MIRROR` is the mirror, `KILN_FIRSTBOOT_BIN` an arm64
//! stand-in (the README's arm64 kiln-firstboot is a cross-build), and `HOME`,
//! `XDG_CACHE_HOME` and `TMPDIR` are inside the scratch directory; the rest of
//! the environment is cleared (no `EDITOR`, no `KILN_*`).

mod common;

use common::*;
use kiln::inputs::profile::{expand_url, Arch, Install, Profile};
use kiln::mirror_path::url_path;
use kiln_testkit::{pi_image, standin};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the README says about one fenced block.
#[derive(Debug, PartialEq)]
enum Kind {
    /// An `sh` block: run it, it must exit this code.
    Run(i32),
    /// An `sh` block not run, for this reason.
    Skip(String),
    /// Another block written to this path before the commands run.
    File(String),
}

#[derive(Debug, PartialEq)]
struct Block {
    /// 1-based line of the opening fence in README.md.
    line: usize,
    kind: Kind,
    body: String,
}

const MARKER: &str = "<!-- readme-test:";

/// The marker on `line`, if it is one: `Ok(None)` when it is not a marker.
fn marker(line: &str) -> Result<Option<String>, String> {
    let t = line.trim();
    let Some(rest) = t.strip_prefix(MARKER) else {
        let near_miss = t.starts_with("<!--") && t.contains("readme-test");
        return if near_miss { Err(format!("malformed marker {t:?}")) } else { Ok(None) };
    };
    match rest.strip_suffix("-->") {
        Some(m) => Ok(Some(m.trim().to_string())),
        None => Err(format!("marker {t:?} does not end with -->")),
    }
}

/// Every fenced block of `text` that is `sh` or carries a marker, in order.
fn parse(text: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start_matches(' ').len();
        let t = line.trim_start_matches(' ');
        if let Some(m) = marker(line).map_err(|e| format!("README.md:{}: {e}", i + 1))? {
            if let Some((at, _)) = pending {
                return Err(format!("README.md:{at}: marker not followed by a fenced block"));
            }
            pending = Some((i + 1, m));
            i += 1;
            continue;
        }
        if indent > 3 || !t.starts_with("```") {
            if let Some((at, _)) = pending.take() {
                return Err(format!("README.md:{at}: marker not on the line before a block's opening fence"));
            }
            i += 1;
            continue;
        }
        let fence = t.len() - t.trim_start_matches('`').len();
        let info = t[fence..].trim().to_string();
        let open = i + 1;
        let mut body = String::new();
        i += 1;
        loop {
            let Some(l) = lines.get(i) else {
                return Err(format!("README.md:{open}: the block is never closed"));
            };
            let lt = l.trim_start_matches(' ');
            let ticks = lt.len() - lt.trim_start_matches('`').len();
            if l.len() - lt.len() <= 3 && ticks >= fence && lt[ticks..].trim().is_empty() {
                break;
            }
            // Content lines lose up to the fence's indentation (CommonMark).
            let strip = (l.len() - l.trim_start_matches(' ').len()).min(indent);
            body.push_str(&l[strip..]);
            body.push('\n');
            i += 1;
        }
        i += 1;
        let sh = info == "sh";
        let kind = match pending.take() {
            None if sh => Kind::Run(0),
            None => continue,
            Some((at, m)) => {
                let what = |k: &str| format!("README.md:{at}: `{k}` marker before a ```{info} block");
                if let Some(reason) = m.strip_prefix("skip:") {
                    if !sh {
                        return Err(what("skip"));
                    }
                    if reason.trim().is_empty() {
                        return Err(format!("README.md:{at}: a skip marker needs a reason"));
                    }
                    Kind::Skip(reason.trim().to_string())
                } else if let Some(n) = m.strip_prefix("exit ") {
                    if !sh {
                        return Err(what("exit"));
                    }
                    Kind::Run(n.trim().parse().map_err(|_| format!("README.md:{at}: exit {n:?} is not a number"))?)
                } else if let Some(p) = m.strip_prefix("file ") {
                    if sh {
                        return Err(what("file"));
                    }
                    let p = p.trim();
                    if p.is_empty() || p.starts_with('/') || p.split('/').any(|c| c == ".." || c.is_empty()) {
                        return Err(format!(
                            "README.md:{at}: file {p:?} must be a relative path inside the scratch dir"
                        ));
                    }
                    Kind::File(p.to_string())
                } else {
                    return Err(format!("README.md:{at}: unknown marker {m:?} (skip: REASON | exit N | file PATH)"));
                }
            }
        };
        blocks.push(Block { line: open, kind, body });
    }
    if let Some((at, _)) = pending {
        return Err(format!("README.md:{at}: marker not followed by a fenced block"));
    }
    Ok(blocks)
}

#[test]
fn markers_are_parsed_strictly() {
    let md = "x\n```sh\necho a\n```\n<!-- readme-test: exit 2 -->\n```sh\nfalse\n```\n  <!-- readme-test: skip: needs root -->\n  ```sh\n  sudo x\n    y\n  ```\n<!-- readme-test: file a/b.toml -->\n```toml\nk = 1\n```\n```toml\nignored = 1\n```\n````\n```sh\nnot a block\n```\n````\n";
    let b = parse(md).unwrap();
    assert_eq!(
        b,
        [
            Block { line: 2, kind: Kind::Run(0), body: "echo a\n".into() },
            Block { line: 6, kind: Kind::Run(2), body: "false\n".into() },
            Block { line: 10, kind: Kind::Skip("needs root".into()), body: "sudo x\n  y\n".into() },
            Block { line: 15, kind: Kind::File("a/b.toml".into()), body: "k = 1\n".into() },
        ]
    );
    for bad in [
        "<!-- readme-test: skip: x -->\ntext\n```sh\n```\n",
        "<!-- readme-test: skip: -->\n```sh\n```\n",
        "<!-- readme-test: file x -->\n```sh\n```\n",
        "<!-- readme-test: exit 1 -->\n```toml\n```\n",
        "<!-- readme-test: file ../x -->\n```toml\n```\n",
        "<!-- readme-test: exit one -->\n```sh\n```\n",
        "<!-- readme-test: run -->\n```sh\n```\n",
        "<!-- readme-test skip -->\n```sh\n```\n",
        "```sh\nunclosed\n",
        "<!-- readme-test: exit 1 -->\n",
    ] {
        assert!(parse(bad).is_err(), "accepted: {bad:?}");
    }
}

/// The `kiln-firstboot` built beside `kiln` (a workspace run builds it; a run of
/// this package alone does not, so it is built here, into the same target dir).
fn firstboot_bin() -> PathBuf {
    let kiln = Path::new(env!("CARGO_BIN_EXE_kiln"));
    let fb = kiln.with_file_name("kiln-firstboot");
    if fb.is_file() {
        return fb;
    }
    let profile_dir = kiln.parent().unwrap();
    let mut target_dir = profile_dir.parent().unwrap();
    let mut c = Command::new(env!("CARGO"));
    c.args(["build", "--quiet", "--locked", "-p", "kiln-firstboot", "--bin", "kiln-firstboot"]);
    // target/<triple>/<profile>/kiln when built with --target.
    let parent = target_dir.file_name().unwrap().to_string_lossy().to_string();
    if parent.contains("-linux-") {
        c.arg("--target").arg(&parent);
        target_dir = target_dir.parent().unwrap();
    }
    let profile = match profile_dir.file_name().unwrap().to_string_lossy().as_ref() {
        "debug" => "dev".to_string(),
        p => p.to_string(),
    };
    c.arg("--profile").arg(profile).arg("--target-dir").arg(target_dir).current_dir(repo());
    eprintln!("building kiln-firstboot (not built beside {}): {c:?}", kiln.display());
    let st = c.status().expect("cargo");
    assert!(st.success() && fb.is_file(), "{c:?} did not build {}", fb.display());
    fb
}

/// The scratch directory the README's commands run in.
fn scratch() -> Scratch {
    let mut names: Vec<String> = fs::read_dir(repo().join("profiles"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str().and_then(|n| n.strip_suffix(".toml")).map(str::to_string))
        .collect();
    names.sort();
    let s = Scratch::new(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let mut xz = None;
    for name in &names {
        s.pin(name);
        // A card profile's base image: one Pi-like image at each one's upstream path.
        let p = Profile::load(&s.profile(name)).unwrap();
        let Some(base) = &p.doc.base_image else { continue };
        let base = base.get_ref();
        let xz = xz.get_or_insert_with(|| {
            fs::create_dir_all(s.path("pi")).unwrap();
            pi_image::xz(&pi_image::build(&s.path("pi")))
        });
        let url = expand_url(base.url.get_ref(), base.version.get_ref(), Arch::Arm64);
        let sha = standin::publish(s.mirror.root(), url_path(&url), xz, true);
        let text = fs::read_to_string(s.profile(name)).unwrap().replace(base.sha256.get_ref().as_str(), &sha);
        fs::write(s.profile(name), text).unwrap();
    }
    // "Upgrades" pins flatcar-1.34 to v1.34.3; "Adding a Kubernetes version"
    // pins its copy flatcar-1.35 to v1.35.0: kubeadm, kubelet and kubectl of
    // both, with their `.sha256` files.
    let p = Profile::load(&s.profile("flatcar-1.34")).unwrap();
    for version in NEW_VERSIONS {
        for arch in p.architectures() {
            for name in kiln::inputs::pin::KUBERNETES_ARTIFACTS {
                let url = expand_url(p.doc.artifacts[name].get_ref().url.get_ref(), version, arch);
                standin::publish(s.mirror.root(), url_path(&url), &new_version_standin(name, version, arch), false);
            }
        }
    }
    s
}

/// Versions the README's commands pin flatcar-1.34 (or its copy) to.
const NEW_VERSIONS: [&str; 2] = ["v1.34.3", "v1.35.0"];

fn new_version_standin(name: &str, version: &str, arch: Arch) -> Vec<u8> {
    standin_for(name, arch, version, &Install::File { name: name.to_string() })
}

/// Runs `script` with `bash -euo pipefail` in `cwd`; (exit code, stdout, stderr).
fn run_block(
    script: &Path,
    cwd: &Path,
    env: &[(&str, String)],
    out: &Path,
    timeout: Duration,
) -> (i32, String, String) {
    let (o, e) = (out.with_extension("stdout"), out.with_extension("stderr"));
    let mut c = Command::new("bash");
    c.args(["-euo", "pipefail"])
        .arg(script)
        .current_dir(cwd)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(fs::File::create(&o).unwrap())
        .stderr(fs::File::create(&e).unwrap())
        .process_group(0);
    let mut child = c.spawn().expect("spawn bash");
    let t0 = Instant::now();
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code().unwrap_or(-1);
        }
        if t0.elapsed() > timeout {
            // SAFETY: kill(2) on the block's own process group.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap()).to_string();
    (code, read(&o), read(&e))
}

#[test]
fn every_readme_command_block_exits_as_the_readme_says() {
    let t0 = Instant::now();
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let blocks = parse(&readme).unwrap_or_else(|e| panic!("{e}"));
    let s = scratch();
    let cwd = s.dir.path();
    eprintln!("scratch ready in {:.1} s: {}", t0.elapsed().as_secs_f64(), cwd.display());

    let bin = s.path(".readme-test/bin");
    let scripts = s.path(".readme-test/blocks");
    let home = s.path("home");
    let tmp = s.path(".readme-test/tmp");
    for d in [&bin, &scripts, &home, &tmp] {
        fs::create_dir_all(d).unwrap();
    }
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kiln"), bin.join("kiln")).unwrap();
    std::os::unix::fs::symlink(firstboot_bin(), bin.join("kiln-firstboot")).unwrap();
    let env: Vec<(&str, String)> = vec![
        ("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())),
        ("HOME", home.display().to_string()),
        ("XDG_CACHE_HOME", home.join(".cache").display().to_string()),
        ("TMPDIR", tmp.display().to_string()),
        ("LC_ALL", "C.UTF-8".to_string()),
        ("KILN_MIRROR", s.mirror.url().to_string()),
        ("KILN_FIRSTBOOT_BIN", format!("arm64={}", s.path("firstboot/kiln-firstboot-arm64").display())),
    ];

    for b in &blocks {
        if let Kind::File(p) = &b.kind {
            let path = cwd.join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &b.body).unwrap();
            eprintln!("README.md:{}: written to {p}", b.line);
        }
    }

    let mut failed = Vec::new();
    let mut ran = 0;
    for b in &blocks {
        let want = match &b.kind {
            Kind::Run(n) => *n,
            Kind::Skip(why) => {
                eprintln!("README.md:{}: skipped: {why}", b.line);
                continue;
            }
            Kind::File(_) => continue,
        };
        let script = scripts.join(format!("README.md-line-{}.sh", b.line));
        fs::write(&script, &b.body).unwrap();
        let t = Instant::now();
        let (code, out, err) = run_block(&script, cwd, &env, &script, Duration::from_secs(600));
        ran += 1;
        let secs = t.elapsed().as_secs_f64();
        if code == want {
            eprintln!("README.md:{}: exit {code} as the README says ({secs:.1} s)", b.line);
        } else {
            let how = if code == -1 { "was killed (timeout or signal)".to_string() } else { format!("exited {code}") };
            eprintln!(
                "README.md:{}: {how}, the README says {want} ({secs:.1} s)\n--- block ---\n{}--- stdout ---\n{out}--- stderr ---\n{err}---",
                b.line, b.body
            );
            failed.push(format!("README.md:{}: {how}, the README says {want}", b.line));
        }
    }
    eprintln!("{ran} block(s) run in {:.1} s", t0.elapsed().as_secs_f64());
    assert!(ran > 0, "no command block found in README.md");
    assert!(
        s.mirror.log().iter().any(|(m, _, _)| m == "GET"),
        "nothing was fetched from the loopback mirror: KILN_MIRROR was not used"
    );
    // The pins the README's `kiln pin` commands wrote are the loopback stand-ins'
    // (read through KILN_MIRROR), not upstream's.
    for (profile, version) in [("flatcar-1.34", "v1.34.3"), ("flatcar-1.35", "v1.35.0")] {
        let Ok(p) = Profile::load(&s.profile(profile)) else {
            failed.push(format!("profiles/{profile}.toml is missing or does not load"));
            continue;
        };
        let want = standin::sha256(&new_version_standin("kubelet", version, Arch::Amd64));
        let got = p.artifacts_for(Arch::Amd64).ok().and_then(|a| a.into_iter().find(|a| a.name == "kubelet"));
        if got.as_ref().map(|a| (a.version.as_str(), a.sha256.as_str())) != Some((version, want.as_str())) {
            failed.push(format!("profiles/{profile}.toml: kubelet is not pinned to the {version} stand-in: {got:?}"));
        }
    }
    assert!(failed.is_empty(), "README command blocks that did not exit as the README says:\n{}", failed.join("\n"));
}

/// The README's first block gives the test command, and `.ci/run` runs that
/// same command (so CI and a newcomer run one suite).
#[test]
fn ci_runs_the_test_command_the_readme_gives_first() {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let first = parse(&readme).unwrap_or_else(|e| panic!("{e}")).into_iter().next().expect("a block in README.md");
    assert!(first.line <= 5, "the README's first block is at line {}, not in its first lines", first.line);
    let test_cmd = first.body.lines().nth(1).and_then(|l| l.split_whitespace().next()).unwrap_or("");
    assert_eq!(test_cmd, "./scripts/test", "the README's second command:\n{}", first.body);
    let ci = fs::read_to_string(repo().join(".ci/run")).unwrap();
    let ran: Vec<&str> = ci.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert!(ran.contains(&"exec ./scripts/test"), ".ci/run does not exec ./scripts/test:\n{ci}");
}
