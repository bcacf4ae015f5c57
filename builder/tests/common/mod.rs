//! Helpers for kiln's integration tests: a scratch copy of the repository's
//! profiles and overlays, a loopback mirror holding stand-in artifacts for
//! them, and a way to run the real `kiln` binary.
#![allow(dead_code)]

use kiln::inputs::profile::{Arch, Install, Profile};
use kiln::mirror_path::url_path;
use kiln_testkit::mirror::Mirror;
use kiln_testkit::standin;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (profiles/, overlays/).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A `kiln` command with a clean environment for reproducibility.
pub fn kiln() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.env_remove("SOURCE_DATE_EPOCH").env("CI", "1");
    c
}

/// Runs a command and returns its output.
pub fn run(c: &mut Command) -> Output {
    c.output().expect("spawn kiln")
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Copies profiles/ and overlays/ into `dst` (symlinks kept).
pub fn copy_repo(dst: &Path) {
    for d in ["profiles", "overlays"] {
        let st = Command::new("cp").arg("-a").arg(repo().join(d)).arg(dst).status().expect("cp");
        assert!(st.success());
    }
}

/// Stand-in sizes (bytes): "tens of MB" for the big three, like upstream.
pub const KUBELET_SIZE: usize = 24 << 20;
pub const KUBEADM_SIZE: usize = 12 << 20;
pub const KUBECTL_SIZE: usize = 10 << 20;
pub const CRICTL_SIZE: usize = 8 << 20;
pub const CNI_PLUGINS: [&str; 8] =
    ["bridge", "host-local", "loopback", "portmap", "bandwidth", "firewall", "tuning", "vlan"];
pub const CNI_SIZE: usize = 2 << 20;

fn seed(name: &str, arch: Arch, version: &str) -> u64 {
    let h = standin::sha256(format!("{name}/{arch}/{version}").as_bytes());
    u64::from_str_radix(&h[..16], 16).unwrap()
}

/// Stand-in bytes for one artifact download.
pub fn standin_for(name: &str, arch: Arch, version: &str, install: &Install) -> Vec<u8> {
    let s = seed(name, arch, version);
    match install {
        Install::File { .. } => {
            let len = match name {
                "kubelet" => KUBELET_SIZE,
                "kubeadm" => KUBEADM_SIZE,
                "kubectl" => KUBECTL_SIZE,
                _ => 1 << 20,
            };
            standin::elf(arch.elf_machine(), len, s)
        }
        Install::Extract { .. } if name == "crictl" => {
            standin::tgz(&[("crictl", standin::elf(arch.elf_machine(), CRICTL_SIZE, s))])
        }
        Install::Extract { .. } => {
            // As the CNI plugins' release tarball: the plugins 0755, LICENSE and README.md 0644.
            let mut members: Vec<(&str, Vec<u8>, u32)> = CNI_PLUGINS
                .iter()
                .enumerate()
                .map(|(i, p)| (*p, standin::elf(arch.elf_machine(), CNI_SIZE, s + i as u64), 0o755))
                .collect();
            members.push(("LICENSE", b"Apache License 2.0 (stand-in)\n".to_vec(), 0o644));
            members.push(("README.md", b"# Plugins (stand-in)\n".to_vec(), 0o644));
            standin::tgz_with_modes(&members)
        }
    }
}

/// Publishes stand-ins for every artifact of `profile` under `root` (mirror layout).
pub fn populate(profile: &Profile, root: &Path) {
    for arch in profile.architectures() {
        for (name, spec) in &profile.doc.artifacts {
            let spec = spec.get_ref();
            let version = spec.version.get_ref();
            let url = kiln::inputs::profile::expand_url(spec.url.get_ref(), version, arch);
            let install = match &spec.extract {
                Some(_) => Install::Extract { members: None },
                None => Install::File { name: name.clone() },
            };
            let path = url_path(&url).to_string();
            if root.join(path.trim_start_matches('/')).exists() {
                continue;
            }
            let data = standin_for(name, arch, version, &install);
            standin::publish(root, &path, &data, name == "cni-plugins");
        }
    }
}

/// A scratch workspace: repo copy, mirror dir served on loopback, cache and out dirs.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub mirror: Mirror,
}

