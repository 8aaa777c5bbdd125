//! The path of a transfer handed a [`Checkpoint`]: the upload is reopened
//! (ListParts is the truth, the source re-checked with a ranged GET for the
//! first missing part), then continued through the ranged path, adopted
//! when an earlier run completed it, or aborted to start over. Also the
//! restore of a kept digest state. What a checkpoint is, and the
//! [`Journal`](crate::resume::Journal), live in [`crate::resume`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::run::Run;
use super::spec::TransferOutcome;
use crate::checksum;
use crate::digest::{Binding, DigestState, Unusable};
use crate::error::TransferError;
use crate::events::RetrySide;
use crate::plan::{KnownPlan, MAX_PARTS, MIN_PART_SIZE};
use crate::resume::{Checkpoint, Reopen, Reopened};
use crate::sink::{StoredObject, UploadedPart};
use crate::source::Validator;
use crate::sync::lock;

impl Run {
    /// Continues a reopened upload: only the missing parts are fetched and
    /// uploaded (finished ones are re-read only when a digest needs them).
    pub(super) async fn resumed(
        self: &Arc<Self>,
        reopened: Reopened,
        checkpoint: &Checkpoint,
    ) -> Result<TransferOutcome, TransferError> {
        let Reopened { plan, done, first } = reopened;
        self.total.store(plan.size, Ordering::Relaxed);
        self.check_size_limit(plan.size)?;
        if let Some(expected) = self.spec.expected.size
            && expected != plan.size
        {
            self.abort(&checkpoint.upload_id).await;
            return Err(TransferError::SizeMismatch {
                expected,
                actual: plan.size,
            });
        }
        let _ = self.checkpointed.set(Binding {
            upload_id: checkpoint.upload_id.clone(),
            part_size: plan.part_size,
        });
        let hashed = self.restore_digest(checkpoint, &done);
        let reused: u64 = done.values().map(|p| p.len).sum();
        self.reused_parts.store(
            u32::try_from(done.len()).unwrap_or(MAX_PARTS),
            Ordering::Relaxed,
        );
        self.acknowledged.store(reused, Ordering::Relaxed);
        self.journal
            .resumed(self.reused_parts.load(Ordering::Relaxed), reused)
            .await?;
        self.observer.on_start(Some(plan.size));
        let validator = Some(checkpoint.validator.clone());
        let upload_id = &checkpoint.upload_id;
        let result = self
            .ranged_parts(&plan, first, validator, upload_id, done, hashed)
            .await;
        self.finish(result, upload_id, plan.part_size, plan.size)
            .await
    }

    /// Accepts the object an earlier run completed as this transfer's result.
    pub(super) async fn adopt_completed(
        &self,
        stored: StoredObject,
        crc: u64,
        plan: KnownPlan,
    ) -> Result<TransferOutcome, TransferError> {
        tracing::info!("the upload was completed by an earlier attempt");
        let parts = plan.part_count();
        self.journal.resumed(parts, plan.size).await?;
        self.reused_parts.store(parts, Ordering::Relaxed);
        self.acknowledged.store(plan.size, Ordering::Relaxed);
        self.total.store(plan.size, Ordering::Relaxed);
        self.outcome(stored, crc, None, parts, plan.part_size, plan.size)
            .await
    }

    /// Checks the source and the upload against `checkpoint`.
    pub(super) async fn reopen(
        self: &Arc<Self>,
        checkpoint: &Checkpoint,
    ) -> Result<Reopen, TransferError> {
        let engine = &self.engine;
        if checkpoint.part_size < MIN_PART_SIZE
            || checkpoint.length <= checkpoint.part_size
            || checkpoint.length.div_ceil(checkpoint.part_size) > u64::from(MAX_PARTS)
        {
            return Ok(Reopen::Restart(
                "the checkpoint's part plan is not valid".into(),
            ));
        }
        if checkpoint.part_size > engine.pool().budget() as u64 {
            return Ok(Reopen::Restart(format!(
                "the checkpoint's {}-byte parts do not fit this worker's memory budget",
                checkpoint.part_size
            )));
        }
        let plan = KnownPlan {
            size: checkpoint.length,
            part_size: checkpoint.part_size,
        };
        let Some(listed) = engine
            .config
            .retry
            .run(
                &self.cancel,
                |err, attempt| self.retried(RetrySide::Upload, err, attempt),
                |_| {
                    engine
                        .sink
                        .list_parts(&self.spec.destination, &checkpoint.upload_id)
                },
            )
            .await?
        else {
            return self.completed_or_gone(checkpoint, plan).await;
        };
        // Only parts with the planned size and a known CRC count as done.
        let fitting: Vec<_> = listed
            .into_iter()
            .filter(|p| p.number >= 1 && p.number <= plan.part_count())
            .filter(|p| p.len == plan.part(p.number).len)
            .collect();
        let unlisted: Vec<u32> = fitting
            .iter()
            .filter(|p| p.crc.is_none())
            .map(|p| p.number)
            .collect();
        let persisted = if unlisted.is_empty() {
            HashMap::new()
        } else {
            self.journal
                .part_checksums(&checkpoint.upload_id, &unlisted)
                .await?
        };
        // In a CRC32C/CRC32 mode Complete names each part's value too: a
        // part the store does not list it for is done again.
        let value_needed = self.checksum_mode().part_value_needed();
        let done: BTreeMap<u32, UploadedPart> = fitting
            .into_iter()
            .filter(|p| !value_needed || p.sent.is_some())
            .filter_map(|p| {
                let crc = p.crc.or_else(|| persisted.get(&p.number).copied())?;
                Some((
                    p.number,
                    UploadedPart {
                        number: p.number,
                        etag: p.etag,
                        crc,
                        len: p.len,
                        sent: p.sent,
                    },
                ))
            })
            .collect();
        // The source is asked for the first part still missing (or, when none
        // is, for the last byte): the answer both checks the validator and,
        // usually, is the first part to fetch.
        let first_missing = plan.parts().find(|p| !done.contains_key(&p.number));
        let (start, end) = match first_missing {
            Some(part) => (part.offset, part.last_byte()),
            None => (plan.size - 1, plan.size - 1),
        };
        let probe = engine
            .config
            .retry
            .run(
                &self.cancel,
                |err, attempt| self.retried(RetrySide::Download, err, attempt),
                |_| engine.source.probe_range(&self.spec.source, start, end),
            )
            .await?;
        if !probe.ranges {
            return Ok(Reopen::Restart(
                "the source no longer answers ranged requests".into(),
            ));
        }
        if probe.length != Some(checkpoint.length) {
            return Ok(Reopen::Restart(format!(
                "the source's length changed from {} to {}",
                checkpoint.length,
                probe.length.map_or("unknown".into(), |l| l.to_string())
            )));
        }
        if probe.validator.as_ref() != Some(&checkpoint.validator) {
            return Ok(Reopen::Restart(format!(
                "the source changed: {} was {}, now {}",
                checkpoint.validator.name(),
                checkpoint.validator.as_header_value(),
                probe
                    .validator
                    .as_ref()
                    .map_or("absent", Validator::as_header_value)
            )));
        }
        // The same version as the first attempt's (its validator matched):
        // what this answer says it hashes to is checked as the first
        // attempt's answer was, from the digest state that attempt kept
        // when it hashed the same algorithms, else from byte 0.
        self.learn_origin(&probe.origin, &probe.digests);
        Ok(Reopen::Resumed(Reopened {
            plan,
            done,
            first: first_missing
                .zip(probe.body)
                .map(|(part, body)| (part.number, body)),
        }))
    }

