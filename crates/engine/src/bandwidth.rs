//! Source bandwidth: byte-rate caps on what transfers read from their sources.
//!
//! An engine may have one cap that all its transfers share
//! (`SourceConfig::max_bytes_per_sec`) and each transfer one of its own
//! (`TransferSpec::max_bytes_per_sec`); both apply, so the lower wins. Bytes
//! are paid for after they are read, before the next read: a capped reader
//! stops pulling, TCP's flow control slows the sender, and memory use is
//! unchanged.
//!
//! A cap is a schedule (GCRA's "theoretical arrival time"): each payment
//! books the next `bytes / rate` of it, in arrival order, and waits until its
//! booking is due. Bookings are first come, first served and exact over any
//! length of time (wake-up latency never accumulates), and a payment of any
//! size simply books more. An idle cap lets [`BURST`] worth through at once.
//!
//! Sharing is fair per transfer, not per connection: a transfer's readers
//! pay one at a time (one lock per transfer), so each transfer holds at most
//! one booking in the shared cap, and every booking there is one fixed
//! *quantum* of bytes. Two transfers that both want more than their share
//! therefore alternate quantum by quantum and get equal shares, whatever
//! their parts in flight or the sizes of their reads.
//!
//! Time spent here is not the source's: the read timeout and the slow-source
//! guard measure only time spent waiting for the source (see `source`).
//! This module does not limit connections; `source::hosts` does.

use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::TransferError;
use crate::plan::MIB;
use crate::sync::lock;

/// How far ahead of its schedule a cap lets bytes through: what an idle cap
/// passes at once. Also what absorbs a reader's scheduling hiccups.
pub const BURST: Duration = Duration::from_millis(100);

/// The largest quantum: waits stay short and wake-ups few even at GB/s.
const MAX_QUANTUM: u64 = MIB;

/// One byte-rate cap: a schedule that payments book in arrival order.
#[derive(Debug)]
pub struct RateCap {
    bytes_per_sec: u64,
    /// When everything booked so far is due at the cap's rate.
    booked_until: Mutex<Instant>,
}

impl RateCap {
    pub fn new(bytes_per_sec: NonZeroU64) -> Self {
        Self {
            bytes_per_sec: bytes_per_sec.get(),
            booked_until: Mutex::new(Instant::now()),
        }
    }

    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }

    /// Books `bytes` after everything booked before and waits until they are
    /// due. A booking stays if the wait is dropped: its bytes were read.
    async fn take(&self, bytes: u64) {
        let due = self.book(bytes, Instant::now());
        if let Some(at) = due.checked_sub(BURST) {
            tokio::time::sleep_until(at).await;
        }
    }

    /// Books `bytes` at `now`; returns when they are due. A cap that fell
    /// behind (nobody paid for a while) starts again from `now`: idle time is
    /// not saved up beyond [`BURST`].
    fn book(&self, bytes: u64, now: Instant) -> Instant {
        let mut booked_until = lock(&self.booked_until);
        let start = (*booked_until).max(now);
        *booked_until = start + self.time_for(bytes);
        *booked_until
    }

    fn time_for(&self, bytes: u64) -> Duration {
        let nanos = u128::from(bytes) * 1_000_000_000 / u128::from(self.bytes_per_sec);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Bytes booked at a time: 50 ms at the cap's rate, between 1 byte and
    /// 1 MiB. Small enough that transfers sharing the cap interleave finely,
    /// large enough that waking up is cheap next to the bytes it lets through.
    fn quantum(&self) -> u64 {
        (self.bytes_per_sec / 20).clamp(1, MAX_QUANTUM)
    }
}

/// Bytes one transfer has read but not yet paid to one cap.
struct Account {
    cap: Arc<RateCap>,
    unpaid: u64,
}

/// Paces the source reads of one transfer: its own cap, then the engine's.
pub(crate) struct Pacer {
    /// The async lock makes this transfer's readers pay one at a time, in
    /// order, which is what keeps the transfer to one booking per cap.
    accounts: tokio::sync::Mutex<Vec<Account>>,
    capped: bool,
    cancel: CancellationToken,
}

impl Pacer {
    pub(crate) fn new(
        shared: Option<Arc<RateCap>>,
        own: Option<NonZeroU64>,
        cancel: CancellationToken,
    ) -> Self {
        // The transfer's own cap first: a transfer held back by its own cap
        // holds no booking in the shared one meanwhile.
        let accounts: Vec<Account> = [own.map(|rate| Arc::new(RateCap::new(rate))), shared]
            .into_iter()
            .flatten()
            .map(|cap| Account { cap, unpaid: 0 })
            .collect();
        Self {
            capped: !accounts.is_empty(),
            accounts: tokio::sync::Mutex::new(accounts),
            cancel,
        }
    }

    /// Waits until `bytes` just read may be followed by more reads. Returns
    /// at once when nothing caps this transfer.
    pub(crate) async fn pay(&self, bytes: u64) -> Result<(), TransferError> {
        if !self.capped {
            return Ok(());
        }
        let paying = async {
            let mut accounts = self.accounts.lock().await;
            for account in accounts.iter_mut() {
                account.unpaid += bytes;
                // Each cap in its own quanta: every booking in a shared cap
                // is the same size, whatever the transfers' own caps.
                let quantum = account.cap.quantum();
                while account.unpaid >= quantum {
                    account.cap.take(quantum).await;
                    account.unpaid -= quantum;
                }
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

    use super::*;

    fn rate(bytes_per_sec: u64) -> NonZeroU64 {
        NonZeroU64::new(bytes_per_sec).unwrap()
    }

    #[test]
    fn quanta_are_50_ms_within_bounds() {
        let quantum = |bytes_per_sec| RateCap::new(rate(bytes_per_sec)).quantum();
        assert_eq!(quantum(1), 1);
        assert_eq!(quantum(1000), 50);
        assert_eq!(quantum(4 * MIB), 4 * MIB / 20);
        assert_eq!(quantum(100 * MIB), MIB);
    }

    #[test]
    fn bookings_last_bytes_over_rate() {
        let cap = RateCap::new(rate(4 * MIB));
        assert_eq!(cap.time_for(MIB), Duration::from_millis(250));
        assert_eq!(cap.time_for(0), Duration::ZERO);
        assert_eq!(
            RateCap::new(rate(1)).time_for(u64::MAX),
            Duration::from_nanos(u64::MAX)
        );
    }

    #[test]
    fn bookings_follow_the_schedule_however_late_their_payers_come() {
        let cap = RateCap::new(rate(100 * 1024));
        let start = Instant::now();
        let step = Duration::from_millis(10);
        let mut due = cap.book(1024, start);
        assert_eq!(due, start + step);
        for n in 2..=200 {
            // Each payer comes 2 ms after its booking was due (a busy reader,
            // a late wake-up): still within the burst, so nothing is lost.
            let now = due - BURST + Duration::from_millis(2);
            due = cap.book(1024, now);
            assert_eq!(due, start + step * n, "booking {n}");
        }
        // After an idle spell the schedule restarts from now: no saving up.
        let later = due + Duration::from_secs(5);
        assert_eq!(cap.book(1024, later), later + step);
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
