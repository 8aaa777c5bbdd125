//! The shared state of one transfer ([`Run`]) and the small steps every path
//! takes through it: the multipart slot, host slots and part memory (each
//! cancellable), size and digest checks, the identical-object check, abort,
//! counters, retries and progress events. It calls none of the paths; they
//! call it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::engine::Engine;
use super::spec::{TransferOutcome, TransferSpec};
use crate::admission::{Deciding, MultipartSlot};
use crate::bandwidth::Pacer;
use crate::checksum;
use crate::checksum::Expected;
use crate::destination::{Destination, OriginHeaders};
use crate::digest::{Binding, OrderedDigest};
use crate::error::TransferError;
use crate::events::{Observer, Progress, RetrySide};
use crate::pool::PartBuffer;
use crate::reach::RequestWait;
use crate::resume::Journal;
use crate::sink::StoredObject;
use crate::source::SourceDigests;
use crate::source::{HostSlot, Integrity};
use crate::sync::lock;
use crate::upload_checksum::{UploadChecksum, Whole};

/// The shared state of one transfer, handed to its part tasks.
pub(super) struct Run {
    pub(super) engine: Engine,
    pub(super) spec: TransferSpec,
    pub(super) cancel: CancellationToken,
    /// This transfer's bandwidth caps, paid after every chunk read.
    pub(super) pacer: Arc<Pacer>,
    pub(super) acknowledged: AtomicU64,
    pub(super) fetched: AtomicU64,
    pub(super) retries: AtomicU32,
    pub(super) last_progress: Mutex<Option<Instant>>,
    /// The in-order sha256/md5 of the bytes, when anything is to be
    /// checked against one ([`Run::digest`]).
    digest: OnceLock<Option<Mutex<OrderedDigest>>>,
    /// The job's `expected` with what the origin's digests add
    /// ([`Run::learn_origin`]); until then the job's own.
    expected: OnceLock<Expected>,
    /// The origin's CRC64NVME of the whole object, and which of its digests
    /// this run checks.
    source_crc64nvme: OnceLock<String>,
    source_digests: OnceLock<Vec<&'static str>>,
    /// Source length, `u64::MAX` while unknown.
    pub(super) total: AtomicU64,
    pub(super) observer: Arc<dyn Observer>,
    pub(super) journal: Arc<dyn Journal>,
    /// The upload a persisted checkpoint describes, once there is one: only
    /// such an upload can be resumed, so only its part CRCs and digest states
    /// are kept.
    pub(super) checkpointed: OnceLock<Binding>,
    pub(super) reused_parts: AtomicU32,
    /// How this try read the source, once it has.
    pub(super) integrity: OnceLock<Integrity>,
    /// Held from the moment the transfer turns out to be multipart.
    pub(super) multipart_slot: Mutex<Option<MultipartSlot>>,
    /// Counted as "may turn out large" until it knows.
    pub(super) deciding: Mutex<Option<Deciding>>,
    /// How long ranged GETs wait for their answers: how far the source is.
    pub(super) request_wait: RequestWait,
    /// The destination with what the origin's first answer told
    /// ([`Destination::with_origin`]); until then the spec's.
    destination: OnceLock<Destination>,
}

/// How a try at the transfer ended.
pub(super) enum Ran {
    Stored(TransferOutcome),
    /// It needs a multipart upload and no slot was free: it let go of what it
    /// held, for the caller to wait for a slot and try again.
    NeedsMultipartSlot,
}

impl Run {
    /// The state of a transfer about to start; `cancel` is its own token
    /// (a child of the caller's).
    pub(super) fn new(
        engine: &Engine,
        spec: &TransferSpec,
        journal: Arc<dyn Journal>,
        observer: Arc<dyn Observer>,
        cancel: CancellationToken,
        deciding: Option<Deciding>,
    ) -> Arc<Self> {
        let mut spec = spec.clone();
        spec.destination = spec
            .destination
            .with_defaults(&engine.config.object_defaults);
        Arc::new(Run {
            engine: engine.clone(),
            pacer: Arc::new(Pacer::new(
                engine.source.shared_bandwidth(),
                spec.max_bytes_per_sec,
                cancel.clone(),
            )),
            cancel,
            acknowledged: AtomicU64::new(0),
            fetched: AtomicU64::new(0),
            retries: AtomicU32::new(0),
            last_progress: Mutex::new(None),
            digest: OnceLock::new(),
            expected: OnceLock::new(),
            source_crc64nvme: OnceLock::new(),
            source_digests: OnceLock::new(),
            total: AtomicU64::new(u64::MAX),
            observer,
            journal,
            checkpointed: OnceLock::new(),
            reused_parts: AtomicU32::new(0),
            integrity: OnceLock::new(),
            multipart_slot: Mutex::new(None),
            deciding: Mutex::new(Some(
                deciding.unwrap_or_else(|| engine.multipart.deciding_one()),
            )),
            request_wait: RequestWait::new(engine.config.max_concurrent_parts),
            destination: OnceLock::new(),
            // Last: the fields above read it.
            spec,
        })
    }

