//! The Ignition config document kiln writes (config spec v3.3.0 and v3.4.0):
//! typed `storage.files|directories|links` and `systemd.units`, the subset
//! kiln emits, and the merge of two configs.
//!
//! Two writers share it: the image config of `kiln build --format ignition`
//! ([`crate::outputs::ignition_image`]) and a node's user-data
//! (`kiln userdata --format ignition`, [`crate::userdata`]); `kiln userdata
//! --image X.ign` merges the second into the first ([`merge`]).
//!
//! Upstream: <https://coreos.github.io/ignition/configuration-v3_4/>. A file's
//! `contents.verification.hash` is over the decompressed contents (spec 3.1+:
//! "If compression is specified, the hash describes the decompressed file"),
//! so a remote file's hash is its artifact's pin and an inline file's the
//! hash of its bytes. Every struct's fields are in alphabetical order, the
//! order `serde_json` gives a [`Value`]'s keys: a document serialises to the
//! same bytes typed or as a [`Value`].

use crate::error::{Error, Result};
use base64::Engine;
use flate2::{Compression, GzBuilder};
use serde::Serialize;
use serde_json::{json, Value};
use std::io::Write;

/// Ignition spec versions kiln writes (Fedora CoreOS and Flatcar accept both;
/// Debian's ignition-validate 2.14 knows 3.3.0 stable and 3.4.0).
pub const VERSIONS: [&str; 2] = ["3.3.0", "3.4.0"];

/// A whole Ignition config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// `ignition`: the spec version.
    pub ignition: Ignition,
    /// `storage`: files, directories and links.
    pub storage: Storage,
    /// `systemd`: units.
    pub systemd: Systemd,
}

/// `ignition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ignition {
    /// One of [`VERSIONS`].
    pub version: String,
}

/// `storage`. A list that is `None` is left out of the document (user-data
/// carries files only); an image config writes all three, empty or not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Storage {
    /// `storage.directories`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directories: Option<Vec<Directory>>,
    /// `storage.files`.
    pub files: Vec<File>,
    /// `storage.links`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<Link>>,
}

/// `systemd`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Systemd {
    /// `systemd.units`.
    pub units: Vec<Unit>,
}

/// A user or group by number (`user.id`, `group.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Id {
    /// The uid or gid.
    pub id: u32,
}

/// `storage.files[]`: always `overwrite`, with verified contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct File {
    /// `contents`: where the bytes come from and their hash.
    pub contents: Contents,
    /// `group`.
    pub group: Id,
    /// `mode`: permission bits.
    pub mode: u32,
    /// `overwrite`: replace what the distribution ships there.
    pub overwrite: bool,
    /// `path`: absolute.
    pub path: String,
    /// `user`.
    pub user: Id,
}

/// `storage.files[].contents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Contents {
    /// `compression`: `gzip`, or absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// `source`: a URL (`https://…`, `data:…`).
    pub source: String,
    /// `verification`.
    pub verification: Verification,
}

/// `contents.verification`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// `hash`: `sha256-HEX` of the decompressed contents.
    pub hash: String,
}

/// `storage.directories[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directory {
    /// `group`.
    pub group: Id,
    /// `mode`.
    pub mode: u32,
    /// `path`: absolute.
    pub path: String,
    /// `user`.
    pub user: Id,
}

/// `storage.links[]`: a symbolic link (`hard` false), always `overwrite`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    /// `hard`.
    pub hard: bool,
    /// `overwrite`.
    pub overwrite: bool,
    /// `path`: absolute.
    pub path: String,
    /// `target`.
    pub target: String,
}

/// `systemd.units[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unit {
    /// `contents`: the unit file, when Ignition writes it (else the image ships it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contents: Option<String>,
    /// `enabled`.
    pub enabled: bool,
    /// `name`: `NAME.service`, `NAME.timer`, ….
    pub name: String,
}

const ROOT: Id = Id { id: 0 };

impl Config {
    /// An empty config of spec `version`; any version but [`VERSIONS`] is
    /// refused (exit 2), naming them.
    pub fn new(version: &str) -> Result<Config> {
        if !VERSIONS.contains(&version) {
            return Err(Error::config(format!("--ignition-version {version}: kiln writes {}", VERSIONS.join(" or "))));
        }
        Ok(Config {
            ignition: Ignition { version: version.to_string() },
            storage: Storage::default(),
            systemd: Systemd::default(),
        })
    }

    /// The config as a JSON value (keys sorted, as serialised).
    pub fn to_value(&self) -> Result<Value> {
        serde_json::to_value(self).map_err(|e| Error::build(format!("writing an Ignition config: {e}")))
    }
}

impl File {
    /// A file whose bytes are inline (`data:` URL), gzip-compressed when that
    /// is smaller, owned by root.
    pub fn inline(path: &str, data: &[u8], mode: u32) -> File {
        let z = gzip(data);
        let (compression, source) = if z.len() < data.len() {
            (Some("gzip".to_string()), format!("data:;base64,{}", b64(&z)))
        } else {
            (None, format!("data:;base64,{}", b64(data)))
        };
        let hash = format!("sha256-{}", crate::hash::sha256_hex(data));
        File {
            contents: Contents { compression, source, verification: Verification { hash } },
            group: ROOT,
            mode,
            overwrite: true,
            path: path.to_string(),
            user: ROOT,
        }
    }

    /// A file Ignition downloads from `url` and checks against `sha256`, owned by root.
    pub fn remote(path: &str, url: &str, sha256: &str, mode: u32) -> File {
        File {
            contents: Contents {
                compression: None,
                source: url.to_string(),
                verification: Verification { hash: format!("sha256-{sha256}") },
            },
            group: ROOT,
            mode,
            overwrite: true,
            path: path.to_string(),
            user: ROOT,
        }
    }

