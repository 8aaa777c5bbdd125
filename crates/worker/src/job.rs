//! The job message (versioned JSON, see docs/jobs.md) and its validation.
//!
//! Parsing never panics and never loses the message: anything that is not a
//! valid job becomes a [`Rejection`] carrying the job id when one can be known
//! (the message's own `job_id`, else the SQS MessageId) and a reason. The
//! limits of the free-form fields live in [`limits`], the object settings'
//! rules in [`settings`], what a record keeps of the message in
//! `kept_message`.
//!
//! About half of its length is the table-driven tests of what is accepted
//! and rejected, beside the parser they pin down.

mod kept_message;
pub mod limits;
pub mod settings;

pub use kept_message::message_from_record;

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU64;

use ferry_engine::destination::IfExists;
use ferry_engine::source::Url;
use ferry_engine::{Destination, Expected, SourceRequest, TransferSpec};
use serde::Deserialize;

use crate::redact::RedactedUrl;
use crate::s3url::{S3UrlError, validate_bucket, validate_key};

/// The message format versions this worker understands.
pub const SUPPORTED_VERSION: u32 = 1;

/// The message exactly as users write it (docs/jobs.schema.json).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobMessage {
    pub url: String,
    pub bucket: String,
    pub key: String,
    #[serde(default)]
    pub job_id: Option<String>,
    #[serde(default)]
    pub expected: Option<ExpectedMessage>,
    #[serde(default)]
    pub headers: Option<HashMap<String, String>>,
    /// Whether `headers` may follow a redirect to another origin (never
    /// from `https` to `http`); by default they stay with the URL's origin.
    #[serde(default)]
    pub headers_cross_origin: Option<bool>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
    #[serde(default)]
    pub storage_class: Option<String>,
    #[serde(default)]
    pub cache_control: Option<String>,
    #[serde(default)]
    pub content_disposition: Option<String>,
    #[serde(default)]
    pub content_encoding: Option<String>,
    #[serde(default)]
    pub content_language: Option<String>,
    /// Server-side encryption: `AES256` or `aws:kms` (with `kms_key_id`,
    /// `bucket_key`); default the worker's `FERRY_SSE`, else the bucket's.
    #[serde(default)]
    pub sse: Option<String>,
    #[serde(default)]
    pub kms_key_id: Option<String>,
    #[serde(default)]
    pub bucket_key: Option<bool>,
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    /// The account that must own the bucket (12 digits).
    #[serde(default)]
    pub expected_bucket_owner: Option<String>,
    /// `overwrite` (default), `skip` or `fail`: what to do when an object
    /// is already stored under `key`.
    #[serde(default)]
    pub if_exists: Option<String>,
    /// This job's cap on source reads, bytes per second (at least 1); the
    /// worker's `FERRY_MAX_BANDWIDTH` applies too.
    #[serde(default)]
    pub max_bytes_per_sec: Option<u64>,
    #[serde(default)]
    pub version: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedMessage {
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub md5: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
}

/// A validated job, ready for the engine. Its `Debug` shows the URL only
/// redacted (the source request's own `Debug` hides query and headers).
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub shown_url: RedactedUrl,
    pub spec: TransferSpec,
}

/// Why a message is not a job. Its `Display` is safe to log and store: it
/// never contains the URL or header values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Rejection {
    pub job_id: String,
    /// A stable machine word for `error_kind`.
    pub kind: &'static str,
    pub reason: String,
}

