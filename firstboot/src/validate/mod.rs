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
//!
//! One module per topic; callers name the topic (`validate::names::node_name`):
//! * [`duration`]: Go durations (`time.ParseDuration`), token TTLs;
//! * [`names`]: DNS-1123 subdomains, node names, the admin user;
//! * [`labels`]: label keys and values, kubelet's reserved labels, taints;
//! * [`endpoint`]: the API server endpoint, node IPs, the bind port;
//! * [`kubelet`]: `[node] kubelet` values against KubeletConfiguration's types
//!   ([`kubelet_kind`], the table's column type);
//! * [`kubeadm`]: kubeadm's own knobs in `[node]`: `Timeouts`, the image pull
//!   policy, static pod patch targets;
//! * [`version`]: Kubernetes versions and kubeadm's version-skew policy;
//! * [`suggest`]: "did you mean" for a mistyped word.

pub mod duration;
pub mod endpoint;
pub mod kubeadm;
pub mod kubelet;
pub mod kubelet_kind;
pub mod labels;
pub mod names;
pub mod suggest;
pub mod version;

/// Quotes a user-supplied value for an error message: backticks, control
/// characters escaped, long values cut.
pub(crate) fn quote(s: &str) -> String {
    const MAX: usize = 80;
    let escaped: String = s.escape_debug().collect();
    match escaped.char_indices().nth(MAX) {
        Some((i, _)) => format!("`{}…`", &escaped[..i]),
        None => format!("`{escaped}`"),
    }
}

/// Whether `s` holds whitespace or a control character anywhere.
pub(crate) fn has_space_or_control(s: &str) -> bool {
    s.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_is_one_line_and_bounded() {
        let q = quote(&format!("a\nb{}", "x".repeat(500)));
        assert!(!q.contains('\n') && q.contains("\\n") && q.ends_with("…`") && q.chars().count() < 90, "{q}");
        assert_eq!(quote("abc"), "`abc`");
    }
}
