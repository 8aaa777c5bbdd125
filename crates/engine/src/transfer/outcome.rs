//! The end of every path: S3's reported full-object checksum compared with
//! ours (a mismatch deletes the object), then the [`TransferOutcome`] with
//! this run's counters.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::run::Run;
use super::spec::TransferOutcome;
use crate::checksum;
use crate::error::TransferError;
use crate::sink::StoredObject;
use crate::source::Integrity;
use crate::upload_checksum::Whole;

impl Run {
    pub(super) fn finished(&self, stored: TransferOutcome, started: Instant) -> TransferOutcome {
        self.emit_progress(true);
        TransferOutcome {
            duration: started.elapsed(),
            retries: self.retries.load(Ordering::Relaxed),
            bytes_fetched: self.fetched.load(Ordering::Relaxed),
            parts_reused: self.reused_parts.load(Ordering::Relaxed),
            // A resumed or adopted upload was pinned by its checkpoint.
            integrity: self.integrity.get().copied().unwrap_or(Integrity::Pinned),
            source_digests: if stored.skipped {
                Vec::new()
            } else {
                self.source_digests_checked()
            },
            ..stored
        }
    }

    /// Compares S3's reported checksum with ours; a mismatch deletes the
    /// object. A store that reports no CRC64NVME may still confirm the
    /// bucket mode's whole-object value (`whole`).
    pub(super) async fn outcome(
        &self,
        stored: StoredObject,
        crc: u64,
        whole: Option<&Whole>,
        parts: u32,
        part_size: u64,
        size: u64,
    ) -> Result<TransferOutcome, TransferError> {
        let ours = checksum::to_base64(crc);
        let confirmed = match stored.crc64nvme.as_deref() {
            Some(theirs) if theirs != ours => {
                let _ = self.engine.sink.delete(&self.spec.destination).await;
                return Err(TransferError::ChecksumMismatch {
                    algorithm: "crc64nvme",
                    expected: ours,
                    actual: theirs.to_owned(),
                });
            }
            Some(_) => true,
            None => whole.is_some_and(|whole| whole.confirmed_by(self.checksum_mode(), &stored)),
        };
        Ok(TransferOutcome {
            size,
            etag: stored.etag,
            checksum_crc64nvme: ours,
            checksum_confirmed_by_s3: confirmed,
            parts,
            part_size,
            duration: Duration::ZERO,
            retries: 0,
            bytes_fetched: 0,
            parts_reused: 0,
            // Set by `finished`, which every outcome passes through.
            integrity: Integrity::Pinned,
            skipped: false,
            source_digests: Vec::new(),
        })
    }
}