    /// Where a new object or upload goes, and what it is stored with.
    pub(super) fn destination(&self) -> &Destination {
        self.destination.get().unwrap_or(&self.spec.destination)
    }

    /// Takes what the origin's first answer says about the representation
    /// and what it hashes to (a resumed run's first answer is its reopening
    /// probe); a later probe of the same transfer changes nothing. The job's
    /// own `expected` wins for an algorithm both name. Once the run hashes,
    /// what it checks is fixed.
    pub(super) fn learn_origin(&self, origin: &OriginHeaders, digests: &SourceDigests) {
        self.destination
            .get_or_init(|| self.spec.destination.with_origin(origin));
        if self.digest.get().is_some() || self.expected.get().is_some() {
            return;
        }
        let mut expected = self.spec.expected.clone();
        let mut checked = Vec::new();
        if expected.sha256.is_none() && digests.sha256.is_some() {
            expected.sha256.clone_from(&digests.sha256);
            checked.push("sha256");
        }
        if expected.md5.is_none() && digests.md5.is_some() {
            expected.md5.clone_from(&digests.md5);
            checked.push("md5");
        }
        if let Some(crc) = &digests.crc64nvme {
            let _ = self.source_crc64nvme.set(crc.clone());
            checked.push("crc64nvme");
        }
        let _ = self.expected.set(expected);
        let _ = self.source_digests.set(checked);
    }

    /// What the bytes must match: the job's `expected`, and the origin's
    /// digests once its first answer was read.
    pub(super) fn expected(&self) -> &Expected {
        self.expected.get_or_init(|| self.spec.expected.clone())
    }

    /// The running sha256/md5, when [`Run::expected`] names one.
    pub(super) fn digest(&self) -> Option<&Mutex<OrderedDigest>> {
        self.digest
            .get_or_init(|| {
                let expected = self.expected();
                expected
                    .needs_digest()
                    .then(|| Mutex::new(OrderedDigest::new(expected)))
            })
            .as_ref()
    }

