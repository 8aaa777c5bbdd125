//! Attribute values in and out: `s`/`n` build them, [`text`] and
//! [`number`] read them, [`to_json`] shows a whole record (`ferry status
//! --json`, tests); and the two clocks records are stamped with (epoch
//! seconds for leases and TTLs, RFC 3339 seconds for people). No AWS calls.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;

use super::Record;

pub(super) fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

pub(super) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub fn text<'a>(item: &'a Record, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

pub fn number(item: &Record, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// A number with a fraction (`duration_secs`, `throughput_mbps`).
pub fn number_f64(item: &Record, name: &str) -> Option<f64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// A record as JSON, for `ferry status --json`.
pub fn to_json(item: &Record) -> serde_json::Value {
    fn value(v: &AttributeValue) -> serde_json::Value {
        match v {
            AttributeValue::S(s) => serde_json::Value::String(s.clone()),
            AttributeValue::N(n) => {
                serde_json::from_str(n).unwrap_or(serde_json::Value::String(n.clone()))
            }
            AttributeValue::Bool(b) => serde_json::Value::Bool(*b),
            AttributeValue::M(m) => {
                serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), value(v))).collect())
            }
            AttributeValue::L(l) => serde_json::Value::Array(l.iter().map(value).collect()),
            _ => serde_json::Value::Null,
        }
    }
    let mut sorted: Vec<_> = item.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    serde_json::Value::Object(
        sorted
            .into_iter()
            .map(|(k, v)| (k.clone(), value(v)))
            .collect(),
    )
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(super) fn now_text() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
