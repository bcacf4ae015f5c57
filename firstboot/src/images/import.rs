//! The `import-images` step: the image's archive into containerd, every baked
//! image then checked against its pinned digest; and what `plan` and `doctor` say
//! about the baked images.

use super::ctr::{ready, Ctr, Held, Source};
use super::subset::Subset;
use super::{pins, runs_on, Pin, NAMESPACE, PINNED_LABEL};
use crate::files;
use crate::machine::Machine;
use crate::preflight::{Check, Level};
use crate::resolve::Resolved;
use crate::runner::run_bounded_apart;
use crate::tools::which;
use crate::validate::kubeadm::humanize;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// The import's bound: [`BASE`] plus a second per [`RATE`] bytes of the archive.
const BASE: Duration = Duration::from_secs(120);

/// The slowest storage kiln boots from (an SD card writes a few MiB/s) stores each
/// byte twice, in the content store and unpacked: 2 MiB of archive a second.
const RATE: u64 = 2 << 20;

/// The bound on `ctr images import` of an archive of `bytes`.
pub fn bound(bytes: u64) -> Duration {
    BASE + Duration::from_secs(bytes / RATE)
}

/// The baked images, or none; the list is checked when the node resolves.
fn baked(r: &Resolved) -> Vec<Pin> {
    pins(&r.image.images).unwrap_or_default()
}

/// Of `all`, the images this node runs ([`runs_on`]): a worker leaves the
/// control-plane ones in the archive.
fn needed(all: &[Pin], r: &Resolved) -> Vec<Pin> {
    all.iter().filter(|p| runs_on(&p.reference, r.kubeadm.role)).cloned().collect()
}

/// What a worker leaves in the archive, for its log line (empty when nothing is left).
fn left_out(all: usize, needed: usize) -> String {
    match all - needed {
        0 => String::new(),
        n => format!("; {n} control-plane images left in the archive (a worker runs none)"),
    }
}

/// The archive's path on the node, when the image carries images.
fn archive(r: &Resolved) -> Option<&str> {
    r.image.images_archive.as_deref().filter(|_| !r.image.images.is_empty())
}

/// `Some(line)`: the image carries images, and `import-images` does this.
pub fn plan_line(r: &Resolved) -> Option<String> {
    let archive = archive(r)?;
    let all = baked(r);
    let pins = needed(&all, r);
    let names: Vec<&str> = pins.iter().map(|p| p.reference.as_str()).collect();
    let what = if pins.len() == all.len() {
        archive.to_string()
    } else {
        format!("- (the part of {archive} these images need)")
    };
    Some(format!(
        "ctr -n {NAMESPACE} images import --label {PINNED_LABEL} {what} ({} images: {}{}), unless each is present with its pinned digest; then each checked against its digest; bounded by {} plus 1 s per 2 MiB imported",
        pins.len(),
        names.join(", "),
        left_out(all.len(), pins.len()),
        humanize(BASE)
    ))
}

/// The step: `Ok` with what was done (a line for the journal), or why it failed and
/// what to do (every line starts `import-images:`, which `diagnose` recognises).
pub fn import(m: &Machine, r: &Resolved) -> Result<String, String> {
    let all = pins(&r.image.images).map_err(|e| format!("import-images: {e}"))?;
    let pins = needed(&all, r);
    let archive = archive(r)
        .ok_or("import-images: image.toml lists images but no images_archive; rebuild the image with `kiln build`")?;
    let ctr = Ctr::find(m, r).map_err(|e| format!("import-images: {e}"))?;
    let before = ctr.held(&pins).map_err(|e| format!("import-images: asking containerd which images it holds: {e}; is containerd running (`systemctl status containerd`)?"))?;
    if pins.iter().all(|p| ready(&before, p)) {
        return Ok(format!(
            "all {} images are in containerd ({NAMESPACE}) with their pinned digests, unpacked and pinned: nothing imported",
            pins.len()
        ));
    }
    let path = files::resolve(&m.root, archive).map_err(|e| format!("import-images: {archive}: {e}"))?;
    let size = std::fs::metadata(&path)
        .ok()
        .filter(|md| md.is_file())
        .map(|md| md.len())
        .ok_or_else(|| format!("import-images: {archive} is missing or not a file: the image's baked images are gone; rebuild or reinstall the image (`kiln build`)"))?;
    let started = Instant::now();
    let damaged = |e: String| {
        format!("import-images: ctr could not import {archive} ({}): {e}; the archive is damaged or incomplete: reinstall the image (`kiln build` writes it again, byte for byte), then `kiln-firstboot run`", mib(size))
    };
    let imported = if pins.len() == all.len() {
        ctr.import(Source::File(&path), &r.image.arch, bound(size)).map_err(damaged)?;
        size
    } else {
        // Only what this node runs: the archive's part for these images, streamed.
        let keep = pins.iter().flat_map(|p| [p.reference.clone(), p.digest_reference()]).collect();
        let part = Subset::plan(&path, &keep).map_err(damaged)?;
        let bytes = part.bytes;
        ctr.import(Source::Stdin(Box::new(move |w| part.write(w))), &r.image.arch, bound(bytes)).map_err(damaged)?;
        bytes
    };
    let held = ctr.held(&pins).map_err(|e| format!("import-images: after the import: {e}"))?;
    // The digest reference, where the archive names an image only by its tag.
    for p in pins.iter().filter(|p| held.get(&p.reference).is_some_and(|h| h.digest == p.digest)) {
        if !held.contains_key(&p.digest_reference()) {
            ctr.tag(&p.reference, &p.digest_reference()).map_err(|e| format!("import-images: {e}"))?;
        }
    }
    let took = started.elapsed();
    let after = ctr.held(&pins).map_err(|e| format!("import-images: after the import: {e}"))?;
    let wrong = not_as_pinned(&pins, &after, archive);
    if !wrong.is_empty() {
        // What points at the wrong image is removed: the kubelet never runs it.
        for p in pins.iter().filter(|p| after.get(&p.reference).is_some_and(|h| h.digest != p.digest)) {
            let _ = ctr.remove(&p.reference);
        }
        return Err(wrong.join("\n"));
    }
    Ok(format!(
        "imported {} images from {archive} ({}) in {:.2} s; each in containerd ({NAMESPACE}) with its pinned digest, pinned against garbage collection{}",
        pins.len(),
        mib(imported),
        took.as_secs_f64(),
        left_out(all.len(), pins.len())
    ))
}

