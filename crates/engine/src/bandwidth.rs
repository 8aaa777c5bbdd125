//! Source bandwidth: byte-rate caps on what transfers read from their sources.
//!
//! An engine may have one cap that all its transfers share
//! (`SourceConfig::max_bytes_per_sec`) and each transfer one of its own
//! (`TransferSpec::max_bytes_per_sec`); both apply, so the lower wins. Bytes
//! are paid for after they are read, before the next read: a capped reader
//! stops pulling, TCP's flow control slows the sender, and memory use is
//! unchanged.
//!
//! Sharing is fair per transfer, not per connection: a transfer's readers
//! take turns (one lock per transfer), so each transfer waits in the shared
//! cap's first-come-first-served queue at most once at a time, and each wait
//! is for one fixed *quantum* of bytes. Two transfers that both want more
//! than their share therefore alternate quantum by quantum and get equal
//! shares, whatever their parts in flight or the sizes of their reads.
//!
//! Time spent here is not the source's: the read timeout and the slow-source
//! guard measure only time spent waiting for the source (see `source`).
//! This module does not limit connections; `source::hosts` does.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use leaky_bucket::RateLimiter;
use tokio_util::sync::CancellationToken;

use crate::error::TransferError;
use crate::plan::MIB;

/// The largest quantum: waits stay short and wake-ups few even at GB/s.
const MAX_QUANTUM: u64 = MIB;

/// One byte-rate cap with a first-come-first-served queue of waiters.
pub struct RateCap {
    limiter: RateLimiter,
    bytes_per_sec: u64,
}

impl std::fmt::Debug for RateCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateCap")
            .field("bytes_per_sec", &self.bytes_per_sec)
            .finish()
    }
}

impl RateCap {
    pub fn new(bytes_per_sec: NonZeroU64) -> Self {
        let rate = bytes_per_sec.get();
        // Refilled ten times a second (to within 0.5 %); below 1000 B/s that
        // would round badly, so once a second, exactly.
        let (interval, refill) = if rate >= 1000 {
            (Duration::from_millis(100), rate.div_ceil(10))
        } else {
            (Duration::from_secs(1), rate)
        };
        let refill = usize::try_from(refill.min(1 << 40)).unwrap_or(usize::MAX);
        // What an idle cap lets through at once: one refill, and at least
        // one quantum so a lone waiter is never split across refills for nothing.
        let burst = refill.max(usize::try_from(quantum(rate)).unwrap_or(usize::MAX));
        let limiter = RateLimiter::builder()
            .interval(interval)
            .refill(refill)
            .max(burst)
            .initial(refill)
            .fair(true)
            .build();
        Self {
            limiter,
            bytes_per_sec: rate,
        }
    }

    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }
}

/// Bytes paid for per wait: 50 ms at the cap's rate, between 1 byte and 1 MiB.
/// Small enough that the shared queue interleaves transfers finely, large
/// enough that waking up is cheap next to the bytes it lets through.
fn quantum(bytes_per_sec: u64) -> u64 {
    (bytes_per_sec / 20).clamp(1, MAX_QUANTUM)
}

/// Paces the source reads of one transfer: its own cap, then the engine's.
pub(crate) struct Pacer {
    own: Option<RateCap>,
    shared: Option<Arc<RateCap>>,
    quantum: u64,
    /// Bytes read but not yet paid for (less than a quantum between calls).
    /// The async lock makes this transfer's readers pay one at a time, in
    /// order, which is what keeps the transfer to one place in the shared queue.
    unpaid: tokio::sync::Mutex<u64>,
    cancel: CancellationToken,
}

impl Pacer {
    pub(crate) fn new(
        shared: Option<Arc<RateCap>>,
        own: Option<NonZeroU64>,
        cancel: CancellationToken,
    ) -> Self {
        let own = own.map(RateCap::new);
        let quantum = [own.as_ref(), shared.as_deref()]
            .into_iter()
            .flatten()
            .map(|cap| quantum(cap.bytes_per_sec))
            .min()
            .unwrap_or(MAX_QUANTUM);
        Self {
            own,
            shared,
            quantum,
            unpaid: tokio::sync::Mutex::new(0),
            cancel,
        }
    }

