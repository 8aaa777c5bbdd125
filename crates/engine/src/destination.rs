//! Where an object goes and everything it is stored with besides its bytes:
//! the representation headers (`Content-Type` and friends), user metadata,
//! storage class, server-side encryption, tags, and the account that must
//! own the bucket. [`Destination::with_origin`] fills the representation
//! headers a job left open from the origin's answer, and keeps the origin's
//! validators as metadata a later job can compare. No AWS calls: the sink
//! sends what this holds.

use std::collections::HashMap;

use reqwest::header::{self, HeaderMap, HeaderName};

/// S3's limit on an object's user metadata: names and values, in bytes.
pub const MAX_USER_METADATA_BYTES: usize = 2 * 1024;

/// Metadata names under which the origin's validators are kept.
pub const SOURCE_ETAG_METADATA: &str = "ferry-source-etag";
pub const SOURCE_LAST_MODIFIED_METADATA: &str = "ferry-source-last-modified";

/// Where and how the object is stored.
#[derive(Debug, Clone, Default)]
pub struct Destination {
    pub bucket: String,
    pub key: String,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub metadata: HashMap<String, String>,
    pub storage_class: Option<String>,
    pub encryption: Option<Encryption>,
    /// Object tags, in the order the job gave them.
    pub tags: Vec<(String, String)>,
    /// The account (12 digits) that must own the bucket: S3 refuses every
    /// call with `403 AccessDenied` when another one does.
    pub expected_bucket_owner: Option<String>,
    /// What to do when an object is already stored under the key.
    pub if_exists: IfExists,
}

/// What a transfer does when an object is already stored under its key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IfExists {
    /// Replace it (S3's own behaviour).
    #[default]
    Overwrite,
    /// Leave it, and store nothing, when it is the same version of the
    /// source: the same size and the validator ferry kept when it stored it
    /// (`ferry-source-etag`, else `ferry-source-last-modified`). Anything
    /// else is overwritten.
    Skip,
    /// Fail with `destination_exists` and leave it: checked before the first
    /// byte is read, and made safe against concurrent writers by a
    /// conditional write (`If-None-Match: *`) of the object.
    Fail,
}

impl IfExists {
    /// The `If-None-Match` of the write that stores the object.
    pub fn condition(self) -> Option<String> {
        (self == Self::Fail).then(|| "*".to_owned())
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "overwrite" => Some(Self::Overwrite),
            "skip" => Some(Self::Skip),
            "fail" => Some(Self::Fail),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Overwrite => "overwrite",
            Self::Skip => "skip",
            Self::Fail => "fail",
        }
    }
}

/// An object already stored at a destination, as HEAD describes it.
#[derive(Debug, Clone, Default)]
pub struct ExistingObject {
    pub size: Option<u64>,
    pub etag: String,
    pub crc64nvme: Option<String>,
    pub metadata: HashMap<String, String>,
}

impl ExistingObject {
    /// Whether this object is the version of the source `origin` and
    /// `length` describe, as far as the validator ferry kept with it says:
    /// a strong ETag, else a Last-Modified date (weak ETags never match).
    pub fn same_source_version(&self, origin: &OriginHeaders, length: Option<u64>) -> bool {
        if length.is_none() || self.size != length {
            return false;
        }
        let kept = |name: &str| self.metadata.get(name).map(String::as_str);
        match origin.etag.as_deref() {
            Some(etag) if !etag.starts_with("W/") => kept(SOURCE_ETAG_METADATA) == Some(etag),
            _ => {
                origin.last_modified.is_some()
                    && kept(SOURCE_LAST_MODIFIED_METADATA) == origin.last_modified.as_deref()
                    && kept(SOURCE_ETAG_METADATA).is_none_or(|e| e.starts_with("W/"))
            }
        }
    }
}

/// What objects are stored with when a job does not say: a worker's
/// `FERRY_SSE`, `FERRY_SSE_KMS_KEY_ID`, `FERRY_SSE_BUCKET_KEY` and
/// `FERRY_EXPECTED_BUCKET_OWNER`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectDefaults {
    pub encryption: Option<Encryption>,
    pub expected_bucket_owner: Option<String>,
}

/// Server-side encryption of the stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// `AES256`: keys managed by S3 (SSE-S3).
    S3Managed,
    /// `aws:kms` (SSE-KMS): the bucket's default KMS key unless `key_id`
    /// names one; `bucket_key` asks for (or refuses) an S3 Bucket Key, which
    /// cuts KMS requests; unset, the bucket's setting applies.
    Kms {
        key_id: Option<String>,
        bucket_key: Option<bool>,
    },
}