/// One line for each pin containerd does not hold as pinned after the import.
fn not_as_pinned(pins: &[Pin], held: &BTreeMap<String, Held>, archive: &str) -> Vec<String> {
    let rebuild = "the archive does not match image.toml: rebuild the image with `kiln build` (its manifest.json lists the archive's images and digests)";
    pins.iter()
        .filter_map(|p| {
            let digest_ref = held.get(&p.digest_reference()).filter(|h| h.ready(p));
            let why = match held.get(&p.reference) {
                None => format!("{} is not in {archive}", p.reference),
                Some(h) if h.digest != p.digest => {
                    format!(
                        "{} is {} in {archive}, but image.toml pins {} (removed from containerd)",
                        p.reference, h.digest, p.digest
                    )
                }
                Some(h) if !h.complete || !h.unpacked => format!(
                    "{} was imported incomplete (content complete: {}, unpacked: {})",
                    p.reference, h.complete, h.unpacked
                ),
                Some(h) if !h.pinned => format!("{} is not labelled {PINNED_LABEL}", p.reference),
                Some(_) if digest_ref.is_none() => format!("{} has no digest reference", p.digest_reference()),
                Some(_) => return None,
            };
            Some(format!("import-images: {why}; {rebuild}"))
        })
        .collect()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// `doctor`: each baked image present as pinned, missing (`run` imports it), or
/// held with another digest (an error); then each image kubeadm names for this
/// version that is neither baked nor present: it would be pulled. On a worker, only
/// the images a worker runs ([`runs_on`]).
pub fn doctor(m: &Machine, r: &Resolved) -> Vec<Check> {
    let pins = needed(&baked(r), r);
    let check = |level, message| Check { id: "images", level, message };
    let ctr = match Ctr::find(m, r) {
        Ok(c) => c,
        Err(e) if !pins.is_empty() => {
            return vec![check(Level::Warning, format!("cannot tell which images containerd holds: {e}"))]
        }
        Err(_) => return Vec::new(),
    };
    let held = match ctr.held(&pins) {
        Ok(h) => h,
        Err(e) => return vec![check(Level::Warning, format!("cannot tell which images containerd holds: {e}"))],
    };
    let mut out: Vec<Check> = pins
        .iter()
        .map(|p| match held.get(&p.reference) {
            Some(_) if ready(&held, p) => check(Level::Ok, format!("{} present ({}, pinned)", p.reference, p.digest)),
            Some(h) if h.digest != p.digest => check(Level::Error, format!("{} is {} in containerd, but this image pins {}: kubeadm would run another image; `kiln-firstboot run` imports the pinned one", p.reference, h.digest, p.digest)),
            _ => check(Level::Warning, format!("{} is baked but not yet in containerd ({NAMESPACE}); `kiln-firstboot run` imports it before kubeadm", p.reference)),
        })
        .collect();
    let present = ctr.references().unwrap_or_default();
    for image in kubeadm_images(m, r) {
        if pins.iter().any(|p| p.reference == image) {
            continue;
        }
        out.push(if present.contains(&image) {
            check(Level::Ok, format!("{image} present (not baked: pulled earlier)"))
        } else {
            check(Level::Warning, format!("{image} is neither baked nor in containerd: it would be pulled from its registry (bake it: `images` in the profile)"))
        });
    }
    out
}

/// The images `kubeadm config images list` names for this node's version, or none
/// when the image's kubeadm does not answer in 30 s; kube-proxy's left out when
/// `[cluster] kube_proxy = false` (kubeadm's own list skips it only with a config).
fn kubeadm_images(m: &Machine, r: &Resolved) -> Vec<String> {
    let kubeadm = which(&m.root, &r.image.bin_dir, "kubeadm");
    let mut cmd = Command::new(kubeadm);
    cmd.args(["config", "images", "list", "--kubernetes-version", &r.kubeadm.kubernetes_version]);
    let (ok, out, _) = run_bounded_apart(&mut cmd, Duration::from_secs(30));
    if !ok {
        return Vec::new();
    }
    out.lines()
        .map(str::trim)
        .filter(|l| pins(&[format!("{l}@sha256:{}", "0".repeat(64))]).is_ok())
        .filter(|l| r.kubeadm.kube_proxy || !l.contains("/kube-proxy:"))
        .filter(|l| runs_on(l, r.kubeadm.role))
        .map(String::from)
        .collect()
}
