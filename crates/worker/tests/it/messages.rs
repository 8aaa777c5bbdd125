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

/// An SQS refusal as the fault proxy answers it: JSON with the
/// query-compatible code in `x-amzn-query-error`, as SQS does.
fn sqs_refusal(code: &str) -> Fault {
    Fault::Error {
        status: Some(400),
        code: Some(code.into()),
    }
}

/// SQS refusing to receive from one of a worker's queues for good (the
/// queue deleted): the poll loop gave up on the whole poll at the first
/// queue's error, so a job on the second queue never ran, and `/readyz`
/// said "SQS or DynamoDB unreachable". The refused queue must be passed
/// over for a growing pause (not asked at every turn), the other polled,
/// `/readyz` must name the refusal, and all must mend once SQS answers.
#[tokio::test]
async fn a_queue_sqs_refuses_to_receive_from_is_named_in_readyz_and_the_other_queues_run() {
    let stack = Stack::new().await;
    let proxy = AwsProxy::start(stack.moto.endpoint()).await;
    let gone = stack.create_queue("gone").await;
    let gone_name = gone.rsplit('/').next().unwrap().to_owned();
    proxy.add_rule(
        Rule::new(
            "sqs:ReceiveMessage",
            sqs_refusal("AWS.SimpleQueueService.NonExistentQueue"),
        )
        .matching(&gone_name)
        .id("gone"),
    );
    let data = test_bytes(1000, 62);
    let origin = Origin::start(data.clone(), Behavior::default()).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // The refused queue first: strict priority asks it at every poll.
    let queues = format!("{gone},{}", stack.queue);
    let mut worker = stack.start_worker_process(&[
        ("AWS_ENDPOINT_URL", &proxy.endpoint()),
        ("FERRY_QUEUE_URL", &queues),
        ("FERRY_METRICS_ADDR", &format!("127.0.0.1:{port}")),
    ]);
    stack
        .send(
            &stack.queue,
            &stack.message("second", &origin.url("f"), "second"),
        )
        .await;
    let second = stack.wait_final("second", LIMIT).await;
    assert_eq!(text(&second, "status"), "succeeded");
    wait_for_answer(
        &format!("{base}/readyz"),
        503,
        "SQS refused the latest receive from a queue for good: queue_not_found",
    )
    .await;
    let metrics = get(&format!("{base}/metrics")).await.unwrap().1;
    let refused =
        "ferry_sqs_refused_total{operation=\"ReceiveMessage\",reason=\"queue_not_found\"}";
    assert!(sample(&metrics, refused) >= 1.0, "{metrics}");
    assert_eq!(sample(&metrics, "ferry_sqs_queues_refused"), 1.0);
    // Asked again after a pause that doubles, not at every poll (which
    // comes round every second or so).
    let receives = || proxy.faults("sqs:ReceiveMessage").len();
    let before = receives();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        receives() - before <= 3,
        "{} refusals in 6 s",
        receives() - before
    );

    proxy.clear_rules();
    wait_for_answer(&format!("{base}/readyz"), 200, "ready").await;
    stack
        .send(&gone, &stack.message("first", &origin.url("f"), "first"))
        .await;
    let first = stack.wait_final("first", LIMIT).await;
    assert_eq!(text(&first, "status"), "succeeded");
    stack
        .wait_for_queue_depth(&gone, (0, 0), LIMIT, "the job's message was not deleted")
        .await;
    let metrics = get(&format!("{base}/metrics")).await.unwrap().1;
    assert_eq!(sample(&metrics, "ferry_sqs_queues_refused"), 0.0);
    worker.terminate();
    let (status, log) = worker.wait(Duration::from_secs(30));
    assert!(status.success(), "{log}");
}

