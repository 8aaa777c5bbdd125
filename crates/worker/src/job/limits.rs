//! The documented limits of a job message's free-form fields (docs/jobs.md,
//! "Limits") and the checks that enforce them at parse time.
//!
//! Every field a stranger writes is bounded here, so that nothing a message
//! carries can push a job record past DynamoDB's 400 KB item limit (the URL
//! and the message are stored in it), a request past S3's or the source's
//! header limits, or a job header into the protocol the engine speaks itself.
//! Each refusal is a stable `error_kind` word and a reason that never quotes
//! a header value. The shape of the message (types, unknown fields, version)
//! is `job.rs`'s; S3's naming rules are `s3url.rs`'s.

use std::collections::HashMap;

use ferry_engine::source::{HeaderMap, HeaderName, HeaderValue};

/// The whole message body. SQS itself accepts up to 1 MiB; this keeps
/// every stored copy of the job small and parsing cheap.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The source URL as parsed (percent-encoding can make it longer than
/// written); it is stored twice, as `url` and in `message`.
pub const MAX_URL_BYTES: usize = 8 * 1024;
/// Request headers for the source: entries, name, value, and all of them.
pub const MAX_HEADERS: usize = 32;
pub const MAX_HEADER_NAME_BYTES: usize = 256;
pub const MAX_HEADER_VALUE_BYTES: usize = 8 * 1024;
pub const MAX_HEADERS_TOTAL_BYTES: usize = 16 * 1024;
/// S3's own limit on user metadata: names and values, as S3 counts them
/// (bytes of each name and value, without the `x-amz-meta-` prefix).
pub const MAX_METADATA_BYTES: usize = 2 * 1024;
pub const MAX_CONTENT_TYPE_BYTES: usize = 1024;

/// A field that breaks its limit: the `error_kind` word and the reason.
pub type Refusal = (&'static str, String);

/// Headers the engine sets itself or that steer the connection rather than
/// the request: a job that set them could reach other virtual hosts behind
/// a shared front (`Host`), break the ranged reads a resume relies on
/// (`Range`, `If-*`), or smuggle a second request (`Content-Length`,
/// `Transfer-Encoding`). Compared in lower case; `proxy-*` is a prefix.
const PROTOCOL_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "range",
    "if-range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "accept-encoding",
    "te",
    "upgrade",
    "expect",
    "trailer",
    "keep-alive",
];

/// The job's request headers, checked against the limits above, each value
/// marked sensitive (they are secrets, e.g. `Authorization`).
pub fn headers(headers: HashMap<String, String>) -> Result<HeaderMap, Refusal> {
    if headers.len() > MAX_HEADERS {
        return Err((
            "too_many_headers",
            format!(
                "{} headers given; at most {MAX_HEADERS} are allowed",
                headers.len()
            ),
        ));
    }
    // In name order, so a message with several problems always gets the same answer.
    let mut entries: Vec<_> = headers.into_iter().collect();
    entries.sort();
    let mut map = HeaderMap::new();
    let mut total = 0;
    for (name, value) in entries {
        if name.len() > MAX_HEADER_NAME_BYTES {
            return Err((
                "header_too_large",
                format!("a header name is longer than {MAX_HEADER_NAME_BYTES} bytes"),
            ));
        }
        let invalid = || {
            (
                "invalid_headers",
                format!("header name {name:?} is not valid"),
            )
        };
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let lower = header.as_str();
        if PROTOCOL_HEADERS.contains(&lower) || lower.starts_with("proxy-") {
            return Err((
                "header_not_allowed",
                format!("header {name:?} is set by ferry or the connection, not by a job"),
            ));
        }
        if value.len() > MAX_HEADER_VALUE_BYTES {
            return Err((
                "header_too_large",
                format!("value of header {name:?} is longer than {MAX_HEADER_VALUE_BYTES} bytes"),
            ));
        }
        // Values are secrets (Authorization): never echo them.
        let mut header_value = HeaderValue::from_str(&value).map_err(|_| {
            (
                "invalid_headers",
                format!("value of header {name:?} is not valid"),
            )
        })?;
        header_value.set_sensitive(true);
        if map.contains_key(&header) {
            // Two JSON keys that differ in case name one header: which one
            // would be sent is not for the worker to guess.
            return Err((
                "invalid_headers",
                format!("header {name:?} is given twice (names ignore case)"),
            ));
        }
        total += name.len() + value.len();
        map.insert(header, header_value);
    }
    if total > MAX_HEADERS_TOTAL_BYTES {
        return Err((
            "headers_too_large",
            format!("headers take {total} bytes; at most {MAX_HEADERS_TOTAL_BYTES} are allowed"),
        ));
    }
    Ok(map)
}

