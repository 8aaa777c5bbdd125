//! `ferry doctor` as a user runs it (the real binary, a clean environment)
//! against one good set-up on moto, then against each way of breaking it:
//! the right ✗ line with its fix, every other check unaffected, exit 1, and
//! never a multipart upload left open.
//!
//! Over 500 lines because each of its 20 tests breaks one thing and reads
//! every line doctor prints about it; they share one set-up and its helpers.

use std::collections::HashMap;
use std::process::Command;
use std::sync::OnceLock;

use aws_sdk_dynamodb::types::TimeToLiveSpecification;
use aws_sdk_sqs::types::QueueAttributeName;
use ferry_testkit::moto::create_table_keyed;
use ferry_testkit::{AwsProxy, Fault, Moto, Rule, unique_name};

use crate::harness::{Stack, create_table};

/// Names on the shared moto: a good set-up and the broken pieces the cases
/// swap in. Made once per test binary (the cases only vary the environment).
struct Setup {
    endpoint: String,
    bucket: String,
    /// Redrive to `dlq` after 10 receives.
    queue: String,
    dlq: String,
    /// No redrive policy.
    queue_without_redrive: String,
    /// `job_id` key, TTL on `expires_at`, the job index.
    table: String,
    table_without_ttl: String,
    table_without_index: String,
    table_keyed_id: String,
    /// A result topic with one subscribed queue, and a result queue.
    result_topic: String,
    result_queue: String,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    // Its own runtime, so no test's runtime owns the clients that made it.
    SETUP.get_or_init(|| {
        std::thread::spawn(|| {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(Setup::create())
        })
        .join()
        .unwrap()
    })
}

impl Setup {
    async fn create() -> Self {
        let stack = Stack::new().await;
        let dlq_arn = stack.queue_arn(&stack.dlq).await;
        let redrive = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "10"});
        let queue = stack
            .sqs
            .create_queue()
            .queue_name(unique_name("doctor-jobs"))
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let table_without_ttl = unique_name("doctor-no-ttl");
        create_table(&stack.dynamodb, &table_without_ttl, true).await;
        let table_without_index = unique_name("doctor-no-index");
        create_table(&stack.dynamodb, &table_without_index, false).await;
        let table_keyed_id = unique_name("doctor-keyed-id");
        create_table_keyed(&stack.dynamodb, &table_keyed_id, "id").await;
        for table in [&stack.table, &table_without_index, &table_keyed_id] {
            stack
                .dynamodb
                .update_time_to_live()
                .table_name(table)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .enabled(true)
                        .attribute_name("expires_at")
                        .build()
                        .unwrap(),
                )
                .send()
                .await
                .unwrap();
        }
        let result_topic = stack
            .sns
            .create_topic()
            .name(unique_name("doctor-results"))
            .send()
            .await
            .unwrap()
            .topic_arn
            .unwrap();
        let result_queue = stack.create_queue("doctor-results").await;
        stack
            .sns
            .subscribe()
            .topic_arn(&result_topic)
            .protocol("sqs")
            .endpoint(stack.queue_arn(&result_queue).await)
            .send()
            .await
            .unwrap();
        Self {
            endpoint: stack.moto.endpoint().to_owned(),
            bucket: stack.bucket.clone(),
            queue,
            dlq: stack.dlq.clone(),
            queue_without_redrive: stack.queue.clone(),
            table: stack.table.clone(),
            table_without_ttl,
            table_without_index,
            table_keyed_id,
            result_topic,
            result_queue,
        }
    }

    /// The good environment; `case` names the key prefix its bucket check
    /// writes under, so concurrent cases can count their own uploads.
    fn env(&self, case: &str) -> HashMap<&'static str, String> {
        let mut env = HashMap::from([
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            // Neither a developer's ~/.aws nor instance metadata may answer.
            ("AWS_CONFIG_FILE", "/nonexistent/aws/config".to_owned()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/aws/credentials".to_owned(),
            ),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("FERRY_QUEUE_URL", self.queue.clone()),
            ("FERRY_DLQ_URL", self.dlq.clone()),
            ("FERRY_TABLE", self.table.clone()),
            ("FERRY_ALLOWED_BUCKETS", format!("{}/{case}/", self.bucket)),
            ("FERRY_METRICS_ADDR", "127.0.0.1:0".to_owned()),
            ("FERRY_SOURCE_ALLOW_CIDRS", "127.0.0.0/8".to_owned()),
            ("FERRY_LOG_FORMAT", "json".to_owned()),
        ]);
        // The bucket is on the strict S3 when the tests use one.
        if let Some(s3) = crate::harness::s3_endpoint_beside(Moto::shared(), &self.endpoint) {
            env.insert("AWS_ENDPOINT_URL_S3", s3);
        }
        env
    }
}

