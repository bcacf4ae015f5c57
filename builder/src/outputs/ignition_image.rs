//! The Ignition image config: how a Fedora CoreOS or Flatcar machine gets the
//! image at first boot, without a tarball.
//!
//! * `sysext` mode: Ignition downloads the extension image from `--base-url`
//!   (verified by `verification.hash`), places it under `/opt/extensions/` and
//!   links `/etc/extensions/kubernetes.raw` to it; the host's `/etc` files are
//!   written inline.
//! * `files` mode: every pinned binary is a remote file under the bin dir with
//!   its pinned sha256 (upstream URL, or the `--mirror` URL); tarball artifacts
//!   (crictl, CNI plugins) are downloaded verified and unpacked by a oneshot unit;
//!   the `kiln-firstboot` binary is served from `--base-url`.
//!
//! Ignition computes `verification.hash` over the decompressed contents (spec
//! 3.1+), so hashes are the artifacts' own pins.

use crate::error::{Error, Result};
use crate::image::tree::{Content, Node, Origin, Tree};
use crate::inputs::fetch;
use crate::inputs::profile::{Artifact, Install};
use crate::outputs::sysext::{self, EXTENSION_NAME};
use crate::userdata::{ignition_file, NodeFile, IGNITION_VERSIONS};
use serde_json::{json, Value};

/// Where `sysext` mode stores extension images.
pub const EXTENSIONS_DIR: &str = "/opt/extensions/kubernetes";
/// Where `files` mode stores downloaded tarballs before unpacking.
pub const ARTIFACTS_DIR: &str = "/opt/kiln/artifacts";
/// The oneshot unit that unpacks tarball artifacts in `files` mode.
pub const UNPACK_UNIT: &str = "kiln-unpack-artifacts.service";

/// How the image reaches the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Download the systemd-sysext image and link it into /etc/extensions.
    Sysext,
    /// Download every binary to the bin dir (no extension image).
    Files,
}

impl Mode {
    /// The spelling of `--ignition-mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sysext => "sysext",
            Mode::Files => "files",
        }
    }
}

/// Inputs common to both modes.
#[derive(Debug, Clone)]
pub struct IgnitionInputs<'a> {
    /// Spec version (3.3.0 or 3.4.0).
    pub version: &'a str,
    /// URL where the output directory is served (sysext image, kiln-firstboot).
    pub base_url: Option<&'a str>,
    /// Mirror URL for upstream artifacts (files mode).
    pub mirror_url: Option<&'a str>,
}

fn base<'a>(i: &IgnitionInputs<'a>, what: &str) -> Result<&'a str> {
    i.base_url.map(|b| b.trim_end_matches('/')).ok_or_else(|| {
        Error::config(format!(
            "--format ignition needs --base-url URL: the address the output directory will be served from ({what} is downloaded from there at first boot)"
        ))
    })
}

fn remote_file(path: &str, url: &str, sha256: &str, mode: u32) -> Value {
    json!({
        "path": path,
        "mode": mode,
        "overwrite": true,
        "user": { "id": 0 },
        "group": { "id": 0 },
        "contents": { "source": url, "verification": { "hash": format!("sha256-{sha256}") } },
    })
}

/// Converts host-tree entries to Ignition files, directories and links.
fn host_entries(host: &Tree, skip: impl Fn(&str, &Origin) -> bool) -> Result<(Vec<Value>, Vec<Value>, Vec<Value>)> {
    let (mut files, mut dirs, mut links) = (Vec::new(), Vec::new(), Vec::new());
    for (path, e) in host.iter() {
        if skip(path, &e.origin) {
            continue;
        }
        let abs = format!("/{path}");
        match &e.node {
            Node::Dir if e.origin != Origin::Implicit => {
                dirs.push(json!({ "path": abs, "mode": e.mode, "user": { "id": e.uid }, "group": { "id": e.gid } }))
            }
            Node::Dir => {}
            Node::Symlink(t) => links.push(json!({ "path": abs, "target": t, "hard": false, "overwrite": true })),
            Node::File(c) => {
                let data = match c {
                    Content::Inline(b) => b.clone(),
                    Content::Disk { path: p, .. } => {
                        std::fs::read(p).map_err(|x| Error::build(format!("{}: {x}", p.display())))?
                    }
                };
                let mut f = ignition_file(&NodeFile { path: abs, data, mode: e.mode });
                f["user"] = json!({ "id": e.uid });
                f["group"] = json!({ "id": e.gid });
                files.push(f);
            }
        }
    }
    Ok((files, dirs, links))
}

