//! Validation of what a node is told at first boot.
//!
//! Every value that reaches kubeadm's configuration or kubelet's command line
//! from user-data, metadata or `kiln cluster init` passes through one of these
//! small, pure functions first. Each encodes one upstream rule and cites where
//! it lives (Kubernetes source path and function, or the documentation page),
//! so a node fails at once, naming the value and the fix, instead of minutes
//! later inside `kubeadm init` — or, worse, not failing at all (a negative
//! token TTL silently makes a token that never expires; a "node IP" with a
//! space in it becomes a second kubelet flag).
//!
//! Errors are one line: what is wrong with which value, then what to do.
//! Values are quoted with control characters escaped, so a hostile value
//! cannot forge extra log lines.

use std::cmp::Ordering;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// kube-apiserver's default secure port, which kubeadm uses for
/// `localAPIEndpoint.bindPort` (`KubeAPIServerPort` in
/// `cmd/kubeadm/app/constants/constants.go`) and therefore for a
/// `controlPlaneEndpoint` given without a port.
pub const DEFAULT_API_SERVER_PORT: u16 = 6443;

/// Quotes a user-supplied value for an error message: backticks, control
/// characters escaped, long values cut.
fn quote(s: &str) -> String {
    const MAX: usize = 80;
    let escaped: String = s.escape_debug().collect();
    match escaped.char_indices().nth(MAX) {
        Some((i, _)) => format!("`{}…`", &escaped[..i]),
        None => format!("`{escaped}`"),
    }
}

/// Whether `s` holds whitespace or a control character anywhere.
fn has_space_or_control(s: &str) -> bool {
    s.chars().any(|c| c.is_whitespace() || c.is_control())
}

// ---------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------

/// Go's `time.ParseDuration`, step for step (`src/time/format.go`,
/// `ParseDuration`, `leadingInt`, `leadingFraction`, `unitMap`).
/// Returns the sign and the magnitude in nanoseconds; `Err` carries the reason
/// in Go's words.
fn parse_go_duration(orig: &str) -> Result<(bool, u64), String> {
    const LIMIT: u64 = 1 << 63;
    let invalid = || "invalid duration".to_string();
    let mut s = orig;
    let mut neg = false;
    if let Some(rest) = s.strip_prefix('-') {
        neg = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    // Go: "Special case: if all that is left is "0", this is zero."
    if s == "0" {
        return Ok((neg, 0));
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut d: u64 = 0;
    while !s.is_empty() {
        let b = s.as_bytes();
        // The next character must be [0-9.].
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // Consume [0-9]* (leadingInt: an overflow is an error).
        let mut v: u64 = 0;
        let mut i = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            if v > LIMIT / 10 {
                return Err(invalid());
            }
            v = v * 10 + u64::from(b[i] - b'0');
            if v > LIMIT {
                return Err(invalid());
            }
            i += 1;
        }
        let pre = i > 0;
        s = &s[i..];
        // Consume (\.[0-9]*)? (leadingFraction: stops accumulating on overflow).
        let (mut f, mut scale, mut post) = (0u64, 1f64, false);
        if let Some(rest) = s.strip_prefix('.') {
            let b = rest.as_bytes();
            let mut i = 0;
            let mut overflow = false;
            while i < b.len() && b[i].is_ascii_digit() {
                if !overflow {
                    if f > (LIMIT - 1) / 10 {
                        overflow = true;
                    } else {
                        let y = f * 10 + u64::from(b[i] - b'0');
                        if y > LIMIT {
                            overflow = true;
                        } else {
                            f = y;
                            scale *= 10.0;
                        }
                    }
                }
                i += 1;
            }
            post = i > 0;
            s = &rest[i..];
        }
        if !pre && !post {
            // No digits (e.g. ".s" or "-.s").
            return Err(invalid());
        }
        // Consume the unit: everything up to the next '.' or digit. Both are
        // ASCII, so the cut is always on a character boundary.
        let u_len = s.bytes().position(|c| c == b'.' || c.is_ascii_digit()).unwrap_or(s.len());
        if u_len == 0 {
            return Err("missing unit".to_string());
        }
        let u = &s[..u_len];
        s = &s[u_len..];
        let unit: u64 = match u {
            "ns" => 1,
            // "µs" is U+00B5 (micro sign), "μs" U+03BC (Greek mu): Go takes both.
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => return Err(format!("unknown unit {}", quote(other))),
        };
        if v > LIMIT / unit {
            return Err(invalid());
        }
        v *= unit;
        if f > 0 {
            // Go: float64 is needed to be nanosecond accurate for fractions of hours.
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(invalid());
            }
        }
        d += v;
        if d > LIMIT {
            return Err(invalid());
        }
    }
    if !neg && d > LIMIT - 1 {
        return Err(invalid());
    }
    Ok((neg, d))
}

/// Explains a duration that Go's `time.ParseDuration` refuses; `more` follows
/// the examples.
fn duration_error(s: &str, why: &str, more: &str) -> String {
    let hint = if has_space_or_control(s) {
        "remove the spaces"
    } else if s.ends_with('d') || s.ends_with('w') || s.ends_with('y') {
        "there are no days, weeks or years: a day is 24h, a week 168h"
    } else {
        "write numbers with the units h, m, s, ms, us or ns"
    };
    format!(
        "{} is not a Go duration (Go's time.ParseDuration says: {why}); {hint}; e.g. 24h, 1h30m or 90s{more}",
        quote(s)
    )
}

/// Parses a duration the way Go's `time.ParseDuration` does, which is how
/// kubeadm and kubelet read every duration they are given (`metav1.Duration`
/// in their configuration files, `pflag` duration flags).
///
/// Rule: golang/go `src/time/format.go`, `ParseDuration` — an optionally
/// signed sequence of decimal numbers, each with an optional fraction and a
/// unit: `24h`, `1h30m`, `1.5h`, `.5s`, `300ms`. Units are `ns`, `us` (`µs`,
/// `μs`), `ms`, `s`, `m` and `h`; there are no days. A lone `0` needs no
/// unit; anything else does. Values past 2⁶³−1 ns (about 292 years) overflow.
/// No whitespace anywhere.
///
/// A leading `+` or `-` is accepted as Go does, but [`Duration`] cannot be
/// negative: a negative non-zero value is an error here (`-0s` is zero).
pub fn go_duration(s: &str) -> Result<Duration, String> {
    match parse_go_duration(s) {
        Ok((true, n)) if n > 0 => Err(format!(
            "{} is negative; give a positive duration such as 24h, or 0 where zero is meaningful",
            quote(s)
        )),
        Ok((_, n)) => Ok(Duration::from_nanos(n)),
        Err(why) => Err(duration_error(s, &why, "")),
    }
}

/// Validates the lifetime of a bootstrap token (`kiln cluster init
/// --token-ttl`, `bootstrapTokens[].ttl` in kubeadm's `InitConfiguration`).
///
/// The syntax is Go's (see [`go_duration`]); kubeadm decodes the field as a
/// `metav1.Duration`. `0` is allowed and means the token never expires —
/// callers may want to warn about it. A negative value is refused: kubeadm
/// writes an expiration only when the TTL is positive
/// (`cmd/kubeadm/app/apis/bootstraptoken/v1/utils.go`, `encodeTokenSecretData`:
/// `token.TTL.Duration > 0`), so `-1h` would silently create a token that
/// never expires. Values Go cannot hold (more than about 292 years) are
/// refused as Go refuses them.
pub fn token_ttl(s: &str) -> Result<Duration, String> {
    match parse_go_duration(s) {
        Ok((true, n)) if n > 0 => Err(format!(
            "token TTL {} is negative: kubeadm sets an expiration only for a positive TTL, so this token would never expire; use e.g. 24h, or 0 if a never-expiring token is really meant",
            quote(s)
        )),
        Ok((_, n)) => Ok(Duration::from_nanos(n)),
        Err(why) => Err(format!("token TTL {}", duration_error(s, &why, " (0 makes a token that never expires)"))),
    }
}

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------