/// One run of `ferry doctor`: exit code and checklist lines.
struct Run {
    code: Option<i32>,
    lines: Vec<String>,
    stderr: String,
}

impl Run {
    /// Lines whose mark is `✗`, by check name.
    fn failed(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix("✗ "))
            .filter_map(|l| l.split_once(':').map(|(name, _)| name))
            .collect()
    }

    /// The `✗` line of check `name` (exactly one).
    fn failure(&self, name: &str) -> &str {
        let prefix = format!("✗ {name}:");
        let found: Vec<&String> = self
            .lines
            .iter()
            .filter(|l| l.starts_with(&prefix))
            .collect();
        assert_eq!(found.len(), 1, "one {prefix} line expected:\n{}", self);
        found[0]
    }

    /// Exit 1 with exactly these checks failed.
    fn assert_failed(&self, names: &[&str]) {
        assert_eq!(self.code, Some(1), "exit code:\n{self}");
        assert_eq!(self.failed(), names, "failed checks:\n{self}");
        assert!(self.stderr.contains("(doctor_failed)"), "{self}");
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "exit {:?}", self.code)?;
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        write!(f, "stderr: {}", self.stderr)
    }
}

fn doctor(env: &HashMap<&'static str, String>, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("doctor")
        .args(args)
        .env_clear()
        .envs(env)
        .output()
        .expect("run ferry doctor");
    Run {
        code: output.status.code(),
        lines: String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Multipart uploads open under the case's prefix.
async fn open_uploads(case: &str) -> usize {
    let s3 = Moto::shared().s3().await;
    s3.list_multipart_uploads()
        .bucket(&setup().bucket)
        .prefix(format!("{case}/"))
        .send()
        .await
        .unwrap()
        .uploads
        .unwrap_or_default()
        .len()
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn doctor_passes_a_good_setup_and_leaves_no_upload() {
    let env = setup().env("good");
    let run = doctor(&env, &[]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.lines.iter().all(|l| l.starts_with("✓ ")), "{run}");
    for name in [
        "config",
        "region",
        "credentials",
        "endpoint",
        "queue",
        "redrive",
        "redrive target",
        "dlq",
        "table",
        "ttl",
        "job index",
        "bucket",
        "checksum",
        "metrics",
        "source policy",
    ] {
        let prefix = format!("✓ {name}: ");
        assert!(
            run.lines.iter().any(|l| l.starts_with(&prefix)),
            "no {prefix}\n{run}"
        );
    }
    let credentials = run
        .lines
        .iter()
        .find(|l| l.starts_with("✓ credentials"))
        .unwrap();
    assert!(credentials.contains("from EnvironmentVariable"), "{run}");
    assert!(
        !run.lines.iter().any(|l| l.contains("test")),
        "key material shown:\n{run}"
    );
    assert!(
        run.lines.iter().any(|l| l.contains("after 10 receives")),
        "{run}"
    );
    assert!(run.lines.iter().any(|l| l.contains("127.0.0.0/8")), "{run}");

    let json = doctor(&env, &["--json"]);
    assert_eq!(json.code, Some(0), "{json}");
    assert_eq!(json.lines.len(), 1, "{json}");
    let report: serde_json::Value = serde_json::from_str(&json.lines[0]).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), run.lines.len());
    for check in checks {
        assert_eq!(check["ok"], true, "{check}");
        assert!(
            check["name"].is_string() && check["detail"].is_string(),
            "{check}"
        );
        assert!(check["fix"].is_null(), "{check}");
    }
    assert_eq!(open_uploads("good").await, 0);
}

/// The checksum probe says whether the store verifies the bucket's mode:
/// LocalStack refuses a wrong part checksum, moto accepts it.
#[tokio::test]
async fn doctor_says_whether_the_store_verifies_the_checksum_mode() {
    let strict = crate::harness::store_checks();
    for mode in ["crc64nvme", "crc32c", "crc32", "md5"] {
        let case = format!("checksum-{mode}");
        let mut env = setup().env(&case);
        env.insert(
            "FERRY_S3_CHECKSUM_BUCKETS",
            format!("{}={mode}", setup().bucket),
        );
        let run = doctor(&env, &[]);
        let line = run
            .lines
            .iter()
            .find(|l| l.starts_with("✓ checksum: "))
            .unwrap_or_else(|| panic!("no checksum line\n{run}"));
        let said = if strict {
            format!("{mode} accepted and verified")
        } else {
            format!("{mode} accepted but NOT verified")
        };
        assert!(line.contains(&said), "{mode}: {line}");
        assert_eq!(
            open_uploads(&case).await,
            0,
            "{mode}: the probe left an upload"
        );
    }
    let mut env = setup().env("checksum-none");
    env.insert("FERRY_S3_CHECKSUM", "none".to_owned());
    let run = doctor(&env, &[]);
    assert!(
        run.lines
            .iter()
            .any(|l| l.starts_with("✓ checksum: ") && l.contains(": none — ")),
        "{run}"
    );
    let mut env = setup().env("checksum-bad");
    env.insert("FERRY_S3_CHECKSUM", "sha1".to_owned());
    let run = doctor(&env, &[]);
    let config = run
        .lines
        .iter()
        .find(|l| l.starts_with("✗ config: "))
        .unwrap();
    assert!(config.contains("\"sha1\" is not one of crc64nvme"), "{run}");
}

#[tokio::test]
async fn doctor_reads_the_result_targets_it_is_given_and_publishes_nothing() {
    let mut env = setup().env("results");
    env.insert("FERRY_RESULT_TOPIC_ARN", setup().result_topic.clone());
    env.insert("FERRY_RESULT_QUEUE_URL", setup().result_queue.clone());
    let run = doctor(&env, &[]);
    assert_eq!(run.code, Some(0), "{run}");
    let line = |name: &str| {
        run.lines
            .iter()
            .find(|l| l.starts_with(&format!("✓ {name}: ")))
            .unwrap_or_else(|| panic!("no ✓ {name} line:\n{run}"))
    };
    // moto counts no subscription as confirmed (AWS confirms a queue's at
    // once): the line says what the topic's attributes say.
    let topic = line("result topic");
    assert!(
        topic.contains("exists") && topic.contains("confirmed subscription"),
        "{run}"
    );
    assert!(line("result queue").contains("exists"), "{run}");
    // Nothing reached the queue, which is also the topic's subscriber.
    let waiting = Moto::shared()
        .sqs()
        .await
        .get_queue_attributes()
        .queue_url(&setup().result_queue)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default()
        .remove(&QueueAttributeName::ApproximateNumberOfMessages);
    assert_eq!(waiting.as_deref(), Some("0"), "{run}");

    let missing_topic = setup()
        .result_topic
        .rsplit_once(':')
        .map(|(account, _)| format!("{account}:{}", unique_name("doctor-gone")))
        .unwrap();
    let missing_queue = format!(
        "{}/{}",
        setup().result_queue.rsplit_once('/').unwrap().0,
        unique_name("doctor-gone")
    );
    env.insert("FERRY_RESULT_TOPIC_ARN", missing_topic.clone());
    env.insert("FERRY_RESULT_QUEUE_URL", missing_queue.clone());
    let run = doctor(&env, &[]);
    run.assert_failed(&["result topic", "result queue"]);
    let topic = run.failure("result topic");
    assert!(
        topic.contains(&format!(
            "— create the topic, or correct FERRY_RESULT_TOPIC_ARN ({missing_topic})"
        )),
        "{run}"
    );
    let queue = run.failure("result queue");
    assert!(
        queue.contains(&format!(
            "— create the queue, or correct FERRY_RESULT_QUEUE_URL ({missing_queue})"
        )),
        "{run}"
    );
}

#[tokio::test]
async fn doctor_reports_no_region() {
    let mut env = setup().env("no-region");
    env.remove("AWS_REGION");
    let run = doctor(&env, &[]);
    run.assert_failed(&["region"]);
    assert!(run.failure("region").contains("— set AWS_REGION"), "{run}");
    assert!(
        run.lines
            .contains(&"- queue: not checked: no region".to_owned()),
        "{run}"
    );
    assert_eq!(open_uploads("no-region").await, 0);
}

#[tokio::test]
async fn doctor_reports_no_credentials() {
    let mut env = setup().env("no-credentials");
    env.remove("AWS_ACCESS_KEY_ID");
    env.remove("AWS_SECRET_ACCESS_KEY");
    let run = doctor(&env, &[]);
    run.assert_failed(&["credentials"]);
    let line = run.failure("credentials");
    assert!(line.contains("no credentials found"), "{run}");
    assert!(line.contains("— give the worker credentials"), "{run}");
    assert!(line.contains("AWS_ACCESS_KEY_ID"), "{run}");
    assert!(
        run.lines
            .contains(&"- bucket: not checked: no credentials".to_owned()),
        "{run}"
    );
}

#[tokio::test]
async fn doctor_reports_an_unreachable_endpoint() {
    let mut env = setup().env("unreachable");
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    env.insert("AWS_ENDPOINT_URL", endpoint.clone());
    env.remove("AWS_ENDPOINT_URL_S3");
    let run = doctor(&env, &["--json"]);
    assert_eq!(run.code, Some(1), "{run}");
    let report: serde_json::Value = serde_json::from_str(&run.lines[0]).unwrap();
    assert_eq!(report["ok"], false);
    let failed: Vec<&serde_json::Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .collect();
    let names: Vec<&str> = failed.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["queue", "dlq", "table", "bucket"], "{report}");
    for check in failed {
        let detail = check["detail"].as_str().unwrap();
        assert!(detail.contains("Connection refused"), "{check}");
        assert!(!detail.contains('\n'), "{check}");
        let fix = check["fix"].as_str().unwrap();
        assert!(
            fix.contains(&format!("no answer from {endpoint}")),
            "{check}"
        );
    }
}