fn document(version: &str, files: Vec<Value>, dirs: Vec<Value>, links: Vec<Value>, units: Vec<Value>) -> Result<Value> {
    if !IGNITION_VERSIONS.contains(&version) {
        return Err(Error::config(format!(
            "--ignition-version {version}: kiln writes {}",
            IGNITION_VERSIONS.join(" or ")
        )));
    }
    Ok(json!({
        "ignition": { "version": version },
        "storage": { "files": files, "directories": dirs, "links": links },
        "systemd": { "units": units },
    }))
}

/// `sysext` mode: the extension image from `base_url`, the host files inline.
pub fn sysext_config(split: &sysext::Split, raw_name: &str, raw_sha256: &str, i: &IgnitionInputs) -> Result<Value> {
    let base = base(i, raw_name)?;
    let target = format!("{EXTENSIONS_DIR}/{raw_name}");
    let (mut files, dirs, mut links) = host_entries(&split.host, |_, _| false)?;
    files.insert(0, remote_file(&target, &format!("{base}/{raw_name}"), raw_sha256, 0o644));
    links.insert(0, json!({ "path": format!("/etc/extensions/{EXTENSION_NAME}.raw"), "target": target, "hard": false, "overwrite": true }));
    let units = vec![
        json!({ "name": "systemd-sysext.service", "enabled": true }),
        json!({ "name": kiln_firstboot::contract::unit::UNIT_NAME, "enabled": true }),
    ];
    document(i.version, files, dirs, links, units)
}

/// `files` mode: pinned downloads into the bin dir, tarballs unpacked at boot.
pub fn files_config(
    image: &Tree,
    artifacts: &[Artifact],
    firstboot: Option<(&str, &str)>,
    bin_dir: &str,
    i: &IgnitionInputs,
) -> Result<Value> {
    let url_of = |a: &Artifact| match i.mirror_url {
        Some(m) => fetch::rebase_url(m, &a.url),
        None => a.url.clone(),
    };
    let mut remote = Vec::new();
    let mut unpack = Vec::new();
    for a in artifacts {
        match &a.install {
            Install::File { name } => {
                remote.push(remote_file(&format!("{}/{name}", a.dest), &url_of(a), &a.sha256, a.mode))
            }
            Install::Extract { members } => {
                let tgz = format!("{ARTIFACTS_DIR}/{}-{}-{}.tar.gz", a.name, a.version, a.arch);
                remote.push(remote_file(&tgz, &url_of(a), &a.sha256, 0o644));
                let sel = members.as_ref().map(|m| format!(" --no-anchored {}", m.join(" "))).unwrap_or_default();
                unpack.push(format!("ExecStart=/usr/bin/mkdir -p {dest}\nExecStart=/usr/bin/tar -xzf {tgz} -C {dest} --no-same-owner{sel}\n", dest = a.dest));
            }
        }
    }
    if let Some((name, sha)) = firstboot {
        let base = base(i, name)?;
        remote.push(remote_file(&format!("{bin_dir}/kiln-firstboot"), &format!("{base}/{name}"), sha, 0o755));
    }
    let (files, dirs, links) =
        host_entries(image, |_, o| matches!(o, Origin::Artifact { .. } | Origin::Firstboot { .. }))?;
    let mut all = remote;
    all.extend(files);
    let mut units = vec![json!({ "name": kiln_firstboot::contract::unit::UNIT_NAME, "enabled": true })];
    if !unpack.is_empty() {
        let contents = format!(
            "[Unit]\nDescription=kiln: unpack the verified crictl and CNI tarballs Ignition downloaded\nBefore=kubelet.service {fb}\nConditionPathExists=!/var/lib/kiln/artifacts-unpacked\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n{}ExecStart=/usr/bin/mkdir -p /var/lib/kiln\nExecStart=/usr/bin/touch /var/lib/kiln/artifacts-unpacked\n\n[Install]\nWantedBy=multi-user.target\n",
            unpack.concat(),
            fb = kiln_firstboot::contract::unit::UNIT_NAME
        );
        units.push(json!({ "name": UNPACK_UNIT, "enabled": true, "contents": contents }));
    }
    document(i.version, all, dirs, links, units)
}

/// Unit name suffixes Ignition hands to systemd (systemd.unit(5) unit types).
const UNIT_SUFFIXES: [&str; 11] = [
    ".service",
    ".socket",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".target",
    ".path",
    ".timer",
    ".slice",
    ".scope",
];

