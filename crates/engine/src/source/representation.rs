//! What identifies one version of a resource across answers — its strong
//! validator — and how the engine reports that the bytes it stored are one
//! version, whole ([`Integrity`]). The rules are in the `source` module docs.

use std::time::Duration;

use reqwest::Response;
use reqwest::header::{self, HeaderMap, HeaderValue};

/// What pins the content across requests: a strong ETag, else a strong
/// Last-Modified (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validator {
    ETag(String),
    LastModified(String),
}

impl Validator {
    /// The strong validator an answer carries, if any.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        match text(header::ETAG) {
            // A weak ETag may not be used with If-Range (RFC 9110 §13.1.5).
            Some(etag) if !etag.starts_with("W/") => Some(Self::ETag(etag.to_owned())),
            _ => {
                let modified = text(header::LAST_MODIFIED)?;
                // A date is strong only if the content had been unchanged for
                // a second when it was served: a change within the same second
                // would keep the date (§8.8.2.2). No `Date`, no proof.
                let served = httpdate::parse_http_date(text(header::DATE)?).ok()?;
                let changed = httpdate::parse_http_date(modified).ok()?;
                let settled = served.duration_since(changed).ok()? >= Duration::from_secs(1);
                settled.then(|| Self::LastModified(modified.to_owned()))
            }
        }
    }

    /// Whether an answer shows this validator again. An answer that no
    /// longer carries it cannot be shown to be the same version.
    pub(super) fn shown_by(&self, headers: &HeaderMap) -> bool {
        let (name, value) = match self {
            Self::ETag(value) => (header::ETAG, value),
            Self::LastModified(value) => (header::LAST_MODIFIED, value),
        };
        headers
            .get(name)
            .is_some_and(|shown| shown.as_bytes() == value.as_bytes())
    }

    /// The header it came from, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ETag(_) => "ETag",
            Self::LastModified(_) => "Last-Modified",
        }
    }

    pub fn as_header_value(&self) -> &str {
        match self {
            Self::ETag(value) | Self::LastModified(value) => value,
        }
    }
}

/// How the engine knows the bytes it stored are one version of the
/// resource, whole: reported with every outcome, kept in the job record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    /// Several requests, each pinned to a strong validator and checked
    /// against it (and against the total length).
    Pinned,
    /// One answer, its end marked by `Content-Length` or chunked framing.
    OneAnswer,
    /// One answer that ended only with its connection: a connection cut
    /// early looks exactly like the end. Only an expected size or digest
    /// can tell; the record says so.
    Unframed,
}

impl Integrity {
    /// A stable word for records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pinned => "pinned",
            Self::OneAnswer => "one_answer",
            Self::Unframed => "unframed",
        }
    }
}

/// Whether a 200's body ends only when its connection closes (RFC 9112
/// §6.3, rule 8): neither a length nor chunked framing marks its end.
pub(super) fn is_unframed(response: &Response) -> bool {
    response.content_length().is_none()
        && !response
            .headers()
            .get(header::TRANSFER_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderName;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    const OLD: &str = "Sun, 06 Dec 2026 08:00:00 GMT";
    const SAME: &str = "Sun, 06 Dec 2026 08:00:00 GMT";
    const LATER: &str = "Sun, 06 Dec 2026 08:00:01 GMT";

    #[test]
    fn strong_validators_are_recognised_and_weak_ones_are_not() {
        type Headers<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Headers, Option<Validator>)] = &[
            (&[("etag", "\"a\"")], Some(Validator::ETag("\"a\"".into()))),
            (&[("etag", "W/\"a\"")], None),
            (&[("last-modified", OLD)], None),
            (&[("last-modified", OLD), ("date", SAME)], None),
            (
                &[("last-modified", OLD), ("date", LATER)],
                Some(Validator::LastModified(OLD.into())),
            ),
            (
                &[("etag", "W/\"a\""), ("last-modified", OLD), ("date", LATER)],
                Some(Validator::LastModified(OLD.into())),
            ),
            (&[("last-modified", "yesterday"), ("date", LATER)], None),
            (&[], None),
        ];
        for (pairs, want) in cases {
            assert_eq!(&Validator::from_headers(&headers(pairs)), want, "{pairs:?}");
        }
    }

    #[test]
    fn an_answer_must_show_the_validator_again() {
        let etag = Validator::ETag("\"a\"".into());
        assert!(etag.shown_by(&headers(&[("etag", "\"a\"")])));
        assert!(!etag.shown_by(&headers(&[("etag", "\"b\"")])));
        assert!(!etag.shown_by(&headers(&[("etag", "W/\"a\"")])));
        assert!(!etag.shown_by(&headers(&[])));
        let date = Validator::LastModified(OLD.into());
        assert!(date.shown_by(&headers(&[("last-modified", OLD)])));
        assert!(!date.shown_by(&headers(&[("last-modified", LATER)])));
        assert!(!date.shown_by(&headers(&[("etag", "\"a\"")])));
    }
}
