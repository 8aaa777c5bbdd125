//! Names bulk submit makes up: the job id of a line that brings none, and
//! the object key of a `TsvHttpData-1.0` row. Pure; no I/O.
//!
//! Both are deterministic, because running the same file twice must name the
//! same jobs and objects, so that nothing is submitted twice.

use std::fmt;
use std::str::FromStr;

use ferry_engine::source::Url;
use sha2::{Digest as _, Sha256};

use crate::job::Job;
use crate::s3url::{S3UrlError, validate_bucket, validate_key};

/// Prefix of derived job ids: says where the id came from when it shows up
/// in `ferry status` or a log, and keeps them apart from UUIDs.
const DERIVED_ID_PREFIX: &str = "bulk-";

/// Versions the hash input, so a change of what goes into it cannot make an
/// old id name a different job.
const DERIVED_ID_DOMAIN: &str = "ferry-bulk-v1";

/// The job id of a line that brings none: `bulk-` and 32 hex digits (128
/// bits) of the SHA-256 of the job's redacted source URL, bucket and key.
///
/// The redacted URL (no userinfo, no query: see [`crate::redact`]) and not
/// the full one, because a list of presigned URLs is signed afresh for every
/// run: the same object with a new signature is the same job, and must be
/// found already present. The destination identifies the job; the other
/// fields (`expected`, `headers`, …) do not, so editing them in a file does
/// not submit the line again.
pub fn derived_job_id(job: &Job) -> String {
    let mut hash = Sha256::new();
    // NUL separates the fields unambiguously: none of them can contain one
    // (URLs percent-encode it, bucket and key rules refuse control characters).
    for field in [
        DERIVED_ID_DOMAIN,
        job.shown_url.as_str(),
        &job.spec.destination.bucket,
        &job.spec.destination.key,
    ] {
        hash.update(field.as_bytes());
        hash.update([0]);
    }
    let digest = hash.finalize();
    format!("{DERIVED_ID_PREFIX}{}", hex::encode(&digest[..16]))
}

/// `--dest s3://BUCKET/PREFIX/`: where the objects of a URL list go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub bucket: String,
    /// Empty, or ending in `/`.
    pub prefix: String,
}

impl FromStr for Destination {
    type Err = S3UrlError;

    /// `s3://bucket`, `s3://bucket/` and `s3://bucket/a/b/`. A prefix
    /// without a trailing `/` gets one: `s3://bucket/mirror` means the
    /// folder `mirror/`, which is what people who leave the slash off mean.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let rest = text.strip_prefix("s3://").ok_or(S3UrlError::Shape)?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        validate_bucket(bucket)?;
        let mut prefix = prefix.to_owned();
        if !prefix.is_empty() {
            validate_key(&prefix)?;
            if !prefix.ends_with('/') {
                prefix.push('/');
            }
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix,
        })
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// Why a URL gives no object key. Never contains the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("URL has no host name")]
    NoHost,
    #[error("URL path ends with '/': it names no file")]
    NoFileName,
    #[error("URL path is not UTF-8 once percent-decoded")]
    NotUtf8,
}

/// The object key of `url` under `prefix`, as Storage Transfer Service names
/// the objects of a URL list: prefix + host + path.
///
/// - The port is dropped (STS does the same): a list rarely mixes ports of
///   one host, and keys should not change when a mirror moves port.
/// - The path is percent-decoded (`my%20file.iso` → `my file.iso`), so the
///   object carries the file's name, and a path written with a raw space or
///   with `%20` gives one key, not two. `%2F` becomes `/`.
/// - The query string and fragment are ignored: they often hold a signature
///   that must never be stored, and change between runs.
pub fn object_key(prefix: &str, url: &Url) -> Result<String, KeyError> {
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or(KeyError::NoHost)?;
    let path = url.path();
    if path.ends_with('/') {
        return Err(KeyError::NoFileName);
    }
    let path = percent_decode(path).ok_or(KeyError::NotUtf8)?;
    // The path of an http(s) URL always starts with '/', which separates it
    // from the host.
    Ok(format!("{prefix}{host}{path}"))
}

