//! `ferry`: parse arguments, set up logging, run, map errors to exit codes.

use std::io::IsTerminal as _;

use clap::Parser as _;
use ferry_worker::cli::{Cli, LogFormat};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ferry: cannot start the async runtime: {err}");
            return std::process::ExitCode::from(1);
        }
    };
    let cancel = CancellationToken::new();
    let result = runtime.block_on(async {
        let signals = tokio::spawn(cancel_on_signal(cancel.clone()));
        let result = ferry_worker::run(cli, cancel.clone()).await;
        signals.abort();
        result
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ferry: {err}");
            std::process::ExitCode::from(err.exit_code() as u8)
        }
    }
}

/// SIGTERM or SIGINT starts the one shutdown path: the root token. A second
/// signal exits at once (130), for a person who will not wait for a drain.
async fn cancel_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutdown requested");
    cancel.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("ferry: a second signal: exiting now");
    std::process::exit(ferry_worker::ExitCode::Interrupted as i32);
}

fn init_tracing(format: Option<LogFormat>) {
    // The SDK's own warnings (each provider a credentials chain tried, with
    // Debug dumps) stay out of the default output: ferry says in one line
    // what is wrong. `RUST_LOG=aws_config=debug` shows them.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,aws_config=error"));
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Text) => false,
        None => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
