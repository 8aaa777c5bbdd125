//! The one owner of part buffers: the memory budget lives here and only here.
//!
//! Every part buffer is paid for by a [`Lease`] on the budget *before* a byte is
//! read into it, so bytes in flight never exceed the budget, however many jobs
//! share the pool. Released buffers are kept for reuse (they stay paid for) unless
//! someone is waiting for budget, in which case they are freed at once.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::TransferError;

/// Budget accounting granularity: permits are KiB so a `u32` covers 4 TiB.
const UNIT: usize = 1024;

#[derive(Clone)]
pub struct MemoryPool {
    inner: Arc<Inner>,
}

struct Inner {
    budget: usize,
    permits: Arc<Semaphore>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    free: Vec<PartBuffer>,
    waiting: usize,
}

/// A buffer and the share of the budget that pays for its capacity.
pub struct PartBuffer {
    buf: BytesMut,
    _permit: OwnedSemaphorePermit,
}

impl MemoryPool {
    pub fn new(budget_bytes: usize) -> Self {
        let units = budget_bytes / UNIT;
        Self {
            inner: Arc::new(Inner {
                budget: units * UNIT,
                permits: Arc::new(Semaphore::new(units)),
                state: Mutex::default(),
            }),
        }
    }

    pub fn budget(&self) -> usize {
        self.inner.budget
    }

    /// Bytes of the budget currently reserved (in flight or pooled for reuse).
    pub fn in_use(&self) -> usize {
        self.inner.budget - self.inner.permits.available_permits() * UNIT
    }

    /// Waits until `len` bytes of budget are free and returns an empty buffer
    /// with at least that capacity.
    pub async fn reserve(&self, len: usize) -> Result<PartBuffer, TransferError> {
        let units = len.div_ceil(UNIT).max(1);
        if units * UNIT > self.inner.budget {
            return Err(TransferError::InvalidConfig {
                reason: format!(
                    "a part of {len} bytes does not fit the memory budget of {} bytes",
                    self.inner.budget
                ),
            });
        }
        {
            let mut state = self.lock();
            if let Some(i) = state.free.iter().position(|b| b.buf.capacity() >= len) {
                return Ok(state.free.swap_remove(i));
            }
            // Nothing fits: hand every pooled buffer's budget back so waiters
            // (this one included) are not starved by idle memory.
            state.free.clear();
            state.waiting += 1;
        }
        // Decrements `waiting` however this future ends, dropped ones included.
        let _waiting = WaitingGuard(self);
        let acquired = Arc::clone(&self.inner.permits)
            .acquire_many_owned(u32::try_from(units).unwrap_or(u32::MAX))
            .await;
        let permit = acquired.map_err(|_| TransferError::Cancelled)?;
        Ok(PartBuffer {
            buf: BytesMut::with_capacity(units * UNIT),
            _permit: permit,
        })
    }

    /// Returns a buffer for reuse, or frees it when budget is being waited for.
    pub fn release(&self, mut buffer: PartBuffer) {
        let mut state = self.lock();
        if state.waiting == 0 {
            buffer.buf.clear();
            state.free.push(buffer);
        }
    }

    /// Releases a buffer that went out as frozen `Bytes`, if nobody else holds it.
    pub fn recycle(&self, bytes: Bytes, permit_owner: FrozenPart) {
        if let Ok(buf) = bytes.try_into_mut() {
            self.release(PartBuffer {
                buf,
                _permit: permit_owner.permit,
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned pool only means a panicking thread held the lock; the state
        // (a free list and a counter) is still consistent.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct WaitingGuard<'a>(&'a MemoryPool);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
    }
}

impl PartBuffer {
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(len);
    }

    /// Splits into immutable bytes for the upload and the budget share that
    /// must live until the upload is done.
    pub fn freeze(self) -> (Bytes, FrozenPart) {
        let Self { buf, _permit } = self;
        (buf.freeze(), FrozenPart { permit: _permit })
    }
}

/// The budget share of a part whose bytes were frozen for upload.
pub struct FrozenPart {
    permit: OwnedSemaphorePermit,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reservations_wait_for_budget() {
        let pool = MemoryPool::new(8 * UNIT);
        let a = pool.reserve(6 * UNIT).await.unwrap();
        assert_eq!(pool.in_use(), 6 * UNIT);
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.reserve(4 * UNIT).await.map(|b| b.buf.capacity()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "budget must be exhausted");
        pool.release(a);
        let cap = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(cap >= 4 * UNIT);
    }

    #[tokio::test]
    async fn released_buffers_are_reused() {
        let pool = MemoryPool::new(16 * UNIT);
        let mut a = pool.reserve(4 * UNIT).await.unwrap();
        a.extend_from_slice(b"hello");
        let ptr = a.as_slice().as_ptr();
        let (bytes, frozen) = a.freeze();
        pool.recycle(bytes, frozen);
        let b = pool.reserve(4 * UNIT).await.unwrap();
        assert!(b.is_empty());
        assert_eq!(b.buf.as_ptr(), ptr);
        assert_eq!(pool.in_use(), 4 * UNIT);
    }

    #[tokio::test]
    async fn a_part_larger_than_the_budget_is_an_error() {
        let pool = MemoryPool::new(4 * UNIT);
        assert!(pool.reserve(5 * UNIT).await.is_err());
    }
}