#[tokio::test]
async fn doctor_reports_a_missing_queue() {
    let mut env = setup().env("missing-queue");
    let missing = format!("{}/123456789012/{}", setup().endpoint, unique_name("nope"));
    env.insert("FERRY_QUEUE_URL", missing);
    let run = doctor(&env, &[]);
    run.assert_failed(&["queue"]);
    let line = run.failure("queue");
    assert!(
        line.contains("GetQueueAttributes: AWS.SimpleQueueService.NonExistentQueue"),
        "{run}"
    );
    assert!(line.contains("(request id "), "{run}");
    assert!(
        line.contains("— create the queue, or correct FERRY_QUEUE_URL"),
        "{run}"
    );
}

#[tokio::test]
async fn doctor_reports_a_queue_without_redrive_policy() {
    let mut env = setup().env("no-redrive");
    env.insert("FERRY_QUEUE_URL", setup().queue_without_redrive.clone());
    let run = doctor(&env, &[]);
    run.assert_failed(&["redrive"]);
    let line = run.failure("redrive");
    assert!(line.contains("has no redrive policy"), "{run}");
    assert!(
        line.contains("maxReceiveCount = 10 (2 × FERRY_MAX_ATTEMPTS)"),
        "{run}"
    );
}

#[tokio::test]
async fn doctor_reports_max_receive_count_not_above_max_attempts() {
    let mut env = setup().env("receive-count");
    env.insert("FERRY_MAX_ATTEMPTS", "10".to_owned());
    let run = doctor(&env, &[]);
    run.assert_failed(&["redrive"]);
    let line = run.failure("redrive");
    assert!(
        line.contains("maxReceiveCount 10 ≤ FERRY_MAX_ATTEMPTS 10"),
        "{run}"
    );
    assert!(line.contains("— raise maxReceiveCount to 20"), "{run}");
}

