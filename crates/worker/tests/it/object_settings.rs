//! What an object is stored with besides its bytes: a job's encryption,
//! tags and representation headers, the origin's headers where the job says
//! nothing, and the worker's defaults — read back from the store (HEAD and
//! GetObjectTagging), for a single PutObject and a multipart upload alike.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_engine::{Encryption, ObjectDefaults};
use ferry_testkit::aws_proxy::{AwsProxy, Fault, Rule};
use ferry_testkit::{Behavior, Origin, test_bytes};

use crate::harness::{PART, Stack, proxied_clients, spawn_worker_with, store_checks, text};

const LIMIT: Duration = Duration::from_secs(60);
const LAST_MODIFIED: &str = "Sun, 06 Dec 2026 10:00:00 GMT";

/// An origin that describes its representation the way a media server does.
async fn describing_origin(data: Vec<u8>) -> Origin {
    Origin::start(
        data,
        Behavior {
            content_type: Some("video/mp4".into()),
            last_modified: Some(LAST_MODIFIED.into()),
            headers: vec![
                (
                    "Content-Disposition".into(),
                    "attachment; filename=\"talk.mp4\"".into(),
                ),
                ("Cache-Control".into(), "public, max-age=600".into()),
            ],
            ..Behavior::default()
        },
    )
    .await
}

async fn head_of(stack: &Stack, key: &str) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
    stack
        .s3
        .head_object()
        .bucket(&stack.bucket)
        .key(key)
        .send()
        .await
        .unwrap()
}

/// The object's server-side encryption, as S3 names it.
fn sse(head: &aws_sdk_s3::operation::head_object::HeadObjectOutput) -> Option<&str> {
    head.server_side_encryption().map(|e| e.as_str())
}