    /// Waits until `bytes` just read may be followed by more reads. Returns
    /// at once when nothing caps this transfer.
    pub(crate) async fn pay(&self, bytes: u64) -> Result<(), TransferError> {
        if self.own.is_none() && self.shared.is_none() {
            return Ok(());
        }
        let paying = async {
            let mut unpaid = self.unpaid.lock().await;
            *unpaid += bytes;
            let quantum = usize::try_from(self.quantum).unwrap_or(usize::MAX);
            while *unpaid >= self.quantum {
                // The transfer's own cap first: a transfer held back by its
                // own cap does not hold a place in the shared queue meanwhile.
                if let Some(own) = &self.own {
                    own.limiter.acquire(quantum).await;
                }
                if let Some(shared) = &self.shared {
                    shared.limiter.acquire(quantum).await;
                }
                *unpaid -= self.quantum;
            }
        };
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(TransferError::Cancelled),
            () = paying => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    use super::*;

    fn rate(bytes_per_sec: u64) -> NonZeroU64 {
        NonZeroU64::new(bytes_per_sec).unwrap()
    }

    #[test]
    fn quanta_are_50_ms_within_bounds() {
        assert_eq!(quantum(1), 1);
        assert_eq!(quantum(1000), 50);
        assert_eq!(quantum(4 * MIB), 4 * MIB / 20);
        assert_eq!(quantum(100 * MIB), MIB);
    }

    #[tokio::test]
    async fn an_uncapped_pacer_never_waits() {
        let pacer = Pacer::new(None, None, CancellationToken::new());
        let started = Instant::now();
        pacer.pay(u64::from(u32::MAX)).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn the_lower_of_two_caps_holds() {
        let shared = Arc::new(RateCap::new(rate(40 * MIB)));
        let pacer = Pacer::new(Some(shared), Some(rate(4 * MIB)), CancellationToken::new());
        let started = Instant::now();
        for _ in 0..128 {
            pacer.pay(64 * 1024).await.unwrap();
        }
        // 8 MiB at 4 MiB/s, less the first refill (there at once) and what
        // is left unpaid (under a quantum): a lower bound, never an upper one.
        assert!(started.elapsed() >= Duration::from_millis(1700));
    }

    #[tokio::test]
    async fn transfers_sharing_a_cap_get_equal_shares_whatever_their_reads() {
        let shared = Arc::new(RateCap::new(rate(16 * MIB)));
        let read = [AtomicU64::new(0), AtomicU64::new(0)];
        let stop = CancellationToken::new();
        let transfer = |index: usize, chunk: u64, readers: usize| {
            let pacer = Arc::new(Pacer::new(Some(Arc::clone(&shared)), None, stop.clone()));
            let read = &read[index];
            futures_util::future::join_all((0..readers).map(move |_| {
                let pacer = Arc::clone(&pacer);
                async move {
                    loop {
                        read.fetch_add(chunk, Ordering::Relaxed);
                        if pacer.pay(chunk).await.is_err() {
                            break;
                        }
                    }
                }
            }))
        };
        // One transfer reads 16 KiB at a time with one reader, the other
        // 256 KiB at a time with three.
        let small = transfer(0, 16 * 1024, 1);
        let large = transfer(1, 256 * 1024, 3);
        let started = Instant::now();
        let clock = async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            stop.cancel();
        };
        tokio::join!(small, large, clock);
        let secs = started.elapsed().as_secs_f64();
        let [a, b] = read.map(|r| r.load(Ordering::Relaxed) as f64);
        // The cap holds (plus one refill, reads not yet paid, and a quantum
        // each)…
        let allowed = 16.0 * MIB as f64 * (secs + 0.1) + 3.0 * 256.0 * 1024.0 + 2.0 * MIB as f64;
        assert!(a + b <= allowed, "{} bytes in {secs} s", a + b);
        // …and is shared equally.
        assert!((a / b - 1.0).abs() < 0.2, "shares {a} vs {b}");
    }

    #[tokio::test]
    async fn a_cancelled_wait_ends_at_once() {
        let cancel = CancellationToken::new();
        let pacer = Pacer::new(None, Some(rate(1)), cancel.clone());
        cancel.cancel();
        let err = pacer.pay(1000).await.unwrap_err();
        assert!(matches!(err, TransferError::Cancelled));
    }
}
