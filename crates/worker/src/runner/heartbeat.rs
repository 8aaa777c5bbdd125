//! While a job runs: its lease renewed with the progress the engine reports
//! ([`JobProgress`]), and its message kept invisible (handed off to a successor
//! at SQS's visibility cap). A lease taken over stops the job at once.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_engine::{ErrorClass, Observer, PartDone, Progress, RetrySide, TransferError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Context;
use crate::journal::LeaseJournal;
use crate::queue::{self, Received};
use crate::store::{Lease, StoreError};

/// Keeps the job's lease alive (recording progress) and its message
/// invisible; stops the job at once if the lease was taken over. The two run
/// side by side: a slow SQS call must not starve the lease, nor the reverse.
pub(super) async fn heartbeat(
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
pub(super) struct Beat<'a> {
    pub(super) lease: &'a Lease,
    pub(super) progress: &'a JobProgress,
    pub(super) journal: &'a LeaseJournal,
    /// Set (once) when a renewal finds that a user cancelled the job.
    pub(super) cancelled_by: &'a OnceLock<String>,
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
        let renewal = ctx.store.renew(
            lease,
            config.lease,
            progress.done.load(Ordering::Relaxed),
            progress.total(),
            fetched,
        );
        // A hung or slow renewal must not hold the job's end back, nor the
        // lease: one unanswered after two beats is dropped for a fresh one.
        // The SDK may hold a try back for seconds (an attempt timeout; after
        // throttling its rate limiter charges a retry five first tries), a
        // fresh request goes first, and the dropped one, if it is applied
        // after all, cannot shorten the lease (`JobStore::renew`).
        let renewed = tokio::select! {
            () = stop.cancelled() => return,
            renewed = tokio::time::timeout(config.heartbeat * 2, renewal) => renewed,
        };
        let Ok(renewed) = renewed else {
            warn!("lease renewal unanswered after two heartbeats; sending a fresh one");
            continue;
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
pub(super) async fn invisible_while<T>(
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

/// Progress of one job as the engine reports it; read by the heartbeat.
#[derive(Default)]
pub struct JobProgress {
    /// This job's share of the process-wide parts-in-flight gauge.
    parts_in_flight: AtomicU64,
    done: AtomicU64,
    /// `u64::MAX` while unknown.
    total: AtomicU64,
    /// Bytes this attempt received from the source.
    pub(super) fetched: AtomicU64,
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
