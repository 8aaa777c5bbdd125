//! One job, start to end: parse → claim → engine (with a heartbeat) → record →
//! delete or release the message. Every path ends in a recorded job state, a
//! metric and one log line.
//!
//! Over 500 lines (issue 30 leaves it for a later split): the claim loop, the
//! heartbeat and the visibility keeper, and the conclusion of each outcome
//! share one message and one lease, and each ordering rule (record before
//! delete, fenced record before abort) lives where the paths meet.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ferry_engine::admission::Deciding;
use ferry_engine::{
    Engine, ErrorClass, Integrity, Observer, PartDone, Progress, RetrySide, TransferError,
};
use rand::Rng as _;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, info_span, warn};

use crate::config::WorkerConfig;
use crate::disposal;
use crate::job::{self, Job, Rejection};
use crate::journal::LeaseJournal;
use crate::patience::{self, patiently};
use crate::queue::{self, Queue, QueueError, Received};
use crate::store::{Claim, JobStore, Lease, Status, StoreError};

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
        Claim::Acquired(lease) => lease,
        Claim::Final(status) => {
            metrics::counter!("ferry_jobs_duplicate_total").increment(1);
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

/// What `conclude` needs to know about the attempt that just ended.
struct Attempt<'a> {
    lease: &'a Lease,
    job: &'a Job,
    progress: &'a JobProgress,
    journal: &'a LeaseJournal,
}

impl Attempt<'_> {
    /// What all attempts of the job, this one included, fetched so far.
    fn total_fetched(&self) -> u64 {
        self.lease.fetched_before + self.progress.fetched.load(Ordering::Relaxed)
    }
}

