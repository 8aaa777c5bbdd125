//! What goes into a transfer and what comes out of it: [`TransferSpec`] and
//! [`TransferOutcome`], plain data. No behaviour lives here.

use std::num::NonZeroU64;
use std::time::Duration;

use crate::checksum::Expected;
use crate::sink::Destination;
use crate::source::{Integrity, SourceRequest};

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
    /// Nothing was stored: the destination already held this version of
    /// the source (`if_exists` skip); the fields above describe that object.
    pub skipped: bool,
    /// The origin's own digests the stored bytes were checked against
    /// (`sha256`, `md5`, `crc64nvme`; see `source/digests.rs`). Empty when it
    /// sent none ferry reads, or for a run resumed from a checkpoint.
    pub source_digests: Vec<&'static str>,
}