/// `IsDNS1123Subdomain`: at most 253 characters of lower-case RFC 1123 labels
/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` joined by dots
/// (`staging/src/k8s.io/apimachinery/pkg/util/validation/validation.go`).
/// Returns why not, in a phrase.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    if s.len() > 253 {
        return Err(format!("it is {} characters long, more than 253", s.len()));
    }
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("it has upper-case letters (use {})", quote(&s.to_ascii_lowercase())));
    }
    if s.ends_with('.') {
        return Err("it ends with a dot".into());
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Err("it has an empty label (`..` or a leading dot)".into());
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
            return Err(format!("it contains {}; only a-z, 0-9, `-` and `.` are allowed", quote(&c.to_string())));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {} starts or ends with `-`", quote(label)));
        }
    }
    Ok(())
}

/// `[cluster] admin_user`: a Linux user name as `useradd` and cloud-init accept it
/// (`[a-z_][a-z0-9_-]*`, at most 32 bytes; the rule `kiln fleet` checks), not root.
/// It becomes the CN of the user's client certificate, so it can never name a
/// `system:` identity (no `:`).
pub fn admin_user(s: &str) -> Result<(), String> {
    let first_ok = s.bytes().next().is_some_and(|c| c.is_ascii_lowercase() || c == b'_');
    let rest_ok = s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-');
    if !first_ok || !rest_ok || s.len() > 32 {
        return Err(format!(
            "{:?} is not a user name: lowercase letters, digits, `_` and `-`, starting with a letter or `_`, at most 32",
            crate::http::escape(s)
        ));
    }
    if s == "root" {
        return Err(
            "root has /etc/kubernetes/admin.conf already: name the unprivileged user who should get a kubeconfig"
                .into(),
        );
    }
    Ok(())
}

/// Validates a node name: kubelet registers the Node object under it and
/// kubeadm writes it as `nodeRegistration.name`.
///
/// Rule: `pkg/apis/core/validation/validation.go`, `ValidateNodeName` =
/// `NameIsDNSSubdomain`, i.e. apimachinery's `IsDNS1123Subdomain`: lower case
/// letters, digits, `-` and `.`, each dot-separated label starting and ending
/// with a letter or digit, at most 253 characters.
pub fn node_name(s: &str) -> Result<(), String> {
    dns1123_subdomain(s).map_err(|why| {
        let fix = if s.contains('_') {
            format!(" (try {})", quote(&s.to_ascii_lowercase().replace('_', "-")))
        } else {
            String::new()
        };
        format!(
            "node name {} is not a lower-case RFC 1123 subdomain: {why}{fix}; use e.g. worker-1 or worker-1.example.com",
            quote(s)
        )
    })
}

/// Checks the name part of a qualified name: at most 63 characters of
/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn qualified_name_part(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name part is empty".into());
    }
    if name.len() > 63 {
        return Err(format!("the name part is {} characters long, more than 63", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Err(format!("it contains {}; only A-Z, a-z, 0-9, `-`, `_` and `.` are allowed", quote(&c.to_string())));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return Err("it must start and end with a letter or digit".into());
    }
    Ok(())
}

/// Validates a label key (also a taint key): Kubernetes' "qualified name".
///
/// Rule: apimachinery `IsQualifiedName`
/// (`staging/src/k8s.io/apimachinery/pkg/util/validation/validation.go`; in
/// recent releases an alias of `IsLabelKey` in
/// `staging/src/k8s.io/apimachinery/pkg/api/validate/content/kube.go`): an
/// optional prefix that is a DNS-1123 subdomain (at most 253 characters) and
/// `/`, then a name of at most 63 characters matching
/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
pub fn label_key(key: &str) -> Result<(), String> {
    let bad = |why: String| {
        format!(
            "label key {} is not a qualified name: {why}; use NAME or PREFIX/NAME, e.g. tier or example.com/tier",
            quote(key)
        )
    };
    let name = match key.split('/').collect::<Vec<_>>().as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                return Err(bad("the prefix before `/` is empty".into()));
            }
            dns1123_subdomain(prefix).map_err(|why| bad(format!("prefix {}: {why}", quote(prefix))))?;
            *name
        }
        _ => return Err(bad("it has more than one `/`".into())),
    };
    qualified_name_part(name).map_err(bad)
}

/// Validates a label value (also a taint value).
///
/// Rule: apimachinery `IsValidLabelValue` (alias of `IsLabelValue` in
/// `staging/src/k8s.io/apimachinery/pkg/api/validate/content/kube.go`): empty,
/// or at most 63 characters matching `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
/// This also keeps `,` and `=` out of kubelet's `--node-labels` and
/// `--register-with-taints`, which split on them.
pub fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    let why = if value.len() > 63 {
        Err(format!("it is {} characters long, more than 63", value.len()))
    } else {
        qualified_name_part(value).map_err(|w| w.replace("the name part", "it"))
    };
    why.map_err(|why| {
        format!(
            "label value {} is not valid: {why}; use at most 63 of A-Z, a-z, 0-9, `-`, `_`, `.` starting and ending with a letter or digit, e.g. blue or v1.2, or an empty value",
            quote(value)
        )
    })
}

/// The namespace (prefix) of a label key, or `""`.
fn label_namespace(key: &str) -> &str {
    key.split_once('/').map(|(ns, _)| ns).unwrap_or("")
}

/// Labels a kubelet may set on its own Node object in the reserved
/// namespaces (`staging/src/k8s.io/kubelet/pkg/apis/well_known_labels.go`,
/// `kubeletLabels`; values from `staging/src/k8s.io/api/core/v1/well_known_labels.go`).
const KUBELET_LABELS: [&str; 11] = [
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// Label namespaces a kubelet may set, with any subdomain of them
/// (`kubeletLabelNamespaces`: `LabelNamespaceSuffixKubelet`, `LabelNamespaceSuffixNode`).
const KUBELET_LABEL_NAMESPACES: [&str; 2] = ["kubelet.kubernetes.io", "node.kubernetes.io"];

/// Whether a kubelet may set label `key` on its own Node object.
///
/// Rule: `staging/src/k8s.io/kubelet/pkg/apis/well_known_labels.go`,
/// `IsKubeletLabel`: the key is in the allowed set (`kubernetes.io/hostname`,
/// `topology.kubernetes.io/zone`, `kubernetes.io/os`, …), or its namespace is
/// `kubelet.kubernetes.io` or `node.kubernetes.io` or a subdomain of one.
/// Keys outside the `kubernetes.io` and `k8s.io` namespaces are not covered
/// by this list (see [`label`]).
pub fn is_kubelet_label(key: &str) -> bool {
    if KUBELET_LABELS.contains(&key) {
        return true;
    }
    let ns = label_namespace(key);
    KUBELET_LABEL_NAMESPACES
        .iter()
        .any(|allowed| ns == *allowed || ns.strip_suffix(allowed).is_some_and(|p| p.ends_with('.')))
}

/// Whether a key is in the `kubernetes.io` or `k8s.io` namespaces
/// (`cmd/kubelet/app/options/options.go`, `isKubernetesLabel`).
fn is_kubernetes_label(key: &str) -> bool {
    let ns = label_namespace(key);
    ["kubernetes.io", "k8s.io"]
        .iter()
        .any(|reserved| ns == *reserved || ns.strip_suffix(reserved).is_some_and(|p| p.ends_with('.')))
}

/// Validates a node label that kiln hands to kubelet (`--node-labels` via
/// kubeadm's `nodeRegistration.kubeletExtraArgs`).
///
/// Rules: the key is a qualified name ([`label_key`]) and the value a label
/// value ([`label_value`]); and kubelet refuses to start when `--node-labels`
/// holds a key in the `kubernetes.io` or `k8s.io` namespaces that it may not
/// set on itself (`cmd/kubelet/app/options/options.go`, `ValidateKubeletFlags`:
/// `isKubernetesLabel(k) && !kubeletapis.IsKubeletLabel(k)`, "unknown
/// 'kubernetes.io' or 'k8s.io' labels specified with --node-labels"; the
/// NodeRestriction admission plugin enforces the same on the API side). So
/// `node-role.kubernetes.io/worker` is refused here: it has to be set by an
/// administrator after the node joins.
pub fn label(key: &str, value: &str) -> Result<(), String> {
    label_key(key)?;
    label_value(value)?;
    if is_kubernetes_label(key) && !is_kubelet_label(key) {
        return Err(format!(
            "node label {} is in the reserved kubernetes.io/k8s.io namespace, and kubelet refuses to start with it in --node-labels (only {} and the *.kubelet.kubernetes.io/ and *.node.kubernetes.io/ namespaces are allowed); set it from the control plane after the node joins (kubectl label node NAME {}={}), or use your own prefix such as example.com/{}",
            quote(key),
            KUBELET_LABELS.join(", "),
            key,
            value,
            key.rsplit('/').next().unwrap_or(key),
        ));
    }
    Ok(())
}

/// Validates a node taint (`nodeRegistration.taints` in kubeadm's
/// configuration, which kubeadm passes to kubelet as `--register-with-taints`
/// on workers).
///
/// Rule: `pkg/apis/core/validation/validation.go`, `validateNodeTaints`: the
/// key is a qualified name (`ValidateLabelName`), the value a label value
/// (`IsValidLabelValue`), and `validateTaintEffect` with `allowEmpty=false`:
/// the effect is required and one of `NoSchedule`, `PreferNoSchedule`,
/// `NoExecute`, spelled exactly so.
pub fn taint(key: &str, value: Option<&str>, effect: &str) -> Result<(), String> {
    const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
    label_key(key).map_err(|e| format!("taint: {}", e.replacen("label key", "key", 1)))?;
    if let Some(v) = value {
        label_value(v).map_err(|e| format!("taint {}: {}", quote(key), e.replacen("label value", "value", 1)))?;
    }
    if EFFECTS.contains(&effect) {
        return Ok(());
    }
    let hint = match EFFECTS.iter().find(|e| e.eq_ignore_ascii_case(effect)) {
        Some(e) => format!(" (did you mean {e}? the spelling is case-sensitive)"),
        None => String::new(),
    };
    let what = if effect.is_empty() { "has no effect".to_string() } else { format!("has effect {}", quote(effect)) };
    Err(format!("taint {} {what}{hint}; the effect must be NoSchedule, PreferNoSchedule or NoExecute", quote(key)))
}

// ---------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------

/// Where nodes reach the API server: `controlPlaneEndpoint` in kubeadm's
/// `ClusterConfiguration` and `discovery.bootstrapToken.apiServerEndpoint` in
/// its `JoinConfiguration`.
///
/// `host` is a lower-case DNS name, an IPv4 address, or an IPv6 address in
/// its canonical text form *without* brackets; [`fmt::Display`] renders
/// `host:port`, bracketing IPv6 (`[2001:db8::1]:6443`), which is what both
/// kubeadm fields need.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// DNS name (lower case), IPv4 address, or IPv6 address without brackets.
    pub host: String,
    /// TCP port, 1-65535.
    pub port: u16,
}

