//! Resume: workers killed with SIGKILL mid-job, and the next worker picks the
//! upload up without fetching finished parts again — with an expected
//! sha256/md5 too, continuing the digest from the state the record keeps.
//!
//! Over 500 lines: a dozen kill-and-resume scenarios, each a few steps that must
//! happen in order against a real worker process (start, wait for parts,
//! SIGKILL, resume, count what was fetched again), sharing their helpers.

use std::time::Duration;

use ferry_testkit::{Behavior, Origin, sha256_hex, test_bytes};

use crate::harness::{PART, Stack, WorkerProcess, number, slow, store_checks, text};
use crate::observability::{free_port, get, sample};

/// Parts a worker of these tests has in flight at once.
const IN_FLIGHT: usize = 2;

fn start(stack: &Stack) -> WorkerProcess {
    start_with(stack, &[])
}

fn start_with(stack: &Stack, extra: &[(&str, &str)]) -> WorkerProcess {
    // A large measured object keeps this machine's two cores busy enough to
    // delay a 6 s lease's renewals; give it room so the lease is not lost.
    let lease = if std::env::var_os("FERRY_RESUME_TEST_MIB").is_some() {
        "30"
    } else {
        "6"
    };
    let mut env = vec![
        ("FERRY_MAX_CONCURRENT_UPLOADS", "2"),
        ("FERRY_LEASE_SECS", lease),
    ];
    env.extend_from_slice(extra);
    stack.start_worker_process(&env)
}

