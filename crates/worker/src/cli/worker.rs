//! `ferry worker`: parse settings, build clients, run the poll loop.

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::CliError;
use crate::config::{AwsArgs, ConfigError, EngineArgs, WorkerArgs, WorkerConfig};
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

impl WorkerCommand {
    /// The validated settings, or every problem with them at once (`ferry
    /// doctor` reports the same problems as checks).
    pub fn validate(&self) -> Result<WorkerConfig, ConfigError> {
        let config = match self.engine.to_config() {
            Ok(engine) => self.worker.to_config(engine),
            Err(mut err) => {
                if let Err(worker_err) =
                    self.worker.to_config(ferry_engine::EngineConfig::default())
                {
                    err.problems.extend(worker_err.problems);
                }
                Err(err)
            }
        };
        match (config, self.aws.problems()) {
            (Ok(config), aws) if aws.is_empty() => Ok(config),
            (Ok(_), aws) => Err(ConfigError { problems: aws }),
            (Err(mut err), aws) => {
                err.problems.extend(aws);
                Err(err)
            }
        }
    }
}

pub async fn run(args: WorkerCommand, shutdown: CancellationToken) -> Result<(), CliError> {
    // Every configuration problem at once, before anything starts.
    let config = args.validate()?;
    let protection = TaskProtection::from_env(ProtectionConfig::default())
        .map_err(|err| CliError::Config(ConfigError::one(err.to_string())))?;
    let sdk = crate::preflight::aws().await?;
    let clients = Clients {
        protection,
        s3: crate::aws_clients::s3(&sdk, &args.aws),
        sqs: crate::aws_clients::sqs(&sdk, &args.aws),
        dynamodb: crate::aws_clients::dynamodb(&sdk, &args.aws),
        sns: crate::aws_clients::sns(&sdk, &args.aws),
    };
    // Before the first receive: a worker that cannot record jobs takes none.
    for queue in &config.queues {
        crate::preflight::queue(&sdk, &clients.sqs, queue).await?;
    }
    if let Some(dlq) = &config.dlq_url {
        crate::preflight::queue(&sdk, &clients.sqs, dlq).await?;
    }
    if let Some(results) = &config.results.queue_url {
        crate::preflight::queue(&sdk, &clients.sqs, results).await?;
    }
    crate::preflight::table(&sdk, &clients.dynamodb, &config.table).await?;
    worker::run(config, clients, shutdown)
        .await
        .map_err(|err| CliError::Config(ConfigError::one(err.to_string())))
}