#[tokio::test]
async fn doctor_reports_a_missing_dlq() {
    let mut env = setup().env("missing-dlq");
    let missing = format!("{}/123456789012/{}", setup().endpoint, unique_name("nodlq"));
    env.insert("FERRY_DLQ_URL", missing);
    let run = doctor(&env, &[]);
    run.assert_failed(&["dlq"]);
    assert!(
        run.failure("dlq")
            .contains("— create the queue, or correct FERRY_DLQ_URL"),
        "{run}"
    );
}

#[tokio::test]
async fn doctor_reports_a_missing_table() {
    let mut env = setup().env("missing-table");
    env.insert("FERRY_TABLE", unique_name("no-table"));
    let run = doctor(&env, &[]);
    run.assert_failed(&["table"]);
    let line = run.failure("table");
    assert!(
        line.contains("DescribeTable: ResourceNotFoundException"),
        "{run}"
    );
    assert!(line.contains("— create the table"), "{run}");
}

#[tokio::test]
async fn doctor_reports_a_table_with_the_wrong_key() {
    let mut env = setup().env("wrong-key");
    env.insert("FERRY_TABLE", setup().table_keyed_id.clone());
    let run = doctor(&env, &[]);
    // The table has no job index either; the key is what cannot be mended.
    run.assert_failed(&["table", "job index"]);
    let line = run.failure("table");
    assert!(
        line.contains("key is id (HASH, S); ferry needs exactly job_id (HASH, S)"),
        "{run}"
    );
    assert!(line.contains("— a table's key cannot be changed"), "{run}");
}

