//! Resuming a multipart upload an earlier run started.
//!
//! A ranged transfer whose source has a validator writes a [`Checkpoint`]
//! (upload id, part size, length, validator) through its [`Journal`] before the
//! first UploadPart, and persists every acknowledged part's CRC. A later run
//! handed that checkpoint [`reopen`](Run::reopen)s the upload: S3's ListParts
//! says which parts are done, the source must still have the same validator and
//! length, and only the missing parts are fetched. Anything that does not add
//! up (source changed, upload gone, a part of the wrong size or without a known
//! CRC) means the part, or the whole upload, is done again — never trusted.
//!
//! With an expected sha256/md5 the journal also keeps the digest state of the
//! hashed prefix ([`DigestState`]); a resumed run continues from it and
//! re-reads only the finished parts beyond it — or, when the state is missing
//! or does not fit this upload's parts, every finished part, as it must
//! without one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::checksum;
use crate::digest::{Binding, DigestState, Unusable};
use crate::error::TransferError;
use crate::plan::{KnownPlan, MAX_PARTS, MIN_PART_SIZE};
use crate::sink::{StoredObject, UploadedPart};
use crate::source::{OpenBody, Validator};
use crate::transfer::{Run, lock};

/// What a later run needs to pick up an upload where this one left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub upload_id: String,
    pub part_size: u64,
    pub length: u64,
    /// Strong ETag, or Last-Modified (then together with `length`).
    pub validator: Validator,
    /// The last [`DigestState`] the journal kept for this upload, encoded;
    /// only jobs with an expected digest have one. Read, never written,
    /// through [`Journal::checkpoint`] (states go through
    /// [`Journal::digest_advanced`]).
    pub digest_state: Option<String>,
}

/// Where a transfer persists what a resuming run needs. The worker keeps it
/// in DynamoDB; `ferry copy` keeps nothing ([`NoJournal`]).
pub trait Journal: Send + Sync {
    /// Whether checkpoints outlive this process. Only then is an upload kept
    /// open after a cancelled or transiently failed run.
    fn durable(&self) -> bool;

    /// Persists `checkpoint`; called after CreateMultipartUpload and before
    /// the first UploadPart. An error fails the transfer.
    fn checkpoint<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
    ) -> BoxFuture<'a, Result<(), TransferError>>;

    /// An earlier checkpoint could not be used and the transfer starts over.
    fn restarted<'a>(&'a self, reason: &'a str) -> BoxFuture<'a, Result<(), TransferError>>;

    /// This run continues the checkpointed upload, which holds `parts` parts
    /// (`bytes` bytes) already.
    fn resumed(&self, parts: u32, bytes: u64) -> BoxFuture<'_, Result<(), TransferError>>;

    /// S3 acknowledged `part`. Best effort: a part whose CRC was not kept is
    /// uploaded again by a resuming run.
    fn part_uploaded<'a>(&'a self, upload_id: &'a str, part: &'a UploadedPart)
    -> BoxFuture<'a, ()>;

    /// The hashed prefix of the checkpointed upload reached a new part
    /// boundary: `state` lets a later run continue the expected-digest check
    /// from there instead of reading those parts again. Called after the
    /// part's [`part_uploaded`](Self::part_uploaded). Best effort: a state
    /// not kept only means a resuming run re-reads more.
    fn digest_advanced<'a>(&'a self, _state: &'a DigestState) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// The CRCs persisted for `numbers` of `upload_id`.
    fn part_checksums<'a>(
        &'a self,
        upload_id: &'a str,
        numbers: &'a [u32],
    ) -> BoxFuture<'a, Result<HashMap<u32, u64>, TransferError>>;

    /// Whether this run may still write to the upload (it still owns the job).
    /// Checked before every UploadPart and CompleteMultipartUpload.
    fn may_write(&self) -> Result<(), TransferError>;

    /// Called right before CompleteMultipartUpload; must make sure no other
    /// run can own the upload until Complete has returned.
    fn before_complete(&self) -> BoxFuture<'_, Result<(), TransferError>>;

    /// Called before every CreateMultipartUpload, so that an upload whose
    /// Create reply is lost can still be found (and aborted) later.
    fn creating_upload(&self) -> BoxFuture<'_, Result<(), TransferError>> {
        Box::pin(async { Ok(()) })
    }

    /// Whether an earlier run may have stored this very object already (it
    /// died or lost its reply after writing): then the transfer looks at the
    /// destination before PutObject/Complete and keeps an identical object
    /// instead of writing it a second time.
    fn may_be_stored_already(&self) -> bool {
        false
    }
}

