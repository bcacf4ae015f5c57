//! Per-field allow-lists for every string a profile or an overlay manifest carries.
//!
//! Profiles and overlays arrive in pull requests, so each value is checked
//! where it is parsed ([`crate::inputs::profile::Profile::parse`],
//! [`crate::inputs::overlay`]) against what the place it ends up in can carry: a
//! systemd unit line, a sysctl.d line, a file name in `dist/`, a kubelet flag.
//! Values are refused, never escaped or repaired. Each function returns the
//! reason and what to write instead; the caller adds `file:line:col`.
//!
//! Paths are checked in their written form, so a rule that looks at a path
//! (read-only `/usr`, system directories) never sees `.`, `..` or `//`.

/// A rule's verdict: `Err` holds "what is wrong; what to do".
pub type Verdict = Result<(), String>;

/// Longest name (profile, overlay, artifact): a DNS label's 63 characters,
/// short enough for `dist/<name>-<arch>.tar.gz` on any file system.
pub const NAME_MAX: usize = 63;

/// Longest absolute path kiln writes into units and tmpfiles lines.
pub const PATH_MAX: usize = 1024;

/// Longest socket path: `sun_path` holds 108 bytes with the terminating NUL (unix(7)).
pub const SOCKET_PATH_MAX: usize = 107;

/// Longest kernel module name: `MODULE_NAME_LEN` is `64 - sizeof(unsigned long)`
/// bytes including the NUL (include/linux/module.h).
pub const MODULE_NAME_MAX: usize = 55;

/// Longest sysctl name (`SysctlMaxLength` in kubernetes' pkg/apis/core/validation).
pub const SYSCTL_NAME_MAX: usize = 253;

/// Longest sysctl value kiln writes (a page: the kernel's proc_sys write limit).
pub const SYSCTL_VALUE_MAX: usize = 4096;

/// Longest URL template.
pub const URL_MAX: usize = 2048;

/// Latest epoch every output can carry: squashfs inodes (the sysext image)
/// store mtime as an unsigned 32-bit number (2106-02-07T06:28:15Z); tar's
/// 11-digit octal field and a 64-bit `time_t` reach further.
pub const EPOCH_MAX: u64 = u32::MAX as u64;

/// Directories a profile may not use as bin, CNI, flex-volume or install
/// directory: kiln's tmpfiles.d line `d DIR 0755 root root -` resets a
/// directory's mode and owner at every boot (tmpfiles.d(5), type `d`), which
/// would turn `/tmp` world-unwritable or `/etc` into kubelet's plugin
/// directory, and installing binaries straight into them mixes them with the OS.
pub const SYSTEM_DIRS: [&str; 28] = [
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/etc/systemd",
    "/etc/systemd/system",
    "/home",
    "/lib",
    "/lib64",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/lib",
    "/usr/local",
    "/var",
    "/var/lib",
    "/var/log",
    "/var/run",
    "/var/tmp",
];

/// Shows a value in a message: quoted and escaped, cut after 80 characters,
/// so a hostile value cannot add lines to kiln's own output.
pub fn show(s: &str) -> String {
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i == 80 {
            out.push('…');
            break;
        }
        out.extend(ch.escape_debug());
    }
    format!("\"{out}\"")
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
}

/// A profile, overlay or artifact name: `[a-z0-9][a-z0-9._-]{0,62}`. Names
/// become file names in `dist/` and `SHA256SUMS` lines, overlay directories
/// and default install names, so no `/`, blanks, line breaks or upper case.
pub fn name(what: &str, s: &str) -> Verdict {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= NAME_MAX
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| is_name_char(*c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {} is not a name: use 1 to {NAME_MAX} characters of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit (e.g. \"flatcar-1.34\")",
            show(s)
        ))
    }
}

fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'@')
}

