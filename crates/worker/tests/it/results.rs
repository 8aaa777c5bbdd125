//! Result events: every final record is published to the configured SNS
//! topic and SQS queue, with its user-facing fields and an event id that
//! makes a second copy recognisable; a publish that fails or loses its
//! reply never changes the job's result.

use std::time::{Duration, Instant};

use ferry_testkit::aws_proxy::{AwsProxy, Fault, Rule};
use ferry_testkit::{Behavior, Origin, test_bytes};
use ferry_worker::results::ResultTargets;
use serde_json::Value;

use crate::harness::{Stack, proxied_clients, spawn_worker_with, text};

const LIMIT: Duration = Duration::from_secs(60);

/// A topic whose messages land, raw, on a queue of its own; returns both.
async fn subscribed_topic(stack: &Stack) -> (String, String) {
    let topic = stack
        .sns
        .create_topic()
        .name(ferry_testkit::unique_name("results"))
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    let subscriber = stack.create_queue("subscriber").await;
    let arn = stack.queue_arn(&subscriber).await;
    stack
        .sns
        .subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .unwrap();
    (topic, subscriber)
}

/// Takes events off `queue` until `count` arrived (bounded). Each is
/// deleted once read (unlike `Stack::drain`): a later read must see only
/// what was published since.
async fn events(stack: &Stack, queue: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + LIMIT;
    let mut seen = Vec::new();
    while seen.len() < count {
        assert!(
            Instant::now() < deadline,
            "{} of {count} events: {seen:?}",
            seen.len()
        );
        let received = stack
            .sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for message in received.messages.unwrap_or_default() {
            seen.push(serde_json::from_str(message.body().unwrap()).unwrap());
            stack
                .sqs
                .delete_message()
                .queue_url(queue)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    seen
}

fn by_job<'a>(events: &'a [Value], job_id: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["job_id"] == job_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_records_reach_the_topic_and_the_queue_once_per_final_state() {
    let stack = Stack::new().await;
    let (topic, subscriber) = subscribed_topic(&stack).await;
    let direct = stack.create_queue("results").await;
    let mut config = stack.config();
    config.results = ResultTargets {
        topic_arn: Some(topic),
        queue_url: Some(direct.clone()),
    };
    let worker = stack.spawn_worker(config);
    let data = test_bytes(2000, 1);
    let origin = Origin::start(data, Behavior::default()).await;
    let missing = Origin::start(
        Vec::new(),
        Behavior {
            status: Some(404),
            ..Behavior::default()
        },
    )
    .await;
    stack
        .send(
            &stack.queue,
            &stack.message("ok", &origin.url("a?sig=SECRET"), "ok"),
        )
        .await;
    stack
        .send(
            &stack.queue,
            &stack.message("gone", &missing.url("b"), "gone"),
        )
        .await;
    stack
        .send_raw(
            &stack.queue,
            r#"{"job_id":"bad","url":"ftp://x/y","bucket":"b","key":"k"}"#,
        )
        .await;
    for (id, status) in [("ok", "succeeded"), ("gone", "failed"), ("bad", "rejected")] {
        assert_eq!(text(&stack.wait_final(id, LIMIT).await, "status"), status);
    }
    for queue in [&subscriber, &direct] {
        let events = events(&stack, queue, 3).await;
        for (id, status, kind) in [
            ("ok", "succeeded", None),
            ("gone", "failed", Some("source_not_found")),
            ("bad", "rejected", Some("invalid_url")),
        ] {
            let mine = by_job(&events, id);
            assert_eq!(mine.len(), 1, "{id}: {events:?}");
            let event = mine[0];
            assert_eq!(event["status"], status, "{event}");
            assert_eq!(event["type"], "ferry.job.final");
            assert!(
                event["event_id"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{id}:")),
                "{event}"
            );
            assert_eq!(event["error_kind"].as_str(), kind, "{event}");
            let text = event.to_string();
            for never in [
                "SECRET",
                "claim_token",
                "lease_owner",
                "\"message\"",
                "fence",
            ] {
                assert!(!text.contains(never), "{never} in {text}");
            }
        }
        let ok = by_job(&events, "ok")[0];
        assert_eq!(ok["size"], 2000);
        assert_eq!(ok["bucket"].as_str(), Some(stack.bucket.as_str()));
    }
    // A duplicate message of the finished job: published again, with the
    // same event id, so a subscriber can tell it is the same result.
    let first = events_id(&stack, "ok").await;
    stack
        .send(
            &stack.queue,
            &stack.message("ok", &origin.url("a?sig=SECRET"), "ok"),
        )
        .await;
    let again = events(&stack, &direct, 1).await;
    assert_eq!(again[0]["event_id"].as_str(), Some(first.as_str()));
    worker.stop().await;
}

/// The event id a final record of `job_id` has.
async fn events_id(stack: &Stack, job_id: &str) -> String {
    let record = stack.record(job_id).await.unwrap();
    ferry_worker::results::event(&record).unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_that_fails_or_loses_its_reply_never_changes_the_result() {
    let stack = Stack::new().await;
    let (topic, subscriber) = subscribed_topic(&stack).await;
    let proxy = AwsProxy::start(stack.moto.endpoint()).await;
    // The first job's publish is applied with its reply lost (the SDK sends
    // it again); the second's is refused every time (a topic policy that
    // lost the worker's grant).
    proxy.set_rules(vec![
        Rule::new("sns:Publish", Fault::Lost)
            .times(1)
            .id("lost publish"),
        Rule::new(
            "sns:Publish",
            Fault::Error {
                status: Some(403),
                code: Some("AuthorizationError".into()),
            },
        )
        .matching("refused")
        .id("publish refused"),
    ]);
    let mut config = stack.config();
    config.results = ResultTargets {
        topic_arn: Some(topic),
        queue_url: None,
    };
    let worker = spawn_worker_with(config, proxied_clients(&proxy).await);
    let origin = Origin::start(test_bytes(100, 2), Behavior::default()).await;
    stack
        .send(
            &stack.queue,
            &stack.message("lost", &origin.url("a"), "lost"),
        )
        .await;
    assert_eq!(
        text(&stack.wait_final("lost", LIMIT).await, "status"),
        "succeeded"
    );
    let delivered = events(&stack, &subscriber, 1).await;
    let id = events_id(&stack, "lost").await;
    assert!(
        delivered
            .iter()
            .all(|e| e["event_id"].as_str() == Some(id.as_str())),
        "{delivered:?}"
    );

    stack
        .send(
            &stack.queue,
            &stack.message("refused", &origin.url("b"), "refused"),
        )
        .await;
    let record = stack.wait_final("refused", LIMIT).await;
    assert_eq!(text(&record, "status"), "succeeded");
    // The job's message is deleted all the same: nothing comes back.
    let deadline = Instant::now() + LIMIT;
    while stack.queue_depth(&stack.queue).await != (0, 0) {
        assert!(Instant::now() < deadline, "the job's message stayed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fired: Vec<String> = proxy
        .log()
        .into_iter()
        .flat_map(|entry| entry.rules)
        .collect();
    assert!(fired.iter().any(|r| r == "lost publish"), "{fired:?}");
    assert!(fired.iter().any(|r| r == "publish refused"), "{fired:?}");
    worker.stop().await;
}