/// A journal that keeps nothing: every run starts from zero.
pub struct NoJournal;

impl Journal for NoJournal {
    fn durable(&self) -> bool {
        false
    }

    fn checkpoint<'a>(&'a self, _: &'a Checkpoint) -> BoxFuture<'a, Result<(), TransferError>> {
        Box::pin(async { Ok(()) })
    }

    fn restarted<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), TransferError>> {
        Box::pin(async { Ok(()) })
    }

    fn resumed(&self, _: u32, _: u64) -> BoxFuture<'_, Result<(), TransferError>> {
        Box::pin(async { Ok(()) })
    }

    fn part_uploaded<'a>(&'a self, _: &'a str, _: &'a UploadedPart) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    fn part_checksums<'a>(
        &'a self,
        _: &'a str,
        _: &'a [u32],
    ) -> BoxFuture<'a, Result<HashMap<u32, u64>, TransferError>> {
        Box::pin(async { Ok(HashMap::new()) })
    }

    fn may_write(&self) -> Result<(), TransferError> {
        Ok(())
    }

    fn before_complete(&self) -> BoxFuture<'_, Result<(), TransferError>> {
        Box::pin(async { Ok(()) })
    }
}

/// A reopened upload: its plan, the parts S3 already holds, and the source's
/// answer for the first missing part.
pub(crate) struct Reopened {
    pub plan: KnownPlan,
    pub done: BTreeMap<u32, UploadedPart>,
    pub first: Option<(u32, OpenBody)>,
}

/// What a checkpoint turned out to describe.
pub(crate) enum Reopen {
    /// An open upload to continue.
    Resumed(Reopened),
    /// The upload was completed already (its run died before recording it):
    /// the object at the destination is the one its parts compose.
    Completed {
        stored: StoredObject,
        crc: u64,
        plan: KnownPlan,
    },
    /// Unusable; the reason becomes the record's restart reason.
    Restart(String),
}

impl Run {
    /// Checks the source and the upload against `checkpoint`.
    pub(crate) async fn reopen(
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
                |err, attempt| self.retried(crate::RetrySide::Upload, err, attempt),
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
        let done: BTreeMap<u32, UploadedPart> = fitting
            .into_iter()
            .filter_map(|p| {
                let crc = p.crc.or_else(|| persisted.get(&p.number).copied())?;
                Some((
                    p.number,
                    UploadedPart {
                        number: p.number,
                        etag: p.etag,
                        crc,
                        len: p.len,
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
                |err, attempt| self.retried(crate::RetrySide::Download, err, attempt),
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
    /// full-object CRC equal what the kept part CRCs compose.
    async fn completed_or_gone(
        &self,
        checkpoint: &Checkpoint,
        plan: KnownPlan,
    ) -> Result<Reopen, TransferError> {
        let gone = || Reopen::Restart("the multipart upload no longer exists".into());
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
        let crc = checksum::compose(crcs.into_iter().zip(plan.parts().map(|p| p.len)));
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
    pub(crate) fn restore_digest(
        &self,
        checkpoint: &Checkpoint,
        done: &BTreeMap<u32, UploadedPart>,
    ) -> u32 {
        let Some(digest) = &self.digest else {
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
    pub(crate) async fn start_over(
        &self,
        checkpoint: &Checkpoint,
        reason: &str,
    ) -> Result<(), TransferError> {
        tracing::info!(%reason, "starting over instead of resuming");
        self.abort(&checkpoint.upload_id).await;
        self.journal.restarted(reason).await
    }
}
