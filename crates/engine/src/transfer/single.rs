//! The small path: the whole object in one buffer, stored with one PutObject
//! (after checking for an identical object a lost reply or an earlier run
//! left), counted as a small transfer for the poll loop.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::run::Run;
use super::spec::TransferOutcome;
use crate::checksum::PartCrc;
use crate::error::TransferError;
use crate::events::{PartDone, RetrySide};
use crate::pool::PartBuffer;
use crate::sync::lock;

impl Run {
    pub(super) async fn single_put(
        &self,
        buffer: PartBuffer,
        crc: PartCrc,
        part_size: u64,
    ) -> Result<TransferOutcome, TransferError> {
        // Known small now: a poll loop need not wait for this one.
        lock(&self.deciding).take();
        let size = buffer.len() as u64;
        let crc = crc.value();
        let (bytes, frozen) = buffer.freeze();
        let mode = self.checksum_mode();
        let sent = mode.of_body(&bytes);
        let whole = mode.whole_single(sent.as_deref());
        if let Some(digest) = self.digest() {
            lock(digest).add(1, bytes.clone(), crc, None);
        }
        self.verify_expected(size, crc)?;
        let uploaded = Instant::now();
        let sink = &self.engine.sink;
        let dest = self.destination();
        let (sent, whole) = (sent.as_deref(), whole.as_ref());
        let stored = self
            .engine
            .config
            .retry
            .run(
                &self.cancel,
                |err, attempt| self.retried(RetrySide::Upload, err, attempt),
                |tries| {
                    let bytes = bytes.clone();
                    async move {
                        // A run that may have lost its job must not write again.
                        self.journal.may_write()?;
                        // A PutObject that was applied but whose reply was lost
                        // (or an earlier run's) already stored these bytes.
                        if (tries > 0 || self.journal.may_be_stored_already())
                            && let Some(stored) = self.identical_object(crc, whole, size).await?
                        {
                            return Ok(stored);
                        }
                        match sink.put(dest, bytes, crc, sent).await {
                            // `if_exists: fail` met an object: this job's own
                            // if a try whose reply was lost stored it.
                            Err(TransferError::DestinationExists) => self
                                .identical_object(crc, whole, size)
                                .await?
                                .ok_or(TransferError::DestinationExists),
                            other => other,
                        }
                    }
                },
            )
            .await?;
        self.engine.pool.recycle(bytes, frozen);
        self.engine.multipart.small_stored();
        self.acknowledged.fetch_add(size, Ordering::Relaxed);
        self.observer.on_part_done(PartDone {
            number: 1,
            len: size,
            download: Duration::ZERO,
            upload: uploaded.elapsed(),
        });
        self.outcome(stored, crc, whole, 1, part_size, size).await
    }
}
