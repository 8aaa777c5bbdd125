//! The AWS side failing on purpose: the S3, DynamoDB and SQS calls a job
//! makes, each crossed with error / throttling / applied-but-lost / hang,
//! through the fault proxy in front of moto. docs/reliability.md is the
//! matrix; its cells name the cases here (`cell` names).
//!
//! Every cell runs one job on its own stack (bucket, queue, DLQ, table) and
//! its own proxy, with an in-process worker whose clients go through the
//! proxy and use the product's SDK settings (adaptive retries, timeouts).
//! A cell passes only if its fault was really injected and the job ended as
//! promised: succeeded with the source's bytes, one attempt, the object
//! completed by exactly one Complete/PutObject, no open upload after a gc
//! sweep, nothing left on the queue or in the DLQ.
//!
//! This module holds the cells' machinery; the cells live by the service
//! they fault (`s3`, `dynamodb`, `sqs`), with `storms` (throttling across a
//! service) and `commands` (the CLI through the proxy).

use std::time::Duration;

use ferry_engine::UploadChecksum;
use ferry_testkit::aws_proxy::{AwsProxy, Fault, Rule};
use ferry_testkit::{Behavior, test_bytes};
use ferry_worker::gc::{self, Sweep};
use ferry_worker::worker::Clients;
use tokio::task::JoinSet;

use crate::harness::{InProcessWorker, Stack, number, proxied_clients, spawn_worker_with, text};

mod commands;
mod dynamodb;
mod s3;
mod sqs;
mod storms;

/// A stack whose worker reaches AWS only through a fault proxy.
struct Faulty {
    stack: Stack,
    proxy: AwsProxy,
    /// The workers' upload checksum mode.
    upload_checksum: UploadChecksum,
}

impl Faulty {
    async fn new() -> Self {
        // FERRY_TEST_LOG=filter shows the workers' logs (e.g. `info`).
        if let Ok(filter) = std::env::var("FERRY_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let stack = Stack::new().await;
        let proxy = AwsProxy::start(stack.moto.endpoint()).await;
        Self {
            stack,
            proxy,
            upload_checksum: UploadChecksum::default(),
        }
    }

    /// The product's clients, through this cell's proxy.
    async fn clients(&self) -> Clients {
        proxied_clients(&self.proxy).await
    }

    /// Test-scale leases are short; these are long enough that a loaded
    /// moto (many cells at once on two cores, beside the rest of the suite)
    /// does not let them lapse: a renewal or visibility extension has three
    /// heartbeats (9 s) to get through its SDK retries, while a failed
    /// extension still shows within seconds.
    async fn worker(&self, shutdown_grace: Duration) -> InProcessWorker {
        let mut config = self.stack.config();
        config.shutdown_grace = shutdown_grace;
        config.lease = Duration::from_secs(30);
        config.heartbeat = Duration::from_secs(3);
        config.visibility = Duration::from_secs(12);
        config.engine.upload_checksum.default = self.upload_checksum;
        spawn_worker_with(config, self.clients().await)
    }

    /// How many writes stored `key`: successful PutObjects, and uploads
    /// successfully completed (a retried Complete of the same upload is the
    /// same write; S3 may answer it 200 again).
    fn completions(&self, key: &str) -> usize {
        let target = format!("{}/{key}", self.stack.bucket);
        let stored: std::collections::BTreeSet<(String, Option<String>, u64)> = self
            .proxy
            .log()
            .into_iter()
            .filter(|e| e.target == target && e.upstream_status == Some(200))
            .filter_map(|e| match e.op.as_str() {
                "s3:PutObject" => Some((e.op, None, e.seq)),
                "s3:CompleteMultipartUpload" => Some((e.op, e.upload_id, 0)),
                _ => None,
            })
            .collect();
        stored.len()
    }

    /// Sweeps the bucket like `ferry gc --older-than 0` (straight to moto).
    async fn sweep(&self) -> Vec<gc::Decision> {
        let sweep = Sweep {
            bucket: self.stack.bucket.clone(),
            prefix: None,
            older_than: Duration::ZERO,
            dry_run: false,
        };
        gc::sweep(&self.stack.s3, &self.stack.store(), &sweep)
            .await
            .expect("gc sweep")
    }
}

/// What a cell's job copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// 100 KiB: one PutObject.
    Small,
    /// 12 MiB from an origin with ranges and an ETag: a checkpointed
    /// multipart upload.
    Ranged,
    /// 12 MiB from an origin without ranges: a streamed multipart upload
    /// that is never checkpointed.
    Streamed,
    /// 24 MiB, slowly (several heartbeats and a visibility extension).
    Slow,
    /// A 404 source: the job fails for good on its own account.
    Missing,
    /// 12 MiB with a wrong expected sha256: fails after its parts are in S3.
    WrongDigest,
    /// 12 MiB, slowly, without ranges: fails with a wrong digest.
    WrongDigestStreamed,
    /// Slow and ranged; a first worker is stopped mid-way (released), the
    /// rules go in, and a second worker resumes the job.
    Resumed,
    /// A poison message (an `ftp:` URL): rejected and dead-lettered.
    Poison,
}

