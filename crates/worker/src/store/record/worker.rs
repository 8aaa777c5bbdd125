//! The transitions a worker writes: the claim that takes a lease, the
//! heartbeat, the fenced lease extension, the final records under the lease
//! (succeeded, failed or retrying, cancelled), a release at shutdown, and
//! the rejection of a message that is no job. Each method holds its update
//! expression, its condition and its lost-reply recognition; the shared
//! recognition of a final leased write is `send_leased_final`.

use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use ferry_engine::{Checkpoint, TransferOutcome};

use super::Status;
use crate::job::{Job, Rejection};
use crate::store::checkpoint::{CHECKPOINT_ATTRIBUTES, checkpoint_of};
use crate::store::codec::{n, now_secs, now_text, number, s, text};
use crate::store::index::entering;
use crate::store::{
    JobStore, RETENTION, Record, StoreError, UpdateBuilder, answered, condition_failure_item,
    dynamo, is_condition_failure, named,
};

/// This worker's hold on a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job_id: String,
    pub owner: String,
    pub fence: u64,
    /// Starts of this job so far, this one included.
    pub attempts: u32,
    /// Attempts before this one that ended in an error. `FERRY_MAX_ATTEMPTS`
    /// counts these, not starts: a release (a deploy's drain) is no failure.
    pub failures_before: u32,
    /// The upload an earlier attempt left to resume, if any.
    pub checkpoint: Option<Checkpoint>,
    /// Bytes earlier attempts fetched from the source, as they recorded it.
    pub fetched_before: u64,
    /// `resumes` and `restarts` before this attempt: counters are written as
    /// values (not `ADD`), so a write retried after a lost reply counts once.
    pub resumes_before: u64,
    pub restarts_before: u64,
    /// Who asked for the job to be cancelled while it ran (an earlier owner
    /// died before it could act on it): this attempt only cancels.
    pub cancel_requested_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Boxed: a lease carries its checkpoint, several times the others' size.
    Acquired(Box<Lease>),
    /// The job already ended; its message only needs deleting.
    Final(Status),
    /// Another worker holds a lease that ends in `expires_in` (when known);
    /// if that worker died, the job can be claimed then.
    Busy { expires_in: Option<Duration> },
}

/// The condition that keeps a lease write from moving the expiry back. The
/// SDK resends a request whose reply was lost or late with the expiry it was
/// built with; applied after a later renewal, it would shorten the lease
/// under the worker's feet (the worker counts from the later renewal).
const NEVER_SHORTER: &str = "#lease_expires <= :expires";

/// Whether `item`, the record as a failed condition found it, is still held
/// under `lease`.
fn held(item: &Record, lease: &Lease) -> bool {
    text(item, "lease_owner") == Some(lease.owner.as_str())
        && number(item, "fence") == Some(lease.fence)
}

/// Whether a renewal later than the one that expires at `expires` was
/// applied first: the lease already reaches further. Counted with the
/// replayed writes: it is one of ours, answered after its successor.
fn superseded(item: &Record, expires: u64) -> bool {
    let later = number(item, "lease_expires").is_some_and(|at| at > expires);
    if later {
        metrics::counter!("ferry_dynamodb_replayed_writes_total", "operation" => "lease")
            .increment(1);
    }
    later
}

/// The heartbeat's write: lease and progress only — no index key, nothing
/// the index projects.
pub const RENEW_UPDATE: &str = "SET #lease_expires = :expires, #updated_at = :now_text, \
     #bytes_done = :done, #bytes_total = :total, #bytes_fetched = :fetched";

