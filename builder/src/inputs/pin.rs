//! `kiln pin`: rewrite a profile's pins from upstream checksum files.
//!
//! dl.k8s.io publishes `<file>.sha256` holding only the hash; CNI and
//! cri-tools publish `hash  filename`. Either way the first token is taken and
//! must be 64 hex digits. The profile is edited in place with `toml_edit`, so
//! comments and layout survive, and is replaced atomically only when every
//! checksum was fetched. Review the printed diff before committing it.
//!
//! `[base_image]` (a Raspberry Pi card's OS image) is re-pinned with
//! `--base-image` or `--base-image-version VERSION`, and whenever its sha256 is
//! a placeholder, from the publisher's checksum file: `URL.sha256` (Raspberry
//! Pi OS: `HASH  FILE`) or, failing that, `SHA256SUMS` in the image's
//! directory (Ubuntu: lines `HASH *FILE`), the line naming the image's file.
//!
//! The profile's `images` are resolved to their image index digests
//! ([`crate::inputs::image_pin`]).
//!
//! Sizes are pinned too (`size.<arch>`), from the `Content-Length` of a `HEAD`
//! request for the artifact (or the file's size for `file://`): a download
//! stops at its pinned size. A server that does not tell the size leaves the
//! artifact without one (the build then applies its 2 GiB cap).

use crate::error::{Error, IoContext, Result};
use crate::hash::is_sha256_hex;
use crate::inputs::fetch::{self, FetchOptions};
use crate::inputs::profile::{expand_url, Arch, Profile};
use crate::progress::Progress;
use std::path::Path;
use toml_edit::{DocumentMut, Item, Value};

/// Artifacts whose version follows `--version` (the Kubernetes release itself).
pub const KUBERNETES_ARTIFACTS: [&str; 3] = ["kubeadm", "kubelet", "kubectl"];

/// Options for `kiln pin`.
#[derive(Debug, Clone, Default)]
pub struct PinOptions {
    /// New Kubernetes version for the profile and its kubeadm/kubelet/kubectl.
    pub version: Option<String>,
    /// Read checksum files from this base URL (same paths as upstream) instead.
    pub base_url: Option<String>,
    /// Re-pin `[base_image]` at its version too.
    pub base_image: bool,
    /// Move `[base_image]` to this version (and re-pin it).
    pub base_image_version: Option<String>,
    /// Print the diff without writing.
    pub dry_run: bool,
    /// Resolve this CNI manifest's images into `[cni_images]` ([`crate::inputs::oci`]).
    pub cni_manifest: Option<std::path::PathBuf>,
    /// Retry and timeout policy.
    pub fetch: FetchOptions,
    /// Resolve `images` through this registry (distribution API) instead of their own.
    pub registry_mirror: Option<String>,
}

/// Replaces a value, keeping its surrounding whitespace and comments.
fn set_value(item: &mut Item, v: &str) {
    match item.as_value_mut() {
        Some(val) => {
            let decor = val.decor().clone();
            *val = Value::from(v);
            *val.decor_mut() = decor;
        }
        None => *item = toml_edit::value(v),
    }
}

/// Sets (or, with `None`, removes) `size.<arch>` in an artifact table,
/// written as a dotted key next to `sha256.<arch>`.
fn set_size(artifact: &mut Item, arch: &str, size: Option<u64>) {
    let Some(table) = artifact.as_table_like_mut() else { return };
    let Some(n) = size.and_then(|n| i64::try_from(n).ok()) else {
        if let Some(sizes) = table.get_mut("size").and_then(|i| i.as_table_like_mut()) {
            sizes.remove(arch);
        }
        if table.get("size").and_then(|i| i.as_table_like()).is_some_and(|t| t.is_empty()) {
            table.remove("size");
        }
        return;
    };
    if table.get("size").and_then(|i| i.as_table_like()).is_none() {
        let mut sizes = toml_edit::Table::new();
        sizes.set_dotted(true);
        table.insert("size", Item::Table(sizes));
    }
    if let Some(sizes) = table.get_mut("size").and_then(|i| i.as_table_like_mut()) {
        match sizes.get_mut(arch).and_then(|i| i.as_value_mut()) {
            Some(val) => {
                let decor = val.decor().clone();
                *val = Value::from(n);
                *val.decor_mut() = decor;
            }
            None => {
                sizes.insert(arch, toml_edit::value(n));
            }
        }
    }
}

