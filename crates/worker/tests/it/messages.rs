//! What strangers send: messages past the documented limits, and AWS
//! answers that no retry can change. Each must end its message (a
//! `rejected` record and the DLQ) and leave the worker free for the next job.

use std::time::{Duration, Instant};

use ferry_testkit::aws_proxy::{AwsProxy, Fault, Rule};
use ferry_testkit::{Behavior, Origin, test_bytes};

use crate::harness::{Stack, text};
use crate::observability::{free_port, get, sample};

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

/// DynamoDB answering claims with a permanent error (the
/// `ValidationException` of an item too large, which a message can no
/// longer provoke, and the other permanent classes): the claim loop retried
/// it without end, holding the worker's only job slot, while `/readyz`
/// stayed green. Each such message must be tried once, recorded `rejected`
/// and dead-lettered; three in a row make `/readyz` say so until a claim
/// succeeds again, and the next job runs.
#[tokio::test]
async fn a_claim_dynamodb_refuses_for_good_is_dead_lettered_and_frees_the_slot() {
    let stack = Stack::new().await;
    let proxy = AwsProxy::start(stack.moto.endpoint()).await;
    // One claim each, in order (a one-slot worker claims one at a time).
    let classes = [
        ("ValidationException", "validation"),
        ("ResourceNotFoundException", "resource_not_found"),
        ("AccessDeniedException", "access_denied"),
        ("UnrecognizedClientException", "unrecognized_client"),
        ("SerializationException", "serialization"),
    ];
    for (code, _) in classes {
        let refusal = Fault::Error {
            status: Some(400),
            code: Some(code.into()),
        };
        proxy.add_rule(
            Rule::new("dynamodb:UpdateItem", refusal)
                .matching("claim_token")
                .times(1)
                .id(code),
        );
    }
    let data = test_bytes(1000, 61);
    let origin = Origin::start(data.clone(), Behavior::default()).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut worker = stack.start_worker_process(&[
        ("AWS_ENDPOINT_URL", &proxy.endpoint()),
        ("FERRY_MAX_CONCURRENT_JOBS", "1"),
        ("FERRY_METRICS_ADDR", &format!("127.0.0.1:{port}")),
    ]);
    let refused: Vec<String> = (1..=classes.len())
        .map(|n| format!("refused-{n}"))
        .collect();
    for id in &refused {
        stack
            .send(&stack.queue, &stack.message(id, &origin.url("f"), id))
            .await;
    }
    for id in &refused {
        let record = stack.wait_final(id, LIMIT).await;
        assert_eq!(
            (text(&record, "status"), text(&record, "error_kind")),
            ("rejected", "store_refused"),
            "{id}"
        );
    }
    let mut dead = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while dead.len() < refused.len() && Instant::now() < deadline {
        dead.extend(stack.drain(&stack.dlq).await);
    }
    assert_eq!(dead.len(), refused.len(), "{dead:?}");
    wait_for_answer(&format!("{base}/readyz"), 503, "refused the latest claims").await;
    let metrics = get(&format!("{base}/metrics")).await.unwrap().1;
    for (_, reason) in classes {
        let series = format!("ferry_messages_unprocessable_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&metrics, &series), 1.0, "{series}: {metrics}");
    }
    // One try per message, and no more later: every claim since went
    // through (the rules are used up) and none was refused again.
    let claims = || proxy.faults("dynamodb:UpdateItem").len();
    assert_eq!(claims(), refused.len());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(claims(), refused.len());

    stack
        .send(
            &stack.queue,
            &stack.message("after", &origin.url("f"), "after"),
        )
        .await;
    let after = stack.wait_final("after", LIMIT).await;
    assert_eq!(text(&after, "status"), "succeeded");
    assert_eq!(stack.object("after").await.as_deref(), Some(&data[..]));
    wait_for_answer(&format!("{base}/readyz"), 200, "ready").await;
    worker.terminate();
    let (status, log) = worker.wait(Duration::from_secs(30));
    assert!(status.success(), "{log}");
}

/// Polls `url` (bounded) until it answers `want` with `text` in the body.
async fn wait_for_answer(url: &str, want: u16, text: &str) {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some((status, body)) = get(url).await
            && status == want
            && body.contains(text)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} never answered {want} {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
