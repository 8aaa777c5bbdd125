//! Client-side rate limiting for S3, one limiter per bucket, shared by every
//! part and job of an engine.
//!
//! Modelled on the AWS SDKs' adaptive retry mode: the limiter stays open until
//! S3 first throttles; then the request rate drops to 0.7× of what was being
//! sent and recovers along a cubic curve (fast far from the rate that was
//! throttled, slow near it, probing above it after a while). Each throttle
//! also freezes the bucket's requests for a short random moment, so parts that
//! were throttled together do not come back together. Nothing here retries:
//! [`crate::retry`] decides that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng as _;

use crate::sync::lock;

/// The drop factor on a throttle (the SDKs' β).
const BETA: f64 = 0.7;
/// How fast the rate climbs back (the SDKs' scale constant C).
const SCALE: f64 = 0.4;
/// Requests per second never go below this.
const MIN_RATE: f64 = 0.5;
/// Requests the limiter lets through in a burst once it is enabled.
const MIN_BURST: f64 = 1.0;
/// Longest random pause of a bucket's requests after a throttle.
const MAX_FREEZE: Duration = Duration::from_millis(500);
/// Width of the window the sent rate is measured over.
const MEASURE_WINDOW: Duration = Duration::from_millis(500);

/// One bucket's limiter.
#[derive(Debug)]
pub struct Limiter {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Off until the first throttle: no cost while S3 is happy.
    enabled: bool,
    /// Requests per second currently allowed.
    rate: f64,
    /// The rate at the last throttle (the cubic's plateau).
    rate_at_throttle: f64,
    last_throttle: Instant,
    tokens: f64,
    last_refill: Instant,
    frozen_until: Instant,
    /// Requests sent per second, smoothed.
    measured: f64,
    window_start: Instant,
    window_count: u64,
    throttles: u64,
}

/// What the limiter of one bucket is doing, for metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct LimiterStats {
    pub bucket: String,
    /// Requests per second allowed; `None` while the limiter is open.
    pub rate: Option<f64>,
    pub throttles: u64,
}

impl Default for Limiter {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::open(Instant::now())),
        }
    }
}

impl Limiter {
    /// Waits until a request may be sent, and counts it as sent.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut state = lock(&self.state);
                let now = Instant::now();
                state.count_sent(now);
                match state.wait_for_token(now) {
                    None => return,
                    Some(wait) => wait,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// S3 answered without throttling.
    pub fn succeeded(&self) {
        let mut state = lock(&self.state);
        if state.enabled {
            state.recover(Instant::now());
        }
    }

    /// S3 throttled a request.
    pub fn throttled(&self) {
        let freeze = rand::rng().random_range(Duration::ZERO..=MAX_FREEZE);
        lock(&self.state).throttle(Instant::now(), freeze);
    }

    /// Requests per second allowed (`None` while open) and throttles seen.
    pub fn snapshot(&self) -> (Option<f64>, u64) {
        let state = lock(&self.state);
        (state.enabled.then_some(state.rate), state.throttles)
    }
}

impl State {
    fn open(now: Instant) -> Self {
        Self {
            enabled: false,
            rate: 0.0,
            rate_at_throttle: 0.0,
            last_throttle: now,
            tokens: 0.0,
            last_refill: now,
            frozen_until: now,
            measured: 0.0,
            window_start: now,
            window_count: 0,
            throttles: 0,
        }
    }

    fn count_sent(&mut self, now: Instant) {
        let elapsed = now.duration_since(self.window_start);
        if elapsed >= MEASURE_WINDOW {
            let current = self.window_count as f64 / elapsed.as_secs_f64();
            self.measured = 0.8 * current + 0.2 * self.measured;
            self.window_start = now;
            self.window_count = 0;
        }
        self.window_count += 1;
    }

    /// `None`: go now (a token was taken). Otherwise: wait this long first.
    fn wait_for_token(&mut self, now: Instant) -> Option<Duration> {
        if now < self.frozen_until {
            return Some(self.frozen_until - now);
        }
        if !self.enabled {
            return None;
        }
        let refill = now.duration_since(self.last_refill).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate.max(MIN_BURST));
        self.last_refill = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            // This request is counted already; a waiter recounts on retry.
            return None;
        }
        self.window_count = self.window_count.saturating_sub(1);
        Some(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
    }

