//! One job, start to end: parse → claim → engine (with a heartbeat) → record →
//! delete or release the message. Every path ends in a recorded job state, a
//! metric and one log line.
//!
//! Here: the path of one message (`handle`, `run`), the claim loop and a
//! user's cancel; `heartbeat` keeps the lease and the message while the
//! engine runs; `conclude` records how the attempt ended, then deletes or
//! returns the message; `disposal` ends a message that will never run (not
//! a valid job, or a claim DynamoDB refused for good). Each ordering rule
//! (record before delete, fenced record before abort) lives in the one
//! function where its paths meet.

mod conclude;
mod disposal;
mod heartbeat;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ferry_engine::admission::Deciding;
use ferry_engine::{Engine, ErrorClass};
use rand::Rng as _;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, info_span, warn};

use self::conclude::{Attempt, conclude};
pub use self::heartbeat::JobProgress;
use self::heartbeat::{Beat, heartbeat, invisible_while};
use crate::config::WorkerConfig;
use crate::job::{self, Job, Rejection};
use crate::journal::LeaseJournal;
use crate::patience::{self, patiently};
use crate::queue::{self, Queue, QueueError, Received};
use crate::results::Publisher;
use crate::store::{Claim, JobStore, Lease, StoreError};

/// How long each of a release's two writes may take: the shutdown grace
/// (at most 110 s) plus this stays within ECS's 120 s stopTimeout.
const RELEASE_TIME: Duration = Duration::from_secs(4);

/// Receives of a message whose job runs elsewhere before it is handed off to
/// a successor: well under any sane `maxReceiveCount` (the stack's is 10).
const HANDOFF_AFTER_RECEIVES: u32 = 3;

/// What every job of one worker shares.
pub struct Context {
    pub config: WorkerConfig,
    pub queue: Queue,
    pub store: JobStore,
    pub engine: Engine,
    /// Publishes final records (result events), when configured.
    pub results: Publisher,
}

/// Handles one received message completely. `stop` fires when the shutdown
/// grace period is over: the job is then released for another worker.
/// `deciding` counts the job as one that may turn out large (see
/// `worker::batch_size`) until its transfer knows, or it ends sooner.
pub async fn handle(
    ctx: Arc<Context>,
    message: Received,
    stop: CancellationToken,
    deciding: Deciding,
) {
    let parsed = job::parse(&message.body, &message.message_id).and_then(|job| {
        if crate::config::destination_allowed(
            &ctx.config.destinations,
            &job.spec.destination.bucket,
            &job.spec.destination.key,
        ) {
            Ok(job)
        } else {
            Err(Rejection {
                job_id: job.id,
                kind: "destination_not_allowed",
                reason: "the destination bucket or key prefix is not in FERRY_ALLOWED_BUCKETS"
                    .into(),
            })
        }
    });
    match parsed {
        Ok(job) => {
            let span = info_span!("job", job_id = %job.id);
            run(&ctx, message, job, stop, deciding)
                .instrument(span)
                .await;
        }
        Err(rejection) => {
            // Never a transfer: the next receive need not wait for it,
            // however long recording and dead-lettering it take.
            drop(deciding);
            let span = info_span!("job", job_id = %rejection.job_id);
            disposal::reject(&ctx, &message, &rejection)
                .instrument(span)
                .await;
        }
    }
}

