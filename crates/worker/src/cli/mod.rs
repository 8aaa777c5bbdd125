//! The `ferry` command line: one binary, one subcommand per job.

/// `println!` without its panic. A reader that goes away (`ferry status J |
/// head -1`) makes every later write to stdout fail; `println!` turns that
/// into a crash. Commands print through this instead: what they do goes on,
/// and output nobody reads is dropped (`ferry jobs` stops listing then).
/// `#![deny(clippy::print_stdout)]` in lib.rs keeps `println!` out.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod cancel;
pub mod copy;
pub mod doctor;
pub mod gc;
pub mod healthcheck;
pub mod jobs;
pub mod progress;
pub mod retry;
pub mod status;
pub mod status_view;
pub mod submit;
pub mod submit_bulk;
pub mod worker;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Move files from HTTP(S) URLs into S3"
)]
pub struct Cli {
    /// Log format: `json` (default when not on a terminal) or `text`.
    #[arg(long, env = "FERRY_LOG_FORMAT", global = true)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy one URL into S3 now, with a progress bar (no queue).
    Copy(copy::CopyArgs),
    /// Run a worker: take jobs from SQS, record them in DynamoDB.
    Worker(worker::WorkerCommand),
    /// Enqueue a job and print its id (or every job of a file: `--from`);
    /// `--wait` follows it to the end.
    Submit(submit::SubmitArgs),
    /// Print a job record.
    Status(status::StatusArgs),
    /// List jobs newest first, by status and age; `--summary` counts them.
    Jobs(jobs::JobsArgs),
    /// Cancel jobs: waiting ones at once, running ones within a heartbeat.
    Cancel(cancel::CancelArgs),
    /// Queue failed or cancelled jobs again under their own ids.
    Retry(retry::RetryArgs),
    /// Abort multipart uploads ferry left behind whose job will not finish them.
    Gc(gc::GcArgs),
    Doctor(doctor::DoctorArgs),
    /// Exit 0 if the local worker is healthy (for container health checks).
    Healthcheck(healthcheck::HealthcheckArgs),
}