/// Records the outcome, then deletes or returns the message.
async fn conclude(
    ctx: &Context,
    message: &Received,
    attempt: &Attempt<'_>,
    result: Result<ferry_engine::TransferOutcome, TransferError>,
) {
    let config = &ctx.config;
    let lease = attempt.lease;
    let total_fetched = attempt.total_fetched();
    match result {
        Ok(outcome) => {
            let recorded = invisible_while(
                ctx,
                message,
                patiently("the job record write", || {
                    ctx.store.succeed(lease, &outcome, total_fetched)
                }),
            )
            .await;
            if let Err(err) = recorded {
                // The object is stored, but without a final record the message
                // must come back so the job ends in a recorded state.
                warn!(error = %err, "transfer succeeded but the record could not be written");
                return;
            }
            metrics::counter!("ferry_jobs_total", "outcome" => "succeeded").increment(1);
            let deleted = delete(ctx, message).await;
            // Bytes fetched more than once: retried ranges, and parts earlier
            // attempts fetched but did not finish.
            metrics::counter!("ferry_refetched_bytes_total")
                .increment(total_fetched.saturating_sub(outcome.size));
            metrics::histogram!("ferry_job_duration_seconds")
                .record(outcome.duration.as_secs_f64());
            if outcome.integrity == Integrity::Unframed {
                // Nothing marked the body's end: a cut connection would have
                // looked the same. The record says so (source_integrity).
                metrics::counter!("ferry_source_unframed_total").increment(1);
                warn!(
                    size = outcome.size,
                    "the source's body ended with its connection: its length is unverified"
                );
            }
            let secs = outcome.duration.as_secs_f64();
            info!(
                size = outcome.size, secs = format!("{secs:.3}"),
                mbps = format!("{:.1}", outcome.size as f64 / secs.max(1e-6) / 1e6),
                parts = outcome.parts, retries = outcome.retries,
                parts_reused = outcome.parts_reused, bytes_fetched = total_fetched,
                integrity = outcome.integrity.as_str(),
                checksum = %outcome.checksum_crc64nvme, deleted = deleted.is_ok(),
                "succeeded"
            );
        }
        Err(err) if err.class() == ErrorClass::Cancelled => {
            // Shutdown grace ran out (or no successor could be sent at the
            // 12-hour visibility cap): hand the job back so another worker
            // can take it at once, under a successor message so that
            // releases never use up the queue's maxReceiveCount.
            // Bounded: after the grace period ECS kills the task soon. A
            // release that does not make it only delays the job until its
            // lease and the message's visibility run out.
            let released =
                tokio::time::timeout(RELEASE_TIME, ctx.store.release(lease, total_fetched))
                    .await
                    .unwrap_or_else(|_| {
                        Err(StoreError::Dynamo {
                            operation: "UpdateItem",
                            message: "release timed out".into(),
                            permanent: None,
                        })
                    });
            let visible = tokio::time::timeout(RELEASE_TIME, async {
                match ctx
                    .queue
                    .hand_off(message, &lease.job_id, Duration::ZERO)
                    .await
                {
                    Ok(()) => Ok(()),
                    Err(_) => ctx.queue.set_visibility(message, Duration::ZERO).await,
                }
            })
            .await
            .unwrap_or_else(|_| {
                Err(QueueError {
                    operation: "ChangeMessageVisibility",
                    message: "timed out".into(),
                    permanent: None,
                })
            });
            metrics::counter!("ferry_jobs_total", "outcome" => "released").increment(1);
            // (`message` would clash with the log line's own `message` key.)
            info!(
                record_written = released.is_ok(),
                message_visible = visible.is_ok(),
                upload_kept = attempt.journal.upload_id().is_some(),
                "released"
            );
        }
        Err(err) => {
            let permanent = err.class() == ErrorClass::Permanent;
            // Failed attempts count towards giving up, this one included;
            // starts do not (a release at a deploy is no failure). AWS being
            // throttled or down is not the job's fault: such an attempt never
            // makes the job `failed` (the queue's redrive policy stays the
            // backstop for an outage without end).
            let failures = lease.failures_before.saturating_add(1);
            let gave_up = permanent || (failures >= config.max_attempts && !err.is_aws_side());
            let (status, error) = match (gave_up, permanent) {
                (false, _) => (Status::Retrying, err.to_string()),
                (true, true) => (Status::Failed, err.to_string()),
                (true, false) => (
                    Status::Failed,
                    format!("{err} (gave up after {failures} failed attempts)"),
                ),
            };
            let recorded = invisible_while(
                ctx,
                message,
                patiently("the job record write", || {
                    ctx.store
                        .record_error(lease, status, (err.kind(), &error), total_fetched)
                }),
            )
            .await;
            if matches!(recorded, Err(StoreError::LeaseLost)) {
                // Another worker took the job over while this attempt ran
                // (no renewal had come round to tell this one). The record,
                // the message and the upload it may be resuming are its own
                // now: aborting that upload here would fail its run.
                metrics::counter!("ferry_lease_losses_total").increment(1);
                warn!(
                    error_kind = err.kind(), error = %err,
                    "lease lost to another worker before this attempt's end was recorded; the job is left to it"
                );
                return;
            }
            if gave_up {
                if recorded.is_ok() {
                    // Only now, the fenced record written (so the lease was
                    // still ours), may the upload kept for resuming go: no
                    // later attempt will use it. A record not written leaves
                    // it to the next attempt (the message comes back, the
                    // checkpoint is still there) or to `ferry gc`.
                    if let Some(upload_id) = attempt.journal.upload_id() {
                        let dest = &attempt.job.spec.destination;
                        if let Err(abort) = ctx.engine.abort_upload(dest, &upload_id).await {
                            warn!(error = %abort, "could not abort the job's multipart upload");
                        }
                    }
                    let _ = delete(ctx, message).await;
                }
                metrics::counter!("ferry_jobs_total", "outcome" => "failed").increment(1);
                warn!(error_kind = err.kind(), error = %error, recorded = recorded.is_ok(), "failed");
            } else {
                let delay = backoff(config.retry_base_delay, failures);
                let _ = ctx.queue.set_visibility(message, delay).await;
                metrics::counter!("ferry_jobs_total", "outcome" => "retrying").increment(1);
                warn!(
                    error_kind = err.kind(), error = %err, attempt = lease.attempts,
                    retry_in_secs = delay.as_secs(), recorded = recorded.is_ok(),
                    "will retry"
                );
            }
        }
    }
}

