//! The engine's configuration: a plain struct with documented defaults.
//!
//! The engine reads no environment variables; the binary maps flags and `FERRY_*`
//! variables onto this struct and calls [`EngineConfig::validate`] at start-up.

use std::time::Duration;

use crate::destination::ObjectDefaults;
use crate::error::TransferError;
use crate::plan::{MAX_PART_SIZE, MIB, MIN_PART_SIZE};
use crate::retry::RetryPolicy;
use crate::source::guard::AddressPolicy;
use crate::upload_checksum::{ChecksumFault, ChecksumPolicy};

/// Bounds for parts in flight per transfer; more than this only adds contention.
pub const MAX_CONCURRENT_PARTS: usize = 64;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Preferred part size; enlarged when an object would need more than 10,000
    /// parts. Default 16 MiB (see docs/benchmarks.md).
    pub part_size: u64,
    /// Parts downloaded or uploaded at once, per transfer; a far source gets
    /// up to four times as many (see `reach`). Default 8.
    pub max_concurrent_parts: usize,
    /// Multipart transfers at once, across all transfers of the engine;
    /// single-PutObject ones are not counted (see `admission`). Default: none.
    pub max_multipart_transfers: Option<usize>,
    /// Bytes of part buffers all transfers of this engine may hold at once.
    /// Default 1 GiB: a ceiling, not a reservation — it caps the largest part,
    /// and 1 GiB parts are what lets an unknown-length stream reach S3's 5 TiB.
    pub memory_budget: usize,
    pub retry: RetryPolicy,
    /// Largest object a transfer may store; a source that announces or streams
    /// more fails with `too_large` (an endless body included). Default: none.
    pub max_object_size: Option<u64>,
    /// How often `Observer::on_progress` is called at most.
    pub progress_interval: Duration,
    pub source: SourceConfig,
    /// What S3 is asked to check per bucket: CRC64NVME full-object by
    /// default (see [`crate::upload_checksum`]).
    pub upload_checksum: ChecksumPolicy,
    /// Encryption and bucket owner for destinations that name none.
    pub object_defaults: ObjectDefaults,
    /// A test hook, never a user setting (no flag or variable sets it):
    /// checksums sent wrong on purpose.
    #[doc(hidden)]
    pub checksum_fault: Option<ChecksumFault>,
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a response; there is deliberately no
    /// total-request timeout, so a slow but steady large download never expires.
    pub read_timeout: Duration,
    pub max_redirects: usize,
    /// A response slower than this over `min_rate_window` is abandoned
    /// (slowloris drip); a silent one is caught sooner by `read_timeout`.
    pub min_rate_bytes_per_sec: u64,
    pub min_rate_window: Duration,
    /// Extra PEM certificates trusted besides the system roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    pub user_agent: String,
    /// Which addresses sources may reach; default: public unicast only.
    pub address_policy: AddressPolicy,
    /// Bytes per second all transfers of the engine may read from sources
    /// together, shared fairly between them; a transfer's own
    /// `max_bytes_per_sec` applies too. Default: none.
    pub max_bytes_per_sec: Option<u64>,
    /// Source requests to one `host:port` at once, across all transfers of
    /// the engine (politeness to origins that limit connections). Default: none.
    pub max_connections_per_host: Option<usize>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            part_size: 16 * MIB,
            max_concurrent_parts: 8,
            max_multipart_transfers: None,
            memory_budget: 1024 * MIB as usize,
            retry: RetryPolicy::default(),
            max_object_size: None,
            progress_interval: Duration::from_secs(1),
            source: SourceConfig::default(),
            upload_checksum: ChecksumPolicy::default(),
            object_defaults: ObjectDefaults::default(),
            checksum_fault: None,
        }
    }
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            max_redirects: 10,
            min_rate_bytes_per_sec: 1024,
            min_rate_window: Duration::from_secs(60),
            extra_ca_pem: None,
            user_agent: concat!("ferry/", env!("CARGO_PKG_VERSION")).to_owned(),
            address_policy: AddressPolicy::default(),
            max_bytes_per_sec: None,
            max_connections_per_host: None,
        }
    }
}

impl EngineConfig {
    /// Every problem at once, so a misconfigured deployment is fixed in one go.
    pub fn validate(&self) -> Result<(), TransferError> {
        let mut problems = Vec::new();
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            problems.push(format!(
                "part size {} is outside S3's {MIN_PART_SIZE}..={MAX_PART_SIZE} bytes",
                self.part_size
            ));
        }
        if !(1..=MAX_CONCURRENT_PARTS).contains(&self.max_concurrent_parts) {
            problems.push(format!(
                "max concurrent parts {} is outside 1..={MAX_CONCURRENT_PARTS}",
                self.max_concurrent_parts
            ));
        }
        if (self.memory_budget as u64) < self.part_size {
            problems.push(format!(
                "memory budget {} bytes cannot hold one part of {} bytes",
                self.memory_budget, self.part_size
            ));
        }
        if self.max_multipart_transfers == Some(0) {
            problems.push("max multipart transfers must be at least 1".to_owned());
        }
        if self.retry.max_attempts == 0 {
            problems.push("retry attempts must be at least 1".to_owned());
        }
        if self.source.read_timeout.is_zero() || self.source.connect_timeout.is_zero() {
            problems.push("source timeouts must be positive".to_owned());
        }
        if self.source.max_bytes_per_sec == Some(0) {
            problems.push("max bandwidth must be at least 1 byte per second".to_owned());
        }
        if self.source.max_connections_per_host == Some(0) {
            problems.push("max connections per host must be at least 1".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TransferError::InvalidConfig {
                reason: problems.join("; "),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        EngineConfig::default().validate().unwrap();
    }

    #[test]
    fn every_problem_is_reported_together() {
        let mut config = EngineConfig {
            part_size: MIB,
            max_concurrent_parts: 0,
            ..EngineConfig::default()
        };
        config.source.max_bytes_per_sec = Some(0);
        config.source.max_connections_per_host = Some(0);
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("part size"), "{message}");
        assert!(message.contains("max concurrent parts"), "{message}");
        assert!(message.contains("max bandwidth"), "{message}");
        assert!(message.contains("connections per host"), "{message}");
    }
}