/// Checks the shape of an Ignition config before it is merged: `storage` and
/// `systemd` objects, `storage.files|directories|links` and `systemd.units` lists,
/// every unit an object named like a systemd unit (Ignition config spec:
/// `systemd.units[].name`, "the name of the unit. This must be suffixed with a
/// valid unit type").
fn check_shape(doc: &Value, what: &str) -> Result<()> {
    let bad = |why: String| {
        Error::config(format!("{what}: {why}; regenerate it with kiln (`kiln build --format ignition`, `kiln userdata --format ignition`)"))
    };
    if !doc.is_object() {
        return Err(bad("is not a JSON object".into()));
    }
    for (key, kinds) in [("storage", &["files", "directories", "links"][..]), ("systemd", &["units"][..])] {
        match &doc[key] {
            Value::Null => continue,
            Value::Object(o) => {
                for k in kinds {
                    if let Some(v) = o.get(*k) {
                        if !v.is_array() {
                            return Err(bad(format!("{key}.{k} is not a list")));
                        }
                    }
                }
            }
            _ => return Err(bad(format!("{key} is not an object"))),
        }
    }
    for u in doc["systemd"]["units"].as_array().into_iter().flatten() {
        let name = u.get("name").and_then(Value::as_str).unwrap_or_default();
        let ok = !name.is_empty()
            && name.len() <= 255
            && !name.contains('/')
            && !name.chars().any(char::is_control)
            && UNIT_SUFFIXES.iter().any(|s| name.len() > s.len() && name.ends_with(s));
        if !u.is_object() || !ok {
            return Err(bad(format!("systemd unit {u} has no valid unit name (e.g. kubelet.service)")));
        }
    }
    Ok(())
}

/// Merges `extra` (a node's user-data config) into `image` (an image config):
/// files, directories and links are appended (a path in both is an error),
/// units are merged by name. Both are shape-checked first: a list that is not a
/// list, or a unit without a valid name, is an error, never silently dropped.
pub fn merge(mut image: Value, extra: &Value) -> Result<Value> {
    check_shape(&image, "the image config (--image)")?;
    check_shape(extra, "the node's user-data")?;
    if image["storage"].is_null() {
        image["storage"] = json!({});
    }
    if image["systemd"].is_null() {
        image["systemd"] = json!({});
    }
    for kind in ["files", "directories", "links"] {
        let add = extra["storage"][kind].as_array().cloned().unwrap_or_default();
        let list = image["storage"][kind].as_array_mut();
        let list = match list {
            Some(l) => l,
            None => {
                image["storage"][kind] = json!([]);
                image["storage"][kind].as_array_mut().ok_or_else(|| Error::build("merging Ignition configs"))?
            }
        };
        for item in add {
            if list.iter().any(|x| x["path"] == item["path"]) {
                return Err(Error::config(format!(
                    "{} is written by both the image config and the node's user-data; remove it from one",
                    item["path"]
                )));
            }
            list.push(item);
        }
    }
    let add = extra["systemd"]["units"].as_array().cloned().unwrap_or_default();
    if image["systemd"]["units"].as_array().is_none() {
        image["systemd"]["units"] = json!([]);
    }
    if let Some(units) = image["systemd"]["units"].as_array_mut() {
        for u in add {
            match units.iter_mut().find(|x| x["name"] == u["name"]) {
                Some(existing) => {
                    if u["enabled"] == true {
                        existing["enabled"] = json!(true);
                    }
                }
                None => units.push(u),
            }
        }
    }
    Ok(image)
}

#[cfg(test)]
mod merge_tests {
    use super::*;

    #[test]
    fn malformed_configs_are_refused_not_dropped_or_panicked_on() {
        let node = json!({ "ignition": { "version": "3.3.0" }, "storage": { "files": [ { "path": "/etc/kiln/node.toml" } ] },
            "systemd": { "units": [ { "name": "kiln-firstboot.service", "enabled": true } ] } });
        for (image, want) in [
            (json!({ "storage": { "files": { "path": "/x" } } }), "storage.files is not a list"),
            (json!({ "storage": 5 }), "storage is not an object"),
            (json!({ "systemd": { "units": [ { "name": "kubelet" } ] } }), "no valid unit name"),
            (json!({ "systemd": { "units": [ { "name": "../x.service" } ] } }), "no valid unit name"),
            (json!({ "systemd": { "units": [ "kubelet.service" ] } }), "no valid unit name"),
            (json!([]), "not a JSON object"),
        ] {
            let e = merge(image.clone(), &node).expect_err(want).to_string();
            assert!(e.contains(want), "{image}: {e}");
        }
        let ok = merge(json!({ "ignition": { "version": "3.3.0" } }), &node).unwrap();
        assert_eq!(ok["storage"]["files"][0]["path"], "/etc/kiln/node.toml");
        assert_eq!(ok["systemd"]["units"][0]["name"], "kiln-firstboot.service");
    }
}
