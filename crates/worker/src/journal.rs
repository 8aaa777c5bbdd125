//! The engine's [`Journal`] for a job the worker holds: checkpoints, part
//! CRCs and digest states go to DynamoDB, and every write to the upload is
//! gated on the lease.
//!
//! The lease gate is local and conservative: this worker may write only until
//! `lease_valid_until` — the time the newest successful renew was *sent*
//! plus three quarters of the lease — and never after the heartbeat saw the
//! lease taken over. Another worker can claim the job only once the lease expired,
//! so two workers never write to one upload at the same time (as long as the
//! clocks agree within a quarter of the lease).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_engine::digest::DigestState;
use ferry_engine::sink::UploadedPart;
use ferry_engine::{Checkpoint, Journal, TransferError};
use futures_util::future::BoxFuture;
use tracing::{info, warn};

use crate::patience::patiently;
use crate::store::{JobStore, Lease, StoreError};

pub struct LeaseJournal {
    store: JobStore,
    lease: Lease,
    bucket: String,
    key: String,
    lease_duration: Duration,
    /// `FERRY_PART_CHECKSUM_ITEMS=keep`: each part's CRC in an item of its own.
    keep_part_checksums: bool,
    valid_until: Mutex<Instant>,
    lease_lost: Arc<AtomicBool>,
    /// The upload a checkpoint describes: the earlier attempt's, then this one's.
    upload_id: Mutex<Option<String>>,
    /// The newest digest state handed over, by its prefix length.
    digest_latest: Mutex<Option<(u64, String)>>,
    /// The prefix length of the state last written for the current upload.
    /// Held while writing, so states are written one at a time and the
    /// stored one only ever moves forward.
    digest_written: tokio::sync::Mutex<u64>,
}

impl LeaseJournal {
    pub fn new(
        store: JobStore,
        lease: Lease,
        destination: &ferry_engine::Destination,
        lease_duration: Duration,
        keep_part_checksums: bool,
        claimed_at: Instant,
        lease_lost: Arc<AtomicBool>,
    ) -> Self {
        let upload_id = lease.checkpoint.as_ref().map(|c| c.upload_id.clone());
        Self {
            store,
            lease,
            bucket: destination.bucket.clone(),
            key: destination.key.clone(),
            lease_duration,
            keep_part_checksums,
            valid_until: Mutex::new(claimed_at + lease_duration * 3 / 4),
            lease_lost,
            upload_id: Mutex::new(upload_id),
            digest_latest: Mutex::new(None),
            digest_written: tokio::sync::Mutex::new(0),
        }
    }

    /// A renew sent at `sent_at` succeeded. Renewals can end out of order
    /// (one ridden out through minutes of throttling ends after later
    /// heartbeats), and none shortens the lease in DynamoDB: the newest
    /// one sent stands.
    pub fn renewed(&self, sent_at: Instant) {
        let mut valid_until = lock(&self.valid_until);
        *valid_until = (*valid_until).max(sent_at + self.lease_duration * 3 / 4);
    }

    /// The heartbeat found the job taken over.
    pub fn lease_lost(&self) {
        self.lease_lost.store(true, Ordering::SeqCst);
    }

    /// The checkpointed upload this job has open, if any.
    pub fn upload_id(&self) -> Option<String> {
        lock(&self.upload_id).clone()
    }

    fn refuse(&self, err: StoreError) -> TransferError {
        if matches!(err, StoreError::LeaseLost) {
            self.lease_lost.store(true, Ordering::SeqCst);
            return TransferError::Cancelled;
        }
        TransferError::Journal {
            reason: err.to_string(),
        }
    }
}

impl Journal for LeaseJournal {
    fn durable(&self) -> bool {
        true
    }

