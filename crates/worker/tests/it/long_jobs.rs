//! Jobs that outlive their message: longer than SQS's 12-hour visibility cap
//! (compressed here to seconds), released at deploy after deploy. They still
//! finish — handed off to a successor message rather than released to a new
//! receive — without restarting, without using up `FERRY_MAX_ATTEMPTS` (it
//! counts failed attempts, not starts), and
//! without the queue's `maxReceiveCount` dead-lettering them.

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use ferry_testkit::{Behavior, sha256_hex, test_bytes};

use crate::harness::{PART, Stack, number, slow, text};

/// Gives the stack's queue a redrive policy to its DLQ after `max` receives,
/// as every deployed queue has (the stack's is 10).
async fn dead_letter_after(stack: &Stack, max: u32) {
    let arn = stack.queue_arn(&stack.dlq).await;
    let policy = serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max});
    stack
        .sqs
        .set_queue_attributes()
        .queue_url(&stack.queue)
        .attributes(QueueAttributeName::RedrivePolicy, policy.to_string())
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_job_without_a_checkpoint_outlives_the_visibility_cap_without_restarting() {
    let stack = Stack::new().await;
    dead_letter_after(&stack, 3).await;
    let data = test_bytes(8 * PART, 61);
    // No ranges: the stream cannot be resumed, so a release at the cap would
    // start it again from byte 0, every time.
    let origin = stack
        .submit(
            "no-checkpoint",
            data.clone(),
            Behavior {
                ranges: false,
                ..slow()
            },
        )
        .await;
    // A 12-second cap stands in for 12 hours: the worker meets it 3 s into
    // a transfer that takes several times that.
    let mut worker = stack.start_worker_process(&[("FERRY_VISIBILITY_CAP_SECS", "12")]);
    let record = stack
        .wait_final("no-checkpoint", Duration::from_secs(180))
        .await;
    worker.terminate();
    let (_, log) = worker.wait(Duration::from_secs(30));

    assert_eq!(text(&record, "status"), "succeeded", "{record:?}");
    let stored = stack.object("no-checkpoint").await.expect("stored");
    assert_eq!(sha256_hex(&stored), sha256_hex(&data));
    // Once: from then on the job runs under no message of this worker's,
    // and the successor (looked at every busy recheck) stands in for it.
    let handoffs = log.matches("handed off to a successor").count();
    assert_eq!(handoffs, 1, "handed off at the cap: {log}");
    assert_eq!(number(&record, "attempts"), 1, "never restarted");
    assert_eq!(number(&record, "restarts"), 0);
    assert_eq!(origin.bytes_served(), data.len() as u64, "read once");
    assert_eq!(stack.queue_depth(&stack.dlq).await, (0, 0));
}

#[tokio::test]
async fn a_job_released_by_ten_drains_resumes_and_succeeds_without_using_up_attempts() {
    let stack = Stack::new().await;
    // Fewer receives than releases, and fewer attempts: neither may end it.
    dead_letter_after(&stack, 3).await;
    let data = test_bytes(12 * PART, 62);
    let origin = stack.submit_slow("drained", data.clone()).await;
    let settings = [
        ("FERRY_MAX_ATTEMPTS", "2"),
        ("FERRY_SHUTDOWN_GRACE_SECS", "0"),
        ("FERRY_MAX_CONCURRENT_UPLOADS", "1"),
    ];
    for drain in 1..=10 {
        let mut worker = stack.start_worker_process(&settings);
        stack
            .wait_for_parts("drained", drain, Duration::from_secs(120))
            .await;
        worker.terminate();
        let (status, log) = worker.wait(Duration::from_secs(30));
        assert!(status.success(), "drain {drain}: {log}");
        assert_eq!(
            stack.status("drained").await.as_deref(),
            Some("queued"),
            "released at drain {drain}: {log}"
        );
    }
    // One real failure after the eleven starts: an attempt that ends in an
    // error. With FERRY_MAX_ATTEMPTS 2 it is retried, not the end.
    origin.set(|b| {
        b.chunk_delay = None;
        b.status = Some(503);
    });
    let mut worker = stack.start_worker_process(&settings);
    // `retrying` lasts only until the next claim; `failures` stays.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let record = stack.record("drained").await.expect("record");
        if ferry_worker::store::number(&record, "failures").is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no attempt failed: {}",
            ferry_worker::store::to_json(&record)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    origin.set(|b| b.status = None);
    let record = stack.wait_final("drained", Duration::from_secs(180)).await;
    worker.terminate();
    worker.wait(Duration::from_secs(30));

    assert_eq!(text(&record, "status"), "succeeded", "{record:?}");
    let stored = stack.object("drained").await.expect("stored");
    assert_eq!(sha256_hex(&stored), sha256_hex(&data));
    assert_eq!(number(&record, "attempts"), 12);
    // Every start after the first resumed the upload (the failed one may
    // have failed before it could).
    assert!(number(&record, "resumes") >= 10, "{record:?}");
    assert_eq!(number(&record, "restarts"), 0);
    assert_eq!(number(&record, "failures"), 1, "releases are no failures");
    assert_eq!(stack.queue_depth(&stack.dlq).await, (0, 0));
}
