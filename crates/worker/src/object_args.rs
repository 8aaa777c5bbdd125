//! The object settings `ferry submit` puts into job messages: the job of
//! `ferry submit URL s3://…`, or every job of a `--from` file (a JSON line's
//! own fields win over these). The worker's own parser checks the values
//! afterwards, so a bad one is refused with the reason the worker would give.
//! `ferry copy` takes the [`StoredArgs`] half.

use clap::Args;
use serde_json::{Map, Value};

/// Every object setting a job names: how it is stored, and where its
/// encryption and bucket owner come from.
#[derive(Debug, Clone, Default, Args)]
pub struct ObjectArgs {
    #[command(flatten)]
    pub stored: StoredArgs,
    #[command(flatten)]
    pub encryption: EncryptionArgs,
}

/// How the object is stored: its representation headers, tags, and what
/// happens to an object already there. `ferry copy` takes these; its
/// encryption and bucket owner are the engine's defaults (`--sse`,
/// `--expected-bucket-owner`), which apply to a job that names none.
#[derive(Debug, Clone, Default, Args)]
pub struct StoredArgs {
    /// Content-Type of the object (default: the origin's).
    #[arg(long)]
    pub content_type: Option<String>,
    /// Cache-Control of the object (default: the origin's).
    #[arg(long)]
    pub cache_control: Option<String>,
    /// Content-Disposition of the object (default: the origin's).
    #[arg(long)]
    pub content_disposition: Option<String>,
    /// Content-Encoding of the object (default: the origin's).
    #[arg(long)]
    pub content_encoding: Option<String>,
    /// Content-Language of the object (default: the origin's).
    #[arg(long)]
    pub content_language: Option<String>,
    /// An object tag; repeat for more (at most 10).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// When an object is already stored under the key: overwrite (default),
    /// skip (when it is this version of the source) or fail.
    #[arg(long, value_name = "overwrite|skip|fail")]
    pub if_exists: Option<String>,
}

/// A job's own encryption and bucket owner.
#[derive(Debug, Clone, Default, Args)]
pub struct EncryptionArgs {
    /// Server-side encryption: AES256 or aws:kms (default: the worker's
    /// FERRY_SSE, else the bucket's).
    #[arg(long, value_name = "AES256|aws:kms")]
    pub sse: Option<String>,
    /// With --sse aws:kms: the KMS key (id, ARN or alias).
    #[arg(long, requires = "sse")]
    pub kms_key_id: Option<String>,
    /// With --sse aws:kms: use an S3 Bucket Key (true/false).
    #[arg(long, requires = "sse")]
    pub bucket_key: Option<bool>,
    /// The AWS account id (12 digits) that must own the bucket.
    #[arg(long, value_name = "ACCOUNT")]
    pub expected_bucket_owner: Option<String>,
}

impl ObjectArgs {
    /// Sets every field given here that `message` does not set itself.
    pub fn apply(&self, message: &mut Map<String, Value>) -> Result<(), String> {
        self.stored.apply(message)?;
        self.encryption.apply(message);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        let mut none = Map::new();
        self.apply(&mut none).is_ok() && none.is_empty()
    }
}

impl StoredArgs {
    /// Sets every field given here that `message` does not set itself.
    pub fn apply(&self, message: &mut Map<String, Value>) -> Result<(), String> {
        fill(
            message,
            [
                ("content_type", &self.content_type),
                ("cache_control", &self.cache_control),
                ("content_disposition", &self.content_disposition),
                ("content_encoding", &self.content_encoding),
                ("content_language", &self.content_language),
                ("if_exists", &self.if_exists),
            ],
        );
        if !self.tags.is_empty() && !message.contains_key("tags") {
            let mut tags = Map::new();
            for tag in &self.tags {
                let (key, value) = tag
                    .split_once('=')
                    .ok_or_else(|| format!("--tag {tag:?} is not KEY=VALUE"))?;
                tags.insert(key.to_owned(), value.into());
            }
            message.insert("tags".into(), tags.into());
        }
        Ok(())
    }
}

impl EncryptionArgs {
    /// Sets every field given here that `message` does not set itself.
    pub fn apply(&self, message: &mut Map<String, Value>) {
        fill(
            message,
            [
                ("sse", &self.sse),
                ("kms_key_id", &self.kms_key_id),
                ("expected_bucket_owner", &self.expected_bucket_owner),
            ],
        );
        if let Some(bucket_key) = self.bucket_key {
            message.entry("bucket_key").or_insert(bucket_key.into());
        }
    }
}

/// Sets each given text field the message does not set itself.
fn fill<const N: usize>(message: &mut Map<String, Value>, fields: [(&str, &Option<String>); N]) {
    for (name, value) in fields {
        if let Some(value) = value {
            message.entry(name).or_insert_with(|| value.as_str().into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_settings_fill_what_a_message_leaves_open() {
        let args = ObjectArgs {
            stored: StoredArgs {
                tags: vec!["team=data".into(), "note=a=b".into()],
                if_exists: Some("skip".into()),
                cache_control: Some("no-cache".into()),
                ..StoredArgs::default()
            },
            encryption: EncryptionArgs {
                sse: Some("aws:kms".into()),
                bucket_key: Some(true),
                ..EncryptionArgs::default()
            },
        };
        let mut message: Map<String, Value> =
            serde_json::from_str(r#"{"url":"u","if_exists":"fail"}"#).unwrap();
        args.apply(&mut message).unwrap();
        assert_eq!(
            Value::Object(message),
            serde_json::json!({"url": "u", "if_exists": "fail", "sse": "aws:kms",
                "bucket_key": true, "cache_control": "no-cache",
                "tags": {"team": "data", "note": "a=b"}})
        );
        let bad = ObjectArgs {
            stored: StoredArgs {
                tags: vec!["nokey".into()],
                ..StoredArgs::default()
            },
            ..ObjectArgs::default()
        };
        assert!(bad.apply(&mut Map::new()).is_err());
        assert!(ObjectArgs::default().is_empty());
        assert!(!args.is_empty());
    }
}