impl Endpoint {
    /// The host as an IP address, when it is one (not a DNS name).
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.parse::<Ipv6Addr>().is_ok() {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parses a TCP port 1-65535 written in plain decimal digits.
fn port_number(p: &str) -> Result<u16, String> {
    if p.is_empty() {
        return Err("the port after `:` is empty".into());
    }
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {} is not a number", quote(p)));
    }
    match p.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(format!("port {p} is outside 1-65535")),
    }
}

/// Parses `control_plane_endpoint` (also `kiln cluster init --endpoint`):
/// `HOST[:PORT]`.
///
/// Rule: kubeadm's `ParseHostPort` (`cmd/kubeadm/app/util/endpoint.go`, used by
/// `ValidateHostPort` and `SetClusterDynamicDefaults`): `host:port`,
/// `ipv4:port` or `[ipv6]:port`, the port optional and 1-65535 (`ParsePort`),
/// the host an IP address or an RFC 1123 subdomain (`IsDNS1123Subdomain`).
/// Without a port kubeadm uses the local API server's `bindPort`, whose
/// default is 6443; kiln fills in [`DEFAULT_API_SERVER_PORT`] and always
/// renders the port.
///
/// kiln's decisions where kubeadm leaves room:
/// * A bare IPv6 address (`2001:db8::1`) is accepted, as `ParseHostPort`
///   accepts it, and normalised to `[2001:db8::1]:6443`. Because of that, a
///   bare `2001:db8::1:6443` is the address `2001:db8::1:6443`, not a port:
///   write `[2001:db8::1]:6443`.
/// * `[2001:db8::1]` without a port is accepted and gets 6443 (kubeadm itself
///   would refuse the brackets without a port, but kiln never hands it that form).
/// * Brackets hold IPv6 only; IPv6 zones (`%eth0`) are refused.
/// * DNS names are lower-cased (kubeadm accepts only lower case; DNS is
///   case-insensitive), and each label must be at most 63 characters, as DNS
///   requires. A dotted all-numeric host that is not an IPv4 address
///   (`10.0.0.256`) is refused rather than taken as a DNS name.
/// * No scheme (`https://`), path, user, whitespace or control characters.
pub fn endpoint(s: &str) -> Result<Endpoint, String> {
    let bad = |why: &str| {
        format!(
            "API server endpoint {}: {why}; use HOST[:PORT], e.g. api.example.com:6443, 10.0.0.10:6443 or [2001:db8::10]:6443",
            quote(s)
        )
    };
    if s.is_empty() {
        return Err(bad("it is empty"));
    }
    if has_space_or_control(s) {
        return Err(bad("it contains whitespace or a control character"));
    }
    if let Some((scheme, _)) = s.split_once("://") {
        return Err(bad(&format!("drop the scheme `{scheme}://`; kubeadm adds https:// itself")));
    }
    if s.contains('/') || s.contains('?') || s.contains('#') {
        return Err(bad("only a host and a port are allowed, no path"));
    }
    if s.contains('@') {
        return Err(bad("only a host and a port are allowed, no user"));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, tail) = rest.split_once(']').ok_or_else(|| bad("`[` is never closed"))?;
        let addr: Ipv6Addr = inner.parse().map_err(|_| {
            if inner.contains('%') {
                bad("IPv6 zones (`%eth0`) cannot be used; give a global or unique-local address")
            } else if inner.parse::<Ipv4Addr>().is_ok() {
                bad("brackets are for IPv6 addresses only; write an IPv4 address without them")
            } else {
                bad(&format!("{} inside [ ] is not an IPv6 address", quote(inner)))
            }
        })?;
        let port = match tail.strip_prefix(':') {
            Some(p) => port_number(p).map_err(|why| bad(&why))?,
            None if tail.is_empty() => DEFAULT_API_SERVER_PORT,
            None => return Err(bad("expected `:PORT` after `]`")),
        };
        return Ok(Endpoint { host: addr.to_string(), port });
    }
    if let Ok(addr) = s.parse::<Ipv6Addr>() {
        // kubeadm's ParseHostPort takes a bare IPv6 address as a host without a port.
        return Ok(Endpoint { host: addr.to_string(), port: DEFAULT_API_SERVER_PORT });
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, _)) if h.contains(':') => {
            return Err(bad("an IPv6 address with a port must be in brackets, like [2001:db8::1]:6443"))
        }
        Some((h, p)) => (h, port_number(p).map_err(|why| bad(&why))?),
        None => (s, DEFAULT_API_SERVER_PORT),
    };
    if host.is_empty() {
        return Err(bad("the host before `:` is empty"));
    }
    if let Ok(addr) = host.parse::<Ipv4Addr>() {
        return Ok(Endpoint { host: addr.to_string(), port });
    }
    if host.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit())) {
        return Err(bad(&format!("{} looks like an IPv4 address but is not one", quote(host))));
    }
    let lower = host.to_ascii_lowercase();
    if let Err(why) = dns1123_subdomain(&lower) {
        return Err(bad(&format!("{} is not a host name or IP address: {why}", quote(host))));
    }
    if let Some(label) = lower.split('.').find(|l| l.len() > 63) {
        return Err(bad(&format!(
            "{} is not a host name or IP address: DNS label {} is longer than 63 characters",
            quote(host),
            quote(label)
        )));
    }
    Ok(Endpoint { host: lower, port })
}