    fn throttle(&mut self, now: Instant, freeze: Duration) {
        self.throttles += 1;
        let sending = if self.enabled {
            self.rate.min(self.measured.max(MIN_RATE))
        } else {
            self.measured
        };
        self.rate_at_throttle = sending.max(MIN_RATE);
        self.rate = (sending * BETA).max(MIN_RATE);
        self.last_throttle = now;
        self.tokens = self.tokens.min(MIN_BURST);
        self.last_refill = now;
        self.enabled = true;
        self.frozen_until = self.frozen_until.max(now + freeze);
    }

    /// The cubic: W(t) = C·(t − K)³ + W_max with K = ∛(W_max·(1 − β)/C);
    /// never more than twice what is actually being sent.
    fn recover(&mut self, now: Instant) {
        let t = now.duration_since(self.last_throttle).as_secs_f64();
        let k = (self.rate_at_throttle * (1.0 - BETA) / SCALE).cbrt();
        let cubic = SCALE * (t - k).powi(3) + self.rate_at_throttle;
        let ceiling = (2.0 * self.measured).max(MIN_RATE);
        self.rate = cubic.min(ceiling).max(MIN_RATE);
    }
}

/// The limiters of an engine, one per bucket, made on first use.
#[derive(Debug, Clone, Default)]
pub struct Limiters {
    by_bucket: Arc<Mutex<HashMap<String, Arc<Limiter>>>>,
}

impl Limiters {
    pub fn for_bucket(&self, bucket: &str) -> Arc<Limiter> {
        let mut map = lock(&self.by_bucket);
        Arc::clone(map.entry(bucket.to_owned()).or_default())
    }

    /// Every bucket's limiter state, sorted by bucket.
    pub fn stats(&self) -> Vec<LimiterStats> {
        let map = lock(&self.by_bucket);
        let mut stats: Vec<LimiterStats> = map
            .iter()
            .map(|(bucket, limiter)| {
                let (rate, throttles) = limiter.snapshot();
                LimiterStats {
                    bucket: bucket.clone(),
                    rate,
                    throttles,
                }
            })
            .collect();
        stats.sort_by(|a, b| a.bucket.cmp(&b.bucket));
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sending_at(rate_per_sec: f64) -> State {
        State {
            measured: rate_per_sec,
            ..State::open(Instant::now())
        }
    }

    #[test]
    fn open_until_the_first_throttle_then_drops_to_seven_tenths() {
        let mut state = sending_at(100.0);
        let now = Instant::now();
        assert_eq!(state.wait_for_token(now), None, "open: no waiting");
        state.throttle(now, Duration::ZERO);
        assert!(state.enabled);
        assert!((state.rate - 70.0).abs() < 1e-9, "{}", state.rate);
        assert_eq!(state.throttles, 1);
    }

    #[test]
    fn recovers_along_the_cubic_back_to_the_throttled_rate() {
        let mut state = sending_at(100.0);
        let start = Instant::now();
        state.throttle(start, Duration::ZERO);
        let k = (100.0f64 * 0.3 / 0.4).cbrt();
        state.recover(start + Duration::from_secs_f64(k / 2.0));
        let halfway = state.rate;
        assert!(halfway > 70.0 && halfway < 100.0, "{halfway}");
        state.recover(start + Duration::from_secs_f64(k));
        assert!((state.rate - 100.0).abs() < 1e-6, "{}", state.rate);
        state.measured = 1000.0;
        state.recover(start + Duration::from_secs_f64(k + 10.0));
        assert!(state.rate > 100.0, "probes above the old rate later");
    }

    #[test]
    fn repeated_throttles_keep_lowering_the_rate_to_the_floor() {
        let mut state = sending_at(10.0);
        let now = Instant::now();
        for _ in 0..50 {
            state.throttle(now, Duration::ZERO);
        }
        assert!((state.rate - MIN_RATE).abs() < 1e-9);
    }

    #[test]
    fn an_enabled_limiter_spaces_requests_by_its_rate() {
        let mut state = sending_at(10.0);
        let now = Instant::now();
        state.throttle(now, Duration::ZERO);
        // Right after a throttle the bucket is empty: about 1/7 s per
        // request at 7 requests/s.
        let wait = state.wait_for_token(now).expect("must wait");
        assert!(
            wait > Duration::from_millis(100) && wait <= Duration::from_millis(150),
            "{wait:?}"
        );
        assert_eq!(state.wait_for_token(now + wait), None, "then it may go");
        assert!(state.wait_for_token(now + wait).is_some(), "but not twice");
    }

    #[test]
    fn a_throttle_freezes_the_bucket_briefly() {
        let mut state = sending_at(10.0);
        let now = Instant::now();
        state.throttle(now, Duration::from_millis(300));
        assert_eq!(state.wait_for_token(now), Some(Duration::from_millis(300)));
    }
}
