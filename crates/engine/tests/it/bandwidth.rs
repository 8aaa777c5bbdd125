//! Bandwidth and politeness: byte-rate caps (engine-wide and per transfer)
//! hold and are shared fairly, the per-host connection cap holds, and a cap
//! never makes the slow-source guard fail a transfer.
//!
//! A cap's correctness is a lower bound on duration (it may not be beaten);
//! how close a transfer comes to its cap is the benchmark's business
//! (scripts/bandwidth-bench), never asserted here.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_engine::plan::MIB;
use ferry_engine::sink::{S3Sink, UploadedPart};
use ferry_engine::source::Validator;
use ferry_engine::{Destination, Expected, Observer, TransferError, TransferSpec};
use ferry_testkit::{Behavior, Origin, test_bytes};
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::harness::{Harness, PART, test_config};

/// Counts the bytes a transfer received from its source.
#[derive(Default)]
struct Fetched(AtomicU64);

impl Observer for Fetched {
    fn on_downloaded(&self, bytes: u64) {
        self.0.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Fetched {
    fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

fn rate(bytes_per_sec: u64) -> Option<NonZeroU64> {
    NonZeroU64::new(bytes_per_sec)
}

/// At least this fraction of size / cap: what a cap must never beat (the
/// slack covers the limiter's first refill and the last unpaid quantum).
fn at_least(size: usize, bytes_per_sec: u64) -> Duration {
    Duration::from_secs_f64(0.85 * size as f64 / bytes_per_sec as f64)
}

#[tokio::test]
async fn an_engine_wide_cap_holds_a_transfer_to_its_rate() {
    let mut config = test_config();
    config.source.max_bytes_per_sec = Some(4 * MIB);
    let harness = Harness::with_config(config).await;
    let data = test_bytes(12 * MIB as usize, 71);
    let origin = Origin::start(data.clone(), Behavior::default()).await;
    let spec = harness.spec(&origin.url("capped"), "capped");
    let started = Instant::now();
    let outcome = harness.run(&spec).await.unwrap();
    let took = started.elapsed();
    harness.assert_stored("capped", &data, &outcome).await;
    assert!(
        took >= at_least(data.len(), 4 * MIB),
        "12 MiB at 4 MiB/s took only {took:?}"
    );
}

#[tokio::test]
async fn a_transfers_own_cap_applies_under_a_higher_engine_cap() {
    let mut config = test_config();
    config.source.max_bytes_per_sec = Some(64 * MIB);
    let harness = Harness::with_config(config).await;
    let data = test_bytes(8 * MIB as usize, 72);
    let origin = Origin::start(data.clone(), Behavior::default()).await;
    let spec = TransferSpec {
        max_bytes_per_sec: rate(4 * MIB),
        ..harness.spec(&origin.url("own"), "own")
    };
    let started = Instant::now();
    let outcome = harness.run(&spec).await.unwrap();
    let took = started.elapsed();
    harness.assert_stored("own", &data, &outcome).await;
    assert!(
        took >= at_least(data.len(), 4 * MIB),
        "8 MiB at 4 MiB/s took only {took:?}"
    );
}

#[tokio::test]
async fn two_transfers_share_the_engine_cap_fairly() {
    let mut config = test_config();
    config.source.max_bytes_per_sec = Some(4 * MIB);
    let harness = Harness::with_config(config).await;
    let (a, b) = (
        test_bytes(8 * MIB as usize, 73),
        test_bytes(8 * MIB as usize, 74),
    );
    let (origin_a, origin_b) = (
        Origin::start(a.clone(), Behavior::default()).await,
        Origin::start(b.clone(), Behavior::default()).await,
    );
    let (spec_a, spec_b) = (
        harness.spec(&origin_a.url("a"), "a"),
        harness.spec(&origin_b.url("b"), "b"),
    );
    let (fetched_a, fetched_b) = (Arc::new(Fetched::default()), Arc::new(Fetched::default()));
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let midpoint = async {
        // Half way: 8 MiB of the 16 have been allowed through.
        tokio::time::sleep(Duration::from_secs(2)).await;
        (fetched_a.bytes(), fetched_b.bytes())
    };
    let (outcome_a, outcome_b, (half_a, half_b)) = tokio::join!(
        harness.engine.transfer(&spec_a, fetched_a.clone(), &cancel),
        harness.engine.transfer(&spec_b, fetched_b.clone(), &cancel),
        midpoint,
    );
    let took = started.elapsed();
    harness.assert_stored("a", &a, &outcome_a.unwrap()).await;
    harness.assert_stored("b", &b, &outcome_b.unwrap()).await;
    assert!(
        took >= at_least(a.len() + b.len(), 4 * MIB),
        "16 MiB at 4 MiB/s took only {took:?}"
    );
    // Loose enough never to flake on a busy machine; an unfair cap (one
    // transfer first, then the other) would be at 0 % or 100 %.
    let share = half_a as f64 / (half_a + half_b).max(1) as f64;
    assert!(
        (0.5 / 1.35..=0.5 * 1.35).contains(&share),
        "at the midpoint a had {half_a} bytes, b {half_b}"
    );
}

#[tokio::test]
async fn requests_to_one_host_never_exceed_the_connection_cap() {
    let mut config = test_config();
    config.source.max_connections_per_host = Some(2);
    config.max_concurrent_parts = 4;
    let harness = Harness::with_config(config).await;
    let data = test_bytes(PART * 3 + 1000, 75);
    // Slow enough that parts overlap: ~0.4 s per part.
    let origin = Origin::start(
        data.clone(),
        Behavior {
            chunk_delay: Some(Duration::from_millis(5)),
            ..Behavior::default()
        },
    )
    .await;
    // Two transfers from the same host, each wanting 4 parts at once.
    let (spec_a, spec_b) = (
        harness.spec(&origin.url("f"), "one"),
        harness.spec(&origin.url("f"), "two"),
    );
    let (one, two) = tokio::join!(harness.run(&spec_a), harness.run(&spec_b));
    harness.assert_stored("one", &data, &one.unwrap()).await;
    harness.assert_stored("two", &data, &two.unwrap()).await;
    assert_eq!(
        origin.most_concurrent_requests(),
        2,
        "at most two requests at once, and the two were used"
    );
}

#[tokio::test]
async fn a_cap_below_the_minimum_rate_does_not_fail_a_stream_as_too_slow() {
    let mut config = test_config();
    // The source must deliver 4 MiB/s over any 300 ms it is waited for; the
    // cap lets only 1 MiB/s through.
    config.source.min_rate_bytes_per_sec = 4 * MIB;
    config.source.min_rate_window = Duration::from_millis(300);
    config.source.max_bytes_per_sec = Some(MIB);
    let harness = Harness::with_config(config).await;
    let data = test_bytes(2 * MIB as usize, 76);
    // No ranges: one stream, paced chunk by chunk.
    let origin = Origin::start(
        data.clone(),
        Behavior {
            ranges: false,
            ..Behavior::default()
        },
    )
    .await;
    let spec = harness.spec(&origin.url("stream"), "stream");
    let started = Instant::now();
    let outcome = harness.run(&spec).await.unwrap();
    let took = started.elapsed();
    harness.assert_stored("stream", &data, &outcome).await;
    assert!(
        took >= at_least(data.len(), MIB),
        "2 MiB at 1 MiB/s took only {took:?}"
    );
}

/// Keeps the CRCs of the parts an earlier run uploaded (moto's ListParts
/// does not list them).
struct KeptCrcs(std::collections::HashMap<u32, u64>);

impl ferry_engine::Journal for KeptCrcs {
    fn durable(&self) -> bool {
        false
    }
    fn checkpoint<'a>(
        &'a self,
        _: &'a ferry_engine::Checkpoint,
    ) -> BoxFuture<'a, Result<(), TransferError>> {
        Box::pin(async { Ok(()) })
    }
    fn restarted<'a>(&'a self, reason: &'a str) -> BoxFuture<'a, Result<(), TransferError>> {
        panic!("the checkpoint must be usable, not: {reason}")
    }
    fn resumed(&self, _: u32, _: u64) -> BoxFuture<'_, Result<(), TransferError>> {
        Box::pin(async { Ok(()) })
    }
    fn part_uploaded<'a>(&'a self, _: &'a str, _: &'a UploadedPart) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    fn part_checksums<'a>(
        &'a self,
        _: &'a str,
        _: &'a [u32],
    ) -> BoxFuture<'a, Result<std::collections::HashMap<u32, u64>, TransferError>> {
        Box::pin(async { Ok(self.0.clone()) })
    }
    fn may_write(&self) -> Result<(), TransferError> {
        Ok(())
    }
    fn before_complete(&self, _: u64) -> BoxFuture<'_, Result<(), TransferError>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn a_resume_that_rereads_parts_for_a_digest_does_not_wait_on_its_own_host_slot() {
    // One connection to the host: the answer opened for the first missing
    // part (3) must not keep it while parts 1 and 2 are re-read for the digest.
    let mut config = test_config();
    config.source.max_connections_per_host = Some(1);
    config.max_concurrent_parts = 2;
    let harness = Harness::with_config(config).await;
    let data = test_bytes(PART * 4, 77);
    let origin = Origin::start(data.clone(), Behavior::default()).await;
    let sink = S3Sink::new(harness.s3.clone());
    let dest = Destination {
        bucket: harness.bucket.clone(),
        key: "resumed".into(),
        ..Destination::default()
    };
    let upload_id = sink.create(&dest).await.unwrap();
    let mut kept = std::collections::HashMap::new();
    for (number, bytes) in (1u32..=2).zip(data.chunks(PART)) {
        let crc = ferry_engine::checksum::crc64nvme(bytes);
        let body = bytes::Bytes::copy_from_slice(bytes);
        sink.upload_part(&dest, &upload_id, number, body, crc, None)
            .await
            .unwrap();
        kept.insert(number, crc);
    }
    let checkpoint = ferry_engine::Checkpoint {
        upload_id,
        part_size: PART as u64,
        length: data.len() as u64,
        validator: Validator::ETag("\"v1\"".into()),
        digest_state: None,
        object_crc: None,
    };
    let spec = TransferSpec {
        expected: Expected {
            sha256: Some(ferry_testkit::sha256_hex(&data)),
            ..Expected::default()
        },
        ..harness.spec(&origin.url("f"), "resumed")
    };
    let cancel = CancellationToken::new();
    let resumed = harness.engine.transfer_resumable(
        &spec,
        Some(checkpoint),
        Arc::new(KeptCrcs(kept)),
        Arc::new(ferry_engine::NoopObserver),
        &cancel,
        None,
    );
    let outcome = tokio::time::timeout(Duration::from_secs(60), resumed)
        .await
        .expect("the resumed transfer must not wait for its own host slot")
        .unwrap();
    assert_eq!(outcome.parts_reused, 2);
    harness.assert_stored("resumed", &data, &outcome).await;
    assert_eq!(origin.most_concurrent_requests(), 1);
}
