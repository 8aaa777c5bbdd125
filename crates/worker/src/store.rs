//! DynamoDB job records: one item per job, changed only by conditional writes.
//!
//! A worker owns a job through a *lease*: `lease_owner` + `lease_expires` +
//! `fence`, a counter bumped by every claim. Every later write by that worker
//! is conditional on owner and fence, so a worker whose lease was taken over
//! can neither renew, nor finish, nor overwrite the job (see docs/jobs.md).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure,
};
use ferry_engine::sink::UploadedPart;
use ferry_engine::source::Validator;
use ferry_engine::{Checkpoint, ErrorClass, TransferOutcome};

use crate::job::{Job, Rejection};

/// How long finished records are kept before DynamoDB's TTL may delete them.
const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The index `ferry jobs` reads: records by status, spread over
/// [`INDEX_SHARDS`] partitions per status so that no index partition takes
/// more than a share of the fleet's writes (docs/scale.md). Only status
/// changes write to it: its key is `status_shard` + `status_at`, both set
/// only when the status changes, and it projects nothing else (KEYS_ONLY),
/// so heartbeats cost it no write at all.
pub const STATUS_INDEX: &str = "status-shard-index";
pub const STATUS_INDEX_PARTITION_KEY: &str = "status_shard";
pub const STATUS_INDEX_SORT_KEY: &str = "status_at";
pub const INDEX_SHARDS: u32 = 16;

/// The heartbeat's write: lease and progress only — no index key, nothing
/// the index projects.
pub const RENEW_UPDATE: &str = "SET #lease_expires = :expires, #updated_at = :now_text, \
     #bytes_done = :done, #bytes_total = :total, #bytes_fetched = :fetched";

/// The digest state's write: that one attribute, nothing the index holds.
pub const DIGEST_STATE_UPDATE: &str = "SET #digest_state = :digest_state";

/// Which of the [`INDEX_SHARDS`] a job's index entry lives in: FNV-1a of
/// the job id, stable across versions and platforms (the shard is stored,
/// and readers query every shard, so only its spread matters).
pub fn index_shard(job_id: &str) -> u32 {
    let hash = job_id.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash % INDEX_SHARDS
}

/// The index partition of a job in `status`: `failed#07`.
pub fn status_shard(job_id: &str, status: Status) -> String {
    format!("{}#{:02}", status.as_str(), index_shard(job_id))
}

/// `status_at`: when a record entered its status, to the millisecond, so
/// the listing's order is stable among jobs of the same second.
fn status_time() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Adds the index attributes to a write that moves a job to `status`.
fn entering(update: UpdateBuilder, job_id: &str, status: Status) -> UpdateBuilder {
    let expression = update.get_update_expression().clone().unwrap_or_default();
    let expression = match expression.strip_prefix("SET ") {
        Some(rest) => format!("SET #status_shard = :status_shard, #status_at = :status_at, {rest}"),
        None => format!("SET #status_shard = :status_shard, #status_at = :status_at {expression}"),
    };
    update
        .update_expression(expression)
        .expression_attribute_values(":status_shard", s(&status_shard(job_id, status)))
        .expression_attribute_values(":status_at", s(&status_time()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Queued,
    Running,
    Retrying,
    Succeeded,
    Failed,
    Rejected,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
        }
    }

    pub const ALL: [Self; 7] = [
        Self::Queued,
        Self::Running,
        Self::Retrying,
        Self::Succeeded,
        Self::Failed,
        Self::Rejected,
        Self::Cancelled,
    ];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Rejected | Self::Cancelled
        )
    }
}

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

/// The attributes a checkpoint is stored in; removed when it is used up.
const CHECKPOINT_ATTRIBUTES: &str = "#upload_id, #upload_part_size, #source_length, #source_etag, #source_last_modified, \
     #checkpointed_at, #digest_state";

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
    if let Some(message) = job.message_without_secrets() {
        record.insert("message".into(), s(&message));
    }
    record
}

