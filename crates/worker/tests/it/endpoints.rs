//! Per-service endpoints: S3 on one store, SQS and DynamoDB on another, set
//! the SDKs' standard way (`AWS_ENDPOINT_URL_S3` beside `AWS_ENDPOINT_URL`).

use std::time::Duration;

use ferry_testkit::{Behavior, Moto, Origin, unique_name};

use crate::harness::Stack;

/// The S3 store of these tests, never the stack's server: the strict S3
/// when the run has one (LocalStack, docs/testing.md), else a second moto.
struct S3Store {
    endpoint: String,
    client: aws_sdk_s3::Client,
    _own: Option<Moto>,
}

async fn separate_s3() -> S3Store {
    if let Some(endpoint) = ferry_testkit::moto::strict_s3_endpoint() {
        let client = Moto::shared().s3().await;
        return S3Store {
            endpoint,
            client,
            _own: None,
        };
    }
    let own = Moto::start();
    S3Store {
        endpoint: own.endpoint().to_owned(),
        client: own.s3().await,
        _own: Some(own),
    }
}

/// An S3 client of `moto` itself, whichever S3 the tests use.
async fn s3_of(moto: &Moto) -> aws_sdk_s3::Client {
    let sdk = ferry_testkit::moto::sdk_config_at(moto.endpoint()).await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_on_one_store_and_the_queue_and_table_on_another() {
    let stack = Stack::new().await;
    let store = separate_s3().await;
    let s3 = &store.client;
    let bucket = unique_name("split");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let data = ferry_testkit::test_bytes(7 * 1024 * 1024 + 3, 26);
    let origin = Origin::start(data.clone(), Behavior::default()).await;

    let mut worker =
        stack.start_worker_process(&[("AWS_ENDPOINT_URL_S3", store.endpoint.as_str())]);
    let destination = format!("s3://{bucket}/copied.bin");
    let output = stack
        .ferry_at(
            stack.moto.endpoint(),
            &[
                "submit",
                &origin.url("f"),
                &destination,
                "--job-id",
                "split-1",
                "--wait",
            ],
        )
        .env("AWS_ENDPOINT_URL_S3", store.endpoint.as_str())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "submit --wait: {said}");

    // The bytes went to the S3 store; the record is in the stack's table.
    let stored = ferry_testkit::object_bytes(s3, &bucket, "copied.bin").await;
    assert!(stored == Some(data), "the object differs or is missing");
    let record = stack.wait_final("split-1", Duration::from_secs(30)).await;
    assert_eq!(
        ferry_worker::store::text(&record, "status"),
        Some("succeeded")
    );
    // The stack's own server never saw the bucket.
    let elsewhere = s3_of(stack.moto)
        .await
        .head_bucket()
        .bucket(&bucket)
        .send()
        .await;
    assert!(
        elsewhere.is_err(),
        "the bucket must exist only on the S3 store: {elsewhere:?}"
    );

    // The doctor names each service's endpoint and where it was set.
    let output = stack
        .ferry_at(stack.moto.endpoint(), &["doctor", "--bucket", &bucket])
        .env("AWS_ENDPOINT_URL_S3", store.endpoint.as_str())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    let s3_line = format!("S3: {} (from AWS_ENDPOINT_URL_S3)", store.endpoint.as_str());
    let sqs_line = format!("SQS: {} (from AWS_ENDPOINT_URL)", stack.moto.endpoint());
    let dynamodb_line = format!(
        "DynamoDB: {} (from AWS_ENDPOINT_URL)",
        stack.moto.endpoint()
    );
    for line in [s3_line, sqs_line, dynamodb_line] {
        assert!(
            report.contains(&line),
            "doctor must say {line:?}:\n{report}"
        );
    }
    // And its probe upload reached the bucket on the S3 store.
    let probe = format!("✓ bucket: s3://{bucket}/: created and aborted a multipart upload");
    assert!(report.contains(&probe), "{report}");
    worker.terminate();
    worker.wait(Duration::from_secs(20));
}

/// With only S3 moved, a copy needs nothing else: `ferry copy` stores into
/// the S3 store by path-style addressing (no DNS for `bucket.127.0.0.1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_uses_the_s3_endpoint_and_path_style() {
    let store = separate_s3().await;
    let s3 = &store.client;
    let bucket = unique_name("copy");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let data = ferry_testkit::test_bytes(300_000, 27);
    let origin = Origin::start(data.clone(), Behavior::default()).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["copy", &origin.url("f"), &format!("s3://{bucket}/one")])
        .env_clear()
        .env("AWS_ENDPOINT_URL_S3", store.endpoint.as_str())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("FERRY_SOURCE_ALLOW_CIDRS", "127.0.0.0/8")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "copy: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stored = ferry_testkit::object_bytes(s3, &bucket, "one").await;
    assert!(stored == Some(data), "the object differs or is missing");
}