impl Encryption {
    /// The `x-amz-server-side-encryption` value.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Self::S3Managed => "AES256",
            Self::Kms { .. } => "aws:kms",
        }
    }
}

/// The origin's representation headers and validators, from its first
/// answer. Values that are not visible ASCII are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginHeaders {
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// Longer origin values are not copied: S3 takes headers of a few KB in
/// all, and a value this long is more likely junk than meaning.
const MAX_COPIED_VALUE_BYTES: usize = 1024;

impl OriginHeaders {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let value = |name: HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.len() <= MAX_COPIED_VALUE_BYTES)
                .map(str::to_owned)
        };
        Self {
            content_type: value(header::CONTENT_TYPE),
            cache_control: value(header::CACHE_CONTROL),
            content_disposition: value(header::CONTENT_DISPOSITION),
            content_encoding: value(header::CONTENT_ENCODING),
            content_language: value(header::CONTENT_LANGUAGE),
            etag: value(header::ETAG),
            last_modified: value(header::LAST_MODIFIED),
        }
    }
}

impl Destination {
    /// This destination with the representation headers it leaves open
    /// taken from the origin (a value of its own wins), and the origin's
    /// `ETag` and `Last-Modified` kept as metadata when the job did not use
    /// those names and they fit S3's 2 KB of user metadata.
    pub fn with_origin(&self, origin: &OriginHeaders) -> Destination {
        let mut filled = self.clone();
        let or = |own: &mut Option<String>, theirs: &Option<String>| {
            if own.is_none() {
                own.clone_from(theirs);
            }
        };
        or(&mut filled.content_type, &origin.content_type);
        or(&mut filled.cache_control, &origin.cache_control);
        or(&mut filled.content_disposition, &origin.content_disposition);
        or(&mut filled.content_encoding, &origin.content_encoding);
        or(&mut filled.content_language, &origin.content_language);
        for (name, value) in [
            (SOURCE_ETAG_METADATA, &origin.etag),
            (SOURCE_LAST_MODIFIED_METADATA, &origin.last_modified),
        ] {
            let Some(value) = value else { continue };
            if filled.metadata.contains_key(name)
                || metadata_bytes(&filled.metadata) + name.len() + value.len()
                    > MAX_USER_METADATA_BYTES
            {
                continue;
            }
            filled.metadata.insert(name.to_owned(), value.clone());
        }
        filled
    }

    /// This destination with `defaults` where it says nothing: a job's
    /// own encryption replaces the default one whole.
    pub fn with_defaults(&self, defaults: &ObjectDefaults) -> Destination {
        let mut filled = self.clone();
        if filled.encryption.is_none() {
            filled.encryption.clone_from(&defaults.encryption);
        }
        if filled.expected_bucket_owner.is_none() {
            filled
                .expected_bucket_owner
                .clone_from(&defaults.expected_bucket_owner);
        }
        filled
    }

    /// The tags as S3's `x-amz-tagging` header wants them: a URL-encoded
    /// query string. `None` without tags.
    pub fn tagging(&self) -> Option<String> {
        (!self.tags.is_empty()).then(|| {
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(self.tags.iter())
                .finish()
        })
    }
}

