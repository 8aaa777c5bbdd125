//! What resuming a multipart upload an earlier run started rests on: the
//! [`Checkpoint`], the [`Journal`] that keeps it, and what reopening an
//! upload found (`Reopen`). The reopening itself is a path of the
//! transfer (`transfer/reopen.rs`).
//!
//! A ranged transfer whose source has a validator writes a [`Checkpoint`]
//! (upload id, part size, length, validator) through its [`Journal`] before the
//! first UploadPart, and hands it every acknowledged part's CRC to keep (for
//! stores whose ListParts lists none). A later run
//! handed that checkpoint reopens the upload (`transfer/reopen.rs`): S3's ListParts
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

use futures_util::future::BoxFuture;

use crate::digest::DigestState;
use crate::error::TransferError;
use crate::plan::KnownPlan;
use crate::sink::{StoredObject, UploadedPart};
use crate::source::{OpenBody, Validator};

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
    /// The full-object CRC64NVME this upload was about to be completed with,
    /// kept by [`Journal::before_complete`]: when the upload is gone, an
    /// object of this size and CRC is the one its Complete stored. `None`
    /// before Complete was reached, or from a journal that keeps none (the
    /// kept part CRCs are composed instead). Read, never written, through
    /// [`Journal::checkpoint`].
    pub object_crc: Option<u64>,
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

    /// S3 acknowledged `part`. Best effort, and the journal may keep nothing
    /// (when the store's ListParts lists each part's CRC64NVME): a resuming
    /// run uploads again any part whose CRC neither ListParts nor the journal
    /// gives.
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

    /// Called right before CompleteMultipartUpload with the full-object
    /// CRC64NVME it completes with; must make sure no other run can own the
    /// upload until Complete has returned, and should keep `object_crc` with
    /// the checkpoint ([`Checkpoint::object_crc`]).
    fn before_complete(&self, object_crc: u64) -> BoxFuture<'_, Result<(), TransferError>>;

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

    fn before_complete(&self, _: u64) -> BoxFuture<'_, Result<(), TransferError>> {
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
