//! The part tasks of one transfer: spawned into one `JoinSet`, limited by a
//! semaphore of part slots (more for a far source, see `reach`), reserved
//! memory in part order, and stopped together when one fails or the set is
//! dropped.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::run::Run;
use crate::error::{ErrorClass, TransferError};
use crate::pool::PartBuffer;
use crate::sink::UploadedPart;
use crate::source::HostSlot;

/// The part tasks of one transfer, with their concurrency limit. Dropping it
/// aborts any task still running.
pub(super) struct PartSet<'a> {
    run: &'a Arc<Run>,
    tasks: JoinSet<Result<UploadedPart, TransferError>>,
    slots: Arc<Semaphore>,
    /// Part slots granted so far (they only grow; see `reach`).
    granted: usize,
    done: Vec<UploadedPart>,
}

impl<'a> PartSet<'a> {
    pub(super) fn new(run: &'a Arc<Run>) -> Self {
        Self {
            run,
            tasks: JoinSet::new(),
            slots: Arc::new(Semaphore::new(run.concurrency())),
            granted: run.concurrency(),
            done: Vec::new(),
        }
    }

    /// Waits for a free slot, noticing failed parts while it waits.
    pub(super) async fn slot(&mut self) -> Result<OwnedSemaphorePermit, TransferError> {
        loop {
            tokio::select! {
                biased;
                () = self.run.cancel.cancelled() => return Err(TransferError::Cancelled),
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    self.collect(joined)?;
                }
                permit = Arc::clone(&self.slots).acquire_owned() => {
                    return permit.map_err(|_| TransferError::Cancelled);
                }
            }
        }
    }

    /// Grants part slots up to `slots` in all.
    pub(super) fn widen(&mut self, slots: usize) {
        if slots > self.granted {
            tracing::debug!(
                from = self.granted,
                to = slots,
                "far source: more parts downloading at once"
            );
            self.slots.add_permits(slots - self.granted);
            self.granted = slots;
        }
    }

    /// Waits for a slot for the source's host, noticing failures.
    pub(super) async fn host_slot(&mut self) -> Result<HostSlot, TransferError> {
        loop {
            tokio::select! {
                biased;
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    self.collect(joined)?;
                }
                slot = self.run.host_slot() => return slot,
            }
        }
    }

    /// Reserves memory for the next part (in part order), noticing failures.
    pub(super) async fn reserve(&mut self, len: u64) -> Result<PartBuffer, TransferError> {
        loop {
            tokio::select! {
                biased;
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    self.collect(joined)?;
                }
                buffer = self.run.reserve(len) => return buffer,
            }
        }
    }

    /// Resolves with the first part failure; pends forever while all is well.
    pub(super) async fn first_failure(&mut self) -> TransferError {
        loop {
            match self.tasks.join_next().await {
                Some(joined) => {
                    if let Err(err) = self.collect(joined) {
                        return err;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Counts a part an earlier run uploaded as done.
    pub(super) fn push_done(&mut self, part: UploadedPart) {
        self.done.push(part);
    }

    pub(super) fn spawn(
        &mut self,
        task: impl Future<Output = Result<UploadedPart, TransferError>> + Send + 'static,
    ) {
        self.tasks.spawn(task);
        self.run.observer.on_parts_in_flight(self.tasks.len());
    }

    fn collect(
        &mut self,
        joined: Result<Result<UploadedPart, TransferError>, tokio::task::JoinError>,
    ) -> Result<(), TransferError> {
        self.run.observer.on_parts_in_flight(self.tasks.len());
        match joined {
            Ok(Ok(part)) => {
                self.done.push(part);
                Ok(())
            }
            Ok(Err(err)) => Err(err),
            Err(join) => Err(TransferError::S3 {
                operation: crate::error::S3Operation::UploadPart,
                code: None,
                message: format!("part task ended abnormally: {join}"),
                transient: true,
                throttled: false,
            }),
        }
    }

    /// Waits for every part; the first real failure stops the others.
    pub(super) async fn finish(mut self) -> Result<Vec<UploadedPart>, TransferError> {
        let mut failure = None;
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(err) = self.collect(joined) {
                self.run.cancel.cancel();
                if failure
                    .as_ref()
                    .is_none_or(|f: &TransferError| f.class() == ErrorClass::Cancelled)
                {
                    failure = Some(err);
                }
            }
        }
        match failure {
            Some(err) => Err(err),
            None => Ok(std::mem::take(&mut self.done)),
        }
    }
}

impl Drop for PartSet<'_> {
    fn drop(&mut self) {
        // An early return (a failed part, cancellation) must not leave part
        // tasks running against an upload that is about to be aborted.
        self.tasks.abort_all();
        self.run.observer.on_parts_in_flight(0);
    }
}
