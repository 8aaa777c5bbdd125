//! Job outcomes: success, duplicates, poison messages, failures.

use std::time::Duration;

use ferry_testkit::{Behavior, Origin, sha256_hex, test_bytes};

use crate::harness::{PART, Stack, number, text};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn small_and_multipart_jobs_succeed_with_full_records() {
    let stack = Stack::new().await;
    let small = test_bytes(1000, 1);
    let large = test_bytes(PART * 2 + 17, 2);
    let small_origin = Origin::start(small.clone(), Behavior::default()).await;
    let large_origin = Origin::start(large.clone(), Behavior::default()).await;
    let worker = stack.spawn_worker(stack.config());
    stack
        .send(
            &stack.queue,
            &stack.message("small", &small_origin.url("s"), "out/small"),
        )
        .await;
    let mut message = stack.message("large", &large_origin.url("l"), "out/large");
    message["expected"] = serde_json::json!({"sha256": sha256_hex(&large), "size": large.len()});
    stack.send(&stack.queue, &message).await;

    for (id, key, data) in [
        ("small", "out/small", &small),
        ("large", "out/large", &large),
    ] {
        let record = stack.wait_final(id, LIMIT).await;
        assert_eq!(text(&record, "status"), "succeeded", "{id}");
        assert_eq!(number(&record, "size"), data.len() as u64);
        assert_eq!(number(&record, "bytes_done"), data.len() as u64);
        assert_eq!(number(&record, "attempts"), 1);
        assert_eq!(text(&record, "checksum_algorithm"), "CRC64NVME");
        assert!(!text(&record, "etag").is_empty());
        assert!(!text(&record, "finished_at").is_empty());
        let stored = stack.object(key).await.expect("object stored");
        assert_eq!(sha256_hex(&stored), sha256_hex(data), "{id} bytes");
    }
    worker.stop().await;
    assert_eq!(
        stack.queue_depth(&stack.queue).await,
        (0, 0),
        "messages deleted"
    );
}

