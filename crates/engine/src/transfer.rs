//! Orchestration of one transfer: probe, plan, move parts, verify, complete.
//!
//! Reads like a table of contents: [`Engine::transfer`] probes the source and picks
//! one of three paths — a single PutObject, parallel ranged parts, or one stream
//! cut into parts. Every task it spawns lives in a `JoinSet` owned by the call,
//! and any failure aborts the multipart upload before the error is returned.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Response;
use tokio_util::sync::CancellationToken;

use crate::admission::{Deciding, MultipartGate, MultipartSlot};
use crate::bandwidth::Pacer;
use crate::checksum::{self, Expected, PartCrc};
use crate::config::{EngineConfig, MAX_CONCURRENT_PARTS};
use crate::digest::{Binding, DigestState, OrderedDigest};
use crate::error::{ErrorClass, TransferError};
use crate::events::{Observer, PartDone, Progress, RetrySide};
use crate::parts::PartSet;
use crate::plan::{GrowingPlan, KnownPlan, MAX_PARTS, PartSpec};
use crate::pool::{FrozenPart, MemoryPool, PartBuffer};
use crate::reach::{self, RequestWait};
use crate::resume::{Checkpoint, Journal, NoJournal, Reopen, Reopened};
use crate::sink::{Destination, S3Sink, StoredObject, UploadedPart};
use crate::source::{
    BodyStream, HostSlot, HttpSource, Integrity, OpenBody, Probe, SourceRequest, Validator,
};

/// One copy job: from where, to where, and what the bytes must hash to.
#[derive(Debug, Clone)]
pub struct TransferSpec {
    pub source: SourceRequest,
    pub destination: Destination,
    pub expected: Expected,
    /// This transfer's own cap on source reads, in bytes per second; the
    /// engine's shared cap (`SourceConfig::max_bytes_per_sec`) applies too.
    pub max_bytes_per_sec: Option<NonZeroU64>,
}

/// What a finished transfer stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferOutcome {
    pub size: u64,
    pub etag: String,
    /// Base64 CRC64NVME of the whole object (the value S3 reports, when it does).
    pub checksum_crc64nvme: String,
    /// Whether S3 reported the same full-object checksum we computed.
    pub checksum_confirmed_by_s3: bool,
    pub parts: u32,
    pub part_size: u64,
    pub duration: Duration,
    pub retries: u32,
    /// Bytes received from the source, retries included.
    pub bytes_fetched: u64,
    /// Parts an earlier run had uploaded and this one kept.
    pub parts_reused: u32,
    /// How the stored bytes are known to be one version of the source, whole.
    pub integrity: Integrity,
}

/// The streaming multipart engine. Cheap to clone; clones share the memory pool.
#[derive(Clone)]
pub struct Engine {
    pub(crate) config: Arc<EngineConfig>,
    pub(crate) source: HttpSource,
    pub(crate) sink: S3Sink,
    pool: MemoryPool,
    multipart: Arc<MultipartGate>,
}

impl Engine {
    pub fn new(config: EngineConfig, s3: aws_sdk_s3::Client) -> Result<Self, TransferError> {
        config.validate()?;
        Ok(Self {
            source: HttpSource::new(&config.source)?,
            sink: S3Sink::new(s3),
            pool: MemoryPool::new(config.memory_budget),
            multipart: Arc::new(MultipartGate::new(config.max_multipart_transfers)),
            config: Arc::new(config),
        })
    }

    pub fn pool(&self) -> &MemoryPool {
        &self.pool
    }

    /// Multipart slots, their waiters, and how recent transfers went.
    pub fn multipart(&self) -> &MultipartGate {
        &self.multipart
    }

