//! The ranged path: known length and working ranges. Parts are fetched in
//! parallel, each with its own ranged GET (part 1 reuses the probe's answer,
//! more parts at once for a far source), into a [`PartSet`] the path owns;
//! a one-part plan goes to the single PutObject instead. Also the read of one
//! range with its retries, the checkpoint written before the first part, and
//! the re-read of finished parts a digest needs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use reqwest::Response;
use tokio_util::sync::CancellationToken;

use super::parts::PartSet;
use super::run::{Ran, Run};
use crate::checksum::PartCrc;
use crate::config::MAX_CONCURRENT_PARTS;
use crate::digest::Binding;
use crate::error::{ErrorClass, TransferError};
use crate::events::RetrySide;
use crate::plan::{KnownPlan, PartSpec};
use crate::pool::PartBuffer;
use crate::reach;
use crate::resume::Checkpoint;
use crate::sink::UploadedPart;
use crate::source::{Integrity, OpenBody, Probe, Validator};

impl Run {
    /// Known length and working ranges: parts are fetched in parallel, each with
    /// its own ranged GET; part 1 reuses the probe's answer.
    pub(super) async fn ranged(
        self: &Arc<Self>,
        probe: Probe,
        length: u64,
    ) -> Result<Ran, TransferError> {
        let config = &self.engine.config;
        let plan = KnownPlan::new(length, config.part_size, self.engine.pool.budget() as u64)?;
        // The probe asked for `config.part_size` bytes; that is part 1 only when
        // the plan kept the preferred size.
        let mut first = probe.body.filter(|_| plan.part_size == config.part_size);
        let validator = probe.validator;
        // Without a validator the probe's answer held the whole resource, so
        // the plan is one part read in one answer (see `source::probe_range`).
        let _ = self.integrity.set(if validator.is_some() {
            Integrity::Pinned
        } else {
            Integrity::OneAnswer
        });
        if plan.is_single_put() {
            // The host slot before the memory (see `source::hosts`).
            let (response, host_slot) = match first.take() {
                Some(open) => (Some(open.response), open.slot),
                None => (None, self.host_slot().await?),
            };
            let mut buffer = self.reserve(length).await?;
            let mut crc = PartCrc::default();
            if length > 0 {
                self.fetch_range(
                    plan.part(1),
                    &mut buffer,
                    &mut crc,
                    response,
                    validator.as_ref(),
                )
                .await?;
            }
            // Read: the host may serve another request during the upload.
            drop(host_slot);
            return self
                .single_put(buffer, crc, plan.part_size)
                .await
                .map(Ran::Stored);
        }
        if !self.enter_multipart() {
            return Ok(Ran::NeedsMultipartSlot);
        }
        let upload_id = self.create_upload().await?;
        let result = async {
            self.write_checkpoint(&upload_id, &plan, validator.as_ref())
                .await?;
            let first = first.map(|response| (1, response));
            self.ranged_parts(&plan, first, validator, &upload_id, BTreeMap::new(), 0)
                .await
        }
        .await;
        self.finish(result, &upload_id, plan.part_size, length)
            .await
            .map(Ran::Stored)
    }

    /// Persists what a later run needs to resume this upload — possible only
    /// when a validator pins the source's content.
    pub(super) async fn write_checkpoint(
        &self,
        upload_id: &str,
        plan: &KnownPlan,
        validator: Option<&Validator>,
    ) -> Result<(), TransferError> {
        let Some(validator) = validator else {
            return Ok(());
        };
        if !self.journal.durable() {
            return Ok(());
        }
        let checkpoint = Checkpoint {
            upload_id: upload_id.to_owned(),
            part_size: plan.part_size,
            length: plan.size,
            validator: validator.clone(),
            digest_state: None,
            object_crc: None,
        };
        self.journal.checkpoint(&checkpoint).await?;
        let _ = self.checkpointed.set(Binding {
            upload_id: upload_id.to_owned(),
            part_size: plan.part_size,
        });
        Ok(())
    }