#[tokio::test]
async fn doctor_reports_a_table_without_ttl() {
    let mut env = setup().env("no-ttl");
    env.insert("FERRY_TABLE", setup().table_without_ttl.clone());
    let run = doctor(&env, &[]);
    run.assert_failed(&["ttl"]);
    let line = run.failure("ttl");
    assert!(line.contains("TTL is off"), "{run}");
    assert!(line.contains("AttributeName=expires_at"), "{run}");
}

#[tokio::test]
async fn doctor_reports_a_table_without_the_job_index() {
    let mut env = setup().env("no-index");
    env.insert("FERRY_TABLE", setup().table_without_index.clone());
    let run = doctor(&env, &[]);
    run.assert_failed(&["job index"]);
    let line = run.failure("job index");
    assert!(line.contains("has no index status-shard-index"), "{run}");
    assert!(
        line.contains(
            "partition key status_shard (S), sort key status_at (S), projection KEYS_ONLY"
        ),
        "{run}"
    );
}

#[tokio::test]
async fn doctor_reports_a_missing_bucket_and_checks_the_others() {
    let mut env = setup().env("missing-bucket");
    let missing = unique_name("no-bucket");
    env.insert(
        "FERRY_ALLOWED_BUCKETS",
        format!("{missing},{}/missing-bucket/", setup().bucket),
    );
    let run = doctor(&env, &[]);
    run.assert_failed(&["bucket"]);
    let line = run.failure("bucket");
    assert!(
        line.contains(&format!(
            "s3://{missing}/: CreateMultipartUpload: NoSuchBucket"
        )),
        "{run}"
    );
    assert!(
        line.contains("— create the bucket, or correct FERRY_ALLOWED_BUCKETS"),
        "{run}"
    );
    let good = format!(
        "✓ bucket: s3://{}/missing-bucket/: created and aborted",
        setup().bucket
    );
    assert!(run.lines.iter().any(|l| l.starts_with(&good)), "{run}");
    assert_eq!(open_uploads("missing-bucket").await, 0);
}

#[tokio::test]
async fn doctor_reports_a_metrics_address_in_use() {
    let mut env = setup().env("metrics");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    env.insert("FERRY_METRICS_ADDR", addr.clone());
    let run = doctor(&env, &[]);
    run.assert_failed(&["metrics"]);
    let line = run.failure("metrics");
    assert!(line.contains(&format!("cannot listen on {addr}")), "{run}");
    assert!(line.contains("set FERRY_METRICS_ADDR"), "{run}");
}

#[tokio::test]
async fn doctor_reports_worker_config_problems_as_checks() {
    let mut env = setup().env("config");
    env.remove("FERRY_TABLE");
    env.insert("FERRY_HEARTBEAT_SECS", "0".to_owned());
    let run = doctor(&env, &[]);
    // No early exit: the other checks still run.
    run.assert_failed(&["config", "config"]);
    assert!(
        run.lines
            .iter()
            .any(|l| l.contains("no table — set FERRY_TABLE")),
        "{run}"
    );
    assert!(
        run.lines.iter().any(|l| l.contains("heartbeat (0 s)")),
        "{run}"
    );
    assert!(
        run.lines.iter().any(|l| l.starts_with("✓ queue: ")),
        "{run}"
    );
    assert!(
        run.lines
            .contains(&"- table: not checked: no table named (see config)".to_owned()),
        "{run}"
    );
}

