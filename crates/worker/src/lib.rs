//! The `ferry` binary's library: CLI commands, configuration, and (in later
//! modules) the SQS worker loop and the DynamoDB job store.
//!
//! `main.rs` stays thin: it parses arguments, sets up logging and maps
//! [`CliError`] onto the documented exit codes.

// Standard output is written through `cli`'s `out!`, which cannot panic when
// the reader has gone away; `println!` can.
#![deny(clippy::print_stdout)]

pub mod aws_clients;
pub mod aws_error;
pub mod bulk;
pub mod cli;
pub mod config;
pub mod endpoints;
pub mod gc;
pub mod job;
pub mod journal;
pub mod listing;
pub mod metrics;
pub mod object_args;
pub mod patience;
pub mod preflight;
pub mod protection;
pub mod queue;
pub mod redact;
pub mod results;
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
    /// SIGINT or SIGTERM stopped a command that does not drain (128 + SIGINT,
    /// as shells report it).
    Interrupted = 130,
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
    #[error("interrupted")]
    Interrupted,
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Config(_) => ExitCode::Config,
            Self::Failed { .. } => ExitCode::Failed,
            Self::Usage(_) => ExitCode::Usage,
            Self::Interrupted => ExitCode::Interrupted,
        }
    }
}

/// Runs one parsed command until it ends or `cancel` fires.
///
/// `copy`, `worker` and `submit` take the token and wind down their own way
/// (a transfer cancelled cleanly, jobs drained and released, a bulk run's
/// progress kept). The others are one request or a sweep of idempotent ones:
/// they stop at once, wherever they are (a re-run finishes what was left),
/// and say `interrupted` (exit 130).
pub async fn run(cli: cli::Cli, cancel: CancellationToken) -> Result<(), CliError> {
    match cli.command {
        cli::Command::Copy(args) => cli::copy::run(args, cancel).await,
        cli::Command::Worker(args) => cli::worker::run(args, cancel).await,
        cli::Command::Submit(args) if args.from.is_some() => {
            cli::submit_bulk::run(args, cancel).await
        }
        cli::Command::Submit(args) => cli::submit::run(args, cancel).await,
        cli::Command::Status(args) => until(&cancel, cli::status::run(args)).await,
        cli::Command::Jobs(args) => until(&cancel, cli::jobs::run(args)).await,
        cli::Command::Cancel(args) => until(&cancel, cli::cancel::run(args)).await,
        cli::Command::Retry(args) => until(&cancel, cli::retry::run(args)).await,
        cli::Command::Healthcheck(args) => until(&cancel, cli::healthcheck::run(args)).await,
        cli::Command::Gc(args) => until(&cancel, cli::gc::run(args)).await,
        cli::Command::Doctor(args) => until(&cancel, cli::doctor::run(args)).await,
    }
}

/// `command`, or [`CliError::Interrupted`] as soon as `cancel` fires.
async fn until(
    cancel: &CancellationToken,
    command: impl Future<Output = Result<(), CliError>>,
) -> Result<(), CliError> {
    tokio::select! {
        result = command => result,
        () = cancel.cancelled() => Err(CliError::Interrupted),
    }
}
