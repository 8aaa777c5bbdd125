//! Shared set-up: an engine wired to the tests' S3 (moto's, or the strict
//! S3 when `FERRY_TEST_S3_ENDPOINT` names one; docs/testing.md), and checks
//! on what S3 holds.

use std::sync::Arc;
use std::time::Duration;

use ferry_engine::plan::MIB;
use ferry_engine::source::guard::AddressPolicy;
use ferry_engine::{
    Destination, Engine, EngineConfig, Expected, NoopObserver, RetryPolicy, SourceRequest,
    TransferError, TransferOutcome, TransferSpec,
};
use ferry_testkit::{Moto, unique_name};
use tokio_util::sync::CancellationToken;

pub const PART: usize = 5 * MIB as usize;

pub struct Harness {
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
    pub engine: Engine,
}

pub fn test_config() -> EngineConfig {
    let mut config = EngineConfig {
        part_size: PART as u64,
        max_concurrent_parts: 4,
        memory_budget: 64 * MIB as usize,
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            throttle_base_delay: Duration::from_millis(20),
            throttle_max_delay: Duration::from_millis(200),
            aws_patience: Duration::from_secs(3),
        },
        ..EngineConfig::default()
    };
    config.source.read_timeout = Duration::from_millis(800);
    // The test origins live on loopback, which the default policy blocks.
    config.source.address_policy = loopback_allowed();
    config
}

/// Whether the S3 of this run checks what it is sent (checksums, part
/// order, and lists part checksums): LocalStack does, moto does not
/// (../shared/emulators.md).
pub fn store_checks() -> bool {
    ferry_testkit::moto::strict_s3_endpoint().is_some()
}

pub fn loopback_allowed() -> AddressPolicy {
    AddressPolicy {
        allow: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        ports: None,
    }
}

impl Harness {
    pub async fn new() -> Self {
        Self::with_config(test_config()).await
    }

    pub async fn with_config(config: EngineConfig) -> Self {
        let moto = Moto::shared();
        let s3 = aws_sdk_s3::Client::from_conf(
            ferry_engine::s3_config(&moto.s3_builder().await).build(),
        );
        let bucket = unique_name("bucket");
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        let engine = Engine::new(config, s3.clone()).unwrap();
        Self { s3, bucket, engine }
    }

    pub fn spec(&self, url: &str, key: &str) -> TransferSpec {
        TransferSpec {
            source: SourceRequest {
                url: url.parse().unwrap(),
                headers: Default::default(),
                headers_cross_origin: false,
            },
            destination: Destination {
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                ..Destination::default()
            },
            expected: Expected::default(),
            max_bytes_per_sec: None,
        }
    }

    pub async fn run(&self, spec: &TransferSpec) -> Result<TransferOutcome, TransferError> {
        self.engine
            .transfer(spec, Arc::new(NoopObserver), &CancellationToken::new())
            .await
    }

    pub async fn object(&self, key: &str) -> Option<Vec<u8>> {
        ferry_testkit::object_bytes(&self.s3, &self.bucket, key).await
    }

    /// The full-object CRC64NVME S3 computed for the stored object.
    pub async fn reported_crc(&self, key: &str) -> Option<String> {
        self.s3
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .unwrap()
            .checksum_crc64_nvme
    }

    pub async fn open_uploads(&self) -> usize {
        ferry_testkit::open_uploads(&self.s3, &self.bucket).await
    }

    /// After a failure: no object and no multipart upload left behind.
    pub async fn assert_nothing_left(&self, key: &str) {
        assert!(
            self.object(key).await.is_none(),
            "object {key} must not exist"
        );
        assert_eq!(
            self.open_uploads().await,
            0,
            "no multipart upload may stay open"
        );
    }

    /// After a success: the object is byte for byte `data`, checksums agree.
    pub async fn assert_stored(&self, key: &str, data: &[u8], outcome: &TransferOutcome) {
        let stored = self.object(key).await.expect("object stored");
        assert_eq!(stored.len(), data.len(), "stored length");
        assert_eq!(
            ferry_testkit::sha256_hex(&stored),
            ferry_testkit::sha256_hex(data),
            "stored bytes differ"
        );
        assert_eq!(outcome.size, data.len() as u64);
        let crc = ferry_engine::checksum::to_base64(ferry_engine::checksum::crc64nvme(data));
        assert_eq!(outcome.checksum_crc64nvme, crc, "our full-object checksum");
        assert_eq!(
            self.reported_crc(key).await.as_deref(),
            Some(crc.as_str()),
            "S3's full-object checksum"
        );
        // S3 answers Complete and PutObject with the full-object CRC64NVME it
        // computed, which the engine checks; moto's answers carry none.
        if store_checks() {
            assert!(
                outcome.checksum_confirmed_by_s3,
                "S3 confirmed the checksum in its answer: {outcome:?}"
            );
        }
        assert_eq!(self.open_uploads().await, 0);
    }
}
