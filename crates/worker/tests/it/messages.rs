//! What strangers send: messages past the documented limits, and AWS
//! answers that no retry can change. Each must end its message (a
//! `rejected` record and the DLQ) and leave the worker free for the next job.

use std::time::Duration;

use ferry_testkit::{Behavior, Origin, test_bytes};

use crate::harness::{Stack, text};

const LIMIT: Duration = Duration::from_secs(60);

/// A URL of ~220 KB passed parsing, and the claim then wrote it twice
/// (`url` and `message`) into one item past DynamoDB's 400 KB limit, which
/// the claim retried without end while holding a job slot. It must be
/// refused at parse time instead.
#[tokio::test]
async fn an_oversized_url_is_rejected_dead_lettered_and_the_worker_goes_on() {
    let stack = Stack::new().await;
    let data = test_bytes(1000, 60);
    let origin = Origin::start(data.clone(), Behavior::default()).await;
    let mut config = stack.config();
    // One slot: a message that held it would stop the next job.
    config.max_concurrent_jobs = 1;
    let worker = stack.spawn_worker(config);
    // Long paths (not queries): they survive redaction, so both `url`
    // and `message` would carry them. The first is the issue's ~220 KB URL
    // (now past the message limit), the second fits the message but not
    // the URL limit.
    for (id, repeat, kind) in [
        ("huge-url", 110_000, "message_too_large"),
        ("long-url", 30_000, "url_too_long"),
    ] {
        let long = origin.url(&"a/".repeat(repeat));
        stack
            .send(&stack.queue, &stack.message(id, &long, id))
            .await;
        let record = stack.wait_final(id, LIMIT).await;
        assert_eq!(
            (text(&record, "status"), text(&record, "error_kind")),
            ("rejected", kind),
            "{id}"
        );
    }
    let dead = stack.drain(&stack.dlq).await;
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().all(|body| body.len() > 60_000));

    stack
        .send(
            &stack.queue,
            &stack.message("after", &origin.url("f"), "after"),
        )
        .await;
    let after = stack.wait_final("after", LIMIT).await;
    worker.stop().await;
    assert_eq!(text(&after, "status"), "succeeded");
    assert_eq!(stack.object("after").await.as_deref(), Some(&data[..]));
    assert_eq!(stack.queue_depth(&stack.queue).await, (0, 0));
}
