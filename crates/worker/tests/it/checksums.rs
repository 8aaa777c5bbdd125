//! Upload checksum modes through the worker: the per-bucket setting reaches
//! S3, and a checksum a checking store refuses ends the job as the docs say
//! (`failed`, `checksum_mismatch`, nothing left behind).

use std::time::Duration;

use ferry_engine::upload_checksum::ChecksumFault;
use ferry_testkit::{Behavior, Origin, test_bytes};

use crate::harness::{PART, Stack, store_checks, text};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_in_crc32c_mode_gets_composite_checksums_and_others_the_default() {
    let stack = Stack::new().await;
    let data = test_bytes(2 * PART + 5, 31);
    let origin = Origin::start(data.clone(), Behavior::default()).await;
    let mut worker = stack.start_worker_process(&[(
        "FERRY_S3_CHECKSUM_BUCKETS",
        &format!("{}=crc32c", stack.bucket),
    )]);
    stack
        .send(&stack.queue, &stack.message("c32", &origin.url("f"), "c32"))
        .await;
    let record = stack.wait_final("c32", LIMIT).await;
    assert_eq!(text(&record, "status"), "succeeded");
    assert!(stack.object("c32").await == Some(data));
    let head = stack
        .s3
        .head_object()
        .bucket(&stack.bucket)
        .key("c32")
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    let composite = head.checksum_crc32_c.expect("a CRC32C for the object");
    if store_checks() {
        assert!(composite.ends_with("-3"), "{composite}");
    }
    assert_eq!(
        head.checksum_crc64_nvme, None,
        "no full-object CRC64NVME was sent"
    );
    worker.terminate();
    worker.wait(Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_part_checksum_fails_the_job_and_leaves_nothing() {
    let stack = Stack::new().await;
    let mut config = stack.config();
    config.engine.checksum_fault = Some(ChecksumFault::Part);
    let worker = stack.spawn_worker(config);
    let jobs = [("small", 1000usize), ("multipart", 2 * PART + 1)];
    let mut origins = Vec::new();
    for (id, len) in jobs {
        let origin = Origin::start(test_bytes(len, len as u64), Behavior::default()).await;
        stack
            .send(&stack.queue, &stack.message(id, &origin.url("f"), id))
            .await;
        origins.push(origin);
    }
    for (id, len) in jobs {
        let record = stack.wait_final(id, LIMIT).await;
        if store_checks() {
            assert_eq!(text(&record, "status"), "failed", "{id}");
            assert_eq!(text(&record, "error_kind"), "checksum_mismatch", "{id}");
            assert!(text(&record, "error").contains("BadDigest"), "{id}");
            assert!(stack.object(id).await.is_none(), "{id}: no object");
        } else {
            // moto checks nothing; whatever ferry's own checks decide, no
            // wrong object is a success.
            match text(&record, "status") {
                "succeeded" => assert!(stack.object(id).await == Some(test_bytes(len, len as u64))),
                other => {
                    assert_eq!(other, "failed", "{id}");
                    assert_eq!(text(&record, "error_kind"), "checksum_mismatch", "{id}");
                    assert!(stack.object(id).await.is_none(), "{id}: no object");
                }
            }
        }
    }
    assert_eq!(
        ferry_testkit::open_uploads(&stack.s3, &stack.bucket).await,
        0,
        "no upload left open"
    );
    worker.stop().await;
}