    /// The per-bucket S3 rate limiters all transfers of this engine share.
    pub fn s3_limiters(&self) -> &crate::throttle::Limiters {
        self.sink.limiters()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Copies `spec.source` to `spec.destination`. On any error no object and no
    /// open multipart upload is left behind.
    pub async fn transfer(
        &self,
        spec: &TransferSpec,
        observer: Arc<dyn Observer>,
        cancel: &CancellationToken,
    ) -> Result<TransferOutcome, TransferError> {
        self.transfer_resumable(spec, None, Arc::new(NoJournal), observer, cancel, None)
            .await
    }

    /// Like [`transfer`](Self::transfer), continuing the upload `resume_from`
    /// describes when it is still good, and checkpointing through `journal`.
    /// With a durable journal, a cancelled or transiently failed run keeps its
    /// checkpointed upload open for the next run; a permanent failure aborts it.
    /// `deciding`: the count a caller took (from [`MultipartGate::deciding_one`])
    /// before it called, e.g. when it received the job; the transfer keeps it
    /// until it knows whether it is large (otherwise it takes its own).
    pub async fn transfer_resumable(
        &self,
        spec: &TransferSpec,
        resume_from: Option<Checkpoint>,
        journal: Arc<dyn Journal>,
        observer: Arc<dyn Observer>,
        cancel: &CancellationToken,
        deciding: Option<Deciding>,
    ) -> Result<TransferOutcome, TransferError> {
        let started = Instant::now();
        let cancel = cancel.child_token();
        let run = Arc::new(Run {
            engine: self.clone(),
            spec: spec.clone(),
            pacer: Arc::new(Pacer::new(
                self.source.shared_bandwidth(),
                spec.max_bytes_per_sec,
                cancel.clone(),
            )),
            cancel,
            acknowledged: AtomicU64::new(0),
            fetched: AtomicU64::new(0),
            retries: AtomicU32::new(0),
            last_progress: Mutex::new(None),
            digest: spec
                .expected
                .needs_digest()
                .then(|| Mutex::new(OrderedDigest::new(&spec.expected))),
            total: AtomicU64::new(u64::MAX),
            observer,
            journal,
            checkpointed: OnceLock::new(),
            reused_parts: AtomicU32::new(0),
            integrity: OnceLock::new(),
            multipart_slot: Mutex::new(None),
            deciding: Mutex::new(Some(
                deciding.unwrap_or_else(|| self.multipart.deciding_one()),
            )),
            request_wait: RequestWait::new(self.config.max_concurrent_parts),
        });
        if let Some(checkpoint) = resume_from {
            self.source.check(&spec.source)?;
            // A resumed upload is multipart by definition.
            run.wait_for_multipart_slot().await?;
            let stored = match run.reopen(&checkpoint).await? {
                Reopen::Resumed(reopened) => Some(run.resumed(reopened, &checkpoint).await?),
                Reopen::Completed { stored, crc, plan } => {
                    Some(run.adopt_completed(stored, crc, plan).await?)
                }
                Reopen::Restart(reason) => {
                    run.start_over(&checkpoint, &reason).await?;
                    None
                }
            };
            if let Some(stored) = stored {
                return Ok(run.finished(stored, started));
            }
        }
        loop {
            let probe = self.probe(&run).await?;
            if let Some(length) = probe.length {
                run.total.store(length, Ordering::Relaxed);
                run.check_size_limit(length)?;
                if let Some(expected) = spec.expected.size
                    && expected != length
                {
                    return Err(TransferError::SizeMismatch {
                        expected,
                        actual: length,
                    });
                }
            }
            run.observer.on_start(probe.length);
            let ran = match (probe.ranges, probe.length) {
                (true, Some(length)) => run.ranged(probe, length).await?,
                _ => run.streamed(probe).await?,
            };
            match ran {
                Ran::Stored(stored) => return Ok(run.finished(stored, started)),
                // Everything the first try held is dropped: wait, then
                // start again from a new probe.
                Ran::NeedsMultipartSlot => run.wait_for_multipart_slot().await?,
            }
        }
    }

    /// Aborts an upload a failed job leaves behind (best effort is the caller's choice).
    pub async fn abort_upload(
        &self,
        destination: &Destination,
        upload_id: &str,
    ) -> Result<(), TransferError> {
        self.sink.abort(destination, upload_id).await
    }

    async fn probe(&self, run: &Run) -> Result<Probe, TransferError> {
        self.source.check(&run.spec.source)?;
        self.config
            .retry
            .run(
                &run.cancel,
                |err, attempt| run.retried(RetrySide::Download, err, attempt),
                |_| self.source.probe(&run.spec.source, self.config.part_size),
            )
            .await
    }
}

/// The shared state of one transfer, handed to its part tasks.
pub(crate) struct Run {
    pub(crate) engine: Engine,
    pub(crate) spec: TransferSpec,
    pub(crate) cancel: CancellationToken,
    /// This transfer's bandwidth caps, paid after every chunk read.
    pacer: Arc<Pacer>,
    acknowledged: AtomicU64,
    fetched: AtomicU64,
    retries: AtomicU32,
    last_progress: Mutex<Option<Instant>>,
    pub(crate) digest: Option<Mutex<OrderedDigest>>,
    /// Source length, `u64::MAX` while unknown.
    total: AtomicU64,
    pub(crate) observer: Arc<dyn Observer>,
    pub(crate) journal: Arc<dyn Journal>,
    /// The upload a persisted checkpoint describes, once there is one: only
    /// such an upload can be resumed, so only its part CRCs and digest states
    /// are kept.
    checkpointed: OnceLock<Binding>,
    reused_parts: AtomicU32,
    /// How this try read the source, once it has.
    integrity: OnceLock<Integrity>,
    /// Held from the moment the transfer turns out to be multipart.
    multipart_slot: Mutex<Option<MultipartSlot>>,
    /// Counted as "may turn out large" until it knows.
    deciding: Mutex<Option<Deciding>>,
    /// How long ranged GETs wait for their answers: how far the source is.
    pub(crate) request_wait: RequestWait,
}

/// How a try at the transfer ended.
enum Ran {
    Stored(TransferOutcome),
    /// It needs a multipart upload and no slot was free: it let go of what it
    /// held, for the caller to wait for a slot and try again.
    NeedsMultipartSlot,
}

impl Run {
    /// Takes a multipart slot if one is free (or already held); without
    /// one the transfer will wait, counted as waiting from then on.
    fn enter_multipart(&self) -> bool {
        let mut held = lock(&self.multipart_slot);
        if held.is_none() {
            *held = self.engine.multipart.try_enter();
        }
        if held.is_some() {
            lock(&self.deciding).take();
        }
        held.is_some()
    }

