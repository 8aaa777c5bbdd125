//! The end of an attempt: its outcome recorded (succeeded, failed for good,
//! retrying, cancelled, released), then the message deleted or returned —
//! always in that order, so a message is never gone before its record.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ferry_engine::{ErrorClass, Integrity, TransferError};
use tracing::{info, warn};

use super::heartbeat::{JobProgress, invisible_while};
use super::{Context, RELEASE_TIME, backoff, delete};
use crate::job::Job;
use crate::journal::LeaseJournal;
use crate::patience::patiently;
use crate::queue::{QueueError, Received};
use crate::store::{Lease, Status, StoreError};

/// What `conclude` needs to know about the attempt that just ended.
pub(super) struct Attempt<'a> {
    pub(super) lease: &'a Lease,
    pub(super) job: &'a Job,
    pub(super) progress: &'a JobProgress,
    pub(super) journal: &'a LeaseJournal,
}

impl Attempt<'_> {
    /// What all attempts of the job, this one included, fetched so far.
    fn total_fetched(&self) -> u64 {
        self.lease.fetched_before + self.progress.fetched.load(Ordering::Relaxed)
    }
}

/// Records the outcome, then deletes or returns the message.
pub(super) async fn conclude(
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
            ctx.results.job_final(&ctx.store, &attempt.job.id).await;
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
                    ctx.results.job_final(&ctx.store, &attempt.job.id).await;
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