async fn run(
    ctx: &Context,
    message: Received,
    job: Job,
    stop: CancellationToken,
    deciding: Deciding,
) {
    let config = &ctx.config;
    let Some((claimed, claim_sent)) = claim(ctx, &message, &job, &stop).await else {
        return;
    };
    let lease = match claimed {
        Claim::Acquired(lease) => *lease,
        Claim::Final(status) => {
            metrics::counter!("ferry_jobs_duplicate_total").increment(1);
            // Published again (the same event id): the worker that made it
            // final may have died before it published.
            ctx.results.job_final(&ctx.store, &job.id).await;
            let deleted = delete(ctx, &message).await;
            info!(
                status = status.as_str(),
                deleted = deleted.is_ok(),
                "job already finished; duplicate message deleted"
            );
            return;
        }
        Claim::Busy { expires_in } => {
            metrics::counter!("ferry_jobs_duplicate_total").increment(1);
            // An owner that missed two renewals has probably died: look again
            // just after its lease lapses, so the job resumes within about one
            // lease period. A freshly renewed lease means a live owner and
            // this message a duplicate: look rarely, so it does not use up the
            // queue's maxReceiveCount and land in the DLQ early.
            let (recheck, owner_alive) = match expires_in {
                Some(left) if left + config.heartbeat * 2 <= config.lease => (
                    (left + Duration::from_secs(1)).min(config.busy_recheck),
                    false,
                ),
                _ => (config.busy_recheck, true),
            };
            // A job that runs for days sees its message come back again and
            // again: past a few receives it moves to a successor, whose
            // receive count starts again (see `queue`'s module docs).
            let handed_off = owner_alive
                && message.receive_count >= HANDOFF_AFTER_RECEIVES
                && ctx
                    .queue
                    .hand_off(&message, &job.id, recheck.min(queue::MAX_DELAY))
                    .await
                    .is_ok();
            if !handed_off {
                let _ = ctx.queue.set_visibility(&message, recheck).await;
            }
            info!(
                recheck_secs = recheck.as_secs(),
                handed_off, "job is running on another worker; message deferred"
            );
            return;
        }
    };
    if let Some(by) = &lease.cancel_requested_by {
        // Cancelled while an earlier owner ran it, which died before acting.
        let upload_id = lease.checkpoint.as_ref().map(|c| c.upload_id.clone());
        finish_cancelled(ctx, &message, &lease, &job, upload_id, by).await;
        return;
    }
    info!(
        attempt = lease.attempts, url = %job.shown_url,
        bucket = %job.spec.destination.bucket, key = %job.spec.destination.key,
        checkpoint = lease.checkpoint.is_some(),
        "claimed"
    );
    metrics::gauge!("ferry_jobs_in_flight").increment(1.0);
    let progress = Arc::new(JobProgress::default());
    let job_cancel = stop.child_token();
    let heartbeat_stop = CancellationToken::new();
    let lease_lost = Arc::new(AtomicBool::new(false));
    let cancelled_by = OnceLock::new();
    let journal = Arc::new(LeaseJournal::new(
        ctx.store.clone(),
        lease.clone(),
        &job.spec.destination,
        config.lease,
        config.keep_part_checksums,
        claim_sent,
        Arc::clone(&lease_lost),
    ));
    let beat = Beat {
        lease: &lease,
        progress: &progress,
        journal: &journal,
        cancelled_by: &cancelled_by,
    };
    let heartbeat = heartbeat(ctx, &message, &beat, &job_cancel, &heartbeat_stop);
    let transfer = async {
        let result = ctx
            .engine
            .transfer_resumable(
                &job.spec,
                lease.checkpoint.clone(),
                journal.clone(),
                progress.clone(),
                &job_cancel,
                Some(deciding),
            )
            .await;
        heartbeat_stop.cancel();
        result
    };
    let (result, ()) = tokio::join!(transfer, heartbeat);
    metrics::gauge!("ferry_jobs_in_flight").decrement(1.0);
    if lease_lost.load(Ordering::SeqCst) {
        metrics::counter!("ferry_lease_losses_total").increment(1);
        warn!("lease lost to another worker; this worker stopped the job");
        return;
    }
    if let (Some(by), Err(_)) = (cancelled_by.get(), &result) {
        finish_cancelled(ctx, &message, &lease, &job, journal.upload_id(), by).await;
        return;
    }
    let attempt = Attempt {
        lease: &lease,
        job: &job,
        progress: &progress,
        journal: &journal,
    };
    conclude(ctx, &message, &attempt, result).await;
}