    async fn wait_for_multipart_slot(&self) -> Result<(), TransferError> {
        if lock(&self.multipart_slot).is_some() {
            return Ok(());
        }
        let deciding = lock(&self.deciding).take();
        let slot = self.engine.multipart.enter(&self.cancel, deciding).await?;
        *lock(&self.multipart_slot) = Some(slot);
        Ok(())
    }

    fn finished(&self, stored: TransferOutcome, started: Instant) -> TransferOutcome {
        self.emit_progress(true);
        TransferOutcome {
            duration: started.elapsed(),
            retries: self.retries.load(Ordering::Relaxed),
            bytes_fetched: self.fetched.load(Ordering::Relaxed),
            parts_reused: self.reused_parts.load(Ordering::Relaxed),
            // A resumed or adopted upload was pinned by its checkpoint.
            integrity: self.integrity.get().copied().unwrap_or(Integrity::Pinned),
            ..stored
        }
    }

    /// Continues a reopened upload: only the missing parts are fetched and
    /// uploaded (finished ones are re-read only when a digest needs them).
    async fn resumed(
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
    async fn adopt_completed(
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
        self.outcome(stored, crc, parts, plan.part_size, plan.size)
            .await
    }

    /// Known length and working ranges: parts are fetched in parallel, each with
    /// its own ranged GET; part 1 reuses the probe's answer.
    async fn ranged(self: &Arc<Self>, probe: Probe, length: u64) -> Result<Ran, TransferError> {
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
    async fn write_checkpoint(
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
    async fn ranged_parts(
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
                && (self.digest.is_none() || spec.number <= hashed)
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

    /// Unknown length or no ranges: one body read in order, cut into parts that
    /// upload while the next part is read.
    async fn streamed(self: &Arc<Self>, probe: Probe) -> Result<Ran, TransferError> {
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

    async fn streamed_parts(
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

    async fn fill_from_stream(
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

    /// Reads `spec` into `buffer`, resuming from the last good byte after errors.
    async fn fetch_range(
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
    async fn hash_only(
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

    async fn upload_part(
        &self,
        number: u32,
        buffer: PartBuffer,
        crc: u64,
        upload_id: &str,
        downloaded: Duration,
    ) -> Result<UploadedPart, TransferError> {
        let len = buffer.len() as u64;
        let (bytes, frozen) = buffer.freeze();
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
    fn hash_or_recycle(
        &self,
        number: u32,
        bytes: Bytes,
        crc: u64,
        frozen: FrozenPart,
    ) -> Option<DigestState> {
        let Some(digest) = &self.digest else {
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

    async fn single_put(
        &self,
        buffer: PartBuffer,
        crc: PartCrc,
        part_size: u64,
    ) -> Result<TransferOutcome, TransferError> {
        // Known small now: a poll loop need not wait for this one.
        lock(&self.deciding).take();
        let size = buffer.len() as u64;
        let crc = crc.value();
        let (bytes, frozen) = buffer.freeze();
        if let Some(digest) = &self.digest {
            lock(digest).add(1, bytes.clone(), crc, None);
        }
        self.verify_expected(size)?;
        let uploaded = Instant::now();
        let sink = &self.engine.sink;
        let dest = &self.spec.destination;
        let stored = self
            .engine
            .config
            .retry
            .run(
                &self.cancel,
                |err, attempt| self.retried(RetrySide::Upload, err, attempt),
                |tries| {
                    let bytes = bytes.clone();
                    async move {
                        // A run that may have lost its job must not write again.
                        self.journal.may_write()?;
                        // A PutObject that was applied but whose reply was lost
                        // (or an earlier run's) already stored these bytes.
                        if (tries > 0 || self.journal.may_be_stored_already())
                            && let Some(stored) = self.identical_object(crc, size).await?
                        {
                            return Ok(stored);
                        }
                        sink.put(dest, bytes, crc).await
                    }
                },
            )
            .await?;
        self.engine.pool.recycle(bytes, frozen);
        self.engine.multipart.small_stored();
        self.acknowledged.fetch_add(size, Ordering::Relaxed);
        self.observer.on_part_done(PartDone {
            number: 1,
            len: size,
            download: Duration::ZERO,
            upload: uploaded.elapsed(),
        });
        self.outcome(stored, crc, 1, part_size, size).await
    }

    async fn create_upload(&self) -> Result<String, TransferError> {
        self.journal.creating_upload().await?;
        self.engine
            .config
            .retry
            .run(
                &self.cancel,
                |err, attempt| self.retried(RetrySide::Upload, err, attempt),
                |_| async {
                    self.journal.may_write()?;
                    self.engine.sink.create(&self.spec.destination).await
                },
            )
            .await
    }

    /// The object at the destination, when it is the one this transfer
    /// would store (same size and full-object CRC64NVME).
    async fn identical_object(
        &self,
        crc: u64,
        size: u64,
    ) -> Result<Option<StoredObject>, TransferError> {
        let stored = self.engine.sink.head(&self.spec.destination).await?;
        Ok(stored.filter(|stored| {
            stored.size == Some(size)
                && stored.crc64nvme.as_deref() == Some(checksum::to_base64(crc).as_str())
        }))
    }

    /// Completes after every check passed, or aborts the upload — unless a
    /// later run can resume it (checkpointed, durable journal, and the error
    /// was a cancellation or transient).
    async fn finish(
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
            self.verify_expected(size)?;
            let full_crc = checksum::compose(parts.iter().map(|p| (p.crc, p.len)));
            let count = u32::try_from(parts.len()).unwrap_or(MAX_PARTS);
            if self.journal.may_be_stored_already()
                && let Some(stored) = self.identical_object(full_crc, size).await?
            {
                tracing::info!("an earlier attempt stored this object already; keeping it");
                self.abort(upload_id).await;
                return self.outcome(stored, full_crc, count, part_size, size).await;
            }
            let stored = self.complete(&parts, upload_id, full_crc, size).await?;
            self.outcome(stored, full_crc, count, part_size, size).await
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

    async fn complete(
        &self,
        parts: &[UploadedPart],
        upload_id: &str,
        full_crc: u64,
        size: u64,
    ) -> Result<StoredObject, TransferError> {
        let sink = &self.engine.sink;
        let dest = &self.spec.destination;
        self.journal.before_complete().await?;
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
                match self.identical_object(full_crc, size).await? {
                    Some(stored) => Ok(stored),
                    None => Err(err),
                }
            }
            other => other,
        }
    }

    /// Compares S3's reported checksum with ours; a mismatch deletes the object.
    async fn outcome(
        &self,
        stored: StoredObject,
        crc: u64,
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
            None => false,
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
        })
    }

    fn check_size_limit(&self, size: u64) -> Result<(), TransferError> {
        match self.engine.config.max_object_size {
            Some(max) if size > max => Err(TransferError::TooLarge {
                size,
                reason: format!("the configured maximum object size is {max} bytes"),
            }),
            _ => Ok(()),
        }
    }

    fn verify_expected(&self, size: u64) -> Result<(), TransferError> {
        let digest = self.digest.as_ref().map(lock);
        self.spec.expected.verify(size, digest.as_deref())
    }

    /// Best effort, and deliberately not cancellable: an upload left open costs
    /// money until a lifecycle rule or `ferry gc` finds it.
    /// Aborts an upload of this transfer's — only while the journal lets it
    /// write: a worker whose lease lapsed may no longer know whose upload it
    /// is, and leaves it to the job's owner or `ferry gc` (its `dest#` item).
    pub(crate) async fn abort(&self, upload_id: &str) {
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
    pub(crate) fn concurrency(&self) -> usize {
        self.engine.config.max_concurrent_parts
    }

    /// Waits for a free slot for the source's host.
    pub(crate) async fn host_slot(&self) -> Result<HostSlot, TransferError> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(TransferError::Cancelled),
            slot = self.engine.source.host_slot(&self.spec.source.url) => Ok(slot),
        }
    }

    pub(crate) async fn reserve(&self, len: u64) -> Result<PartBuffer, TransferError> {
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

    fn downloaded(&self, bytes: u64) {
        self.fetched.fetch_add(bytes, Ordering::Relaxed);
        self.observer.on_downloaded(bytes);
    }

    pub(crate) fn retried(&self, side: RetrySide, err: &TransferError, attempt: u32) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(side = side.as_str(), attempt, error = %err, "retrying");
        self.observer.on_retry(side, err, attempt);
    }

    fn emit_progress(&self, force: bool) {
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

/// A poisoned lock's data is still consistent here (no invariant spans a
/// panic), so it is used rather than propagated.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// Workers run transfers on a multi-threaded runtime.
    #[test]
    fn transfer_futures_are_send() {
        let config = EngineConfig::default();
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .region(aws_sdk_s3::config::Region::new("us-east-1"))
                .build(),
        );
        let engine = Engine::new(config, s3).unwrap();
        let spec = TransferSpec {
            source: SourceRequest {
                url: "http://127.0.0.1:9/x".parse().unwrap(),
                headers: Default::default(),
                headers_cross_origin: false,
            },
            destination: Destination::default(),
            expected: Expected::default(),
            max_bytes_per_sec: None,
        };
        let cancel = CancellationToken::new();
        let future = engine.transfer(&spec, Arc::new(crate::NoopObserver), &cancel);
        assert_send(&future);
    }
}