/// Validates the node's IP for kubelet's `--node-ip` (kubeadm
/// `nodeRegistration.kubeletExtraArgs`): one IPv4 or IPv6 address, nothing
/// else — no spaces (which would smuggle further flags onto kubelet's command
/// line), no list, no brackets, no prefix length, no zone.
///
/// Rules:
/// * kubelet's own parsing is lenient: `ParseNodeIPArgument`
///   (`staging/src/k8s.io/component-helpers/node/util/ips.go`, `parseNodeIP`
///   with `sloppy=true`) trims spaces and logs-and-ignores entries it cannot
///   parse, so a bad value does not stop kubelet; it silently picks another
///   address. kiln therefore refuses what kubelet would ignore.
/// * kubelet refuses loopback, multicast, link-local unicast and all-zeros
///   addresses as the node IP (`pkg/kubelet/kubelet_node_status.go`,
///   `validateNodeIP`); so does this function. (That the address is on one of
///   the host's interfaces, kubelet's last check there, is not a pure question
///   and is left to the agent.)
///
/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.5`) is returned as the IPv4
/// address it stands for, which is how Go (and so kubelet) reads it.
pub fn node_ip(s: &str) -> Result<IpAddr, String> {
    let bad = |why: &str| format!("node IP {}: {why}; give one address, e.g. 10.0.0.5 or 2001:db8::5", quote(s));
    if s.is_empty() {
        return Err(bad("it is empty"));
    }
    if has_space_or_control(s) {
        return Err(bad(
            "it contains whitespace or a control character, which would put more than an address on kubelet's command line",
        ));
    }
    if s.contains(',') {
        return Err(bad("it is a list; a dual-stack node gives one IPv4 and one IPv6 address to node_ips"));
    }
    if s.contains('/') {
        return Err(bad("it has a prefix length; drop the /N"));
    }
    if s.starts_with('[') {
        return Err(bad("drop the brackets"));
    }
    let ip: IpAddr = s.parse().map_err(|_| {
        if s.contains('%') {
            bad("IPv6 zones (`%eth0`) cannot be used")
        } else {
            bad("it is not an IPv4 or IPv6 address")
        }
    })?;
    let ip = ip.to_canonical();
    // kubelet validateNodeIP, in its order.
    let refused = if ip.is_loopback() {
        Some("it is a loopback address")
    } else if ip.is_multicast() {
        Some("it is a multicast address")
    } else if match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    } {
        Some("it is a link-local address")
    } else if ip.is_unspecified() {
        Some("it is the all-zeros address (leave node_ip unset to let kubelet choose)")
    } else {
        None
    };
    match refused {
        Some(why) => Err(format!(
            "node IP {}: {why}, which kubelet refuses as a node IP; give the address other nodes reach this one at",
            quote(s)
        )),
        None => Ok(ip),
    }
}

/// Validates kubelet's dual-stack `--node-ip` form: one address, or an IPv4
/// and an IPv6 address separated by a comma (either order); each as strict as
/// [`node_ip`].
///
/// Rule: `staging/src/k8s.io/component-helpers/node/util/ips.go`,
/// `parseNodeIP`: "must contain either a single IP or a dual-stack pair of
/// IPs" — at most two, of different families, neither `0.0.0.0` nor `::`.
/// kubelet accepts the pair only with no `--cloud-provider` or with
/// `external` (`ParseNodeIPArgument`); kiln sets no other.
pub fn node_ips(s: &str) -> Result<Vec<IpAddr>, String> {
    let parts: Vec<&str> = s.split(',').collect();
    if parts.len() > 2 {
        return Err(format!(
            "node IPs {}: at most two addresses, one IPv4 and one IPv6, e.g. 10.0.0.5,2001:db8::5",
            quote(s)
        ));
    }
    let ips = parts.iter().map(|p| node_ip(p)).collect::<Result<Vec<_>, _>>().map_err(|e| {
        if parts.len() > 1 {
            format!("node IPs {}: {e}", quote(s))
        } else {
            e
        }
    })?;
    if let [a, b] = ips.as_slice() {
        if a.is_ipv4() == b.is_ipv4() {
            return Err(format!(
                "node IPs {}: both are {}; a dual-stack pair is one IPv4 and one IPv6 address, e.g. 10.0.0.5,2001:db8::5",
                quote(s),
                if a.is_ipv4() { "IPv4" } else { "IPv6" }
            ));
        }
    }
    Ok(ips)
}

/// Validates the port the node's own API server listens on
/// (`localAPIEndpoint.bindPort`). This is separate from the endpoint's port:
/// a load balancer may listen on 443 in front of API servers bound to 6443.
///
/// Rule: `cmd/kubeadm/app/apis/kubeadm/validation/validation.go`,
/// `ValidatePort` → `ParsePort` (`cmd/kubeadm/app/util/endpoint.go`):
/// 1-65535 inclusive.
pub fn bind_port(p: i64) -> Result<u16, String> {
    match u16::try_from(p) {
        Ok(port) if port >= 1 => Ok(port),
        _ => Err(format!(
            "API server bind port {p} is outside 1-65535; use e.g. {DEFAULT_API_SERVER_PORT} (the endpoint's port may differ, e.g. a load balancer on 443)"
        )),
    }
}

// ---------------------------------------------------------------------------
// KubeletConfiguration fields
// ---------------------------------------------------------------------------

/// The JSON type kubelet decodes a KubeletConfiguration field as (the Go type in
/// k8s.io/kubelet `config/v1beta1/types.go`; the table is `kubelet_fields::FIELDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeletKind {
    /// `bool`.
    Bool,
    /// `int32`.
    Int32,
    /// `int64`.
    Int64,
    /// `float64`.
    Float,
    /// `string` or a string type.
    Str,
    /// `metav1.Duration`: a Go duration string (`10s`).
    Duration,
    /// `[]string`.
    StrList,
    /// `map[string]string`.
    StrMap,
    /// `map[string]bool`.
    BoolMap,
    /// `map[string][]string`.
    StrListMap,
    /// A list of structs: an array of tables.
    List,
    /// A struct: a table (its fields are kubelet's to check).
    Object,
}

impl KubeletKind {
    /// How a node.toml writes a value of this kind, for errors.
    fn phrase(self) -> &'static str {
        match self {
            KubeletKind::Bool => "a boolean (true or false)",
            KubeletKind::Int32 => "an integer (int32)",
            KubeletKind::Int64 => "an integer (int64)",
            KubeletKind::Float => "a number",
            KubeletKind::Str => "a string",
            KubeletKind::Duration => "a Go duration string such as \"10s\"",
            KubeletKind::StrList => "a list of strings",
            KubeletKind::StrMap => "a table of strings",
            KubeletKind::BoolMap => "a table of booleans",
            KubeletKind::StrListMap => "a table of lists of strings",
            KubeletKind::List => "a list of tables",
            KubeletKind::Object => "a table",
        }
    }
}

/// The TOML type of `v`, in a word.
fn toml_type(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "a list",
        toml::Value::Table(_) => "a table",
    }
}

/// Checks one `[node] kubelet` value against the type kubelet decodes `key` as: a
/// value of the wrong type makes kubelet refuse its whole config file and crash-loop
/// (`maxPods = "42"`). `key` must be a field of KubeletConfiguration (unknown keys
/// are refused with a suggestion); `apiVersion` and `kind` are kiln's to write.
pub fn kubelet_setting(key: &str, v: &toml::Value) -> Result<(), String> {
    let kind = kubelet_field(key)?;
    let ok = match (kind, v) {
        (KubeletKind::Bool, toml::Value::Boolean(_)) => true,
        (KubeletKind::Int32, toml::Value::Integer(n)) => i32::try_from(*n).is_ok(),
        (KubeletKind::Int64, toml::Value::Integer(_)) => true,
        (KubeletKind::Float, toml::Value::Float(_) | toml::Value::Integer(_)) => true,
        (KubeletKind::Str, toml::Value::String(_)) => true,
        (KubeletKind::Duration, toml::Value::String(d)) => {
            go_duration(d).map_err(|e| format!("{key} = {}: {e}", quote(d)))?;
            true
        }
        (KubeletKind::StrList, toml::Value::Array(a)) => a.iter().all(toml::Value::is_str),
        (KubeletKind::StrMap, toml::Value::Table(t)) => t.values().all(toml::Value::is_str),
        (KubeletKind::BoolMap, toml::Value::Table(t)) => t.values().all(toml::Value::is_bool),
        (KubeletKind::StrListMap, toml::Value::Table(t)) => {
            t.values().all(|l| l.as_array().is_some_and(|a| a.iter().all(toml::Value::is_str)))
        }
        (KubeletKind::List, toml::Value::Array(a)) => a.iter().all(toml::Value::is_table),
        (KubeletKind::Object, toml::Value::Table(_)) => true,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let got = match (kind, v) {
        (KubeletKind::Int32, toml::Value::Integer(n)) => format!("{n}, outside int32"),
        _ => toml_type(v).to_string(),
    };
    let hint = match (kind, v) {
        (KubeletKind::Int32 | KubeletKind::Int64, toml::Value::String(s)) if s.trim().parse::<i64>().is_ok() => {
            format!("; write {key} = {} (no quotes)", s.trim())
        }
        (KubeletKind::Bool, toml::Value::String(s)) if matches!(s.as_str(), "true" | "false") => {
            format!("; write {key} = {s} (no quotes)")
        }
        (KubeletKind::Str | KubeletKind::Duration, toml::Value::Integer(n)) => format!("; write {key} = \"{n}\""),
        _ => String::new(),
    };
    Err(format!(
        "{key}: KubeletConfiguration.{key} is {}, not {got} (kubelet would refuse its config and not start){hint}",
        kind.phrase()
    ))
}

/// The kind of KubeletConfiguration field `key`, or why it is not one.
pub fn kubelet_field(key: &str) -> Result<KubeletKind, String> {
    let fields = crate::kubelet_fields::FIELDS;
    if let Ok(i) = fields.binary_search_by(|(k, _)| k.cmp(&key)) {
        return Ok(fields[i].1);
    }
    let why = if matches!(key, "apiVersion" | "kind") {
        "kiln-firstboot writes the patch's apiVersion and kind".to_string()
    } else {
        match did_you_mean(key, fields.iter().map(|(k, _)| *k)) {
            Some(s) => format!("did you mean `{s}`?"),
            None => "see KubeletConfiguration (kubelet.config.k8s.io/v1beta1) for the fields".to_string(),
        }
    };
    Err(format!("{}: not a KubeletConfiguration field; {why}", quote(key)))
}

/// The candidate closest to `word` by edit distance (case ignored), when it is close
/// enough to be a typo of it: at most one edit for short words, a third of the word.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let w: Vec<char> = word.to_lowercase().chars().collect();
    let limit = (w.len() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&w, &c.to_lowercase().chars().collect::<Vec<_>>()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance with adjacent transpositions (optimal string alignment): `rloe` is
/// one edit from `role`.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, v) in d[0].iter_mut().enumerate() {
        *v = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j - 1] + cost).min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