    /// The upload is gone: either aborted (start over) or completed by a run
    /// that died before recording it. It was completed only after every
    /// check passed, so the object counts as this job's if its size and
    /// full-object CRC equal the CRC kept right before Complete — or, from
    /// a record without one, what the kept part CRCs compose.
    pub(super) async fn completed_or_gone(
        &self,
        checkpoint: &Checkpoint,
        plan: KnownPlan,
    ) -> Result<Reopen, TransferError> {
        let gone = || Reopen::Restart("the multipart upload no longer exists".into());
        let crc = match checkpoint.object_crc {
            Some(crc) => crc,
            None => {
                let numbers: Vec<u32> = plan.parts().map(|p| p.number).collect();
                let kept = self
                    .journal
                    .part_checksums(&checkpoint.upload_id, &numbers)
                    .await?;
                let Some(crcs) = numbers
                    .iter()
                    .map(|n| kept.get(n).copied())
                    .collect::<Option<Vec<u64>>>()
                else {
                    return Ok(gone());
                };
                checksum::compose(crcs.into_iter().zip(plan.parts().map(|p| p.len)))
            }
        };
        let Some(stored) = self.engine.sink.head(&self.spec.destination).await? else {
            return Ok(gone());
        };
        if stored.size == Some(plan.size)
            && stored.crc64nvme.as_deref() == Some(checksum::to_base64(crc).as_str())
        {
            return Ok(Reopen::Completed { stored, crc, plan });
        }
        Ok(gone())
    }

    /// Continues the expected-digest check from the state the checkpoint
    /// kept, when it fits this upload: returns how many leading parts it
    /// covers, which need not be read again. Any doubt means 0 — every
    /// finished part is re-read and hashed, so a bad state costs bytes,
    /// never a verdict.
    pub(super) fn restore_digest(
        &self,
        checkpoint: &Checkpoint,
        done: &BTreeMap<u32, UploadedPart>,
    ) -> u32 {
        let Some(digest) = self.digest() else {
            return 0;
        };
        if done.is_empty() {
            return 0;
        }
        let binding = Binding {
            upload_id: checkpoint.upload_id.clone(),
            part_size: checkpoint.part_size,
        };
        let restored = (|| {
            let text = checkpoint
                .digest_state
                .as_deref()
                .ok_or(Unusable::Missing)?;
            let state = DigestState::decode(text).ok_or(Unusable::Unreadable)?;
            let parts = state.parts(binding.part_size)?;
            let covered = (1..=parts)
                .map(|number| done.get(&number).map(|p| (p.crc, p.len)))
                .collect::<Option<Vec<_>>>()
                .ok_or(Unusable::PartsMissing)?;
            let prefix_crc = checksum::compose(covered);
            lock(digest).resume(&state, &binding, prefix_crc)?;
            Ok::<_, Unusable>((parts, state.prefix()))
        })();
        match restored {
            Ok((parts, bytes)) => {
                tracing::info!(
                    parts,
                    bytes,
                    "continuing the expected digest from the checkpoint"
                );
                parts
            }
            Err(reason) => {
                tracing::info!(
                    %reason,
                    parts = done.len(),
                    "re-reading the finished parts to verify the expected digest"
                );
                0
            }
        }
    }

    /// Discards an unusable checkpoint: its upload is aborted and the journal
    /// records why; the caller then starts from byte 0.
    pub(super) async fn start_over(
        &self,
        checkpoint: &Checkpoint,
        reason: &str,
    ) -> Result<(), TransferError> {
        tracing::info!(%reason, "starting over instead of resuming");
        self.abort(&checkpoint.upload_id).await;
        self.journal.restarted(reason).await
    }
}