#[tokio::test]
async fn a_job_id_that_already_succeeded_is_not_run_again() {
    let stack = Stack::new().await;
    let data = test_bytes(PART + 1, 3);
    let origin = Origin::start(data, Behavior::default()).await;
    let worker = stack.spawn_worker(stack.config());
    let message = stack.message("once", &origin.url("f"), "once");
    // The same message twice, and a second message with the same job id.
    stack.send(&stack.queue, &message).await;
    stack.send(&stack.queue, &message).await;
    let record = stack.wait_final("once", LIMIT).await;
    assert_eq!(text(&record, "status"), "succeeded");
    let served = origin.requests();
    stack.send(&stack.queue, &message).await;
    // Every copy is consumed…
    let deadline = std::time::Instant::now() + LIMIT;
    while stack.queue_depth(&stack.queue).await != (0, 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "duplicates not deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    worker.stop().await;
    // …but the job ran once.
    let record = stack.record("once").await.unwrap();
    assert_eq!(number(&record, "attempts"), 1);
    assert_eq!(origin.requests(), served, "no source request after success");
    // One run is a probe and one ranged part, plus one request for each read
    // it retried (a loaded machine can hit the tests' 2 s read timeout). Two
    // copies of the message running at once would add a probe and a part
    // without retries: what moto's unlocked conditional writes once allowed
    // (scripts/moto_server.py).
    let retries = number(&record, "retries");
    assert!(
        (2..=2 + retries).contains(&served),
        "a single run: {served} source requests with {retries} retries"
    );
}

#[tokio::test]
async fn poison_messages_are_recorded_and_dead_lettered_and_the_worker_goes_on() {
    let stack = Stack::new().await;
    let origin = Origin::start(test_bytes(10, 4), Behavior::default()).await;
    let worker = stack.spawn_worker(stack.config());
    let poison = [
        ("not json at all".to_owned(), None),
        (
            serde_json::json!({"job_id": "missing-key", "url": origin.url("x"), "bucket": stack.bucket}).to_string(),
            Some(("missing-key", "invalid_job")),
        ),
        (
            serde_json::json!({"job_id": "bad-bucket", "url": origin.url("x"), "bucket": "Bad_Bucket", "key": "k"}).to_string(),
            Some(("bad-bucket", "invalid_bucket")),
        ),
        (
            serde_json::json!({"job_id": "future", "url": origin.url("x"), "bucket": stack.bucket, "key": "k", "version": 9}).to_string(),
            Some(("future", "unsupported_version")),
        ),
    ];
    for (body, _) in &poison {
        stack.send_raw(&stack.queue, body).await;
    }
    stack
        .send(
            &stack.queue,
            &stack.message("good", &origin.url("x"), "good"),
        )
        .await;
    assert_eq!(
        text(&stack.wait_final("good", LIMIT).await, "status"),
        "succeeded"
    );
    for (_, expected) in &poison {
        if let Some((id, kind)) = expected {
            let record = stack.wait_final(id, LIMIT).await;
            assert_eq!(text(&record, "status"), "rejected");
            assert_eq!(text(&record, "error_kind"), *kind);
            assert!(!text(&record, "error").is_empty());
        }
    }
    worker.stop().await;
    let mut dead: Vec<String> = stack.drain(&stack.dlq).await;
    let mut sent: Vec<String> = poison.iter().map(|(b, _)| b.clone()).collect();
    dead.sort();
    sent.sort();
    assert_eq!(dead, sent, "every poison message is on the DLQ, unchanged");
    assert_eq!(stack.queue_depth(&stack.queue).await, (0, 0));
}

#[tokio::test]
async fn a_wrong_expected_sha256_fails_with_no_object_and_no_upload() {
    let stack = Stack::new().await;
    let origin = Origin::start(test_bytes(PART * 2, 5), Behavior::default()).await;
    let worker = stack.spawn_worker(stack.config());
    let mut message = stack.message("wrong-sum", &origin.url("f"), "wrong");
    message["expected"] = serde_json::json!({"sha256": "0".repeat(64)});
    stack.send(&stack.queue, &message).await;
    let record = stack.wait_final("wrong-sum", LIMIT).await;
    worker.stop().await;
    assert_eq!(text(&record, "status"), "failed");
    assert_eq!(text(&record, "error_kind"), "checksum_mismatch");
    assert!(stack.object("wrong").await.is_none());
    assert_eq!(stack.open_uploads().await, 0);
    assert_eq!(stack.queue_depth(&stack.queue).await, (0, 0));
}

/// Runs one job against an origin that always answers `status`; returns the
/// final record and how many requests the origin saw.
async fn run_against_status(status: u16, job_id: &str) -> (ferry_worker::store::Record, u64) {
    let stack = Stack::new().await;
    let origin = stack
        .submit(
            job_id,
            Vec::new(),
            Behavior {
                status: Some(status),
                ..Behavior::default()
            },
        )
        .await;
    let worker = stack.spawn_worker(stack.config());
    let record = stack.wait_final(job_id, LIMIT).await;
    worker.stop().await;
    (record, origin.requests())
}

#[tokio::test]
async fn a_missing_source_fails_at_once_without_retries() {
    let (record, requests) = run_against_status(404, "gone").await;
    assert_eq!(text(&record, "status"), "failed");
    assert_eq!(text(&record, "error_kind"), "source_not_found");
    assert_eq!(number(&record, "attempts"), 1);
    assert_eq!(requests, 1);
}

#[tokio::test]
async fn transient_failures_are_retried_then_fail_after_max_attempts() {
    let (record, requests) = run_against_status(503, "flaky").await;
    assert_eq!(text(&record, "status"), "failed");
    assert_eq!(text(&record, "error_kind"), "source_http_error");
    assert_eq!(
        number(&record, "attempts"),
        3,
        "max_attempts in the test config"
    );
    assert!(text(&record, "error").contains("gave up after 3 failed attempts"));
    // Each attempt retried its probe: 3 attempts x 3 engine tries.
    assert_eq!(requests, 9);
}

#[tokio::test]
async fn secrets_in_the_url_never_reach_the_record() {
    let stack = Stack::new().await;
    let origin = Origin::start(test_bytes(100, 6), Behavior::default()).await;
    let worker = stack.spawn_worker(stack.config());
    let url = format!(
        "{}?X-Amz-Signature=SIGSECRET&token=TOKSECRET",
        origin.url("f")
    );
    let mut message = stack.message("secret", &url, "secret");
    message["headers"] = serde_json::json!({"Authorization": "Bearer HDRSECRET"});
    stack.send(&stack.queue, &message).await;
    let record = stack.wait_final("secret", LIMIT).await;
    worker.stop().await;
    let dump = ferry_worker::store::to_json(&record).to_string();
    for secret in ["SIGSECRET", "TOKSECRET", "HDRSECRET"] {
        assert!(!dump.contains(secret), "{secret} leaked into {dump}");
    }
    assert_eq!(text(&record, "status"), "succeeded");
}

#[tokio::test]
async fn the_record_says_how_the_source_was_known_to_be_whole() {
    let stack = Stack::new().await;
    let data = test_bytes(PART * 2 + 5, 4);
    let cases = [
        ("pinned", Behavior::default()),
        (
            "one_answer",
            Behavior {
                etag: Some("W/\"weak\"".into()),
                ..Behavior::default()
            },
        ),
        (
            "unframed",
            Behavior {
                framing: ferry_testkit::Framing::Close,
                ranges: false,
                etag: None,
                ..Behavior::default()
            },
        ),
    ];
    let mut origins = Vec::new();
    for (id, behavior) in cases {
        let origin = Origin::start(data.clone(), behavior).await;
        stack
            .send(&stack.queue, &stack.message(id, &origin.url("f"), id))
            .await;
        origins.push(origin);
    }
    let worker = stack.spawn_worker(stack.config());
    for id in ["pinned", "one_answer", "unframed"] {
        let record = stack.wait_final(id, LIMIT).await;
        assert_eq!(text(&record, "status"), "succeeded", "{id}");
        assert_eq!(text(&record, "source_integrity"), id);
        let stored = stack.object(id).await.expect("object stored");
        assert_eq!(sha256_hex(&stored), sha256_hex(&data), "{id} bytes");
    }
    worker.stop().await;
}