/// `ferry doctor` through the AWS fault proxy (run off the runtime's thread,
/// which serves the proxy).
async fn doctor_through(proxy: &AwsProxy, case: &str) -> Run {
    let mut env = setup().env(case);
    env.insert("AWS_ENDPOINT_URL", proxy.endpoint());
    env.remove("AWS_ENDPOINT_URL_S3");
    tokio::task::spawn_blocking(move || doctor(&env, &[]))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_aborts_an_upload_whose_create_reply_was_lost() {
    let proxy = AwsProxy::start(&setup().endpoint).await;
    proxy.add_rule(Rule::new("s3:CreateMultipartUpload", Fault::Lost));
    let run = doctor_through(&proxy, "lost-create").await;
    run.assert_failed(&["bucket"]);
    let line = run.failure("bucket");
    assert!(line.contains("CreateMultipartUpload: "), "{run}");
    assert!(line.contains("upload(s) it had made nonetheless"), "{run}");
    assert!(!proxy.forwarded("s3:CreateMultipartUpload").is_empty());
    assert_eq!(open_uploads("lost-create").await, 0);
}

/// The checksum probe's Create applied but its answer lost: the client's
/// retry makes a second upload, and the probe leaves neither open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checksum_probe_leaves_no_upload_when_a_create_reply_is_lost() {
    let proxy = AwsProxy::start(&setup().endpoint).await;
    // The bucket probe's Create passes; the checksum probe's first is lost.
    proxy.add_rule(
        Rule::new("s3:CreateMultipartUpload", Fault::Lost)
            .after(1)
            .times(1),
    );
    let run = doctor_through(&proxy, "lost-probe-create").await;
    assert!(
        run.lines.iter().any(|l| l.starts_with("✓ checksum: ")),
        "{run}"
    );
    assert!(
        proxy.forwarded("s3:CreateMultipartUpload").len() >= 3,
        "{run}"
    );
    assert_eq!(open_uploads("lost-probe-create").await, 0, "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_the_missing_iam_action() {
    let denied = || Fault::Error {
        status: Some(403),
        code: Some("AccessDenied".to_owned()),
    };
    let proxy = AwsProxy::start(&setup().endpoint).await;
    proxy.add_rule(Rule::new("s3:CreateMultipartUpload", denied()));
    let run = doctor_through(&proxy, "create-denied").await;
    run.assert_failed(&["bucket"]);
    let line = run.failure("bucket");
    assert!(
        line.contains("CreateMultipartUpload: AccessDenied"),
        "{run}"
    );
    assert!(
        line.contains("— grant the worker's role s3:PutObject on arn:aws:s3:::"),
        "{run}"
    );

    proxy.set_rules(vec![Rule::new("s3:AbortMultipartUpload", denied())]);
    let run = doctor_through(&proxy, "abort-denied").await;
    run.assert_failed(&["bucket"]);
    let line = run.failure("bucket");
    assert!(
        line.contains("could not abort it, it is left open"),
        "{run}"
    );
    assert!(
        line.contains("— grant the worker's role s3:AbortMultipartUpload"),
        "{run}"
    );
    assert!(line.contains("aws s3api abort-multipart-upload"), "{run}");
    // Denied stays denied: no retries beyond the first answer.
    assert_eq!(proxy.faults("s3:AbortMultipartUpload").len(), 1);
    // What the fix says to do by hand, done here.
    let s3 = Moto::shared().s3().await;
    let uploads = s3
        .list_multipart_uploads()
        .bucket(&setup().bucket)
        .prefix("abort-denied/")
        .send()
        .await
        .unwrap()
        .uploads
        .unwrap_or_default();
    assert_eq!(uploads.len(), 1);
    for upload in uploads {
        s3.abort_multipart_upload()
            .bucket(&setup().bucket)
            .key(upload.key().unwrap())
            .upload_id(upload.upload_id().unwrap())
            .send()
            .await
            .unwrap();
    }
}
