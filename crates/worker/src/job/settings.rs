//! The job fields that say how the object is stored besides its bytes —
//! `sse` with `kms_key_id` and `bucket_key`, `tags`, the representation
//! headers (`cache_control`, `content_disposition`, `content_encoding`,
//! `content_language`) and `expected_bucket_owner` — checked at parse time,
//! so that a bad value is a rejection with its own `error_kind`, never a
//! half-made object. The worker's defaults for them (`FERRY_SSE`, …) go
//! through the same checks at start-up.

use std::collections::BTreeMap;

use ferry_engine::Encryption;

use super::limits::Refusal;

/// S3's limits on object tags.
pub const MAX_TAGS: usize = 10;
pub const MAX_TAG_KEY_CHARS: usize = 128;
pub const MAX_TAG_VALUE_CHARS: usize = 256;
/// A representation header a job sets (as `content_type`'s limit).
pub const MAX_HEADER_FIELD_BYTES: usize = 1024;
/// KMS key ids, ARNs and alias names are at most this long.
pub const MAX_KMS_KEY_ID_BYTES: usize = 2048;

/// The encryption `sse`, `kms_key_id` and `bucket_key` ask for: `AES256`
/// or `aws:kms`; the other two only with `aws:kms`.
pub fn encryption(
    sse: Option<&str>,
    kms_key_id: Option<&str>,
    bucket_key: Option<bool>,
) -> Result<Option<Encryption>, Refusal> {
    let invalid = |why: &str| ("invalid_sse", why.to_owned());
    match sse {
        None if kms_key_id.is_some() || bucket_key.is_some() => {
            Err(invalid("kms_key_id and bucket_key need sse \"aws:kms\""))
        }
        None => Ok(None),
        Some("AES256") if kms_key_id.is_some() || bucket_key.is_some() => Err(invalid(
            "kms_key_id and bucket_key go with sse \"aws:kms\", not \"AES256\"",
        )),
        Some("AES256") => Ok(Some(Encryption::S3Managed)),
        Some("aws:kms") => {
            if let Some(key) = kms_key_id
                && (key.is_empty()
                    || key.len() > MAX_KMS_KEY_ID_BYTES
                    || !key.bytes().all(|b| b.is_ascii_graphic()))
            {
                return Err(invalid(&format!(
                    "kms_key_id must be a key id, key ARN or alias of 1-{MAX_KMS_KEY_ID_BYTES} visible ASCII characters"
                )));
            }
            Ok(Some(Encryption::Kms {
                key_id: kms_key_id.map(str::to_owned),
                bucket_key,
            }))
        }
        Some(_) => Err(invalid("sse must be \"AES256\" or \"aws:kms\"")),
    }
}

/// S3's tag rules: at most 10; keys of 1-128 and values of 0-256
/// characters, of letters, digits, spaces and `+ - = . _ : / @`; no key in
/// the `aws:` namespace (S3 keeps it for itself). Sorted by key.
pub fn tags(tags: BTreeMap<String, String>) -> Result<Vec<(String, String)>, Refusal> {
    let invalid = |why: String| ("invalid_tags", why);
    if tags.len() > MAX_TAGS {
        return Err(invalid(format!(
            "{} tags; S3 allows at most {MAX_TAGS}",
            tags.len()
        )));
    }
    let allowed = |text: &str| {
        text.chars()
            .all(|c| c.is_alphanumeric() || " +-=._:/@".contains(c))
    };
    for (key, value) in &tags {
        let chars = key.chars().count();
        if chars == 0 || chars > MAX_TAG_KEY_CHARS || !allowed(key) {
            return Err(invalid(format!(
                "tag key {key:?} must be 1-{MAX_TAG_KEY_CHARS} letters, digits, spaces or + - = . _ : / @"
            )));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(invalid(format!("tag key {key:?} is in the aws: namespace")));
        }
        if value.chars().count() > MAX_TAG_VALUE_CHARS || !allowed(value) {
            return Err(invalid(format!(
                "the value of tag {key:?} must be at most {MAX_TAG_VALUE_CHARS} letters, digits, spaces or + - = . _ : / @"
            )));
        }
    }
    Ok(tags.into_iter().collect())
}

/// The representation headers a job may set besides `content_type`, with
/// the `error_kind` of a bad value.
pub const HEADER_FIELDS: [(&str, &str); 4] = [
    ("cache_control", "invalid_cache_control"),
    ("content_disposition", "invalid_content_disposition"),
    ("content_encoding", "invalid_content_encoding"),
    ("content_language", "invalid_content_language"),
];

