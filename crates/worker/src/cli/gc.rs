//! `ferry gc --bucket B`: abort multipart uploads ferry started whose job will
//! not finish them (see `crate::gc` for the rules).

use std::time::Duration;

use clap::Args;

use crate::CliError;
use crate::gc::{self, Sweep, Verdict};
use crate::store::JobStore;

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Bucket to sweep (repeat or comma-separate for several).
    #[arg(long, value_delimiter = ',', required = true)]
    pub bucket: Vec<String>,
    /// Only uploads whose key starts with this prefix.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only uploads started longer ago than this (e.g. `6h`, `2d`).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub older_than: Duration,
    /// Print what would be aborted; abort nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, env = "FERRY_TABLE")]
    pub table: String,
    #[command(flatten)]
    pub aws: crate::config::AwsArgs,
}

pub async fn run(args: GcArgs) -> Result<(), CliError> {
    let sdk = crate::preflight::aws().await?;
    let store = JobStore::new(crate::aws_clients::dynamodb(&sdk, &args.aws), &args.table);
    let s3 = crate::aws_clients::s3(&sdk, &args.aws);
    let mut aborted = 0;
    let mut kept = 0;
    for bucket in &args.bucket {
        let sweep = Sweep {
            bucket: bucket.clone(),
            prefix: args.prefix.clone(),
            older_than: args.older_than,
            dry_run: args.dry_run,
        };
        let decisions = gc::sweep(&s3, &store, &sweep)
            .await
            .map_err(|err| CliError::Failed {
                kind: "gc_failed",
                message: err.to_string(),
            })?;
        for decision in decisions {
            let (word, reason) = match decision.verdict {
                Verdict::Abort(reason) if args.dry_run => ("would abort", reason),
                Verdict::Abort(reason) => {
                    aborted += 1;
                    ("aborted", reason)
                }
                Verdict::Keep(reason) => {
                    kept += 1;
                    ("kept", reason)
                }
            };
            out!(
                "{word:>11}  s3://{bucket}/{}  job {}: {reason}",
                decision.key,
                decision.job_id.as_deref().unwrap_or("-"),
            );
        }
    }
    out!("{aborted} upload(s) aborted, {kept} kept");
    Ok(())
}
