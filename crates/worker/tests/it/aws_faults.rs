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

use std::time::Duration;

use ferry_engine::UploadChecksum;
use ferry_testkit::aws_proxy::{AwsProxy, Fault, Rule};
use ferry_testkit::{Behavior, test_bytes};
use ferry_worker::gc::{self, Sweep};
use ferry_worker::worker::Clients;
use tokio::task::JoinSet;

use crate::harness::{InProcessWorker, Stack, number, proxied_clients, spawn_worker_with, text};

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
    assert!(
        failures.is_empty(),
        "{} of {total} cells failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_faults_on_every_call_of_a_job_end_in_one_correct_object() {
    let mut all = cells(&[
        ("s3.put_object", Kind::Small, "s3:PutObject", None),
        ("s3.create", Kind::Ranged, "s3:CreateMultipartUpload", None),
        (
            "s3.create.streamed",
            Kind::Streamed,
            "s3:CreateMultipartUpload",
            None,
        ),
        ("s3.upload_part", Kind::Ranged, "s3:UploadPart", None),
        (
            "s3.upload_part.streamed",
            Kind::Streamed,
            "s3:UploadPart",
            None,
        ),
        (
            "s3.complete",
            Kind::Ranged,
            "s3:CompleteMultipartUpload",
            None,
        ),
        (
            "s3.complete.streamed",
            Kind::Streamed,
            "s3:CompleteMultipartUpload",
            None,
        ),
        ("s3.list_parts", Kind::Resumed, "s3:ListParts", None),
    ]);
    for (name, kind) in [
        ("s3.complete/error200", Kind::Ranged),
        ("s3.complete.streamed/error200", Kind::Streamed),
    ] {
        for forward in [false, true] {
            all.push(cell(
                &format!("{name}-forward={forward}"),
                kind,
                "s3:CompleteMultipartUpload",
                None,
                Fault::Error200 { forward },
            ));
        }
    }
    // A PutObject applied with its reply lost, and the HEAD that checks for
    // the object failing too: the retry must still find the object.
    for (class, fault) in [
        (
            "error",
            Fault::Error {
                status: None,
                code: None,
            },
        ),
        ("throttle", Fault::Throttle),
    ] {
        let mut both = cell(
            &format!("s3.head_after_lost_put/{class}"),
            Kind::Small,
            "s3:HeadObject",
            None,
            fault,
        );
        both.rules.insert(
            0,
            Rule::new("s3:PutObject", Fault::Lost)
                .times(1)
                .id("lost put"),
        );
        all.push(both);
    }
    // Without s3:ListBucket (the stack's policy) S3 answers HEAD of a
    // missing object with 403: that is "not stored yet", not a failure.
    let mut forbidden = cell(
        "s3.head_403_is_missing",
        Kind::Small,
        "s3:HeadObject",
        None,
        Fault::Error {
            status: Some(403),
            code: Some("AccessDenied".into()),
        },
    );
    forbidden.rules[0].count = None;
    forbidden.rules.insert(
        0,
        Rule::new(
            "s3:PutObject",
            Fault::Error {
                status: None,
                code: None,
            },
        )
        .times(1),
    );
    all.push(forbidden);
    run_cells(all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_faults_on_every_write_of_a_job_neither_fail_nor_double_it() {
    run_cells(cells(&[
        (
            "ddb.claim",
            Kind::Small,
            "dynamodb:UpdateItem",
            Some("claim_token"),
        ),
        (
            "ddb.renew",
            Kind::Slow,
            "dynamodb:UpdateItem",
            Some(":done"),
        ),
        (
            "ddb.succeed",
            Kind::Small,
            "dynamodb:UpdateItem",
            Some(":succeeded"),
        ),
        (
            "ddb.record_failure",
            Kind::Missing,
            "dynamodb:UpdateItem",
            Some("#error_kind"),
        ),
        (
            "ddb.mark_destination",
            Kind::Ranged,
            "dynamodb:PutItem",
            Some("dest#"),
        ),
        (
            "ddb.upload_marker",
            Kind::Ranged,
            "dynamodb:PutItem",
            Some("upload#"),
        ),
        (
            "ddb.checkpoint",
            Kind::Ranged,
            "dynamodb:UpdateItem",
            Some("#checkpointed_at"),
        ),
        (
            "ddb.part_checksum",
            Kind::Ranged,
            "dynamodb:PutItem",
            Some("#part#"),
        ),
        (
            "ddb.resume_checksums",
            Kind::Resumed,
            "dynamodb:BatchGetItem",
            None,
        ),
        (
            "ddb.record_resume",
            Kind::Resumed,
            "dynamodb:UpdateItem",
            Some("#bytes_reused"),
        ),
        (
            "ddb.reject",
            Kind::Poison,
            "dynamodb:UpdateItem",
            Some(":rejected"),
        ),
    ]))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_outages_longer_than_the_sdk_retries_cost_at_most_an_attempt() {
    // Twelve failures in a row outlast the SDK's six tries: ferry's own
    // patience (claim loop, journal and record writes) must carry the job.
    // A lease may lapse meanwhile — then the job is resumed by a later
    // attempt, but never failed, dead-lettered or stored twice.
    let outage = Fault::Error {
        status: None,
        code: None,
    };
    let mut all = Vec::new();
    for (site, kind, op, matching) in [
        (
            "outage.claim",
            Kind::Small,
            "dynamodb:UpdateItem",
            "claim_token",
        ),
        (
            "outage.succeed",
            Kind::Small,
            "dynamodb:UpdateItem",
            ":succeeded",
        ),
        (
            "outage.checkpoint",
            Kind::Ranged,
            "dynamodb:UpdateItem",
            "#checkpointed_at",
        ),
        (
            "outage.mark_destination",
            Kind::Ranged,
            "dynamodb:PutItem",
            "dest#",
        ),
        ("outage.renew", Kind::Slow, "dynamodb:UpdateItem", ":done"),
        (
            "outage.resume_checksums",
            Kind::Resumed,
            "dynamodb:BatchGetItem",
            "#part#",
        ),
    ] {
        let mut c = cell(site, kind, op, Some(matching), outage.clone());
        c.rules[0].count = Some(12);
        c.max_attempts = 3;
        all.push(c);
    }
    run_cells(all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqs_faults_never_lose_or_repeat_a_job() {
    run_cells(cells(&[
        ("sqs.receive", Kind::Small, "sqs:ReceiveMessage", None),
        ("sqs.delete", Kind::Small, "sqs:DeleteMessage", None),
        (
            "sqs.extend_visibility",
            Kind::Slow,
            "sqs:ChangeMessageVisibility",
            None,
        ),
        ("sqs.dead_letter", Kind::Poison, "sqs:SendMessage", None),
    ]))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_give_up_whose_abort_fails_leaves_an_upload_gc_finds() {
    // The abort fails for longer than the engine retries it (and the worker
    // tries once more): the upload stays until the gc sweep, which must
    // place it through the upload# (checkpointed) or dest# (streamed) item.
    let mut all = Vec::new();
    for (name, kind) in [
        ("s3.abort_on_give_up", Kind::WrongDigest),
        ("s3.abort_on_give_up.streamed", Kind::WrongDigestStreamed),
    ] {
        for (class, fault) in classes() {
            let mut c = cell(
                &format!("{name}/{class}"),
                kind,
                "s3:AbortMultipartUpload",
                None,
                fault,
            );
            c.rules[0].count = Some(40);
            all.push(c);
        }
    }
    run_cells(all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttling_storms_delay_jobs_but_fail_none() {
    let storm = |name: &str, ops: &str, kind: Kind, secs: f64| Cell {
        name: name.to_owned(),
        kind,
        rules: vec![Rule::new(ops, Fault::Throttle).id(name).window(0.0, secs)],
        faulted_op: match ops {
            // The limiter paces the throttled Create: the storm is over
            // before a part is sent.
            "s3:*" => "s3:CreateMultipartUpload".to_owned(),
            _ => "dynamodb:UpdateItem".to_owned(),
        },
        max_attempts: 1,
        upload_checksum: UploadChecksum::default(),
    };
    // S3 throttling never costs an attempt. A DynamoDB storm as long as ¾
    // of the lease (23 s of 30 s) may: renewals fail, so the worker must
    // stop writing (safety first) and the job resumes in a later attempt —
    // delayed, never failed.
    let mut dynamodb = storm("storm.dynamodb", "dynamodb:*", Kind::Ranged, 23.0);
    dynamodb.max_attempts = 2;
    run_cells(vec![
        storm("storm.s3", "s3:*", Kind::Ranged, 20.0),
        dynamodb,
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_released_job_whose_release_write_fails_is_still_resumed() {
    let mut all = Vec::new();
    for (class, fault) in classes() {
        let name = format!("ddb.release/{class}");
        all.push(Cell {
            name: name.clone(),
            kind: Kind::Resumed,
            rules: vec![
                Rule::new("dynamodb:UpdateItem", fault)
                    .matching("#status = :queued, #updated_at")
                    .times(8)
                    .id(&name),
            ],
            faulted_op: "dynamodb:UpdateItem".to_owned(),
            max_attempts: 2,
            upload_checksum: UploadChecksum::default(),
        });
    }
    // The release happens in the first phase, so its rules go in first.
    for cell in all {
        let outcome = released_with_faults(cell).await;
        assert!(outcome.is_ok(), "{outcome:?}");
    }
}

/// Like [`run_cell`] for `Kind::Resumed`, but with the rules in place while
/// the first worker releases the job.
async fn released_with_faults(cell: Cell) -> Result<(), String> {
    let f = Faulty::new().await;
    let job = "job";
    let data = test_bytes(cell.kind.size(), 7);
    let origin = ferry_testkit::Origin::start(data.clone(), cell.kind.behavior()).await;
    f.stack
        .send(&f.stack.queue, &f.stack.message(job, &origin.url("f"), job))
        .await;
    f.proxy.set_rules(cell.rules.clone());
    let first = f.worker(Duration::ZERO).await;
    f.stack
        .wait_for_parts(job, 1, Duration::from_secs(30))
        .await;
    first.stop().await;
    let worker = f.worker(Duration::from_secs(10)).await;
    let record = f.stack.wait_final(job, Duration::from_secs(120)).await;
    worker.stop().await;
    if f.proxy.faults(&cell.faulted_op).is_empty() {
        return Err(format!("{}: no fault injected", cell.name));
    }
    if text(&record, "status") != "succeeded"
        || f.stack.object(job).await.as_deref() != Some(&data[..])
    {
        return Err(format!(
            "{}: {}",
            cell.name,
            ferry_worker::store::to_json(&record)
        ));
    }
    if f.completions(job) != 1 {
        return Err(format!(
            "{}: completed {} times",
            cell.name,
            f.completions(job)
        ));
    }
    Ok(())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_survives_a_lost_record_write_and_a_failed_enqueue() {
    let f = Faulty::new().await;
    let data = test_bytes(1000, 3);
    let origin = ferry_testkit::Origin::start(data.clone(), Behavior::default()).await;
    let url = origin.url("f");
    let lost = |id: &str| format!("s3://{}/{id}", f.stack.bucket);

    // The PutItem is applied but its reply lost: the SDK's retry finds the
    // record there. It is ours and still queued, so the message goes out.
    f.proxy
        .set_rules(vec![Rule::new("dynamodb:PutItem", Fault::Lost).times(1)]);
    let output = ferry_through(&f, &["submit", &url, &lost("a"), "--job-id", "a"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(f.proxy.faults("dynamodb:PutItem").len(), 1);
    assert_eq!(f.stack.queue_depth(&f.stack.queue).await, (1, 0));

    // SendMessage fails past the SDK's retries: the command fails and says
    // how to finish; the same command then enqueues the recorded job.
    f.proxy.set_rules(vec![Rule::new(
        "sqs:SendMessage",
        Fault::Error {
            status: None,
            code: None,
        },
    )]);
    let output = ferry_through(&f, &["submit", &url, &lost("b"), "--job-id", "b"]);
    assert_eq!(output.status.code(), Some(1));
    let said = stderr(&output);
    assert!(
        said.contains("recorded but could not be enqueued") && said.contains("--job-id b"),
        "{said}"
    );
    assert_eq!(f.stack.status("b").await.as_deref(), Some("queued"));
    f.proxy.clear_rules();
    let output = ferry_through(&f, &["submit", &url, &lost("b"), "--job-id", "b"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(f.stack.queue_depth(&f.stack.queue).await, (2, 0));

    // Both jobs run once; a finished job is never enqueued again, and an id
    // that names another job is refused.
    let worker = f.worker(Duration::from_secs(10)).await;
    for id in ["a", "b"] {
        let record = f.stack.wait_final(id, Duration::from_secs(60)).await;
        assert_eq!(text(&record, "status"), "succeeded");
        assert_eq!(number(&record, "attempts"), 1);
    }
    worker.stop().await;
    let output = ferry_through(&f, &["submit", &url, &lost("a"), "--job-id", "a"]);
    assert!(output.status.success());
    assert!(stderr(&output).contains("already exists (succeeded)"));
    assert_eq!(f.stack.queue_depth(&f.stack.queue).await, (0, 0));
    let output = ferry_through(&f, &["submit", &url, &lost("other"), "--job-id", "a"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("already names a different job"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_retry_survive_lost_replies() {
    let f = Faulty::new().await;
    let origin = ferry_testkit::Origin::start(
        test_bytes(crate::harness::PART * 4, 5),
        Behavior {
            chunk_delay: Some(Duration::from_millis(100)),
            ..crate::harness::slow()
        },
    )
    .await;
    let to = |id: &str| format!("s3://{}/{id}", f.stack.bucket);
    let lost_once = |text: &str| {
        Rule::new("dynamodb:UpdateItem", Fault::Lost)
            .matching(text)
            .times(1)
    };

    // A queued job's cancel, applied with its reply lost: the SDK's retry
    // fails the condition, and the token shows the write was ours.
    let output = ferry_through(&f, &["submit", &origin.url("q"), &to("q"), "--job-id", "q"]);
    assert!(output.status.success(), "{}", stderr(&output));
    f.proxy.set_rules(vec![lost_once("#cancel_token = :token")]);
    let output = ferry_through(&f, &["cancel", "q"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(f.proxy.faults("dynamodb:UpdateItem").len(), 1);
    assert_eq!(f.stack.status("q").await.as_deref(), Some("cancelled"));

    // Its retry, likewise: queued once, counted once.
    f.proxy.set_rules(vec![lost_once("#retry_token = :token")]);
    let output = ferry_through(&f, &["retry", "q"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(f.proxy.faults("dynamodb:UpdateItem").len(), 2);
    let record = f.stack.record("q").await.unwrap();
    assert_eq!(
        (text(&record, "status"), number(&record, "retried")),
        ("queued", 1)
    );

    // A running job: the request to its worker and the worker's final
    // `cancelled` write both lose their replies; the job still ends
    // cancelled, with no object and no open upload.
    f.proxy.set_rules(vec![
        lost_once("if_not_exists(#cancel_requested_by"),
        lost_once("REMOVE #lease_owner, #lease_expires, #cancel_requested_by"),
    ]);
    let worker = f.worker(Duration::from_secs(10)).await;
    let output = ferry_through(&f, &["submit", &origin.url("r"), &to("r"), "--job-id", "r"]);
    assert!(output.status.success(), "{}", stderr(&output));
    f.stack
        .wait_for_checkpoint("r", Duration::from_secs(60))
        .await;
    let output = ferry_through(&f, &["cancel", "r", "--wait"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(f.proxy.faults("dynamodb:UpdateItem").len(), 4);
    let record = f.stack.wait_final("r", Duration::from_secs(60)).await;
    assert_eq!(text(&record, "status"), "cancelled");
    assert_eq!(f.stack.object("r").await, None);
    // The retried `q` ran meanwhile; then no upload is left open.
    let record = f.stack.wait_final("q", Duration::from_secs(120)).await;
    assert_eq!(text(&record, "status"), "succeeded");
    assert_eq!(f.stack.open_uploads().await, 0);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_a_dynamodb_outage_in_one_readable_line() {
    let f = Faulty::new().await;
    f.proxy.set_rules(vec![Rule::new(
        "dynamodb:GetItem",
        Fault::Error {
            status: None,
            code: None,
        },
    )]);
    let output = ferry_through(&f, &["status", "nope"]);
    assert_eq!(output.status.code(), Some(1));
    let said = stderr(&output);
    assert!(
        said.contains("DynamoDB GetItem failed: InternalServerError"),
        "{said}"
    );
    assert!(!said.contains("ServiceError {"), "no Debug dump: {said}");
    assert!(
        f.proxy.faults("dynamodb:GetItem").len() >= 6,
        "the SDK retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_lease_cannot_be_renewed_never_writes_the_object() {
    // Renewals fail from the start; the download (two 64 KiB chunks, 6 s
    // apart) outlasts ¾ of a 6 s lease, so the single PutObject must not
    // be sent: another worker may own the job by then.
    let f = Faulty::new().await;
    let data = test_bytes(100 * 1024, 5);
    let origin = ferry_testkit::Origin::start(
        data.clone(),
        Behavior {
            chunk_delay: Some(Duration::from_secs(6)),
            ..Behavior::default()
        },
    )
    .await;
    f.proxy.set_rules(vec![
        Rule::new(
            "dynamodb:UpdateItem",
            Fault::Error {
                status: None,
                code: None,
            },
        )
        .matching(":done"),
    ]);
    f.stack
        .send(
            &f.stack.queue,
            &f.stack.message("job", &origin.url("f"), "job"),
        )
        .await;
    let mut config = f.stack.config();
    config.shutdown_grace = Duration::from_secs(1);
    config.engine.source.read_timeout = Duration::from_secs(10);
    let worker = spawn_worker_with(config, f.clients().await);
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert!(
        !f.proxy.faults("dynamodb:UpdateItem").is_empty(),
        "renewals were attempted"
    );
    assert!(
        f.proxy.forwarded("s3:PutObject").is_empty(),
        "a worker without a valid lease wrote the object"
    );
    assert_eq!(f.stack.object("job").await, None);
    // Once renewals work again the job completes, exactly once.
    f.proxy.clear_rules();
    origin.set(|b| b.chunk_delay = None);
    let record = f.stack.wait_final("job", Duration::from_secs(60)).await;
    worker.stop().await;
    assert_eq!(text(&record, "status"), "succeeded");
    assert_eq!(f.stack.object("job").await.as_deref(), Some(&data[..]));
    assert_eq!(f.completions("job"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_reports_aws_errors_and_aborts_nothing_it_cannot_place() {
    let f = Faulty::new().await;
    // An upload no ferry job started (no upload# or dest# item).
    let foreign = f
        .stack
        .s3
        .create_multipart_upload()
        .bucket(&f.stack.bucket)
        .key("foreign")
        .send()
        .await
        .unwrap();
    assert!(foreign.upload_id.is_some());
    let bucket = f.stack.bucket.clone();
    let gc = ["gc", "--bucket", bucket.as_str(), "--older-than", "0s"];
    for (op, said) in [
        (
            "s3:ListMultipartUploads",
            "S3 ListMultipartUploads failed: InternalError",
        ),
        (
            "dynamodb:GetItem",
            "DynamoDB GetItem failed: InternalServerError",
        ),
    ] {
        f.proxy.set_rules(vec![Rule::new(
            op,
            Fault::Error {
                status: None,
                code: None,
            },
        )]);
        let output = ferry_through(&f, &gc);
        assert_eq!(output.status.code(), Some(1), "{op}");
        assert!(stderr(&output).contains(said), "{op}: {}", stderr(&output));
        assert_eq!(f.stack.open_uploads().await, 1, "nothing aborted blindly");
    }
    f.proxy.clear_rules();
    let output = ferry_through(&f, &gc);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("not started by ferry"));
    assert_eq!(f.stack.open_uploads().await, 1, "a foreign upload is kept");
}