/// Parses and validates one SQS message body.
pub fn parse(body: &str, message_id: &str) -> Result<Job, Rejection> {
    let value: serde_json::Value = serde_json::from_str(body).map_err(|err| Rejection {
        job_id: message_id.to_owned(),
        kind: "malformed_json",
        reason: format!("message is not valid JSON: {}", json_error(&err)),
    })?;
    // Take the job id first, so even an otherwise broken job gets its record.
    let claimed_id = value
        .get("job_id")
        .and_then(|v| v.as_str())
        .filter(|id| valid_job_id(id))
        .unwrap_or(message_id)
        .to_owned();
    let reject = |kind, reason: String| Rejection {
        job_id: claimed_id.clone(),
        kind,
        reason,
    };
    if body.len() > limits::MAX_MESSAGE_BYTES {
        return Err(reject(
            "message_too_large",
            format!(
                "message is {} bytes; at most {} are allowed",
                body.len(),
                limits::MAX_MESSAGE_BYTES
            ),
        ));
    }
    let message: JobMessage = serde_json::from_value(value)
        .map_err(|err| reject("invalid_job", format!("invalid job: {}", json_error(&err))))?;
    let version = message.version.unwrap_or(1);
    if version != SUPPORTED_VERSION {
        return Err(reject(
            "unsupported_version",
            format!(
                "message version {version} is not supported (this worker reads version {SUPPORTED_VERSION})"
            ),
        ));
    }
    if let Some(id) = &message.job_id
        && !valid_job_id(id)
    {
        return Err(reject(
            "invalid_job_id",
            "job_id must be 1-128 characters of A-Z a-z 0-9 . _ : -".into(),
        ));
    }
    let url: Url = message
        .url
        .parse()
        .map_err(|_| reject("invalid_url", "url is not a valid absolute URL".into()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(reject(
            "invalid_url",
            format!("url scheme {:?} is not http or https", url.scheme()),
        ));
    }
    // Measured as parsed: that is the form stored (twice) and sent.
    if url.as_str().len() > limits::MAX_URL_BYTES {
        return Err(reject(
            "url_too_long",
            format!(
                "url is longer than {} bytes (percent-encoded)",
                limits::MAX_URL_BYTES
            ),
        ));
    }
    validate_bucket(&message.bucket).map_err(|err| reject("invalid_bucket", err.to_string()))?;
    validate_key(&message.key).map_err(|err| match err {
        S3UrlError::KeyTooLong => reject("key_too_long", err.to_string()),
        _ => reject("invalid_key", err.to_string()),
    })?;
    let expected =
        validate_expected(message.expected).map_err(|r| reject("invalid_expected", r))?;
    let refused = |(kind, reason): limits::Refusal| reject(kind, reason);
    let headers = limits::headers(message.headers.unwrap_or_default()).map_err(refused)?;
    if let Some(content_type) = &message.content_type {
        limits::content_type(content_type).map_err(refused)?;
    }
    let metadata = message.metadata.unwrap_or_default();
    limits::metadata(&metadata).map_err(refused)?;
    if let Some(class) = &message.storage_class {
        limits::storage_class(class).map_err(refused)?;
    }
    let header_fields = [
        &message.cache_control,
        &message.content_disposition,
        &message.content_encoding,
        &message.content_language,
    ];
    for (field, value) in settings::HEADER_FIELDS.into_iter().zip(header_fields) {
        if let Some(value) = value {
            settings::header_field(field, value).map_err(refused)?;
        }
    }
    let encryption = settings::encryption(
        message.sse.as_deref(),
        message.kms_key_id.as_deref(),
        message.bucket_key,
    )
    .map_err(refused)?;
    let tags = settings::tags(message.tags.unwrap_or_default()).map_err(refused)?;
    if let Some(owner) = &message.expected_bucket_owner {
        settings::expected_bucket_owner(owner).map_err(refused)?;
    }
    let if_exists = match message.if_exists.as_deref() {
        None => IfExists::Overwrite,
        Some(text) => IfExists::parse(text).ok_or_else(|| {
            reject(
                "invalid_if_exists",
                "if_exists must be \"overwrite\", \"skip\" or \"fail\"".into(),
            )
        })?,
    };
    let max_bytes_per_sec = message
        .max_bytes_per_sec
        .map(|rate| {
            NonZeroU64::new(rate).ok_or_else(|| {
                reject(
                    "invalid_max_bytes_per_sec",
                    "max_bytes_per_sec must be a whole number of bytes per second, at least 1"
                        .into(),
                )
            })
        })
        .transpose()?;
    Ok(Job {
        id: claimed_id.clone(),
        shown_url: RedactedUrl::new(&url),
        spec: TransferSpec {
            source: SourceRequest {
                url,
                headers,
                headers_cross_origin: message.headers_cross_origin.unwrap_or(false),
            },
            destination: Destination {
                bucket: message.bucket,
                key: message.key,
                content_type: message.content_type,
                cache_control: message.cache_control,
                content_disposition: message.content_disposition,
                content_encoding: message.content_encoding,
                content_language: message.content_language,
                metadata,
                storage_class: message.storage_class,
                encryption,
                tags,
                expected_bucket_owner: message.expected_bucket_owner,
                if_exists,
            },
            expected,
            max_bytes_per_sec,
        },
    })
}

pub fn valid_job_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn validate_expected(expected: Option<ExpectedMessage>) -> Result<Expected, String> {
    let Some(expected) = expected else {
        return Ok(Expected::default());
    };
    let hex = |value: Option<String>, len: usize, name: &str| match value {
        Some(v) if v.len() == len && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(Some(v.to_ascii_lowercase()))
        }
        Some(_) => Err(format!("expected.{name} must be {len} hex digits")),
        None => Ok(None),
    };
    Ok(Expected {
        sha256: hex(expected.sha256, 64, "sha256")?,
        md5: hex(expected.md5, 32, "md5")?,
        size: expected.size,
    })
}

