//! `ferry worker`: parse settings, build clients, run the poll loop.

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::CliError;
use crate::config::{AwsArgs, ConfigError, EngineArgs, WorkerArgs};
use crate::protection::{ProtectionConfig, TaskProtection};
use crate::worker::{self, Clients};

#[derive(Debug, Args)]
pub struct WorkerCommand {
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub aws: AwsArgs,
}

pub async fn run(args: WorkerCommand, shutdown: CancellationToken) -> Result<(), CliError> {
    // Every configuration problem at once, before anything starts.
    let engine = args.engine.to_config();
    let config = match engine {
        Ok(engine) => args.worker.to_config(engine),
        Err(mut err) => {
            if let Err(worker_err) = args.worker.to_config(ferry_engine::EngineConfig::default()) {
                err.problems.extend(worker_err.problems);
            }
            Err(err)
        }
    };
    let config = match (config, args.aws.problems()) {
        (Ok(config), aws) if aws.is_empty() => config,
        (Ok(_), aws) => return Err(ConfigError { problems: aws }.into()),
        (Err(mut err), aws) => {
            err.problems.extend(aws);
            return Err(err.into());
        }
    };
    let protection = TaskProtection::from_env(ProtectionConfig::default())
        .map_err(|err| CliError::Config(ConfigError::one(err.to_string())))?;
    let sdk = crate::preflight::aws().await?;
    let clients = Clients {
        protection,
        s3: crate::config::s3_client(&sdk, &args.aws),
        sqs: crate::config::sqs_client(&sdk, &args.aws),
        dynamodb: crate::config::dynamodb_client(&sdk, &args.aws),
    };
    // Before the first receive: a worker that cannot record jobs takes none.
    for queue in &config.queues {
        crate::preflight::queue(&sdk, &clients.sqs, queue).await?;
    }
    if let Some(dlq) = &config.dlq_url {
        crate::preflight::queue(&sdk, &clients.sqs, dlq).await?;
    }
    crate::preflight::table(&sdk, &clients.dynamodb, &config.table).await?;
    worker::run(config, clients, shutdown)
        .await
        .map_err(|err| CliError::Config(ConfigError::one(err.to_string())))
}