/// Key of the item that keeps one part's CRC (outside the job's own item,
/// which could not hold 10,000 of them). `#` never occurs in a job id.
fn part_key(job_id: &str, number: u32) -> String {
    format!("{job_id}#part#{number}")
}

/// Key of the item that names the job an upload belongs to, for `ferry gc`.
pub fn upload_key(upload_id: &str) -> String {
    format!("upload#{upload_id}")
}

/// Key of the item that names the job that last started an upload to
/// `bucket`/`key`: written before every CreateMultipartUpload, so `ferry gc`
/// can place an upload that has no `upload#` item (its Create reply was
/// lost, or it was never checkpointed).
pub fn destination_key(bucket: &str, key: &str) -> String {
    format!("dest#{bucket}/{key}")
}

fn checkpoint_of(item: &Record) -> Option<Checkpoint> {
    let validator = match (
        text(item, "source_etag"),
        text(item, "source_last_modified"),
    ) {
        (Some(etag), _) => Validator::ETag(etag.to_owned()),
        (None, Some(date)) => Validator::LastModified(date.to_owned()),
        (None, None) => return None,
    };
    Some(Checkpoint {
        upload_id: text(item, "upload_id")?.to_owned(),
        part_size: number(item, "upload_part_size")?,
        length: number(item, "source_length")?,
        validator,
        digest_state: text(item, "digest_state").map(str::to_owned),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Acquired(Lease),
    /// The job already ended; its message only needs deleting.
    Final(Status),
    /// Another worker holds a lease that ends in `expires_in` (when known);
    /// if that worker died, the job can be claimed then.
    Busy {
        expires_in: Option<Duration>,
    },
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
                s(&job.message_without_secrets().unwrap_or_default()),
            )
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let result = named(entering(result, &job.id, Status::Running))
            .send()
            .await;
        crate::metrics::health().dynamodb(answered(&result));
        let acquired = |item: &Record| {
            Claim::Acquired(Lease {
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
            })
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
            .expression_attribute_values(":expires", n(self.lease_clock() + duration.as_secs()))
            .expression_attribute_values(":now_text", s(&now_text()))
            .expression_attribute_values(":done", n(bytes_done))
            .expression_attribute_values(":fetched", n(fetched))
            // A cancel request fails the renewal: the heartbeat is how a
            // running job learns of it, within one beat.
            .condition_expression(
                "#lease_owner = :owner AND #fence = :fence AND attribute_not_exists(#cancel_requested_by)",
            )
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        update = match bytes_total {
            Some(total) => update.expression_attribute_values(":total", n(total)),
            None => update.expression_attribute_values(":total", AttributeValue::Null(true)),
        };
        let result = named(update).send().await;
        if let Err(err) = &result
            && let Some(item) = condition_failure_item(err)
            && text(item, "lease_owner") == Some(lease.owner.as_str())
            && number(item, "fence") == Some(lease.fence)
            && let Some(by) = text(item, "cancel_requested_by")
        {
            return Err(StoreError::CancelRequested { by: by.to_owned() });
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
        let update = self
            .leased_update(lease)
            .update_expression(format!(
                "SET #status = :succeeded, #size = :size, #etag = :etag, #checksum = :checksum, \
                 #checksum_algorithm = :algorithm, #bytes_done = :size, #bytes_total = :size, \
                 #duration_secs = :secs, #throughput_mbps = :mbps, #parts = :parts, \
                 #part_size = :part_size, #retries = :retries, #bytes_fetched = :fetched, \
                 #bytes_refetched = :refetched, \
                 #parts_reused = :reused, #source_integrity = :integrity, \
                 #finished_at = :now_text, #updated_at = :now_text, #expires_at = :ttl \
                 REMOVE #lease_owner, #lease_expires, #error_kind, #error, {CHECKPOINT_ATTRIBUTES}"
            ))
            .expression_attribute_values(":fetched", n(total_fetched))
            .expression_attribute_values(
                ":refetched",
                n(total_fetched.saturating_sub(outcome.size)),
            )
            .expression_attribute_values(":reused", n(u64::from(outcome.parts_reused)))
            .expression_attribute_values(":integrity", s(outcome.integrity.as_str()))
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

    /// Extends the lease only (fenced), e.g. right before Complete.
    pub async fn extend_lease(&self, lease: &Lease, duration: Duration) -> Result<(), StoreError> {
        let update = self
            .leased_update(lease)
            .update_expression("SET #lease_expires = :expires")
            .expression_attribute_values(":expires", n(self.lease_clock() + duration.as_secs()));
        self.send_leased(update).await
    }

    /// Names `job_id` as the job about to start an upload to `bucket`/`key`
    /// (see [`destination_key`]). Idempotent: a retry writes the same item.
    pub async fn mark_destination(
        &self,
        job_id: &str,
        bucket: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(HashMap::from([
                ("job_id".into(), s(&destination_key(bucket, key))),
                ("upload_job_id".into(), s(job_id)),
                ("expires_at".into(), n(now_secs() + RETENTION.as_secs())),
            ])))
            .send()
            .await
            .map_err(|err| dynamo("PutItem", err))?;
        Ok(())
    }

    /// Records the upload this attempt writes to (before its first part), and
    /// the item `ferry gc` uses to find the job an upload belongs to.
    pub async fn save_checkpoint(
        &self,
        lease: &Lease,
        destination: (&str, &str),
        checkpoint: &Checkpoint,
    ) -> Result<(), StoreError> {
        let now = now_text();
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(HashMap::from([
                ("job_id".into(), s(&upload_key(&checkpoint.upload_id))),
                ("upload_job_id".into(), s(&lease.job_id)),
                ("bucket".into(), s(destination.0)),
                ("key".into(), s(destination.1)),
                ("created_at".into(), s(&now)),
                ("expires_at".into(), n(now_secs() + RETENTION.as_secs())),
            ])))
            .send()
            .await
            .map_err(|err| dynamo("PutItem", err))?;
        let (etag, last_modified) = match &checkpoint.validator {
            Validator::ETag(etag) => (Some(etag), None),
            Validator::LastModified(date) => (None, Some(date)),
        };
        let mut update = self
            .leased_update(lease)
            .update_expression(
                "SET #upload_id = :upload_id, #upload_part_size = :part_size, \
                 #source_length = :length, #source_etag = :etag, \
                 #source_last_modified = :last_modified, #checkpointed_at = :now_text, \
                 #updated_at = :now_text REMOVE #digest_state",
            )
            .expression_attribute_values(":upload_id", s(&checkpoint.upload_id))
            .expression_attribute_values(":part_size", n(checkpoint.part_size))
            .expression_attribute_values(":length", n(checkpoint.length))
            .expression_attribute_values(":now_text", s(&now));
        update = update
            .expression_attribute_values(":etag", etag.map_or(AttributeValue::Null(true), |e| s(e)))
            .expression_attribute_values(
                ":last_modified",
                last_modified.map_or(AttributeValue::Null(true), |d| s(d)),
            );
        self.send_leased(update).await
    }

    /// Keeps the digest state of the checkpointed upload's hashed prefix
    /// (`DigestState::encode`), fenced like the checkpoint it belongs to. A
    /// plain attribute: neither an index key nor projected, like a heartbeat.
    pub async fn save_digest_state(&self, lease: &Lease, state: &str) -> Result<(), StoreError> {
        let update = self
            .leased_update(lease)
            .update_expression(DIGEST_STATE_UPDATE)
            .expression_attribute_values(":digest_state", s(state));
        self.send_leased(update).await
    }

    /// The checkpoint was unusable and the job starts over.
    pub async fn record_restart(&self, lease: &Lease, reason: &str) -> Result<(), StoreError> {
        let update = self
            .leased_update(lease)
            .update_expression(format!(
                "SET #restart_reason = :reason, #updated_at = :now_text, #restarts = :restarts \
                 REMOVE {CHECKPOINT_ATTRIBUTES}"
            ))
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":now_text", s(&now_text()))
            .expression_attribute_values(":restarts", n(lease.restarts_before + 1));
        self.send_leased(update).await
    }

    /// This attempt continues an earlier one's upload.
    pub async fn record_resume(&self, lease: &Lease, bytes_reused: u64) -> Result<(), StoreError> {
        let update = self
            .leased_update(lease)
            .update_expression(
                "SET #bytes_reused = :reused, #updated_at = :now_text, #resumes = :resumes",
            )
            .expression_attribute_values(":reused", n(bytes_reused))
            .expression_attribute_values(":now_text", s(&now_text()))
            .expression_attribute_values(":resumes", n(lease.resumes_before + 1));
        self.send_leased(update).await
    }

    /// Keeps one acknowledged part's CRC where a resuming attempt finds it.
    pub async fn save_part(
        &self,
        job_id: &str,
        upload_id: &str,
        part: &UploadedPart,
    ) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(HashMap::from([
                ("job_id".into(), s(&part_key(job_id, part.number))),
                ("upload_id".into(), s(upload_id)),
                ("crc64nvme".into(), n(part.crc)),
                ("len".into(), n(part.len)),
                ("expires_at".into(), n(now_secs() + RETENTION.as_secs())),
            ])))
            .send()
            .await
            .map_err(|err| dynamo("PutItem", err))?;
        Ok(())
    }

    /// The CRCs kept for parts `numbers` of `upload_id` (others are absent).
    pub async fn part_checksums(
        &self,
        job_id: &str,
        upload_id: &str,
        numbers: &[u32],
    ) -> Result<HashMap<u32, u64>, StoreError> {
        let mut found = HashMap::new();
        for chunk in numbers.chunks(100) {
            let keys = chunk
                .iter()
                .map(|number| HashMap::from([("job_id".to_owned(), s(&part_key(job_id, *number)))]))
                .collect();
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(|err| StoreError::Dynamo {
                        operation: "BatchGetItem",
                        message: err.to_string(),
                        permanent: Some("request_not_built"),
                    })?,
            );
            let mut rounds = 0;
            while let Some(keys) = request.take() {
                rounds += 1;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, keys)
                    .send()
                    .await
                    .map_err(|err| dynamo("BatchGetItem", err))?;
                for item in output
                    .responses
                    .unwrap_or_default()
                    .remove(&self.table)
                    .unwrap_or_default()
                {
                    let part = text(&item, "job_id")
                        .and_then(|key| key.rsplit_once("#part#"))
                        .and_then(|(_, n)| n.parse().ok());
                    if let (Some(part), Some(crc), Some(upload)) =
                        (part, number(&item, "crc64nvme"), text(&item, "upload_id"))
                        && upload == upload_id
                    {
                        found.insert(part, crc);
                    }
                }
                // Unprocessed keys come back when DynamoDB throttles; a few
                // rounds, then the rest simply count as not kept.
                request = output
                    .unprocessed_keys
                    .and_then(|mut rest| rest.remove(&self.table))
                    .filter(|_| rounds < 5);
            }
        }
        Ok(found)
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
            text(item, "message")
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
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

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub fn text<'a>(item: &'a Record, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