/// Keeps the job's lease alive (recording progress) and its message
/// invisible; stops the job at once if the lease was taken over. The two run
/// side by side: a slow SQS call must not starve the lease, nor the reverse.
async fn heartbeat(
    ctx: &Context,
    message: &Received,
    beat: &Beat<'_>,
    job_cancel: &CancellationToken,
    stop: &CancellationToken,
) {
    tokio::join!(
        renew_lease(ctx, beat, job_cancel, stop),
        keep_invisible(ctx, message, Some(&beat.lease.job_id), job_cancel, stop),
    );
}

/// What the lease renewals read and report.
struct Beat<'a> {
    lease: &'a Lease,
    progress: &'a JobProgress,
    journal: &'a LeaseJournal,
    /// Set (once) when a renewal finds that a user cancelled the job.
    cancelled_by: &'a OnceLock<String>,
}

async fn renew_lease(
    ctx: &Context,
    beat: &Beat<'_>,
    job_cancel: &CancellationToken,
    stop: &CancellationToken,
) {
    let Beat {
        lease,
        progress,
        journal,
        cancelled_by,
    } = beat;
    let config = &ctx.config;
    let mut ticks = tokio::time::interval(config.heartbeat);
    ticks.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let sent_at = Instant::now();
        let fetched = lease.fetched_before + progress.fetched.load(Ordering::Relaxed);
        // A hung or slow renewal must not hold the job's end back.
        let renewed = tokio::select! {
            () = stop.cancelled() => return,
            renewed = ctx.store.renew(
                lease,
                config.lease,
                progress.done.load(Ordering::Relaxed),
                progress.total(),
                fetched,
            ) => renewed,
        };
        match renewed {
            Ok(()) => journal.renewed(sent_at),
            Err(StoreError::LeaseLost) => {
                journal.lease_lost();
                job_cancel.cancel();
                return;
            }
            Err(StoreError::CancelRequested { by }) => {
                info!(cancelled_by = %by, "cancel requested; stopping the job");
                let _ = cancelled_by.set(by);
                job_cancel.cancel();
                return;
            }
            Err(err) => warn!(error = %err, "could not renew lease"),
        }
    }
}

/// Extends the message's visibility when its deadline comes near, never
/// past SQS's cap: there a running job (`job_id`) goes on under a successor
/// message, handed off to be looked at after the busy recheck (it finds the
/// job running, or final); only if no successor can be sent is the job
/// released to resume with a new receive. Looks at once, then every
/// heartbeat: a phase that starts late in the message's visibility (a final
/// record after a long transfer) is covered from its first moment.
async fn keep_invisible(
    ctx: &Context,
    message: &Received,
    job_id: Option<&str>,
    job_cancel: &CancellationToken,
    stop: &CancellationToken,
) {
    let config = &ctx.config;
    let mut ticks = tokio::time::interval(config.heartbeat);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let remaining = message
            .visible_until()
            .saturating_duration_since(Instant::now());
        if remaining >= config.heartbeat * 3 {
            continue;
        }
        let elapsed = message.received_at.elapsed();
        if elapsed + config.visibility + config.heartbeat * 3 >= config.visibility_cap {
            let Some(job_id) = job_id else {
                job_cancel.cancel();
                return;
            };
            let delay = config.busy_recheck.min(queue::MAX_DELAY);
            let handed = tokio::select! {
                () = stop.cancelled() => return,
                handed = ctx.queue.hand_off(message, job_id, delay) => handed,
            };
            match handed {
                Ok(()) => info!(
                    recheck_secs = delay.as_secs(),
                    "visibility cap near; the job goes on, handed off to a successor message"
                ),
                Err(err) => {
                    warn!(error = %err, "visibility cap near and no successor sent; releasing the job");
                    job_cancel.cancel();
                }
            }
            return;
        }
        let extended = tokio::select! {
            () = stop.cancelled() => return,
            extended = ctx.queue.set_visibility(message, config.visibility) => extended,
        };
        match extended {
            Ok(()) => {}
            // No such receipt handle, message or queue any more, or not
            // allowed: asking again every heartbeat would change nothing.
            Err(err) if err.class() == ErrorClass::Permanent => {
                warn!(error = %err, "SQS refused to extend message visibility for good; no more extensions");
                return;
            }
            Err(err) => warn!(error = %err, "could not extend message visibility"),
        }
    }
}