/// A dead-letter queue that refuses a rejected message for good (deleted):
/// the message stayed invisible only until its visibility lapsed (6 s
/// here), came back, was rejected again and sent again, at every
/// visibility timeout until the redrive policy moved it. It must be sent
/// once, counted, and parked for the busy recheck (5 minutes), left to the
/// redrive policy; the rejection record is kept and the worker goes on.
#[tokio::test]
async fn a_dead_letter_queue_that_refuses_for_good_is_not_sent_to_at_every_receive() {
    let stack = Stack::new().await;
    let proxy = AwsProxy::start(stack.moto.endpoint()).await;
    // Only the dead-letter sends carry the rejection attribute.
    proxy.add_rule(
        Rule::new(
            "sqs:SendMessage",
            sqs_refusal("AWS.SimpleQueueService.NonExistentQueue"),
        )
        .matching("ferry_rejection")
        .id("dlq-gone"),
    );
    let data = test_bytes(1000, 63);
    let origin = Origin::start(data.clone(), Behavior::default()).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut worker = stack.start_worker_process(&[
        ("AWS_ENDPOINT_URL", &proxy.endpoint()),
        ("FERRY_METRICS_ADDR", &format!("127.0.0.1:{port}")),
    ]);
    stack
        .send(
            &stack.queue,
            &stack.message("not-a-job", "ftp://example.com/f", "k"),
        )
        .await;
    let record = stack.wait_final("not-a-job", LIMIT).await;
    assert_eq!(text(&record, "status"), "rejected");
    let sends = || proxy.faults("sqs:SendMessage").len();
    let deadline = Instant::now() + LIMIT;
    while sends() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Two visibility timeouts and more: the message would have come back.
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert_eq!(sends(), 1, "dead-letter sends refused");
    let metrics = get(&format!("{base}/metrics")).await.unwrap().1;
    let series = "ferry_dead_letters_refused_total{reason=\"queue_not_found\"}";
    assert_eq!(sample(&metrics, series), 1.0, "{metrics}");
    // Kept on the queue (in flight, parked) for its redrive policy.
    assert_eq!(stack.queue_depth(&stack.queue).await, (0, 1));
    assert!(stack.drain(&stack.dlq).await.is_empty());

    stack
        .send(
            &stack.queue,
            &stack.message("after", &origin.url("f"), "after"),
        )
        .await;
    let after = stack.wait_final("after", LIMIT).await;
    assert_eq!(text(&after, "status"), "succeeded");
    // Its message deleted (on a loaded machine that may take a while),
    // the parked one still there.
    stack
        .wait_for_queue_depth(
            &stack.queue,
            (0, 1),
            LIMIT,
            "the job's message was not deleted",
        )
        .await;
    worker.terminate();
    let (status, log) = worker.wait(Duration::from_secs(30));
    assert!(status.success(), "{log}");
}

/// A finished job's delete that SQS refuses for good (the receipt handle
/// no longer valid) was retried 5 times over up to 15 s. It must be tried
/// once; the message comes back, finds the job final and is deleted as a
/// duplicate once SQS accepts the delete.
#[tokio::test]
async fn a_delete_sqs_refuses_for_good_is_tried_once_and_the_duplicate_deleted_later() {
    let stack = Stack::new().await;
    let proxy = AwsProxy::start(stack.moto.endpoint()).await;
    proxy.add_rule(
        Rule::new("sqs:DeleteMessage", sqs_refusal("ReceiptHandleIsInvalid")).id("handle"),
    );
    let data = test_bytes(1000, 64);
    let origin = Origin::start(data.clone(), Behavior::default()).await;
    // A 20-second visibility: the message does not come back while the
    // deletes are counted.
    let mut worker = stack.start_worker_process(&[
        ("AWS_ENDPOINT_URL", &proxy.endpoint()),
        ("FERRY_LEASE_SECS", "20"),
    ]);
    stack
        .send(
            &stack.queue,
            &stack.message("done", &origin.url("f"), "done"),
        )
        .await;
    let record = stack.wait_final("done", LIMIT).await;
    assert_eq!(text(&record, "status"), "succeeded");
    let deletes = || proxy.faults("sqs:DeleteMessage").len();
    let deadline = Instant::now() + LIMIT;
    while deletes() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(deletes(), 1, "refused deletes");

    proxy.clear_rules();
    stack
        .wait_for_queue_depth(
            &stack.queue,
            (0, 0),
            LIMIT,
            "the duplicate was never deleted",
        )
        .await;
    assert_eq!(proxy.forwarded("sqs:DeleteMessage").len(), 1);
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