/// Object size for the kill-and-resume test: `FERRY_RESUME_TEST_MIB` lets a
/// person measure a large object (`docs/operations.md`); CI uses 60 MiB.
fn resume_test_len() -> usize {
    std::env::var("FERRY_RESUME_TEST_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(12 * PART, |mib| mib * 1024 * 1024)
}

#[tokio::test]
async fn a_killed_worker_is_resumed_without_refetching_finished_parts() {
    let stack = Stack::new().await;
    let len = resume_test_len();
    let data = test_bytes(len, 41);
    let origin = stack.submit_slow("kill", data.clone()).await;
    let mut first = start(&stack);
    let acked = stack
        .wait_for_parts("kill", 3, Duration::from_secs(120))
        .await;
    first.kill();
    let served_before = origin.bytes_served();

    origin.set(|b| b.chunk_delay = None);
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let mut second = start_with(&stack, &[("FERRY_METRICS_ADDR", &metrics_addr)]);
    let record = stack.wait_final("kill", Duration::from_secs(300)).await;
    let metrics = get(&format!("http://{metrics_addr}/metrics"))
        .await
        .expect("metrics")
        .1;
    second.terminate();
    second.wait(Duration::from_secs(30));

    let served = origin.bytes_served();
    let reused = number(&record, "parts_reused") as usize;
    println!(
        "killed-and-resumed {len} bytes: origin served {served} bytes ({:.4}× size; \
         {served_before} before the kill, {acked} parts done at the kill), {reused} parts \
         reused, record: attempts {} bytes_fetched {} bytes_refetched {}",
        served as f64 / len as f64,
        number(&record, "attempts"),
        number(&record, "bytes_fetched"),
        number(&record, "bytes_refetched"),
    );
    assert_eq!(text(&record, "status"), "succeeded", "{record:?}");
    let stored = stack.object("kill").await.expect("stored");
    assert_eq!(sha256_hex(&stored), sha256_hex(&data));
    assert_eq!(number(&record, "attempts"), 2);
    assert_eq!(number(&record, "resumes"), 1);
    assert!(
        reused >= acked,
        "reused {reused} of the {acked} parts done at the kill"
    );
    assert_eq!(number(&record, "restarts"), 0, "no restart");
    assert_eq!(sample(&metrics, "ferry_resumes_total"), 1.0, "{metrics}");
    assert_eq!(sample(&metrics, "ferry_restarts_total"), 0.0, "{metrics}");
    let shown = stack.cli(&["status", "kill"]);
    for line in ["attempts: 2", "resumes: 1", "restarts: 0", "refetched: "] {
        assert!(shown.contains(line), "ferry status shows {line:?}: {shown}");
    }
    let bound = (len + IN_FLIGHT * PART) as u64;
    assert!(
        served <= bound,
        "origin served {served} bytes for a {len}-byte object; at most size + {IN_FLIGHT} parts in flight ({bound}) allowed"
    );
    assert_eq!(stack.open_uploads().await, 0);
}

/// Without part CRC items (`FERRY_PART_CHECKSUM_ITEMS=skip`) a resume keeps
/// only the parts the store lists with their CRC64NVME: the strict S3 lists
/// them, so the finished parts are reused; moto lists none, so they are
/// uploaded again, never trusted unchecked. Either way the object is the
/// source's bytes.
#[tokio::test]
async fn without_part_items_a_resume_reuses_only_parts_the_store_lists_with_their_crc() {
    let stack = Stack::new().await;
    let data = test_bytes(12 * PART, 42);
    let origin = stack.submit_slow("bare", data.clone()).await;
    let skip = [("FERRY_PART_CHECKSUM_ITEMS", "skip")];
    let mut first = start_with(&stack, &skip);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let listed = loop {
        if let Some((_, numbers)) = stack.listed_parts("bare").await
            && numbers.len() >= 3
        {
            break numbers;
        }
        assert!(std::time::Instant::now() < deadline, "no 3 parts listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    first.kill();
    for number in &listed {
        assert!(
            stack.record(&format!("bare#part#{number}")).await.is_none(),
            "part {number} has a CRC item"
        );
    }

    origin.set(|b| b.chunk_delay = None);
    let mut second = start_with(&stack, &skip);
    let record = stack.wait_final("bare", Duration::from_secs(300)).await;
    second.terminate();
    second.wait(Duration::from_secs(30));

    assert_eq!(text(&record, "status"), "succeeded", "{record:?}");
    let stored = stack.object("bare").await.expect("stored");
    assert_eq!(sha256_hex(&stored), sha256_hex(&data));
    assert_eq!(number(&record, "attempts"), 2);
    let reused = number(&record, "parts_reused") as usize;
    if store_checks() {
        assert!(reused >= listed.len(), "reused {reused} of {listed:?}");
    } else {
        assert_eq!(
            reused, 0,
            "moto lists no part CRCs: nothing to check a part by"
        );
    }
    assert_eq!(stack.open_uploads().await, 0);
}

#[tokio::test]
async fn a_changed_source_restarts_from_zero_with_the_reason_recorded() {
    let stack = Stack::new().await;
    let old = test_bytes(8 * PART, 42);
    let new = test_bytes(8 * PART, 43);
    let origin = stack.submit_slow("etag", old).await;
    let mut first = start(&stack);
    stack
        .wait_for_parts("etag", 3, Duration::from_secs(120))
        .await;
    first.kill();

    origin.set_body(new.clone());
    origin.set(|b| {
        b.chunk_delay = None;
        b.etag = Some("\"v2\"".into());
    });
    let mut second = start(&stack);
    let record = stack.wait_final("etag", Duration::from_secs(120)).await;
    second.terminate();
    second.wait(Duration::from_secs(30));

    assert_eq!(text(&record, "status"), "succeeded", "{record:?}");
    let stored = stack.object("etag").await.expect("stored");
    assert_eq!(sha256_hex(&stored), sha256_hex(&new), "the new content");
    assert_eq!(number(&record, "restarts"), 1);
    let reason = text(&record, "restart_reason");
    assert!(
        reason.contains("ETag") && reason.contains("\"v1\"") && reason.contains("\"v2\""),
        "reason: {reason}"
    );
    assert_eq!(number(&record, "parts_reused"), 0);
    assert_eq!(stack.open_uploads().await, 0, "the old upload was aborted");
}

#[tokio::test]
async fn five_kills_in_a_row_and_the_sixth_worker_finishes() {
    let stack = Stack::new().await;
    let data = test_bytes(12 * PART, 44);
    let origin = stack.submit_slow("five", data.clone()).await;
    let mut parts = 0;
    for kill in 1..=5 {
        let mut worker = start(&stack);
        // Each worker claims the job and adds at least one part before it dies.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while stack
            .record("five")
            .await
            // (moto applies an update attribute by attribute: `attempts` may lag.)
            .and_then(|r| ferry_worker::store::number(&r, "attempts"))
            .unwrap_or(0)
            < kill
        {
            assert!(
                std::time::Instant::now() < deadline,
                "worker {kill} never claimed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        parts = stack
            .wait_for_parts("five", parts + 1, Duration::from_secs(120))
            .await;
        worker.kill();
        println!("kill {kill}: {parts} parts held by S3");
    }
    origin.set(|b| b.chunk_delay = None);
    let mut last = start(&stack);
    let record = stack.wait_final("five", Duration::from_secs(180)).await;
    last.terminate();
    last.wait(Duration::from_secs(30));

    assert_eq!(text(&record, "status"), "succeeded", "{record:?}");
    let stored = stack.object("five").await.expect("stored");
    assert_eq!(sha256_hex(&stored), sha256_hex(&data));
    assert_eq!(number(&record, "attempts"), 6);
    assert_eq!(number(&record, "resumes"), 5);
    assert_eq!(number(&record, "restarts"), 0, "no restart");
    let served = origin.bytes_served() as usize;
    assert!(
        served <= data.len() + 5 * IN_FLIGHT * PART,
        "served {served} for {} bytes over 6 workers",
        data.len()
    );
    assert_eq!(stack.open_uploads().await, 0);
}

#[tokio::test]
async fn a_resumed_job_still_verifies_its_expected_sha256() {
    let stack = Stack::new().await;
    let data = test_bytes(8 * PART, 45);
    let origin = Origin::start(data.clone(), slow()).await;
    let mut right = stack.message("sha-right", &origin.url("f"), "sha-right");
    right["expected"] = serde_json::json!({"sha256": sha256_hex(&data)});
    let mut wrong = stack.message("sha-wrong", &origin.url("f"), "sha-wrong");
    wrong["expected"] = serde_json::json!({"sha256": "ab".repeat(32)});
    stack.send(&stack.queue, &right).await;
    stack.send(&stack.queue, &wrong).await;
    let mut first = start(&stack);
    stack
        .wait_for_parts("sha-right", 2, Duration::from_secs(120))
        .await;
    stack
        .wait_for_parts("sha-wrong", 2, Duration::from_secs(120))
        .await;
    wait_for_digest_state(&stack, "sha-right").await;
    wait_for_digest_state(&stack, "sha-wrong").await;
    first.kill();

    origin.set(|b| b.chunk_delay = None);
    let mut second = start(&stack);
    let right = stack
        .wait_final("sha-right", Duration::from_secs(120))
        .await;
    let wrong = stack
        .wait_final("sha-wrong", Duration::from_secs(120))
        .await;
    second.terminate();
    second.wait(Duration::from_secs(30));

    assert_eq!(text(&right, "status"), "succeeded", "{right:?}");
    assert_eq!(number(&right, "resumes"), 1);
    assert!(number(&right, "parts_reused") >= 2);
    let stored = stack.object("sha-right").await.expect("stored");
    assert_eq!(sha256_hex(&stored), sha256_hex(&data));

    assert_eq!(text(&wrong, "status"), "failed", "{wrong:?}");
    assert_eq!(text(&wrong, "error_kind"), "checksum_mismatch");
    assert_eq!(number(&wrong, "resumes"), 1);
    assert!(stack.object("sha-wrong").await.is_none(), "no object");
    assert_eq!(stack.open_uploads().await, 0, "no upload left open");
    // Both continued their digests from the kept state: no finished part
    // was read again (the two jobs share the origin).
    let served = origin.bytes_served() as usize;
    let bound = 2 * (data.len() + IN_FLIGHT * PART);
    assert!(
        served <= bound,
        "served {served} for two jobs; at most {bound}"
    );
}

#[tokio::test]
async fn a_job_nearing_the_visibility_cap_goes_on_under_a_successor_message() {
    let stack = Stack::new().await;
    let data = test_bytes(12 * PART, 46);
    let origin = stack.submit_slow("cap", data.clone()).await;
    // A 12-second cap stands in for SQS's 12 hours: with a 6 s visibility the
    // worker meets it about every 3 s, long before the job is done. It used
    // to release the job there (a resume each time); now the transfer goes
    // on and the message is handed off (long_jobs.rs has the same for a
    // source that cannot be resumed at all).
    let mut worker = stack.start_worker_process(&[
        ("FERRY_MAX_CONCURRENT_UPLOADS", "2"),
        ("FERRY_VISIBILITY_CAP_SECS", "12"),
    ]);
    let record = stack.wait_final("cap", Duration::from_secs(180)).await;
    worker.terminate();
    let (_, log) = worker.wait(Duration::from_secs(30));

    assert_eq!(text(&record, "status"), "succeeded", "{record:?}");
    let stored = stack.object("cap").await.expect("stored");
    assert_eq!(sha256_hex(&stored), sha256_hex(&data));
    assert!(log.contains("handed off to a successor"), "{log}");
    assert!(!log.contains("\"message\":\"released\""), "{log}");
    assert_eq!(number(&record, "attempts"), 1);
    assert_eq!(number(&record, "resumes"), 0);
    assert_eq!(number(&record, "restarts"), 0);
    assert_eq!(
        origin.bytes_served(),
        data.len() as u64,
        "nothing read twice"
    );
    assert_eq!(stack.open_uploads().await, 0);
}

#[tokio::test]
async fn a_gone_upload_or_a_source_without_ranges_restarts_with_the_reason() {
    let stack = Stack::new().await;
    let gone_data = test_bytes(8 * PART, 47);
    let plain_data = test_bytes(8 * PART, 48);
    let gone_origin = stack.submit_slow("gone", gone_data.clone()).await;
    let plain_origin = stack.submit_slow("plain", plain_data.clone()).await;
    let mut first = start(&stack);
    stack
        .wait_for_parts("gone", 1, Duration::from_secs(120))
        .await;
    stack
        .wait_for_parts("plain", 1, Duration::from_secs(120))
        .await;
    first.kill();

    // The upload disappears (a lifecycle rule, an operator), and the other
    // source stops answering ranged requests.
    let upload_id = stack
        .wait_for_checkpoint("gone", Duration::from_secs(1))
        .await;
    stack
        .s3
        .abort_multipart_upload()
        .bucket(&stack.bucket)
        .key("gone")
        .upload_id(upload_id)
        .send()
        .await
        .unwrap();
    gone_origin.set(|b| b.chunk_delay = None);
    plain_origin.set(|b| {
        b.chunk_delay = None;
        b.ranges = false;
    });
    let mut second = start(&stack);
    let gone = stack.wait_final("gone", Duration::from_secs(120)).await;
    let plain = stack.wait_final("plain", Duration::from_secs(120)).await;
    second.terminate();
    second.wait(Duration::from_secs(30));

    for (record, data, reason) in [
        (&gone, &gone_data, "no longer exists"),
        (&plain, &plain_data, "no longer answers ranged requests"),
    ] {
        let id = text(record, "job_id");
        assert_eq!(text(record, "status"), "succeeded", "{record:?}");
        assert_eq!(number(record, "restarts"), 1, "{id}");
        assert!(
            text(record, "restart_reason").contains(reason),
            "{record:?}"
        );
        let stored = stack.object(id).await.expect("stored");
        assert_eq!(sha256_hex(&stored), sha256_hex(data), "{id}");
    }
    assert_eq!(
        stack.open_uploads().await,
        0,
        "the unusable upload was aborted"
    );
}

/// Part CRC items kept: the record a dying worker left has no object CRC
/// (it predates Complete's), so the kept part CRCs are composed.
#[tokio::test]
async fn a_completed_upload_whose_record_was_lost_is_not_copied_again() {
    completed_upload_whose_record_was_lost("keep").await;
}

/// Part CRC items skipped: the object CRC kept right before Complete is
/// what identifies the object the lost Complete stored.
#[tokio::test]
async fn a_completed_upload_whose_record_was_lost_is_not_copied_again_without_part_items() {
    completed_upload_whose_record_was_lost("skip").await;
}

async fn completed_upload_whose_record_was_lost(part_items: &str) {
    use aws_sdk_dynamodb::types::AttributeValue;
    let stack = Stack::new().await;
    let data = test_bytes(4 * PART + 17, 49);
    let origin = Origin::start(data.clone(), Behavior::default()).await;
    let message = stack.message("lost", &origin.url("f"), "lost");
    stack.send(&stack.queue, &message).await;
    let mut worker = start_with(&stack, &[("FERRY_PART_CHECKSUM_ITEMS", part_items)]);
    let first = stack.wait_final("lost", Duration::from_secs(60)).await;
    assert_eq!(text(&first, "status"), "succeeded", "{first:?}");
    let served = origin.bytes_served();

    // As if the worker had died after CompleteMultipartUpload but before its
    // record: the checkpoint is still there, the job not final, the message
    // back — with the object CRC the worker kept before Complete when it
    // keeps no part items (the final record removed both).
    let upload_id = upload_of(&stack, "lost").await;
    let part_one = stack.record("lost#part#1").await;
    assert_eq!(part_one.is_some(), part_items == "keep", "{part_one:?}");
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let n = |v: usize| AttributeValue::N(v.to_string());
    let mut update = "SET #status = :retrying, upload_id = :upload, upload_part_size = :part, \
         source_length = :len, source_etag = :etag"
        .to_owned();
    let mut values = std::collections::HashMap::from([
        (":retrying".to_owned(), s("retrying")),
        (":upload".to_owned(), s(&upload_id)),
        (":part".to_owned(), n(PART)),
        (":len".to_owned(), n(data.len())),
        (":etag".to_owned(), s("\"v1\"")),
    ]);
    if part_items == "skip" {
        update.push_str(", object_crc = :crc");
        values.insert(":crc".to_owned(), s(text(&first, "checksum")));
    }
    stack
        .dynamodb
        .update_item()
        .table_name(&stack.table)
        .key("job_id", s("lost"))
        .update_expression(format!("{update} REMOVE finished_at"))
        .expression_attribute_names("#status", "status")
        .set_expression_attribute_values(Some(values))
        .send()
        .await
        .unwrap();
    stack.send(&stack.queue, &message).await;
    let record = stack.wait_final("lost", Duration::from_secs(60)).await;
    worker.terminate();
    worker.wait(Duration::from_secs(30));

    assert_eq!(text(&record, "status"), "succeeded", "{record:?}");
    assert_eq!(number(&record, "attempts"), 2);
    assert_eq!(number(&record, "resumes"), 1);
    assert_eq!(number(&record, "restarts"), 0);
    assert_eq!(number(&record, "parts_reused"), 5);
    assert_eq!(text(&record, "checksum"), text(&first, "checksum"));
    assert_eq!(origin.bytes_served(), served, "nothing fetched again");
    let stored = stack.object("lost").await.expect("stored");
    assert_eq!(sha256_hex(&stored), sha256_hex(&data));
}

/// The upload id of the job's (last) multipart upload, from its `upload#`
/// marker: the record forgets it once final, and part items may not exist.
async fn upload_of(stack: &Stack, job_id: &str) -> String {
    use aws_sdk_dynamodb::types::AttributeValue;
    let found = stack
        .dynamodb
        .scan()
        .table_name(&stack.table)
        .filter_expression("upload_job_id = :job")
        .expression_attribute_values(":job", AttributeValue::S(job_id.to_owned()))
        .send()
        .await
        .unwrap();
    let marker = found
        .items()
        .iter()
        .find(|item| text(item, "job_id").starts_with("upload#"))
        .unwrap_or_else(|| panic!("no upload# marker among {:?}", found.items()));
    let key = text(marker, "job_id");
    key.strip_prefix("upload#").expect("upload# key").to_owned()
}

/// The job record's digest state, as the last worker kept it.
async fn digest_state(stack: &Stack, job_id: &str) -> Option<String> {
    stack
        .record(job_id)
        .await
        .and_then(|r| ferry_worker::store::text(&r, "digest_state").map(str::to_owned))
}

/// Waits (bounded) until the job's record holds a digest state: parts
/// finish out of order, and the state starts once part 1 is done.
async fn wait_for_digest_state(stack: &Stack, job_id: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while digest_state(stack, job_id).await.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "{job_id} kept no digest state"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_killed_worker_with_an_expected_sha256_or_md5_rereads_no_hashed_part() {
    let stack = Stack::new().await;
    let sha_data = test_bytes(12 * PART, 50);
    let md5_data = test_bytes(12 * PART, 51);
    let sha_origin = Origin::start(sha_data.clone(), slow()).await;
    let md5_origin = Origin::start(md5_data.clone(), slow()).await;
    let mut sha = stack.message("d-sha", &sha_origin.url("f"), "d-sha");
    sha["expected"] = serde_json::json!({"sha256": sha256_hex(&sha_data)});
    let mut md5 = stack.message("d-md5", &md5_origin.url("f"), "d-md5");
    md5["expected"] = serde_json::json!({"md5": md5_hex(&md5_data)});
    stack.send(&stack.queue, &sha).await;
    stack.send(&stack.queue, &md5).await;
    let mut first = start(&stack);
    stack
        .wait_for_parts("d-sha", 3, Duration::from_secs(120))
        .await;
    stack
        .wait_for_parts("d-md5", 3, Duration::from_secs(120))
        .await;
    wait_for_digest_state(&stack, "d-sha").await;
    wait_for_digest_state(&stack, "d-md5").await;
    first.kill();

    sha_origin.set(|b| b.chunk_delay = None);
    md5_origin.set(|b| b.chunk_delay = None);
    let mut second = start(&stack);
    let sha = stack.wait_final("d-sha", Duration::from_secs(120)).await;
    let md5 = stack.wait_final("d-md5", Duration::from_secs(120)).await;
    second.terminate();
    let (_, log) = second.wait(Duration::from_secs(30));

    for (record, data, origin) in [
        (&sha, &sha_data, &sha_origin),
        (&md5, &md5_data, &md5_origin),
    ] {
        let id = text(record, "job_id");
        assert_eq!(text(record, "status"), "succeeded", "{record:?}");
        assert_eq!(number(record, "resumes"), 1, "{id}");
        assert!(number(record, "parts_reused") >= 3, "{id}");
        // (Read again: moto applies an update attribute by attribute.)
        assert!(
            digest_state(&stack, id).await.is_none(),
            "{id}: removed at the end"
        );
        let stored = stack.object(id).await.expect("stored");
        assert_eq!(sha256_hex(&stored), sha256_hex(data), "{id}");
        let served = origin.bytes_served() as usize;
        let bound = data.len() + IN_FLIGHT * PART;
        println!("{id}: origin served {served} bytes for {}", data.len());
        assert!(
            served <= bound,
            "{id}: served {served}; at most size + {IN_FLIGHT} parts in flight ({bound})"
        );
    }
    assert!(
        log.contains("continuing the expected digest from the checkpoint"),
        "{log}"
    );
    assert_eq!(stack.open_uploads().await, 0);
}

#[tokio::test]
async fn five_kills_in_a_row_with_an_expected_sha256_reread_no_hashed_part() {
    let stack = Stack::new().await;
    let data = test_bytes(12 * PART, 52);
    let origin = Origin::start(data.clone(), slow()).await;
    let mut message = stack.message("five-sha", &origin.url("f"), "five-sha");
    message["expected"] = serde_json::json!({"sha256": sha256_hex(&data)});
    stack.send(&stack.queue, &message).await;
    let mut parts = 0;
    for kill in 1..=5 {
        let mut worker = start(&stack);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while stack
            .record("five-sha")
            .await
            .and_then(|r| ferry_worker::store::number(&r, "attempts"))
            .unwrap_or(0)
            < kill
        {
            assert!(
                std::time::Instant::now() < deadline,
                "worker {kill} never claimed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        parts = stack
            .wait_for_parts("five-sha", parts + 1, Duration::from_secs(120))
            .await;
        worker.kill();
        println!(
            "kill {kill}: {parts} parts held by S3, {} bytes served so far",
            origin.bytes_served()
        );
    }
    origin.set(|b| b.chunk_delay = None);
    let mut last = start(&stack);
    let record = stack.wait_final("five-sha", Duration::from_secs(180)).await;
    last.terminate();
    last.wait(Duration::from_secs(30));

    assert_eq!(text(&record, "status"), "succeeded", "{record:?}");
    let stored = stack.object("five-sha").await.expect("stored");
    assert_eq!(sha256_hex(&stored), sha256_hex(&data));
    assert_eq!(number(&record, "attempts"), 6);
    assert_eq!(number(&record, "resumes"), 5);
    assert_eq!(number(&record, "restarts"), 0, "no restart");
    let served = origin.bytes_served() as usize;
    assert!(
        served <= data.len() + 5 * IN_FLIGHT * PART,
        "served {served} for {} bytes over 6 workers",
        data.len()
    );
    assert_eq!(stack.open_uploads().await, 0);
}

#[tokio::test]
async fn a_corrupt_or_missing_digest_state_is_reread_never_trusted() {
    let stack = Stack::new().await;
    // (job, expected sha256 is right, what happens to the kept state)
    let cases = [
        ("state-corrupt", true, Change::Corrupt),
        ("state-missing", true, Change::Remove),
        ("state-garbled-wrong", false, Change::Garble),
    ];
    let mut origins = Vec::new();
    for (n, (id, right, _)) in cases.iter().enumerate() {
        let data = test_bytes(8 * PART, 53 + n as u64);
        let origin = Origin::start(data.clone(), slow()).await;
        let mut message = stack.message(id, &origin.url("f"), id);
        let sha256 = if *right {
            sha256_hex(&data)
        } else {
            "ab".repeat(32)
        };
        message["expected"] = serde_json::json!({ "sha256": sha256 });
        stack.send(&stack.queue, &message).await;
        origins.push((data, origin));
    }
    let mut first = start(&stack);
    for (id, _, _) in &cases {
        stack.wait_for_parts(id, 2, Duration::from_secs(120)).await;
        wait_for_digest_state(&stack, id).await;
    }
    first.kill();
    for (id, _, change) in &cases {
        let kept = digest_state(&stack, id).await.expect("a kept state");
        set_digest_state(&stack, id, change.apply(&kept).as_deref()).await;
    }

    let mut served_at_kill = Vec::new();
    for (_, origin) in &origins {
        origin.set(|b| b.chunk_delay = None);
        served_at_kill.push(origin.bytes_served());
    }
    let mut second = start(&stack);
    let mut records = Vec::new();
    for (id, _, _) in &cases {
        records.push(stack.wait_final(id, Duration::from_secs(120)).await);
    }
    second.terminate();
    let (_, log) = second.wait(Duration::from_secs(30));

    for (((id, right, _), record), ((data, origin), before)) in cases
        .iter()
        .zip(&records)
        .zip(origins.iter().zip(&served_at_kill))
    {
        assert_eq!(number(record, "resumes"), 1, "{id}");
        // Today's path: the whole object is read again, finished parts for
        // the digest and the others to upload (plus, at most, the start of
        // a later part's response opened and dropped during the re-read).
        let after = origin.bytes_served() - before;
        let size = data.len() as u64;
        assert!(
            (size..size + PART as u64).contains(&after),
            "{id}: served {after} of {size} after the kill"
        );
        if *right {
            assert_eq!(text(record, "status"), "succeeded", "{record:?}");
            let stored = stack.object(id).await.expect("stored");
            assert_eq!(sha256_hex(&stored), sha256_hex(data), "{id}");
        } else {
            assert_eq!(text(record, "status"), "failed", "{record:?}");
            assert_eq!(text(record, "error_kind"), "checksum_mismatch");
            assert!(stack.object(id).await.is_none(), "{id}: no object");
        }
    }
    for reason in [
        "the digest state does not match this upload's parts",
        "the checkpoint holds no digest state",
        "the digest state is unreadable",
    ] {
        assert!(log.contains(reason), "the log says {reason:?}: {log}");
    }
    assert_eq!(stack.open_uploads().await, 0);
}

/// What a test does to a kept digest state.
enum Change {
    /// One character of the sha256 state changed: still readable.
    Corrupt,
    Remove,
    /// Not a state at all.
    Garble,
}

impl Change {
    fn apply(&self, kept: &str) -> Option<String> {
        match self {
            Self::Corrupt => {
                let mut fields: Vec<String> = kept.split('.').map(str::to_owned).collect();
                let changed = if fields[2].starts_with('A') { "B" } else { "A" };
                fields[2].replace_range(0..1, changed);
                Some(fields.join("."))
            }
            Self::Remove => None,
            Self::Garble => Some("d1.not-a-state".into()),
        }
    }
}

/// Replaces (or with `None` removes) a job record's digest state, as a
/// corrupted item or an older worker would leave it.
async fn set_digest_state(stack: &Stack, job_id: &str, state: Option<&str>) {
    use aws_sdk_dynamodb::types::AttributeValue;
    let update = stack
        .dynamodb
        .update_item()
        .table_name(&stack.table)
        .key("job_id", AttributeValue::S(job_id.into()));
    let update = match state {
        Some(state) => update
            .update_expression("SET digest_state = :state")
            .expression_attribute_values(":state", AttributeValue::S(state.into())),
        None => update.update_expression("REMOVE digest_state"),
    };
    update.send().await.unwrap();
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(<md5::Md5 as md5::Digest>::digest(data))
}
