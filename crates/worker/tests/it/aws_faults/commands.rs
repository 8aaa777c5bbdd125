//! The CLI through the fault proxy: `submit`, `cancel`, `retry` and
//! `status` facing lost replies and outages.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_survives_a_lost_record_write_and_a_failed_enqueue() {
    let f = Faulty::new().await;
    let data = test_bytes(1000, 3);
    let origin = ferry_testkit::Origin::start(data.clone(), Behavior::default()).await;
    let url = origin.url("f");
    let lost = |id: &str| format!("s3://{}/{id}", f.stack.bucket);

    // The PutItem is applied but its reply lost: the SDK's retry finds the
    // record there. It is ours and still queued, so the message goes out.
    f.proxy
        .set_rules(vec![Rule::new("dynamodb:PutItem", Fault::Lost).times(1)]);
    let output = ferry_through(&f, &["submit", &url, &lost("a"), "--job-id", "a"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(f.proxy.faults("dynamodb:PutItem").len(), 1);
    assert_eq!(f.stack.queue_depth(&f.stack.queue).await, (1, 0));

    // SendMessage fails past the SDK's retries: the command fails and says
    // how to finish; the same command then enqueues the recorded job.
    f.proxy.set_rules(vec![Rule::new(
        "sqs:SendMessage",
        Fault::Error {
            status: None,
            code: None,
        },
    )]);
    let output = ferry_through(&f, &["submit", &url, &lost("b"), "--job-id", "b"]);
    assert_eq!(output.status.code(), Some(1));
    let said = stderr(&output);
    assert!(
        said.contains("recorded but could not be enqueued") && said.contains("--job-id b"),
        "{said}"
    );
    assert_eq!(f.stack.status("b").await.as_deref(), Some("queued"));
    f.proxy.clear_rules();
    let output = ferry_through(&f, &["submit", &url, &lost("b"), "--job-id", "b"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(f.stack.queue_depth(&f.stack.queue).await, (2, 0));

    // Both jobs run once; a finished job is never enqueued again, and an id
    // that names another job is refused.
    let worker = f.worker(Duration::from_secs(10)).await;
    for id in ["a", "b"] {
        let record = f.stack.wait_final(id, Duration::from_secs(60)).await;
        assert_eq!(text(&record, "status"), "succeeded");
        assert_eq!(number(&record, "attempts"), 1);
    }
    worker.stop().await;
    let output = ferry_through(&f, &["submit", &url, &lost("a"), "--job-id", "a"]);
    assert!(output.status.success());
    assert!(stderr(&output).contains("already exists (succeeded)"));
    assert_eq!(f.stack.queue_depth(&f.stack.queue).await, (0, 0));
    let output = ferry_through(&f, &["submit", &url, &lost("other"), "--job-id", "a"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("already names a different job"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_retry_survive_lost_replies() {
    let f = Faulty::new().await;
    let origin = ferry_testkit::Origin::start(
        test_bytes(crate::harness::PART * 4, 5),
        Behavior {
            chunk_delay: Some(Duration::from_millis(100)),
            ..crate::harness::slow()
        },
    )
    .await;
    let to = |id: &str| format!("s3://{}/{id}", f.stack.bucket);
    let lost_once = |text: &str| {
        Rule::new("dynamodb:UpdateItem", Fault::Lost)
            .matching(text)
            .times(1)
    };

    // A queued job's cancel, applied with its reply lost: the SDK's retry
    // fails the condition, and the token shows the write was ours.
    let output = ferry_through(&f, &["submit", &origin.url("q"), &to("q"), "--job-id", "q"]);
    assert!(output.status.success(), "{}", stderr(&output));
    f.proxy.set_rules(vec![lost_once("#cancel_token = :token")]);
    let output = ferry_through(&f, &["cancel", "q"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(f.proxy.faults("dynamodb:UpdateItem").len(), 1);
    assert_eq!(f.stack.status("q").await.as_deref(), Some("cancelled"));

    // Its retry, likewise: queued once, counted once.
    f.proxy.set_rules(vec![lost_once("#retry_token = :token")]);
    let output = ferry_through(&f, &["retry", "q"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(f.proxy.faults("dynamodb:UpdateItem").len(), 2);
    let record = f.stack.record("q").await.unwrap();
    assert_eq!(
        (text(&record, "status"), number(&record, "retried")),
        ("queued", 1)
    );

    // A running job: the request to its worker and the worker's final
    // `cancelled` write both lose their replies; the job still ends
    // cancelled, with no object and no open upload.
    f.proxy.set_rules(vec![
        lost_once("if_not_exists(#cancel_requested_by"),
        lost_once("REMOVE #lease_owner, #lease_expires, #cancel_requested_by"),
    ]);
    let worker = f.worker(Duration::from_secs(10)).await;
    let output = ferry_through(&f, &["submit", &origin.url("r"), &to("r"), "--job-id", "r"]);
    assert!(output.status.success(), "{}", stderr(&output));
    f.stack
        .wait_for_checkpoint("r", Duration::from_secs(60))
        .await;
    let output = ferry_through(&f, &["cancel", "r", "--wait"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(f.proxy.faults("dynamodb:UpdateItem").len(), 4);
    let record = f.stack.wait_final("r", Duration::from_secs(60)).await;
    assert_eq!(text(&record, "status"), "cancelled");
    assert_eq!(f.stack.object("r").await, None);
    // The retried `q` ran meanwhile; then no upload is left open.
    let record = f.stack.wait_final("q", Duration::from_secs(120)).await;
    assert_eq!(text(&record, "status"), "succeeded");
    assert_eq!(f.stack.open_uploads().await, 0);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_a_dynamodb_outage_in_one_readable_line() {
    let f = Faulty::new().await;
    f.proxy.set_rules(vec![Rule::new(
        "dynamodb:GetItem",
        Fault::Error {
            status: None,
            code: None,
        },
    )]);
    let output = ferry_through(&f, &["status", "nope"]);
    assert_eq!(output.status.code(), Some(1));
    let said = stderr(&output);
    assert!(
        said.contains("DynamoDB GetItem failed: InternalServerError"),
        "{said}"
    );
    assert!(!said.contains("ServiceError {"), "no Debug dump: {said}");
    assert!(
        f.proxy.faults("dynamodb:GetItem").len() >= 6,
        "the SDK retried"
    );
}
