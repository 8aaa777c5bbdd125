//! `ferry submit URL s3://BUCKET/KEY`: record a queued job, enqueue it, and
//! optionally follow it to the end with a progress bar. With `--from FILE`
//! the arguments are the same (and its help is here) but the work is
//! `submit_bulk`'s; `lib.rs::run` picks which by whether `--from` is given.

use std::time::Duration;

use clap::Args;
use ferry_engine::source::Url;
use indicatif::ProgressBar;

use crate::CliError;
use crate::cli::progress::style_for;
use crate::cli::status::print_record;
use crate::job;
use crate::queue::Queue;
use crate::s3url::S3Url;
use crate::store::{self, JobStore, Status};

/// The part of `ferry submit --help` about `--from`.
const BULK_HELP: &str = "\
Bulk submit (--from FILE, `-` for standard input):
  JSON Lines: one job message per line, exactly as on the queue (docs/jobs.md).
  TsvHttpData-1.0 (with --dest s3://BUCKET/PREFIX/): first line `TsvHttpData-1.0`,
    then `URL[<TAB>size[<TAB>base64 MD5]]` per line; size and MD5 become
    expected.size and expected.md5; the key is PREFIX + host + path (percent-
    decoded; port and query ignored).
  A line without job_id gets one derived from its source and destination, so
  running the same file again submits nothing twice. Bad lines are reported on
  stderr by number and skipped; the rest is submitted. The summary (stdout):
  submitted, already present, re-enqueued (queued jobs whose message an
  interrupted earlier run may not have sent), bad, and the AWS calls made.
  Exit 0 when every line was good and enqueued (with --wait: and every job
  succeeded), 1 otherwise, 2 for a usage error.";

#[derive(Debug, Args)]
#[command(after_long_help = BULK_HELP)]
pub struct SubmitArgs {
    /// The source, http(s).
    #[arg(required_unless_present = "from")]
    pub url: Option<Url>,
    /// Where it goes: s3://BUCKET/KEY.
    #[arg(required_unless_present = "from")]
    pub destination: Option<S3Url>,
    /// Job id (default: a random UUID); resubmitting an id never runs it twice.
    #[arg(long, conflicts_with = "from")]
    pub job_id: Option<String>,
    /// Expected sha256 (hex) of the source.
    #[arg(long, conflicts_with = "from")]
    pub sha256: Option<String>,
    /// Submit every job of FILE (`-`: standard input): JSON Lines, one job
    /// message per line, or with --dest a TsvHttpData-1.0 URL list.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["url", "destination"])]
    pub from: Option<std::path::PathBuf>,
    /// Where the objects of a TsvHttpData-1.0 list go; each key is
    /// PREFIX + host + path of its URL.
    #[arg(
        long,
        value_name = "s3://BUCKET/PREFIX/",
        requires = "from",
        conflicts_with_all = ["url", "destination"]
    )]
    pub dest: Option<crate::bulk::naming::Destination>,
    #[command(flatten)]
    pub object: crate::object_args::ObjectArgs,
    /// Follow the job (with --from: every job of the file) to its end; exit 0
    /// only if it succeeded.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub jobs: crate::config::JobQueueArgs,
    #[command(flatten)]
    pub aws: crate::config::AwsArgs,
    /// How often `--wait` reads the record.
    #[arg(long, default_value_t = 1)]
    pub poll_secs: u64,
}

