//! What kiln-firstboot says: syslog-priority lines for journald, and secrets
//! removed from any text before it is printed or stored.

use crate::resolve::Resolved;

/// Removes secrets from text before it is printed or stored.
pub fn redact(text: &str, r: &Resolved) -> String {
    let mut t = text.to_string();
    if let Some((_, secret)) = r.kubeadm.token.split_once('.') {
        if !secret.is_empty() {
            t = t.replace(secret, "<redacted>");
        }
    }
    t
}

/// A syslog-priority line for journald (`<3>` error, `<4>` warning, `<6>` info).
/// Control characters other than the line ends are escaped; a closed stdout
/// is ignored (logging never stops a bootstrap).
pub fn log(prio: u8, msg: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for line in msg.lines() {
        let _ = writeln!(out, "<{prio}>{}", crate::http::escape(line));
    }
}
