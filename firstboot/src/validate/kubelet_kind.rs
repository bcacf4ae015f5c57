//! The kinds of KubeletConfiguration field, apart from the checks that use
//! them, so the generated table (`kubelet_fields::FIELDS`) and
//! `validate::kubelet` both use this module and it uses neither.

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
    pub(crate) fn phrase(self) -> &'static str {
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
