//! Source URLs as they may be shown: no userinfo, no query, no fragment.
//!
//! Presigned signatures and tokens live in the query string and credentials in
//! the userinfo, so the only way a URL reaches a log, a job record or an error
//! message is through [`RedactedUrl`], which cannot print the original.

use std::fmt;

use ferry_engine::source::Url;

/// A URL with its secret-bearing parts removed at construction.
#[derive(Clone, PartialEq, Eq)]
pub struct RedactedUrl(String);

impl RedactedUrl {
    pub fn new(url: &Url) -> Self {
        let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
        if let Some(port) = url.port() {
            shown.push_str(&format!(":{port}"));
        }
        shown.push_str(url.path());
        if url.query().is_some() {
            shown.push_str("?<redacted>");
        }
        Self(shown)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_credentials_and_query() {
        let url: Url = "https://user:secret@example.com:8443/a/b.iso?X-Amz-Signature=abc#frag"
            .parse()
            .unwrap();
        let shown = RedactedUrl::new(&url).to_string();
        assert_eq!(shown, "https://example.com:8443/a/b.iso?<redacted>");
        assert!(!shown.contains("secret") && !shown.contains("abc"));
    }
}