impl Kind {
    fn size(self) -> usize {
        match self {
            Self::Small => 100 * 1024,
            Self::Slow | Self::Resumed => 24 << 20,
            _ => 12 << 20,
        }
    }

    fn behavior(self) -> Behavior {
        // About 4 s a 5 MiB part: several heartbeats and, with the cells'
        // 12 s visibility, at least one visibility extension.
        let slow = Behavior {
            chunk_delay: Some(Duration::from_millis(50)),
            ..Behavior::default()
        };
        match self {
            Self::Small | Self::Ranged | Self::WrongDigest => Behavior::default(),
            Self::Streamed => Behavior {
                ranges: false,
                ..Behavior::default()
            },
            Self::WrongDigestStreamed => Behavior {
                ranges: false,
                ..slow
            },
            Self::Slow | Self::Resumed => slow,
            Self::Missing | Self::Poison => Behavior {
                status: Some(404),
                ..Behavior::default()
            },
        }
    }

    fn expected_status(self) -> &'static str {
        match self {
            Self::Missing | Self::WrongDigest | Self::WrongDigestStreamed => "failed",
            Self::Poison => "rejected",
            _ => "succeeded",
        }
    }
}

/// One matrix cell: a job of `kind` while `rules` fault the AWS side.
struct Cell {
    name: String,
    kind: Kind,
    rules: Vec<Rule>,
    /// The operation whose fault must show in the proxy log.
    faulted_op: String,
    /// Attempts the job may take: 1, unless the fault outlasts a lease.
    max_attempts: u64,
    /// The workers' upload checksum mode.
    upload_checksum: UploadChecksum,
}

fn cell(name: &str, kind: Kind, op: &str, matching: Option<&str>, fault: Fault) -> Cell {
    // S3 errors and throttles outlast the engine's attempts (3 in tests), so
    // its patience and throttle handling are exercised; DynamoDB and SQS
    // ones are absorbed by the SDK's adaptive retries (outages that outlast
    // them are `outage` cells). Lost replies and hangs happen once.
    let times = match (&fault, op.starts_with("s3:")) {
        (Fault::Error { .. } | Fault::Throttle, true) => 8,
        (Fault::Error { .. } | Fault::Throttle, false) => 3,
        _ => 1,
    };
    let mut rule = Rule::new(op, fault).id(name).times(times);
    if let Some(text) = matching {
        rule = rule.matching(text);
    }
    // A resume reads the part CRCs the worker kept (BatchGetItem) only for
    // parts S3 lists without a CRC64NVME. S3 lists one for every part of a
    // crc64nvme upload (LocalStack too; moto never does), so the reads to
    // fault happen everywhere only with a mode that sends none.
    let upload_checksum = if op == "dynamodb:BatchGetItem" {
        UploadChecksum::Md5
    } else {
        UploadChecksum::default()
    };
    Cell {
        name: name.to_owned(),
        kind,
        rules: vec![rule],
        faulted_op: op.to_owned(),
        max_attempts: 1,
        upload_checksum,
    }
}