/// Ends a job a user cancelled: the record `cancelled`, then its upload
/// aborted (so no object appears and none is left open), the message
/// deleted. The record comes first: written (it is fenced), it proves the
/// lease was still this worker's; a worker that lost the lease without
/// knowing must not abort an upload its successor may be resuming.
async fn finish_cancelled(
    ctx: &Context,
    message: &Received,
    lease: &Lease,
    job: &Job,
    upload_id: Option<String>,
    by: &str,
) {
    let recorded = invisible_while(
        ctx,
        message,
        patiently("the job record write", || {
            ctx.store.record_cancelled(lease, by)
        }),
    )
    .await;
    if let Err(err) = &recorded {
        warn!(error = %err, "job cancelled but the record could not be written");
        return;
    }
    let mut upload_aborted = None;
    if let Some(upload_id) = upload_id {
        // `ferry gc` aborts it later if this does not make it: the job is final.
        let aborted = ctx
            .engine
            .abort_upload(&job.spec.destination, &upload_id)
            .await;
        if let Err(err) = &aborted {
            warn!(error = %err, "could not abort the cancelled job's multipart upload");
        }
        upload_aborted = Some(aborted.is_ok());
    }
    ctx.results.job_final(&ctx.store, &job.id).await;
    let deleted = delete(ctx, message).await;
    metrics::counter!("ferry_jobs_total", "outcome" => "cancelled").increment(1);
    info!(
        cancelled_by = by,
        ?upload_aborted,
        deleted = deleted.is_ok(),
        "cancelled"
    );
}

/// Claims the job, retrying for as long as DynamoDB fails (throttled or
/// down) with a growing, jittered pause. Meanwhile the message is kept
/// invisible, as while the job runs: waiting here costs no receive (so it
/// never uses up the queue's `maxReceiveCount`), and no other worker is
/// handed the message only to defer it. Returns the claim and when its
/// request was sent, or `None` when `stop` fired first (the message is then
/// released) or DynamoDB refused the claim for good (the message is then
/// given up: recorded if possible and dead-lettered, never retried here).
async fn claim(
    ctx: &Context,
    message: &Received,
    job: &Job,
    stop: &CancellationToken,
) -> Option<(Claim, Instant)> {
    let result = invisible_while(ctx, message, claim_until_done(ctx, job, stop)).await;
    match result {
        Ok(Some(claimed)) => Some(claimed),
        Ok(None) => {
            let release = ctx.queue.set_visibility(message, Duration::ZERO);
            let _ = tokio::time::timeout(RELEASE_TIME, release).await;
            None
        }
        Err(refused) => {
            disposal::unprocessable(ctx, message, &job.id, &refused).await;
            None
        }
    }
}

/// The claim, `None` when `stop` fired, or the error with which DynamoDB
/// refused it for good: no retry can change that answer, and waiting for
/// one would hold the job slot forever.
async fn claim_until_done(
    ctx: &Context,
    job: &Job,
    stop: &CancellationToken,
) -> Result<Option<(Claim, Instant)>, StoreError> {
    let config = &ctx.config;
    let mut failures = 0u32;
    // One token for every try: a retry finds it on a claim that was applied
    // with its reply lost.
    let token = uuid::Uuid::new_v4().to_string();
    loop {
        let sent = Instant::now();
        let result = tokio::select! {
            () = stop.cancelled() => return Ok(None),
            result = ctx.store.claim(job, &config.worker_id, config.lease, &token) => result,
        };
        metrics::counter!("ferry_store_errors_total").increment(u64::from(result.is_err()));
        let err = match result {
            Ok(claim) => {
                crate::metrics::health().claim_answered();
                return Ok(Some((claim, sent)));
            }
            Err(err) if err.class() == ErrorClass::Permanent => return Err(err),
            Err(err) => err,
        };
        failures += 1;
        let pause = patience::aws_backoff(failures);
        warn!(error = %err, failures, retry_in_ms = pause.as_millis() as u64, "could not claim job; retrying");
        tokio::select! {
            () = stop.cancelled() => return Ok(None),
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Deletes a finished job's message, riding out SQS trouble for a while: a
/// message that comes back costs a receive (towards `maxReceiveCount`). A
/// delete SQS refuses for good (an invalid receipt handle, no such queue,
/// access denied) is tried once: the message comes back, finds the job
/// final and is deleted then, or ends in the queue's redrive policy.
async fn delete(ctx: &Context, message: &Received) -> Result<(), QueueError> {
    patience::retry_with(
        "message delete",
        5,
        patience::aws_backoff,
        |err: &QueueError| err.class() == ErrorClass::Permanent,
        || ctx.queue.delete(message),
    )
    .await
}

/// Exponential backoff with full jitter, capped at 15 minutes.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let ceiling = base
        .saturating_mul(1 << attempt.saturating_sub(1).min(10))
        .min(Duration::from_secs(900));
    let low = ceiling / 2;
    rand::rng().random_range(low..=ceiling)
}
