//! Digests an origin sends of what it serves, which ferry checks like a
//! job's `expected` — end-to-end verification the user gets for free:
//!
//! - `Repr-Digest` (RFC 9530) and `Digest` (RFC 3230): of the selected
//!   representation, so valid in a `206` too: `sha-256` and `md5`.
//! - `Content-MD5` (RFC 1864): of the message body, so only from a `200`
//!   that carries the whole resource.
//! - `x-goog-hash` (Google Cloud Storage): `md5` of the stored object — not
//!   of what is served when GCS decompresses on the fly (its
//!   `x-goog-stored-content-encoding` differs from the answer's
//!   `Content-Encoding`), then ignored.
//! - `x-amz-checksum-crc64nvme` (an S3 origin): always of the whole object;
//!   ferry computes that CRC anyway.
//!
//! Bytes are stored as the origin sends them (ferry asks for the identity
//! encoding and never decodes), so a digest of the representation is a
//! digest of the stored object. Anything unreadable is ignored, never a
//! failure: only a digest that was read and disagrees fails a job.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::header::{self, HeaderMap};

/// What the origin's first answer says the resource hashes to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceDigests {
    /// Lowercase hex.
    pub sha256: Option<String>,
    /// Lowercase hex.
    pub md5: Option<String>,
    /// Base64, as ferry reports its own.
    pub crc64nvme: Option<String>,
}

impl SourceDigests {
    /// `whole_body`: the answer is a `200` with the whole resource (only then
    /// does `Content-MD5` describe it).
    pub fn from_headers(headers: &HeaderMap, whole_body: bool) -> Self {
        let mut found = Self::default();
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        // RFC 9530 first: the newer, and the one that says "representation".
        for name in ["repr-digest", "digest"] {
            for (algorithm, value) in text(name).into_iter().flat_map(members) {
                match algorithm.to_ascii_lowercase().as_str() {
                    "sha-256" => set(&mut found.sha256, hex_of(value, 32)),
                    "md5" => set(&mut found.md5, hex_of(value, 16)),
                    _ => {}
                }
            }
        }
        if whole_body {
            set(
                &mut found.md5,
                text("content-md5").and_then(|v| hex_of(v, 16)),
            );
        }
        if !transcoded(headers) {
            for (algorithm, value) in text("x-goog-hash").into_iter().flat_map(members) {
                if algorithm.eq_ignore_ascii_case("md5") {
                    set(&mut found.md5, hex_of(value, 16));
                }
            }
        }
        set(
            &mut found.crc64nvme,
            text("x-amz-checksum-crc64nvme")
                .filter(|v| BASE64.decode(v.trim()).is_ok_and(|b| b.len() == 8))
                .map(|v| v.trim().to_owned()),
        );
        found
    }

    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

fn set(slot: &mut Option<String>, value: Option<String>) {
    if slot.is_none() {
        *slot = value;
    }
}

/// `name=value` members of a comma-separated list; values may be wrapped in
/// colons (RFC 8941 byte sequences) and may themselves contain `=`.
fn members(list: &str) -> impl Iterator<Item = (&str, &str)> {
    list.split(',').filter_map(|member| {
        let (name, value) = member.trim().split_once('=')?;
        let value = value.trim();
        let value = value
            .strip_prefix(':')
            .and_then(|v| v.strip_suffix(':'))
            .unwrap_or(value);
        Some((name.trim(), value))
    })
}

/// A base64 digest of `len` bytes, as lowercase hex.
fn hex_of(value: &str, len: usize) -> Option<String> {
    BASE64
        .decode(value.trim())
        .ok()
        .filter(|bytes| bytes.len() == len)
        .map(hex::encode)
}

/// GCS serving a gzip-stored object decompressed: its hashes are of the
/// stored (compressed) bytes, not of these.
fn transcoded(headers: &HeaderMap) -> bool {
    let stored = headers
        .get("x-goog-stored-content-encoding")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("identity");
    let served = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("identity");
    !stored.eq_ignore_ascii_case(served)
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest as _;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    const BODY: &[u8] = b"hello";

    fn md5_b64() -> String {
        BASE64.encode(md5::Md5::digest(BODY))
    }

    fn sha256_b64() -> String {
        BASE64.encode(sha2::Sha256::digest(BODY))
    }

    #[test]
    fn representation_digests_are_read_in_both_syntaxes() {
        let repr = format!("sha-256=:{}:, md5=:{}:", sha256_b64(), md5_b64());
        let found = SourceDigests::from_headers(&headers(&[("repr-digest", &repr)]), false);
        assert_eq!(
            found.sha256.as_deref(),
            Some(hex::encode(sha2::Sha256::digest(BODY)).as_str())
        );
        assert_eq!(
            found.md5.as_deref(),
            Some(hex::encode(md5::Md5::digest(BODY)).as_str())
        );
        let legacy = format!("SHA-256={}", sha256_b64());
        let found = SourceDigests::from_headers(&headers(&[("digest", &legacy)]), false);
        assert!(found.sha256.is_some() && found.md5.is_none());
    }

    #[test]
    fn content_md5_counts_only_for_a_whole_body() {
        let md5 = md5_b64();
        let h = headers(&[("content-md5", &md5)]);
        assert!(SourceDigests::from_headers(&h, true).md5.is_some());
        assert_eq!(
            SourceDigests::from_headers(&h, false),
            SourceDigests::default()
        );
    }

    #[test]
    fn a_gcs_hash_of_another_encoding_is_ignored() {
        let goog = format!("crc32c=n03x6A==, md5={}", md5_b64());
        let plain = headers(&[("x-goog-hash", &goog)]);
        assert!(SourceDigests::from_headers(&plain, false).md5.is_some());
        let stored_gzip = headers(&[
            ("x-goog-hash", &goog),
            ("x-goog-stored-content-encoding", "gzip"),
        ]);
        assert!(
            SourceDigests::from_headers(&stored_gzip, false)
                .md5
                .is_none()
        );
        let served_gzip = headers(&[
            ("x-goog-hash", &goog),
            ("x-goog-stored-content-encoding", "gzip"),
            ("content-encoding", "gzip"),
        ]);
        assert!(
            SourceDigests::from_headers(&served_gzip, false)
                .md5
                .is_some()
        );
    }

    #[test]
    fn unreadable_digests_are_ignored() {
        for (name, value) in [
            ("repr-digest", "sha-256=:not base64:"),
            ("repr-digest", "sha-256=:aGVsbG8=:"),
            ("digest", "sha-512=abc"),
            ("x-amz-checksum-crc64nvme", "short"),
            ("x-goog-hash", "md5"),
        ] {
            assert!(
                SourceDigests::from_headers(&headers(&[(name, value)]), true).is_empty(),
                "{name}: {value}"
            );
        }
        let crc = SourceDigests::from_headers(
            &headers(&[("x-amz-checksum-crc64nvme", "x5YMjCvaVSY=")]),
            false,
        );
        assert_eq!(crc.crc64nvme.as_deref(), Some("x5YMjCvaVSY="));
    }
}
