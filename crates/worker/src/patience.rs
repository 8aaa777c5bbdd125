//! How the worker rides out AWS trouble above the SDK's own retries: a
//! growing, jittered pause (1 s·2^n with full jitter, capped at 60 s — the
//! throttling anchors: ScyllaDB's S3 fix and the AWS SDKs) and a bounded
//! number of tries for writes that must not be lost.

use std::future::Future;
use std::time::Duration;

use ferry_engine::ErrorClass;
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

/// Runs a DynamoDB call until it succeeds, fails for good (the lease is
/// lost, or DynamoDB refuses the request as such: see
/// [`StoreError::class`]), or failed [`RECORD_WRITE_TRIES`] times (about
/// two minutes of trouble, SDK retries included). `what` names the call in
/// the log.
pub async fn patiently<T, F, Fut>(what: &'static str, call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let permanent = |err: &StoreError| err.class() == ErrorClass::Permanent;
    retry_with(what, RECORD_WRITE_TRIES, aws_backoff, permanent, call).await
}

/// Runs `call` until it succeeds, fails with an error `is_final` accepts,
/// or failed `tries` times, pausing `backoff(failures)` in between.
pub async fn retry_with<T, E, F, Fut>(
    what: &'static str,
    tries: u32,
    backoff: fn(u32) -> Duration,
    is_final: impl Fn(&E) -> bool,
    mut call: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut failures = 0;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(err) if is_final(&err) => return Err(err),
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
    async fn final_errors_are_not_retried_and_others_are_until_the_limit() {
        let no_pause = |_| Duration::ZERO;
        let permanent = |err: &StoreError| err.class() == ErrorClass::Permanent;
        let dynamo = |permanent| StoreError::Dynamo {
            operation: "PutItem",
            message: "down".into(),
            permanent,
        };
        // A lost lease and a refusal end at once; trouble is retried.
        for (case, expected_calls) in [(0, 1), (1, 1), (2, 7)] {
            let make = || match case {
                0 => StoreError::LeaseLost,
                1 => dynamo(Some("validation")),
                _ => dynamo(None),
            };
            let mut calls = 0;
            let result: Result<(), _> = retry_with("test", 7, no_pause, permanent, || {
                calls += 1;
                let error = make();
                async move { Err(error) }
            })
            .await;
            assert!(result.is_err());
            assert_eq!(calls, expected_calls);
        }
    }
}
