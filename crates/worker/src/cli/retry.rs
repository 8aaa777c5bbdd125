//! `ferry retry`: put failed or cancelled jobs back on the queue under their
//! own ids, with a fresh attempt budget (`--force` for succeeded ones).

use std::time::Duration;

use clap::Args;

use crate::CliError;
use crate::cli::jobs::{parse_status, since_text};
use crate::listing::{Filter, Listing};
use crate::queue::Queue;
use crate::store::{self, JobStore, Requeue, Status};

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Jobs to retry; or choose them with `--status`.
    #[arg(required_unless_present = "status", conflicts_with = "status")]
    pub job_ids: Vec<String>,
    /// Retry every job in this status (failed, cancelled; succeeded with --force).
    #[arg(long, value_delimiter = ',', value_parser = parse_status)]
    pub status: Vec<Status>,
    /// With `--status`: only jobs that ended within this long (e.g. `1h`).
    #[arg(long, value_parser = humantime::parse_duration, requires = "status")]
    pub since: Option<Duration>,
    /// Also retry jobs that succeeded (their object is copied again).
    #[arg(long)]
    pub force: bool,
    /// Who retries, kept in the record (default: $USER@$HOSTNAME).
    #[arg(long)]
    pub by: Option<String>,
    #[command(flatten)]
    pub jobs: crate::config::JobQueueArgs,
    #[command(flatten)]
    pub aws: crate::config::AwsArgs,
}

pub async fn run(args: RetryArgs) -> Result<(), CliError> {
    for status in &args.status {
        let allowed = matches!(status, Status::Failed | Status::Cancelled)
            || (*status == Status::Succeeded && args.force);
        if !allowed {
            return Err(CliError::Usage(format!(
                "--status {} cannot be retried (failed, cancelled; succeeded with --force)",
                status.as_str()
            )));
        }
    }
    let sdk = crate::preflight::aws().await?;
    let client = crate::aws_clients::dynamodb(&sdk, &args.aws);
    let store = JobStore::new(client.clone(), &args.jobs.table);
    let queue = Queue::new(crate::aws_clients::sqs(&sdk, &args.aws));
    let queue_url = args.jobs.queue_urls.first().map_or("", String::as_str);
    let by = crate::cli::cancel::actor(args.by.as_deref());
    let mut tally = Tally::default();
    if args.status.is_empty() {
        for job_id in &args.job_ids {
            retry_one(
                &store, &queue, queue_url, job_id, &by, args.force, &mut tally,
            )
            .await?;
        }
    } else {
        let filter = Filter {
            statuses: args.status.clone(),
            since: since_text(args.since),
        };
        let mut listing = Listing::new(client, &args.jobs.table, &filter);
        while let Some(record) = listing.next().await.map_err(|err| CliError::Failed {
            kind: "store_error",
            message: err.to_string(),
        })? {
            if let Some(job_id) = store::JobView::of(&record).job_id() {
                retry_one(
                    &store, &queue, queue_url, job_id, &by, args.force, &mut tally,
                )
                .await?;
            }
        }
    }
    eprintln!("retried {}, not retried {}", tally.retried, tally.refused);
    if tally.refused > 0 {
        return Err(CliError::Failed {
            kind: "not_retried",
            message: format!("{} jobs were not retried", tally.refused),
        });
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    retried: u64,
    refused: u64,
}

async fn retry_one(
    store: &JobStore,
    queue: &Queue,
    queue_url: &str,
    job_id: &str,
    by: &str,
    force: bool,
    tally: &mut Tally,
) -> Result<(), CliError> {
    let token = uuid::Uuid::new_v4().to_string();
    let outcome = store
        .requeue(job_id, by, force, &token)
        .await
        .map_err(|err| CliError::Failed {
            kind: "store_error",
            message: format!("job {job_id}: {err}"),
        })?;
    let message = match outcome {
        Requeue::Queued { message } => message,
        // Queued already, perhaps by a retry whose message never went out:
        // a second message is harmless (the claim runs the job once).
        Requeue::StillQueued {
            message: Some(message),
        } => message,
        Requeue::StillQueued { message: None } | Requeue::MessageNotKept => {
            tally.refused += 1;
            eprintln!(
                "{job_id}: its URL or headers carry a secret, which ferry never stores; \
                 submit it again under a new job id"
            );
            return Ok(());
        }
        Requeue::NotRetryable(status) => {
            tally.refused += 1;
            let hint = if status == Status::Succeeded {
                " (--force copies it again)"
            } else {
                ""
            };
            eprintln!("{job_id}: {}; not retried{hint}", status.as_str());
            return Ok(());
        }
        Requeue::NotFound => {
            tally.refused += 1;
            eprintln!("{job_id}: no such job");
            return Ok(());
        }
    };
    queue
        .send(queue_url, &message)
        .await
        .map_err(|err| CliError::Failed {
            kind: "queue_error",
            message: format!(
                "job {job_id} is queued again but its message could not be sent ({err}); \
                 run `ferry retry {job_id}` again to send it"
            ),
        })?;
    tally.retried += 1;
    out!("{job_id}: queued");
    Ok(())
}