fn metadata_bytes(metadata: &HashMap<String, String>) -> usize {
    metadata.iter().map(|(k, v)| k.len() + v.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> OriginHeaders {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("content-type", "video/mp4"),
            ("cache-control", "max-age=60"),
            ("content-disposition", "attachment; filename=\"a.mp4\""),
            ("content-language", "de"),
            ("etag", "\"v1\""),
            ("last-modified", "Sun, 06 Dec 2026 10:00:00 GMT"),
        ] {
            headers.insert(
                HeaderName::from_static(name),
                value.parse().expect("a valid value"),
            );
        }
        OriginHeaders::from_headers(&headers)
    }

    #[test]
    fn the_origin_fills_what_the_job_left_open_and_the_job_wins() {
        let job = Destination {
            content_type: Some("application/x-custom".into()),
            ..Destination::default()
        };
        let filled = job.with_origin(&origin());
        assert_eq!(filled.content_type.as_deref(), Some("application/x-custom"));
        assert_eq!(filled.cache_control.as_deref(), Some("max-age=60"));
        assert_eq!(
            filled.content_disposition.as_deref(),
            Some("attachment; filename=\"a.mp4\"")
        );
        assert_eq!(filled.content_language.as_deref(), Some("de"));
        assert_eq!(filled.content_encoding, None);
        assert_eq!(filled.metadata[SOURCE_ETAG_METADATA], "\"v1\"");
        assert_eq!(
            filled.metadata[SOURCE_LAST_MODIFIED_METADATA],
            "Sun, 06 Dec 2026 10:00:00 GMT"
        );
    }

    #[test]
    fn the_origin_validators_never_push_metadata_past_two_kilobytes() {
        let full = Destination {
            metadata: HashMap::from([("m".into(), "x".repeat(MAX_USER_METADATA_BYTES - 30))]),
            ..Destination::default()
        };
        let filled = full.with_origin(&origin());
        // The ETag fits in the last 30 bytes; the date does not.
        assert!(filled.metadata.contains_key(SOURCE_ETAG_METADATA));
        assert!(!filled.metadata.contains_key(SOURCE_LAST_MODIFIED_METADATA));
        assert!(metadata_bytes(&filled.metadata) <= MAX_USER_METADATA_BYTES);
        let own = Destination {
            metadata: HashMap::from([(SOURCE_ETAG_METADATA.into(), "mine".into())]),
            ..Destination::default()
        };
        assert_eq!(
            own.with_origin(&origin()).metadata[SOURCE_ETAG_METADATA],
            "mine"
        );
    }

    #[test]
    fn worker_defaults_apply_only_where_the_job_says_nothing() {
        let defaults = ObjectDefaults {
            encryption: Some(Encryption::Kms {
                key_id: Some("alias/fleet".into()),
                bucket_key: Some(true),
            }),
            expected_bucket_owner: Some("111122223333".into()),
        };
        let silent = Destination::default().with_defaults(&defaults);
        assert_eq!(silent.encryption, defaults.encryption);
        assert_eq!(silent.expected_bucket_owner, defaults.expected_bucket_owner);
        let own = Destination {
            encryption: Some(Encryption::S3Managed),
            expected_bucket_owner: Some("444455556666".into()),
            ..Destination::default()
        }
        .with_defaults(&defaults);
        assert_eq!(own.encryption, Some(Encryption::S3Managed));
        assert_eq!(own.expected_bucket_owner.as_deref(), Some("444455556666"));
    }

    #[test]
    fn an_object_is_the_same_version_only_by_size_and_a_kept_strong_validator() {
        let origin = origin();
        let stored = |etag: Option<&str>, date: Option<&str>, size| ExistingObject {
            size: Some(size),
            metadata: [
                etag.map(|e| (SOURCE_ETAG_METADATA.to_owned(), e.to_owned())),
                date.map(|d| (SOURCE_LAST_MODIFIED_METADATA.to_owned(), d.to_owned())),
            ]
            .into_iter()
            .flatten()
            .collect(),
            ..ExistingObject::default()
        };
        let date = "Sun, 06 Dec 2026 10:00:00 GMT";
        assert!(stored(Some("\"v1\""), Some(date), 10).same_source_version(&origin, Some(10)));
        assert!(!stored(Some("\"v1\""), Some(date), 10).same_source_version(&origin, Some(11)));
        assert!(!stored(Some("\"v1\""), None, 10).same_source_version(&origin, None));
        assert!(!stored(Some("\"v0\""), Some(date), 10).same_source_version(&origin, Some(10)));
        assert!(!stored(None, None, 10).same_source_version(&origin, Some(10)));
        // Without an ETag at the origin, the date decides; a weak ETag counts as none.
        let dated = OriginHeaders {
            etag: Some("W/\"v1\"".into()),
            ..origin.clone()
        };
        assert!(stored(None, Some(date), 10).same_source_version(&dated, Some(10)));
        assert!(stored(Some("W/\"v1\""), Some(date), 10).same_source_version(&dated, Some(10)));
        assert!(
            !stored(None, Some("Mon, 07 Dec 2026 10:00:00 GMT"), 10)
                .same_source_version(&dated, Some(10))
        );
    }

    #[test]
    fn tags_are_sent_url_encoded_in_order() {
        let dest = Destination {
            tags: vec![
                ("team".into(), "data eng".into()),
                ("cost/centre".into(), "a+b=c".into()),
            ],
            ..Destination::default()
        };
        assert_eq!(
            dest.tagging().as_deref(),
            Some("team=data+eng&cost%2Fcentre=a%2Bb%3Dc")
        );
        assert_eq!(Destination::default().tagging(), None);
    }
}
