//! What a rule of `kiln check` reports: a [`Finding`] of some [`Severity`].
//! The rules live in [`crate::image::check`] and, for the pinned CNI images,
//! [`crate::inputs::oci`].

use serde::Serialize;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The build would produce a broken node: refused (exit 2).
    Error,
    /// Works, but probably not what was meant.
    Warning,
}

/// One result of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// Stable rule id (for `--json` consumers).
    pub rule: &'static str,
    /// `file:line:col: what, and what to do`.
    pub message: String,
}