/// One file name (a path component): `[A-Za-z0-9._+@-]{1,255}`, not `.` or `..`.
/// Blanks, `%`, `$`, `\`, `:` and quotes are refused because the names end up
/// in systemd unit lines and `PATH`.
pub fn file_name(what: &str, s: &str) -> Verdict {
    let b = s.as_bytes();
    if !b.is_empty() && b.len() <= 255 && s != "." && s != ".." && b.iter().all(|c| is_path_char(*c)) {
        Ok(())
    } else {
        Err(format!(
            "{what} {} is not a file name: use 1 to 255 characters of A-Z, a-z, 0-9, `.`, `_`, `-`, `+`, `@`, not `.` or `..`, and no `/`",
            show(s)
        ))
    }
}

/// An absolute directory inside the image, as written in a profile: `/` then
/// components that are [`file_name`]s, no `.`, `..` or empty components
/// (`//`), at most one trailing `/`. Returns the path without the trailing `/`.
pub fn abs_path(what: &str, s: &str) -> Result<String, String> {
    let fail = |why: &str| {
        Err(format!(
            "{what} {} {why}; write a normalised absolute path such as \"/opt/bin\" (components of A-Z, a-z, 0-9, `.`, `_`, `-`, `+`, `@`)",
            show(s)
        ))
    };
    if !s.starts_with('/') {
        return fail("is not absolute");
    }
    if s.len() > PATH_MAX {
        return fail(&format!("is longer than {PATH_MAX} bytes"));
    }
    let trimmed = s.strip_suffix('/').unwrap_or(s);
    if trimmed.is_empty() {
        return Ok("/".to_string());
    }
    for part in trimmed[1..].split('/') {
        match part {
            "" => return fail("has an empty component (`//`)"),
            "." | ".." => return fail(&format!("has a `{part}` component")),
            p if !p.bytes().all(is_path_char) => {
                return fail(&format!("has a character that is not allowed in component {}", show(p)))
            }
            _ => {}
        }
    }
    Ok(trimmed.to_string())
}

/// A directory kiln installs into or creates (`bin_dir`, `cni_bin_dir`,
/// `flex_volume_dir`, an artifact's `dest`): an [`abs_path`] that is not one
/// of the [`SYSTEM_DIRS`]. Returns the normalised path.
pub fn own_dir(what: &str, s: &str, example: &str) -> Result<String, String> {
    let p = abs_path(what, s)?;
    if SYSTEM_DIRS.contains(&p.as_str()) {
        return Err(format!(
            "{what} {} is a system directory: kiln installs into it and its tmpfiles.d line would reset its mode and owner at every boot; use a directory of its own such as {example}",
            show(s)
        ));
    }
    Ok(p)
}

/// A path inside an overlay (a `.kiln-overlay.toml` key, a file's path):
/// relative (one leading `/` is tolerated), components without control
/// characters, not empty, `.` or `..`.
pub fn overlay_path(s: &str) -> Verdict {
    let rel = s.strip_prefix('/').unwrap_or(s);
    let bad = |why: &str| {
        Err(format!(
            "path {} {why}; name a file of the overlay relative to its root, e.g. \"etc/kubernetes/audit-policy.yaml\"",
            show(s)
        ))
    };
    if rel.is_empty() {
        return bad("is empty");
    }
    if rel.len() > PATH_MAX {
        return bad(&format!("is longer than {PATH_MAX} bytes"));
    }
    for part in rel.split('/') {
        match part {
            "" => return bad("has an empty component (`//` or a trailing `/`)"),
            "." | ".." => return bad(&format!("has a `{part}` component")),
            p if p.chars().any(char::is_control) => return bad("has a control character"),
            _ => {}
        }
    }
    Ok(())
}

/// An artifact version (substituted into URLs and recorded in manifests):
/// `[A-Za-z0-9][A-Za-z0-9._+-]{0,63}`, e.g. `v1.34.2`.
pub fn artifact_version(s: &str) -> Verdict {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "version {} is not a release version: use up to 64 characters of A-Z, a-z, 0-9, `.`, `_`, `+`, `-`, e.g. \"v1.34.2\"",
            show(s)
        ))
    }
}