impl JobStore {
    /// Takes the job for `owner` unless it is final or leased to someone else.
    ///
    /// `token` is fresh for each message handled (the same for every retry
    /// of its claim): when the write was applied but its reply lost, the
    /// retry fails the condition, and the old item it returns carries our
    /// token — the claim is recognised as ours.
    pub async fn claim(
        &self,
        job: &Job,
        owner: &str,
        lease: Duration,
        token: &str,
    ) -> Result<Claim, StoreError> {
        let now = self.lease_clock();
        let now_text = now_text();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("job_id", s(&job.id))
            .condition_expression(
                "attribute_not_exists(#job_id) OR #status IN (:queued, :retrying) \
                 OR (#status = :running AND #lease_expires < :now)",
            )
            .update_expression(
                "SET #status = :running, #lease_owner = :owner, #worker_id = :owner, \
                 #lease_expires = :expires, #claim_token = :token, \
                 #fence = if_not_exists(#fence, :zero) + :one, \
                 #attempts = if_not_exists(#attempts, :zero) + :one, \
                 #restarts = if_not_exists(#restarts, :zero), \
                 #resumes = if_not_exists(#resumes, :zero), \
                 #bytes_fetched = if_not_exists(#bytes_fetched, :zero), \
                 #url = :url, #bucket = :bucket, #key = :key, \
                 #created_at = if_not_exists(#created_at, :now_text), \
                 #updated_at = :now_text, #started_at = :now_text, \
                 #message = if_not_exists(#message, :message) \
                 REMOVE #finished_at",
            )
            .expression_attribute_values(":queued", s(Status::Queued.as_str()))
            .expression_attribute_values(":retrying", s(Status::Retrying.as_str()))
            .expression_attribute_values(":running", s(Status::Running.as_str()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":now_text", s(&now_text))
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":expires", n(now + lease.as_secs()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":url", s(job.shown_url.as_str()))
            .expression_attribute_values(":bucket", s(&job.spec.destination.bucket))
            .expression_attribute_values(":key", s(&job.spec.destination.key))
            // DynamoDB has no "set if given": a job with a secret stores an
            // empty text, which `ferry retry` reads as "not kept".
            .expression_attribute_values(
                ":message",
                s(&job.message_for_record().unwrap_or_default()),
            )
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let result = named(entering(result, &job.id, Status::Running))
            .send()
            .await;
        crate::metrics::health().dynamodb(answered(&result));
        let acquired = |item: &Record| {
            Claim::Acquired(Box::new(Lease {
                job_id: job.id.clone(),
                owner: owner.to_owned(),
                fence: number(item, "fence").unwrap_or(0),
                attempts: u32::try_from(number(item, "attempts").unwrap_or(1)).unwrap_or(u32::MAX),
                failures_before: u32::try_from(number(item, "failures").unwrap_or(0))
                    .unwrap_or(u32::MAX),
                checkpoint: checkpoint_of(item),
                fetched_before: number(item, "bytes_fetched").unwrap_or(0),
                resumes_before: number(item, "resumes").unwrap_or(0),
                restarts_before: number(item, "restarts").unwrap_or(0),
                cancel_requested_by: text(item, "cancel_requested_by").map(str::to_owned),
            }))
        };
        match result {
            Ok(output) => Ok(acquired(&output.attributes.unwrap_or_default())),
            Err(err) if is_condition_failure(&err) => {
                // With ReturnValuesOnConditionCheckFailure the old item says why.
                let old_item = condition_failure_item(&err);
                if old_item.is_some_and(|item| text(item, "claim_token") == Some(token)) {
                    metrics::counter!("ferry_dynamodb_replayed_writes_total", "operation" => "claim")
                        .increment(1);
                    return Ok(old_item
                        .map(acquired)
                        .unwrap_or(Claim::Busy { expires_in: None }));
                }
                let status = old_item
                    .and_then(|item| text(item, "status"))
                    .and_then(Status::parse);
                metrics::counter!("ferry_dynamodb_condition_conflicts_total", "operation" => "claim")
                    .increment(1);
                let expires_in = old_item
                    .and_then(|item| number(item, "lease_expires"))
                    .map(|at| Duration::from_secs(at.saturating_sub(now)));
                Ok(match status {
                    Some(status) if status.is_final() => Claim::Final(status),
                    _ => Claim::Busy { expires_in },
                })
            }
            Err(err) => Err(dynamo("UpdateItem", err)),
        }
    }

    /// Extends the lease and records progress; fails with `LeaseLost` when
    /// another worker has taken the job.
    /// `fetched` is what all attempts, this one included, received from the
    /// source so far.
    pub async fn renew(
        &self,
        lease: &Lease,
        duration: Duration,
        bytes_done: u64,
        bytes_total: Option<u64>,
        fetched: u64,
    ) -> Result<(), StoreError> {
        let mut update = self
            .leased_update(lease)
            .update_expression(RENEW_UPDATE)
            .expression_attribute_values(":now_text", s(&now_text()))
            .expression_attribute_values(":done", n(bytes_done))
            .expression_attribute_values(":fetched", n(fetched))
            // A cancel request fails the renewal: the heartbeat is how a
            // running job learns of it, within one beat.
            .condition_expression(format!(
                "#lease_owner = :owner AND #fence = :fence AND {NEVER_SHORTER} \
                 AND attribute_not_exists(#cancel_requested_by)"
            ))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        update = match bytes_total {
            Some(total) => update.expression_attribute_values(":total", n(total)),
            None => update.expression_attribute_values(":total", AttributeValue::Null(true)),
        };
        let expires = self.lease_clock() + duration.as_secs();
        let result = named(update.expression_attribute_values(":expires", n(expires)))
            .send()
            .await;
        if let Err(err) = &result
            && let Some(item) = condition_failure_item(err)
            && held(item, lease)
        {
            if let Some(by) = text(item, "cancel_requested_by") {
                return Err(StoreError::CancelRequested { by: by.to_owned() });
            }
            if superseded(item, expires) {
                return Ok(());
            }
        }
        self.leased_outcome(result)
    }

    /// Extends the lease (fenced) right before Complete, keeping the
    /// full-object CRC64NVME the upload is completed with beside its
    /// checkpoint: if the upload is then gone, an object of that CRC is the
    /// one this Complete stored (`Checkpoint::object_crc`), with or without
    /// part CRC items.
    ///
    /// Like the heartbeat, it never shortens the lease: when a later renewal
    /// was applied first (this write's retry arriving after it), only the
    /// CRC is written, under the lease that renewal already extended.
    pub async fn extend_lease(
        &self,
        lease: &Lease,
        duration: Duration,
        object_crc: u64,
    ) -> Result<(), StoreError> {
        let crc = s(&ferry_engine::checksum::to_base64(object_crc));
        let expires = self.lease_clock() + duration.as_secs();
        let update = self
            .leased_update(lease)
            .condition_expression(format!(
                "#lease_owner = :owner AND #fence = :fence AND {NEVER_SHORTER}"
            ))
            .update_expression("SET #lease_expires = :expires, #object_crc = :object_crc")
            .expression_attribute_values(":expires", n(expires))
            .expression_attribute_values(":object_crc", crc.clone())
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let result = named(update).send().await;
        if let Err(err) = &result
            && let Some(item) = condition_failure_item(err)
            && held(item, lease)
            && superseded(item, expires)
        {
            let crc_only = self
                .leased_update(lease)
                .update_expression("SET #object_crc = :object_crc")
                .expression_attribute_values(":object_crc", crc);
            return self.send_leased(crc_only).await;
        }
        self.leased_outcome(result)
    }

    /// Records success. `total_fetched` is what all attempts fetched; what
    /// exceeds the object's size was fetched more than once.
    pub async fn succeed(
        &self,
        lease: &Lease,
        outcome: &TransferOutcome,
        total_fetched: u64,
    ) -> Result<(), StoreError> {
        let secs = outcome.duration.as_secs_f64();
        let (set, remove) = outcome_extras(outcome);
        let update = self
            .leased_update(lease)
            .update_expression(format!(
                "SET #status = :succeeded, #size = :size, #etag = :etag, #checksum = :checksum, \
                 #checksum_algorithm = :algorithm, #bytes_done = :size, #bytes_total = :size, \
                 #duration_secs = :secs, #throughput_mbps = :mbps, #parts = :parts, \
                 #part_size = :part_size, #retries = :retries, #bytes_fetched = :fetched, \
                 #bytes_refetched = :refetched, \
                 #parts_reused = :reused, \
                 #finished_at = :now_text, #updated_at = :now_text, #expires_at = :ttl{set} \
                 REMOVE #lease_owner, #lease_expires, #error_kind, #error, {CHECKPOINT_ATTRIBUTES}{remove}",
            ))
            .expression_attribute_values(":fetched", n(total_fetched))
            .expression_attribute_values(
                ":refetched",
                n(total_fetched.saturating_sub(outcome.size)),
            )
            .expression_attribute_values(":reused", n(u64::from(outcome.parts_reused)))
            .expression_attribute_values(":succeeded", s(Status::Succeeded.as_str()))
            .expression_attribute_values(":size", n(outcome.size))
            .expression_attribute_values(":etag", s(&outcome.etag))
            .expression_attribute_values(":checksum", s(&outcome.checksum_crc64nvme))
            .expression_attribute_values(":algorithm", s("CRC64NVME"))
            .expression_attribute_values(":secs", AttributeValue::N(format!("{secs:.3}")))
            .expression_attribute_values(
                ":mbps",
                AttributeValue::N(format!("{:.2}", outcome.size as f64 / secs.max(1e-6) / 1e6)),
            )
            .expression_attribute_values(":parts", n(u64::from(outcome.parts)))
            .expression_attribute_values(":part_size", n(outcome.part_size))
            .expression_attribute_values(":retries", n(u64::from(outcome.retries)))
            .expression_attribute_values(":now_text", s(&now_text()))
            .expression_attribute_values(":ttl", n(now_secs() + RETENTION.as_secs()));
        // A skipped job read nothing: how its object is known to be whole is
        // the earlier job's to say.
        let update = if outcome.skipped {
            update.expression_attribute_values(":true", AttributeValue::Bool(true))
        } else {
            update.expression_attribute_values(":integrity", s(outcome.integrity.as_str()))
        };
        let update = if outcome.source_digests.is_empty() {
            update
        } else {
            update.expression_attribute_values(
                ":source_digests",
                s(&outcome.source_digests.join(",")),
            )
        };
        self.send_leased_final(update, lease, Status::Succeeded)
            .await
    }

    /// Records an error: `failed` for good, or `retrying` for a later attempt.
    /// Either counts one more failure (a value computed from the claim, so a
    /// retried write counts once).
    pub async fn record_error(
        &self,
        lease: &Lease,
        status: Status,
        (kind, error): (&str, &str),
        total_fetched: u64,
    ) -> Result<(), StoreError> {
        let finished = status.is_final();
        let expression = if finished {
            &format!(
                "SET #status = :status, #error_kind = :kind, #error = :error, #updated_at = :now_text, \
                 #bytes_fetched = :fetched, #failures = :failures, #finished_at = :now_text, \
                 #expires_at = :ttl REMOVE #lease_owner, #lease_expires, {CHECKPOINT_ATTRIBUTES}"
            )
        } else {
            "SET #status = :status, #error_kind = :kind, #error = :error, #updated_at = :now_text, \
             #bytes_fetched = :fetched, #failures = :failures REMOVE #lease_owner, #lease_expires"
        };
        let mut update = self
            .leased_update(lease)
            .update_expression(expression)
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":kind", s(kind))
            .expression_attribute_values(":error", s(error))
            .expression_attribute_values(":fetched", n(total_fetched))
            .expression_attribute_values(":failures", n(u64::from(lease.failures_before) + 1))
            .expression_attribute_values(":now_text", s(&now_text()));
        if finished {
            update =
                update.expression_attribute_values(":ttl", n(now_secs() + RETENTION.as_secs()));
        }
        self.send_leased_final(update, lease, status).await
    }