    /// The origin's digests this run checked (for the outcome).
    pub(super) fn source_digests_checked(&self) -> Vec<&'static str> {
        self.source_digests.get().cloned().unwrap_or_default()
    }

    /// Takes a multipart slot if one is free (or already held); without
    /// one the transfer will wait, counted as waiting from then on.
    pub(super) fn enter_multipart(&self) -> bool {
        let mut held = lock(&self.multipart_slot);
        if held.is_none() {
            *held = self.engine.multipart.try_enter();
        }
        if held.is_some() {
            lock(&self.deciding).take();
        }
        held.is_some()
    }

    pub(super) async fn wait_for_multipart_slot(&self) -> Result<(), TransferError> {
        if lock(&self.multipart_slot).is_some() {
            return Ok(());
        }
        let deciding = lock(&self.deciding).take();
        let slot = self.engine.multipart.enter(&self.cancel, deciding).await?;
        *lock(&self.multipart_slot) = Some(slot);
        Ok(())
    }

    pub(super) fn check_size_limit(&self, size: u64) -> Result<(), TransferError> {
        match self.engine.config.max_object_size {
            Some(max) if size > max => Err(TransferError::TooLarge {
                size,
                reason: format!("the configured maximum object size is {max} bytes"),
            }),
            _ => Ok(()),
        }
    }

    /// The size and digests checked before the object is stored: the
    /// job's `expected`, and the origin's digests (`crc`: this object's
    /// CRC64NVME, which ferry computes anyway).
    pub(super) fn verify_expected(&self, size: u64, crc: u64) -> Result<(), TransferError> {
        let digest = self.digest().map(lock);
        self.expected()
            .verify(size, digest.as_deref())
            .map_err(|err| match err {
                // Say whose digest it was: the job's, or the origin's own.
                TransferError::ChecksumMismatch {
                    algorithm,
                    expected,
                    actual,
                } if self.source_digests_checked().contains(&algorithm) => {
                    TransferError::ChecksumMismatch {
                        algorithm: match algorithm {
                            "sha256" => "sha256 (the origin's digest)",
                            _ => "md5 (the origin's digest)",
                        },
                        expected,
                        actual,
                    }
                }
                other => other,
            })?;
        if let Some(theirs) = self.source_crc64nvme.get() {
            let ours = checksum::to_base64(crc);
            if *theirs != ours {
                return Err(TransferError::ChecksumMismatch {
                    algorithm: "crc64nvme (the origin's x-amz-checksum-crc64nvme)",
                    expected: theirs.clone(),
                    actual: ours,
                });
            }
        }
        Ok(())
    }

    /// The destination bucket's upload checksum mode.
    pub(super) fn checksum_mode(&self) -> UploadChecksum {
        self.engine.sink.mode(&self.spec.destination.bucket)
    }

    /// The object at the destination, when it is the one this transfer
    /// would store: same size and full-object CRC64NVME — or, from a store
    /// that reports none, the same whole-object value of the bucket's mode.
    pub(super) async fn identical_object(
        &self,
        crc: u64,
        whole: Option<&Whole>,
        size: u64,
    ) -> Result<Option<StoredObject>, TransferError> {
        let stored = self.engine.sink.head(&self.spec.destination).await?;
        let mode = self.checksum_mode();
        Ok(stored.filter(|stored| {
            stored.size == Some(size)
                && match stored.crc64nvme.as_deref() {
                    Some(theirs) => theirs == checksum::to_base64(crc),
                    None => whole.is_some_and(|whole| whole.confirmed_by(mode, stored)),
                }
        }))
    }

    /// Best effort, and deliberately not cancellable: an upload left open costs
    /// money until a lifecycle rule or `ferry gc` finds it.
    /// Aborts an upload of this transfer's — only while the journal lets it
    /// write: a worker whose lease lapsed may no longer know whose upload it
    /// is, and leaves it to the job's owner or `ferry gc` (its `dest#` item).
    pub(super) async fn abort(&self, upload_id: &str) {
        if self.journal.may_write().is_err() {
            tracing::warn!("not aborting the multipart upload: the lease is not held");
            return;
        }
        let retry = &self.engine.config.retry;
        let never = CancellationToken::new();
        let result = retry
            .run(
                &never,
                |_, _| {},
                |_| self.engine.sink.abort(&self.spec.destination, upload_id),
            )
            .await;
        if let Err(err) = result {
            tracing::warn!(error = %err, "could not abort multipart upload");
        }
    }

    /// Parts this transfer may have in flight.
    pub(super) fn concurrency(&self) -> usize {
        self.engine.config.max_concurrent_parts
    }

    /// Waits for a free slot for the source's host.
    pub(super) async fn host_slot(&self) -> Result<HostSlot, TransferError> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(TransferError::Cancelled),
            slot = self.engine.source.host_slot(&self.spec.source.url) => Ok(slot),
        }
    }

    pub(super) async fn reserve(&self, len: u64) -> Result<PartBuffer, TransferError> {
        let started = Instant::now();
        let len = usize::try_from(len).map_err(|_| TransferError::TooLarge {
            size: len,
            reason: "part larger than this machine can address".into(),
        })?;
        let buffer = tokio::select! {
            biased;
            () = self.cancel.cancelled() => return Err(TransferError::Cancelled),
            buffer = self.engine.pool.reserve(len) => buffer?,
        };
        self.observer.on_memory_wait(started.elapsed());
        Ok(buffer)
    }

    pub(super) fn downloaded(&self, bytes: u64) {
        self.fetched.fetch_add(bytes, Ordering::Relaxed);
        self.observer.on_downloaded(bytes);
    }

    pub(super) fn retried(&self, side: RetrySide, err: &TransferError, attempt: u32) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(side = side.as_str(), attempt, error = %err, "retrying");
        self.observer.on_retry(side, err, attempt);
    }

    pub(super) fn emit_progress(&self, force: bool) {
        let interval = self.engine.config.progress_interval;
        {
            let mut last = lock(&self.last_progress);
            if !force && last.is_some_and(|at| at.elapsed() < interval) {
                return;
            }
            *last = Some(Instant::now());
        }
        let total = self.total.load(Ordering::Relaxed);
        self.observer.on_progress(Progress {
            bytes_done: self.acknowledged.load(Ordering::Relaxed),
            bytes_total: (total != u64::MAX).then_some(total),
        });
    }
}
