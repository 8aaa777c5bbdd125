//! What a transfer tells the outside world while it runs.
//!
//! The engine reports through [`Observer`] so it never imports Prometheus, SQS or
//! DynamoDB; the worker turns these calls into metrics, job-record updates and
//! progress bars. Calls come from many tasks at once and must not block.

use std::time::Duration;

/// Which side of a part failed and was retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrySide {
    Download,
    Upload,
    Complete,
}

impl RetrySide {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Download => "download",
            Self::Upload => "upload",
            Self::Complete => "complete",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes S3 has acknowledged.
    pub bytes_done: u64,
    /// Source length, when known.
    pub bytes_total: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
pub struct PartDone {
    pub number: u32,
    pub len: u64,
    pub download: Duration,
    pub upload: Duration,
}

/// Receives transfer events. Every method has an empty default.
pub trait Observer: Send + Sync {
    /// The source was probed; `bytes_total` is its length when known.
    fn on_start(&self, _bytes_total: Option<u64>) {}
    /// Bytes were received from the source (not yet acknowledged by S3).
    fn on_downloaded(&self, _bytes: u64) {}
    /// Acknowledged progress; throttled by the engine's progress interval.
    fn on_progress(&self, _progress: Progress) {}
    fn on_part_done(&self, _part: PartDone) {}
    fn on_retry(&self, _side: RetrySide, _error: &crate::TransferError, _attempt: u32) {}
    /// How many part tasks this transfer has running now.
    fn on_parts_in_flight(&self, _count: usize) {}
    /// A part waited this long for memory budget before it could be read.
    fn on_memory_wait(&self, _waited: Duration) {}
}

/// An observer that ignores everything.
pub struct NoopObserver;

impl Observer for NoopObserver {}
