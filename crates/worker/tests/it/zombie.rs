//! A zombie's give-up: a worker whose lease was taken over without its
//! knowing ends its attempt for good. It must leave the job — its record,
//! its message and the upload the new owner resumes — to the new owner.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use ferry_testkit::{Origin, test_bytes};

use crate::harness::{PART, Stack, number, slow, text};

const LIMIT: Duration = Duration::from_secs(60);

/// The give-up aborted the kept upload before the fenced record write told
/// the worker that the job was no longer its own: the worker that had taken
/// the job over found its upload gone and started again from byte 0 (or,
/// mid-way, failed `NoSuchUpload`).
#[tokio::test]
async fn a_worker_that_gives_up_after_losing_its_lease_leaves_the_upload_open() {
    let stack = Stack::new().await;
    let id = "zombie";
    // Twelve parts from a slow origin, four at a time: the source fails
    // while the first parts are still being read, long before the last.
    let data = test_bytes(PART * 12, 70);
    let origin = Origin::start(data.clone(), slow()).await;
    stack
        .send(&stack.queue, &stack.message(id, &origin.url("f"), id))
        .await;
    // Worker A has one attempt, and renews so rarely that it cannot learn
    // of the take-over before that attempt ends.
    let mut config = stack.config();
    config.max_attempts = 1;
    config.lease = Duration::from_secs(60);
    config.heartbeat = Duration::from_secs(30);
    config.visibility = Duration::from_secs(60);
    config.shutdown_grace = Duration::from_secs(20);
    let zombie = stack.spawn_worker(config);
    let upload_id = stack.wait_for_checkpoint(id, LIMIT).await;
    stack.wait_for_parts(id, 1, LIMIT).await;
    // Another worker takes the job over, and A's source fails for good:
    // A gives up its only attempt.
    stack.take_over(id).await;
    origin.set(|behavior| behavior.status = Some(503));
    // Returns once A's job has ended (well within the grace).
    zombie.stop().await;

    // A wrote nothing the new owner owns: not the record, not the upload.
    let record = stack.record(id).await.unwrap();
    assert_eq!(
        (text(&record, "status"), text(&record, "lease_owner")),
        ("running", "rival")
    );
    assert_eq!(text(&record, "upload_id"), upload_id);
    assert_eq!(
        stack.open_uploads().await,
        1,
        "the zombie aborted the upload of the worker that took the job over"
    );

    // The new owner resumes that upload and finishes: its lease is made to
    // lapse (it stands for a worker that died), and a healthy worker takes
    // the job from a new message (A's is still invisible).
    stack
        .dynamodb
        .update_item()
        .table_name(&stack.table)
        .key("job_id", AttributeValue::S(id.into()))
        .update_expression("SET lease_expires = :zero")
        .expression_attribute_values(":zero", AttributeValue::N("0".into()))
        .send()
        .await
        .unwrap();
    origin.set(|behavior| *behavior = ferry_testkit::Behavior::default());
    stack
        .send(&stack.queue, &stack.message(id, &origin.url("f"), id))
        .await;
    let worker = stack.spawn_worker(stack.config());
    // Generous: on a loaded machine (the whole suite beside it) the shared
    // emulator answers slowly.
    let record = stack.wait_final(id, LIMIT * 2).await;
    worker.stop().await;
    assert_eq!(text(&record, "status"), "succeeded");
    assert_eq!(
        (number(&record, "resumes"), number(&record, "restarts")),
        (1, 0)
    );
    assert_eq!(stack.object(id).await.as_deref(), Some(&data[..]));
    assert_eq!(stack.open_uploads().await, 0);
}
