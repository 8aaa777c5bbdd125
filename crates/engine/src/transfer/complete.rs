//! The end of a multipart upload: the parts' sizes and the expected digest
//! checked, the full-object CRC composed, CompleteMultipartUpload (not
//! cancellable; a lost reply recognised, also behind a conditional write's
//! 412) — or, on failure, abort unless a
//! later run can resume the upload.

use tokio_util::sync::CancellationToken;

use super::run::Run;
use super::spec::TransferOutcome;
use crate::checksum;
use crate::error::{ErrorClass, TransferError};
use crate::events::RetrySide;
use crate::plan::MAX_PARTS;
use crate::sink::{StoredObject, UploadedPart};
use crate::upload_checksum::Whole;

impl Run {
    /// Completes after every check passed, or aborts the upload — unless a
    /// later run can resume it (checkpointed, durable journal, and the error
    /// was a cancellation or transient).
    pub(super) async fn finish(
        &self,
        parts: Result<Vec<UploadedPart>, TransferError>,
        upload_id: &str,
        part_size: u64,
        size: u64,
    ) -> Result<TransferOutcome, TransferError> {
        let completed = async {
            let mut parts = parts?;
            parts.sort_by_key(|p| p.number);
            let sum: u64 = parts.iter().map(|p| p.len).sum();
            if sum != size {
                return Err(TransferError::SizeMismatch {
                    expected: size,
                    actual: sum,
                });
            }
            let full_crc = checksum::compose(parts.iter().map(|p| (p.crc, p.len)));
            self.verify_expected(size, full_crc)?;
            let count = u32::try_from(parts.len()).unwrap_or(MAX_PARTS);
            let whole = self.checksum_mode().whole_multipart(&parts);
            if self.journal.may_be_stored_already()
                && let Some(stored) = self
                    .identical_object(full_crc, whole.as_ref(), size)
                    .await?
            {
                tracing::info!("an earlier attempt stored this object already; keeping it");
                self.abort(upload_id).await;
                return self
                    .outcome(stored, full_crc, whole.as_ref(), count, part_size, size)
                    .await;
            }
            let stored = self
                .complete(&parts, upload_id, full_crc, whole.as_ref(), size)
                .await?;
            self.outcome(stored, full_crc, whole.as_ref(), count, part_size, size)
                .await
        }
        .await;
        if let Err(err) = &completed {
            let resumable = self.checkpointed.get().is_some()
                && self.journal.durable()
                && matches!(err.class(), ErrorClass::Cancelled | ErrorClass::Transient);
            if resumable {
                tracing::debug!(error = %err, "keeping multipart upload for a later run");
            } else {
                tracing::debug!(error = %err, "aborting multipart upload");
                self.abort(upload_id).await;
            }
        }
        completed
    }

    pub(super) async fn complete(
        &self,
        parts: &[UploadedPart],
        upload_id: &str,
        full_crc: u64,
        whole: Option<&Whole>,
        size: u64,
    ) -> Result<StoredObject, TransferError> {
        let sink = &self.engine.sink;
        let dest = &self.spec.destination;
        self.journal.before_complete(full_crc).await?;
        let mut attempts = 0;
        // Not cancellable: a Complete cut short may still have succeeded, and
        // the lease was just extended for it.
        let never = CancellationToken::new();
        let result = self
            .engine
            .config
            .retry
            .run(
                &never,
                |err, attempt| self.retried(RetrySide::Complete, err, attempt),
                |attempt| {
                    attempts = attempt + 1;
                    async move {
                        self.journal.may_write()?;
                        sink.complete(dest, upload_id, parts, full_crc, size).await
                    }
                },
            )
            .await;
        match result {
            // A retried Complete may find its upload gone because an earlier
            // try succeeded after all: the object there is ours if its checksum is.
            Err(err) if attempts > 1 && err.kind() == "s3_upload_gone" => {
                match self.identical_object(full_crc, whole, size).await? {
                    Some(stored) => Ok(stored),
                    None => Err(err),
                }
            }
            // `if_exists: fail`: the object there may be this upload's own,
            // completed by a try whose reply was lost (the SDK's retry then
            // meets its own object).
            Err(TransferError::DestinationExists) => {
                match self.identical_object(full_crc, whole, size).await? {
                    Some(stored) => Ok(stored),
                    None => Err(TransferError::DestinationExists),
                }
            }
            other => other,
        }
    }
}