/// A representation header's value: printable ASCII (S3 would need anything
/// else encoded), at most [`MAX_HEADER_FIELD_BYTES`].
pub fn header_field(field: (&str, &'static str), value: &str) -> Result<(), Refusal> {
    let (name, kind) = field;
    if value.len() > MAX_HEADER_FIELD_BYTES || !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err((
            kind,
            format!("{name} must be at most {MAX_HEADER_FIELD_BYTES} bytes of printable ASCII"),
        ));
    }
    Ok(())
}

/// An AWS account id: 12 digits.
pub fn expected_bucket_owner(owner: &str) -> Result<(), Refusal> {
    if owner.len() == 12 && owner.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(());
    }
    Err((
        "invalid_expected_bucket_owner",
        "expected_bucket_owner must be an AWS account id (12 digits)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind<T: std::fmt::Debug>(result: Result<T, Refusal>) -> &'static str {
        result.expect_err("refused").0
    }

    #[test]
    fn encryption_is_one_of_two_algorithms_and_kms_options_need_kms() {
        assert_eq!(encryption(None, None, None), Ok(None));
        assert_eq!(
            encryption(Some("AES256"), None, None),
            Ok(Some(Encryption::S3Managed))
        );
        assert_eq!(
            encryption(Some("aws:kms"), Some("alias/ferry"), Some(true)),
            Ok(Some(Encryption::Kms {
                key_id: Some("alias/ferry".into()),
                bucket_key: Some(true)
            }))
        );
        for refused in [
            encryption(Some("aes256"), None, None),
            encryption(Some("aws:kms:dsse"), None, None),
            encryption(None, Some("k"), None),
            encryption(None, None, Some(false)),
            encryption(Some("AES256"), Some("k"), None),
            encryption(Some("aws:kms"), Some(""), None),
            encryption(Some("aws:kms"), Some("a key"), None),
        ] {
            assert_eq!(kind(refused), "invalid_sse");
        }
    }

    #[test]
    fn tags_follow_s3s_rules() {
        let tags_of = |pairs: &[(&str, &str)]| {
            tags(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        assert_eq!(
            tags_of(&[("team", "data eng"), ("a/b", "x+y=z@q:1.2_3-4")]).unwrap(),
            vec![
                ("a/b".to_owned(), "x+y=z@q:1.2_3-4".to_owned()),
                ("team".to_owned(), "data eng".to_owned())
            ]
        );
        assert!(tags_of(&[("größe", "")]).is_ok(), "letters of any script");
        let eleven: Vec<(String, String)> =
            (0..11).map(|i| (format!("k{i}"), "v".into())).collect();
        assert_eq!(kind(tags(eleven.into_iter().collect())), "invalid_tags");
        for pairs in [
            &[("", "v")][..],
            &[("k!", "v")],
            &[("aws:created", "v")],
            &[("AWS:x", "v")],
            &[("k", "semi;colon")],
        ] {
            assert_eq!(kind(tags_of(pairs)), "invalid_tags", "{pairs:?}");
        }
        let long_key = "k".repeat(MAX_TAG_KEY_CHARS + 1);
        assert_eq!(kind(tags_of(&[(&long_key, "v")])), "invalid_tags");
        let long_value = "v".repeat(MAX_TAG_VALUE_CHARS + 1);
        assert_eq!(kind(tags_of(&[("k", &long_value)])), "invalid_tags");
    }

    #[test]
    fn header_fields_and_owners_are_checked() {
        let cache = HEADER_FIELDS[0];
        assert_eq!(header_field(cache, "max-age=3600, public"), Ok(()));
        assert_eq!(
            kind(header_field(cache, "a\r\nX-Evil: 1")),
            "invalid_cache_control"
        );
        assert_eq!(
            kind(header_field(
                HEADER_FIELDS[3],
                &"a".repeat(MAX_HEADER_FIELD_BYTES + 1)
            )),
            "invalid_content_language"
        );
        assert_eq!(expected_bucket_owner("111122223333"), Ok(()));
        for bad in ["11112222333", "1111222233334", "11112222333x", ""] {
            assert_eq!(
                kind(expected_bucket_owner(bad)),
                "invalid_expected_bucket_owner"
            );
        }
    }
}