impl Scratch {
    /// Copies the repo, publishes stand-ins for `profiles` and starts the mirror.
    pub fn new(profiles: &[&str]) -> Scratch {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_repo(dir.path());
        let mroot = dir.path().join("mirror");
        std::fs::create_dir_all(&mroot).unwrap();
        for name in profiles {
            let p = Profile::load(&dir.path().join("profiles").join(format!("{name}.toml"))).expect("profile");
            populate(&p, &mroot);
        }
        let fb = dir.path().join("firstboot");
        std::fs::create_dir_all(&fb).unwrap();
        for arch in [Arch::Amd64, Arch::Arm64] {
            std::fs::write(fb.join(format!("kiln-firstboot-{arch}")), standin::elf(arch.elf_machine(), 1 << 20, 7))
                .unwrap();
        }
        let mirror = Mirror::serve(&mroot);
        Scratch { dir, mirror }
    }

    /// Path inside the scratch dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The scratch copy of a shipped profile.
    pub fn profile(&self, name: &str) -> PathBuf {
        self.path(&format!("profiles/{name}.toml"))
    }

    /// The scratch copy of profile `name` with `images = [...]` (one entry per
    /// line, under a `# The cluster's images.` comment) before its first table,
    /// in place of the list it had.
    pub fn with_images(&self, name: &str, entries: &[String]) -> PathBuf {
        let path = self.profile(name);
        let mut text = std::fs::read_to_string(&path).unwrap();
        if let Some(start) = text.find("# The cluster's images.\n") {
            let end = start + text[start..].find("]\n\n").unwrap() + 3;
            text.replace_range(start..end, "");
        }
        let at = text.find("\n[").unwrap() + 1;
        let list: String = entries.iter().map(|e| format!("  {e:?},\n")).collect();
        let new = format!("{}# The cluster's images.\nimages = [\n{list}]\n\n{}", &text[..at], &text[at..]);
        std::fs::write(&path, new).unwrap();
        path
    }

    /// `kiln pin --profile P --base-url MIRROR`; panics on failure.
    pub fn pin(&self, name: &str) -> Output {
        let o =
            run(kiln().arg("pin").arg("--profile").arg(self.profile(name)).arg("--base-url").arg(self.mirror.url()));
        assert!(o.status.success(), "pin {name}: {}", stderr(&o));
        o
    }

    /// `--firstboot-bin` arguments for both architectures.
    pub fn firstboot_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        for arch in ["amd64", "arm64"] {
            v.push("--firstboot-bin".to_string());
            v.push(format!("{arch}={}", self.path(&format!("firstboot/kiln-firstboot-{arch}")).display()));
        }
        v
    }

    /// A `kiln build --format tar` of a scratch profile through the mirror URL
    /// (the tarball is what most tests read; add `--format`s for more).
    pub fn build_cmd(&self, name: &str, cache: &str, out: &str) -> Command {
        let mut c = self.build_cmd_bare(name, cache, out);
        c.args(["--format", "tar"]);
        c
    }

    /// A `kiln build` of a scratch profile through the mirror URL, building
    /// the profile's own `formats` unless the test adds `--format`s.
    pub fn build_cmd_bare(&self, name: &str, cache: &str, out: &str) -> Command {
        self.build_cmd_path(&self.profile(name), cache, out)
    }

    /// [`Scratch::build_cmd_bare`] of a profile file anywhere (a copy, a variant written by the test).
    pub fn build_cmd_path(&self, profile: &Path, cache: &str, out: &str) -> Command {
        let mut c = self.build_cmd_upstream(&[profile], cache, out);
        c.arg("--mirror").arg(self.mirror.url());
        c
    }

    /// `kiln build PROFILE… --cache CACHE --out OUT` with the stand-in
    /// `--firstboot-bin`s and no `--mirror` (it fetches from the profiles' own
    /// URLs): the spelling every scratch build shares; the test adds
    /// `--mirror DIR|URL`, `--offline`, `--format`s.
    pub fn build_cmd_upstream(&self, profiles: &[&Path], cache: &str, out: &str) -> Command {
        let mut c = kiln();
        c.arg("build")
            .args(profiles)
            .arg("--cache")
            .arg(self.path(cache))
            .arg("--out")
            .arg(self.path(out))
            .args(self.firstboot_args());
        c
    }
}

/// The manifest record of `path` in `profile`'s `arch` tree of `dir/manifest.json`.
pub fn manifest_entry(dir: &Path, profile: &str, arch: &str, path: &str) -> serde_json::Value {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).expect("manifest.json"))
            .expect("manifest.json is JSON");
    m["profiles"][profile]["trees"][arch]
        .as_array()
        .and_then(|t| t.iter().find(|f| f["path"] == path).cloned())
        .unwrap_or_else(|| panic!("{path} not in the {profile} {arch} tree"))
}

/// Files in a directory (recursive, relative), sorted; empty if it does not exist.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}