/// Parses a `.sha256` file: the first whitespace-separated token.
pub fn parse_checksum_file(text: &str) -> Option<String> {
    let tok = text.split_whitespace().next()?;
    is_sha256_hex(tok).then(|| tok.to_ascii_lowercase())
}

/// Finds `file`'s hash in a `SHA256SUMS` text (`HASH  FILE` or `HASH *FILE`
/// lines, as sha256sum writes them in text or binary mode).
pub fn parse_sums_file(text: &str, file: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (hash, name) = line.trim_end().split_once(' ')?;
        let name = name.strip_prefix(['*', ' ']).unwrap_or(name);
        (name == file && is_sha256_hex(hash)).then(|| hash.to_ascii_lowercase())
    })
}

/// The base image's sha256 from its publisher: `URL.sha256` (whose file name,
/// when it gives one, must be the image's), else `SHA256SUMS` beside it.
/// A failure names every URL tried and why.
fn base_image_checksum(opts: &PinOptions, agent: &ureq::Agent, url: &str) -> Result<String> {
    let rebase = |u: String| match &opts.base_url {
        Some(base) => crate::mirror_path::rebase_url(base, &u),
        None => u,
    };
    let (dir, file) = url.rsplit_once('/').unwrap_or(("", url));
    let mut tried = Vec::new();
    let single = rebase(format!("{url}.sha256"));
    match fetch::fetch_text(&opts.fetch, agent, &single) {
        Ok(text) => {
            let named = text.split_whitespace().nth(1).map(|n| n.trim_start_matches('*'));
            match parse_checksum_file(&text) {
                Some(sha) if named.is_none_or(|n| n == file) => return Ok(sha),
                Some(_) => tried.push(format!("{single}: names {}, not {file}", named.unwrap_or_default())),
                None => tried.push(format!("{single}: does not start with a sha256 (64 hex digits)")),
            }
        }
        Err(e) => tried.push(e.message),
    }
    let sums = rebase(format!("{dir}/SHA256SUMS"));
    match fetch::fetch_text(&opts.fetch, agent, &sums) {
        Ok(text) => match parse_sums_file(&text, file) {
            Some(sha) => return Ok(sha),
            None => tried.push(format!("{sums}: no line `HASH *{file}`")),
        },
        Err(e) => tried.push(e.message),
    }
    Err(Error::build(format!(
        "no published sha256 for the base image {file}:\n  {}\nis the version published? Otherwise copy the sha256 from the publisher's download page into [base_image] sha256",
        tried.join("\n  ")
    )))
}

/// Re-pins `[base_image]` in `doc` when asked to or when its sha256 is a
/// placeholder; refuses the flags for a profile without one.
fn pin_base_image(
    profile: &Profile,
    doc: &mut DocumentMut,
    opts: &PinOptions,
    agent: &ureq::Agent,
    progress: &Progress,
) -> Result<()> {
    let Some(base) = &profile.doc.base_image else {
        if opts.base_image || opts.base_image_version.is_some() {
            return Err(Error::config(format!(
                "{}: --base-image/--base-image-version: the profile has no [base_image] (only card profiles do)",
                profile.path.display()
            )));
        }
        return Ok(());
    };
    let base = base.get_ref();
    let placeholder = !is_sha256_hex(base.sha256.get_ref());
    if !(opts.base_image || opts.base_image_version.is_some() || placeholder) {
        return Ok(());
    }
    let mut version = base.version.get_ref().clone();
    if let Some(v) = &opts.base_image_version {
        crate::inputs::validate::artifact_version(v)
            .map_err(|m| Error::config(format!("--base-image-version: {m}")))?;
        if *v != version {
            set_value(&mut doc["base_image"]["version"], v);
            if let Some(t) = doc["base_image"].as_table_like_mut() {
                if t.remove("image_sha256").is_some() {
                    progress.warn(format!(
                        "{}: base_image.image_sha256 removed: it was the hash of the {version} image; add the new one if the publisher gives it",
                        profile.path.display()
                    ));
                }
            }
            version = v.clone();
        }
    }
    let arch = profile.architectures().first().copied().unwrap_or(Arch::Arm64);
    let url = expand_url(base.url.get_ref(), &version, arch);
    let sha = base_image_checksum(opts, agent, &url).map_err(|e| e.context(format!("pinning base_image {version}")))?;
    progress.detail(format!("base_image {version}: {sha}"));
    set_value(&mut doc["base_image"]["sha256"], &sha);
    Ok(())
}

