//! An isolated stack per test: bucket, queue (+ DLQ) and table on the shared
//! moto server, and helpers to run workers and read what they recorded.
//!
//! The bucket lives on the strict S3 instead when the tests use one
//! (`FERRY_TEST_S3_ENDPOINT`, docs/testing.md); a `ferry` process pointed at
//! moto is then pointed at it for S3 with `AWS_ENDPOINT_URL_S3`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_engine::plan::MIB;
use ferry_testkit::{Moto, unique_name};
use ferry_worker::config::WorkerConfig;
use ferry_worker::store::{self, JobStore, Record};
use ferry_worker::worker::Clients;

mod tables;
mod workers;

pub use tables::{create_table, key_element, string_attribute};
pub use workers::{
    InProcessWorker, WorkerProcess, engine_config, proxied_clients, spawn_worker_with,
};

pub const PART: usize = 5 * MIB as usize;

/// An origin slow enough to act on a job mid-way: 20 ms between 64 KiB
/// chunks, ~1.6 s per 5 MiB part and connection.
pub fn slow() -> ferry_testkit::Behavior {
    ferry_testkit::Behavior {
        chunk_delay: Some(Duration::from_millis(20)),
        ..ferry_testkit::Behavior::default()
    }
}

/// Whether the S3 of this run checks what it is sent (checksums, part
/// order, and lists part checksums): the strict S3 does, moto does not
/// (../shared/emulators.md).
pub fn store_checks() -> bool {
    ferry_testkit::moto::strict_s3_endpoint().is_some()
}

/// What a `ferry` process pointed at `endpoint` needs as
/// `AWS_ENDPOINT_URL_S3`: the strict S3 when the tests use one and
/// `endpoint` is `moto` itself (a fault proxy sends S3 there on its own;
/// anything else is a test's own endpoint).
pub fn s3_endpoint_beside(moto: &Moto, endpoint: &str) -> Option<String> {
    ferry_testkit::moto::strict_s3_endpoint().filter(|_| endpoint == moto.endpoint())
}

pub struct Stack {
    pub moto: &'static Moto,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sns: aws_sdk_sns::Client,
    pub bucket: String,
    pub queue: String,
    pub dlq: String,
    pub table: String,
}

impl Stack {
    pub async fn new() -> Self {
        Self::on(Moto::shared()).await
    }

    /// A stack on a server of the test's own (one it may stop and restart).
    pub async fn on(moto: &'static Moto) -> Self {
        let s3 = aws_sdk_s3::Client::from_conf(
            ferry_engine::s3_config(&moto.s3_builder().await).build(),
        );
        let sqs = moto.sqs().await;
        let dynamodb = moto.dynamodb().await;
        let sns = aws_sdk_sns::Client::new(&moto.sdk_config().await);
        let bucket = unique_name("bucket");
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        let table = unique_name("jobs");
        create_table(&dynamodb, &table, true).await;
        let mut stack = Self {
            moto,
            s3,
            sqs,
            dynamodb,
            sns,
            bucket,
            queue: String::new(),
            dlq: String::new(),
            table,
        };
        stack.queue = stack.create_queue("jobs").await;
        stack.dlq = stack.create_queue("dlq").await;
        stack
    }

    /// A ferry command against this stack, whatever its exit status.
    pub fn cli_output(&self, args: &[&str]) -> std::process::Output {
        self.ferry_at(self.moto.endpoint(), args)
            .output()
            .expect("run ferry")
    }

    /// `ferry ARGS` against `endpoint` (moto, or a fault proxy in front of
    /// it) and this stack's table and queue, in a clean environment.
    pub fn ferry_at(&self, endpoint: &str, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
        command.args(args).env_clear();
        self.aws_endpoint(&mut command, endpoint);
        command
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("FERRY_TABLE", &self.table)
            .env("FERRY_QUEUE_URL", &self.queue)
            .env("FERRY_LOG_FORMAT", "json");
        command
    }

    /// Points a `ferry` process at `endpoint`, and for S3 at the strict S3
    /// when [`s3_endpoint_beside`] says so.
    fn aws_endpoint(&self, command: &mut Command, endpoint: &str) {
        command.env("AWS_ENDPOINT_URL", endpoint);
        if let Some(s3) = s3_endpoint_beside(self.moto, endpoint) {
            command.env("AWS_ENDPOINT_URL_S3", s3);
        }
    }