/// serde_json's message without the input echoed back (it may hold secrets).
fn json_error(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" at line ") {
        Some(cut) => &text[..cut],
        None => &text,
    };
    // "invalid type: string \"…\", expected …" and "invalid value: …" quote the
    // value, which may be a header secret: keep only what was expected.
    if text.starts_with("invalid type") || text.starts_with("invalid value") {
        return match text.find(", expected ") {
            Some(at) => format!(
                "a field has the wrong type or value (expected {})",
                &text[at + 11..]
            ),
            None => "a field has the wrong type or value".to_owned(),
        };
    }
    // "unknown field `…`" quotes a name the message chose: keep the reason
    // (stored, and sent to the DLQ as an attribute) short whatever it is.
    match text.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The longest serde error text a rejection reason quotes.
const MAX_REASON_CHARS: usize = 300;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MSG: &str = "msg-1";

    fn reject(body: &str) -> Rejection {
        parse(body, MSG).unwrap_err()
    }

    #[test]
    fn parses_the_minimal_job_and_defaults_the_id_to_the_message_id() {
        let job = parse(
            r#"{"url":"https://example.com/a.iso","bucket":"my-bucket","key":"isos/a.iso"}"#,
            MSG,
        )
        .unwrap();
        assert_eq!(job.id, MSG);
        assert_eq!(job.spec.destination.bucket, "my-bucket");
        assert!(!job.spec.source.headers_cross_origin, "headers stay home");
    }

    #[test]
    fn parses_every_optional_field() {
        let job = parse(
            r#"{"url":"https://example.com/a.iso?sig=s3cr3t","bucket":"my-bucket","key":"k",
                "job_id":"job-1","expected":{"sha256":"AB","md5":null,"size":3},
                "headers":{"Authorization":"Bearer tok"},"headers_cross_origin":true,
                "content_type":"text/plain",
                "metadata":{"a":"b"},"storage_class":"STANDARD_IA","max_bytes_per_sec":1048576,
                "version":1}"#
                .replace("\"AB\"", &format!("\"{}\"", "AB".repeat(32)))
                .as_str(),
            MSG,
        )
        .unwrap();
        assert_eq!(job.id, "job-1");
        assert_eq!(
            job.spec.expected.sha256.as_deref(),
            Some("ab".repeat(32).as_str())
        );
        assert_eq!(job.spec.source.headers.len(), 1);
        assert!(job.spec.source.headers_cross_origin);
        assert_eq!(
            job.spec.max_bytes_per_sec.map(NonZeroU64::get),
            Some(1_048_576)
        );
        assert!(!job.shown_url.to_string().contains("s3cr3t"));
        let debug = format!("{job:?}");
        assert!(
            !debug.contains("s3cr3t") && !debug.contains("Bearer tok"),
            "{debug}"
        );
    }

    #[test]
    fn rejects_each_kind_of_bad_message_with_a_clear_kind() {
        assert_eq!(reject("not json").kind, "malformed_json");
        assert_eq!(reject("not json").job_id, MSG);
        assert_eq!(reject(r#"{"bucket":"b-1","key":"k"}"#).kind, "invalid_job");
        let r =
            reject(r#"{"job_id":"j1","url":"https://x/y","bucket":"b-1","key":"k","version":2}"#);
        assert_eq!((r.kind, r.job_id.as_str()), ("unsupported_version", "j1"));
        assert_eq!(
            reject(r#"{"url":"ftp://x/y","bucket":"b-1","key":"k"}"#).kind,
            "invalid_url"
        );
        assert_eq!(
            reject(r#"{"url":"https://x/y","bucket":"B_1","key":"k"}"#).kind,
            "invalid_bucket"
        );
        assert_eq!(
            reject(r#"{"url":"https://x/y","bucket":"b-1","key":""}"#).kind,
            "invalid_key"
        );
        assert_eq!(
            reject(r#"{"url":"https://x/y","bucket":"b-1","key":"k","job_id":"a b"}"#).kind,
            "invalid_job_id"
        );
        assert_eq!(
            reject(r#"{"url":"https://x/y","bucket":"b-1","key":"k","expected":{"sha256":"zz"}}"#)
                .kind,
            "invalid_expected"
        );
        assert_eq!(
            reject(r#"{"url":"https://x/y","bucket":"b-1","key":"k","extra":1}"#).kind,
            "invalid_job"
        );
    }

    /// A message with one field replaced (or added) by `value`.
    fn with(field: &str, value: serde_json::Value) -> String {
        let mut message = serde_json::json!({"url": "https://x/y", "bucket": "b-1", "key": "k"});
        message[field] = value;
        message.to_string()
    }

    #[test]
    fn every_field_limit_has_its_own_kind_and_its_edge_passes() {
        use limits::*;
        let headers = |count: usize, len: usize| {
            serde_json::json!(
                (0..count)
                    .map(|i| (format!("x-h{i}"), "v".repeat(len)))
                    .collect::<HashMap<_, _>>()
            )
        };
        let url = |len: usize| format!("https://x/{}", "a".repeat(len - 10));
        let cases = [
            (with("url", url(MAX_URL_BYTES).into()), None),
            (
                with("url", url(MAX_URL_BYTES + 1).into()),
                Some("url_too_long"),
            ),
            // "é" is two bytes written and six percent-encoded.
            (
                with("url", format!("https://x/{}", "é".repeat(1400)).into()),
                Some("url_too_long"),
            ),
            (with("key", "k".repeat(1024).into()), None),
            (with("key", "é".repeat(513).into()), Some("key_too_long")),
            (with("headers", headers(MAX_HEADERS, 10)), None),
            (
                with("headers", headers(MAX_HEADERS + 1, 1)),
                Some("too_many_headers"),
            ),
            (
                with("headers", headers(1, MAX_HEADER_VALUE_BYTES + 1)),
                Some("header_too_large"),
            ),
            (with("headers", headers(3, 6000)), Some("headers_too_large")),
            (
                with("headers", serde_json::json!({"Host": "intranet"})),
                Some("header_not_allowed"),
            ),
            (
                with("metadata", serde_json::json!({"a": "v".repeat(2047)})),
                None,
            ),
            (
                with("metadata", serde_json::json!({"a": "v".repeat(2048)})),
                Some("metadata_too_large"),
            ),
            (
                with("metadata", serde_json::json!({"a b": "v"})),
                Some("invalid_metadata"),
            ),
            (
                with(
                    "content_type",
                    "t".repeat(MAX_CONTENT_TYPE_BYTES + 1).into(),
                ),
                Some("content_type_too_long"),
            ),
            (
                with("content_type", "text/plain\nX: 1".into()),
                Some("invalid_content_type"),
            ),
            (
                with("storage_class", "CHEAPEST".into()),
                Some("invalid_storage_class"),
            ),
            (
                with(
                    "metadata",
                    serde_json::json!({"pad": "v".repeat(MAX_MESSAGE_BYTES)}),
                ),
                Some("message_too_large"),
            ),
        ];
        for (body, kind) in cases {
            let shown: String = body.chars().take(80).collect();
            match (parse(&body, MSG), kind) {
                (Ok(_), None) => {}
                (Err(r), Some(kind)) => assert_eq!(r.kind, kind, "{shown}"),
                (outcome, kind) => panic!("{shown}: {outcome:?}, wanted {kind:?}"),
            }
        }
    }

    #[test]
    fn an_oversized_message_keeps_its_job_id_and_a_short_reason() {
        let mut body = with("job_id", "big-1".into());
        body.insert_str(
            1,
            &format!(r#""{}":1,"#, "u".repeat(limits::MAX_MESSAGE_BYTES - 200)),
        );
        // Under the message limit, an unknown field's name is quoted, but cut short.
        let r = reject(&body);
        assert_eq!((r.kind, r.job_id.as_str()), ("invalid_job", "big-1"));
        assert!(r.reason.len() < 400, "{}", r.reason.len());
        body.insert_str(1, &format!(r#""{}":1,"#, "u".repeat(300)));
        let r = reject(&body);
        assert_eq!((r.kind, r.job_id.as_str()), ("message_too_large", "big-1"));
    }

    /// The limits exist so that a job's record stays far under DynamoDB's
    /// 400 KB item limit: the redacted URL and the kept message are its
    /// only parts a message controls, and both are bounded.
    #[test]
    fn a_job_at_every_limit_keeps_its_stored_copies_small() {
        let quotes = |n: usize| "\"".repeat(n);
        let body = serde_json::json!({
            "job_id": "j".repeat(128),
            "url": format!("https://x/{}", "a".repeat(limits::MAX_URL_BYTES - 10)),
            "bucket": "b".repeat(63),
            "key": quotes(1024),
            "content_type": quotes(limits::MAX_CONTENT_TYPE_BYTES),
            "metadata": {"m": quotes(limits::MAX_METADATA_BYTES - 1)},
            "storage_class": "INTELLIGENT_TIERING",
            "expected": {"sha256": "a".repeat(64), "md5": "b".repeat(32), "size": u64::MAX},
        })
        .to_string();
        let job = parse(&body, MSG).unwrap();
        let stored = job.shown_url.as_str().len() + job.message_without_secrets().unwrap().len();
        assert!(stored < 32 * 1024, "{stored} bytes");
    }

    #[test]
    fn a_job_bandwidth_cap_must_be_a_positive_whole_number() {
        let with = |rate: &str| {
            parse(
                &format!(
                    r#"{{"url":"https://x/y","bucket":"b-1","key":"k","max_bytes_per_sec":{rate}}}"#
                ),
                MSG,
            )
        };
        assert_eq!(with("0").unwrap_err().kind, "invalid_max_bytes_per_sec");
        for bad in ["-1", "1.5", "\"20MiB\"", "true"] {
            assert_eq!(with(bad).unwrap_err().kind, "invalid_job", "{bad}");
        }
        assert_eq!(
            with("1").unwrap().spec.max_bytes_per_sec,
            NonZeroU64::new(1)
        );
        assert_eq!(with("null").unwrap().spec.max_bytes_per_sec, None);
    }

    #[test]
    fn rejection_reasons_never_echo_header_values_or_urls() {
        let r = reject(
            r#"{"url":"https://x/y?sig=SECRET1","bucket":"b-1","key":"k","headers":{"bad name":"SECRET2"}}"#,
        );
        assert!(
            !r.reason.contains("SECRET1") && !r.reason.contains("SECRET2"),
            "{r}"
        );
        let r = reject(r#"{"url":"https://u:SECRET3@x/y","bucket":"B","key":"k"}"#);
        assert!(!r.reason.contains("SECRET3"), "{r}");
        let r =
            reject(r#"{"url":"https://x/y","bucket":"b-1","key":"k","headers":"Bearer SECRET4"}"#);
        assert!(!r.reason.contains("SECRET4"), "{r}");
        let r = reject(r#"{"url":"https://x/y","bucket":"b-1","key":"k","expected":"SECRET5"}"#);
        assert!(!r.reason.contains("SECRET5"), "{r}");
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_input(body in ".{0,400}") {
            let _ = parse(&body, MSG);
        }

        #[test]
        fn never_panics_on_arbitrary_json_objects(
            url in ".{0,40}", bucket in ".{0,70}", key in ".{0,40}", id in ".{0,20}", version in 0u32..4
        ) {
            let body = serde_json::json!({"url": url, "bucket": bucket, "key": key, "job_id": id, "version": version});
            if let Err(rejection) = parse(&body.to_string(), MSG) {
                prop_assert!(!rejection.job_id.is_empty());
            }
        }
    }
}
