//! Parsing and checking `Content-Range` (RFC 9110 §14.4).

use reqwest::Response;
use reqwest::header::CONTENT_RANGE;

use crate::error::TransferError;

/// `bytes first-last/total`, or `bytes */total` for an unsatisfiable range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// `None` for `bytes */total`.
    pub span: Option<(u64, u64)>,
    /// `None` for `bytes first-last/*`.
    pub total: Option<u64>,
}

impl ContentRange {
    pub fn parse(value: &str) -> Option<Self> {
        let rest = value.trim().strip_prefix("bytes ")?;
        let (span, total) = rest.split_once('/')?;
        let total = match total.trim() {
            "*" => None,
            t => Some(t.parse().ok()?),
        };
        let span = match span.trim() {
            "*" => None,
            s => {
                let (first, last) = s.split_once('-')?;
                let (first, last) = (first.parse().ok()?, last.parse().ok()?);
                if first > last || total.is_some_and(|t| last >= t) {
                    return None;
                }
                Some((first, last))
            }
        };
        Some(Self { span, total })
    }

    pub(crate) fn from_response(response: &Response) -> Result<Self, TransferError> {
        let value = response
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| TransferError::SourceRange {
                detail: "missing Content-Range".into(),
            })?;
        Self::parse(value).ok_or_else(|| TransferError::SourceRange {
            detail: format!("malformed Content-Range {value:?}"),
        })
    }

    /// The range must be exactly `first..=last` of `total`.
    pub(crate) fn expect(
        &self,
        first: u64,
        last: u64,
        total: Option<u64>,
    ) -> Result<(), TransferError> {
        self.expect_start(first, Some(last), total)
    }

    pub(crate) fn expect_start(
        &self,
        first: u64,
        last: Option<u64>,
        total: Option<u64>,
    ) -> Result<(), TransferError> {
        let span_ok = self
            .span
            .is_some_and(|(f, l)| f == first && last.is_none_or(|last| l == last));
        let total_ok = total.is_none_or(|t| self.total == Some(t));
        if span_ok && total_ok {
            Ok(())
        } else {
            Err(TransferError::SourceRange {
                detail: format!(
                    "asked for {first}-{} of {}, got {self:?}",
                    last.map_or("end".to_owned(), |l| l.to_string()),
                    total.map_or("*".to_owned(), |t| t.to_string()),
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_shapes() {
        assert_eq!(
            ContentRange::parse("bytes 0-99/1000"),
            Some(ContentRange {
                span: Some((0, 99)),
                total: Some(1000)
            })
        );
        assert_eq!(
            ContentRange::parse("bytes 5-9/*"),
            Some(ContentRange {
                span: Some((5, 9)),
                total: None
            })
        );
        assert_eq!(
            ContentRange::parse("bytes */0"),
            Some(ContentRange {
                span: None,
                total: Some(0)
            })
        );
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "bytes",
            "items 0-1/2",
            "bytes 9-5/10",
            "bytes 0-10/10",
            "bytes a-b/c",
        ] {
            assert_eq!(ContentRange::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn expect_checks_span_and_total() {
        let range = ContentRange::parse("bytes 10-19/100").unwrap();
        range.expect(10, 19, Some(100)).unwrap();
        assert!(range.expect(10, 20, Some(100)).is_err());
        assert!(range.expect(10, 19, Some(101)).is_err());
        range.expect_start(10, None, None).unwrap();
    }
}