// ---------------------------------------------------------------------------
// Versions
// ---------------------------------------------------------------------------

/// A Kubernetes release version `vMAJOR.MINOR.PATCH[-PRE]`, as `kubeadm
/// version`, `kubelet --version` and `kubernetesVersion` spell it.
///
/// Ordering is semantic-versioning precedence, as Kubernetes'
/// `k8s.io/apimachinery/pkg/util/version` compares: `v1.31.0-rc.1` sorts
/// before `v1.31.0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    /// Major version (1 for every Kubernetes release so far).
    pub major: u64,
    /// Minor version: the unit of every skew rule.
    pub minor: u64,
    /// Patch version.
    pub patch: u64,
    /// Pre-release without the dash (`rc.1`, `alpha.0`), empty for a release.
    pub pre: String,
}

impl Version {
    /// `vMAJOR.MINOR.0`, the start of a minor release (without pre-release).
    fn minor_start(major: u64, minor: u64) -> Version {
        Version { major, minor, patch: 0, pre: String::new() }
    }

    /// `vMAJOR.MINOR` for messages.
    fn minor_str(&self) -> String {
        format!("v{}.{}", self.major, self.minor)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre)?;
        }
        Ok(())
    }
}

/// Semantic-versioning precedence of two pre-release strings (empty = release).
fn cmp_pre(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        (false, false) => {}
    }
    let mut xs = a.split('.');
    let mut ys = b.split('.');
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => x.cmp(y),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| cmp_pre(&self.pre, &other.pre))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Parses `v1.34.2` or `1.34.2`, with an optional pre-release such as
/// `-rc.1` (kept).
///
/// Rule: the semantic-version form Kubernetes parses with
/// `k8s.io/apimachinery/pkg/util/version.ParseSemantic` (used by kubeadm for
/// `kubernetesVersion`, its own version and `kubelet --version`): three
/// numbers without leading zeros, then optionally `-` and dot-separated
/// identifiers of `[0-9A-Za-z-]`. Build metadata (`+…`) is refused: no
/// Kubernetes release carries it and kiln pins releases.
pub fn version(s: &str) -> Result<Version, String> {
    let bad =
        |why: &str| format!("{} is not a Kubernetes version: {why}; write e.g. v1.34.2 or v1.35.0-rc.1", quote(s));
    if has_space_or_control(s) {
        return Err(bad("it contains whitespace or a control character"));
    }
    let body = s.strip_prefix('v').unwrap_or(s);
    if body.contains('+') {
        return Err(bad("build metadata (`+…`) is not part of a release version"));
    }
    let (core, pre) = match body.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (body, None),
    };
    let nums: Vec<&str> = core.split('.').collect();
    let [major, minor, patch] = nums.as_slice() else {
        return Err(bad("expected three numbers MAJOR.MINOR.PATCH"));
    };
    let num = |p: &str| -> Result<u64, String> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(&format!("{} is not a number", quote(p))));
        }
        if p.len() > 1 && p.starts_with('0') {
            return Err(bad(&format!("{} has a leading zero", quote(p))));
        }
        p.parse().map_err(|_| bad(&format!("{} is too large", quote(p))))
    };
    let (major, minor, patch) = (num(major)?, num(minor)?, num(patch)?);
    let pre = match pre {
        None => String::new(),
        Some(p) => {
            for id in p.split('.') {
                if id.is_empty() {
                    return Err(bad("the pre-release has an empty part"));
                }
                if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return Err(bad("the pre-release may hold only A-Z, a-z, 0-9, `-` and `.`"));
                }
                if id.len() > 1 && id.starts_with('0') && id.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("a numeric pre-release part has a leading zero"));
                }
            }
            p.to_string()
        }
    };
    Ok(Version { major, minor, patch, pre })
}

/// How many minor versions older than kubeadm a kubelet may be:
/// `MinimumKubeletVersion = getSkewedKubernetesVersion(-3)` since kubeadm
/// v1.29 (kubernetes/kubernetes#120825), `-1` before.
fn kubeadm_kubelet_skew(kubeadm: &Version) -> u64 {
    if (kubeadm.major, kubeadm.minor) >= (1, 29) {
        3
    } else {
        1
    }
}

/// Checks that an image's kubeadm and kubelet fit the cluster's control
/// plane, for the init node (`joining == false`) or a joining node.
///
/// Rules, in the order checked (minor versions decide, as upstream's do):
/// 1. All three share the major version.
/// 2. The control plane is not newer than kubeadm. On init, kubeadm's
///    `KubernetesVersionCheck` (`cmd/kubeadm/app/preflight/checks.go`) only
///    warns "Kubernetes version is greater than kubeadm version"; kubeadm's
///    skew policy (kubernetes.io, "Creating a cluster with kubeadm", "kubeadm's
///    skew against the Kubernetes version": the control plane is kubeadm's
///    version or one older) does not support it, and on join the kubeadm
///    binary must match the one that created or last upgraded the cluster
///    ("kubeadm's skew against kubeadm"). kiln refuses both.
/// 3. The control plane is at least `MinimumControlPlaneVersion` =
///    `vMAJOR.(kubeadm minor − 1).0` (`cmd/kubeadm/app/constants/constants.go`),
///    enforced by `NormalizeKubernetesVersion`
///    (`cmd/kubeadm/app/util/config/common.go`: "this version of kubeadm only
///    supports deploying clusters with the control plane version >= …") on
///    init and, through `FetchInitConfigurationFromCluster` →
///    `SetClusterDynamicDefaults`, on join.
/// 4. kubelet is not newer than the control plane: on init kubeadm's
///    `KubeletVersionCheck` fails with `[ERROR KubeletVersion]` "the kubelet
///    version is higher than the control plane version"; on join kubeadm runs
///    that check without the cluster version, but the version skew policy
///    (kubernetes.io/releases/version-skew-policy, "kubelet must not be newer
///    than kube-apiserver") still forbids it.
/// 5. kubelet is at least `MinimumKubeletVersion` (same file):
///    `vMAJOR.(kubeadm minor − 3).0` from kubeadm v1.29, `− 1` before
///    (`KubeletVersionCheck`: "Kubelet version … is lower than kubeadm can
///    support").
///
/// The version skew policy's lower bound for kubelet (at most three minor
/// versions older than kube-apiserver, two for kubelets older than v1.25)
/// follows from 3 and 5 and needs no check of its own: kubelet ≥ kubeadm − 3
/// ≥ control plane − 3 from kubeadm v1.29 (whose kubelets are ≥ v1.26), and
/// kubelet ≥ kubeadm − 1 ≥ control plane − 1 before.
pub fn skew(kubeadm: &Version, kubelet: &Version, cluster: &Version, joining: bool) -> Result<(), String> {
    let cp = cluster.minor_str();
    if kubelet.major != cluster.major || kubeadm.major != cluster.major {
        return Err(format!(
            "kubeadm {kubeadm}, kubelet {kubelet} and the {cluster} control plane differ in major version; build the image with kubeadm and kubelet {cp}.x"
        ));
    }
    if cluster.minor > kubeadm.minor {
        return Err(if joining {
            format!(
                "kubeadm {kubeadm} cannot join a {cluster} cluster: the kubeadm used for `kubeadm join` must match the one that created or last upgraded the cluster (kubeadm skew policy); build the image with kubeadm {cp}.x"
            )
        } else {
            format!(
                "kubeadm {kubeadm} cannot deploy a {cluster} control plane: kubeadm deploys its own minor version or the one before it (kubeadm skew policy; kubeadm's KubernetesVersionCheck only warns); build the image with kubeadm {cp}.x"
            )
        });
    }
    let min_cp = Version::minor_start(kubeadm.major, kubeadm.minor.saturating_sub(1));
    if *cluster < min_cp {
        return Err(format!(
            "kubeadm {kubeadm} only supports control planes >= {min_cp} (MinimumControlPlaneVersion, checked by NormalizeKubernetesVersion on init and join), and the cluster is {cluster}; build the image with kubeadm {cp}.x"
        ));
    }
    if kubelet.minor > cluster.minor {
        let rule = if joining {
            "the version skew policy: kubelet must not be newer than kube-apiserver"
        } else {
            "kubeadm's [ERROR KubeletVersion]: the kubelet version is higher than the control plane version"
        };
        return Err(format!(
            "kubelet {kubelet} is newer than the {cluster} control plane ({rule}); build the image with kubelet {cp}.x for a {cp} cluster"
        ));
    }
    let n = kubeadm_kubelet_skew(kubeadm);
    let min_kubelet = Version::minor_start(kubeadm.major, kubeadm.minor.saturating_sub(n));
    if *kubelet < min_kubelet {
        return Err(format!(
            "kubelet {kubelet} is older than kubeadm {kubeadm} supports ([ERROR KubeletVersion]: MinimumKubeletVersion is {min_kubelet}, kubeadm's minor version - {n}); build the image with kubelet {cp}.x for a {cp} cluster"
        ));
    }
    Ok(())
}