/// The four fault classes every call site is crossed with.
fn classes() -> [(&'static str, Fault); 4] {
    [
        (
            "error",
            Fault::Error {
                status: None,
                code: None,
            },
        ),
        ("throttle", Fault::Throttle),
        ("lost", Fault::Lost),
        ("hang", Fault::Hang { ms: Some(30_000) }),
    ]
}

/// Every call site of a job's life with every fault class.
fn cells(sites: &[(&str, Kind, &str, Option<&str>)]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for (site, kind, op, matching) in sites {
        for (class, fault) in classes() {
            cells.push(cell(
                &format!("{site}/{class}"),
                *kind,
                op,
                *matching,
                fault,
            ));
        }
    }
    cells
}

async fn run_cell(cell: Cell) -> Result<(), String> {
    let mut f = Faulty::new().await;
    f.upload_checksum = cell.upload_checksum;
    let outcome = run_cell_on(&f, cell).await;
    // A failing cell shows what its worker asked of AWS and when: under a
    // loaded CI machine that is what tells a slow emulator from a bug.
    outcome.map_err(|why| format!("{why}\n{}", timeline(&f.proxy)))
}

/// The proxy's log as one line per request (S3 data calls folded).
fn timeline(proxy: &AwsProxy) -> String {
    let mut lines = vec!["  AWS calls (ms since the proxy started):".to_owned()];
    for e in proxy.log() {
        if e.fault.is_none() && matches!(e.op.as_str(), "s3:UploadPart" | "s3:GetObject") {
            continue;
        }
        lines.push(format!(
            "  {:>6} {} {}{} -> {}",
            e.t_ms,
            e.op,
            e.fault.map(|f| format!("[{f}] ")).unwrap_or_default(),
            e.rules.join(","),
            e.answered.map_or("cut".to_owned(), |s| s.to_string()),
        ));
    }
    lines.join("\n")
}

async fn run_cell_on(f: &Faulty, cell: Cell) -> Result<(), String> {
    let job = "job";
    let data = test_bytes(cell.kind.size(), 7);
    let origin = ferry_testkit::Origin::start(data.clone(), cell.kind.behavior()).await;
    let mut message = f.stack.message(job, &origin.url("f"), job);
    if matches!(cell.kind, Kind::WrongDigest | Kind::WrongDigestStreamed) {
        message["expected"] = serde_json::json!({ "sha256": "0".repeat(64) });
    }
    if cell.kind == Kind::Poison {
        message["url"] = serde_json::json!("ftp://example.com/f");
    }
    f.stack.send(&f.stack.queue, &message).await;
    if cell.kind == Kind::Resumed {
        // A first worker runs until the upload has parts, then is stopped
        // with no grace: it releases the job, keeping its checkpoint.
        let first = f.worker(Duration::ZERO).await;
        f.stack
            .wait_for_parts(job, 1, Duration::from_secs(30))
            .await;
        first.stop().await;
    }
    f.proxy.set_rules(cell.rules.clone());
    let worker = f.worker(Duration::from_secs(10)).await;
    let record = f.stack.wait_final(job, Duration::from_secs(120)).await;
    let check = async {
        let status = text(&record, "status");
        let expected = cell.kind.expected_status();
        if status != expected {
            return Err(format!(
                "status {status}, expected {expected}: {}",
                ferry_worker::store::to_json(&record)
            ));
        }
        let attempts = number(&record, "attempts");
        let first_attempts = u64::from(cell.kind == Kind::Resumed);
        if attempts > cell.max_attempts + first_attempts {
            return Err(format!(
                "the job took {attempts} attempts: {}",
                ferry_worker::store::to_json(&record)
            ));
        }
        if expected == "succeeded" {
            if f.stack.object(job).await.as_deref() != Some(&data[..]) {
                return Err("the stored object differs from the source".into());
            }
            let crc = ferry_engine::checksum::to_base64(ferry_engine::checksum::crc64nvme(&data));
            if text(&record, "checksum") != crc {
                return Err("the recorded checksum is not the object's".into());
            }
            let completions = f.completions(job);
            if completions != 1 {
                return Err(format!("the object was completed {completions} times"));
            }
        } else if text(&record, "error_kind").starts_with("s3_")
            || text(&record, "error_kind") == "checkpoint_failed"
        {
            return Err(format!(
                "failed for an AWS-side reason: {}",
                text(&record, "error")
            ));
        }
        Ok(())
    }
    .await;
    // The worker deletes the message right after the final record; a
    // rejected one after its DLQ send, which a throttle or hang can hold up
    // for the SDK's adaptive back-off (up to its 20 s maximum) per retry.
    let mut drained = true;
    for _ in 0..600 {
        let (visible, in_flight) = f.stack.queue_depth(&f.stack.queue).await;
        drained = visible + in_flight == 0;
        if drained {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.stop().await;
    check?;
    if !drained {
        return Err("the job's message is still on the queue".into());
    }
    if f.proxy.faults(&cell.faulted_op).is_empty() {
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        for entry in f.proxy.log() {
            *seen.entry(entry.op).or_default() += 1;
        }
        return Err(format!(
            "no fault was injected into {}; requests seen: {seen:?}",
            cell.faulted_op
        ));
    }
    // Only a poison message belongs in the DLQ: once, or twice when the
    // SendMessage that put it there was applied with its reply lost.
    let dead = f.stack.drain(&f.stack.dlq).await;
    let poison = cell.kind == Kind::Poison;
    let expected_body = message.to_string();
    if (poison && dead.is_empty())
        || (!poison && !dead.is_empty())
        || dead.len() > 2
        || dead.iter().any(|body| *body != expected_body)
    {
        return Err(format!("the DLQ holds {dead:?}"));
    }
    f.sweep().await;
    let open = f.stack.open_uploads().await;
    if open != 0 {
        return Err(format!("{open} multipart uploads left open after gc"));
    }
    Ok(())
}

/// Runs cells a few at a time and reports every failing one together.
/// `FERRY_CELLS=text` runs only the cells whose name contains `text`.
async fn run_cells(mut cells: Vec<Cell>) {
    if let Ok(only) = std::env::var("FERRY_CELLS") {
        cells.retain(|c| c.name.contains(&only));
    }

    let total = cells.len();
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(6));
    let mut running = JoinSet::new();
    for cell in cells {
        let limit = std::sync::Arc::clone(&limit);
        running.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore");
            let name = cell.name.clone();
            let outcome = tokio::spawn(run_cell(cell))
                .await
                .unwrap_or_else(|panic| Err(format!("panicked: {panic}")));
            (name, outcome)
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = running.join_next().await {
        let (name, outcome) = joined.expect("cell task");
        if let Err(why) = outcome {
            failures.push(format!("{name}: {why}"));
        }
    }
    failures.sort();
    if failures.is_empty() {
        return;
    }
    // The report is the last thing printed and no backtrace follows it
    // (`resume_unwind` skips the panic hook): a CI log that keeps only the
    // tail of a failing test's output still names each cell and why.
    let summary: Vec<&str> = failures
        .iter()
        .map(|failure| failure.lines().next().unwrap_or_default())
        .collect();
    println!(
        "{} of {total} cells failed:\n{}\n\nin short:\n{}",
        failures.len(),
        failures.join("\n"),
        summary.join("\n")
    );
    std::panic::resume_unwind(Box::new(format!(
        "{} of {total} cells failed",
        failures.len()
    )));
}

/// `ferry ARGS` as a process whose AWS endpoint is the proxy.
fn ferry_through(f: &Faulty, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env_clear()
        .env("AWS_ENDPOINT_URL", f.proxy.endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("FERRY_TABLE", &f.stack.table)
        .env("FERRY_QUEUE_URL", &f.stack.queue)
        .env("FERRY_AWS_ATTEMPT_TIMEOUT_SECS", "4")
        .env("FERRY_LOG_FORMAT", "json")
        .output()
        .expect("run ferry")
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