    /// Records that this attempt stopped because a user cancelled the job.
    pub async fn record_cancelled(&self, lease: &Lease, by: &str) -> Result<(), StoreError> {
        let update = self
            .leased_update(lease)
            .update_expression(format!(
                "SET #status = :cancelled, #cancelled_by = :by, #cancelled_at = :now_text, \
                 #error_kind = :kind, #error = :error, #updated_at = :now_text, \
                 #finished_at = :now_text, #expires_at = :ttl \
                 REMOVE #lease_owner, #lease_expires, #cancel_requested_by, #cancel_requested_at, \
                 {CHECKPOINT_ATTRIBUTES}"
            ))
            .expression_attribute_values(":cancelled", s(Status::Cancelled.as_str()))
            .expression_attribute_values(":by", s(by))
            .expression_attribute_values(":kind", s("cancelled"))
            .expression_attribute_values(":error", s(&format!("cancelled by {by}")))
            .expression_attribute_values(":now_text", s(&now_text()))
            .expression_attribute_values(":ttl", n(now_secs() + RETENTION.as_secs()));
        self.send_leased_final(update, lease, Status::Cancelled)
            .await
    }

    /// Gives a job back (shutdown): `queued` again, lease cleared, so the next
    /// worker can claim it at once.
    pub async fn release(&self, lease: &Lease, total_fetched: u64) -> Result<(), StoreError> {
        let update = self
            .leased_update(lease)
            .update_expression(
                "SET #status = :queued, #updated_at = :now_text, #bytes_fetched = :fetched \
                 REMOVE #lease_owner, #lease_expires",
            )
            .expression_attribute_values(":queued", s(Status::Queued.as_str()))
            .expression_attribute_values(":fetched", n(total_fetched))
            .expression_attribute_values(":now_text", s(&now_text()));
        self.send_leased_final(update, lease, Status::Queued).await
    }