pub async fn run(
    args: SubmitArgs,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<(), CliError> {
    let (Some(url), Some(destination)) = (&args.url, &args.destination) else {
        return Err(CliError::Usage(
            "give URL and s3://BUCKET/KEY, or --from FILE".into(),
        ));
    };
    let job_id = args
        .job_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut message = serde_json::json!({
        "version": job::SUPPORTED_VERSION,
        "job_id": job_id,
        "url": url.as_str(),
        "bucket": destination.bucket,
        "key": destination.key,
    });
    if let Some(sha256) = &args.sha256 {
        message["expected"] = serde_json::json!({ "sha256": sha256 });
    }
    if let Some(fields) = message.as_object_mut() {
        args.object.apply(fields).map_err(CliError::Usage)?;
    }
    let body = message.to_string();
    // The worker's own validation, so a job the worker would reject is
    // refused here with the same reason.
    let job = job::parse(&body, &job_id).map_err(|r| CliError::Usage(r.reason))?;
    let sdk = crate::preflight::aws().await?;
    let store = JobStore::new(
        crate::aws_clients::dynamodb(&sdk, &args.aws),
        &args.jobs.table,
    );
    let queue = Queue::new(crate::aws_clients::sqs(&sdk, &args.aws));
    let failed = |kind: &'static str| {
        move |err: &dyn std::fmt::Display| CliError::Failed {
            kind,
            message: err.to_string(),
        }
    };
    let existing = store
        .create_queued(&job)
        .await
        .map_err(|e| failed("store_error")(&e))?;
    // A record that is still `queued` gets its message sent (again): our own
    // PutItem may have been applied with its reply lost, or an earlier submit
    // may have failed before SendMessage. A second message is harmless — the
    // claim lets only one run — while a missing one would leave the job queued
    // forever.
    let enqueue = match &existing {
        None => true,
        Some(record) => {
            let view = store::JobView::of(record);
            let same_job = view.url() == Some(job.shown_url.as_str())
                && view.bucket() == Some(job.spec.destination.bucket.as_str())
                && view.key() == Some(job.spec.destination.key.as_str());
            if !same_job {
                return Err(CliError::Failed {
                    kind: "job_id_taken",
                    message: format!("job id {job_id} already names a different job"),
                });
            }
            let status = view.status_text().unwrap_or("unknown");
            if status == Status::Queued.as_str() {
                true
            } else {
                eprintln!("job {job_id} already exists ({status}); not enqueued again");
                false
            }
        }
    };
    if enqueue {
        let queue_url = args.jobs.queue_urls.first().map_or("", String::as_str);
        queue
            .send(queue_url, &body)
            .await
            .map_err(|err| CliError::Failed {
                kind: "queue_error",
                message: format!(
                    "job {job_id} is recorded but could not be enqueued ({err}); \
                     run the same command with --job-id {job_id} to enqueue it"
                ),
            })?;
    }
    out!("{job_id}");
    if args.wait {
        let every = Duration::from_secs(args.poll_secs.max(1));
        tokio::select! {
            result = wait(&store, &job_id, every) => result?,
            () = cancel.cancelled() => {
                return Err(CliError::Failed {
                    kind: "interrupted",
                    message: format!("stopped waiting; job {job_id} continues (ferry status {job_id})"),
                });
            }
        }
    }
    Ok(())
}

/// Follows the record until it is final, with a progress bar on stderr.
async fn wait(store: &JobStore, job_id: &str, every: Duration) -> Result<(), CliError> {
    let bar = ProgressBar::new_spinner();
    let mut styled = false;
    loop {
        let record = store.get(job_id).await.map_err(|err| CliError::Failed {
            kind: "store_error",
            message: err.to_string(),
        })?;
        if let Some(record) = record {
            let view = store::JobView::of(&record);
            let status = view.status();
            let total = view.bytes_total();
            if !styled && total.is_some() {
                bar.set_style(style_for(total));
                styled = true;
            }
            if let Some(total) = total {
                bar.set_length(total);
            }
            bar.set_position(view.bytes_done().unwrap_or(0));
            bar.set_message(status.map_or("unknown", Status::as_str));
            if let Some(status) = status.filter(|s| s.is_final()) {
                bar.finish_and_clear();
                print_record(&record, false);
                return match status {
                    Status::Succeeded => Ok(()),
                    _ => Err(CliError::Failed {
                        kind: "job_failed",
                        message: format!(
                            "job {job_id} {}: {}",
                            status.as_str(),
                            view.error().unwrap_or("no reason recorded")
                        ),
                    }),
                };
            }
        }
        tokio::time::sleep(every).await;
    }
}
