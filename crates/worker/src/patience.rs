//! How the worker rides out AWS trouble above the SDK's own retries: a
//! growing, jittered pause (1 s·2^n with full jitter, capped at 60 s — the
//! throttling anchors: ScyllaDB's S3 fix and the AWS SDKs) and a bounded
//! number of tries for writes that must not be lost.

use std::future::Future;
use std::time::Duration;

use rand::Rng as _;
use tracing::warn;

use crate::store::StoreError;

/// Tries of a job-record write before the job is left to its message
/// coming back (each try already includes the SDK's adaptive retries).
const RECORD_WRITE_TRIES: u32 = 7;

/// The pause after the `failures`-th consecutive AWS-side failure.
pub fn aws_backoff(failures: u32) -> Duration {
    let ceiling = Duration::from_secs(1)
        .saturating_mul(1 << failures.saturating_sub(1).min(6))
        .min(Duration::from_secs(60));
    rand::rng().random_range(Duration::from_millis(100)..=ceiling)
}

/// Runs a DynamoDB call until it succeeds, the lease is lost, or it failed
/// [`RECORD_WRITE_TRIES`] times (about two minutes of trouble, SDK retries
/// included). `what` names the call in the log.
pub async fn patiently<T, F, Fut>(what: &'static str, call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    retry_with(what, RECORD_WRITE_TRIES, aws_backoff, call).await
}

async fn retry_with<T, F, Fut>(
    what: &'static str,
    tries: u32,
    backoff: fn(u32) -> Duration,
    mut call: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut failures = 0;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(StoreError::LeaseLost) => return Err(StoreError::LeaseLost),
            Err(err) => {
                failures += 1;
                if failures >= tries {
                    return Err(err);
                }
                let pause = backoff(failures);
                warn!(error = %err, failures, retry_in_ms = pause.as_millis() as u64, "{what} failed; retrying");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_a_minute_and_never_beyond() {
        for failures in 1..30 {
            let pause = aws_backoff(failures);
            assert!(pause >= Duration::from_millis(100));
            assert!(pause <= Duration::from_secs(60));
        }
        assert!((0..100).all(|_| aws_backoff(1) <= Duration::from_secs(1)));
    }

    #[tokio::test]
    async fn a_lost_lease_is_not_retried_and_other_errors_are_until_the_limit() {
        let mut calls = 0;
        let result: Result<(), _> = retry_with(
            "test",
            7,
            |_| Duration::ZERO,
            || {
                calls += 1;
                async { Err(StoreError::LeaseLost) }
            },
        )
        .await;
        assert!(matches!(result, Err(StoreError::LeaseLost)));
        assert_eq!(calls, 1);
        let mut calls = 0;
        let result: Result<(), _> = retry_with(
            "test",
            7,
            |_| Duration::ZERO,
            || {
                calls += 1;
                async {
                    Err(StoreError::Dynamo {
                        operation: "PutItem",
                        message: "down".into(),
                    })
                }
            },
        )
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 7);
    }
}
