//! Bandwidth and politeness end to end: a job's `max_bytes_per_sec` and the
//! worker's `FERRY_MAX_BANDWIDTH` through queue → worker → S3, `ferry copy
//! --max-bandwidth`, and start-up refusing caps that make no sense.
//!
//! A cap is checked as a lower bound on duration only; the achieved rate is
//! the benchmark's business (scripts/bandwidth-bench).

use std::process::Command;
use std::time::{Duration, Instant};

use ferry_engine::plan::MIB;
use ferry_testkit::{Behavior, Origin, sha256_hex, test_bytes};

use crate::harness::{Stack, number, text};

const LIMIT: Duration = Duration::from_secs(60);

/// What a cap must never beat: 0.85 × size / rate (the slack covers the
/// limiter's first refill and the last unpaid quantum).
fn at_least(size: usize, bytes_per_sec: u64) -> f64 {
    0.85 * size as f64 / bytes_per_sec as f64
}

/// The job's own `duration_secs`, as the worker recorded it.
fn duration_secs(record: &ferry_worker::store::Record) -> f64 {
    ferry_worker::store::to_json(record)["duration_secs"]
        .as_f64()
        .expect("duration_secs recorded")
}

#[tokio::test]
async fn a_jobs_max_bytes_per_sec_holds_it_to_that_rate() {
    let stack = Stack::new().await;
    let data = test_bytes(6 * MIB as usize, 81);
    let origin = Origin::start(data.clone(), Behavior::default()).await;
    let worker = stack.spawn_worker(stack.config());
    let mut capped = stack.message("capped", &origin.url("f"), "capped");
    capped["max_bytes_per_sec"] = serde_json::json!(2 * MIB);
    stack.send(&stack.queue, &capped).await;
    let mut zero = stack.message("zero", &origin.url("f"), "zero");
    zero["max_bytes_per_sec"] = serde_json::json!(0);
    stack.send(&stack.queue, &zero).await;

    let record = stack.wait_final("capped", LIMIT).await;
    assert_eq!(text(&record, "status"), "succeeded");
    let took = duration_secs(&record);
    assert!(
        took >= at_least(data.len(), 2 * MIB),
        "6 MiB at 2 MiB/s took only {took} s"
    );
    let stored = stack.object("capped").await.expect("object stored");
    assert_eq!(sha256_hex(&stored), sha256_hex(&data));

    let record = stack.wait_final("zero", LIMIT).await;
    assert_eq!(text(&record, "status"), "rejected");
    assert_eq!(text(&record, "error_kind"), "invalid_max_bytes_per_sec");
    worker.stop().await;
}

#[tokio::test]
async fn the_worker_cap_is_shared_fairly_by_its_jobs() {
    let stack = Stack::new().await;
    let (a, b) = (
        test_bytes(6 * MIB as usize, 82),
        test_bytes(6 * MIB as usize, 83),
    );
    let origin_a = Origin::start(a.clone(), Behavior::default()).await;
    let origin_b = Origin::start(b.clone(), Behavior::default()).await;
    // Both messages wait before the worker starts, so one receive takes both.
    stack
        .send(&stack.queue, &stack.message("a", &origin_a.url("f"), "a"))
        .await;
    stack
        .send(&stack.queue, &stack.message("b", &origin_b.url("f"), "b"))
        .await;
    let mut config = stack.config();
    config.engine.source.max_bytes_per_sec = Some(4 * MIB);
    let started = Instant::now();
    let worker = stack.spawn_worker(config);
    let record_a = stack.wait_final("a", LIMIT).await;
    let record_b = stack.wait_final("b", LIMIT).await;
    let took = started.elapsed().as_secs_f64();
    worker.stop().await;
    for (record, data, key) in [(&record_a, &a, "a"), (&record_b, &b, "b")] {
        assert_eq!(text(record, "status"), "succeeded", "{key}");
        assert_eq!(number(record, "size"), data.len() as u64);
    }
    assert!(
        took >= at_least(a.len() + b.len(), 4 * MIB),
        "12 MiB at 4 MiB/s took only {took} s"
    );
    // Sharing: each job took about as long as the other (a job served first
    // would take half as long as the one behind it). Loose, never flaky.
    let (secs_a, secs_b) = (duration_secs(&record_a), duration_secs(&record_b));
    let ratio = secs_a / secs_b;
    assert!(
        (1.0 / 1.35..=1.35).contains(&ratio),
        "job a took {secs_a} s, job b {secs_b} s"
    );
}

#[tokio::test]
async fn ferry_copy_respects_max_bandwidth() {
    let stack = Stack::new().await;
    let data = test_bytes(8 * MIB as usize, 84);
    let origin = Origin::start(data.clone(), Behavior::default()).await;
    let url = origin.url("f");
    let destination = format!("s3://{}/copied", stack.bucket);
    let endpoint = stack.moto.endpoint().to_owned();
    let started = Instant::now();
    // The origin is served by this test's runtime: the process runs beside it.
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["copy", &url, &destination, "--quiet"])
            .args(["--max-bandwidth", "4MiB", "--part-size-mib", "5"])
            .args(["--source-allow-cidrs", "127.0.0.0/8"])
            .env_clear()
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .output()
            .expect("run ferry copy")
    })
    .await
    .unwrap();
    let took = started.elapsed().as_secs_f64();
    assert!(
        output.status.success(),
        "ferry copy failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        took >= at_least(data.len(), 4 * MIB),
        "8 MiB at 4 MiB/s took only {took} s"
    );
    let stored = stack.object("copied").await.expect("object stored");
    assert_eq!(sha256_hex(&stored), sha256_hex(&data));
}

#[tokio::test]
async fn a_zero_or_garbage_cap_stops_the_worker_at_start_up() {
    let stack = Stack::new().await;
    for (name, value, said) in [
        ("FERRY_MAX_BANDWIDTH", "0", "at least 1 byte per second"),
        ("FERRY_MAX_BANDWIDTH", "abc", "is not a rate like 20MiB"),
        ("FERRY_MAX_CONNECTIONS_PER_HOST", "0", "at least 1"),
    ] {
        let mut worker = stack.start_worker_process(&[(name, value)]);
        let (status, log) = worker.wait(Duration::from_secs(30));
        assert_eq!(status.code(), Some(64), "{name}={value}: {log}");
        assert!(log.contains(said), "{name}={value}: {log}");
    }
}