    pub async fn queue_arn(&self, queue: &str) -> String {
        self.sqs
            .get_queue_attributes()
            .queue_url(queue)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()
            .remove(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .unwrap()
    }

    pub async fn create_queue(&self, prefix: &str) -> String {
        self.sqs
            .create_queue()
            .queue_name(unique_name(prefix))
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap()
    }

    pub fn config(&self) -> WorkerConfig {
        WorkerConfig {
            queues: vec![self.queue.clone()],
            queue_weights: Vec::new(),
            table: self.table.clone(),
            dlq_url: Some(self.dlq.clone()),
            worker_id: unique_name("worker"),
            max_concurrent_jobs: 4,
            max_attempts: 3,
            lease: Duration::from_secs(6),
            heartbeat: Duration::from_secs(1),
            visibility: Duration::from_secs(6),
            visibility_cap: Duration::from_secs(12 * 3600),
            poll_wait: Duration::from_secs(1),
            retry_base_delay: Duration::from_secs(1),
            busy_recheck: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(10),
            keep_part_checksums: true,
            clock_skew_secs: 0,
            metrics_addr: None,
            destinations: Vec::new(),
            gc: None,
            results: Default::default(),
            engine: engine_config(),
        }
    }

    pub fn clients(&self) -> Clients {
        Clients {
            s3: self.s3.clone(),
            sqs: self.sqs.clone(),
            dynamodb: self.dynamodb.clone(),
            sns: self.sns.clone(),
            protection: ferry_worker::protection::TaskProtection::disabled(),
        }
    }

    /// A worker running in this process until the handle is stopped.
    pub fn spawn_worker(&self, config: WorkerConfig) -> InProcessWorker {
        spawn_worker_with(config, self.clients())
    }

    /// `ferry worker` as a real process, with the test settings as env vars.
    /// Its log goes to a file (a pipe nobody reads would block it).
    pub fn start_worker_process(&self, extra: &[(&str, &str)]) -> WorkerProcess {
        let log = std::env::temp_dir().join(format!("{}.log", unique_name("ferry-worker")));
        let endpoint = extra
            .iter()
            .find(|(name, _)| *name == "AWS_ENDPOINT_URL")
            .map_or(self.moto.endpoint(), |(_, value)| *value);
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
        command.arg("worker").env_clear();
        self.aws_endpoint(&mut command, endpoint);
        command
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("FERRY_QUEUE_URL", &self.queue)
            .env("FERRY_TABLE", &self.table)
            .env("FERRY_DLQ_URL", &self.dlq)
            .env("FERRY_LEASE_SECS", "6")
            .env("FERRY_HEARTBEAT_SECS", "1")
            .env("FERRY_POLL_WAIT_SECS", "1")
            .env("FERRY_RETRY_BASE_DELAY_SECS", "1")
            .env("FERRY_PART_SIZE_MIB", "5")
            .env("FERRY_MEMORY_BUDGET_MIB", "64")
            .env("FERRY_LOG_FORMAT", "json")
            .env("FERRY_SOURCE_ALLOW_CIDRS", "127.0.0.0/8")
            .env("FERRY_METRICS_ADDR", "off")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("worker log file"));
        for (name, value) in extra {
            command.env(name, value);
        }
        WorkerProcess {
            child: command.spawn().expect("start ferry worker"),
            log,
        }
    }

    /// A `ferry` command (not the worker) against this stack; must exit 0.
    /// Returns its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = self.cli_output(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "ferry {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// Queues job `id` (stored under key `id`) from an origin that serves
    /// `data` with `behavior`; the origin lives as long as the returned handle.
    pub async fn submit(
        &self,
        id: &str,
        data: Vec<u8>,
        behavior: ferry_testkit::Behavior,
    ) -> ferry_testkit::Origin {
        let origin = ferry_testkit::Origin::start(data, behavior).await;
        self.send(&self.queue, &self.message(id, &origin.url("f"), id))
            .await;
        origin
    }

    /// [`submit`](Self::submit) from a [`slow`] origin.
    pub async fn submit_slow(&self, id: &str, data: Vec<u8>) -> ferry_testkit::Origin {
        self.submit(id, data, slow()).await
    }

    pub fn message(&self, job_id: &str, url: &str, key: &str) -> serde_json::Value {
        serde_json::json!({"job_id": job_id, "url": url, "bucket": self.bucket, "key": key})
    }

    pub async fn send(&self, queue: &str, body: &serde_json::Value) {
        self.send_raw(queue, &body.to_string()).await;
    }

