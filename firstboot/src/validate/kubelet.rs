//! `[node] kubelet` values checked against the JSON type kubelet decodes each
//! KubeletConfiguration field as (the table is `kubelet_fields::FIELDS`), so a
//! value of the wrong type fails at first boot, not as a crash-looping kubelet.

use super::duration::go_duration;
use super::kubelet_kind::KubeletKind;
use super::quote;
use super::suggest::did_you_mean;

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
