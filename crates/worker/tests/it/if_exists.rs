//! A job's `if_exists`: `skip` leaves an object that is already this
//! version of the source (and fetches nothing past the first answer),
//! `fail` never overwrites — not an object found first, not one a writer
//! puts there mid-upload — and still succeeds when the object it meets is
//! its own, stored by a try whose reply was lost.

use std::time::Duration;

use ferry_testkit::aws_proxy::{AwsProxy, Fault, Rule};
use ferry_testkit::{Behavior, Origin, test_bytes};

use crate::harness::{PART, Stack, proxied_clients, spawn_worker_with, text};

const LIMIT: Duration = Duration::from_secs(60);

fn with_if_exists(stack: &Stack, id: &str, url: &str, key: &str, rule: &str) -> serde_json::Value {
    let mut message = stack.message(id, url, key);
    message["if_exists"] = rule.into();
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_leaves_the_same_version_and_copies_another() {
    let stack = Stack::new().await;
    let worker = stack.spawn_worker(stack.config());
    let first = test_bytes(PART + 100, 1);
    let origin = Origin::start(first.clone(), Behavior::default()).await;
    stack
        .send(&stack.queue, &stack.message("v1", &origin.url("f"), "k"))
        .await;
    assert_eq!(
        text(&stack.wait_final("v1", LIMIT).await, "status"),
        "succeeded"
    );

    let before = origin.requests();
    stack
        .send(
            &stack.queue,
            &with_if_exists(&stack, "v1-again", &origin.url("f"), "k", "skip"),
        )
        .await;
    let record = stack.wait_final("v1-again", LIMIT).await;
    assert_eq!(text(&record, "status"), "succeeded");
    assert_eq!(
        record.get("skipped").and_then(|v| v.as_bool().ok()),
        Some(&true),
        "{record:?}"
    );
    assert_eq!(origin.requests() - before, 1, "the first answer only");
    assert!(!record.contains_key("source_integrity"), "nothing was read");
    assert_eq!(stack.object("k").await.as_deref(), Some(&first[..]));

    // Another version of the source (another strong ETag) is copied.
    let second = test_bytes(PART + 100, 2);
    let changed = Origin::start(
        second.clone(),
        Behavior {
            etag: Some("\"v2\"".into()),
            ..Behavior::default()
        },
    )
    .await;
    stack
        .send(
            &stack.queue,
            &with_if_exists(&stack, "v2", &changed.url("f"), "k", "skip"),
        )
        .await;
    let record = stack.wait_final("v2", LIMIT).await;
    assert_eq!(text(&record, "status"), "succeeded");
    assert!(!record.contains_key("skipped"), "{record:?}");
    assert_eq!(stack.object("k").await.as_deref(), Some(&second[..]));

    // The skipped job run again: v1 is not what `k` holds now, so it is
    // copied, and its record no longer says it was skipped.
    stack.cli(&["retry", "v1-again", "--force"]);
    let record = stack.wait_final("v1-again", LIMIT).await;
    assert_eq!(text(&record, "status"), "succeeded");
    assert!(!record.contains_key("skipped"), "{record:?}");
    assert!(record.contains_key("source_integrity"), "{record:?}");
    assert_eq!(stack.object("k").await.as_deref(), Some(&first[..]));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_never_overwrites_an_object_found_first_or_put_there_mid_upload() {
    let stack = Stack::new().await;
    let worker = stack.spawn_worker(stack.config());
    let kept = test_bytes(1000, 3);
    let origin = Origin::start(kept.clone(), Behavior::default()).await;
    stack
        .send(&stack.queue, &stack.message("there", &origin.url("f"), "k"))
        .await;
    assert_eq!(
        text(&stack.wait_final("there", LIMIT).await, "status"),
        "succeeded"
    );

    let other = Origin::start(test_bytes(2000, 4), Behavior::default()).await;
    stack
        .send(
            &stack.queue,
            &with_if_exists(&stack, "refused", &other.url("f"), "k", "fail"),
        )
        .await;
    let record = stack.wait_final("refused", LIMIT).await;
    assert_eq!(
        (text(&record, "status"), text(&record, "error_kind")),
        ("failed", "destination_exists")
    );
    assert_eq!(other.requests(), 1, "nothing read past the first answer");
    assert_eq!(stack.object("k").await.as_deref(), Some(&kept[..]));

    // Nothing there: stored as usual.
    stack
        .send(
            &stack.queue,
            &with_if_exists(&stack, "fresh", &other.url("f"), "fresh", "fail"),
        )
        .await;
    assert_eq!(
        text(&stack.wait_final("fresh", LIMIT).await, "status"),
        "succeeded"
    );

    // A writer comes between the check and CompleteMultipartUpload: the
    // conditional Complete refuses, the upload is aborted, its object stays.
    let slow = Origin::start(
        test_bytes(PART * 3, 5),
        Behavior {
            chunk_delay: Some(Duration::from_millis(20)),
            ..Behavior::default()
        },
    )
    .await;
    stack
        .send(
            &stack.queue,
            &with_if_exists(&stack, "raced", &slow.url("f"), "raced", "fail"),
        )
        .await;
    stack.wait_for_checkpoint("raced", LIMIT).await;
    let racer = test_bytes(500, 6);
    stack
        .s3
        .put_object()
        .bucket(&stack.bucket)
        .key("raced")
        .body(racer.clone().into())
        .send()
        .await
        .unwrap();
    let record = stack.wait_final("raced", LIMIT).await;
    assert_eq!(
        (text(&record, "status"), text(&record, "error_kind")),
        ("failed", "destination_exists")
    );
    assert_eq!(stack.object("raced").await.as_deref(), Some(&racer[..]));
    assert_eq!(
        stack.open_uploads().await,
        0,
        "the refused upload is aborted"
    );
    worker.stop().await;
}

/// `fail` and lost replies: a PutObject applied with its reply lost, and a
/// CompleteMultipartUpload applied with its reply lost whose retry S3
/// answers `412 PreconditionFailed` (the object there is the upload's
/// own): both jobs succeed, each object written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_recognises_its_own_object_behind_a_lost_reply() {
    let stack = Stack::new().await;
    let proxy = AwsProxy::start(stack.moto.endpoint()).await;
    proxy.set_rules(vec![
        Rule::new("s3:PutObject", Fault::Lost)
            .times(1)
            .id("lost put"),
        Rule::new("s3:CompleteMultipartUpload", Fault::Lost)
            .times(1)
            .id("lost complete"),
        Rule::new(
            "s3:CompleteMultipartUpload",
            Fault::Error {
                status: Some(412),
                code: Some("PreconditionFailed".into()),
            },
        )
        // The first Complete is the rule above's: rules fire in order.
        .times(1)
        .id("412 after our own complete"),
    ]);
    let worker = spawn_worker_with(stack.config(), proxied_clients(&proxy).await);
    let small = test_bytes(1000, 7);
    let large = test_bytes(PART * 2 + 1, 8);
    let small_origin = Origin::start(small.clone(), Behavior::default()).await;
    let large_origin = Origin::start(large.clone(), Behavior::default()).await;
    for (id, origin) in [("small", &small_origin), ("large", &large_origin)] {
        stack
            .send(
                &stack.queue,
                &with_if_exists(&stack, id, &origin.url("f"), id, "fail"),
            )
            .await;
    }
    for (id, data) in [("small", &small), ("large", &large)] {
        let record = stack.wait_final(id, LIMIT).await;
        assert_eq!(text(&record, "status"), "succeeded", "{id}: {record:?}");
        assert_eq!(stack.object(id).await.as_deref(), Some(&data[..]), "{id}");
    }
    let fired: Vec<String> = proxy
        .log()
        .into_iter()
        .flat_map(|entry| entry.rules)
        .collect();
    for rule in ["lost put", "lost complete", "412 after our own complete"] {
        assert!(
            fired.iter().any(|r| r == rule),
            "{rule} not injected: {fired:?}"
        );
    }
    worker.stop().await;
}
