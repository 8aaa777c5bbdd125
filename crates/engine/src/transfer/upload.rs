//! Writes into a multipart upload: CreateMultipartUpload, one UploadPart
//! with its CRC (journal gate first, CRC and digest state kept after), and
//! the hand-off of an uploaded part's buffer to the digest or the pool.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::run::Run;
use crate::digest::DigestState;
use crate::error::TransferError;
use crate::events::{PartDone, RetrySide};
use crate::pool::{FrozenPart, PartBuffer};
use crate::sink::UploadedPart;
use crate::sync::lock;

impl Run {
    pub(super) async fn create_upload(&self) -> Result<String, TransferError> {
        self.journal.creating_upload().await?;
        self.engine
            .config
            .retry
            .run(
                &self.cancel,
                |err, attempt| self.retried(RetrySide::Upload, err, attempt),
                |_| async {
                    self.journal.may_write()?;
                    self.engine.sink.create(self.destination()).await
                },
            )
            .await
    }

    pub(super) async fn upload_part(
        &self,
        number: u32,
        buffer: PartBuffer,
        crc: u64,
        upload_id: &str,
        downloaded: Duration,
    ) -> Result<UploadedPart, TransferError> {
        let len = buffer.len() as u64;
        let (bytes, frozen) = buffer.freeze();
        let sent = self.checksum_mode().of_body(&bytes);
        let started = Instant::now();
        let etag = self
            .engine
            .config
            .retry
            .run(
                &self.cancel,
                |err, attempt| self.retried(RetrySide::Upload, err, attempt),
                |_| async {
                    // A run that may have lost its job must not write again.
                    self.journal.may_write()?;
                    self.engine
                        .sink
                        .upload_part(
                            &self.spec.destination,
                            upload_id,
                            number,
                            bytes.clone(),
                            crc,
                            sent.as_deref(),
                        )
                        .await
                },
            )
            .await?;
        let uploaded = started.elapsed();
        let part = UploadedPart {
            number,
            etag,
            crc,
            len,
            sent,
        };
        // The buffer goes back (or on to the digest) before the journal's
        // writes: no part memory waits on DynamoDB.
        let state = self.hash_or_recycle(number, bytes, crc, frozen);
        // Only a checkpointed upload can be resumed, so only its CRCs are kept.
        if self.checkpointed.get().is_some() {
            self.journal.part_uploaded(upload_id, &part).await;
        }
        // After the part's CRC: a state is of use only with the CRCs of
        // every part it covers.
        if let Some(state) = state {
            self.journal.digest_advanced(&state).await;
        }
        self.acknowledged.fetch_add(len, Ordering::Relaxed);
        self.observer.on_part_done(PartDone {
            number,
            len,
            download: downloaded,
            upload: uploaded,
        });
        self.emit_progress(false);
        Ok(part)
    }

    /// Hands a finished part to the in-order digest, or back to the pool.
    /// Returns the digest state to keep when this moved the hashed prefix of
    /// a checkpointed upload to a new part boundary.
    pub(super) fn hash_or_recycle(
        &self,
        number: u32,
        bytes: Bytes,
        crc: u64,
        frozen: FrozenPart,
    ) -> Option<DigestState> {
        let Some(digest) = self.digest() else {
            self.engine.pool.recycle(bytes, frozen);
            return None;
        };
        let mut digest = lock(digest);
        let before = digest.hashed_bytes();
        // The budget share travels with the bytes until they are hashed.
        digest.add(number, bytes, crc, Some(frozen));
        let binding = self.checkpointed.get()?;
        (digest.hashed_bytes() > before)
            .then(|| digest.state(binding))
            .flatten()
    }
}
