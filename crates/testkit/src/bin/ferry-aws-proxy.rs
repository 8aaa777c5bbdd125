//! `ferry-aws-proxy`: the fault-injecting AWS proxy as a process, for scripts
//! (`scripts/chaos`, `scripts/fleet-bench`).
//!
//! Prints `port N` once it listens, then serves until its standard input
//! closes or it gets SIGTERM/SIGINT. Rules come from `--rules FILE` (a JSON
//! list) and can be changed while it runs: `PUT/POST/DELETE /__proxy/rules`,
//! `GET /__proxy/log`, `GET /__proxy/stats`.

use std::path::PathBuf;

use ferry_testkit::aws_proxy::{AwsProxy, ProxyOptions, Rule};
use tokio::io::AsyncReadExt as _;

const USAGE: &str = "usage: ferry-aws-proxy --upstream URL [--s3-upstream URL] [--port N] [--seed N] [--rules FILE] [--log FILE]";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Err(message) = run().await;
    eprintln!("ferry-aws-proxy: {message}");
    std::process::exit(2);
}

/// Serves until told to stop, then exits the process; returns only errors.
async fn run() -> Result<std::convert::Infallible, String> {
    let mut options = ProxyOptions {
        upstream: String::new(),
        s3_upstream: None,
        seed: 0,
        port: 0,
        log_file: None,
    };
    let mut rules_file: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--upstream" => options.upstream = value()?,
            "--s3-upstream" => options.s3_upstream = Some(value()?),
            "--port" => options.port = value()?.parse().map_err(|_| "--port: not a port")?,
            "--seed" => options.seed = value()?.parse().map_err(|_| "--seed: not a number")?,
            "--rules" => rules_file = Some(PathBuf::from(value()?)),
            "--log" => options.log_file = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    if options.upstream.is_empty() {
        return Err(format!("--upstream is required\n{USAGE}"));
    }
    let rules: Vec<Rule> = match &rules_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|err| format!("{}: {err}", path.display()))?;
            serde_json::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?
        }
        None => Vec::new(),
    };
    let proxy = AwsProxy::start_with(options)
        .await
        .map_err(|err| format!("cannot listen: {err}"))?;
    proxy.set_rules(rules);
    println!("port {}", proxy.port());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|err| err.to_string())?;
    let stdin_closed = async {
        let mut stdin = tokio::io::stdin();
        let mut buffer = [0u8; 64];
        while matches!(stdin.read(&mut buffer).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        () = stdin_closed => {}
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    // Not a return: the runtime would wait for the blocking stdin read,
    // which never ends while the pipe's writer lives.
    std::process::exit(0)
}
