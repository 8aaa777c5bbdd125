//! The `ferry` binary's library: CLI commands, configuration, and (in later
//! modules) the SQS worker loop and the DynamoDB job store.
//!
//! `main.rs` stays thin: it parses arguments, sets up logging and maps
//! [`CliError`] onto the documented exit codes.

pub mod aws_error;
pub mod bulk;
pub mod cli;
pub mod config;
pub mod disposal;
pub mod gc;
pub mod job;
pub mod journal;
pub mod listing;
pub mod metrics;
pub mod patience;
pub mod preflight;
pub mod protection;
pub mod queue;
pub mod redact;
pub mod runner;
pub mod s3url;
pub mod store;
pub mod worker;

use tokio_util::sync::CancellationToken;

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Success = 0,
    Failed = 1,
    Usage = 2,
    Config = 64,
}

/// Why a command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("{message} ({kind})")]
    Failed { kind: &'static str, message: String },
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Config(_) => ExitCode::Config,
            Self::Failed { .. } => ExitCode::Failed,
            Self::Usage(_) => ExitCode::Usage,
        }
    }
}

/// Runs one parsed command until it ends or `cancel` fires.
pub async fn run(cli: cli::Cli, cancel: CancellationToken) -> Result<(), CliError> {
    match cli.command {
        cli::Command::Copy(args) => cli::copy::run(args, cancel).await,
        cli::Command::Worker(args) => cli::worker::run(args, cancel).await,
        cli::Command::Submit(args) => cli::submit::run(args, cancel).await,
        cli::Command::Status(args) => cli::status::run(args).await,
        cli::Command::Jobs(args) => cli::jobs::run(args).await,
        cli::Command::Cancel(args) => cli::cancel::run(args).await,
        cli::Command::Retry(args) => cli::retry::run(args).await,
        cli::Command::Healthcheck(args) => cli::healthcheck::run(args).await,
        cli::Command::Gc(args) => cli::gc::run(args).await,
        cli::Command::Doctor(args) => cli::doctor::run(args).await,
    }
}
