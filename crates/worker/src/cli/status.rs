//! `ferry status JOB_ID [--json]`: print a job record — for people by
//! default (`status_view`), every attribute with `--json`.

use clap::Args;

use crate::CliError;
use crate::store::{self, JobStore};

#[derive(Debug, Args)]
pub struct StatusArgs {
    pub job_id: String,
    /// Print the whole record as JSON (every attribute, internals included).
    #[arg(long)]
    pub json: bool,
    #[arg(long, env = "FERRY_TABLE")]
    pub table: String,
    #[command(flatten)]
    pub aws: crate::config::AwsArgs,
}

pub async fn run(args: StatusArgs) -> Result<(), CliError> {
    let sdk = crate::preflight::aws().await?;
    let store = JobStore::new(crate::aws_clients::dynamodb(&sdk, &args.aws), &args.table);
    let record = store
        .get(&args.job_id)
        .await
        .map_err(|err| CliError::Failed {
            kind: "store_error",
            message: err.to_string(),
        })?
        .ok_or_else(|| CliError::Failed {
            kind: "not_found",
            message: format!("no job with id {:?}", args.job_id),
        })?;
    print_record(&record, args.json);
    Ok(())
}

pub fn print_record(record: &store::Record, json: bool) {
    if json {
        out!("{}", store::to_json(record));
        return;
    }
    for line in crate::cli::status_view::lines(record, std::time::SystemTime::now()) {
        out!("{line}");
    }
}