async fn tags(stack: &Stack, key: &str) -> BTreeMap<String, String> {
    let tagging = stack
        .s3
        .get_object_tagging()
        .bucket(&stack.bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    tagging
        .tag_set
        .into_iter()
        .map(|t| (t.key, t.value))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_stores_its_settings_and_the_origins_representation() {
    let stack = Stack::new().await;
    let worker = stack.spawn_worker(stack.config());
    let small = test_bytes(1000, 1);
    let large = test_bytes(PART * 2 + 17, 2);
    let small_origin = describing_origin(small.clone()).await;
    let large_origin = describing_origin(large.clone()).await;
    for (id, origin) in [("set-small", &small_origin), ("set-large", &large_origin)] {
        let mut message = stack.message(id, &origin.url("talk.mp4"), id);
        let settings = serde_json::json!({
            "sse": "aws:kms", "kms_key_id": "alias/ferry-test", "bucket_key": true,
            "tags": {"team": "data eng", "stage": "raw"},
            // The job's own value wins over the origin's Cache-Control.
            "cache_control": "no-cache",
            "content_language": "de",
        });
        for (name, value) in settings.as_object().unwrap() {
            message[name] = value.clone();
        }
        stack.send(&stack.queue, &message).await;
    }
    for (id, data) in [("set-small", &small), ("set-large", &large)] {
        let record = stack.wait_final(id, LIMIT).await;
        assert_eq!(text(&record, "status"), "succeeded", "{id}");
        assert_eq!(stack.object(id).await.as_deref(), Some(&data[..]), "{id}");
        let head = head_of(&stack, id).await;
        assert_eq!(head.content_type(), Some("video/mp4"), "{id}: the origin's");
        assert_eq!(
            head.content_disposition(),
            Some("attachment; filename=\"talk.mp4\""),
            "{id}: the origin's"
        );
        assert_eq!(head.cache_control(), Some("no-cache"), "{id}: the job's");
        assert_eq!(head.content_language(), Some("de"), "{id}");
        assert_eq!(sse(&head), Some("aws:kms"), "{id}");
        assert!(
            head.ssekms_key_id()
                .is_some_and(|key| key.ends_with("alias/ferry-test")),
            "{id}: {:?}",
            head.ssekms_key_id()
        );
        // moto 5.2 keeps no bucket key for a multipart upload (its
        // FakeMultipart has no such field); CreateMultipartUpload sends it
        // as PutObject does, from the same `object_settings!`, and the
        // strict S3 shows it.
        if id == "set-small" || store_checks() {
            assert_eq!(head.bucket_key_enabled(), Some(true), "{id}");
        }
        let metadata = head.metadata().cloned().unwrap_or_default();
        assert_eq!(
            metadata.get("ferry-source-etag").map(String::as_str),
            Some("\"v1\""),
            "{id}: {metadata:?}"
        );
        assert_eq!(
            metadata
                .get("ferry-source-last-modified")
                .map(String::as_str),
            Some(LAST_MODIFIED),
            "{id}"
        );
        assert_eq!(
            tags(&stack, id).await,
            BTreeMap::from([
                ("stage".to_owned(), "raw".to_owned()),
                ("team".to_owned(), "data eng".to_owned()),
            ]),
            "{id}"
        );
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_encryption_applies_where_a_job_names_none() {
    let stack = Stack::new().await;
    let mut config = stack.config();
    config.engine.object_defaults = ObjectDefaults {
        encryption: Some(Encryption::S3Managed),
        expected_bucket_owner: None,
    };
    let worker = stack.spawn_worker(config);
    let data = test_bytes(PART + 5, 3);
    let origin = Origin::start(data.clone(), Behavior::default()).await;
    stack
        .send(
            &stack.queue,
            &stack.message("default-sse", &origin.url("a"), "default-sse"),
        )
        .await;
    let mut own = stack.message("own-sse", &origin.url("b"), "own-sse");
    own["sse"] = "aws:kms".into();
    stack.send(&stack.queue, &own).await;
    for (id, algorithm) in [("default-sse", "AES256"), ("own-sse", "aws:kms")] {
        let record = stack.wait_final(id, LIMIT).await;
        assert_eq!(text(&record, "status"), "succeeded", "{id}");
        let head = head_of(&stack, id).await;
        assert_eq!(sse(&head), Some(algorithm), "{id}");
        // Without a job or origin type: the origin's (the test origin's
        // default), never left for S3 to guess.
        assert_eq!(head.content_type(), Some("application/octet-stream"));
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_rejected_before_anything_is_stored() {
    let stack = Stack::new().await;
    let worker = stack.spawn_worker(stack.config());
    let origin = Origin::start(test_bytes(100, 4), Behavior::default()).await;
    let cases = [
        (
            "bad-sse",
            serde_json::json!({"sse": "aws:kms:dsse"}),
            "invalid_sse",
        ),
        (
            "bad-kms",
            serde_json::json!({"kms_key_id": "alias/k"}),
            "invalid_sse",
        ),
        (
            "bad-tags",
            serde_json::json!({"tags": {"aws:owner": "me"}}),
            "invalid_tags",
        ),
        (
            "bad-cache",
            serde_json::json!({"cache_control": "a\r\nx-amz-acl: public-read"}),
            "invalid_cache_control",
        ),
        (
            "bad-owner",
            serde_json::json!({"expected_bucket_owner": "me"}),
            "invalid_expected_bucket_owner",
        ),
    ];
    for (id, fields, _) in &cases {
        let mut message = stack.message(id, &origin.url(id), id);
        for (name, value) in fields.as_object().unwrap() {
            message[name] = value.clone();
        }
        stack.send(&stack.queue, &message).await;
    }
    for (id, _, kind) in cases {
        let record = stack.wait_final(id, LIMIT).await;
        assert_eq!(
            (text(&record, "status"), text(&record, "error_kind")),
            ("rejected", kind),
            "{id}"
        );
        assert_eq!(stack.object(id).await, None, "{id}");
    }
    assert_eq!(origin.requests(), 0, "nothing was fetched");
    assert_eq!(stack.open_uploads().await, 0);
    worker.stop().await;
}

/// Waits (bounded) until `key` is stored.
async fn stored(stack: &Stack, key: &str) -> Vec<u8> {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        if let Some(bytes) = stack.object(key).await {
            return bytes;
        }
        assert!(std::time::Instant::now() < deadline, "{key} never stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_flags_set_one_jobs_settings_and_every_listed_jobs() {
    let stack = Stack::new().await;
    let data = test_bytes(3000, 5);
    let origin = Origin::start(data.clone(), Behavior::default()).await;
    let worker = stack.spawn_worker(stack.config());
    let one = format!("s3://{}/one.csv", stack.bucket);
    stack.cli(&[
        "submit",
        &origin.url("one.csv"),
        &one,
        "--job-id",
        "flags-one",
        "--sse",
        "AES256",
        "--tag",
        "team=data",
        "--content-type",
        "text/csv",
        "--if-exists",
        "fail",
    ]);
    let list = format!(
        "TsvHttpData-1.0\n{}\n{}\n",
        origin.url("a.bin"),
        origin.url("b.bin")
    );
    let path = std::env::temp_dir().join(ferry_testkit::unique_name("ferry-flags"));
    std::fs::write(&path, list).unwrap();
    let dest = format!("s3://{}/list/", stack.bucket);
    stack.cli(&[
        "submit",
        "--from",
        path.to_str().unwrap(),
        "--dest",
        &dest,
        "--tag",
        "source=list",
        "--sse",
        "aws:kms",
    ]);
    let record = stack.wait_final("flags-one", LIMIT).await;
    assert_eq!(text(&record, "status"), "succeeded");
    for (key, algorithm, tag, content_type) in [
        ("one.csv", "AES256", ("team", "data"), "text/csv"),
        (
            "list/127.0.0.1/a.bin",
            "aws:kms",
            ("source", "list"),
            "application/octet-stream",
        ),
        (
            "list/127.0.0.1/b.bin",
            "aws:kms",
            ("source", "list"),
            "application/octet-stream",
        ),
    ] {
        assert_eq!(stored(&stack, key).await, data, "{key}");
        let head = head_of(&stack, key).await;
        assert_eq!(sse(&head), Some(algorithm), "{key}");
        assert_eq!(head.content_type(), Some(content_type), "{key}");
        assert_eq!(
            tags(&stack, key).await,
            BTreeMap::from([(tag.0.to_owned(), tag.1.to_owned())]),
            "{key}"
        );
    }
    // A flag the worker would refuse is refused before anything is sent.
    let refused = stack.cli_output(&[
        "submit",
        &origin.url("c.bin"),
        &format!("s3://{}/c.bin", stack.bucket),
        "--if-exists",
        "sometimes",
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("if_exists must be"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    worker.stop().await;
}

/// `ferry copy ARGS` (sources on loopback allowed), run beside this test's
/// runtime, which serves the origin.
async fn copy(stack: &Stack, args: &[&str]) -> std::process::Output {
    let mut command = stack.ferry_at(stack.moto.endpoint(), &["copy"]);
    command
        .args(args)
        .args(["--quiet", "--source-allow-cidrs", "127.0.0.0/8"]);
    tokio::task::spawn_blocking(move || command.output().expect("run ferry copy"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_copy_takes_the_settings_a_job_takes() {
    let stack = Stack::new().await;
    let data = test_bytes(3000, 6);
    let origin = describing_origin(data.clone()).await;
    let url = origin.url("talk.mp4");
    let to = format!("s3://{}/copied.mp4", stack.bucket);
    let flags = [
        "--sse",
        "AES256",
        "--tag",
        "team=media",
        "--cache-control",
        "no-cache",
    ];
    let copied = copy(&stack, &[&[url.as_str(), to.as_str()][..], &flags].concat()).await;
    assert!(copied.status.success(), "{copied:?}");
    assert_eq!(stored(&stack, "copied.mp4").await, data);
    let head = head_of(&stack, "copied.mp4").await;
    assert_eq!(sse(&head), Some("AES256"));
    assert_eq!(
        head.cache_control(),
        Some("no-cache"),
        "the copy's own wins"
    );
    assert_eq!(head.content_type(), Some("video/mp4"), "the origin's");
    assert_eq!(
        tags(&stack, "copied.mp4").await,
        BTreeMap::from([("team".to_owned(), "media".to_owned())])
    );

    // The same version again: skip reads one answer and copies nothing;
    // fail refuses to overwrite.
    let served = origin.requests();
    let skipped = copy(&stack, &[url.as_str(), to.as_str(), "--if-exists", "skip"]).await;
    let said = String::from_utf8_lossy(&skipped.stdout);
    assert!(skipped.status.success(), "{skipped:?}");
    assert!(said.starts_with("skipped "), "{said}");
    assert_eq!(origin.requests(), served + 1, "only the first answer");
    let refused = copy(&stack, &[url.as_str(), to.as_str(), "--if-exists", "fail"]).await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("(destination_exists)"),
        "{refused:?}"
    );

    // A setting the worker would refuse is refused before the origin is
    // asked: a job's (usage, 2) and the engine's default encryption
    // (configuration, 64).
    let served = origin.requests();
    for (flag, value, code, reason) in [
        ("--if-exists", "sometimes", 2, "if_exists must be"),
        ("--sse", "rot13", 64, "sse must be"),
    ] {
        let bad = copy(&stack, &[url.as_str(), to.as_str(), flag, value]).await;
        assert_eq!(bad.status.code(), Some(code), "{bad:?}");
        assert!(
            String::from_utf8_lossy(&bad.stderr).contains(reason),
            "{bad:?}"
        );
    }
    assert_eq!(origin.requests(), served);
    assert_eq!(stored(&stack, "copied.mp4").await, data);
}

/// `expected_bucket_owner` goes with every S3 call of a job. Neither
/// moto nor the pinned LocalStack checks it, so the fault proxy plays S3's
/// part: any S3 request naming another account answers `403 AccessDenied`,
/// as S3 does when the bucket's owner differs. The job naming the right
/// owner is stored; the others fail with `s3_access_denied`, nothing stored,
/// no upload left — and every S3 call they made carried the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_of_another_account_is_never_written() {
    let stack = Stack::new().await;
    let proxy = AwsProxy::start(stack.moto.endpoint()).await;
    let other = "111122223333";
    proxy.set_rules(vec![
        Rule::new(
            "s3:*",
            Fault::Error {
                status: Some(403),
                code: Some("AccessDenied".into()),
            },
        )
        .matching(&format!("x-amz-expected-bucket-owner: {other}"))
        .id("another account's bucket"),
    ]);
    let worker = spawn_worker_with(stack.config(), proxied_clients(&proxy).await);
    let small = Origin::start(test_bytes(1000, 7), Behavior::default()).await;
    let large = Origin::start(test_bytes(PART + 1, 8), Behavior::default()).await;
    for (id, origin, owner) in [
        ("owner-right", &small, "444455556666"),
        ("owner-wrong-small", &small, other),
        ("owner-wrong-large", &large, other),
    ] {
        let mut message = stack.message(id, &origin.url(id), id);
        message["expected_bucket_owner"] = owner.into();
        stack.send(&stack.queue, &message).await;
    }
    let record = stack.wait_final("owner-right", LIMIT).await;
    assert_eq!(text(&record, "status"), "succeeded");
    for id in ["owner-wrong-small", "owner-wrong-large"] {
        let record = stack.wait_final(id, LIMIT).await;
        assert_eq!(
            (text(&record, "status"), text(&record, "error_kind")),
            ("failed", "s3_access_denied"),
            "{id}: {record:?}"
        );
        assert_eq!(stack.object(id).await, None, "{id}");
    }
    assert_eq!(stack.open_uploads().await, 0);
    // The refused calls were the jobs' first writes, each carrying the
    // owner: PutObject (small) and CreateMultipartUpload (large).
    let refused: std::collections::BTreeSet<String> = proxy
        .log()
        .into_iter()
        .filter(|e| e.rules.iter().any(|r| r == "another account's bucket"))
        .map(|e| e.op)
        .collect();
    for op in ["s3:PutObject", "s3:CreateMultipartUpload"] {
        assert!(refused.contains(op), "{op} not refused: {refused:?}");
    }
    worker.stop().await;
}
