//! What a job record keeps of the job's message, so that `ferry retry` can
//! send it again: the message without secrets (none kept at all when the job
//! has headers or a URL with userinfo, a query or a fragment), and without
//! the fields the record holds anyway — and the way back from a record.

use super::settings;
use super::{IfExists, Job, SUPPORTED_VERSION};

impl Job {
    /// The job as a version-1 message, for `ferry retry` to send again —
    /// `None` when the job carries a secret (request headers, or a URL with
    /// userinfo, a query or a fragment): ferry never stores those, so such a
    /// job can only be submitted again by whoever holds the original.
    pub fn message_without_secrets(&self) -> Option<String> {
        let url = &self.spec.source.url;
        if !self.spec.source.headers.is_empty() || url.as_str() != self.shown_url.as_str() {
            return None;
        }
        let destination = &self.spec.destination;
        let expected = &self.spec.expected;
        let mut message = serde_json::json!({
            "version": SUPPORTED_VERSION,
            "job_id": self.id,
            "url": url.as_str(),
            "bucket": destination.bucket,
            "key": destination.key,
        });
        let fields = message.as_object_mut()?;
        if expected.sha256.is_some() || expected.md5.is_some() || expected.size.is_some() {
            let mut wanted = serde_json::Map::new();
            if let Some(sha256) = &expected.sha256 {
                wanted.insert("sha256".into(), sha256.as_str().into());
            }
            if let Some(md5) = &expected.md5 {
                wanted.insert("md5".into(), md5.as_str().into());
            }
            if let Some(size) = expected.size {
                wanted.insert("size".into(), size.into());
            }
            fields.insert("expected".into(), wanted.into());
        }
        if let Some(content_type) = &destination.content_type {
            fields.insert("content_type".into(), content_type.as_str().into());
        }
        if !destination.metadata.is_empty() {
            fields.insert(
                "metadata".into(),
                serde_json::to_value(&destination.metadata).ok()?,
            );
        }
        if let Some(class) = &destination.storage_class {
            fields.insert("storage_class".into(), class.as_str().into());
        }
        let header_fields = [
            &destination.cache_control,
            &destination.content_disposition,
            &destination.content_encoding,
            &destination.content_language,
        ];
        for ((name, _), value) in settings::HEADER_FIELDS.into_iter().zip(header_fields) {
            if let Some(value) = value {
                fields.insert(name.into(), value.as_str().into());
            }
        }
        match &destination.encryption {
            Some(ferry_engine::Encryption::S3Managed) => {
                fields.insert("sse".into(), "AES256".into());
            }
            Some(ferry_engine::Encryption::Kms { key_id, bucket_key }) => {
                fields.insert("sse".into(), "aws:kms".into());
                if let Some(key_id) = key_id {
                    fields.insert("kms_key_id".into(), key_id.as_str().into());
                }
                if let Some(bucket_key) = bucket_key {
                    fields.insert("bucket_key".into(), (*bucket_key).into());
                }
            }
            None => {}
        }
        if !destination.tags.is_empty() {
            let tags: serde_json::Map<_, _> = destination
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().into()))
                .collect();
            fields.insert("tags".into(), tags.into());
        }
        if let Some(owner) = &destination.expected_bucket_owner {
            fields.insert("expected_bucket_owner".into(), owner.as_str().into());
        }
        if destination.if_exists != IfExists::Overwrite {
            fields.insert("if_exists".into(), destination.if_exists.as_str().into());
        }
        if let Some(rate) = self.spec.max_bytes_per_sec {
            fields.insert("max_bytes_per_sec".into(), rate.get().into());
        }
        Some(message.to_string())
    }

    /// What a record keeps of [`Job::message_without_secrets`]: the message
    /// without the fields the record holds anyway (`job_id`, `url`,
    /// `bucket`, `key`) — `{"version":1}` for a job that names nothing
    /// else. Storing them twice would push a small job's record past 1 KB,
    /// and every write of it would cost two write units instead of one.
    pub fn message_for_record(&self) -> Option<String> {
        let message = self.message_without_secrets()?;
        let mut fields: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&message).ok()?;
        for held in RECORD_HELD_FIELDS {
            fields.remove(held);
        }
        Some(serde_json::Value::Object(fields).to_string())
    }
}

