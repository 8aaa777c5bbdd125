//! How a message that will never run as a job ends: a `rejected` record
//! when one can be written, then the dead-letter queue (or, without one,
//! the queue's redrive policy) — never a silent delete, never a retry
//! without end that holds a job slot.
//!
//! Two kinds of message end here: one that is not a valid job
//! ([`reject`], after `job::parse`), and one whose claim DynamoDB refused
//! for good ([`unprocessable`], see `aws_error::permanent_reason`). What a
//! message means is decided elsewhere; this only ends it.

use std::time::Duration;

use ferry_engine::ErrorClass;
use tracing::warn;

use super::Context;
use super::heartbeat::invisible_while;
use crate::job::Rejection;
use crate::patience::patiently;
use crate::queue::{QueueError, Received};
use crate::store::StoreError;

/// Records and dead-letters a rejected message, keeping it invisible
/// meanwhile, as a claim does: when the record write or the DLQ send is
/// slow (retried under throttling), another receive must not reject and
/// dead-letter it again.
pub async fn reject(ctx: &Context, message: &Received, rejection: &Rejection) {
    invisible_while(ctx, message, record_and_dispose(ctx, message, rejection)).await;
}

async fn record_and_dispose(ctx: &Context, message: &Received, rejection: &Rejection) {
    let recorded = patiently("the rejection record write", || ctx.store.reject(rejection)).await;
    let recorded = match recorded {
        Ok(written) => {
            // Counted once the rejection is recorded: a message that comes
            // back for another try is not a second rejected job.
            metrics::counter!("ferry_jobs_total", "outcome" => "rejected").increment(1);
            ctx.results.job_final(&ctx.store, &rejection.job_id).await;
            written
        }
        Err(err) if err.class() == ErrorClass::Transient => {
            // Dead-lettered now, the job would have no record: the message
            // comes back for another try once its visibility lapses (the
            // queue's redrive policy is the backstop).
            metrics::counter!("ferry_store_errors_total").increment(1);
            warn!(
                error_kind = rejection.kind, error = %rejection, store_error = %err,
                "rejected message not recorded; it stays on the queue for another try"
            );
            return;
        }
        Err(err) => {
            // Refused for good: another try would be refused the same way.
            metrics::counter!("ferry_store_errors_total").increment(1);
            warn!(
                error_kind = rejection.kind, error = %rejection, store_error = %err,
                "rejected message cannot be recorded; dead-lettering it without a record"
            );
            false
        }
    };
    match dispose(ctx, message, &rejection.reason).await {
        Ok(disposal) => warn!(
            error_kind = rejection.kind, error = %rejection, recorded, disposal,
            "rejected message"
        ),
        Err(err) => warn!(
            error_kind = rejection.kind, error = %rejection, recorded, queue_error = %err,
            "rejected message; it stays on the queue"
        ),
    }
}

/// Ends a message whose claim DynamoDB refused for good (`refused` is
/// permanent: invalid, too large, no such table, access denied …). Tried
/// once more it would be refused again, so the message is recorded as
/// `rejected` (`store_refused`) when that write goes through — the same
/// refusal may meet it — and dead-lettered either way. The worker's
/// readiness counts it (`/readyz`, docs/operations.md).
pub async fn unprocessable(ctx: &Context, message: &Received, job_id: &str, refused: &StoreError) {
    let reason = refused.permanent_reason().unwrap_or("refused");
    metrics::counter!("ferry_messages_unprocessable_total", "reason" => reason).increment(1);
    crate::metrics::health().claim_refused();
    let rejection = Rejection {
        job_id: job_id.to_owned(),
        kind: "store_refused",
        reason: format!("DynamoDB refused the job's claim for good: {refused}"),
    };
    invisible_while(ctx, message, async {
        // A record that exists for another reason (a job that is running,
        // retrying or finished under this id) is left as it is.
        let recorded = patiently("the rejection record write", || ctx.store.reject(&rejection)).await;
        let store_error = recorded.as_ref().err().map(ToString::to_string);
        let recorded = matches!(recorded, Ok(true));
        match dispose(ctx, message, &rejection.reason).await {
            Ok(disposal) => warn!(
                error_kind = rejection.kind, error = %refused, reason, recorded, ?store_error,
                disposal, "DynamoDB refused the claim for good; message given up"
            ),
            Err(err) => warn!(
                error_kind = rejection.kind, error = %refused, reason, recorded, ?store_error,
                queue_error = %err,
                "DynamoDB refused the claim for good; the message stays on the queue for its redrive policy"
            ),
        }
    })
    .await;
}

/// Moves the message to the DLQ (with `reason` as its `ferry_rejection`
/// attribute) and deletes it here; without a DLQ, makes it visible again
/// for the queue's redrive policy, which moves it after `maxReceiveCount`
/// receives. Says which it did.
///
/// A DLQ that refuses the send for good (deleted, access denied, its KMS
/// key unusable) is the worker's problem, not the message's: sending again
/// at every receive would change nothing. The message is then left for the
/// redrive policy too, but parked (see [`park`]) so that it comes back
/// rarely instead of at every visibility timeout; each return tries the
/// DLQ once more, in case it was mended. Counted in
/// `ferry_dead_letters_refused_total{reason}`.
async fn dispose(
    ctx: &Context,
    message: &Received,
    reason: &str,
) -> Result<&'static str, QueueError> {
    match &ctx.config.dlq_url {
        Some(dlq) => match ctx.queue.dead_letter(dlq, message, reason).await {
            Ok(()) => {
                ctx.queue.delete(message).await?;
                Ok("moved to the dead-letter queue")
            }
            Err(err) => {
                let Some(refused) = err.permanent_reason() else {
                    return Err(err);
                };
                metrics::counter!("ferry_dead_letters_refused_total", "reason" => refused)
                    .increment(1);
                let back_in = park(ctx, message);
                warn!(
                    queue_error = %err, reason = refused, back_in_secs = back_in.as_secs(),
                    "the dead-letter queue refused the message for good; it is left for the queue's redrive policy"
                );
                ctx.queue.set_visibility(message, back_in).await?;
                Ok("refused by the dead-letter queue; left for the queue's redrive policy")
            }
        },
        None => {
            ctx.queue.set_visibility(message, Duration::ZERO).await?;
            Ok("left for the queue's redrive policy")
        }
    }
}

/// How long a message the DLQ refused stays invisible: the busy recheck
/// (at least five minutes by default, as for a job running elsewhere), so
/// that the queue's redrive policy moves it after `maxReceiveCount` such
/// returns, never past SQS's 12-hour cap on one receive.
fn park(ctx: &Context, message: &Received) -> Duration {
    let config = &ctx.config;
    let left = config
        .visibility_cap
        .saturating_sub(message.received_at.elapsed() + config.heartbeat * 3);
    config.busy_recheck.min(left)
}
