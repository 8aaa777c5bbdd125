//! Exponential backoff with full jitter, for transient errors only.
//!
//! Throttling is not a failure: an S3 throttle (SlowDown, 503) is retried
//! with its own longer backoff (1 s base, 60 s cap) and never uses up an
//! attempt, so a storm of any length delays a request but cannot fail it.
//! Other AWS-side trouble (5xx, timeouts, resets) is retried past
//! `max_attempts` for as long as `aws_patience` allows, counted from the
//! call's first failure: S3 being briefly down does not fail a transfer.

use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng as _;
use tokio_util::sync::CancellationToken;

use crate::error::{ErrorClass, TransferError};

/// How often and how patiently one request is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Backoff base after a throttle (ScyllaDB's fix for S3: 1 s …
    pub throttle_base_delay: Duration,
    /// … capped at 60 s).
    pub throttle_max_delay: Duration,
    /// How long AWS-side transient errors are retried beyond `max_attempts`.
    pub aws_patience: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
            throttle_base_delay: Duration::from_secs(1),
            throttle_max_delay: Duration::from_secs(60),
            aws_patience: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The pause before try `attempt + 1`: uniform in `0..=min(max, base·2^attempt)`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1 << attempt.min(16))
            .min(self.max_delay);
        rand::rng().random_range(Duration::ZERO..=ceiling)
    }

    /// The pause after the `throttles`-th throttle of one call: uniform in
    /// `0..=min(throttle_max, throttle_base·2^(throttles-1))`.
    pub fn throttle_delay(&self, throttles: u32) -> Duration {
        let ceiling = self
            .throttle_base_delay
            .saturating_mul(1 << throttles.saturating_sub(1).min(16))
            .min(self.throttle_max_delay);
        rand::rng().random_range(Duration::ZERO..=ceiling)
    }

    /// Whether an error that used up the attempts is still worth a retry.
    fn still_patient(&self, err: &TransferError, first_failure: Instant) -> bool {
        err.is_aws_side() && first_failure.elapsed() < self.aws_patience
    }

    /// Runs `op` until it succeeds, fails for good, or runs out of tries (and,
    /// for AWS-side errors, of patience). `op` gets the number of tries made
    /// before this one; `on_retry` hears about every error that will be retried.
    pub async fn run<T, F, Fut>(
        &self,
        cancel: &CancellationToken,
        mut on_retry: impl FnMut(&TransferError, u32),
        mut op: F,
    ) -> Result<T, TransferError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, TransferError>>,
    {
        let mut attempt = 0;
        let mut throttles = 0;
        let mut first_failure = None;
        loop {
            let result = tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(TransferError::Cancelled),
                result = op(attempt + throttles) => result,
            };
            let err = match result {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let pause = if err.is_throttle() {
                throttles += 1;
                self.throttle_delay(throttles)
            } else {
                attempt += 1;
                let since = *first_failure.get_or_insert_with(Instant::now);
                if err.class() != ErrorClass::Transient
                    || (attempt >= self.max_attempts && !self.still_patient(&err, since))
                {
                    return Err(err);
                }
                self.delay(attempt)
            };
            on_retry(&err, attempt + throttles);
            tokio::select! {
                () = cancel.cancelled() => return Err(TransferError::Cancelled),
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            throttle_base_delay: Duration::from_millis(1),
            throttle_max_delay: Duration::from_millis(2),
            aws_patience: Duration::ZERO,
        }
    }

    fn s3_error(code: &str, throttled: bool) -> TransferError {
        TransferError::S3 {
            operation: crate::error::S3Operation::UploadPart,
            code: Some(code.into()),
            message: code.into(),
            transient: true,
            throttled,
        }
    }

    /// Runs `policy` over an operation that fails `failures` times with
    /// `error`, then succeeds; returns the tries it took, or the error.
    async fn tries_until_success(
        policy: RetryPolicy,
        failures: u32,
        error: fn() -> TransferError,
    ) -> Result<u32, TransferError> {
        let mut tries = 0;
        policy
            .run(
                &CancellationToken::new(),
                |_, _| {},
                |_| {
                    tries += 1;
                    let answer = if tries <= failures {
                        Err(error())
                    } else {
                        Ok(tries)
                    };
                    async move { answer }
                },
            )
            .await
    }

    #[tokio::test]
    async fn throttles_never_use_up_attempts() {
        let tries = tries_until_success(quick(), 50, || s3_error("SlowDown", true)).await;
        assert_eq!(tries.unwrap(), 51, "50 throttles, then success");
    }

    #[tokio::test]
    async fn aws_errors_are_retried_past_the_attempts_while_patience_lasts() {
        let patient = RetryPolicy {
            aws_patience: Duration::from_secs(60),
            ..quick()
        };
        let internal = || s3_error("InternalError", false);
        assert_eq!(
            tries_until_success(patient, 10, internal).await.unwrap(),
            11
        );
        // Without patience the same errors stop at max_attempts.
        let mut tries = 0;
        let result: Result<(), _> = quick()
            .run(
                &CancellationToken::new(),
                |_, _| {},
                |_| {
                    tries += 1;
                    async { Err(s3_error("InternalError", false)) }
                },
            )
            .await;
        assert!(result.is_err());
        assert_eq!(tries, 3);
    }

    #[test]
    fn throttle_delays_grow_to_their_own_cap() {
        let policy = RetryPolicy::default();
        for throttles in 1..40 {
            assert!(policy.throttle_delay(throttles) <= Duration::from_secs(60));
        }
        let first_ceiling = (0..200).map(|_| policy.throttle_delay(1)).max().unwrap();
        assert!(first_ceiling <= Duration::from_secs(1));
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_attempts_run_out() {
        let mut tries = 0;
        let mut retries = 0;
        let result: Result<(), _> = quick()
            .run(
                &CancellationToken::new(),
                |_, _| retries += 1,
                |_| {
                    tries += 1;
                    async { Err(TransferError::SourceStatus { status: 503 }) }
                },
            )
            .await;
        assert!(result.is_err());
        assert_eq!(tries, 3);
        assert_eq!(retries, 2);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let mut tries = 0;
        let result: Result<(), _> = quick()
            .run(
                &CancellationToken::new(),
                |_, _| {},
                |_| {
                    tries += 1;
                    async { Err(TransferError::SourceStatus { status: 404 }) }
                },
            )
            .await;
        assert_eq!(result.unwrap_err().kind(), "source_not_found");
        assert_eq!(tries, 1);
    }

    #[test]
    fn delays_never_exceed_the_cap() {
        let policy = RetryPolicy::default();
        for attempt in 0..40 {
            assert!(policy.delay(attempt) <= policy.max_delay);
        }
    }
}