/// S3 user metadata: names that are HTTP header tokens (S3 sends them as
/// `x-amz-meta-NAME`), one per name ignoring case (S3 stores them in lower
/// case), printable ASCII values (S3 would need non-ASCII RFC 2047-encoded,
/// which the SDK does not do), at most [`MAX_METADATA_BYTES`] in all.
pub fn metadata(metadata: &HashMap<String, String>) -> Result<(), Refusal> {
    let total: usize = metadata.iter().map(|(n, v)| n.len() + v.len()).sum();
    if total > MAX_METADATA_BYTES {
        return Err((
            "metadata_too_large",
            format!(
                "metadata takes {total} bytes; S3 allows at most {MAX_METADATA_BYTES} (names and values)"
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut names: Vec<_> = metadata.iter().collect();
    names.sort();
    for (name, value) in names {
        let invalid = |why: &str| ("invalid_metadata", format!("metadata {name:?} {why}"));
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid("is not a valid header name"))?;
        if !seen.insert(header) {
            return Err(invalid("is given twice (names ignore case)"));
        }
        if !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return Err(invalid("has a value that is not printable ASCII"));
        }
    }
    Ok(())
}

/// The stored object's Content-Type: a header value of printable ASCII.
pub fn content_type(content_type: &str) -> Result<(), Refusal> {
    if content_type.len() > MAX_CONTENT_TYPE_BYTES {
        return Err((
            "content_type_too_long",
            format!("content_type is longer than {MAX_CONTENT_TYPE_BYTES} bytes"),
        ));
    }
    if !content_type.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err((
            "invalid_content_type",
            "content_type must be printable ASCII".into(),
        ));
    }
    Ok(())
}

/// One of S3's storage classes, as the SDK names them.
pub fn storage_class(class: &str) -> Result<(), Refusal> {
    let known = aws_sdk_s3::types::StorageClass::values();
    if known.contains(&class) {
        return Ok(());
    }
    Err((
        "invalid_storage_class",
        format!("storage_class must be one of {}", known.join(", ")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, String)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.clone()))
            .collect()
    }

    fn many(count: usize, value_len: usize) -> HashMap<String, String> {
        (0..count)
            .map(|i| (format!("x-h{i}"), "v".repeat(value_len)))
            .collect()
    }

    #[test]
    fn headers_within_every_limit_pass_and_stay_secret() {
        let ok = headers(many(MAX_HEADERS, 400)).unwrap();
        assert_eq!(ok.len(), MAX_HEADERS);
        assert!(ok.values().all(HeaderValue::is_sensitive));
        let name = "x-".to_owned() + &"n".repeat(MAX_HEADER_NAME_BYTES - 2);
        let edge = map(&[
            (name.as_str(), "v".into()),
            ("Authorization", "t".repeat(MAX_HEADER_VALUE_BYTES)),
        ]);
        assert_eq!(headers(edge).unwrap().len(), 2);
    }

    #[test]
    fn headers_past_a_limit_or_of_the_protocol_are_refused_by_kind() {
        let long_name = "x".repeat(MAX_HEADER_NAME_BYTES + 1);
        let cases: Vec<(HashMap<String, String>, &str)> = vec![
            (many(MAX_HEADERS + 1, 1), "too_many_headers"),
            (map(&[(long_name.as_str(), "v".into())]), "header_too_large"),
            (
                map(&[("x-big", "v".repeat(MAX_HEADER_VALUE_BYTES + 1))]),
                "header_too_large",
            ),
            // 3 × 6 KiB: each fits, together they do not.
            (many(3, 6 * 1024), "headers_too_large"),
            (map(&[("bad name", "v".into())]), "invalid_headers"),
            (map(&[("x-a", "line\nbreak".into())]), "invalid_headers"),
            (
                map(&[("X-Key", "a".into()), ("x-key", "b".into())]),
                "invalid_headers",
            ),
            (map(&[("Host", "internal".into())]), "header_not_allowed"),
            (
                map(&[("proxy-authorization", "x".into())]),
                "header_not_allowed",
            ),
            (map(&[("Proxy-Anything", "x".into())]), "header_not_allowed"),
        ];
        for (given, kind) in cases {
            let keys: Vec<_> = given.keys().take(2).cloned().collect();
            assert_eq!(headers(given).unwrap_err().0, kind, "{keys:?}");
        }
        for name in [
            "Content-Length",
            "Transfer-Encoding",
            "Connection",
            "Range",
            "If-Range",
            "If-Match",
            "If-None-Match",
            "If-Modified-Since",
            "If-Unmodified-Since",
            "Accept-Encoding",
            "TE",
            "Upgrade",
            "Expect",
            "Trailer",
            "Keep-Alive",
        ] {
            let refused = headers(map(&[(name, "x".into())])).unwrap_err();
            assert_eq!(refused.0, "header_not_allowed", "{name}");
        }
    }

    #[test]
    fn refusals_never_quote_a_header_value() {
        for given in [
            map(&[("x-a", "SECRET\n".into())]),
            map(&[("x-a", "SECRET".repeat(2000))]),
            map(&[("Host", "SECRET".into())]),
        ] {
            let (_, reason) = headers(given).unwrap_err();
            assert!(!reason.contains("SECRET"), "{reason}");
        }
    }

    #[test]
    fn metadata_is_checked_as_s3_counts_and_names_it() {
        let fits = map(&[("a", "v".repeat(MAX_METADATA_BYTES - 1))]);
        assert_eq!(metadata(&fits), Ok(()));
        let cases = [
            (
                map(&[("a", "v".repeat(MAX_METADATA_BYTES))]),
                "metadata_too_large",
            ),
            (
                map(&[("k1", "v".repeat(1100)), ("k2", "v".repeat(1100))]),
                "metadata_too_large",
            ),
            (map(&[("bad name", "v".into())]), "invalid_metadata"),
            (map(&[("", "v".into())]), "invalid_metadata"),
            (map(&[("a", "é".into())]), "invalid_metadata"),
            (map(&[("a", "tab\there".into())]), "invalid_metadata"),
            (
                map(&[("Owner", "a".into()), ("owner", "b".into())]),
                "invalid_metadata",
            ),
        ];
        for (given, kind) in cases {
            assert_eq!(metadata(&given).unwrap_err().0, kind, "{given:?}");
        }
    }

    #[test]
    fn content_type_and_storage_class_are_bounded() {
        assert_eq!(content_type("text/plain; charset=utf-8"), Ok(()));
        assert_eq!(content_type(&"a".repeat(MAX_CONTENT_TYPE_BYTES)), Ok(()));
        let cases = [
            (
                content_type(&"a".repeat(MAX_CONTENT_TYPE_BYTES + 1)),
                "content_type_too_long",
            ),
            (
                content_type("text/plain\r\nX-Evil: 1"),
                "invalid_content_type",
            ),
            (content_type("tëxt/plain"), "invalid_content_type"),
            (storage_class("standard_ia"), "invalid_storage_class"),
            (storage_class("CHEAP"), "invalid_storage_class"),
        ];
        for (result, kind) in cases {
            assert_eq!(result.unwrap_err().0, kind);
        }
        for class in ["STANDARD", "STANDARD_IA", "GLACIER_IR", "DEEP_ARCHIVE"] {
            assert_eq!(storage_class(class), Ok(()), "{class}");
        }
    }
}