    /// The same file owned by `uid`:`gid`.
    pub fn owned_by(self, uid: u32, gid: u32) -> File {
        File { user: Id { id: uid }, group: Id { id: gid }, ..self }
    }
}

impl Directory {
    /// A directory with `mode`, owned by `uid`:`gid`.
    pub fn new(path: &str, mode: u32, uid: u32, gid: u32) -> Directory {
        Directory { group: Id { id: gid }, mode, path: path.to_string(), user: Id { id: uid } }
    }
}

impl Link {
    /// A symbolic link at `path` to `target`, replacing what is there.
    pub fn symbolic(path: &str, target: &str) -> Link {
        Link { hard: false, overwrite: true, path: path.to_string(), target: target.to_string() }
    }
}

impl Unit {
    /// An enabled unit the image ships.
    pub fn enabled(name: &str) -> Unit {
        Unit { contents: None, enabled: true, name: name.to_string() }
    }

    /// An enabled unit Ignition writes with `contents`.
    pub fn with_contents(name: &str, contents: String) -> Unit {
        Unit { contents: Some(contents), enabled: true, name: name.to_string() }
    }
}

/// gzip with a fixed header (no name, mtime 0), so outputs are reproducible:
/// Ignition's inline files, and whole user-data (`kiln userdata --gzip`,
/// cloud-config `gz+b64`).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = GzBuilder::new().mtime(0).write(Vec::new(), Compression::best());
    // Writing to a Vec cannot fail.
    let _ = gz.write_all(data);
    gz.finish().unwrap_or_default()
}

/// Standard base64, as `data:;base64,` URLs and cloud-config `b64` carry it.
pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The bytes of the inline file at `path` in `config` (a `data:;base64,` URL,
/// gzip-compressed or not, as [`File::inline`] writes it), at most `max`
/// bytes of it; `None` when the config writes no file there. The error says
/// why the file cannot be read.
pub fn inline_file(config: &Value, path: &str, max: u64) -> std::result::Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    let Some(entry) = config["storage"]["files"].as_array().and_then(|files| files.iter().find(|f| f["path"] == path))
    else {
        return Ok(None);
    };
    let source = entry["contents"]["source"].as_str().unwrap_or_default();
    let data = source
        .strip_prefix("data:;base64,")
        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
        .ok_or_else(|| format!("its {path} is not an inline base64 data URL, as kiln writes it"))?;
    if entry["contents"]["compression"] != "gzip" {
        return Ok(Some(data));
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&data[..])
        .take(max)
        .read_to_end(&mut out)
        .map_err(|e| format!("its {path} does not decompress: {e}"))?;
    Ok(Some(out))
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
mod tests {
    use super::*;

    #[test]
    fn every_element_serialises_as_the_spec_names_it_typed_or_as_a_value() {
        let mut c = Config::new("3.4.0").unwrap();
        c.storage.files = vec![
            File::remote("/opt/bin/kubelet", "https://dl.k8s.io/kubelet", "ab", 0o755),
            File::inline("/etc/kiln/node.toml", b"x", 0o600).owned_by(1, 2),
        ];
        c.storage.directories = Some(vec![Directory::new("/etc/kiln", 0o755, 0, 0)]);
        c.storage.links = Some(vec![Link::symbolic("/etc/extensions/kubernetes.raw", "/opt/extensions/k.raw")]);
        c.systemd.units = vec![Unit::enabled("a.service"), Unit::with_contents("b.service", "[Unit]\n".into())];
        let x = format!("data:;base64,{}", b64(b"x"));
        let want = json!({
            "ignition": { "version": "3.4.0" },
            "storage": {
                "files": [
                    { "path": "/opt/bin/kubelet", "mode": 0o755, "overwrite": true, "user": { "id": 0 }, "group": { "id": 0 },
                      "contents": { "source": "https://dl.k8s.io/kubelet", "verification": { "hash": "sha256-ab" } } },
                    { "path": "/etc/kiln/node.toml", "mode": 0o600, "overwrite": true, "user": { "id": 1 }, "group": { "id": 2 },
                      "contents": { "source": x, "verification": { "hash": format!("sha256-{}", crate::hash::sha256_hex(b"x")) } } },
                ],
                "directories": [ { "path": "/etc/kiln", "mode": 0o755, "user": { "id": 0 }, "group": { "id": 0 } } ],
                "links": [ { "path": "/etc/extensions/kubernetes.raw", "target": "/opt/extensions/k.raw", "hard": false, "overwrite": true } ],
            },
            "systemd": { "units": [ { "name": "a.service", "enabled": true }, { "name": "b.service", "enabled": true, "contents": "[Unit]\n" } ] },
        });
        assert_eq!(c.to_value().unwrap(), want);
        // Fields in key order: the typed document prints as its value does.
        assert_eq!(serde_json::to_string_pretty(&c).unwrap(), serde_json::to_string_pretty(&want).unwrap());
        // User-data carries files only: no empty directories or links lists.
        let files_only = Config::new("3.3.0").unwrap().to_value().unwrap();
        assert_eq!(files_only["storage"], json!({ "files": [] }));
        let big = vec![b'a'; 4096];
        let z = File::inline("/big", &big, 0o644);
        assert_eq!(z.contents.compression.as_deref(), Some("gzip"));
        assert_eq!(inline_file(&json!({ "storage": { "files": [z] } }), "/big", 1 << 20).unwrap(), Some(big));
    }

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