pub fn number(item: &Record, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// A record as JSON, for `ferry status --json`.
pub fn to_json(item: &Record) -> serde_json::Value {
    fn value(v: &AttributeValue) -> serde_json::Value {
        match v {
            AttributeValue::S(s) => serde_json::Value::String(s.clone()),
            AttributeValue::N(n) => {
                serde_json::from_str(n).unwrap_or(serde_json::Value::String(n.clone()))
            }
            AttributeValue::Bool(b) => serde_json::Value::Bool(*b),
            AttributeValue::M(m) => {
                serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), value(v))).collect())
            }
            AttributeValue::L(l) => serde_json::Value::Array(l.iter().map(value).collect()),
            _ => serde_json::Value::Null,
        }
    }
    let mut sorted: Vec<_> = item.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    serde_json::Value::Object(
        sorted
            .into_iter()
            .map(|(k, v)| (k.clone(), value(v)))
            .collect(),
    )
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn now_text() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_spread_evenly_over_the_index_shards() {
        let id_kinds: [Box<dyn Fn(usize) -> String>; 3] = [
            Box::new(|_| uuid::Uuid::new_v4().to_string()),
            Box::new(|n| format!("job-{n:05}")),
            Box::new(|n| format!("nightly:2026-12-01:{n}")),
        ];
        for make_id in id_kinds {
            let mut counts = [0u32; INDEX_SHARDS as usize];
            for n in 0..10_000 {
                counts[index_shard(&make_id(n)) as usize] += 1;
            }
            let mean = 10_000.0 / f64::from(INDEX_SHARDS);
            let busiest = f64::from(*counts.iter().max().unwrap());
            assert!(busiest <= 1.5 * mean, "{counts:?}");
        }
        assert_eq!(
            status_shard("job-1", Status::Failed).len(),
            "failed#00".len()
        );
    }

    /// The attribute names an update expression writes (`#name` after SET,
    /// REMOVE, ADD or DELETE, before `=` or `,`).
    fn written(expression: &str) -> Vec<String> {
        expression
            .split([',', ' '])
            .filter_map(|word| word.strip_prefix('#'))
            .map(str::to_owned)
            .collect()
    }

    /// The sharded index as the stack's template defines it: key attributes
    /// and projection type, read from deploy/cloudformation/ferry.yaml.
    fn index_in_template() -> (Vec<String>, String) {
        let template = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../deploy/cloudformation/ferry.yaml"),
        )
        .unwrap();
        let block: Vec<&str> = template
            .lines()
            .skip_while(|line| !line.contains(&format!("IndexName: {STATUS_INDEX}")))
            .take_while(|line| !line.contains("TimeToLiveSpecification"))
            .collect();
        assert!(!block.is_empty(), "the template has no {STATUS_INDEX}");
        let keys = block
            .iter()
            .filter_map(|line| line.split("AttributeName:").nth(1))
            .map(|rest| rest.split(',').next().unwrap().trim().to_owned())
            .collect();
        let projection = block
            .iter()
            .find_map(|line| line.split("ProjectionType:").nth(1))
            .unwrap()
            .trim()
            .to_owned();
        (keys, projection)
    }

    #[test]
    fn a_heartbeat_writes_no_index_key_and_nothing_the_index_projects() {
        let (keys, projection) = index_in_template();
        assert_eq!(keys, [STATUS_INDEX_PARTITION_KEY, STATUS_INDEX_SORT_KEY]);
        // KEYS_ONLY: the index holds its keys and the table's key, nothing else.
        assert_eq!(projection, "KEYS_ONLY");
        let in_index = [STATUS_INDEX_PARTITION_KEY, STATUS_INDEX_SORT_KEY, "job_id"];
        let heartbeat = written(RENEW_UPDATE);
        assert!(
            heartbeat.contains(&"bytes_done".to_owned()),
            "{heartbeat:?}"
        );
        for attribute in &heartbeat {
            assert!(
                !in_index.contains(&attribute.as_str()),
                "a heartbeat writes {attribute}"
            );
        }

        // Whereas every write that changes the status moves the entry.
        let moved = entering(
            aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::Config::builder()
                    .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                    .build(),
            )
            .update_item()
            .update_expression("SET #status = :failed REMOVE #lease_owner"),
            "job-1",
            Status::Failed,
        );
        let written = written(&moved.get_update_expression().clone().unwrap());
        for key in [STATUS_INDEX_PARTITION_KEY, STATUS_INDEX_SORT_KEY, "status"] {
            assert!(written.contains(&key.to_owned()), "{written:?}");
        }
    }

    /// Jobs with an expected digest write their digest state about once a
    /// part: like a heartbeat, that write must cost the index nothing.
    #[test]
    fn the_digest_state_write_touches_nothing_the_index_holds() {
        let (keys, _) = index_in_template();
        let written = written(DIGEST_STATE_UPDATE);
        assert_eq!(written, ["digest_state"]);
        assert!(!keys.contains(&written[0]) && written[0] != "job_id");
        assert!(
            CHECKPOINT_ATTRIBUTES.contains("#digest_state"),
            "removed with the checkpoint"
        );
    }
}
