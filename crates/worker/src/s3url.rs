//! `s3://bucket/key` destinations and the S3 naming rules they must follow.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum S3UrlError {
    #[error("destination must look like s3://bucket/key")]
    Shape,
    #[error("bucket name {0:?} breaks S3's naming rules")]
    Bucket(String),
    #[error("object key {0}")]
    Key(&'static str),
    #[error("object key is longer than 1024 bytes")]
    KeyTooLong,
}

impl FromStr for S3Url {
    type Err = S3UrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let rest = text.strip_prefix("s3://").ok_or(S3UrlError::Shape)?;
        let (bucket, key) = rest.split_once('/').ok_or(S3UrlError::Shape)?;
        validate_bucket(bucket)?;
        validate_key(key)?;
        Ok(Self {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// S3 general-purpose bucket rules: 3–63 chars of `a-z0-9.-`, starting and
/// ending with a letter or digit, no `..`, not shaped like an IP address.
pub fn validate_bucket(bucket: &str) -> Result<(), S3UrlError> {
    let bad = || S3UrlError::Bucket(bucket.to_owned());
    let ok_chars = bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let edges_ok = bucket
        .bytes()
        .next()
        .zip(bucket.bytes().last())
        .is_some_and(|(a, z)| a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric());
    if !(3..=63).contains(&bucket.len())
        || !ok_chars
        || !edges_ok
        || bucket.contains("..")
        || bucket.parse::<std::net::Ipv4Addr>().is_ok()
    {
        return Err(bad());
    }
    Ok(())
}

/// Keys are 1–1024 bytes of UTF-8; control characters are refused because
/// they break listings, logs and most tools.
pub fn validate_key(key: &str) -> Result<(), S3UrlError> {
    if key.is_empty() {
        return Err(S3UrlError::Key("is empty"));
    }
    if key.len() > 1024 {
        return Err(S3UrlError::KeyTooLong);
    }
    if key.chars().any(char::is_control) {
        return Err(S3UrlError::Key("contains control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_and_key() {
        let url: S3Url = "s3://my-bucket/isos/ubuntu.iso".parse().unwrap();
        assert_eq!(url.bucket, "my-bucket");
        assert_eq!(url.key, "isos/ubuntu.iso");
        assert_eq!(url.to_string(), "s3://my-bucket/isos/ubuntu.iso");
    }

    #[test]
    fn rejects_bad_destinations() {
        for bad in [
            "my-bucket/key",
            "s3://my-bucket",
            "s3://my-bucket/",
            "s3://My_Bucket/k",
            "s3://ab/k",
            "s3://192.168.1.1/k",
            "s3://a..b/k",
            "s3://-bucket/k",
            "s3://bucket/a\nb",
        ] {
            assert!(bad.parse::<S3Url>().is_err(), "{bad}");
        }
        let long = format!("s3://bucket/{}", "k".repeat(1025));
        assert!(long.parse::<S3Url>().is_err());
    }
}