/// The message fields a job record holds as attributes of its own.
const RECORD_HELD_FIELDS: [&str; 4] = ["job_id", "url", "bucket", "key"];

/// The message `ferry retry` sends again, from what a record kept
/// ([`Job::message_for_record`]) and its `job_id`, `url`, `bucket` and
/// `key`. A record written before the message was trimmed keeps the whole
/// message; the record's own fields are the same values, so the answer is
/// the same. `None` when the kept text is not a JSON object.
pub fn message_from_record(
    kept: &str,
    job_id: &str,
    url: &str,
    bucket: &str,
    key: &str,
) -> Option<String> {
    let mut fields: serde_json::Map<String, serde_json::Value> = serde_json::from_str(kept).ok()?;
    for (name, value) in RECORD_HELD_FIELDS
        .into_iter()
        .zip([job_id, url, bucket, key])
    {
        fields.insert(name.into(), value.into());
    }
    Some(serde_json::Value::Object(fields).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::parse;

    const MSG: &str = "msg-1";

    #[test]
    fn a_job_without_secrets_round_trips_through_its_stored_message() {
        let body = r#"{"url":"https://example.com/a.iso","bucket":"my-bucket","key":"k","job_id":"j1",
            "expected":{"size":3},"content_type":"text/plain","metadata":{"a":"b"},"storage_class":"STANDARD_IA",
            "max_bytes_per_sec":1048576,"cache_control":"no-cache","content_disposition":"inline",
            "content_encoding":"gzip","content_language":"en","sse":"aws:kms","kms_key_id":"alias/k",
            "bucket_key":false,"tags":{"team":"data","b":""},"expected_bucket_owner":"111122223333",
            "if_exists":"fail"}"#;
        let job = parse(body, MSG).unwrap();
        let stored = job
            .message_without_secrets()
            .expect("nothing secret in this job");
        let again = parse(&stored, MSG).unwrap();
        assert_eq!(again.id, "j1");
        assert_eq!(
            format!("{:?}", again.spec.destination),
            format!("{:?}", job.spec.destination)
        );
        assert_eq!(again.spec.expected, job.spec.expected);
        assert_eq!(again.spec.source.url, job.spec.source.url);
        assert_eq!(again.spec.max_bytes_per_sec, job.spec.max_bytes_per_sec);
    }

    #[test]
    fn a_record_keeps_only_what_its_own_fields_do_not_say() {
        let plain = parse(
            r#"{"url":"https://example.com/a.iso","bucket":"my-bucket","key":"k","job_id":"j1"}"#,
            MSG,
        )
        .unwrap();
        assert_eq!(plain.message_for_record().unwrap(), r#"{"version":1}"#);
        let rich = parse(
            r#"{"url":"https://example.com/a.iso","bucket":"my-bucket","key":"k/x","job_id":"j2",
                "expected":{"size":3},"content_type":"text/plain","max_bytes_per_sec":9}"#,
            MSG,
        )
        .unwrap();
        for job in [plain, rich] {
            let destination = &job.spec.destination;
            let record_fields = (
                job.id.as_str(),
                job.shown_url.as_str(),
                destination.bucket.as_str(),
                destination.key.as_str(),
            );
            let from = |kept: &str| {
                let (id, url, bucket, key) = record_fields;
                message_from_record(kept, id, url, bucket, key).unwrap()
            };
            let full = job.message_without_secrets().unwrap();
            let value = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
            // Trimmed now, or whole as records kept it before: the same message.
            assert_eq!(
                value(&from(&job.message_for_record().unwrap())),
                value(&full)
            );
            assert_eq!(value(&from(&full)), value(&full));
        }
        assert_eq!(message_from_record("", "j", "u", "b", "k"), None);
    }

    #[test]
    fn a_job_with_a_secret_keeps_no_message() {
        for body in [
            r#"{"url":"https://example.com/a?X-Amz-Signature=s","bucket":"my-bucket","key":"k"}"#,
            r#"{"url":"https://u:p@example.com/a","bucket":"my-bucket","key":"k"}"#,
            r#"{"url":"https://example.com/a","bucket":"my-bucket","key":"k","headers":{"Authorization":"t"}}"#,
        ] {
            let job = parse(body, MSG).unwrap();
            assert_eq!(job.message_without_secrets(), None, "{body}");
            assert_eq!(job.message_for_record(), None, "{body}");
        }
    }
}
