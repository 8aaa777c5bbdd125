//! DynamoDB job records: one item per job, changed only by conditional writes.
//!
//! A worker owns a job through a *lease*: `lease_owner` + `lease_expires` +
//! `fence`, a counter bumped by every claim. Every later write by that worker
//! is conditional on owner and fence, so a worker whose lease was taken over
//! can neither renew, nor finish, nor overwrite the job (see docs/jobs.md).
//!
//! This file holds the [`JobStore`] itself, its errors and what every write
//! shares (the fenced update, `#name` placeholders, reading a failed
//! condition's old item, counting answers for readiness). Its methods live
//! with the items they write:
//!
//! | module | what it owns |
//! |---|---|
//! | `record/` | the job's own item and its status machine: each transition's update expression, condition and lost-reply recognition side by side, the transition table in its docs (`worker.rs`: claim, renew, extend_lease, succeed, record_error, record_cancelled, release, reject; `user.rs`: submit's queued record, cancel, requeue) |
//! | `checkpoint.rs` | what a resume needs: the checkpoint and digest state on the job's item (with its `upload#` marker), restarts and resumes, `JOB#part#N` part CRC items |
//! | `markers.rs` | the keys of the `upload#` and `dest#` items, which name the job an upload belongs to (`ferry gc`), and the `dest#` write before Create |
//! | `index.rs` | the sharded status index: its name and keys, a job's shard, the attributes a status change sets |
//! | `codec.rs` | attribute values: building them, reading `text`/`number`, a record as JSON; the clocks records are stamped with |
//! | `view.rs` | [`JobView`]: a job record read through typed accessors, each attribute's name spelled once for every reader |
//!
//! Not here: listing by status (`listing.rs`), bulk submit's batches and
//! `unsent#` markers (`bulk/`), retrying DynamoDB trouble above the SDK
//! (`patience.rs`).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use ferry_engine::ErrorClass;

mod checkpoint;
mod codec;
mod index;
mod markers;
mod record;
mod view;

pub use checkpoint::DIGEST_STATE_UPDATE;
pub use codec::{now_secs, number, number_f64, text, to_json};
pub use index::{
    INDEX_SHARDS, STATUS_INDEX, STATUS_INDEX_PARTITION_KEY, STATUS_INDEX_SORT_KEY, index_shard,
    status_shard,
};
pub use markers::{destination_key, upload_key};
pub use record::{Cancel, Claim, Lease, RENEW_UPDATE, Requeue, Status, queued_record};
pub use view::JobView;

use codec::{n, s};

/// How long finished records are kept before DynamoDB's TTL may delete them.
const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the job's lease was taken over by another worker")]
    LeaseLost,
    #[error("cancelled by {by}")]
    CancelRequested { by: String },
    #[error("DynamoDB {operation} failed: {message}")]
    Dynamo {
        operation: &'static str,
        message: String,
        /// Why no retry can succeed (`aws_error::permanent_reason`), or
        /// `None` when waiting may help.
        permanent: Option<&'static str>,
    },
}

impl StoreError {
    /// Whether the same write could succeed later. A lost lease or a
    /// cancel request is an answer, not trouble: no retry changes it.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::LeaseLost | Self::CancelRequested { .. } => ErrorClass::Permanent,
            Self::Dynamo {
                permanent: Some(_), ..
            } => ErrorClass::Permanent,
            Self::Dynamo {
                permanent: None, ..
            } => ErrorClass::Transient,
        }
    }

    /// DynamoDB's refusal as a metric label, when it refused for good.
    pub fn permanent_reason(&self) -> Option<&'static str> {
        match self {
            Self::Dynamo { permanent, .. } => *permanent,
            Self::LeaseLost | Self::CancelRequested { .. } => None,
        }
    }
}

/// A job record as stored, attribute by attribute.
pub type Record = HashMap<String, AttributeValue>;

#[derive(Clone)]
pub struct JobStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// Added to this host's clock wherever a lease is stamped or compared
    /// (tests only: a worker whose clock is off, see `lease_clock`).
    clock_skew_secs: i64,
}