    fn checkpoint<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
    ) -> BoxFuture<'a, Result<(), TransferError>> {
        Box::pin(async move {
            patiently("checkpoint write", || {
                self.store
                    .save_checkpoint(&self.lease, (&self.bucket, &self.key), checkpoint)
            })
            .await
            .map_err(|err| self.refuse(err))?;
            // A new upload: its states start again from its first part.
            *self.digest_written.lock().await = 0;
            *lock(&self.digest_latest) = None;
            *lock(&self.upload_id) = Some(checkpoint.upload_id.clone());
            Ok(())
        })
    }

    fn restarted<'a>(&'a self, reason: &'a str) -> BoxFuture<'a, Result<(), TransferError>> {
        Box::pin(async move {
            metrics::counter!("ferry_restarts_total").increment(1);
            warn!(%reason, "checkpoint discarded; the job starts over");
            *lock(&self.upload_id) = None;
            patiently("restart record write", || {
                self.store.record_restart(&self.lease, reason)
            })
            .await
            .map_err(|err| self.refuse(err))
        })
    }

    fn resumed(&self, parts: u32, bytes: u64) -> BoxFuture<'_, Result<(), TransferError>> {
        Box::pin(async move {
            metrics::counter!("ferry_resumes_total").increment(1);
            info!(
                parts_reused = parts,
                bytes_reused = bytes,
                "resuming the earlier upload"
            );
            patiently("resume record write", || {
                self.store.record_resume(&self.lease, bytes)
            })
            .await
            .map_err(|err| self.refuse(err))
        })
    }

    fn part_uploaded<'a>(
        &'a self,
        upload_id: &'a str,
        part: &'a UploadedPart,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if !self.keep_part_checksums {
                return;
            }
            if let Err(err) = self
                .store
                .save_part(&self.lease.job_id, upload_id, part)
                .await
            {
                // Not fatal: a resuming attempt uploads this part again.
                warn!(part = part.number, error = %err, "could not keep the part's checksum");
            }
        })
    }

    /// One fenced write of the job record per step of the hashed prefix
    /// (about one per part). Steps that come while a write is under way are
    /// folded into one write of the newest state.
    fn digest_advanced<'a>(&'a self, state: &'a DigestState) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            {
                let mut latest = lock(&self.digest_latest);
                if latest
                    .as_ref()
                    .is_none_or(|(prefix, _)| *prefix < state.prefix())
                {
                    *latest = Some((state.prefix(), state.encode()));
                }
            }
            let mut written = self.digest_written.lock().await;
            let Some((prefix, encoded)) = lock(&self.digest_latest)
                .clone()
                .filter(|(prefix, _)| *prefix > *written)
            else {
                return;
            };
            if self.lease_lost.load(Ordering::SeqCst) {
                return;
            }
            match self.store.save_digest_state(&self.lease, &encoded).await {
                Ok(()) => *written = prefix,
                Err(StoreError::LeaseLost) => {
                    self.lease_lost.store(true, Ordering::SeqCst);
                }
                // Not fatal: a resuming attempt re-reads more parts.
                Err(err) => warn!(error = %err, "could not keep the digest state"),
            }
        })
    }

    fn part_checksums<'a>(
        &'a self,
        upload_id: &'a str,
        numbers: &'a [u32],
    ) -> BoxFuture<'a, Result<HashMap<u32, u64>, TransferError>> {
        Box::pin(async move {
            patiently("part checksum read", || {
                self.store
                    .part_checksums(&self.lease.job_id, upload_id, numbers)
            })
            .await
            .map_err(|err| self.refuse(err))
        })
    }

    fn may_write(&self) -> Result<(), TransferError> {
        if self.lease_lost.load(Ordering::SeqCst) || Instant::now() > *lock(&self.valid_until) {
            return Err(TransferError::Cancelled);
        }
        Ok(())
    }

    fn creating_upload(&self) -> BoxFuture<'_, Result<(), TransferError>> {
        Box::pin(async move {
            patiently("destination marker write", || {
                self.store
                    .mark_destination(&self.lease.job_id, &self.bucket, &self.key)
            })
            .await
            .map_err(|err| self.refuse(err))
        })
    }

    fn may_be_stored_already(&self) -> bool {
        self.lease.attempts > 1
    }

    fn before_complete(&self, object_crc: u64) -> BoxFuture<'_, Result<(), TransferError>> {
        Box::pin(async move {
            // A fenced renew: fails if another worker claimed the job, and
            // otherwise keeps everyone else out for the lease's duration.
            // Ridden out like the journal's other writes: throttling here
            // must not cost the whole attempt. The lease counts from the
            // try that was applied, and Complete follows only that one.
            let mut sent_at = Instant::now();
            patiently("lease extension before Complete", || {
                sent_at = Instant::now();
                self.store
                    .extend_lease(&self.lease, self.lease_duration, object_crc)
            })
            .await
            .map_err(|err| self.refuse(err))?;
            self.renewed(sent_at);
            Ok(())
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
