//! The destination's `if_exists` rule, checked once the source's first
//! answer is in and before its body is read: `skip` ends a transfer whose
//! object is already this version of the source, `fail` refuses to touch an
//! object that is there. The write itself carries the `fail` rule too
//! (`If-None-Match: *`, see `sink.rs`), which is what makes it hold against
//! a writer that comes between this check and the write.

use super::run::Run;
use super::spec::TransferOutcome;
use crate::destination::IfExists;
use crate::error::TransferError;
use crate::events::RetrySide;
use crate::source::{Integrity, Probe};

impl Run {
    /// `Some` when the transfer is done without storing anything (`skip`);
    /// `DestinationExists` when it must not store (`fail`).
    pub(super) async fn check_existing(
        &self,
        probe: &Probe,
    ) -> Result<Option<TransferOutcome>, TransferError> {
        let dest = self.destination();
        match dest.if_exists {
            IfExists::Overwrite => return Ok(None),
            // An earlier try of this job may have stored the object and lost
            // its reply, or died before recording it: then the object is
            // its own. The conditional write finds it, and the identical-
            // object check behind it tells the two apart.
            IfExists::Fail if self.journal.may_be_stored_already() => return Ok(None),
            IfExists::Fail | IfExists::Skip => {}
        }
        let existing = self
            .engine
            .config
            .retry
            .run(
                &self.cancel,
                |err, attempt| self.retried(RetrySide::Upload, err, attempt),
                |_| self.engine.sink.existing(dest),
            )
            .await?;
        let Some(existing) = existing else {
            return Ok(None);
        };
        match dest.if_exists {
            IfExists::Fail => Err(TransferError::DestinationExists),
            IfExists::Skip if existing.same_source_version(&probe.origin, probe.length) => {
                tracing::info!("the destination already holds this version of the source: skipped");
                Ok(Some(TransferOutcome {
                    size: existing.size.unwrap_or_default(),
                    etag: existing.etag,
                    checksum_confirmed_by_s3: existing.crc64nvme.is_some(),
                    checksum_crc64nvme: existing.crc64nvme.unwrap_or_default(),
                    parts: 0,
                    part_size: 0,
                    duration: std::time::Duration::ZERO,
                    retries: 0,
                    bytes_fetched: 0,
                    parts_reused: 0,
                    // Nothing was read; the worker records no integrity
                    // for a skipped job.
                    integrity: Integrity::Pinned,
                    skipped: true,
                    source_digests: Vec::new(),
                }))
            }
            IfExists::Skip | IfExists::Overwrite => Ok(None),
        }
    }
}
