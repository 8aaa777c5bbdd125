//! ferry's streaming multipart engine: bytes from an HTTP(S) URL into S3, never
//! touching disk, within one memory budget.
//!
//! # Layout (in data-flow order)
//! - [`source`]: probe the URL (length, ranges, validator), then ranged or streamed reads;
//!   at most N requests per host at once.
//! - [`bandwidth`]: byte-rate caps on source reads, engine-wide and per transfer.
//! - [`admission`]: how many multipart transfers run at once; small ones pass.
//! - [`plan`]: pure arithmetic cutting an object into at most 10,000 S3 parts.
//! - [`pool`]: the memory budget; every part buffer is paid for before it is filled.
//! - `reach`: more parts downloading at once from a far source (measured request waits).
//! - [`checksum`]: per-part CRC64NVME, its full-object composition, the expected digests.
//! - [`digest`]: sha256/md5 hashed in part order and checked against the expected ones,
//!   and the state a resume continues from.
//! - [`sink`]: S3 multipart create / upload / complete / abort, or one PutObject.
//! - [`throttle`]: per-bucket adaptive rate limiting when S3 says "slow down".
//! - [`transfer`]: orchestration, a table of contents over one module per step:
//!   `reopen` (a checkpoint handed in) → probe → `ranged` | `streamed` (→ `single`
//!   PutObject when one part) → `upload` + `parts` → `complete` → `outcome`; owns
//!   every task it spawns (through `parts`).
//! - [`resume`]: checkpoints and the [`Journal`] that keeps them.
//! - [`events`]: the [`Observer`] through which progress leaves the engine.
//! - [`retry`]: backoff; throttles wait without using up attempts.
//! - [`error`]: typed errors with a retry class and a stable kind.
//! - `sync`: the poison-tolerant `lock` every module may use (a leaf).
//!
//! # Invariants
//! 1. Bytes in flight never exceed the memory budget; no body is ever read whole.
//! 2. A part counts as done only after S3 acknowledged it.
//! 3. The engine reads no environment variables and knows nothing of queues.
//! 4. No task outlives the transfer that spawned it.
//! 5. A failed transfer leaves neither an object nor an open multipart upload —
//!    except a checkpointed one, kept for the next run when the failure was a
//!    cancellation or transient and the journal is durable.

pub mod admission;
pub mod bandwidth;
pub mod checksum;
pub mod config;
pub mod destination;
pub mod digest;
pub mod error;
pub mod events;
pub mod plan;
pub mod pool;
mod reach;
pub mod resume;
pub mod retry;
pub mod sink;
pub mod source;
mod stored;
mod sync;
pub mod throttle;
pub mod transfer;
pub mod upload_checksum;

pub use checksum::Expected;
pub use config::{EngineConfig, SourceConfig};
pub use destination::{Destination, Encryption, ObjectDefaults};
pub use error::{ErrorClass, TransferError};
pub use events::{NoopObserver, Observer, PartDone, Progress, RetrySide};
pub use resume::{Checkpoint, Journal, NoJournal};
pub use retry::RetryPolicy;
pub use source::{Integrity, SourceRequest};
pub use transfer::{Engine, TransferOutcome, TransferSpec};
pub use upload_checksum::{ChecksumPolicy, UploadChecksum};

/// S3 client settings the engine relies on: it computes and sends its own
/// checksums, and retries itself (one retry policy, observable per part).
pub fn s3_config(base: &aws_sdk_s3::config::Builder) -> aws_sdk_s3::config::Builder {
    base.clone()
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
}
