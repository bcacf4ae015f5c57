//! Names: DNS-1123 subdomains (apimachinery's `IsDNS1123Subdomain`), node
//! names (`ValidateNodeName`) and `[cluster] admin_user` (a Linux user name).

use super::quote;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_user_is_a_plain_user_name() {
        for ok in ["kiln", "core", "_svc", "a-b_1"] {
            assert!(admin_user(ok).is_ok(), "{ok}");
        }
        for bad in ["", "root", "Kiln", "1abc", "system:masters", "a b", "-x", &"a".repeat(33)] {
            assert!(admin_user(bad).is_err(), "{bad:?}");
        }
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
}
