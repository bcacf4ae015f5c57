//! containerd's own client, `ctr`, in the `k8s.io` namespace: which images it
//! holds, an archive imported, a wrong image removed. Every call is bounded
//! ([`crate::runner`]); its output is read as containerd v2.1.5 prints it
//! (`cmd/ctr/commands/images/images.go`, `listCommand` and `checkCommand`).

use super::{Pin, NAMESPACE, PINNED_LABEL};
use crate::files;
use crate::machine::Machine;
use crate::resolve::Resolved;
use crate::runner::{run_bounded_fed, Feed};
use crate::tools::host_tool;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The bound on one listing (`images ls`, `images check`) or removal.
const QUERY_TIME: Duration = Duration::from_secs(30);

/// What containerd holds under one reference.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Held {
    /// The digest the reference points at (the image index, for kiln's images).
    pub digest: String,
    /// Labelled [`PINNED_LABEL`].
    pub pinned: bool,
    /// Every blob this platform needs is in the content store (`images check`: complete).
    pub complete: bool,
    /// Unpacked into the default snapshotter (`images check`: UNPACKED true).
    pub unpacked: bool,
}

impl Held {
    /// Present as `pin` says, ready to run and safe from garbage collection.
    pub fn ready(&self, pin: &Pin) -> bool {
        self.digest == pin.digest && self.pinned && self.complete && self.unpacked
    }
}

/// Both of `pin`'s references (`name:tag` and `name@digest`) are in `held`, ready.
pub fn ready(held: &BTreeMap<String, Held>, pin: &Pin) -> bool {
    [pin.reference.clone(), pin.digest_reference()].iter().all(|r| held.get(r).is_some_and(|h| h.ready(pin)))
}

/// Where `ctr images import` reads the archive.
pub enum Source<'a> {
    /// The archive's file.
    File(&'a Path),
    /// What the feed writes to ctr's stdin: part of an archive ([`super::subset`]).
    Stdin(Feed),
}

/// `ctr --address SOCKET --namespace k8s.io`, found as the image's other tools are.
#[derive(Debug, Clone)]
pub struct Ctr {
    program: PathBuf,
    address: PathBuf,
}

impl Ctr {
    /// The image's `ctr` (`<bin_dir>/ctr` when the image carries containerd, else the
    /// distribution's from `PATH`; on a scratch root only the root's own), talking to
    /// `runtime_socket` (under the root).
    pub fn find(m: &Machine, r: &Resolved) -> Result<Ctr, String> {
        if r.image.runtime != "containerd" {
            return Err(format!(
                "the image's runtime is {}, and only containerd's images can be imported; rebuild the image without `images`, or for containerd",
                r.image.runtime
            ));
        }
        let program = host_tool(&m.root, &r.image.bin_dir, "ctr").ok_or_else(|| {
            format!(
                "no ctr in {} or on PATH (containerd's client, shipped with containerd): install containerd's ctr, or rebuild the image with the containerd artifact",
                r.image.bin_dir
            )
        })?;
        let socket = r.image.runtime_socket.trim_start_matches("unix://");
        let address = files::resolve(&m.root, socket).map_err(|e| format!("runtime_socket: {e}"))?;
        Ok(Ctr { program, address })
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.arg("--address").arg(&self.address).args(["--namespace", NAMESPACE]);
        c
    }

    /// Runs `ctr ... ARGS` within `limit`: its stdout, or why it failed (its last
    /// lines of output).
    fn run(&self, args: &[&str], extra: &[&Path], limit: Duration) -> Result<String, String> {
        self.run_fed(args, extra, limit, None)
    }