/// The kubeadm configuration API version kiln renders for a kubeadm binary.
/// The kubeadm binary's version decides (it is the program that reads the
/// file), not the control plane's: kubeadm v1.31 deploying a v1.30 control
/// plane reads v1beta4.
///
/// Rules:
/// * `kubeadm.k8s.io/v1beta4` from kubeadm v1.31 (kubernetes/kubernetes#125029,
///   "kubeadm: enable the v1beta4 API"; v1beta3 is deprecated from then on).
/// * `kubeadm.k8s.io/v1beta3` from kubeadm v1.22 (kubernetes/kubernetes#101129,
///   which added v1beta3 and removed v1beta1).
/// * Older kubeadm only reads v1beta2, which kiln does not render (and which
///   kubeadm v1.27 removed: kubernetes/kubernetes#114540): an error.
pub fn api_version_for_kubeadm(kubeadm: &Version) -> Result<&'static str, String> {
    match (kubeadm.major, kubeadm.minor) {
        (1, m) if m >= 31 => Ok("kubeadm.k8s.io/v1beta4"),
        (1, m) if m >= 22 => Ok("kubeadm.k8s.io/v1beta3"),
        (1, _) => Err(format!(
            "kubeadm {kubeadm} predates the kubeadm.k8s.io/v1beta3 configuration (added in v1.22) and kiln renders only v1beta3 and v1beta4; build the image with kubeadm v1.22 or newer (v1.25 or newer for kiln's kubelet patches)"
        )),
        _ => Err(format!(
            "kubeadm {kubeadm} has a major version kiln does not know; kiln renders kubeadm.k8s.io/v1beta3 and v1beta4 for kubeadm v1.x"
        )),
    }
}