impl JobStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            clock_skew_secs: 0,
        }
    }

    /// This store's leases read a clock `secs` ahead (behind, if negative)
    /// of the host's: how tests show the skew that leases tolerate
    /// (docs/reliability.md, "Clocks").
    pub fn with_clock_skew(mut self, secs: i64) -> Self {
        self.clock_skew_secs = secs;
        self
    }

    /// Epoch seconds as leases see them. Leases are wall-clock times written
    /// by one host and compared by another: the only cross-host clock ferry
    /// relies on.
    fn lease_clock(&self) -> u64 {
        now_secs().saturating_add_signed(self.clock_skew_secs)
    }

    pub async fn get(&self, job_id: &str) -> Result<Option<Record>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("job_id", s(job_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| dynamo("GetItem", err))?;
        Ok(output.item)
    }

    fn leased_update(&self, lease: &Lease) -> UpdateBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("job_id", s(&lease.job_id))
            .condition_expression("#lease_owner = :owner AND #fence = :fence")
            .expression_attribute_values(":owner", s(&lease.owner))
            .expression_attribute_values(":fence", n(lease.fence))
    }

    async fn send_leased(&self, update: UpdateBuilder) -> Result<(), StoreError> {
        let result = named(update).send().await;
        self.leased_outcome(result)
    }

    fn leased_outcome<T>(
        &self,
        result: Result<T, SdkError<UpdateItemError, HttpResponse>>,
    ) -> Result<(), StoreError> {
        crate::metrics::health().dynamodb(answered(&result));
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_condition_failure(&err) => {
                metrics::counter!("ferry_dynamodb_condition_conflicts_total", "operation" => "leased_write")
                    .increment(1);
                Err(StoreError::LeaseLost)
            }
            Err(err) => Err(dynamo("UpdateItem", err)),
        }
    }
}

/// Registers every `#name` placeholder the expressions use as the attribute
/// `name`: DynamoDB reserves many plain words (`bucket`, `key`, `size`,
/// `status`, …), so every attribute is written as a placeholder.
fn named(mut update: UpdateBuilder) -> UpdateBuilder {
    let used = [
        update.get_update_expression().clone().unwrap_or_default(),
        update
            .get_condition_expression()
            .clone()
            .unwrap_or_default(),
    ]
    .join(" ");
    let mut seen = std::collections::BTreeSet::new();
    for (at, _) in used.match_indices('#') {
        let name: String = used[at + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && seen.insert(name.clone()) {
            update = update.expression_attribute_names(format!("#{name}"), name);
        }
    }
    update
}

type UpdateBuilder = aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
type HttpResponse = aws_sdk_dynamodb::config::http::HttpResponse;

/// The item a failed UpdateItem condition returned (ReturnValuesOnConditionCheckFailure).
fn condition_failure_item(err: &SdkError<UpdateItemError, HttpResponse>) -> Option<&Record> {
    match err {
        SdkError::ServiceError(ctx) => match ctx.err() {
            UpdateItemError::ConditionalCheckFailedException(failed) => failed.item(),
            _ => None,
        },
        _ => None,
    }
}

/// Whether DynamoDB was reached and answered: a failed condition or a
/// refusal is an answer (refusals are counted apart, by the claim), while
/// trouble (throttling, 5xx, no answer) makes the worker not ready.
fn answered<T, E: ProvideErrorMetadata, R>(result: &Result<T, SdkError<E, R>>) -> bool {
    match result {
        Ok(_) => true,
        Err(err) => is_condition_failure(err) || crate::aws_error::permanent_reason(err).is_some(),
    }
}

fn is_condition_failure<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.code() == Some("ConditionalCheckFailedException")
}

fn dynamo<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    operation: &'static str,
    err: SdkError<E, HttpResponse>,
) -> StoreError {
    StoreError::Dynamo {
        operation,
        permanent: crate::aws_error::permanent_reason(&err),
        message: describe(&err),
    }
}

/// One readable line: `Code: message (request id …)`, or what kept the
/// request from being answered.
pub(crate) fn describe<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    crate::aws_error::readable(err)
}
