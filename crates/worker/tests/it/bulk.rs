//! `ferry submit --from FILE`: the real binary against moto — JSON Lines and
//! `TsvHttpData-1.0` files, re-runs that submit nothing new, bad lines by
//! number, a run whose messages could not be sent finished by a re-run, and
//! `--wait` over a whole file.
//!
//! Over 500 lines: both input formats end to end, and each stop-and-rerun case
//! checks the table's items and the queue's depth after every run.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ferry_testkit::aws_proxy::{AwsProxy, Fault, Rule};
use ferry_testkit::{Behavior, Origin, sha256_hex, test_bytes, unique_name};
use ferry_worker::store::Record;
use md5::Digest as _;

use crate::harness::{Stack, text};

const LIMIT: Duration = Duration::from_secs(60);

/// `ferry ARGS` against `endpoint` (moto, or a fault proxy in front of it),
/// with `stdin` on its standard input. Any exit status.
fn ferry(stack: &Stack, endpoint: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write as _;
    let mut child = stack
        .ferry_at(endpoint, args)
        .env("FERRY_AWS_ATTEMPT_TIMEOUT_SECS", "4")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferry");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(bytes) = stdin {
        input.write_all(bytes).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("ferry output")
}

/// `ferry submit --from PATH EXTRA…` against moto.
fn submit_file(stack: &Stack, path: &std::path::Path, extra: &[&str]) -> Output {
    let path = path.to_str().unwrap();
    let mut args = vec!["submit", "--from", path];
    args.extend_from_slice(extra);
    ferry(stack, stack.moto.endpoint(), &args, None)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The summary's first line: `submitted N, already present M, re-enqueued R, bad B`.
fn summary(output: &Output) -> String {
    stdout(output).lines().next().unwrap_or_default().to_owned()
}

fn write_file(contents: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(unique_name("ferry-bulk"));
    std::fs::write(&path, contents).unwrap();
    path
}

/// The id bulk submit gives a line without one.
fn derived_id(url: &str, bucket: &str, key: &str) -> String {
    let message = serde_json::json!({"url": url, "bucket": bucket, "key": key});
    let job = ferry_worker::job::parse(&message.to_string(), "").unwrap();
    ferry_worker::bulk::naming::derived_job_id(&job)
}

/// Every item of the stack's table.
async fn items(stack: &Stack) -> Vec<Record> {
    let mut all = Vec::new();
    let mut start = None;
    loop {
        let page = stack
            .dynamodb
            .scan()
            .table_name(&stack.table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        all.extend(page.items.unwrap_or_default());
        start = page.last_evaluated_key;
        if start.is_none() {
            return all;
        }
    }
}

/// How many items of the stack's table match `filter` (on `#status`, with
/// `:queued`), counted by DynamoDB rather than read.
async fn item_count(stack: &Stack, filter: Option<&str>) -> usize {
    use aws_sdk_dynamodb::types::{AttributeValue, Select};
    let mut count = 0;
    let mut start = None;
    loop {
        let mut scan = stack
            .dynamodb
            .scan()
            .table_name(&stack.table)
            .select(Select::Count)
            .set_exclusive_start_key(start);
        if let Some(filter) = filter {
            scan = scan
                .filter_expression(filter)
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":queued", AttributeValue::S("queued".into()));
        }
        let page = scan.send().await.unwrap();
        count += usize::try_from(page.count).unwrap();
        start = page.last_evaluated_key;
        if start.is_none() {
            return count;
        }
    }
}

fn is_marker(item: &Record) -> bool {
    text(item, "job_id").starts_with("unsent#")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_json_lines_are_submitted_once_and_a_rerun_adds_nothing() {
    const LINES: usize = 10_000;
    let stack = Stack::new().await;
    // Every tenth line brings its own id; the others get derived ones.
    let mut file = String::new();
    for i in 0..LINES {
        let mut message = serde_json::json!({
            "url": format!("https://example.com/files/{i}.bin?X-Amz-Signature=SECRET{i}"),
            "bucket": stack.bucket,
            "key": format!("bulk/{i}.bin"),
        });
        if i % 10 == 0 {
            message["job_id"] = format!("own-{i}").into();
        }
        file.push_str(&message.to_string());
        file.push('\n');
    }
    let path = write_file(&file);

    let started = Instant::now();
    let first = submit_file(&stack, &path, &[]);
    let first_run = started.elapsed();
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(
        summary(&first),
        "submitted 10000, already present 0, re-enqueued 0, bad 0"
    );
    assert!(
        stdout(&first).contains("10000 lines in"),
        "{}",
        stdout(&first)
    );

    // Full scans of 10,000 items take moto half a minute: counted instead.
    assert_eq!(item_count(&stack, None).await, LINES, "no marker left");
    assert_eq!(
        item_count(&stack, Some("#status = :queued")).await,
        LINES,
        "one queued record per line"
    );
    let expected_ids = [
        "own-0".to_owned(),
        derived_id(
            "https://example.com/files/1.bin?X-Amz-Signature=x",
            &stack.bucket,
            "bulk/1.bin",
        ),
        derived_id(
            // Signed differently: the same job.
            "https://example.com/files/9999.bin?X-Amz-Signature=other",
            &stack.bucket,
            "bulk/9999.bin",
        ),
    ];
    for id in &expected_ids {
        let record = stack
            .record(id)
            .await
            .unwrap_or_else(|| panic!("no record {id}"));
        assert_eq!(text(&record, "status"), "queued");
        let dump = format!("{record:?}");
        assert!(!dump.contains("SECRET"), "a signature reached {dump}");
        assert!(
            !record.contains_key("message"),
            "a job with a signature keeps no message: {dump}"
        );
    }
    assert_eq!(stack.queue_depth(&stack.queue).await, (LINES as u64, 0));

    let started = Instant::now();
    let second = submit_file(&stack, &path, &[]);
    let second_run = started.elapsed();
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(
        summary(&second),
        "submitted 0, already present 10000, re-enqueued 0, bad 0"
    );
    assert_eq!(stack.queue_depth(&stack.queue).await, (LINES as u64, 0));
    assert_eq!(item_count(&stack, None).await, LINES, "no item added");
    eprintln!(
        "10,000 lines: first run {first_run:?} ({}), second run {second_run:?} ({})",
        stdout(&first).lines().nth(1).unwrap_or_default(),
        stdout(&second).lines().nth(1).unwrap_or_default(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_list_lands_at_prefix_host_path_with_sizes_and_md5s_checked() {
    let stack = Stack::new().await;
    let data = test_bytes(300_000, 7);
    let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&data));
    let wrong_md5 = base64::engine::general_purpose::STANDARD.encode([0u8; 16]);
    let origin = Origin::start(data.clone(), Behavior::default()).await;
    let size = data.len();
    let host = "127.0.0.1";
    // URL, the key path it must land at, and how its job must end.
    let rows = [
        (
            origin.url("files/a.bin"),
            Some(md5.as_str()),
            "files/a.bin",
            "succeeded",
        ),
        (
            origin.url("files/b%20c.bin"),
            None,
            "files/b c.bin",
            "succeeded",
        ),
        (origin.url("d.bin?token=SECRET"), None, "d.bin", "succeeded"),
        (
            origin.url("wrong.bin"),
            Some(wrong_md5.as_str()),
            "wrong.bin",
            "failed",
        ),
    ];
    let mut file = "TsvHttpData-1.0\n".to_owned();
    for (i, (url, md5, _, _)) in rows.iter().enumerate() {
        // Row 3 without a size, the others with one.
        match (i, md5) {
            (2, _) => file.push_str(&format!("{url}\n")),
            (_, Some(md5)) => file.push_str(&format!("{url}\t{size}\t{md5}\n")),
            (_, None) => file.push_str(&format!("{url}\t{size}\n")),
        }
    }
    let path = write_file(&file);
    let worker = stack.spawn_worker(stack.config());

    let dest = format!("s3://{}/mirror/", stack.bucket);
    let first = submit_file(&stack, &path, &["--dest", &dest]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(
        summary(&first),
        "submitted 4, already present 0, re-enqueued 0, bad 0"
    );
    for (url, _, key_path, status) in &rows {
        let key = format!("mirror/{host}/{key_path}");
        let id = derived_id(url, &stack.bucket, &key);
        let record = stack.wait_final(&id, LIMIT).await;
        assert_eq!(text(&record, "status"), *status, "{key}");
        assert_eq!(text(&record, "key"), key);
        let stored = stack.object(&key).await;
        if *status == "succeeded" {
            assert_eq!(
                sha256_hex(&stored.expect("object stored")),
                sha256_hex(&data)
            );
        } else {
            assert_eq!(text(&record, "error_kind"), "checksum_mismatch");
            assert!(stored.is_none(), "a checksum mismatch leaves no object");
        }
    }
    let dump = format!("{:?}", items(&stack).await);
    assert!(
        !dump.contains("SECRET"),
        "the URL's query reached the table"
    );

    let second = submit_file(&stack, &path, &["--dest", &dest]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(
        summary(&second),
        "submitted 0, already present 4, re-enqueued 0, bad 0"
    );
    assert!(
        stdout(&second).contains("+ 0 SQS"),
        "nothing sent: {}",
        stdout(&second)
    );
    // Every message the first run sent is consumed, and none is left.
    let deadline = Instant::now() + LIMIT;
    while stack.queue_depth(&stack.queue).await != (0, 0) {
        assert!(Instant::now() < deadline, "messages left on the queue");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_are_reported_by_number_and_skipped_and_the_rest_goes_in() {
    let stack = Stack::new().await;
    let bucket = &stack.bucket;
    let good = |name: &str| {
        serde_json::json!({"url": format!("https://example.com/{name}"), "bucket": bucket, "key": name})
            .to_string()
    };
    let json_lines = [
        good("one"),
        "{not json".to_owned(),
        serde_json::json!({"url": "ftp://example.com/x?sig=SECRET", "bucket": bucket, "key": "x"}).to_string(),
        serde_json::json!({"url": "https://example.com/x", "bucket": "Bad_Bucket", "key": "x"}).to_string(),
        String::new(),
        good("two"),
        serde_json::json!({"url": "https://example.com/x", "bucket": bucket, "key": "x",
            "headers": {"bad header": "SECRET"}})
        .to_string(),
        serde_json::json!({"job_id": "same", "url": "https://example.com/a", "bucket": bucket, "key": "a"}).to_string(),
        serde_json::json!({"job_id": "same", "url": "https://example.com/b", "bucket": bucket, "key": "b"}).to_string(),
    ]
    .join("\n");
    // Through standard input this time.
    let output = ferry(
        &stack,
        stack.moto.endpoint(),
        &["submit", "--from", "-"],
        Some(json_lines.as_bytes()),
    );
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert_eq!(
        summary(&output),
        "submitted 3, already present 0, re-enqueued 0, bad 5"
    );
    for line in [2, 3, 4, 7, 9] {
        assert!(
            errors.contains(&format!("line {line}: ")),
            "line {line}: {errors}"
        );
    }
    for line in [1, 5, 6, 8] {
        assert!(
            !errors.contains(&format!("line {line}: ")),
            "line {line}: {errors}"
        );
    }
    assert!(
        errors.contains("line 2: message is not valid JSON"),
        "{errors}"
    );
    assert!(errors.contains("line 3: url scheme \"ftp\""), "{errors}");
    assert!(
        errors.contains("line 4: bucket name \"Bad_Bucket\""),
        "{errors}"
    );
    assert!(
        errors.contains("line 9: job id same is already used by line 8"),
        "{errors}"
    );
    assert!(errors.contains("(bad_lines)"), "{errors}");
    assert!(!errors.contains("SECRET"), "{errors}");
    assert_eq!(stack.queue_depth(&stack.queue).await, (3, 0));

    let url_list = "TsvHttpData-1.0\n\
         https://example.com/ok1\n\
         https://example.com/f\t12\tnot-base64!\n\
         not a url\n\
         https://example.com/f\tmany\n\
         https://example.com/ok2\t5\n";
    let dest = format!("s3://{bucket}/list/");
    let output = submit_file(&stack, &write_file(url_list), &["--dest", &dest]);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert_eq!(
        summary(&output),
        "submitted 2, already present 0, re-enqueued 0, bad 3"
    );
    assert!(
        errors.contains("line 3: MD5 is not valid base64"),
        "{errors}"
    );
    assert!(
        errors.contains("line 4: url is not a valid absolute URL"),
        "{errors}"
    );
    assert!(
        errors.contains("line 5: size must be a whole number"),
        "{errors}"
    );

    // A list without its header: line 1 is reported, the rows are read.
    let headless = "https://example.com/first\nhttps://example.com/second\n";
    let output = submit_file(&stack, &write_file(headless), &["--dest", &dest]);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(
        errors.contains("line 1: a URL list (--dest) must start with the line TsvHttpData-1.0"),
        "{errors}"
    );
    assert_eq!(
        summary(&output),
        "submitted 1, already present 0, re-enqueued 0, bad 1"
    );

    // A list without --dest: a usage error, nothing submitted.
    let output = submit_file(&stack, &write_file(url_list), &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("needs --dest"),
        "{}",
        stderr(&output)
    );
    assert_eq!(stack.queue_depth(&stack.queue).await, (6, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_recorded_without_their_message_are_enqueued_by_the_next_run() {
    let stack = Stack::new().await;
    let proxy = AwsProxy::start(stack.moto.endpoint()).await;
    let file: String = (0..3)
        .map(|i| {
            let message = serde_json::json!({"url": format!("https://example.com/{i}"),
                "bucket": stack.bucket, "key": format!("k{i}")});
            format!("{message}\n")
        })
        .collect();
    let path = write_file(&file);
    let from = path.to_str().unwrap();

    // A record write whose reply is lost (applied: the retry rewrites the
    // same items), then SQS refuses every message: the run stops at once,
    // leaving queued records and their unsent# markers.
    proxy.set_rules(vec![
        Rule::new("dynamodb:BatchWriteItem", Fault::Lost)
            .after(1)
            .times(1),
        Rule::new(
            "sqs:SendMessageBatch",
            Fault::Error {
                status: Some(403),
                code: Some("AccessDenied".into()),
            },
        ),
    ]);
    let output = ferry(&stack, &proxy.endpoint(), &["submit", "--from", from], None);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(errors.contains("stopped at line 1"), "{errors}");
    assert!(errors.contains("(queue_error)"), "{errors}");
    assert_eq!(proxy.faults("dynamodb:BatchWriteItem").len(), 1);
    assert_eq!(
        proxy.faults("sqs:SendMessageBatch").len(),
        1,
        "no retry of a refusal"
    );
    let left = items(&stack).await;
    assert_eq!(left.iter().filter(|i| is_marker(i)).count(), 3, "{left:?}");
    assert_eq!(left.iter().filter(|i| !is_marker(i)).count(), 3, "{left:?}");
    assert_eq!(stack.queue_depth(&stack.queue).await, (0, 0));

    // The same file again: the three messages go out, once.
    proxy.clear_rules();
    let output = ferry(&stack, &proxy.endpoint(), &["submit", "--from", from], None);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        summary(&output),
        "submitted 0, already present 0, re-enqueued 3, bad 0"
    );
    assert_eq!(stack.queue_depth(&stack.queue).await, (3, 0));
    assert!(!items(&stack).await.iter().any(is_marker));
    let output = ferry(&stack, &proxy.endpoint(), &["submit", "--from", from], None);
    assert_eq!(
        summary(&output),
        "submitted 0, already present 3, re-enqueued 0, bad 0"
    );
    assert_eq!(stack.queue_depth(&stack.queue).await, (3, 0));
}

/// Bulk submit asks the worker's one question of an AWS error
/// (`aws_error::permanent_reason`): a code it does not know is waited out,
/// a refusal stops the run at its first answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_call_is_tried_again_unless_aws_refused_it_for_good() {
    let stack = Stack::new().await;
    let proxy = AwsProxy::start(stack.moto.endpoint()).await;
    let file = |name: &str| {
        let lines: String = (0..2)
            .map(|i| {
                let message = serde_json::json!({"url": format!("https://example.com/{name}{i}"),
                    "bucket": stack.bucket, "key": format!("{name}{i}")});
                format!("{message}\n")
            })
            .collect();
        write_file(&lines)
    };
    let refusal = |code: &str| Fault::Error {
        status: Some(400),
        code: Some(code.into()),
    };

    // The SDK does not retry a 400 it cannot classify; bulk submit does.
    proxy.set_rules(vec![
        Rule::new("dynamodb:BatchGetItem", refusal("SomethingNewException")).times(2),
    ]);
    let from = file("new");
    let output = ferry(
        &stack,
        &proxy.endpoint(),
        &["submit", "--from", from.to_str().unwrap()],
        None,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        summary(&output),
        "submitted 2, already present 0, re-enqueued 0, bad 0"
    );
    assert_eq!(proxy.faults("dynamodb:BatchGetItem").len(), 2);

    // Access denied is an answer: one call, and the run stops saying so.
    proxy.set_rules(vec![Rule::new(
        "dynamodb:BatchGetItem",
        refusal("AccessDeniedException"),
    )]);
    let from = file("denied");
    let output = ferry(
        &stack,
        &proxy.endpoint(),
        &["submit", "--from", from.to_str().unwrap()],
        None,
    );
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(errors.contains("AccessDeniedException"), "{errors}");
    assert_eq!(proxy.faults("dynamodb:BatchGetItem").len(), 3, "{errors}");
    assert_eq!(stack.queue_depth(&stack.queue).await, (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_follows_the_whole_file_and_exits_by_how_the_jobs_ended() {
    let stack = Stack::new().await;
    let origin = Origin::start(test_bytes(5000, 8), Behavior::default()).await;
    let missing = Origin::start(
        Vec::new(),
        Behavior {
            status: Some(404),
            ..Behavior::default()
        },
    )
    .await;
    let worker = stack.spawn_worker(stack.config());
    let line = |url: String, key: &str| {
        format!(
            "{}\n",
            serde_json::json!({"url": url, "bucket": stack.bucket, "key": key})
        )
    };
    let good: String = (0..3)
        .map(|i| line(origin.url(&format!("f{i}")), &format!("w{i}")))
        .collect();
    let output = submit_file(&stack, &write_file(&good), &["--wait", "--poll-secs", "1"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let lines: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    assert_eq!(
        lines[0],
        "submitted 3, already present 0, re-enqueued 0, bad 0"
    );
    assert_eq!(lines[2], "succeeded 3");

    // One that fails: exit 1, the counts, and the job named.
    let mixed = format!("{good}{}", line(missing.url("gone"), "gone"));
    let output = submit_file(&stack, &write_file(&mixed), &["--wait", "--poll-secs", "1"]);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    let lines: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    assert_eq!(
        lines[0],
        "submitted 1, already present 3, re-enqueued 0, bad 0"
    );
    assert_eq!(lines[2], "failed 1, succeeded 3");
    let gone = derived_id(&missing.url("gone"), &stack.bucket, "gone");
    assert!(
        errors.contains(&format!("job {gone} failed (source_not_found)")),
        "{errors}"
    );
    assert!(
        errors.contains("1 of 4 jobs did not succeed (jobs_failed)"),
        "{errors}"
    );
    worker.stop().await;
}
