//! Running a fleet from the command line: `ferry jobs` (listing and
//! counting by status and age), `ferry cancel` (queued, running and final
//! jobs) and `ferry retry` (failed, cancelled, succeeded with --force).
//!
//! Over 500 lines: each command is tried against every status a job can be
//! in, and the sharded listing against the unsharded index it replaced (its
//! own table with both indexes); the three commands share one set of helpers.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use ferry_testkit::{Behavior, Origin, test_bytes, unique_name};

use aws_sdk_dynamodb::types::{
    BillingMode, GlobalSecondaryIndex, KeyType, Projection, ProjectionType,
};
use ferry_worker::store;

use crate::harness::{
    PART, Stack, create_table, key_element, number, slow, string_attribute, text,
};

const LIMIT: Duration = Duration::from_secs(60);

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn destination(stack: &Stack, key: &str) -> String {
    format!("s3://{}/{key}", stack.bucket)
}

/// Waits (bounded) until the queue holds no message at all.
async fn wait_queue_empty(stack: &Stack) {
    let deadline = Instant::now() + LIMIT;
    while stack.queue_depth(&stack.queue).await != (0, 0) {
        assert!(Instant::now() < deadline, "queue never drained");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Moves the time a record entered its status (and its last update) to
/// `at` (RFC 3339, whole seconds), as if that happened then.
async fn age_record(dynamodb: &aws_sdk_dynamodb::Client, table: &str, job_id: &str, at: &str) {
    let millis = at.replace('Z', ".000Z");
    dynamodb
        .update_item()
        .table_name(table)
        .key("job_id", AttributeValue::S(job_id.into()))
        .update_expression("SET updated_at = :at, status_at = :millis")
        .expression_attribute_values(":at", AttributeValue::S(at.into()))
        .expression_attribute_values(":millis", AttributeValue::S(millis))
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_lists_by_status_and_age_newest_first_in_every_format() {
    let stack = Stack::new().await;
    let origin = Origin::start(test_bytes(3000, 1), Behavior::default()).await;
    let missing = Origin::start(
        Vec::new(),
        Behavior {
            status: Some(404),
            ..Behavior::default()
        },
    )
    .await;
    let worker = stack.spawn_worker(stack.config());
    for (id, url) in [("done-1", origin.url("a")), ("gone-1", missing.url("b"))] {
        stack.cli(&["submit", &url, &destination(&stack, id), "--job-id", id]);
        stack.wait_final(id, LIMIT).await;
    }
    worker.stop().await;
    // Submitted last, so newest; no worker runs it.
    stack.cli(&[
        "submit",
        &origin.url("c"),
        &destination(&stack, "waiting-1"),
        "--job-id",
        "waiting-1",
    ]);
    // A failure from long ago: outside `--since 1h`.
    stack.cli(&[
        "submit",
        &missing.url("d"),
        &destination(&stack, "old-1"),
        "--job-id",
        "old-1",
    ]);
    age_record(
        &stack.dynamodb,
        &stack.table,
        "old-1",
        "2020-01-01T00:00:00Z",
    )
    .await;

    let lines: Vec<serde_json::Value> = stack
        .cli(&["jobs", "--format", "jsonl"])
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let ids: Vec<&str> = lines
        .iter()
        .map(|r| r["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
    assert_eq!(ids.last(), Some(&"old-1"), "newest first: {ids:?}");
    let times: Vec<&str> = lines
        .iter()
        .map(|r| r["status_at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    // Every write that set the status kept the index partition in step.
    for record in &lines {
        let (id, status) = (
            record["job_id"].as_str().unwrap(),
            record["status"].as_str().unwrap(),
        );
        let expected = store::status_shard(id, store::Status::parse(status).unwrap());
        assert_eq!(
            record["status_shard"].as_str(),
            Some(expected.as_str()),
            "{record}"
        );
    }

    let failed = stack.cli(&["jobs", "--status", "failed", "--format", "jsonl"]);
    assert_eq!(failed.lines().count(), 1, "{failed}");
    assert!(
        failed.contains("\"gone-1\"") && failed.contains("source_not_found"),
        "{failed}"
    );
    let recent = stack.cli(&["jobs", "--since", "1h", "--format", "jsonl"]);
    assert_eq!(recent.lines().count(), 3, "{recent}");
    assert!(!recent.contains("old-1"));
    assert_eq!(
        stack
            .cli(&["jobs", "--limit", "1", "--format", "jsonl"])
            .lines()
            .count(),
        1
    );

    let table = stack.cli(&["jobs"]);
    let rows: Vec<&str> = table.lines().collect();
    assert!(
        rows[0].starts_with("JOB ID") && rows[0].contains("PROGRESS"),
        "{table}"
    );
    assert_eq!(rows.len(), 5, "{table}");
    let done = rows.iter().find(|r| r.starts_with("done-1")).unwrap();
    assert!(
        done.contains("succeeded") && done.contains("100%"),
        "{done}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("gone-1") && r.ends_with("source_not_found"))
    );

    let csv = stack.cli(&["jobs", "--status", "succeeded,failed", "--format", "csv"]);
    let csv_rows: Vec<&str> = csv.lines().collect();
    assert!(
        csv_rows[0].starts_with("bucket,key,status,error_code,message,job_id"),
        "{csv}"
    );
    assert_eq!(csv_rows.len(), 3, "{csv}");
    assert!(
        csv_rows
            .iter()
            .any(|r| r.starts_with(&format!("{},done-1,succeeded,", stack.bucket)))
    );

    let summary = stack.cli(&["jobs", "--summary"]);
    let count = |status: &str| -> u64 {
        summary
            .lines()
            .find_map(|l| l.strip_prefix(status).map(|n| n.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("{status} in {summary}"))
    };
    assert_eq!(
        (
            count("queued"),
            count("succeeded"),
            count("failed"),
            count("total")
        ),
        (2, 1, 1, 4),
        "{summary}"
    );
    let recent = stack.cli(&["jobs", "--summary", "--since", "1h"]);
    assert!(
        recent
            .lines()
            .any(|l| l.starts_with("failed") && l.trim_end().ends_with(" 1"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_on_a_table_without_the_status_index_says_so() {
    let stack = Stack::new().await;
    let bare = unique_name("bare");
    create_table(&stack.dynamodb, &bare, false).await;
    let output = stack.cli_output(&["jobs", "--table", &bare]);
    assert_eq!(output.status.code(), Some(1));
    let said = stderr(&output);
    assert!(
        said.contains(&bare) && said.contains("status-shard-index"),
        "{said}"
    );
    assert_eq!(said.lines().count(), 1, "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_queued_running_and_not_final_jobs() {
    let stack = Stack::new().await;
    // About 8 s a part: still running when the cancel comes.
    let origin = Origin::start(
        test_bytes(PART * 4, 2),
        Behavior {
            chunk_delay: Some(Duration::from_millis(100)),
            ..slow()
        },
    )
    .await;

    // Queued: cancelled at once; its message is dropped when received.
    stack.cli(&[
        "submit",
        &origin.url("q"),
        &destination(&stack, "queued-1"),
        "--job-id",
        "queued-1",
    ]);
    let said = stack.cli(&["cancel", "queued-1", "--by", "ops@example"]);
    assert!(said.contains("queued-1: cancelled"), "{said}");
    let record = stack.record("queued-1").await.unwrap();
    assert_eq!(text(&record, "status"), "cancelled");
    assert_eq!(text(&record, "cancelled_by"), "ops@example");
    assert!(!text(&record, "cancelled_at").is_empty());

    // Running: its worker stops within a heartbeat and aborts the upload.
    let worker = stack.spawn_worker(stack.config());
    stack.cli(&[
        "submit",
        &origin.url("r"),
        &destination(&stack, "running-1"),
        "--job-id",
        "running-1",
    ]);
    stack.wait_for_checkpoint("running-1", LIMIT).await;
    let output = stack.cli_output(&["cancel", "running-1", "--wait", "--by", "ops@example"]);
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(stdout(&output).contains("within one heartbeat"));
    let record = stack.record("running-1").await.unwrap();
    assert_eq!(text(&record, "status"), "cancelled");
    assert_eq!(text(&record, "error_kind"), "cancelled");
    assert_eq!(text(&record, "cancelled_by"), "ops@example");
    assert!(!record.contains_key("lease_owner") && !record.contains_key("upload_id"));
    assert_eq!(stack.object("running-1").await, None, "no object");
    assert_eq!(stack.open_uploads().await, 0, "no open upload");
    wait_queue_empty(&stack).await;
    assert_eq!(
        stack
            .record("queued-1")
            .await
            .map(|r| text(&r, "status").to_owned())
            .as_deref(),
        Some("cancelled")
    );
    worker.stop().await;

    // Final: nothing changes, and the command says so.
    let output = stack.cli_output(&["cancel", "running-1"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("already cancelled; nothing changed"),
        "{}",
        stderr(&output)
    );
    let output = stack.cli_output(&["cancel", "no-such-job"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("no such job"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_requested_of_a_worker_that_then_died_is_finished_by_the_next() {
    let stack = Stack::new().await;
    let origin = Origin::start(test_bytes(PART * 4, 3), slow()).await;
    let worker = stack.start_worker_process(&[]);
    stack.cli(&[
        "submit",
        &origin.url("d"),
        &destination(&stack, "orphan-1"),
        "--job-id",
        "orphan-1",
    ]);
    stack.wait_for_checkpoint("orphan-1", LIMIT).await;
    // The worker dies before its next renewal can see the request.
    let mut worker = worker;
    worker.kill();
    let said = stack.cli(&["cancel", "orphan-1", "--by", "ops@example"]);
    // Its lease may still look alive (requested) or have lapsed (cancelled).
    assert!(said.contains("orphan-1: "), "{said}");
    let next = stack.spawn_worker(stack.config());
    let record = stack.wait_final("orphan-1", LIMIT).await;
    assert_eq!(text(&record, "status"), "cancelled");
    assert_eq!(stack.object("orphan-1").await, None);
    // The upload the dead worker left is aborted by the next worker or gc.
    stack.cli(&["gc", "--bucket", &stack.bucket, "--older-than", "0s"]);
    assert_eq!(stack.open_uploads().await, 0);
    wait_queue_empty(&stack).await;
    next.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_queues_failed_and_cancelled_jobs_again_under_their_ids() {
    let stack = Stack::new().await;
    let data = test_bytes(4000, 4);
    let origin = Origin::start(
        data.clone(),
        Behavior {
            status: Some(404),
            ..Behavior::default()
        },
    )
    .await;
    let worker = stack.spawn_worker(stack.config());
    stack.cli(&[
        "submit",
        &origin.url("f"),
        &destination(&stack, "failed-1"),
        "--job-id",
        "failed-1",
    ]);
    let failed = stack.wait_final("failed-1", LIMIT).await;
    assert_eq!(text(&failed, "status"), "failed");
    // The record keeps of the message only what its own fields do not say
    // (a small record stays under 1 KB); retry rebuilds the rest below.
    assert_eq!(text(&failed, "message"), r#"{"version":1}"#);
    worker.stop().await;
    stack.cli(&[
        "submit",
        &origin.url("c"),
        &destination(&stack, "cancelled-1"),
        "--job-id",
        "cancelled-1",
    ]);
    stack.cli(&["cancel", "cancelled-1"]);
    // A URL with a query string may carry a signature: never stored, so not
    // retryable by ferry.
    stack.cli(&[
        "submit",
        &format!("{}?sig=abc", origin.url("s")),
        &destination(&stack, "secret-1"),
        "--job-id",
        "secret-1",
    ]);
    stack.cli(&["cancel", "secret-1"]);

    // The origin recovers; the failed one by id, the cancelled by status.
    origin.set(|b| b.status = None);
    let said = stack.cli(&["retry", "failed-1", "--by", "ops@example"]);
    assert!(said.contains("failed-1: queued"), "{said}");
    let record = stack.record("failed-1").await.unwrap();
    assert_eq!(text(&record, "status"), "queued");
    assert_eq!(number(&record, "attempts"), 0);
    assert_eq!(number(&record, "retried"), 1);
    assert_eq!(text(&record, "retried_by"), "ops@example");
    assert!(!record.contains_key("error") && !record.contains_key("finished_at"));
    let output = stack.cli_output(&["retry", "--status", "cancelled", "--since", "1h"]);
    assert_eq!(output.status.code(), Some(1), "secret-1 is refused");
    assert!(
        stdout(&output).contains("cancelled-1: queued"),
        "{}",
        stdout(&output)
    );
    assert!(
        stderr(&output).contains("secret-1: its URL or headers carry a secret"),
        "{}",
        stderr(&output)
    );
    assert_eq!(stack.status("secret-1").await.as_deref(), Some("cancelled"));

    let worker = stack.spawn_worker(stack.config());
    for id in ["failed-1", "cancelled-1"] {
        let record = stack.wait_final(id, LIMIT).await;
        assert_eq!(text(&record, "status"), "succeeded", "{id}");
        assert_eq!(
            number(&record, "attempts"),
            1,
            "{id}: a fresh attempt budget"
        );
        assert_eq!(stack.object(id).await.as_deref(), Some(&data[..]), "{id}");
    }
    // Succeeded: only with --force, counted again.
    let output = stack.cli_output(&["retry", "failed-1"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("succeeded; not retried (--force"),
        "{}",
        stderr(&output)
    );
    stack.cli(&["retry", "failed-1", "--force"]);
    let record = stack.wait_final("failed-1", LIMIT).await;
    assert_eq!(text(&record, "status"), "succeeded");
    assert_eq!(number(&record, "retried"), 2);
    wait_queue_empty(&stack).await;
    worker.stop().await;
}

/// A table with both the old unsharded `status-index` (status, updated_at,
/// all attributes) and the sharded keys-only index, so the same records can
/// be listed both ways.
async fn create_table_with_both_indexes(dynamodb: &aws_sdk_dynamodb::Client, table: &str) {
    let (attribute, key) = (string_attribute, key_element);
    let index = |name: &str, partition: &str, sort: &str, projection| {
        GlobalSecondaryIndex::builder()
            .index_name(name)
            .key_schema(key(partition, KeyType::Hash))
            .key_schema(key(sort, KeyType::Range))
            .projection(Projection::builder().projection_type(projection).build())
            .build()
            .unwrap()
    };
    dynamodb
        .create_table()
        .table_name(table)
        .set_attribute_definitions(Some(
            [
                "job_id",
                "status",
                "updated_at",
                "status_shard",
                "status_at",
            ]
            .map(attribute)
            .to_vec(),
        ))
        .key_schema(key("job_id", KeyType::Hash))
        .billing_mode(BillingMode::PayPerRequest)
        .global_secondary_indexes(index(
            "status-index",
            "status",
            "updated_at",
            ProjectionType::All,
        ))
        .global_secondary_indexes(index(
            store::STATUS_INDEX,
            store::STATUS_INDEX_PARTITION_KEY,
            store::STATUS_INDEX_SORT_KEY,
            ProjectionType::KeysOnly,
        ))
        .send()
        .await
        .unwrap();
}

/// What the old unsharded index listed: every record of `statuses`, newest
/// `updated_at` first, as JSON (the index projected whole records).
async fn list_unsharded(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    statuses: &[&str],
) -> Vec<serde_json::Value> {
    let mut records = Vec::new();
    for status in statuses {
        let mut next = None;
        loop {
            let page = dynamodb
                .query()
                .table_name(table)
                .index_name("status-index")
                .scan_index_forward(false)
                .key_condition_expression("#status = :status")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":status", AttributeValue::S((*status).into()))
                .set_exclusive_start_key(next)
                .limit(3)
                .send()
                .await
                .unwrap();
            records.extend(page.items.unwrap_or_default());
            next = page.last_evaluated_key;
            if next.is_none() {
                break;
            }
        }
    }
    records.sort_by(|a, b| text(b, "updated_at").cmp(text(a, "updated_at")));
    records.iter().map(store::to_json).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_lists_the_same_records_in_the_same_order_as_the_unsharded_index() {
    let mut stack = Stack::new().await;
    stack.table = unique_name("both");
    create_table_with_both_indexes(&stack.dynamodb, &stack.table).await;
    let origin = Origin::start(test_bytes(2000, 6), Behavior::default()).await;
    let missing = Origin::start(
        Vec::new(),
        Behavior {
            status: Some(404),
            ..Behavior::default()
        },
    )
    .await;
    let worker = stack.spawn_worker(stack.config());
    // 24 jobs over several shards: 16 run (every fourth fails), 4 are
    // cancelled while queued, 4 stay queued.
    let ids: Vec<String> = (0..24).map(|n| format!("same-{n:02}")).collect();
    for (n, id) in ids.iter().enumerate().take(16) {
        let url = if n % 4 == 0 {
            missing.url(id)
        } else {
            origin.url(id)
        };
        stack.cli(&["submit", &url, &destination(&stack, id), "--job-id", id]);
    }
    for id in &ids[..16] {
        stack.wait_final(id, LIMIT).await;
    }
    worker.stop().await;
    for id in &ids[16..] {
        stack.cli(&[
            "submit",
            &origin.url(id),
            &destination(&stack, id),
            "--job-id",
            id,
        ]);
    }
    let mut cancel = vec!["cancel"];
    cancel.extend(ids[16..20].iter().map(String::as_str));
    stack.cli(&cancel);
    // Distinct times, one per record and second, entering status and last
    // update alike: both orders are then fully determined.
    for (n, id) in ids.iter().enumerate() {
        let at = format!("2026-11-30T10:{:02}:{:02}Z", n / 60, n % 60);
        age_record(&stack.dynamodb, &stack.table, id, &at).await;
    }

    let jsonl = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["jobs", "--format", "jsonl", "--limit", "1000"];
        all.extend_from_slice(args);
        stack
            .cli(&all)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let every = [
        "queued",
        "running",
        "retrying",
        "succeeded",
        "failed",
        "rejected",
        "cancelled",
    ];
    let sharded = jsonl(&[]);
    assert_eq!(sharded.len(), 24);
    assert!(
        sharded
            .iter()
            .any(|r| r["status_shard"] != sharded[0]["status_shard"])
    );
    assert_eq!(
        sharded,
        list_unsharded(&stack.dynamodb, &stack.table, &every).await
    );
    let some = ["failed", "cancelled"];
    let listed = jsonl(&["--status", "failed,cancelled"]);
    assert_eq!(listed.len(), 8);
    assert_eq!(
        listed,
        list_unsharded(&stack.dynamodb, &stack.table, &some).await
    );
}
