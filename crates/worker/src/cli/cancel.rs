//! `ferry cancel JOB_ID...`: stop jobs. A waiting job is cancelled at once;
//! a running one by its worker, within one heartbeat (its upload aborted).

use std::time::Duration;

use clap::Args;

use crate::CliError;
use crate::store::{self, Cancel, JobStore, Status};

#[derive(Debug, Args)]
pub struct CancelArgs {
    #[arg(required = true)]
    pub job_ids: Vec<String>,
    /// Wait until every job is final; exit 0 only if all ended `cancelled`.
    #[arg(long)]
    pub wait: bool,
    /// Who cancels, kept in the record (default: $USER@$HOSTNAME).
    #[arg(long)]
    pub by: Option<String>,
    #[arg(long, env = "FERRY_TABLE")]
    pub table: String,
    #[command(flatten)]
    pub aws: crate::config::AwsArgs,
    /// How often `--wait` reads the records.
    #[arg(long, default_value_t = 1)]
    pub poll_secs: u64,
}

/// Who is acting, for the record: `--by`, else `$USER@$HOSTNAME`.
pub fn actor(by: Option<&str>) -> String {
    if let Some(by) = by {
        return by.to_owned();
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty());
    match host {
        Some(host) => format!("{user}@{host}"),
        None => user,
    }
}

pub async fn run(args: CancelArgs) -> Result<(), CliError> {
    let sdk = crate::preflight::aws().await?;
    let store = JobStore::new(crate::aws_clients::dynamodb(&sdk, &args.aws), &args.table);
    let by = actor(args.by.as_deref());
    let mut unchanged = 0;
    let mut asked = Vec::new();
    for job_id in &args.job_ids {
        let token = uuid::Uuid::new_v4().to_string();
        let outcome = store
            .cancel(job_id, &by, &token)
            .await
            .map_err(|err| CliError::Failed {
                kind: "store_error",
                message: format!("job {job_id}: {err}"),
            })?;
        match outcome {
            Cancel::Cancelled => out!("{job_id}: cancelled"),
            Cancel::Requested => {
                out!("{job_id}: running; its worker stops it within one heartbeat");
            }
            Cancel::AlreadyFinal(status) => {
                unchanged += 1;
                eprintln!("{job_id}: already {}; nothing changed", status.as_str());
                continue;
            }
            Cancel::NotFound => {
                unchanged += 1;
                eprintln!("{job_id}: no such job");
                continue;
            }
        }
        asked.push(job_id.as_str());
    }
    let mut not_cancelled = Vec::new();
    if args.wait {
        let every = Duration::from_secs(args.poll_secs.max(1));
        for job_id in asked {
            let status = until_final(&store, job_id, every).await?;
            if status != Status::Cancelled {
                out!(
                    "{job_id}: ended {} before it could be cancelled",
                    status.as_str()
                );
                not_cancelled.push(job_id);
            }
        }
    }
    if unchanged > 0 || !not_cancelled.is_empty() {
        return Err(CliError::Failed {
            kind: "not_cancelled",
            message: format!(
                "{} of {} jobs were not cancelled",
                unchanged + not_cancelled.len(),
                args.job_ids.len()
            ),
        });
    }
    Ok(())
}

/// Reads the record every `every` until its status is final.
pub async fn until_final(
    store: &JobStore,
    job_id: &str,
    every: Duration,
) -> Result<Status, CliError> {
    loop {
        let record = store.get(job_id).await.map_err(|err| CliError::Failed {
            kind: "store_error",
            message: err.to_string(),
        })?;
        if let Some(status) = record
            .as_ref()
            .and_then(|r| store::JobView::of(r).status_text())
            .and_then(Status::parse)
            .filter(|s| s.is_final())
        {
            return Ok(status);
        }
        tokio::time::sleep(every).await;
    }
}
