//! `ferry status JOB_ID [--json]`: print a job record.

use clap::Args;

use crate::CliError;
use crate::store::{self, JobStore};

#[derive(Debug, Args)]
pub struct StatusArgs {
    pub job_id: String,
    /// Print the record as JSON.
    #[arg(long)]
    pub json: bool,
    #[arg(long, env = "FERRY_TABLE")]
    pub table: String,
    #[command(flatten)]
    pub aws: crate::config::AwsArgs,
}

pub async fn run(args: StatusArgs) -> Result<(), CliError> {
    let sdk = crate::preflight::aws().await?;
    let store = JobStore::new(crate::config::dynamodb_client(&sdk, &args.aws), &args.table);
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
    let value = store::to_json(record);
    if json {
        println!("{value}");
        return;
    }
    if let serde_json::Value::Object(fields) = value {
        for (name, value) in fields {
            match value {
                serde_json::Value::String(text) => println!("{name:>18}: {text}"),
                other => println!("{name:>18}: {other}"),
            }
        }
    }
}