    /// Fetches and uploads every part of `plan` not in `done`. Parts in `done`
    /// are re-read (and their CRC compared) only when an expected digest needs
    /// their bytes: not those among the first `hashed` parts, which a restored
    /// digest state covers. `first` is a response already opened for that part.
    pub(super) async fn ranged_parts(
        self: &Arc<Self>,
        plan: &KnownPlan,
        mut first: Option<(u32, OpenBody)>,
        validator: Option<Validator>,
        upload_id: &str,
        mut done: BTreeMap<u32, UploadedPart>,
        hashed: u32,
    ) -> Result<Vec<UploadedPart>, TransferError> {
        let validator = Arc::new(validator);
        let mut parts = PartSet::new(self);
        for spec in plan.parts() {
            let known = done.remove(&spec.number);
            if let Some(part) = &known
                && (self.digest().is_none() || spec.number <= hashed)
            {
                parts.push_done(part.clone());
                continue;
            }
            // An answer opened for a later part would hold its host slot
            // while this part waits for one: only the part it was opened for
            // may use it, as the next part fetched.
            let first = first.take().filter(|(number, _)| *number == spec.number);
            parts.widen(reach::downloads_for(
                self.concurrency(),
                self.request_wait.shortest(),
                plan.part_size,
                self.engine.pool.budget(),
                MAX_CONCURRENT_PARTS,
            ));
            let permit = parts.slot().await?;
            // The host slot before the memory (see `source::hosts`).
            let (first, host_slot) = match first {
                Some((_, open)) => (Some(open.response), open.slot),
                None => (None, parts.host_slot().await?),
            };
            let mut buffer = parts.reserve(spec.len).await?;
            let run = Arc::clone(self);
            let validator = Arc::clone(&validator);
            let upload_id = upload_id.to_owned();
            parts.spawn(async move {
                let _permit = permit;
                let started = Instant::now();
                let mut crc = PartCrc::default();
                run.fetch_range(
                    spec,
                    &mut buffer,
                    &mut crc,
                    first,
                    validator.as_ref().as_ref(),
                )
                .await?;
                // Read: the host may serve another request during the upload.
                drop(host_slot);
                let downloaded = started.elapsed();
                match known {
                    Some(part) => run.hash_only(part, buffer, crc.value()).await,
                    None => {
                        run.upload_part(spec.number, buffer, crc.value(), &upload_id, downloaded)
                            .await
                    }
                }
            });
        }
        parts.finish().await
    }

    /// Reads `spec` into `buffer`, resuming from the last good byte after errors.
    pub(super) async fn fetch_range(
        &self,
        spec: PartSpec,
        buffer: &mut PartBuffer,
        crc: &mut PartCrc,
        mut first: Option<Response>,
        validator: Option<&Validator>,
    ) -> Result<(), TransferError> {
        let source = &self.engine.source;
        let retry = &self.engine.config.retry;
        let want = usize::try_from(spec.len).unwrap_or(usize::MAX);
        let total = Some(self.total.load(Ordering::Relaxed));
        let count = |n| self.downloaded(n);
        let mut attempt = 0;
        loop {
            let result = async {
                if validator.is_none() && !buffer.is_empty() {
                    // Nothing pins the version: the part is read again, whole,
                    // in one answer, rather than continued from another.
                    buffer.truncate(0);
                    *crc = PartCrc::default();
                }
                let mut response = match first.take() {
                    Some(response) => response,
                    None => {
                        let start = spec.offset + buffer.len() as u64;
                        let asked = Instant::now();
                        let response = source
                            .get_range(
                                &self.spec.source,
                                start,
                                Some(spec.last_byte()),
                                total,
                                validator,
                            )
                            .await?;
                        self.request_wait.observe(asked.elapsed());
                        response
                    }
                };
                source
                    .read_into(&mut response, buffer, want, crc, &count, &self.pacer)
                    .await?;
                if buffer.len() < want {
                    return Err(TransferError::SourceLength {
                        expected: spec.len,
                        received: buffer.len() as u64,
                    });
                }
                Ok(())
            };
            let err = tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Err(TransferError::Cancelled),
                result = result => match result {
                    Ok(()) => return Ok(()),
                    Err(err) => err,
                },
            };
            attempt += 1;
            if !retryable(&err) || attempt >= retry.max_attempts {
                return Err(err);
            }
            self.retried(RetrySide::Download, &err, attempt);
            backoff(retry, attempt, &self.cancel).await?;
        }
    }

    /// A part S3 already holds, read again so the digest covers it. Its bytes
    /// must be the ones uploaded earlier: same CRC, or the source changed.
    pub(super) async fn hash_only(
        &self,
        part: UploadedPart,
        buffer: PartBuffer,
        crc: u64,
    ) -> Result<UploadedPart, TransferError> {
        if crc != part.crc {
            return Err(TransferError::SourceChanged);
        }
        let (bytes, frozen) = buffer.freeze();
        if let Some(state) = self.hash_or_recycle(part.number, bytes, crc, frozen) {
            self.journal.digest_advanced(&state).await;
        }
        Ok(part)
    }
}

fn retryable(err: &TransferError) -> bool {
    err.class() == ErrorClass::Transient && !matches!(err, TransferError::SourceChanged)
}

async fn backoff(
    retry: &crate::retry::RetryPolicy,
    attempt: u32,
    cancel: &CancellationToken,
) -> Result<(), TransferError> {
    tokio::select! {
        () = cancel.cancelled() => Err(TransferError::Cancelled),
        () = tokio::time::sleep(retry.delay(attempt)) => Ok(()),
    }
}