/// A download URL template: `https://` (or `http://` for a mirror), a host
/// without credentials, and only characters a URL carries unescaped
/// (RFC 3986 unreserved, reserved and `%`) plus `{placeholders}`.
pub fn url(s: &str) -> Verdict {
    let fail = |why: &str| Err(format!("url {} {why}", show(s)));
    if s.len() > URL_MAX {
        return fail(&format!("is longer than {URL_MAX} bytes; shorten it"));
    }
    let rest = match s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")) {
        Some(r) => r,
        None => {
            return fail("must start with https:// (or http:// for a mirror): kiln downloads over HTTP(S) only; for files on disk use `kiln build --mirror DIR`")
        }
    };
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%{}".contains(*c))) {
        return fail(&format!(
            "has the character {}, which a URL cannot carry unescaped; percent-encode it (e.g. %20 for a blank)",
            show(&c.to_string())
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return fail("carries credentials (`user:password@`): they would be stored in manifest.json, progress output and the build fingerprint; serve the artifacts from a mirror that needs none, or a local copy with `kiln build --mirror DIR`");
    }
    if authority.is_empty() || authority.starts_with(':') {
        return fail("has no host; write https://HOST/PATH");
    }
    Ok(())
}

/// A sysctl name: kubernetes' `SysctlContainSlashFmt` (segments
/// `[a-z0-9]([-_a-z0-9]*[a-z0-9])?` joined by `.` or `/`, at most 253
/// characters; pkg/apis/core/validation/validation.go). sysctl(8) reads `/`
/// and `.` alike.
pub fn sysctl_name(s: &str) -> Verdict {
    let seg_ok = |seg: &str| {
        let b = seg.as_bytes();
        !b.is_empty()
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_'))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
    };
    if !s.is_empty() && s.len() <= SYSCTL_NAME_MAX && s.split(['.', '/']).all(seg_ok) {
        Ok(())
    } else {
        Err(format!(
            "sysctl name {} would not be one sysctl.d line: names are segments of a-z, 0-9, `-`, `_` joined by `.` or `/` (at most {SYSCTL_NAME_MAX} characters), e.g. \"net.ipv4.conf.all.rp_filter\"",
            show(s)
        ))
    }
}

/// A sysctl value as written after `name = ` in sysctl.d(5): printable
/// ASCII and blanks inside (e.g. `32768 60999`), no line breaks or other
/// control characters, no leading or trailing blanks (sysctl.d trims them).
pub fn sysctl_value(name: &str, s: &str) -> Verdict {
    let ok = !s.is_empty()
        && s.len() <= SYSCTL_VALUE_MAX
        && s.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !s.starts_with(' ')
        && !s.ends_with(' ');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "sysctl {} = {} would not be one sysctl.d line: values are 1 to {SYSCTL_VALUE_MAX} printable ASCII characters without control characters or surrounding blanks",
            show(name),
            show(s)
        ))
    }
}

/// A kernel module name for modules-load.d(5): `[A-Za-z0-9_-]`, at most
/// [`MODULE_NAME_MAX`] characters.
pub fn module(s: &str) -> Verdict {
    if !s.is_empty()
        && s.len() <= MODULE_NAME_MAX
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(())
    } else {
        Err(format!(
            "kernel module {} is not a module name: use 1 to {MODULE_NAME_MAX} characters of A-Z, a-z, 0-9, `_`, `-` (e.g. \"ip_vs\"), one module per list item",
            show(s)
        ))
    }
}

