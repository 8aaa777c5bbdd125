//! `ferry doctor`: checks a worker's configuration end to end and prints a
//! checklist, each problem with its fix; exits 0 only when every check passes.
//!
//! It reads exactly `ferry worker`'s settings (flags and `FERRY_*`), so it
//! can run in a worker's own environment, e.g. as a one-off ECS task with the
//! worker's task definition before a deployment. It owns the order of the
//! checks and how they are shown; the checks live in submodules by what they
//! look at. It changes nothing it does not undo: its writes are multipart
//! uploads per allowed bucket (the bucket probe; the checksum probe's, with
//! one-byte parts), aborted at once. It never touches messages or
//! job records, and publishes no result event.

mod bucket;
mod checksum;
mod identity;
mod local;
mod queue;
mod results;
mod sdk_error;
mod table;

use clap::Args;
use serde::Serialize;

use crate::CliError;
use crate::aws_clients::QuickClients;
use crate::cli::worker::WorkerCommand;

#[derive(Debug, Args)]
#[command(
    about = "Check a worker's configuration end to end: settings, AWS identity, queue, table, buckets",
    long_about = "Check a worker's configuration end to end and print a checklist (✓/✗ with the fix):\n\
        the worker's settings, region, credentials, the queue (redrive policy, maxReceiveCount\n\
        against FERRY_MAX_ATTEMPTS), the dead-letter queue, the table (key, TTL, job index), each\n\
        allowed bucket (a multipart upload is created and aborted under its prefix), the result\n\
        topic and queue when set (read, never published to), the metrics address and the source\n\
        policy.\n\n\
        Takes the same flags and FERRY_* variables as `ferry worker`, so it can run with a\n\
        worker's environment (docs/deploy.md: as a one-off ECS task). Exits 0 when every check\n\
        passes, 1 otherwise."
)]
// Missing queue URL or table must be reported as a check, not end the
// command before it starts: here they may be absent, and the worker's own
// validation then names them.
#[command(mut_arg("queue_urls", |arg| arg.required(false).default_value("").hide_default_value(true)))]
#[command(mut_arg("table", |arg| arg.required(false).default_value("").hide_default_value(true)))]
pub struct DoctorArgs {
    #[command(flatten)]
    pub worker: WorkerCommand,
    /// Also check this bucket (`bucket` or `bucket/prefix`; repeat or
    /// comma-separate), e.g. when FERRY_ALLOWED_BUCKETS is not set.
    #[arg(long = "bucket", value_delimiter = ',')]
    pub buckets: Vec<String>,
    /// Print one JSON object (`ok`, `checks`) instead of the checklist.
    #[arg(long)]
    pub json: bool,
}

/// One line of the checklist.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    /// What to do about it; only for failed checks.
    pub fix: Option<String>,
    /// Not run because an earlier check failed (shown as `-`, counts as not ok).
    #[serde(skip)]
    pub skipped: bool,
}

impl Check {
    pub fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            ok: true,
            detail: detail.into(),
            fix: None,
            skipped: false,
        }
    }

    pub fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
            skipped: false,
        }
    }

    fn skipped(name: &'static str, why: &str) -> Self {
        Self {
            name,
            ok: false,
            detail: format!("not checked: {why}"),
            fix: None,
            skipped: true,
        }
    }

    /// The checklist line: `✓ name: detail` or `✗ name: detail — fix`.
    pub fn line(&self) -> String {
        let mark = match (self.ok, self.skipped) {
            (true, _) => "✓",
            (false, true) => "-",
            (false, false) => "✗",
        };
        match &self.fix {
            Some(fix) => format!("{mark} {}: {} — {fix}", self.name, self.detail),
            None => format!("{mark} {}: {}", self.name, self.detail),
        }
    }
}

/// What `--json` prints.
#[derive(Serialize)]
struct Report<'a> {
    ok: bool,
    checks: &'a [Check],
}

pub async fn run(args: DoctorArgs) -> Result<(), CliError> {
    let checks = diagnose(&args).await;
    let ok = checks.iter().all(|c| c.ok);
    if args.json {
        let report = Report {
            ok,
            checks: &checks,
        };
        out!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        for check in &checks {
            out!("{}", check.line());
        }
    }
    if ok {
        return Ok(());
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    Err(CliError::Failed {
        kind: "doctor_failed",
        message: format!("{failed} of {} checks did not pass", checks.len()),
    })
}

/// Every check, in the order a reader fixes things: settings, identity, then
/// what the worker talks to.
async fn diagnose(args: &DoctorArgs) -> Vec<Check> {
    let mut checks = local::config(&args.worker);
    let plan = local::Plan::new(args);
    let sdk = crate::preflight::load().await;
    let region = identity::region(&sdk);
    let credentials = identity::credentials(&sdk).await;
    let missing = match (region.ok, credentials.ok) {
        (true, true) => None,
        (false, _) => Some("no region"),
        (true, false) => Some("no credentials"),
    };
    checks.push(region);
    checks.push(credentials);
    checks.extend(identity::endpoints(&sdk));
    match missing {
        None => checks.extend(aws_checks(&plan, &QuickClients::new(&sdk, &args.worker.aws)).await),
        Some(why) => {
            let results = [
                plan.result_topic.as_ref().map(|_| "result topic"),
                plan.result_queue.as_ref().map(|_| "result queue"),
            ];
            checks.extend(
                ["queue", "dlq", "table", "bucket"]
                    .into_iter()
                    .chain(results.into_iter().flatten())
                    .map(|name| Check::skipped(name, why)),
            );
        }
    }
    checks.push(local::metrics(&plan));
    checks.push(local::source_policy(&plan));
    checks
}

/// The AWS resources, looked at concurrently (each call has a short
/// timeout; on a black-holed network they wait together), shown in order.
async fn aws_checks(plan: &local::Plan, clients: &QuickClients) -> Vec<Check> {
    let queues = futures_util::future::join_all(
        plan.queues
            .iter()
            .map(|url| queue::queue(&clients.sqs, url, plan.max_attempts)),
    );
    let dlq = queue::dlq(&clients.sqs, plan.dlq.as_deref());
    let table = table::table(&clients.dynamodb, plan.table.as_deref());
    let buckets = bucket::buckets(&clients.s3, &plan.destinations, plan.any_bucket);
    let results = results::targets(
        &clients.sns,
        &clients.sqs,
        plan.result_topic.as_deref(),
        plan.result_queue.as_deref(),
    );
    let (queues, dlq, table, buckets, results) = tokio::join!(queues, dlq, table, buckets, results);
    // Probing checksums needs buckets that take uploads; a failed bucket
    // check already says what to fix first.
    let checksums = if buckets.iter().all(|check| check.ok) {
        checksum::checksums(&clients.s3, &plan.destinations, &plan.checksums).await
    } else {
        Vec::new()
    };
    queues
        .into_iter()
        .flatten()
        .chain([dlq])
        .chain(table)
        .chain(buckets)
        .chain(checksums)
        .chain(results)
        .collect()
}