    /// [`Ctr::run`] with stdin written by `feed`.
    fn run_fed(&self, args: &[&str], extra: &[&Path], limit: Duration, feed: Option<Feed>) -> Result<String, String> {
        let mut cmd = self.command();
        cmd.args(args).args(extra);
        let (ok, out, err) = run_bounded_fed(&mut cmd, limit, feed);
        if ok {
            return Ok(out);
        }
        let text = format!("{out}\n{err}");
        let tail: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(3)..].join(" / ");
        Err(format!("`ctr {}` failed: {}", args.join(" "), if tail.is_empty() { "no output" } else { &tail }))
    }

    /// What containerd holds under each pin's two references, `name:tag` and
    /// `name@digest` (absent: not a key).
    pub fn held(&self, pins: &[Pin]) -> Result<BTreeMap<String, Held>, String> {
        if pins.is_empty() {
            return Ok(BTreeMap::new());
        }
        let refs: Vec<String> = pins.iter().flat_map(|p| [p.reference.clone(), p.digest_reference()]).collect();
        // One `name==REF` filter per reference: the filters are OR'd (containerd
        // `pkg/filters` ParseAll), so the listing is only kiln's images.
        let filters: Vec<String> = refs.iter().map(|r| format!("name=={r}")).collect();
        let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
        let ls = self.run(&[&["images", "ls"], filters.as_slice()].concat(), &[], QUERY_TIME)?;
        let check = self.run(&[&["images", "check"], filters.as_slice()].concat(), &[], QUERY_TIME)?;
        let mut held = parse_ls(&ls);
        for (reference, (complete, unpacked)) in parse_check(&check) {
            if let Some(h) = held.get_mut(&reference) {
                h.complete = complete;
                h.unpacked = unpacked;
            }
        }
        held.retain(|r, _| refs.contains(r));
        Ok(held)
    }

    /// `ctr images import --platform linux/ARCH --label io.cri-containerd.pinned=pinned
    /// ARCHIVE`: every image the archive names, this platform's blobs, unpacked and
    /// labelled pinned (`cmd/ctr/commands/images/import.go`: `--label` gives every
    /// imported image the label, `--platform` keeps only that platform's manifests and
    /// unpacks them); within `limit`. The archive is a file, or what a feed writes to
    /// ctr's stdin (`-`: stdin, the same file's line 261).
    pub fn import(&self, from: Source, arch: &str, limit: Duration) -> Result<(), String> {
        let platform = format!("linux/{arch}");
        let args = ["images", "import", "--platform", &platform, "--label", PINNED_LABEL];
        match from {
            Source::File(archive) => self.run(&args, &[archive], limit).map(|_| ()),
            Source::Stdin(feed) => self.run_fed(&args, &[Path::new("-")], limit, Some(feed)).map(|_| ()),
        }
    }

    /// `ctr images tag --local --force REF TARGET`: a second name for the image `REF`
    /// names, with its labels (`cmd/ctr/commands/images/tag.go`: `--local` copies the
    /// image record, target and labels, under the new name).
    pub fn tag(&self, reference: &str, target: &str) -> Result<(), String> {
        self.run(&["images", "tag", "--local", "--force", reference, target], &[], QUERY_TIME).map(|_| ())
    }

    /// `ctr images rm REF`: a reference that points at the wrong image is not left
    /// for the kubelet to run.
    pub fn remove(&self, reference: &str) -> Result<(), String> {
        self.run(&["images", "rm", reference], &[], QUERY_TIME).map(|_| ())
    }

    /// `ctr images ls -q`: every reference in the namespace (for `doctor`).
    pub fn references(&self) -> Result<Vec<String>, String> {
        Ok(self.run(&["images", "ls", "-q"], &[], QUERY_TIME)?.lines().map(str::trim).map(String::from).collect())
    }
}

/// `ctr images ls`: `REF TYPE DIGEST SIZE PLATFORMS LABELS` (a tabwriter table; SIZE
/// is two words, `1.2 MiB`; LABELS is `k=v,...` sorted, or `-`).
pub fn parse_ls(text: &str) -> BTreeMap<String, Held> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with("REF ")) {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() < 6 || !t[2].starts_with("sha256:") {
            continue;
        }
        let pinned = t[3..].iter().flat_map(|w| w.split(',')).any(|l| l == PINNED_LABEL);
        out.insert(t[0].to_string(), Held { digest: t[2].to_string(), pinned, ..Held::default() });
    }
    out
}

/// `ctr images check`: `REF TYPE DIGEST STATUS SIZE UNPACKED`, STATUS `complete (3/3)`,
/// `incomplete (2/3)`, `unavailable (0/?)` or `error`; UNPACKED `true` or `false`.
/// Reference → (complete, unpacked).
pub fn parse_check(text: &str) -> BTreeMap<String, (bool, bool)> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with("REF ")) {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() < 5 || !t[2].starts_with("sha256:") {
            continue;
        }
        out.insert(t[0].to_string(), (t[3] == "complete", t.last() == Some(&"true")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // As ctr v2.1.5 prints them (captured from the real containerd in
    // firstboot/tests/real_images.rs).
    const LS: &str = "REF                                     TYPE                                    DIGEST                                                                  SIZE      PLATFORMS   LABELS                          \n\
registry.k8s.io/pause:3.10.1            application/vnd.oci.image.index.v1+json sha256:1111111111111111111111111111111111111111111111111111111111111111 314.6 KiB linux/amd64 io.cri-containerd.pinned=pinned \n\
registry.k8s.io/etcd:3.6.5-0            application/vnd.oci.image.index.v1+json sha256:2222222222222222222222222222222222222222222222222222222222222222 20.1 MiB  linux/amd64 -                               \n";
    const CHECK: &str = "REF                          TYPE                                    DIGEST                                                                  STATUS         SIZE                UNPACKED\n\
registry.k8s.io/pause:3.10.1 application/vnd.oci.image.index.v1+json sha256:1111111111111111111111111111111111111111111111111111111111111111 complete (3/3) 314.6 KiB/314.6 KiB true\n\
registry.k8s.io/etcd:3.6.5-0 application/vnd.oci.image.index.v1+json sha256:2222222222222222222222222222222222222222222222222222222222222222 incomplete (2/3) 1.0 KiB/20.1 MiB false\n";

    #[test]
    fn reads_ctrs_tables() {
        let ls = parse_ls(LS);
        assert_eq!(ls.len(), 2);
        assert!(ls["registry.k8s.io/pause:3.10.1"].pinned && !ls["registry.k8s.io/etcd:3.6.5-0"].pinned);
        assert_eq!(ls["registry.k8s.io/etcd:3.6.5-0"].digest, format!("sha256:{}", "2".repeat(64)));
        let check = parse_check(CHECK);
        assert_eq!(check["registry.k8s.io/pause:3.10.1"], (true, true));
        assert_eq!(check["registry.k8s.io/etcd:3.6.5-0"], (false, false));
        assert!(parse_ls("ctr: failed to dial\n").is_empty() && parse_check("").is_empty());
    }
}
