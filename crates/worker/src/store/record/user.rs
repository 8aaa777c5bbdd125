//! The transitions ferry's commands write for a user: `ferry submit`'s
//! queued record (also bulk submit's), `ferry cancel` (at once, or by asking
//! the job's worker) and `ferry retry` (requeue). None holds a lease; each
//! recognises its own write after a lost reply by what it finds instead
//! (the existing record, a `cancel_token`, a `retry_token`).

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::Status;
use crate::job::Job;
use crate::store::checkpoint::CHECKPOINT_ATTRIBUTES;
use crate::store::codec::{n, now_text, s, text};
use crate::store::index::{
    STATUS_INDEX_PARTITION_KEY, STATUS_INDEX_SORT_KEY, entering, status_shard, status_time,
};
use crate::store::{
    JobStore, RETENTION, Record, StoreError, condition_failure_item, dynamo, is_condition_failure,
    named,
};

/// The record of a job submitted but not yet claimed.
pub fn queued_record(job: &Job) -> Record {
    let now = now_text();
    let mut record = HashMap::from([
        ("job_id".into(), s(&job.id)),
        ("status".into(), s(Status::Queued.as_str())),
        (
            STATUS_INDEX_PARTITION_KEY.into(),
            s(&status_shard(&job.id, Status::Queued)),
        ),
        (STATUS_INDEX_SORT_KEY.into(), s(&status_time())),
        ("url".into(), s(job.shown_url.as_str())),
        ("bucket".into(), s(&job.spec.destination.bucket)),
        ("key".into(), s(&job.spec.destination.key)),
        ("attempts".into(), n(0)),
        ("created_at".into(), s(&now)),
        ("updated_at".into(), s(&now)),
    ]);
    if let Some(message) = job.message_for_record() {
        record.insert("message".into(), s(&message));
    }
    record
}

/// What `ferry cancel` did to one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancel {
    /// It was waiting (queued or retrying) or its owner had died: it is
    /// `cancelled` now; a message still on the queue is deleted when a
    /// worker receives it.
    Cancelled,
    /// It is running: its worker stops it within one heartbeat.
    Requested,
    /// It had ended already; nothing changed.
    AlreadyFinal(Status),
    NotFound,
}

/// What `ferry retry` did to one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requeue {
    /// Queued again: `message` is to be sent.
    Queued {
        message: String,
    },
    /// Still queued (an earlier retry's or submit's message may be missing):
    /// `message`, if kept, is to be sent again.
    StillQueued {
        message: Option<String>,
    },
    /// Not in a status that may be retried (`succeeded` needs `force`).
    NotRetryable(Status),
    /// The job's URL or headers carry a secret, which ferry never stores.
    MessageNotKept,
    NotFound,
}

