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

use ferry_engine::ErrorClass;

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
        /// Why no retry can succeed (`aws_error::permanent_reason`), or
        /// `None` when waiting may help.
        permanent: Option<&'static str>,
    },
    #[error("SQS {operation} failed: {message}")]
    Sqs {
        operation: &'static str,
        message: String,
        permanent: Option<&'static str>,
    },
    #[error("DynamoDB {operation} still left items unprocessed after {ROUNDS} rounds (throttled)")]
    Unprocessed { operation: &'static str },
}

impl BulkError {
    /// Whether the same call could succeed later: the worker's answer
    /// (`aws_error::permanent_reason`) for one call; throttling that outlasted
    /// every round is not waited out again.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Dynamo {
                permanent: None, ..
            }
            | Self::Sqs {
                permanent: None, ..
            } => ErrorClass::Transient,
            Self::Dynamo { .. } | Self::Sqs { .. } | Self::Unprocessed { .. } => {
                ErrorClass::Permanent
            }
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

/// Retried by `retry_with` unless the error is permanent.
fn is_permanent(err: &BulkError) -> bool {
    err.class() == ErrorClass::Permanent
}