    /// A leased write that ends the lease (`target` status, owner removed).
    /// When it was applied but its reply lost, the retry fails the condition;
    /// the item then shows our fence, the target status and no owner — and
    /// nobody else can have written that — so it counts as done.
    async fn send_leased_final(
        &self,
        update: UpdateBuilder,
        lease: &Lease,
        target: Status,
    ) -> Result<(), StoreError> {
        let update = entering(update, &lease.job_id, target)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let result = named(update).send().await;
        if let Err(err) = &result
            && is_condition_failure(err)
            && condition_failure_item(err).is_some_and(|item| {
                number(item, "fence") == Some(lease.fence)
                    && text(item, "status") == Some(target.as_str())
                    && !item.contains_key("lease_owner")
            })
        {
            metrics::counter!("ferry_dynamodb_replayed_writes_total", "operation" => target.as_str())
                .increment(1);
            return Ok(());
        }
        self.leased_outcome(result)
    }

    /// Records a rejected message. Never overwrites a job that is running or
    /// finished under the same id; returns whether the record was written.
    pub async fn reject(&self, rejection: &Rejection) -> Result<bool, StoreError> {
        let now = now_text();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("job_id", s(&rejection.job_id))
            .condition_expression("attribute_not_exists(#job_id) OR #status IN (:queued, :rejected)")
            .update_expression(
                "SET #status = :rejected, #error_kind = :kind, #error = :error, \
                 #created_at = if_not_exists(#created_at, :now_text), #updated_at = :now_text, \
                 #finished_at = :now_text, #attempts = if_not_exists(#attempts, :zero), #expires_at = :ttl",
            )
            .expression_attribute_values(":queued", s(Status::Queued.as_str()))
            .expression_attribute_values(":rejected", s(Status::Rejected.as_str()))
            .expression_attribute_values(":kind", s(rejection.kind))
            .expression_attribute_values(":error", s(&rejection.reason))
            .expression_attribute_values(":now_text", s(&now))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":ttl", n(now_secs() + RETENTION.as_secs()));
        let result = named(entering(result, &rejection.job_id, Status::Rejected))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if is_condition_failure(&err) => Ok(false),
            Err(err) => Err(dynamo("UpdateItem", err)),
        }
    }
}

/// The success attributes only some outcomes have — `skipped` (if_exists
/// skip) or else `source_integrity`, and `source_digests` (the origin's
/// digests that were checked) — as what to SET and what to REMOVE: a record
/// run again (`ferry retry --force`) must not keep an earlier run's.
fn outcome_extras(outcome: &TransferOutcome) -> (String, String) {
    let (mut set, mut remove) = (String::new(), String::new());
    if outcome.skipped {
        set.push_str(", #skipped = :true");
        remove.push_str(", #source_integrity");
    } else {
        set.push_str(", #source_integrity = :integrity");
        remove.push_str(", #skipped");
    }
    if outcome.source_digests.is_empty() {
        remove.push_str(", #source_digests");
    } else {
        set.push_str(", #source_digests = :source_digests");
    }
    (set, remove)
}