/// Whether kubeadm applies `kubeletconfiguration` patches (`--patches` /
/// `patches.directory` with a `kubeletconfiguration+….json` file), which kiln
/// uses for node-specific KubeletConfiguration fields.
///
/// Rule: the `kubeletconfiguration` patch target was added in kubeadm v1.25
/// (kubernetes/kubernetes#110405, CHANGELOG-1.25); older kubeadm ignores
/// the patch ("ignoring patch target kubeletconfiguration", kubernetes/kubeadm#2860).
pub fn supports_kubelet_patches(kubeadm: &Version) -> bool {
    (kubeadm.major, kubeadm.minor) >= (1, 25)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn admin_user_is_a_plain_user_name() {
        for ok in ["kiln", "core", "_svc", "a-b_1"] {
            assert!(admin_user(ok).is_ok(), "{ok}");
        }
        for bad in ["", "root", "Kiln", "1abc", "system:masters", "a b", "-x", &"a".repeat(33)] {
            assert!(admin_user(bad).is_err(), "{bad:?}");
        }
    }

    fn v(s: &str) -> Version {
        version(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn go_durations_parse_like_go() {
        let ok = [
            ("0", 0),
            ("-0", 0),
            ("+0", 0),
            ("0s", 0),
            ("24h", 24 * 3600 * SEC),
            ("1h30m", 5400 * SEC),
            ("90s", 90 * SEC),
            ("1.5h", 5400 * SEC),
            (".5s", SEC / 2),
            ("5.h", 5 * 3600 * SEC),
            ("+5s", 5 * SEC),
            ("300ms", 300_000_000),
            ("1us", 1_000),
            ("1\u{b5}s", 1_000),
            ("1\u{3bc}s", 1_000),
            ("1ns", 1),
            ("1h1m1s1ms1us1ns", 3661 * SEC + 1_001_001),
            ("0.000000001s", 1),
            // Go's largest Duration.
            ("9223372036854775807ns", (1 << 63) - 1),
            ("2562047h47m16.854775807s", (1 << 63) - 1),
        ];
        for (s, want) in ok {
            assert_eq!(go_duration(s), Ok(Duration::from_nanos(want)), "{s}");
        }
        let bad = [
            "",
            "forever",
            "1d",
            "1w",
            "24 h",
            " 24h",
            "24h ",
            "24h\n",
            "1",
            "1h30",
            "h",
            ".",
            ".s",
            "-",
            "+",
            "1.2.3s",
            "1H",
            "1hour",
            "9223372036854775808ns",
            "2562048h",
            "99999999999999999999s",
            "0x10s",
            "--1h",
            "1h-1m",
            "１h",
        ];
        for s in bad {
            assert!(go_duration(s).is_err(), "{s:?} was accepted: {:?}", go_duration(s));
        }
        // A negative value is valid Go but not a std Duration.
        assert!(go_duration("-1h").unwrap_err().contains("negative"));
    }

    #[test]
    fn duration_errors_name_the_value_and_an_example() {
        let e = go_duration("forever").unwrap_err();
        assert!(e.contains("`forever`") && e.contains("24h"), "{e}");
        let e = go_duration("1d").unwrap_err();
        assert!(e.contains("`1d`") && e.contains("no days") && e.contains("24h"), "{e}");
        assert!(go_duration("1d").unwrap_err().contains("unknown unit `d`"));
        let e = go_duration("24 h").unwrap_err();
        assert!(e.contains("spaces"), "{e}");
        let e = go_duration("24h\nInjected: yes").unwrap_err();
        assert!(!e.contains('\n') && e.contains("\\n"), "{e}");
        assert!(go_duration("1h30").unwrap_err().contains("missing unit"));
    }

    #[test]
    fn token_ttls() {
        assert_eq!(token_ttl("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(token_ttl("48h"), Ok(Duration::from_secs(172_800)));
        assert_eq!(token_ttl("0"), Ok(Duration::ZERO));
        assert_eq!(token_ttl("-0s"), Ok(Duration::ZERO));
        let e = token_ttl("-1h").unwrap_err();
        assert!(e.contains("negative") && e.contains("never expire"), "{e}");
        let e = token_ttl("forever").unwrap_err();
        assert!(e.starts_with("token TTL `forever` is not a Go duration") && e.contains("24h"), "{e}");
        assert!(e.contains("0 makes a token that never expires"), "{e}");
        assert!(token_ttl("1d").unwrap_err().contains("`1d`"));
        assert!(token_ttl("2562048h").is_err());
        assert!(token_ttl("").is_err());
    }

    #[test]
    fn endpoints_parse_and_render() {
        let cases = [
            ("api.example.com", "api.example.com:6443"),
            ("api.example.com:443", "api.example.com:443"),
            ("API.Example.COM:8443", "api.example.com:8443"),
            ("localhost", "localhost:6443"),
            ("10.0.0.1", "10.0.0.1:6443"),
            ("10.0.0.1:443", "10.0.0.1:443"),
            ("2001:db8::1", "[2001:db8::1]:6443"),
            ("2001:DB8:0:0::1", "[2001:db8::1]:6443"),
            ("[2001:db8::1]:8443", "[2001:db8::1]:8443"),
            ("[::1]", "[::1]:6443"),
            ("[::1]:6443", "[::1]:6443"),
            ("api:65535", "api:65535"),
            ("api:1", "api:1"),
            // A bare IPv6 address never has a port: this is the address ::1:6443.
            ("2001:db8::1:6443", "[2001:db8::1:6443]:6443"),
        ];
        for (s, want) in cases {
            let e = endpoint(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(e.to_string(), want, "{s}");
        }
        let e = endpoint("[2001:db8::1]:6443").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("2001:db8::1", 6443));
        assert_eq!(e.ip(), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(endpoint("api.example.com").unwrap().ip(), None);
    }

    #[test]
    fn hostile_endpoints_are_refused() {
        let bad = [
            ("", "empty"),
            ("host:0", "outside 1-65535"),
            ("host:99999", "outside 1-65535"),
            ("host:", "empty"),
            ("host:+6443", "not a number"),
            ("host:x", "not a number"),
            (":6443", "host before"),
            ("https://api.example.com:6443", "scheme"),
            ("api.example.com:6443/healthz", "no path"),
            ("user@api.example.com", "no user"),
            ("api.example.com 6443", "whitespace"),
            ("api.example.com\n", "whitespace"),
            ("api\u{0}.example.com", "control"),
            ("api.example.com --insecure", "whitespace"),
            ("bad_host:6443", "not a host name"),
            ("-api.example.com", "not a host name"),
            ("api-.example.com", "not a host name"),
            ("api..example.com", "not a host name"),
            ("api.example.com.", "ends with a dot"),
            ("10.0.0.256", "looks like an IPv4"),
            ("010.0.0.1", "looks like an IPv4"),
            ("[2001:db8::1", "never closed"),
            ("[2001:db8::1]6443", "after `]`"),
            ("[nothex]:1", "not an IPv6"),
            ("[10.0.0.1]:6443", "IPv6 addresses only"),
            ("[fe80::1%eth0]:6443", "zones"),
            ("2001:db8::1:99999", "brackets"),
            ("ápi.example.com", "not a host name"),
        ];
        for (s, want) in bad {
            match endpoint(s) {
                Ok(e) => panic!("{s:?} was accepted as {e}"),
                Err(e) => {
                    assert!(e.contains(want), "{s:?}: {e}");
                    assert!(!e.contains('\n'), "{s:?}: {e}");
                    assert!(e.contains("e.g. api.example.com:6443"), "{e}");
                }
            }
        }
        let long_label = format!("{}.example.com", "a".repeat(64));
        assert!(endpoint(&long_label).unwrap_err().contains("longer than 63"));
        let long_name = format!("{}.com", "a.".repeat(130));
        assert!(endpoint(&long_name).unwrap_err().contains("more than 253"));
    }

    #[test]
    fn node_ips_are_single_addresses() {
        assert_eq!(node_ip("10.0.0.5"), Ok("10.0.0.5".parse().unwrap()));
        assert_eq!(node_ip("2001:db8::5"), Ok("2001:db8::5".parse().unwrap()));
        assert_eq!(node_ip("::ffff:10.0.0.5"), Ok("10.0.0.5".parse().unwrap()));
        let bad = [
            ("10.0.0.5 --anonymous-auth=true", "whitespace"),
            ("10.0.0.5\n", "whitespace"),
            ("", "empty"),
            ("10.0.0.5,10.0.0.6", "list"),
            ("10.0.0.0/24", "prefix length"),
            ("[2001:db8::5]", "brackets"),
            ("fe80::1%eth0", "zones"),
            ("10.0.0.256", "not an IPv4 or IPv6"),
            ("010.0.0.5", "not an IPv4 or IPv6"),
            ("node-1", "not an IPv4 or IPv6"),
            ("--node-ip=10.0.0.5", "not an IPv4 or IPv6"),
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("0.0.0.0", "all-zeros"),
            ("::", "all-zeros"),
        ];
        for (s, want) in bad {
            let e = node_ip(s).expect_err(s);
            assert!(e.contains(want), "{s:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn dual_stack_node_ips() {
        let ips = node_ips("10.0.0.5,2001:db8::5").unwrap();
        assert_eq!(ips, vec!["10.0.0.5".parse::<IpAddr>().unwrap(), "2001:db8::5".parse().unwrap()]);
        assert_eq!(node_ips("2001:db8::5,10.0.0.5").unwrap().len(), 2);
        assert_eq!(node_ips("10.0.0.5").unwrap().len(), 1);
        assert!(node_ips("10.0.0.5,10.0.0.6").unwrap_err().contains("both are IPv4"));
        assert!(node_ips("2001:db8::5,2001:db8::6").unwrap_err().contains("both are IPv6"));
        assert!(node_ips("10.0.0.5,2001:db8::5,10.0.0.6").unwrap_err().contains("at most two"));
        assert!(node_ips("10.0.0.5,").unwrap_err().contains("empty"));
        assert!(node_ips("10.0.0.5, 2001:db8::5").unwrap_err().contains("whitespace"));
        assert!(node_ips("10.0.0.5,::").unwrap_err().contains("all-zeros"));
        assert!(node_ips("").is_err());
    }

    #[test]
    fn label_keys_and_values() {
        for k in [
            "tier",
            "Tier",
            "a",
            "1",
            "my.name_is-x",
            "example.com/tier",
            "a.b.example.com/Some_Name.1",
            "node.kubernetes.io/role",
            &"n".repeat(63),
            &format!("{}/x", "p".repeat(253)),
        ] {
            assert_eq!(label_key(k), Ok(()), "{k}");
        }
        for (k, want) in [
            ("", "name part is empty"),
            ("example.com/", "name part is empty"),
            ("/tier", "prefix before `/` is empty"),
            ("a/b/c", "more than one `/`"),
            ("Example.com/tier", "upper-case"),
            ("exa_mple.com/tier", "contains `_`"),
            ("-tier", "start and end"),
            ("tier.", "start and end"),
            ("ti er", "contains ` `"),
            ("tier\n", "contains `\\n`"),
            ("tier,x=y", "contains `,`"),
            ("tier=x", "contains `=`"),
            ("--flag", "start and end"),
            (&"n".repeat(64), "more than 63"),
            (&format!("{}/x", "p".repeat(254)), "more than 253"),
        ] {
            let e = label_key(k).expect_err(k);
            assert!(e.contains(want), "{k:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        for val in ["", "blue", "v1.2", "A_b-c.d", &"x".repeat(63)] {
            assert_eq!(label_value(val), Ok(()), "{val}");
        }
        for (val, want) in [
            ("blue,green", "contains `,`"),
            ("a=b", "contains `=`"),
            ("has space", "contains ` `"),
            ("-x", "start and end"),
            ("x.", "start and end"),
            ("ünïcode", "contains `ü`"),
            (&"x".repeat(64), "more than 63"),
            ("v\n--node-ip=1.2.3.4", "contains `\\n`"),
        ] {
            let e = label_value(val).expect_err(val);
            assert!(e.contains(want), "{val:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn kubelet_may_only_set_some_kubernetes_labels() {
        for k in [
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
            "node.kubernetes.io/instance-type",
            "node.kubernetes.io/anything",
            "foo.node.kubernetes.io/anything",
            "kubelet.kubernetes.io/x",
            "beta.kubernetes.io/arch",
        ] {
            assert!(is_kubelet_label(k), "{k}");
            assert_eq!(label(k, "x"), Ok(()), "{k}");
        }
        for k in ["node-role.kubernetes.io/worker", "xnode.kubernetes.io/x", "kubernetes.io/role"] {
            assert!(!is_kubelet_label(k), "{k}");
        }
        for k in [
            "node-role.kubernetes.io/worker",
            "node-role.kubernetes.io/control-plane",
            "kubernetes.io/role",
            "example.k8s.io/x",
            "k8s.io/x",
            "node-restriction.kubernetes.io/x",
            "xnode.kubernetes.io/x",
        ] {
            let e = label(k, "").expect_err(k);
            assert!(e.contains("kubelet refuses") && e.contains("kubectl label node"), "{k}: {e}");
        }
        // Outside the reserved namespaces anything valid goes.
        assert_eq!(label("example.com/role", "worker"), Ok(()));
        assert_eq!(label("kubernetes.iox/role", "worker"), Ok(()));
        assert_eq!(label("role", "worker"), Ok(()));
        // The generic rules still apply first.
        assert!(label("role", "a,b").unwrap_err().contains("label value"));
        assert!(label("ro le", "a").unwrap_err().contains("label key"));
    }

    #[test]
    fn taints() {
        assert_eq!(taint("dedicated", Some("gpu"), "NoSchedule"), Ok(()));
        assert_eq!(taint("node-role.kubernetes.io/control-plane", None, "NoSchedule"), Ok(()));
        assert_eq!(taint("example.com/x", Some(""), "PreferNoSchedule"), Ok(()));
        assert_eq!(taint("x", None, "NoExecute"), Ok(()));
        let e = taint("x", None, "noschedule").unwrap_err();
        assert!(e.contains("did you mean NoSchedule"), "{e}");
        assert!(taint("x", None, "").unwrap_err().contains("has no effect"));
        assert!(taint("x", None, "NoScheduleNoAdmit").unwrap_err().contains("must be NoSchedule"));
        assert!(taint("x", None, "NoSchedule\n").is_err());
        assert!(taint("", None, "NoSchedule").unwrap_err().starts_with("taint: key"));
        assert!(taint("a b", None, "NoSchedule").is_err());
        let e = taint("x", Some("a:b"), "NoSchedule").unwrap_err();
        assert!(e.contains("value") && e.contains("contains `:`"), "{e}");
        assert!(taint("x", Some(&"v".repeat(64)), "NoSchedule").is_err());
        assert!(taint("x=y:NoSchedule", None, "NoSchedule").is_err());
    }

    #[test]
    fn node_names() {
        for n in ["worker-1", "a", "0", "worker-1.example.com", &"a".repeat(253), &format!("{}.b", "a".repeat(70))] {
            assert_eq!(node_name(n), Ok(()), "{n}");
        }
        for (n, want) in [
            ("", "empty"),
            ("Worker-1", "upper-case letters (use `worker-1`)"),
            ("worker_1", "try `worker-1`"),
            ("worker-", "ends with `-`"),
            ("-worker", "starts or ends"),
            ("worker..1", "empty label"),
            (".worker", "empty label"),
            ("worker.", "ends with a dot"),
            ("worker 1", "contains ` `"),
            ("worker\n1", "contains `\\n`"),
            ("worker/1", "contains `/`"),
            ("--hostname-override=x", "contains `=`"),
            (&"a".repeat(254), "more than 253"),
        ] {
            let e = node_name(n).expect_err(n);
            assert!(e.contains(want), "{n:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn versions_parse_compare_and_print() {
        let x = v("v1.34.2");
        assert_eq!((x.major, x.minor, x.patch, x.pre.as_str()), (1, 34, 2, ""));
        assert_eq!(x.to_string(), "v1.34.2");
        assert_eq!(v("1.34.2"), x);
        let rc = v("v1.35.0-rc.1");
        assert_eq!(rc.pre, "rc.1");
        assert_eq!(rc.to_string(), "v1.35.0-rc.1");
        assert!(v("v1.35.0-rc.1") < v("v1.35.0"));
        assert!(v("v1.35.0-alpha.2") < v("v1.35.0-beta.0"));
        assert!(v("v1.35.0-rc.2") < v("v1.35.0-rc.10"));
        assert!(v("v1.35.0-rc") < v("v1.35.0-rc.1"));
        assert!(v("v1.34.10") > v("v1.34.9"));
        assert!(v("v1.9.0") < v("v1.10.0"));
        for bad in [
            "",
            "1.34",
            "v1.x.2",
            "v1.34.2.1",
            "latest",
            "v1.34.2 ",
            "v1.34.02",
            "v01.34.2",
            "v1.34.2-",
            "v1.34.2-rc..1",
            "v1.34.2-rc.01",
            "v1.34.2+k3s1",
            "v1.34.2-r_c",
            "vv1.34.2",
            "v-1.34.2",
            "v1.34.99999999999999999999",
            "stable-1.34",
        ] {
            assert!(version(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(version("1.34").unwrap_err().contains("e.g. v1.34.2"));
    }

    #[test]
    fn skew_on_init() {
        let ok = [
            ("v1.34.2", "v1.34.2", "v1.34.2"),
            ("v1.34.2", "v1.33.0", "v1.33.5"), // kubeadm one newer than the control plane
            ("v1.34.2", "v1.31.0", "v1.34.0"), // kubelet three older than kubeadm (>= 1.29)
            ("v1.34.0-rc.1", "v1.34.0-rc.1", "v1.34.0-rc.1"),
        ];
        for (a, l, c) in ok {
            assert_eq!(skew(&v(a), &v(l), &v(c), false), Ok(()), "{a} {l} {c}");
        }
        let bad = [
            // Control plane newer than kubeadm.
            ("v1.33.2", "v1.33.2", "v1.34.0", "cannot deploy a v1.34.0 control plane", "kubeadm v1.34.x"),
            // Control plane two older than kubeadm: MinimumControlPlaneVersion.
            ("v1.34.2", "v1.32.0", "v1.32.9", "only supports control planes >= v1.33.0", "kubeadm v1.32.x"),
            // A pre-release of the minimum is below it, as kubeadm compares.
            ("v1.34.2", "v1.33.0-rc.1", "v1.33.0-rc.1", ">= v1.33.0", "kubeadm v1.33.x"),
            // kubelet newer than the control plane.
            ("v1.35.0", "v1.35.0", "v1.34.2", "[ERROR KubeletVersion]", "kubelet v1.34.x for a v1.34 cluster"),
            // kubelet below MinimumKubeletVersion (kubeadm 1.34 - 3 = 1.31).
            ("v1.34.2", "v1.30.9", "v1.33.0", "MinimumKubeletVersion is v1.31.0", "kubelet v1.33.x"),
            // Before kubeadm 1.29 the kubelet could trail by one only.
            ("v1.28.4", "v1.26.0", "v1.28.4", "kubeadm's minor version - 1", "kubelet v1.28.x"),
            // Different major versions.
            ("v1.34.2", "v2.0.0", "v1.34.2", "major version", "kubelet v1.34.x"),
        ];
        for (a, l, c, rule, fix) in bad {
            let e = skew(&v(a), &v(l), &v(c), false).expect_err(&format!("{a} {l} {c}"));
            assert!(e.contains(rule) && e.contains(fix), "{a} {l} {c}: {e}");
        }
    }

    #[test]
    fn skew_on_join() {
        assert_eq!(skew(&v("v1.34.2"), &v("v1.34.2"), &v("v1.34.1"), true), Ok(()));
        assert_eq!(skew(&v("v1.34.2"), &v("v1.32.3"), &v("v1.34.1"), true), Ok(()));
        let e = skew(&v("v1.33.2"), &v("v1.33.2"), &v("v1.34.0"), true).unwrap_err();
        assert!(e.contains("cannot join a v1.34.0 cluster") && e.contains("kubeadm v1.34.x"), "{e}");
        let e = skew(&v("v1.34.2"), &v("v1.35.0"), &v("v1.34.0"), true).unwrap_err();
        assert!(e.contains("kubelet must not be newer than kube-apiserver"), "{e}");
        assert!(e.contains("build the image with kubelet v1.34.x for a v1.34 cluster"), "{e}");
        let e = skew(&v("v1.36.0"), &v("v1.34.0"), &v("v1.34.0"), true).unwrap_err();
        assert!(e.contains("MinimumControlPlaneVersion"), "{e}");
    }

    #[test]
    fn kubelet_minimum_follows_the_kubeadm_version() {
        // kubeadm v1.29+: kubelet may trail kubeadm by three minor versions.
        assert_eq!(skew(&v("v1.29.0"), &v("v1.26.0"), &v("v1.28.0"), false), Ok(()));
        let e = skew(&v("v1.29.0"), &v("v1.25.9"), &v("v1.28.0"), false).unwrap_err();
        assert!(e.contains("MinimumKubeletVersion is v1.26.0") && e.contains("minor version - 3"), "{e}");
        // kubeadm v1.28: one only, although the skew policy would allow three.
        let e = skew(&v("v1.28.0"), &v("v1.26.0"), &v("v1.28.0"), true).unwrap_err();
        assert!(e.contains("MinimumKubeletVersion is v1.27.0") && e.contains("minor version - 1"), "{e}");
        assert_eq!(skew(&v("v1.28.0"), &v("v1.27.3"), &v("v1.28.0"), true), Ok(()));
    }

    #[test]
    fn kubeadm_api_versions() {
        assert_eq!(api_version_for_kubeadm(&v("v1.35.0")), Ok("kubeadm.k8s.io/v1beta4"));
        assert_eq!(api_version_for_kubeadm(&v("v1.31.0")), Ok("kubeadm.k8s.io/v1beta4"));
        assert_eq!(api_version_for_kubeadm(&v("v1.30.14")), Ok("kubeadm.k8s.io/v1beta3"));
        assert_eq!(api_version_for_kubeadm(&v("v1.22.0")), Ok("kubeadm.k8s.io/v1beta3"));
        let e = api_version_for_kubeadm(&v("v1.21.14")).unwrap_err();
        assert!(e.contains("v1beta3") && e.contains("v1.22 or newer"), "{e}");
        assert!(api_version_for_kubeadm(&v("v2.0.0")).is_err());
        assert!(supports_kubelet_patches(&v("v1.25.0")));
        assert!(supports_kubelet_patches(&v("v1.34.2")));
        assert!(!supports_kubelet_patches(&v("v1.24.17")));
    }

    #[test]
    fn bind_ports() {
        assert_eq!(bind_port(6443), Ok(6443));
        assert_eq!(bind_port(1), Ok(1));
        assert_eq!(bind_port(65535), Ok(65535));
        for p in [0, -1, 65536, 99999, i64::MAX, i64::MIN] {
            let e = bind_port(p).expect_err(&p.to_string());
            assert!(e.contains(&p.to_string()) && e.contains("1-65535"), "{e}");
        }
    }

    #[test]
    fn quoting_is_one_line_and_bounded() {
        let q = quote(&format!("a\nb{}", "x".repeat(500)));
        assert!(!q.contains('\n') && q.contains("\\n") && q.ends_with("…`") && q.chars().count() < 90, "{q}");
        assert_eq!(quote("abc"), "`abc`");
    }
}
