//! The [`Engine`] handle: what every transfer of one engine shares — its
//! config, source client, S3 sink, memory pool and multipart gate — and its
//! accessors. How one transfer runs is in the modules beside it.

use std::sync::Arc;

use crate::admission::MultipartGate;
use crate::config::EngineConfig;
use crate::error::TransferError;
use crate::pool::MemoryPool;
use crate::sink::{Destination, S3Sink};
use crate::source::HttpSource;

/// The streaming multipart engine. Cheap to clone; clones share the memory pool.
#[derive(Clone)]
pub struct Engine {
    pub(crate) config: Arc<EngineConfig>,
    pub(crate) source: HttpSource,
    pub(crate) sink: S3Sink,
    pub(super) pool: MemoryPool,
    pub(super) multipart: Arc<MultipartGate>,
}

impl Engine {
    pub fn new(config: EngineConfig, s3: aws_sdk_s3::Client) -> Result<Self, TransferError> {
        config.validate()?;
        Ok(Self {
            source: HttpSource::new(&config.source)?,
            sink: S3Sink::with_checksums(s3, config.upload_checksum.clone(), config.checksum_fault),
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

    /// Aborts an upload a failed job leaves behind (best effort is the caller's choice).
    pub async fn abort_upload(
        &self,
        destination: &Destination,
        upload_id: &str,
    ) -> Result<(), TransferError> {
        let destination = destination.with_defaults(&self.config.object_defaults);
        self.sink.abort(&destination, upload_id).await
    }
}