/// `%XX` → byte; a `%` not followed by two hex digits stays as it is.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job;

    fn url(text: &str) -> Url {
        text.parse().unwrap()
    }

    fn job(url: &str, bucket: &str, key: &str) -> Job {
        let body = serde_json::json!({"url": url, "bucket": bucket, "key": key});
        job::parse(&body.to_string(), "").unwrap()
    }

    #[test]
    fn keys_are_prefix_host_and_path_without_port_or_query() {
        let cases = [
            (
                "https://example.com/a/b.iso",
                "mirror/",
                "mirror/example.com/a/b.iso",
            ),
            (
                "http://example.com:8080/b.iso?X-Amz-Signature=s#top",
                "",
                "example.com/b.iso",
            ),
            (
                "https://EXAMPLE.com/x/../y/z.bin",
                "p/",
                "p/example.com/y/z.bin",
            ),
            (
                "https://example.com/my%20file.iso",
                "",
                "example.com/my file.iso",
            ),
            (
                "https://example.com/my file.iso",
                "",
                "example.com/my file.iso",
            ),
            (
                "https://example.com/caf%C3%A9/%2Fx",
                "",
                "example.com/café//x",
            ),
            ("https://example.com/100%", "", "example.com/100%"),
            ("https://example.com//double", "", "example.com//double"),
            ("http://[::1]:9000/v6", "", "[::1]/v6"),
        ];
        for (input, prefix, expected) in cases {
            assert_eq!(
                object_key(prefix, &url(input)).unwrap(),
                expected,
                "{input}"
            );
        }
    }

    #[test]
    fn urls_that_name_no_file_give_no_key() {
        assert_eq!(
            object_key("", &url("https://example.com/")),
            Err(KeyError::NoFileName)
        );
        assert_eq!(
            object_key("", &url("https://example.com/dir/")),
            Err(KeyError::NoFileName)
        );
        assert_eq!(
            object_key("", &url("https://example.com/%FF")),
            Err(KeyError::NotUtf8)
        );
    }

    #[test]
    fn destinations_are_a_bucket_and_a_folder_prefix() {
        let parse = |text: &str| text.parse::<Destination>();
        for (text, bucket, prefix) in [
            ("s3://my-bucket", "my-bucket", ""),
            ("s3://my-bucket/", "my-bucket", ""),
            ("s3://my-bucket/mirror/", "my-bucket", "mirror/"),
            ("s3://my-bucket/mirror", "my-bucket", "mirror/"),
            ("s3://my-bucket/a/b/", "my-bucket", "a/b/"),
        ] {
            let dest = parse(text).unwrap();
            assert_eq!(
                (dest.bucket.as_str(), dest.prefix.as_str()),
                (bucket, prefix)
            );
        }
        assert_eq!(
            parse("s3://my-bucket/mirror").unwrap().to_string(),
            "s3://my-bucket/mirror/"
        );
        for bad in ["my-bucket/x/", "s3://My_Bucket/x/", "s3://my-bucket/a\nb/"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn derived_ids_are_valid_stable_and_depend_on_source_and_destination_only() {
        let id = derived_job_id(&job("https://example.com/a.iso", "my-bucket", "k"));
        assert!(job::valid_job_id(&id), "{id}");
        assert_eq!(id.len(), DERIVED_ID_PREFIX.len() + 32);
        // Stable across releases, so a re-run with a newer ferry finds the
        // jobs: sha256("ferry-bulk-v1\0https://example.com/a.iso\0my-bucket\0k\0").
        assert_eq!(id, "bulk-bed5185546da946a79d388eb71ae0a07");
        let same = job("HTTPS://Example.COM/a.iso", "my-bucket", "k");
        assert_eq!(derived_job_id(&same), id);
        // A presigned URL signed again is the same job.
        let signed = |sig: &str| {
            job(
                &format!("https://example.com/a.iso?sig={sig}"),
                "my-bucket",
                "k",
            )
        };
        assert_eq!(
            derived_job_id(&signed("one")),
            derived_job_id(&signed("two"))
        );
        for other in [
            job("https://example.com/b.iso", "my-bucket", "k"),
            job("https://example.com/a.iso", "other-bucket", "k"),
            job("https://example.com/a.iso", "my-bucket", "k2"),
            job("https://example.com:8443/a.iso", "my-bucket", "k"),
        ] {
            assert_ne!(derived_job_id(&other), id);
        }
    }
}
