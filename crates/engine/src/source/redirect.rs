//! Redirects as the source follows them, hop by hop: where an answer points,
//! and whether a job's headers may go there.

use reqwest::{Response, Url, header};

use crate::error::TransferError;

/// Where a redirect answer points, resolved against the URL it answered;
/// `None` for an answer that is not a redirect (or names no `Location`,
/// which the caller then reports as the status it is).
pub(super) fn redirect_target(
    response: &Response,
    from: &Url,
) -> Result<Option<Url>, TransferError> {
    let redirect = matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308);
    let Some(location) = response
        .headers()
        .get(header::LOCATION)
        .filter(|_| redirect)
    else {
        return Ok(None);
    };
    let next = location
        .to_str()
        .ok()
        .and_then(|location| from.join(location).ok())
        .ok_or_else(|| TransferError::SourceRedirect {
            reason: "a redirect's Location is not a URL".into(),
        })?;
    match next.scheme() {
        "http" | "https" => Ok(Some(next)),
        other => Err(TransferError::SourceRedirect {
            reason: format!("a redirect to scheme {other:?}"),
        }),
    }
}

/// Whether a job's headers may go from `from` to the hop `to`: within one
/// origin always; to another only when the job allows it; from `https` to
/// `http` never, where anyone on the path could read them.
pub(super) fn headers_may_follow(from: &Url, to: &Url, cross_origin: bool) -> bool {
    if from.scheme() == "https" && to.scheme() != "https" {
        return false;
    }
    from.origin() == to.origin() || cross_origin
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_headers_follow_a_redirect_within_their_origin_only() {
        let url = |u: &str| u.parse::<Url>().unwrap();
        let cases = [
            ("https://a.test/x", "https://a.test/y", false, true),
            ("https://a.test/x", "https://a.test:443/y", false, true),
            ("https://a.test/x", "https://a.test:8443/y", false, false),
            ("https://a.test/x", "https://b.test/y", false, false),
            ("https://a.test/x", "https://b.test/y", true, true),
            ("https://a.test/x", "http://a.test/y", false, false),
            ("https://a.test/x", "http://a.test/y", true, false),
            ("http://a.test/x", "https://a.test/y", false, false),
            ("http://a.test/x", "https://b.test/y", true, true),
        ];
        for (from, to, allowed, follows) in cases {
            assert_eq!(
                headers_may_follow(&url(from), &url(to), allowed),
                follows,
                "{from} -> {to} (cross-origin allowed: {allowed})"
            );
        }
    }
}
