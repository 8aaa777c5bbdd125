//! Orchestration of one transfer, in data-flow order; each step is a module.
//!
//! [`Engine::transfer_resumable`] reads like a table of contents:
//! 1. a checkpoint, if handed one: `reopen` (continue through the ranged
//!    path, adopt a completed object, or start over);
//! 2. probe the source (here: one ranged GET, retried) — the answer is part 1;
//! 3. plan and pick a path: `ranged` (known length, working ranges) or
//!    `streamed` (one body cut into parts), either ending in `single`
//!    (one PutObject) when the object fits one part;
//! 4. multipart: `upload` (Create, UploadPart), `parts` (the part tasks, in one
//!    `JoinSet` the path owns), then `complete` (Complete, or abort);
//! 5. `outcome`: S3's checksum checked, the [`TransferOutcome`] assembled.
//!
//! Underneath: `run` (the shared state of one transfer, which calls none of
//! the paths), `engine` (the [`Engine`] handle) and `spec` (data in and out).
//! Every task a transfer spawns lives in a `JoinSet` owned by the call, and
//! any failure aborts the multipart upload before the error is returned
//! (unless a later run can resume it).

mod complete;
mod engine;
mod existing;
mod outcome;
mod parts;
mod ranged;
mod reopen;
mod run;
mod single;
mod spec;
mod streamed;
mod upload;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

pub use self::engine::Engine;
use self::run::{Ran, Run};
pub use self::spec::{TransferOutcome, TransferSpec};
use crate::admission::Deciding;
use crate::error::TransferError;
use crate::events::{Observer, RetrySide};
use crate::resume::{Checkpoint, Journal, NoJournal, Reopen};
use crate::source::Probe;

impl Engine {
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
    /// `deciding`: the count a caller took (from [`MultipartGate::deciding_one`](crate::admission::MultipartGate::deciding_one))
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
        let run = Run::new(self, spec, journal, observer, cancel, deciding);
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
            run.learn_origin(&probe.origin, &probe.digests);
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
            if let Some(skipped) = run.check_existing(&probe).await? {
                return Ok(run.finished(skipped, started));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::Expected;
    use crate::config::EngineConfig;
    use crate::sink::Destination;
    use crate::source::SourceRequest;

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
