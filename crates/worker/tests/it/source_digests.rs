//! The origin's own digests (`Content-MD5`, `Repr-Digest`, `x-goog-hash`,
//! `x-amz-checksum-crc64nvme`) checked end to end like a job's `expected`:
//! a match is recorded, a mismatch fails the job and leaves no object, and
//! a digest of another representation (a range's body, a GCS object served
//! decompressed) is not held against the bytes; a resumed attempt checks
//! them too.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ferry_engine::checksum;
use ferry_testkit::{Behavior, Origin, test_bytes};
use md5::Digest as _;

use crate::harness::{PART, Stack, number, slow, text};

const LIMIT: Duration = Duration::from_secs(60);

fn md5_b64(data: &[u8]) -> String {
    BASE64.encode(md5::Md5::digest(data))
}

fn sha256_b64(data: &[u8]) -> String {
    BASE64.encode(sha2::Sha256::digest(data))
}

fn sending(headers: Vec<(&str, String)>, ranges: bool) -> Behavior {
    Behavior {
        ranges,
        headers: headers
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
        ..Behavior::default()
    }
}

/// Runs each `(id, data, behavior)` job to its end; returns the records.
async fn run(
    stack: &Stack,
    jobs: Vec<(&str, Vec<u8>, Behavior)>,
) -> Vec<ferry_worker::store::Record> {
    let worker = stack.spawn_worker(stack.config());
    let mut origins = Vec::new();
    for (id, data, behavior) in &jobs {
        let origin = Origin::start(data.clone(), behavior.clone()).await;
        stack
            .send(&stack.queue, &stack.message(id, &origin.url("f"), id))
            .await;
        origins.push(origin);
    }
    let mut records = Vec::new();
    for (id, _, _) in &jobs {
        records.push(stack.wait_final(id, LIMIT).await);
    }
    worker.stop().await;
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_origin_digests_are_checked_and_recorded() {
    let stack = Stack::new().await;
    let small = test_bytes(1000, 1);
    let large = test_bytes(PART * 2 + 9, 2);
    let crc = checksum::to_base64(checksum::crc64nvme(&large));
    let jobs = vec![
        (
            "content-md5",
            small.clone(),
            sending(vec![("Content-MD5", md5_b64(&small))], false),
        ),
        (
            "repr-digest",
            large.clone(),
            sending(
                vec![
                    ("Repr-Digest", format!("sha-256=:{}:", sha256_b64(&large))),
                    ("x-amz-checksum-crc64nvme", crc),
                ],
                true,
            ),
        ),
        (
            "goog",
            small.clone(),
            sending(
                vec![(
                    "x-goog-hash",
                    format!("crc32c=AAAAAA==, md5={}", md5_b64(&small)),
                )],
                true,
            ),
        ),
    ];
    let records = run(&stack, jobs).await;
    for (record, (id, digests, data)) in records.iter().zip([
        ("content-md5", "md5", &small),
        ("repr-digest", "sha256,crc64nvme", &large),
        ("goog", "md5", &small),
    ]) {
        assert_eq!(text(record, "status"), "succeeded", "{id}: {record:?}");
        assert_eq!(text(record, "source_digests"), digests, "{id}");
        assert_eq!(stack.object(id).await.as_deref(), Some(&data[..]), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatching_origin_digest_fails_the_job_and_stores_nothing() {
    let stack = Stack::new().await;
    let small = test_bytes(1000, 3);
    let large = test_bytes(PART * 2 + 9, 4);
    let other = test_bytes(64, 5);
    let jobs = vec![
        (
            "bad-content-md5",
            small.clone(),
            sending(vec![("Content-MD5", md5_b64(&other))], false),
        ),
        (
            "bad-repr-md5",
            large.clone(),
            sending(
                vec![("Repr-Digest", format!("md5=:{}:", md5_b64(&other)))],
                true,
            ),
        ),
        (
            "bad-crc",
            large.clone(),
            sending(
                vec![(
                    "x-amz-checksum-crc64nvme",
                    checksum::to_base64(checksum::crc64nvme(&other)),
                )],
                false,
            ),
        ),
    ];
    let ids: Vec<&str> = jobs.iter().map(|(id, _, _)| *id).collect();
    let records = run(&stack, jobs).await;
    for (record, id) in records.iter().zip(ids) {
        assert_eq!(
            (text(record, "status"), text(record, "error_kind")),
            ("failed", "checksum_mismatch"),
            "{id}: {record:?}"
        );
        assert_eq!(stack.object(id).await, None, "{id}");
    }
    assert_eq!(stack.open_uploads().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_of_another_representation_are_not_held_against_the_bytes() {
    let stack = Stack::new().await;
    let data = test_bytes(PART + 3, 6);
    let wrong = md5_b64(b"something else");
    let jobs = vec![
        // A Content-MD5 on a range's answer is of that range only.
        (
            "ranged-md5",
            data.clone(),
            sending(vec![("Content-MD5", wrong.clone())], true),
        ),
        // GCS serving a gzip-stored object decompressed: its md5 is of the
        // compressed object.
        (
            "transcoded",
            data.clone(),
            sending(
                vec![
                    ("x-goog-hash", format!("md5={wrong}")),
                    ("x-goog-stored-content-encoding", "gzip".to_owned()),
                ],
                true,
            ),
        ),
    ];
    let records = run(&stack, jobs).await;
    for (record, id) in records.iter().zip(["ranged-md5", "transcoded"]) {
        assert_eq!(text(record, "status"), "succeeded", "{id}: {record:?}");
        assert!(!record.contains_key("source_digests"), "{id}: {record:?}");
        assert_eq!(stack.object(id).await.as_deref(), Some(&data[..]), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_attempt_checks_the_origins_digest_too() {
    // Two slow ranged jobs whose origin sends a Repr-Digest: one true, one
    // of other bytes. The first worker is stopped once both uploads hold
    // parts (it releases them, keeping their checkpoints); the second
    // resumes them from a ranged answer.
    let stack = Stack::new().await;
    let data = test_bytes(6 * PART, 7);
    let other = test_bytes(64, 8);
    let slowly_sending = |digest_of: &[u8]| Behavior {
        chunk_delay: slow().chunk_delay,
        ..sending(
            vec![(
                "Repr-Digest",
                format!("sha-256=:{}:", sha256_b64(digest_of)),
            )],
            true,
        )
    };
    let true_origin = Origin::start(data.clone(), slowly_sending(&data)).await;
    let lying_origin = Origin::start(data.clone(), slowly_sending(&other)).await;
    for (id, origin) in [("true", &true_origin), ("lying", &lying_origin)] {
        stack
            .send(&stack.queue, &stack.message(id, &origin.url("f"), id))
            .await;
    }
    let mut config = stack.config();
    config.shutdown_grace = Duration::ZERO;
    let first = stack.spawn_worker(config);
    for id in ["true", "lying"] {
        stack.wait_for_parts(id, 2, LIMIT).await;
    }
    // The first attempt hashed the true job's bytes for the origin's digest
    // and kept that state.
    let deadline = std::time::Instant::now() + LIMIT;
    while stack
        .record("true")
        .await
        .is_none_or(|record| !record.contains_key("digest_state"))
    {
        assert!(std::time::Instant::now() < deadline, "no digest state kept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.stop().await;

    true_origin.set(|b| b.chunk_delay = None);
    lying_origin.set(|b| b.chunk_delay = None);
    let second = stack.spawn_worker(stack.config());
    let resumed = stack.wait_final("true", LIMIT).await;
    let lied = stack.wait_final("lying", LIMIT).await;
    second.stop().await;

    assert_eq!(text(&resumed, "status"), "succeeded", "{resumed:?}");
    assert_eq!(number(&resumed, "resumes"), 1, "{resumed:?}");
    assert_eq!(text(&resumed, "source_digests"), "sha256", "{resumed:?}");
    assert_eq!(stack.object("true").await.as_deref(), Some(&data[..]));
    // The hash went on from the kept state: the finished parts were not
    // read again to hash them.
    assert!(
        number(&resumed, "bytes_refetched") < number(&resumed, "bytes_reused"),
        "{resumed:?}"
    );

    assert_eq!(
        (text(&lied, "status"), text(&lied, "error_kind")),
        ("failed", "checksum_mismatch"),
        "{lied:?}"
    );
    assert_eq!(number(&lied, "resumes"), 1, "{lied:?}");
    assert_eq!(stack.object("lying").await, None);
    assert_eq!(stack.open_uploads().await, 0);
}