/// Runs `work` while keeping the message invisible, as the heartbeat does
/// during a transfer: a claim, a final record or a dead-lettering that SQS
/// or DynamoDB hold up (throttled, retried) must not let another receive be
/// handed the message meanwhile. The extensions stop before `work`'s result
/// is returned, so a visibility change that follows it is the last one.
pub(crate) async fn invisible_while<T>(
    ctx: &Context,
    message: &Received,
    work: impl Future<Output = T>,
) -> T {
    let done = CancellationToken::new();
    let working = async {
        let result = work.await;
        done.cancel();
        result
    };
    // Near SQS's 12-hour cap (a final record after a job that ran that long)
    // the keeper stops extending; the message may then come back, and its
    // next receive finds the job final (deleted as a duplicate) or its lease
    // held (deferred). Nothing is lost either way.
    let unused = CancellationToken::new();
    let (result, ()) = tokio::join!(working, keep_invisible(ctx, message, None, &unused, &done));
    result
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

/// Progress of one job as the engine reports it; read by the heartbeat.
#[derive(Default)]
pub struct JobProgress {
    /// This job's share of the process-wide parts-in-flight gauge.
    parts_in_flight: AtomicU64,
    done: AtomicU64,
    /// `u64::MAX` while unknown.
    total: AtomicU64,
    /// Bytes this attempt received from the source.
    fetched: AtomicU64,
}

impl JobProgress {
    fn total(&self) -> Option<u64> {
        let total = self.total.load(Ordering::Relaxed);
        (total != u64::MAX && total != 0).then_some(total)
    }
}

impl Observer for JobProgress {
    fn on_start(&self, bytes_total: Option<u64>) {
        self.total
            .store(bytes_total.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn on_downloaded(&self, bytes: u64) {
        self.fetched.fetch_add(bytes, Ordering::Relaxed);
        metrics::counter!("ferry_downloaded_bytes_total").increment(bytes);
    }

    fn on_progress(&self, progress: Progress) {
        self.done.store(progress.bytes_done, Ordering::Relaxed);
    }

    fn on_part_done(&self, part: PartDone) {
        metrics::counter!("ferry_uploaded_bytes_total").increment(part.len);
        metrics::histogram!("ferry_part_download_seconds").record(part.download.as_secs_f64());
        metrics::histogram!("ferry_part_upload_seconds").record(part.upload.as_secs_f64());
    }

    fn on_retry(&self, side: RetrySide, error: &TransferError, attempt: u32) {
        metrics::counter!("ferry_retries_total", "side" => side.as_str()).increment(1);
        info!(side = side.as_str(), attempt, error = %error, "part retried");
    }

    fn on_parts_in_flight(&self, count: usize) {
        let before = self.parts_in_flight.swap(count as u64, Ordering::Relaxed);
        metrics::gauge!("ferry_parts_in_flight").increment(count as f64 - before as f64);
    }

    fn on_memory_wait(&self, waited: Duration) {
        metrics::histogram!("ferry_memory_wait_seconds").record(waited.as_secs_f64());
    }
}
