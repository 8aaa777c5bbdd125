//! Typed transfer errors and the one question that decides retries: [`TransferError::class`].
//!
//! Every error also names a stable machine word ([`TransferError::kind`]) that the
//! worker stores as a job's `error_kind`. Messages never contain a source URL: reqwest
//! errors are stripped of theirs before they are wrapped.

use std::fmt;

/// What a caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Worth trying again later (network trouble, 5xx, throttling).
    Transient,
    /// Trying again cannot help (404, access denied, checksum mismatch).
    Permanent,
    /// The transfer was asked to stop.
    Cancelled,
}

/// Which side of the transfer an S3 call served; part of the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Operation {
    CreateMultipartUpload,
    UploadPart,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    PutObject,
    HeadObject,
    ListParts,
}

impl fmt::Display for S3Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    #[error("unsupported source url: {reason}")]
    InvalidSource { reason: String },

    #[error("invalid transfer configuration: {reason}")]
    InvalidConfig { reason: String },

    #[error("source destination blocked: {reason}")]
    BlockedDestination { reason: String },

    #[error("source request failed: {source}")]
    SourceRequest {
        #[source]
        source: reqwest::Error,
    },

    #[error("source redirect refused: {reason}")]
    SourceRedirect { reason: String },

    #[error("source answered HTTP {status}")]
    SourceStatus { status: u16 },

    #[error("source stalled: no data for {idle_secs} s")]
    SourceStalled { idle_secs: u64 },

    #[error("source too slow: below {min_bytes_per_sec} bytes/s over {window_secs} s")]
    SourceTooSlow {
        min_bytes_per_sec: u64,
        window_secs: u64,
    },

    #[error("source sent {received} bytes where {expected} were announced")]
    SourceLength { expected: u64, received: u64 },

    #[error("source answered a range request badly: {detail}")]
    SourceRange { detail: String },

    #[error("source changed during the transfer (validator no longer matches)")]
    SourceChanged,

    #[error("an object is already stored at the destination, and the job's if_exists is fail")]
    DestinationExists,

    #[error("object of {size} bytes cannot be stored: {reason}")]
    TooLarge { size: u64, reason: String },

    #[error("S3 {operation} failed: {message}")]
    S3 {
        operation: S3Operation,
        /// The S3 error code (`NoSuchUpload`, `SlowDown`, …) when S3 sent one.
        code: Option<String>,
        message: String,
        transient: bool,
        /// S3 asked us to slow down (SlowDown, 503, throttling codes).
        throttled: bool,
    },

    #[error("{algorithm} mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch {
        algorithm: &'static str,
        expected: String,
        actual: String,
    },

    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch { expected: u64, actual: u64 },

    /// The journal could not persist a checkpoint (a later attempt may).
    #[error("could not record the transfer's checkpoint: {reason}")]
    Journal { reason: String },

    #[error("transfer cancelled")]
    Cancelled,
}

impl TransferError {
    pub(crate) fn source_request(err: reqwest::Error) -> Self {
        if let Some(blocked) = crate::source::guard::find_blocked(&err) {
            return Self::BlockedDestination {
                reason: blocked.to_string(),
            };
        }
        // The URL may carry a presigned signature or credentials: never keep it.
        Self::SourceRequest {
            source: err.without_url(),
        }
    }

    /// S3 throttled the request: wait and retry, never give up for it.
    pub fn is_throttle(&self) -> bool {
        matches!(
            self,
            Self::S3 {
                throttled: true,
                ..
            }
        )
    }

    /// A transient error on the AWS side (S3 5xx, timeout, reset, or the
    /// job journal's DynamoDB): not the job's fault, worth more patience.
    pub fn is_aws_side(&self) -> bool {
        matches!(
            self,
            Self::S3 {
                transient: true,
                ..
            } | Self::Journal { .. }
        )
    }