impl JobStore {
    /// Writes a `queued` record for a job about to be submitted. Returns the
    /// record that already exists under that id, if one does — which may be
    /// our own write, applied but with its reply lost.
    pub async fn create_queued(&self, job: &Job) -> Result<Option<Record>, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(queued_record(job)))
            .condition_expression("attribute_not_exists(job_id)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(None),
            Err(SdkError::ServiceError(ctx))
                if matches!(ctx.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                match ctx.err() {
                    PutItemError::ConditionalCheckFailedException(failed)
                        if failed.item().is_some() =>
                    {
                        Ok(failed.item().cloned())
                    }
                    // An emulator that returns no item: read it. Gone again
                    // (TTL) counts as not there: the job's message is sent
                    // and its claim creates the record.
                    _ => self.get(&job.id).await,
                }
            }
            Err(err) => Err(dynamo("PutItem", err)),
        }
    }

    /// Cancels a job for a user: at once when no live worker runs it, else by
    /// asking its worker (which sees the request at its next renewal).
    /// Safe to retry: `token` recognises a write applied with its reply lost.
    pub async fn cancel(&self, job_id: &str, by: &str, token: &str) -> Result<Cancel, StoreError> {
        let now = self.lease_clock();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("job_id", s(job_id))
            .condition_expression(
                "attribute_exists(#job_id) AND (#status IN (:queued, :retrying) \
                 OR (#status = :running AND (attribute_not_exists(#lease_expires) OR #lease_expires < :now)))",
            )
            .update_expression(format!(
                "SET #status = :cancelled, #cancelled_by = :by, #cancelled_at = :now_text, \
                 #cancel_token = :token, #error_kind = :kind, #error = :error, \
                 #updated_at = :now_text, #finished_at = :now_text, #expires_at = :ttl \
                 REMOVE #lease_owner, #lease_expires, {CHECKPOINT_ATTRIBUTES}"
            ))
            .expression_attribute_values(":queued", s(Status::Queued.as_str()))
            .expression_attribute_values(":retrying", s(Status::Retrying.as_str()))
            .expression_attribute_values(":running", s(Status::Running.as_str()))
            .expression_attribute_values(":cancelled", s(Status::Cancelled.as_str()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":by", s(by))
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":kind", s("cancelled"))
            .expression_attribute_values(":error", s(&format!("cancelled by {by}")))
            .expression_attribute_values(":now_text", s(&now_text()))
            .expression_attribute_values(":ttl", n(now + RETENTION.as_secs()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let err = match named(entering(result, job_id, Status::Cancelled))
            .send()
            .await
        {
            Ok(_) => return Ok(Cancel::Cancelled),
            Err(err) if is_condition_failure(&err) => err,
            Err(err) => return Err(dynamo("UpdateItem", err)),
        };
        let Some(old) = condition_failure_item(&err) else {
            return Ok(Cancel::NotFound);
        };
        if text(old, "cancel_token") == Some(token) {
            return Ok(Cancel::Cancelled);
        }
        match text(old, "status").and_then(Status::parse) {
            Some(status) if status.is_final() => Ok(Cancel::AlreadyFinal(status)),
            // Running under a live lease: ask its worker. Setting the same
            // request twice (a retry after a lost reply) changes nothing.
            _ => {
                let asked = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .key("job_id", s(job_id))
                    .condition_expression("#status = :running")
                    .update_expression(
                        "SET #cancel_requested_by = if_not_exists(#cancel_requested_by, :by), \
                         #cancel_requested_at = if_not_exists(#cancel_requested_at, :now_text)",
                    )
                    .expression_attribute_values(":running", s(Status::Running.as_str()))
                    .expression_attribute_values(":by", s(by))
                    .expression_attribute_values(":now_text", s(&now_text()));
                match named(asked).send().await {
                    Ok(_) => Ok(Cancel::Requested),
                    // It ended meanwhile (or its lease lapsed): look again.
                    Err(err) if is_condition_failure(&err) => {
                        Box::pin(self.cancel(job_id, by, token)).await
                    }
                    Err(err) => Err(dynamo("UpdateItem", err)),
                }
            }
        }
    }

    /// Puts a `failed` or `cancelled` job (with `force`, a `succeeded` one)
    /// back to `queued` with a fresh attempt budget, counting the retry.
    /// Safe to retry: `token` recognises a write applied with its reply lost.
    pub async fn requeue(
        &self,
        job_id: &str,
        by: &str,
        force: bool,
        token: &str,
    ) -> Result<Requeue, StoreError> {
        let retryable = if force {
            "#status IN (:failed, :cancelled, :succeeded)"
        } else {
            "#status IN (:failed, :cancelled)"
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("job_id", s(job_id))
            .condition_expression(format!(
                "{retryable} AND attribute_exists(#message) AND #message <> :empty"
            ))
            .update_expression(
                "SET #status = :queued, #attempts = :zero, #failures = :zero, #retried = if_not_exists(#retried, :zero) + :one, \
                 #retried_by = :by, #retried_at = :now_text, #retry_token = :token, #updated_at = :now_text \
                 REMOVE #error, #error_kind, #finished_at, #expires_at, #cancelled_by, #cancelled_at, \
                 #cancel_token, #cancel_requested_by, #cancel_requested_at, #size, #etag, #checksum, \
                 #checksum_algorithm, #duration_secs, #throughput_mbps, #parts, #part_size, #retries, \
                 #bytes_done, #bytes_total, #bytes_refetched, #bytes_reused, #parts_reused, #restart_reason",
            )
            .expression_attribute_values(":failed", s(Status::Failed.as_str()))
            .expression_attribute_values(":cancelled", s(Status::Cancelled.as_str()))
            .expression_attribute_values(":queued", s(Status::Queued.as_str()))
            .expression_attribute_values(":empty", s(""))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":by", s(by))
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":now_text", s(&now_text()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let result = if force {
            result.expression_attribute_values(":succeeded", s(Status::Succeeded.as_str()))
        } else {
            result
        };
        let kept_message = |item: &Record| {
            let kept = text(item, "message").filter(|m| !m.is_empty())?;
            let field = |name| text(item, name).unwrap_or_default();
            crate::job::message_from_record(
                kept,
                field("job_id"),
                field("url"),
                field("bucket"),
                field("key"),
            )
        };
        let err = match named(entering(result, job_id, Status::Queued)).send().await {
            Ok(output) => {
                return Ok(match output.attributes.as_ref().and_then(kept_message) {
                    Some(message) => Requeue::Queued { message },
                    None => Requeue::MessageNotKept,
                });
            }
            Err(err) if is_condition_failure(&err) => err,
            Err(err) => return Err(dynamo("UpdateItem", err)),
        };
        let Some(old) = condition_failure_item(&err) else {
            return Ok(Requeue::NotFound);
        };
        let status = text(old, "status").and_then(Status::parse);
        Ok(match (status, kept_message(old)) {
            (Some(Status::Queued), Some(message)) if text(old, "retry_token") == Some(token) => {
                Requeue::Queued { message }
            }
            (Some(Status::Queued), message) => Requeue::StillQueued { message },
            (Some(Status::Failed | Status::Cancelled), None) => Requeue::MessageNotKept,
            (Some(Status::Succeeded), None) if force => Requeue::MessageNotKept,
            (Some(status), _) => Requeue::NotRetryable(status),
            (None, _) => Requeue::NotFound,
        })
    }
}
