//! First contact: each misconfiguration ends in one line saying what to
//! set, exit 64, before any source is contacted or any message taken; AWS
//! errors are one readable line with the request id.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ferry_testkit::{Behavior, Origin, test_bytes, unique_name};

use crate::harness::{Stack, create_table};

/// `ferry ARGS` with exactly `env` (no inherited AWS settings).
fn ferry(args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .env("FERRY_LOG_FORMAT", "json")
        .envs(env.iter().copied())
        .output()
        .expect("run ferry");
    (output, started.elapsed())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The environment of a working set-up on the stack's emulator.
fn good_env(stack: &Stack) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", stack.moto.endpoint().to_owned()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("FERRY_QUEUE_URL", stack.queue.clone()),
        ("FERRY_TABLE", stack.table.clone()),
        ("FERRY_SOURCE_ALLOW_CIDRS", "127.0.0.0/8".into()),
        ("FERRY_METRICS_ADDR", "off".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// `good_env` with `changes` applied (an empty value removes the variable).
fn with(stack: &Stack, changes: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = good_env(stack);
    for (name, value) in changes {
        env.retain(|(n, _)| n != name);
        if !value.is_empty() {
            env.push((name, (*value).to_owned()));
        }
    }
    env
}

fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

/// A misconfiguration: its name, the command, its environment, and how
/// the one line it prints starts.
type Case<'a> = (&'a str, &'a [&'a str], Vec<(&'static str, String)>, String);

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_misconfiguration_is_one_line_exit_64_and_touches_no_source() {
    let stack = Stack::new().await;
    let origin = Origin::start(test_bytes(1000, 1), Behavior::default()).await;
    let dead_endpoint = format!("http://127.0.0.1:{}", closed_port());
    let wrong_key_table = unique_name("wrongkey");
    stack
        .dynamodb
        .create_table()
        .table_name(&wrong_key_table)
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let missing_queue = format!("{}-gone", stack.queue);
    let missing_table = unique_name("gone");
    let url = origin.url("a");
    let to = format!("s3://{}/a", stack.bucket);
    let copy = ["copy", url.as_str(), to.as_str(), "--quiet"];
    let no_bucket = format!("s3://{}/a", unique_name("nobucket"));
    let copy_nowhere = ["copy", url.as_str(), no_bucket.as_str(), "--quiet"];
    let worker = ["worker"];

    // A job waits on the queue: a worker that refuses to start takes none.
    stack
        .send(&stack.queue, &stack.message("waiting", &url, "waiting"))
        .await;

    let no_region = "ferry: invalid configuration: no AWS region: set AWS_REGION (e.g. us-east-1), \
                     or use a profile (AWS_PROFILE) that has one";
    let cases: Vec<Case> = vec![
        ("copy, no region", &copy, with(&stack, &[("AWS_REGION", "")]), no_region.into()),
        ("worker, no region", &worker, with(&stack, &[("AWS_REGION", "")]), no_region.into()),
        (
            "copy, no credentials",
            &copy,
            with(&stack, &[("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")]),
            "ferry: invalid configuration: no usable AWS credentials in the environment, a profile, \
             or a task or instance role"
                .into(),
        ),
        (
            "copy, unreachable endpoint",
            &copy,
            with(&stack, &[("AWS_ENDPOINT_URL", &dead_endpoint)]),
            format!(
                "ferry: invalid configuration: S3 HeadBucket through AWS_ENDPOINT_URL {dead_endpoint} \
                 failed: request not sent: Connection refused (os error 111) — check AWS_ENDPOINT_URL \
                 and the network"
            ),
        ),
        (
            "worker, unreachable endpoint",
            &worker,
            with(&stack, &[("AWS_ENDPOINT_URL", &dead_endpoint)]),
            format!(
                "ferry: invalid configuration: SQS GetQueueAttributes through AWS_ENDPOINT_URL \
                 {dead_endpoint} failed: request not sent"
            ),
        ),
        (
            "copy, missing bucket",
            &copy_nowhere,
            good_env(&stack),
            format!(
                "ferry: invalid configuration: bucket {} does not exist",
                no_bucket.trim_start_matches("s3://").trim_end_matches("/a")
            ),
        ),
        (
            "worker, missing queue",
            &worker,
            with(&stack, &[("FERRY_QUEUE_URL", &missing_queue)]),
            format!(
                "ferry: invalid configuration: queue {missing_queue} does not exist: check FERRY_QUEUE_URL"
            ),
        ),
        (
            "worker, missing table",
            &worker,
            with(&stack, &[("FERRY_TABLE", &missing_table)]),
            format!(
                "ferry: invalid configuration: table {missing_table} does not exist: check FERRY_TABLE"
            ),
        ),
        (
            "worker, table with the wrong key",
            &worker,
            with(&stack, &[("FERRY_TABLE", &wrong_key_table)]),
            format!(
                "ferry: invalid configuration: table {wrong_key_table} has key (id HASH), not ferry's \
                 (job_id HASH): check FERRY_TABLE"
            ),
        ),
    ];
    for (name, args, env, expected) in cases {
        let (output, took) = ferry(args, &as_refs(&env));
        eprintln!("{name}: {took:?}");
        let all = stderr(&output);
        assert_eq!(output.status.code(), Some(64), "{name}: {all}");
        // JSON log lines may come first (a missing redrive policy's
        // warning); the error itself is one plain line, no SDK dump.
        let said: Vec<&str> = all.lines().filter(|l| !l.starts_with('{')).collect();
        assert_eq!(said.len(), 1, "{name}: one line: {all}");
        assert!(
            !all.contains("DispatchFailure") && !all.contains(" { "),
            "{name}: {all}"
        );
        assert!(
            said[0].starts_with(&expected),
            "{name}:\n  said     {}\n  expected {expected}",
            said[0]
        );
        assert_eq!(origin.requests(), 0, "{name}: the source was contacted");
    }
    // The waiting job was never taken.
    assert_eq!(stack.queue_depth(&stack.queue).await, (1, 0));
    assert_eq!(stack.status("waiting").await, None);

    // Every command checks region and credentials before its first call.
    for args in [
        &["submit", url.as_str(), to.as_str()][..],
        &["status", "job-1"],
        &["jobs"],
        &["gc", "--bucket", &stack.bucket],
        &["cancel", "job-1"],
        &["retry", "job-1"],
    ] {
        let (output, _) = ferry(args, &as_refs(&with(&stack, &[("AWS_REGION", "")])));
        assert_eq!(
            output.status.code(),
            Some(64),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).starts_with(no_region),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_error_is_one_line_with_operation_code_message_and_request_id() {
    let stack = Stack::new().await;
    let missing = unique_name("gone");
    let (output, _) = ferry(
        &["status", "job-1", "--table", &missing],
        &as_refs(&good_env(&stack)),
    );
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(
        said.starts_with("ferry: DynamoDB GetItem failed: ResourceNotFoundException: ")
            && said.contains("(request id "),
        "{said}"
    );
    // A table without the job index: `ferry jobs` says which index.
    let bare = unique_name("bare");
    create_table(&stack.dynamodb, &bare, false).await;
    let (output, _) = ferry(&["jobs", "--table", &bare], &as_refs(&good_env(&stack)));
    assert!(
        stderr(&output).contains("status-shard-index"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_in_a_throttling_storm_starts_and_works() {
    use ferry_testkit::aws_proxy::{AwsProxy, Fault, Rule};
    let stack = Stack::new().await;
    let proxy = AwsProxy::start(stack.moto.endpoint()).await;
    // Every start-up check is throttled: trouble that passes, not a set-up
    // that is wrong.
    proxy.set_rules(vec![
        Rule::new("dynamodb:DescribeTable", Fault::Throttle),
        Rule::new("sqs:GetQueueAttributes", Fault::Throttle),
    ]);
    let origin = Origin::start(test_bytes(1000, 2), Behavior::default()).await;
    stack
        .send(
            &stack.queue,
            &stack.message("stormy", &origin.url("s"), "stormy"),
        )
        .await;
    let endpoint = proxy.endpoint();
    let worker = stack.start_worker_process(&[("AWS_ENDPOINT_URL", endpoint.as_str())]);
    let record = stack.wait_final("stormy", Duration::from_secs(60)).await;
    assert_eq!(crate::harness::text(&record, "status"), "succeeded");
    assert!(!proxy.faults("dynamodb:DescribeTable").is_empty());
    drop(worker);
}
