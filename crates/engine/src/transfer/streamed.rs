//! The streamed path: unknown length or no ranges. One body is read in
//! order and cut into parts (growing ones when the length is unknown) that
//! upload, in a [`PartSet`] the path owns, while the next part is read; a
//! body that ends within the first part goes to the single PutObject.

use std::sync::Arc;
use std::time::Duration;

use super::parts::PartSet;
use super::run::{Ran, Run};
use crate::checksum::PartCrc;
use crate::error::TransferError;
use crate::events::RetrySide;
use crate::plan::{GrowingPlan, KnownPlan, MAX_PARTS};
use crate::pool::PartBuffer;
use crate::sink::UploadedPart;
use crate::source::{BodyStream, Probe};

impl Run {
    /// Unknown length or no ranges: one body read in order, cut into parts that
    /// upload while the next part is read.
    pub(super) async fn streamed(self: &Arc<Self>, probe: Probe) -> Result<Ran, TransferError> {
        let config = &self.engine.config;
        let budget = self.engine.pool.budget() as u64;
        let known = probe
            .length
            .map(|length| KnownPlan::new(length, config.part_size, budget))
            .transpose()?;
        let growing = GrowingPlan::new(config.part_size, budget);
        let part_len = |number: u32| match known {
            Some(plan) => plan.part(number).len,
            None => growing.part_size(number),
        };
        let mut stream = BodyStream::new(
            self.engine.source.clone(),
            self.spec.source.clone(),
            probe,
            config.retry,
            self.cancel.clone(),
            Arc::clone(&self.pacer),
        );
        let (first, first_crc) = self.fill_from_stream(&mut stream, part_len(1)).await?;
        self.check_size_limit(stream.offset())?;
        if stream.at_end().await? {
            let _ = self.integrity.set(stream.integrity());
            // Read: its host slot is not needed for the upload.
            drop(stream);
            return self
                .single_put(first, first_crc, part_len(1))
                .await
                .map(Ran::Stored);
        }
        // Without a slot, the part read so far is dropped with the stream and
        // read again after the wait: a waiter holds no memory or host slot.
        if !self.enter_multipart() {
            return Ok(Ran::NeedsMultipartSlot);
        }
        let upload_id = self.create_upload().await?;
        let result = self
            .streamed_parts(&mut stream, first, first_crc, &part_len, &upload_id)
            .await;
        let part_size = known.map_or(growing.base, |p| p.part_size);
        let size = stream.offset();
        let _ = self.integrity.set(stream.integrity());
        drop(stream);
        self.finish(result, &upload_id, part_size, size)
            .await
            .map(Ran::Stored)
    }

    pub(super) async fn streamed_parts(
        self: &Arc<Self>,
        stream: &mut BodyStream,
        first: PartBuffer,
        first_crc: PartCrc,
        part_len: &(dyn Fn(u32) -> u64 + Sync),
        upload_id: &str,
    ) -> Result<Vec<UploadedPart>, TransferError> {
        let mut parts = PartSet::new(self);
        let mut next = Some((first, first_crc));
        let mut number = 1;
        while let Some((buffer, crc)) = next.take() {
            let permit = parts.slot().await?;
            let run = Arc::clone(self);
            let upload_id = upload_id.to_owned();
            parts.spawn(async move {
                let _permit = permit;
                run.upload_part(number, buffer, crc.value(), &upload_id, Duration::ZERO)
                    .await
            });
            if stream.at_end().await? {
                break;
            }
            number += 1;
            if number > MAX_PARTS {
                return Err(TransferError::TooLarge {
                    size: stream.offset(),
                    reason: "the stream outgrew 10,000 parts within the memory budget".into(),
                });
            }
            let filled = tokio::select! {
                biased;
                failed = parts.first_failure() => return Err(failed),
                filled = self.fill_from_stream(stream, part_len(number)) => filled?,
            };
            // An endless body is stopped here, part by part.
            self.check_size_limit(stream.offset())?;
            next = Some(filled);
        }
        parts.finish().await
    }

    pub(super) async fn fill_from_stream(
        &self,
        stream: &mut BodyStream,
        len: u64,
    ) -> Result<(PartBuffer, PartCrc), TransferError> {
        let mut buffer = self.reserve(len).await?;
        let mut crc = PartCrc::default();
        let count = |n| self.downloaded(n);
        let mut on_retry = |err: &TransferError, attempt| {
            self.retried(RetrySide::Download, err, attempt);
        };
        stream
            .fill(
                &mut buffer,
                usize::try_from(len).unwrap_or(usize::MAX),
                &mut crc,
                &count,
                &mut on_retry,
            )
            .await?;
        Ok((buffer, crc))
    }
}