/// The CRI socket: `unix://` and an absolute path. kubeadm accepts only the
/// `unix` URL scheme for `criSocket` on Linux (`ValidateSocketPath` in
/// cmd/kubeadm/app/apis/kubeadm/validation/validation.go: "only URL scheme
/// \"unix\" is supported"), and kubelet's `--container-runtime-endpoint`
/// dials unix sockets only ("only support unix socket endpoint",
/// pkg/kubelet/util/util_unix.go). The path fits `sun_path` (unix(7)).
pub fn socket(s: &str) -> Verdict {
    let example = "e.g. \"unix:///run/containerd/containerd.sock\"";
    let Some(path) = s.strip_prefix("unix://") else {
        return Err(format!(
            "socket {} is not a unix:// URL: kubeadm's criSocket and kubelet's --container-runtime-endpoint accept only unix sockets on Linux; write unix:///PATH, {example}",
            show(s)
        ));
    };
    let p = abs_path("socket path", path).map_err(|m| format!("{m}; {example}"))?;
    if p == "/" || path.ends_with('/') {
        return Err(format!("socket {} names a directory; name the socket file, {example}", show(s)));
    }
    if p.len() > SOCKET_PATH_MAX {
        return Err(format!(
            "socket {} has a path of {} bytes; unix sockets hold at most {SOCKET_PATH_MAX} (unix(7), sun_path); use a shorter path",
            show(s),
            p.len()
        ));
    }
    Ok(())
}

/// One kubelet flag for `KUBELET_EXTRA_ARGS`: `--name` or `--name=value`.
/// systemd splits the unquoted `$KUBELET_EXTRA_ARGS` at blanks
/// (systemd.service(5), "Command lines"), so a blank would smuggle in a second
/// flag; quotes, `\`, `$` and `` ` `` would change the environment file's quoting.
pub fn kubelet_arg(s: &str) -> Verdict {
    let (flag, value) = match s.split_once('=') {
        Some((f, v)) => (f, Some(v)),
        None => (s, None),
    };
    let flag_ok = flag.strip_prefix("--").is_some_and(|n| {
        let b = n.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    });
    if !flag_ok {
        return Err(format!(
            "kubelet argument {} is not a flag: write --name or --name=value with a lower-case name, one flag per list item",
            show(s)
        ));
    }
    if let Some(v) = value {
        if let Some(c) = v.chars().find(|c| !c.is_ascii_graphic() || matches!(c, '"' | '\'' | '\\' | '$' | '`')) {
            return Err(format!(
                "kubelet argument {} has the character {} in its value: systemd splits KUBELET_EXTRA_ARGS at blanks and the environment file gives quotes, `\\` and `$` meaning; use --name=value with a value of printable ASCII without them, one flag per list item",
                show(s),
                show(&c.to_string())
            ));
        }
    }
    if s.len() > 4096 {
        return Err(format!("kubelet argument {} is longer than 4096 bytes", show(s)));
    }
    Ok(())
}

/// The reproducibility epoch: at most [`EPOCH_MAX`].
pub fn epoch(what: &str, e: u64) -> Verdict {
    if e <= EPOCH_MAX {
        Ok(())
    } else {
        Err(format!(
            "{what} {e} is after {EPOCH_MAX} (2106-02-07): the sysext image's squashfs stores mtimes as 32-bit numbers; use a release date, e.g. the commit time (`git log -1 --format=%ct`)"
        ))
    }
}

