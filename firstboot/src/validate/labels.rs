//! Node labels and taints kiln hands to kubelet: qualified names and label
//! values (apimachinery's `IsQualifiedName`, `IsValidLabelValue`), the labels
//! a kubelet may set on itself (`IsKubeletLabel`) and taint effects
//! (`validateNodeTaints`).

use super::names::dns1123_subdomain;
use super::quote;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
