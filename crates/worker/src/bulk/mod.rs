//! Bulk submit: many jobs from one file (`ferry submit --from FILE`), in
//! batched AWS calls, so that running the same file twice submits nothing
//! twice (docs/jobs.md, "Bulk submit").
//!
//! # Layout, in data-flow order
//!
//! - `input`: lines of bounded length → validated job messages or bad lines
//!   (JSON Lines, or a `TsvHttpData-1.0` URL list)
//! - `naming`: derived job ids; the object keys of a URL list
//! - `chunk`: one chunk of lines: which jobs exist, `unsent#` markers, queued
//!   records, messages — records strictly before messages
//! - `records`: DynamoDB BatchGetItem / BatchWriteItem, unprocessed items retried
//! - `messages`: SQS SendMessageBatch, failed entries retried
//! - `follow`: `--wait`, the final status of every job of the file
//!
//! The command line (`cli::submit_bulk`) reads the file and prints; nothing
//! here prints.

pub mod chunk;
pub mod follow;
pub mod input;
pub mod messages;
pub mod naming;
pub mod records;

use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

/// Tries of one batch call (each already includes the SDK's own adaptive
/// retries) before the run stops: about a minute of AWS trouble.
const CALL_TRIES: u32 = 6;

/// Rounds of re-sending what a batch call left unprocessed (DynamoDB
/// throttling) or what SQS failed, with a growing pause in between.
const ROUNDS: u32 = 8;

/// AWS calls made, by service: the cost of a bulk submit (docs/benchmarks.md).
/// Counts ferry's calls; the SDK's own retries of one call are not seen.
#[derive(Debug, Default)]
pub struct Calls {
    dynamodb: AtomicU64,
    sqs: AtomicU64,
}

impl Calls {
    pub fn dynamodb(&self) -> u64 {
        self.dynamodb.load(Ordering::Relaxed)
    }

    pub fn sqs(&self) -> u64 {
        self.sqs.load(Ordering::Relaxed)
    }

    fn count_dynamodb(&self) {
        self.dynamodb.fetch_add(1, Ordering::Relaxed);
    }

    fn count_sqs(&self) {
        self.sqs.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a bulk submit stopped. Lines before the chunk that failed are
/// submitted; running the same file again continues.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("DynamoDB {operation} failed: {message}")]
    Dynamo {
        operation: &'static str,
        message: String,
        retryable: bool,
    },
    #[error("SQS {operation} failed: {message}")]
    Sqs {
        operation: &'static str,
        message: String,
        retryable: bool,
    },
    #[error("DynamoDB {operation} still left items unprocessed after {ROUNDS} rounds (throttled)")]
    Unprocessed { operation: &'static str },
}

impl BulkError {
    /// Worth another try: throttling, AWS-side errors, timeouts, lost
    /// connections. A missing table or queue, or access denied, is not.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Dynamo { retryable, .. } | Self::Sqs { retryable, .. } => *retryable,
            Self::Unprocessed { .. } => false,
        }
    }

    /// The service behind the error, as a machine word for `CliError`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Dynamo { .. } | Self::Unprocessed { .. } => "store_error",
            Self::Sqs { .. } => "queue_error",
        }
    }
}

/// Whether an SDK error is AWS having trouble (worth waiting out) rather
/// than a request that can never succeed.
fn is_transient<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    match err {
        SdkError::ServiceError(context) => {
            let code = context.err().code().unwrap_or_default();
            [
                "Throttl",
                "LimitExceeded",
                "InternalServer",
                "InternalError",
                "InternalFailure",
                "ServiceUnavailable",
            ]
            .iter()
            .any(|word| code.contains(word))
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        _ => false,
    }
}