/// An owner (uid or gid) in an overlay manifest: not 4294967295, which is
/// `(uid_t) -1`, "leave unchanged" to chown(2), and not an owner.
pub fn owner(what: &str, id: u32) -> Verdict {
    if id == u32::MAX {
        Err(format!(
            "{what} {id} is (uid_t) -1, which chown(2) reads as \"unchanged\", not an owner; use a numeric id below 4294967295 (0 is root)"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["t", "flatcar-1.34", "a_b.c", "0"] {
            assert!(name("name", ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in ["", "../x", "/abs/x", "a\nb", "A", ".x", "-x", "a b", long.as_str(), "é"] {
            assert!(name("name", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_are_normal_before_rules_see_them() {
        assert_eq!(abs_path("bin_dir", "/opt/bin/").unwrap(), "/opt/bin");
        assert_eq!(abs_path("bin_dir", "/").unwrap(), "/");
        for bad in
            ["/./usr/bin", "/opt//bin", "/opt/../usr", "opt/bin", "/opt/bin\nExecStartPre=/x", "/a b", "/%h", "/a:b"]
        {
            assert!(abs_path("bin_dir", bad).is_err(), "{bad:?}");
        }
        assert!(own_dir("flex_volume_dir", "/etc", "/x/y").is_err());
        assert!(own_dir("flex_volume_dir", "/", "/x/y").is_err());
        assert!(own_dir("flex_volume_dir", "/tmp/", "/x/y").is_err());
        assert!(own_dir("bin_dir", "/usr/local/bin", "/x/y").is_ok());
    }

    #[test]
    fn sockets_are_unix() {
        assert!(socket("unix:///run/containerd/containerd.sock").is_ok());
        for bad in ["tcp://10.0.0.1:1234", "/run/x.sock", "unix://", "unix:///run/x\n.sock", "unix:///run/../x.sock"] {
            assert!(socket(bad).is_err(), "{bad:?}");
        }
        assert!(socket(&format!("unix:///{}", "a".repeat(200))).is_err());
    }

    #[test]
    fn urls_are_http_without_credentials() {
        assert!(url("https://dl.k8s.io/release/{version}/bin/linux/{arch}/kubelet").is_ok());
        assert!(url("http://127.0.0.1:8080/x").is_ok());
        for bad in [
            "https://user:pass@dl.k8s.io/x",
            "https://token@dl.k8s.io/x",
            "file:///etc/passwd",
            "ftp://x/y",
            "https://dl.k8s.io/a b",
            "https://dl.k8s.io/a\nb",
            "https:///x",
        ] {
            assert!(url(bad).is_err(), "{bad:?}");
        }
        // An `@` in the path is not userinfo.
        assert!(url("https://example.com/a@b").is_ok());
    }

    #[test]
    fn sysctls_and_modules() {
        assert!(sysctl_name("net.ipv4.conf.all.rp_filter").is_ok());
        assert!(sysctl_name("net/bridge/bridge-nf-call-iptables").is_ok());
        for bad in ["", "a\nb", "a b", "a=b", "net..x", "-x", "x."] {
            assert!(sysctl_name(bad).is_err(), "{bad:?}");
        }
        assert!(sysctl_value("x", "32768 60999").is_ok());
        for bad in ["", "0\nnet.ipv4.ip_forward = 0", " 1", "1\t", "é"] {
            assert!(sysctl_value("x", bad).is_err(), "{bad:?}");
        }
        assert!(module("ip_vs").is_ok());
        for bad in ["", "ip_vs\nevil", "a b", "../x", &"m".repeat(56)] {
            assert!(module(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kubelet_args_are_single_flags() {
        for ok in ["--v=2", "--node-labels=a=b,c=d", "--eviction-hard=memory.available<100Mi", "--fail-swap-on"] {
            assert!(kubelet_arg(ok).is_ok(), "{ok}");
        }
        for bad in ["-v=2", "--v 2", "--v=2\nExecStartPre=/bin/sh", "--x=\"a\"", "--x=$HOME", "--", "v=2"] {
            assert!(kubelet_arg(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn epochs_and_owners() {
        assert!(epoch("epoch", 1_762_905_600).is_ok());
        assert!(epoch("epoch", u32::MAX as u64 + 1).is_err());
        assert!(owner("uid", 0).is_ok() && owner("uid", u32::MAX).is_err());
    }

    #[test]
    fn overlay_paths() {
        assert!(overlay_path("etc/a.conf").is_ok() && overlay_path("/etc/a.conf").is_ok());
        for bad in ["", "/", "../x", "etc/../x", "etc//x", "etc/x/", "etc/a\nb", "./x"] {
            assert!(overlay_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn show_escapes_and_cuts() {
        assert_eq!(show("a\nb"), "\"a\\nb\"");
        assert!(show(&"x".repeat(300)).chars().count() < 90);
    }
}