/// A minimal line diff (common prefix and suffix trimmed) for review.
pub fn diff(path: &Path, old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    if a == b {
        return String::new();
    }
    let mut out = format!("--- {0}\n+++ {0}\n", path.display());
    let mut i = 0;
    let mut j = 0;
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
            continue;
        }
        // Find the next line where both sides agree again.
        let resync = (i..a.len())
            .flat_map(|x| (j..b.len()).map(move |y| (x, y)))
            .filter(|&(x, y)| a[x] == b[y])
            .min_by_key(|&(x, y)| (x - i) + (y - j));
        let (x, y) = resync.unwrap_or((a.len(), b.len()));
        out.push_str(&format!("@@ line {} @@\n", i + 1));
        for l in &a[i..x] {
            out.push_str(&format!("-{l}\n"));
        }
        for l in &b[j..y] {
            out.push_str(&format!("+{l}\n"));
        }
        i = x;
        j = y;
    }
    out
}

/// Re-pins one profile. Returns the diff (empty when nothing changed).
pub fn pin(path: &Path, opts: &PinOptions, progress: &Progress) -> Result<String> {
    let profile = Profile::load(path)?;
    let mut doc: DocumentMut = profile.text.parse().map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
    if let Some(v) = &opts.version {
        let parsed = crate::inputs::version::kubernetes(v).map_err(|m| Error::config(format!("--version: {m}")))?;
        let v = parsed.to_string();
        set_value(&mut doc["kubernetes_version"], &v);
        for name in KUBERNETES_ARTIFACTS {
            if profile.doc.artifacts.contains_key(name) {
                set_value(&mut doc["artifacts"][name]["version"], &v);
            }
        }
    }
    let agent = fetch::agent(opts.fetch.timeout);
    if let Some(m) = &opts.cni_manifest {
        for line in crate::inputs::oci::pin_manifest(&mut doc, m, &agent)? {
            progress.detail(line);
        }
    }
    // Every checksum is tried; the error names each one that failed.
    let mut failed: Vec<Error> = Vec::new();
    if let Err(e) = pin_base_image(&profile, &mut doc, opts, &agent, progress) {
        if e.kind == crate::error::Kind::Config {
            return Err(e);
        }
        failed.push(e);
    }
    let archs: Vec<Arch> = profile.architectures();
    let names: Vec<String> = profile.doc.artifacts.keys().cloned().collect();
    for name in names {
        let version = doc["artifacts"][&name]["version"].as_str().unwrap_or_default().to_string();
        let template = doc["artifacts"][&name]["url"].as_str().unwrap_or_default().to_string();
        let mut targets: Vec<Arch> = archs.clone();
        for k in profile.doc.artifacts[&name].get_ref().sha256.get_ref().keys() {
            if !targets.contains(k.get_ref()) {
                targets.push(*k.get_ref());
            }
        }
        for arch in targets {
            let url = format!("{}.sha256", expand_url(&template, &version, arch));
            let url = match &opts.base_url {
                Some(base) => crate::mirror_path::rebase_url(base, &url),
                None => url,
            };
            let pinned = fetch::fetch_text(&opts.fetch, &agent, &url).and_then(|text| {
                parse_checksum_file(&text).ok_or_else(|| {
                    Error::build(format!("{url} does not start with a sha256 (64 hex digits); is it a checksum file?"))
                })
            });
            let sha = match pinned {
                Ok(sha) => sha,
                Err(e) => {
                    failed.push(e.context(format!("pinning {name} {version} ({arch})")));
                    continue;
                }
            };
            progress.detail(format!("{name} {version} ({arch}): {sha}"));
            set_value(&mut doc["artifacts"][&name]["sha256"][arch.as_str()], &sha);
            let artifact_url = url.strip_suffix(".sha256").unwrap_or(&url);
            let size = match fetch::fetch_size(&opts.fetch, &agent, artifact_url) {
                Ok(size) => size,
                Err(e) => {
                    failed.push(e.context(format!("pinning the size of {name} {version} ({arch})")));
                    continue;
                }
            };
            if size.is_none() {
                progress.warn(format!(
                    "{name} {version} ({arch}): {artifact_url} does not tell its size; no size pinned (downloads are capped at {} bytes)",
                    fetch::MAX_DOWNLOAD
                ));
            }
            set_size(&mut doc["artifacts"][&name], arch.as_str(), size);
        }
    }
    if let Err(e) = pin_images(&profile, &mut doc, opts, &agent, progress) {
        if e.kind == crate::error::Kind::Config {
            return Err(e);
        }
        failed.push(e);
    }
    match pin_cni_manifest(&profile, &mut doc, opts, &agent, progress) {
        // Row 43: the images `kiln check` holds against the architectures are
        // the applied manifest's own (`--cni-manifest` names another one instead).
        Ok(Some(text)) if opts.cni_manifest.is_none() => {
            match crate::inputs::oci::pin_images(&mut doc, &text, &agent) {
                Ok(lines) => lines.into_iter().for_each(|l| progress.detail(l)),
                Err(e) => failed.push(e.context("resolving the images of [cni_manifest]")),
            }
        }
        Ok(_) => {}
        Err(e) => failed.push(e.context("pinning [cni_manifest]")),
    }
    if let Some(first) = failed.first() {
        let kind = first.kind;
        let lines: Vec<String> = failed.iter().map(|e| e.message.clone()).collect();
        return Err(Error {
            kind,
            message: format!(
                "{} of the profile's checksums could not be pinned; {} is unchanged:\n{}",
                lines.len(),
                path.display(),
                lines.join("\n")
            ),
        });
    }
    let new_text = doc.to_string();
    // The edited profile must still load and pass the same strict parser.
    Profile::parse(path, new_text.clone()).map_err(|e| e.context("the re-pinned profile does not parse (kiln bug)"))?;
    let d = diff(path, &profile.text, &new_text);
    if !opts.dry_run && new_text != profile.text {
        // 0666 narrowed by the umask: the mode `fs::write` gives.
        crate::io::write_atomic(path, new_text.as_bytes(), 0o666)?;
    }
    Ok(d)
}

