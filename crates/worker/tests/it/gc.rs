//! `ferry gc`: orphaned uploads are aborted, a running job's upload is not.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use ferry_testkit::{sha256_hex, test_bytes};
use ferry_worker::store;

use crate::harness::{PART, Stack, text};

/// An upload as ferry would have left it: the upload and its `upload#` item.
async fn orphan(stack: &Stack, key: &str, job_id: Option<&str>) -> String {
    let upload_id = stack
        .s3
        .create_multipart_upload()
        .bucket(&stack.bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .upload_id
        .unwrap();
    if let Some(job_id) = job_id {
        put(
            stack,
            &[
                ("job_id", &store::upload_key(&upload_id)),
                ("upload_job_id", job_id),
            ],
        )
        .await;
    }
    upload_id
}

async fn put(stack: &Stack, attributes: &[(&str, &str)]) {
    let item: HashMap<String, AttributeValue> = attributes
        .iter()
        .map(|(k, v)| ((*k).to_owned(), AttributeValue::S((*v).to_owned())))
        .collect();
    stack
        .dynamodb
        .put_item()
        .table_name(&stack.table)
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
}

async fn open_upload_ids(stack: &Stack) -> Vec<String> {
    let mut ids: Vec<String> = stack
        .s3
        .list_multipart_uploads()
        .bucket(&stack.bucket)
        .send()
        .await
        .unwrap()
        .uploads()
        .iter()
        .filter_map(|u| u.upload_id().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

fn gc(stack: &Stack, extra: &[&str]) -> String {
    let mut args = vec!["gc", "--bucket", &stack.bucket, "--older-than", "0s"];
    args.extend_from_slice(extra);
    stack.cli(&args)
}

#[tokio::test]
async fn gc_aborts_orphans_and_leaves_a_running_jobs_upload_alone() {
    let stack = Stack::new().await;
    // A real job, still running (slow origin) when gc runs.
    let data = test_bytes(6 * PART, 51);
    let origin = stack.submit_slow("live", data.clone()).await;
    let mut worker = stack.start_worker_process(&[("FERRY_MAX_CONCURRENT_UPLOADS", "2")]);
    stack
        .wait_for_parts("live", 1, Duration::from_secs(60))
        .await;
    let live = stack
        .wait_for_checkpoint("live", Duration::from_secs(1))
        .await;

    // Orphans: a job that ended, a job nobody knows, a job that moved on.
    put(&stack, &[("job_id", "ended"), ("status", "failed")]).await;
    let ended = orphan(&stack, "ended", Some("ended")).await;
    let unknown = orphan(&stack, "ghost", Some("ghost")).await;
    put(
        &stack,
        &[
            ("job_id", "moved"),
            ("status", "retrying"),
            ("upload_id", "another"),
        ],
    )
    .await;
    let moved = orphan(&stack, "moved", Some("moved")).await;
    // Not ferry's: no `upload#` item.
    let foreign = orphan(&stack, "foreign", None).await;

    let dry = gc(&stack, &["--dry-run"]);
    assert!(dry.contains("would abort"), "{dry}");
    assert_eq!(
        open_upload_ids(&stack).await.len(),
        5,
        "a dry run aborts nothing"
    );

    let report = gc(&stack, &[]);
    let mut left = vec![live.clone(), foreign];
    left.sort();
    assert_eq!(open_upload_ids(&stack).await, left, "{report}");
    for (key, upload) in [("ended", &ended), ("ghost", &unknown), ("moved", &moved)] {
        assert!(!left.contains(upload), "{key} was aborted");
        assert!(
            report
                .lines()
                .any(|l| l.contains("aborted") && l.contains(&format!("/{key} "))),
            "{report}"
        );
    }
    assert!(report.contains("3 upload(s) aborted"), "{report}");

    // The running job was not disturbed.
    origin.set(|b| b.chunk_delay = None);
    let record = stack.wait_final("live", Duration::from_secs(120)).await;
    worker.terminate();
    worker.wait(Duration::from_secs(30));
    assert_eq!(text(&record, "status"), "succeeded", "{record:?}");
    let stored = stack.object("live").await.expect("stored");
    assert_eq!(sha256_hex(&stored), sha256_hex(&data));
}

#[tokio::test]
async fn the_workers_periodic_sweep_aborts_orphans_in_its_allowed_buckets() {
    let stack = Stack::new().await;
    let unknown = orphan(&stack, "swept/ghost", Some("ghost")).await;
    let foreign = orphan(&stack, "swept/foreign", None).await;
    let mut config = stack.config();
    config.destinations = vec![ferry_worker::config::AllowedDestination {
        bucket: stack.bucket.clone(),
        prefix: "swept/".into(),
    }];
    config.gc = Some(ferry_worker::config::GcSchedule {
        interval: Duration::from_millis(500),
        older_than: Duration::ZERO,
    });
    let worker = stack.spawn_worker(config);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while open_upload_ids(&stack).await.contains(&unknown) {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep never aborted it"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.stop().await;
    assert_eq!(open_upload_ids(&stack).await, vec![foreign]);
}