    /// Whether retrying the same request could succeed.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Cancelled => ErrorClass::Cancelled,
            Self::SourceRequest { source } => {
                if source.is_builder() || source.is_redirect() {
                    ErrorClass::Permanent
                } else {
                    ErrorClass::Transient
                }
            }
            Self::SourceStatus { status } => {
                if is_transient_status(*status) {
                    ErrorClass::Transient
                } else {
                    ErrorClass::Permanent
                }
            }
            Self::SourceStalled { .. }
            | Self::SourceTooSlow { .. }
            | Self::SourceLength { .. }
            | Self::SourceRange { .. }
            | Self::Journal { .. } => ErrorClass::Transient,
            // The whole transfer must start over against the new content.
            Self::SourceChanged => ErrorClass::Transient,
            Self::S3 { transient, .. } => {
                if *transient {
                    ErrorClass::Transient
                } else {
                    ErrorClass::Permanent
                }
            }
            Self::InvalidSource { .. }
            | Self::SourceRedirect { .. }
            | Self::BlockedDestination { .. }
            | Self::InvalidConfig { .. }
            | Self::TooLarge { .. }
            | Self::ChecksumMismatch { .. }
            | Self::SizeMismatch { .. }
            | Self::DestinationExists => ErrorClass::Permanent,
        }
    }

    /// A stable machine word for job records and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidSource { .. } => "invalid_source",
            Self::BlockedDestination { .. } => "blocked_destination",
            Self::InvalidConfig { .. } => "invalid_config",
            Self::SourceRequest { source } if source.is_timeout() => "source_timeout",
            Self::SourceRequest { source } if source.is_redirect() => "source_redirects",
            Self::SourceRequest { .. } => "source_unreachable",
            Self::SourceRedirect { .. } => "source_redirects",
            Self::SourceStatus { status: 404 | 410 } => "source_not_found",
            Self::SourceStatus { status: 401 | 403 } => "source_forbidden",
            Self::SourceStatus { .. } => "source_http_error",
            Self::SourceStalled { .. } => "source_stalled",
            Self::SourceTooSlow { .. } => "source_too_slow",
            Self::SourceLength { .. } => "source_length_mismatch",
            Self::SourceRange { .. } => "source_bad_range",
            Self::SourceChanged => "source_changed",
            Self::TooLarge { .. } => "too_large",
            Self::DestinationExists => "destination_exists",
            Self::S3 { code, .. } if code.as_deref() == Some("AccessDenied") => "s3_access_denied",
            Self::S3 { code, .. } if code.as_deref() == Some("NoSuchBucket") => "s3_no_such_bucket",
            Self::S3 { code, .. } if code.as_deref() == Some("NoSuchUpload") => "s3_upload_gone",
            // The store computed another checksum than the one sent: the
            // bytes it received are not the bytes ferry read.
            Self::S3 { code, .. }
                if matches!(code.as_deref(), Some("BadDigest" | "InvalidDigest")) =>
            {
                "checksum_mismatch"
            }
            Self::S3 { .. } => "s3_error",
            Self::ChecksumMismatch { .. } => "checksum_mismatch",
            Self::SizeMismatch { .. } => "size_mismatch",
            Self::Journal { .. } => "checkpoint_failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// AWS error codes that mean "slow down" rather than "failed" (the list the
/// AWS SDKs classify as throttling).
pub fn is_throttle_code(code: &str) -> bool {
    matches!(
        code,
        "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "TooManyRequests"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "BandwidthLimitExceeded"
            | "LimitExceededException"
            | "PriorRequestNotComplete"
    )
}

/// Status codes that a later attempt may not see again.
pub(crate) fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 425 | 429 | 500..=599)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_is_permanent_and_server_errors_are_transient() {
        assert_eq!(
            TransferError::SourceStatus { status: 404 }.class(),
            ErrorClass::Permanent
        );
        assert_eq!(
            TransferError::SourceStatus { status: 403 }.class(),
            ErrorClass::Permanent
        );
        assert_eq!(
            TransferError::SourceStatus { status: 503 }.class(),
            ErrorClass::Transient
        );
        assert_eq!(
            TransferError::SourceStatus { status: 429 }.class(),
            ErrorClass::Transient
        );
        assert_eq!(TransferError::Cancelled.class(), ErrorClass::Cancelled);
    }

    #[test]
    fn kinds_are_stable_words() {
        assert_eq!(
            TransferError::SourceStatus { status: 404 }.kind(),
            "source_not_found"
        );
        let gone = TransferError::S3 {
            operation: S3Operation::UploadPart,
            code: Some("NoSuchUpload".into()),
            message: "gone".into(),
            transient: false,
            throttled: false,
        };
        assert_eq!(gone.kind(), "s3_upload_gone");
        assert_eq!(gone.to_string(), "S3 UploadPart failed: gone");
    }
}
