//! How many multipart transfers an engine runs at once, and what its recent
//! transfers looked like.
//!
//! A transfer learns whether it is large (a multipart upload) only after its
//! probe. Small ones (one PutObject) go straight through; a large one needs a
//! slot first. A transfer that would have to wait for one lets go of what it
//! holds (the probe's answer and its host slot, a first part's buffer) and
//! waits holding nothing, so waiters never block the transfers they wait for.
//! The counts let a caller decide how much new work to take on: none while a
//! transfer waits or may be about to (it has not learned its size yet), a
//! batch while recent transfers were small.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::error::TransferError;

/// Shared by every transfer of one engine.
pub struct MultipartGate {
    /// `None`: no limit.
    slots: Option<Arc<Semaphore>>,
    limit: Option<usize>,
    waiting: AtomicUsize,
    deciding: Arc<AtomicUsize>,
    small_streak: AtomicU32,
}

/// A transfer that does not know yet whether it is large: counted in
/// [`MultipartGate::deciding`] until dropped.
pub struct Deciding {
    count: Arc<AtomicUsize>,
}

impl Drop for Deciding {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A held multipart slot (or, without a limit, nothing to hold).
pub struct MultipartSlot {
    _permit: Option<OwnedSemaphorePermit>,
}

impl MultipartGate {
    pub fn new(limit: Option<usize>) -> Self {
        Self {
            slots: limit.map(|n| Arc::new(Semaphore::new(n))),
            limit,
            waiting: AtomicUsize::new(0),
            deciding: Arc::new(AtomicUsize::new(0)),
            small_streak: AtomicU32::new(0),
        }
    }

    /// Counts a transfer that has started and does not know its size yet.
    pub fn deciding_one(&self) -> Deciding {
        self.deciding.fetch_add(1, Ordering::SeqCst);
        Deciding {
            count: Arc::clone(&self.deciding),
        }
    }

    /// Transfers started that do not know yet whether they are large.
    pub fn deciding(&self) -> usize {
        self.deciding.load(Ordering::SeqCst)
    }

    /// A slot if one is free now; `None` means the caller must wait.
    pub fn try_enter(&self) -> Option<MultipartSlot> {
        let permit = match &self.slots {
            None => None,
            Some(slots) => Some(Arc::clone(slots).try_acquire_owned().ok()?),
        };
        self.small_streak.store(0, Ordering::Relaxed);
        Some(MultipartSlot { _permit: permit })
    }

    /// Waits for a slot; counted in [`waiting`](Self::waiting) meanwhile,
    /// and no longer as `deciding` (counted as waiting first, so that an
    /// observer never sees the transfer as neither).
    pub async fn enter(
        &self,
        cancel: &CancellationToken,
        deciding: Option<Deciding>,
    ) -> Result<MultipartSlot, TransferError> {
        let Some(slots) = &self.slots else {
            return Ok(MultipartSlot { _permit: None });
        };
        self.waiting.fetch_add(1, Ordering::SeqCst);
        drop(deciding);
        let acquired = tokio::select! {
            biased;
            () = cancel.cancelled() => Err(TransferError::Cancelled),
            permit = Arc::clone(slots).acquire_owned() => {
                permit.map_err(|_| TransferError::Cancelled)
            }
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.small_streak.store(0, Ordering::Relaxed);
        Ok(MultipartSlot {
            _permit: Some(acquired?),
        })
    }

    /// A transfer was stored with one PutObject.
    pub fn small_stored(&self) {
        self.small_streak.fetch_add(1, Ordering::Relaxed);
    }

    /// Transfers waiting for a multipart slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Multipart slots free now (`None`: no limit).
    pub fn free(&self) -> Option<usize> {
        self.slots.as_ref().map(|s| s.available_permits())
    }

    pub fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// Single-PutObject transfers stored since the last multipart one began.
    pub fn small_streak(&self) -> u32 {
        self.small_streak.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_gate_counts_its_waiters_and_admits_them_as_slots_free() {
        let gate = Arc::new(MultipartGate::new(Some(1)));
        let held = gate.try_enter().expect("a free slot");
        assert!(gate.try_enter().is_none());
        let cancel = CancellationToken::new();
        let waiter = {
            let gate = Arc::clone(&gate);
            let cancel = cancel.clone();
            tokio::spawn(async move { gate.enter(&cancel, None).await.map(|_| ()) })
        };
        while gate.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        drop(held);
        waiter.await.unwrap().unwrap();
        assert_eq!(gate.waiting(), 0);
        assert_eq!(gate.free(), Some(1));
    }

    #[tokio::test]
    async fn a_cancelled_waiter_stops_waiting() {
        let gate = MultipartGate::new(Some(1));
        let _held = gate.try_enter().unwrap();
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert!(matches!(
            gate.enter(&cancel, None).await,
            Err(TransferError::Cancelled)
        ));
        assert_eq!(gate.waiting(), 0);
    }

    #[tokio::test]
    async fn a_deciding_transfer_counts_until_it_knows() {
        let gate = MultipartGate::new(Some(1));
        let first = gate.deciding_one();
        let second = gate.deciding_one();
        assert_eq!(gate.deciding(), 2);
        drop(first);
        assert_eq!(gate.deciding(), 1);
        let slot = gate.enter(&CancellationToken::new(), Some(second)).await;
        assert!(slot.is_ok());
        assert_eq!((gate.deciding(), gate.waiting()), (0, 0));
    }

    #[test]
    fn the_small_streak_ends_when_a_multipart_transfer_begins() {
        let gate = MultipartGate::new(None);
        gate.small_stored();
        gate.small_stored();
        assert_eq!(gate.small_streak(), 2);
        assert!(gate.try_enter().is_some());
        assert_eq!(gate.small_streak(), 0);
        assert_eq!(gate.free(), None);
    }
}