    pub async fn send_raw(&self, queue: &str, body: &str) {
        self.sqs
            .send_message()
            .queue_url(queue)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    pub fn store(&self) -> JobStore {
        JobStore::new(self.dynamodb.clone(), &self.table)
    }

    pub async fn record(&self, job_id: &str) -> Option<Record> {
        self.store().get(job_id).await.unwrap()
    }

    pub async fn status(&self, job_id: &str) -> Option<String> {
        self.record(job_id)
            .await
            .and_then(|r| store::text(&r, "status").map(str::to_owned))
    }

    /// Waits (bounded) until the job's record reaches a final status.
    pub async fn wait_final(&self, job_id: &str, limit: Duration) -> Record {
        let deadline = Instant::now() + limit;
        loop {
            // moto applies an UpdateItem attribute by attribute, so a read can
            // see the new status before `finished_at` (real DynamoDB is atomic
            // per item): wait for both.
            if let Some(record) = self.record(job_id).await
                && matches!(
                    store::text(&record, "status"),
                    Some("succeeded" | "failed" | "rejected" | "cancelled")
                )
                && store::text(&record, "finished_at").is_some()
            {
                return record;
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} not final within {limit:?}: {:?}",
                self.record(job_id).await.as_ref().map(store::to_json)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn object(&self, key: &str) -> Option<Vec<u8>> {
        ferry_testkit::object_bytes(&self.s3, &self.bucket, key).await
    }

    /// Parts of the job's checkpointed upload that are done as far as a
    /// resuming worker can tell: S3 lists them and their CRC item exists.
    pub async fn uploaded_parts(&self, job_id: &str) -> usize {
        let Some((upload_id, numbers)) = self.listed_parts(job_id).await else {
            return 0;
        };
        self.store()
            .part_checksums(job_id, &upload_id, &numbers)
            .await
            .map_or(0, |found| found.len())
    }

    /// The checkpointed upload of the job (key = job id) and the part
    /// numbers S3's ListParts shows for it.
    pub async fn listed_parts(&self, job_id: &str) -> Option<(String, Vec<u32>)> {
        let record = self.record(job_id).await?;
        let upload_id = store::text(&record, "upload_id")?.to_owned();
        let listed = self
            .s3
            .list_parts()
            .bucket(&self.bucket)
            .key(job_id)
            .upload_id(&upload_id)
            .send()
            .await
            .ok()?;
        let numbers = listed
            .parts()
            .iter()
            .filter_map(|p| p.part_number().and_then(|n| u32::try_from(n).ok()))
            .collect();
        Some((upload_id, numbers))
    }

    /// Waits (bounded) for the job's checkpoint; returns its upload id.
    pub async fn wait_for_checkpoint(&self, job_id: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(upload_id) = self
                .record(job_id)
                .await
                .and_then(|r| store::text(&r, "upload_id").map(str::to_owned))
            {
                return upload_id;
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} did not checkpoint its upload within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Another worker takes the job over: new owner, next fence.
    pub async fn take_over(&self, job_id: &str) {
        use aws_sdk_dynamodb::types::AttributeValue;
        self.dynamodb
            .update_item()
            .table_name(&self.table)
            .key("job_id", AttributeValue::S(job_id.into()))
            .update_expression("SET lease_owner = :rival, fence = fence + :one")
            .expression_attribute_values(":rival", AttributeValue::S("rival".into()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .send()
            .await
            .unwrap();
    }

    /// Waits (bounded) until at least `count` parts of the job's upload are done.
    pub async fn wait_for_parts(&self, job_id: &str, count: usize, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let parts = self.uploaded_parts(job_id).await;
            if parts >= count {
                return parts;
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} had {parts} of {count} parts after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn open_uploads(&self) -> usize {
        ferry_testkit::open_uploads(&self.s3, &self.bucket).await
    }

    /// Messages on a queue (visible, in flight), as SQS counts them. An
    /// empty answer is read twice: moto counts the two at different
    /// instants, so a message whose visibility lapses between them is in
    /// neither, and a queue that is not empty would read as drained.
    /// Waits until `queue` holds `depth` (visible, in flight), at most
    /// `limit`; fails saying `what` did not happen.
    pub async fn wait_for_queue_depth(
        &self,
        queue: &str,
        depth: (u64, u64),
        limit: Duration,
        what: &str,
    ) {
        let deadline = Instant::now() + limit;
        while self.queue_depth(queue).await != depth {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn queue_depth(&self, queue: &str) -> (u64, u64) {
        let depth = self.queue_depth_once(queue).await;
        if depth != (0, 0) {
            return depth;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.queue_depth_once(queue).await
    }

    async fn queue_depth_once(&self, queue: &str) -> (u64, u64) {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(queue)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        let get = |a: A| attrs.get(&a).and_then(|v| v.parse().ok()).unwrap_or(0);
        (
            get(A::ApproximateNumberOfMessages),
            get(A::ApproximateNumberOfMessagesNotVisible),
        )
    }

    /// Receives everything on a queue (bounded), returning the bodies.
    pub async fn drain(&self, queue: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        for _ in 0..10 {
            let output = self
                .sqs
                .receive_message()
                .queue_url(queue)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            let messages = output.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            bodies.extend(messages.into_iter().filter_map(|m| m.body));
        }
        bodies
    }
}

pub fn number(record: &Record, name: &str) -> u64 {
    store::number(record, name)
        .unwrap_or_else(|| panic!("record has no number {name}: {}", store::to_json(record)))
}

pub fn text<'a>(record: &'a Record, name: &str) -> &'a str {
    store::text(record, name)
        .unwrap_or_else(|| panic!("record has no text {name}: {}", store::to_json(record)))
}