/// The profile's `images`, resolved as `opts` say ([`crate::inputs::image_pin`]).
fn pin_images(
    profile: &Profile,
    doc: &mut DocumentMut,
    opts: &PinOptions,
    agent: &ureq::Agent,
    progress: &Progress,
) -> Result<()> {
    let resolve = crate::inputs::image_pin::Resolve {
        version: opts.version.as_deref(),
        base_url: opts.base_url.as_deref(),
        registry_mirror: opts.registry_mirror.as_deref(),
        fetch: &opts.fetch,
        agent,
    };
    crate::inputs::image_pin::pin_images(profile, doc, &resolve, progress)
}

/// `[cni_manifest]`'s sha256 from the manifest itself (no upstream publishes a
/// checksum file for one): a `path` is hashed, a `url` downloaded (through
/// `--base-url` when given) and hashed, its size pinned too; either way at most
/// [`crate::inputs::profile::CNI_MANIFEST_MAX`] bytes.
/// Returns the manifest's text (`None` without a `[cni_manifest]`).
fn pin_cni_manifest(
    profile: &Profile,
    doc: &mut DocumentMut,
    opts: &PinOptions,
    agent: &ureq::Agent,
    progress: &Progress,
) -> Result<Option<String>> {
    let Some(spec) = &profile.doc.cni_manifest else { return Ok(None) };
    let spec = spec.get_ref();
    let (sha, size, text) = if let Some(file) = profile.cni_manifest_file() {
        use std::io::Read;
        let mut bytes = Vec::new();
        crate::io::open_regular(&file)
            .and_then(|f| f.take(crate::inputs::profile::CNI_MANIFEST_MAX + 1).read_to_end(&mut bytes))
            .io_ctx(file.display())?;
        if bytes.len() as u64 > crate::inputs::profile::CNI_MANIFEST_MAX {
            return Err(Error::config(format!(
                "{}: larger than {} bytes; is it a CNI manifest?",
                file.display(),
                crate::inputs::profile::CNI_MANIFEST_MAX
            )));
        }
        (crate::hash::sha256_hex(&bytes), None, String::from_utf8_lossy(&bytes).into_owned())
    } else if let Some(url) = &spec.url {
        let url = match &opts.base_url {
            Some(base) => crate::mirror_path::rebase_url(base, url.get_ref()),
            None => url.get_ref().clone(),
        };
        let text = fetch::fetch_text_up_to(
            &opts.fetch,
            agent,
            &url,
            crate::inputs::profile::CNI_MANIFEST_MAX,
            "a CNI manifest",
        )?;
        (crate::hash::sha256_hex(text.as_bytes()), Some(text.len() as u64), text)
    } else {
        return Ok(None);
    };
    progress.detail(format!("cni_manifest: {sha}"));
    set_value(&mut doc["cni_manifest"]["sha256"], &sha);
    if let Some(n) = size {
        doc["cni_manifest"]["size"] = toml_edit::value(n as i64);
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_files_of_both_shapes() {
        let h = "ab3bda535f9d90766cccc90d3dddb5482003dd744d7f22bcf98186bf8eea8be6";
        assert_eq!(parse_checksum_file(&format!("{h}\n")).as_deref(), Some(h));
        assert_eq!(parse_checksum_file(&format!("{h}  cni-plugins-linux-amd64-v1.8.0.tgz\n")).as_deref(), Some(h));
        assert_eq!(parse_checksum_file("<html>Not Found</html>"), None);
    }

    #[test]
    fn diff_shows_changed_lines() {
        let d = diff(Path::new("p.toml"), "a\nb\nc\n", "a\nB\nc\n");
        assert!(d.contains("-b\n+B\n"), "{d}");
        assert_eq!(diff(Path::new("p"), "x\n", "x\n"), "");
    }

    #[test]
    fn sizes_are_dotted_keys_beside_the_checksums() {
        let mut doc: DocumentMut = "[artifacts.kubelet]\nversion = \"v1\"\nsha256.amd64 = \"x\"\n".parse().unwrap();
        set_size(&mut doc["artifacts"]["kubelet"], "amd64", Some(42));
        assert_eq!(doc.to_string(), "[artifacts.kubelet]\nversion = \"v1\"\nsha256.amd64 = \"x\"\nsize.amd64 = 42\n");
        set_size(&mut doc["artifacts"]["kubelet"], "amd64", Some(43));
        assert!(doc.to_string().contains("size.amd64 = 43\n"), "{doc}");
        set_size(&mut doc["artifacts"]["kubelet"], "amd64", None);
        assert!(!doc.to_string().contains("size"), "{doc}");
    }

    #[test]
    fn set_value_keeps_comments() {
        let mut doc: DocumentMut = "v = \"1\" # keep me\n".parse().unwrap();
        set_value(&mut doc["v"], "2");
        assert_eq!(doc.to_string(), "v = \"2\" # keep me\n");
    }
}
