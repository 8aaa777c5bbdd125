//! Exponential backoff with full jitter, for transient errors only.

use std::future::Future;
use std::time::Duration;

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
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
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

    /// Runs `op` until it succeeds, fails for good, or runs out of tries.
    /// `on_retry` hears about every error that will be retried.
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
        loop {
            let result = tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(TransferError::Cancelled),
                result = op(attempt) => result,
            };
            let err = match result {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            attempt += 1;
            if err.class() != ErrorClass::Transient || attempt >= self.max_attempts {
                return Err(err);
            }
            on_retry(&err, attempt);
            tokio::select! {
                () = cancel.cancelled() => return Err(TransferError::Cancelled),
                () = tokio::time::sleep(self.delay(attempt)) => {}
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
        }
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
