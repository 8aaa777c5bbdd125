//! `ferry-s3-sink`: the benchmarks' cheap S3 sink as a process (see
//! `ferry_testkit::s3_sink`). Prints `port N` once it listens, then serves
//! until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;

const USAGE: &str = "usage: ferry-s3-sink [--listen ADDR:PORT] ROOT";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Err(message) = run().await {
        eprintln!("ferry-s3-sink: {message}");
        std::process::exit(2);
    }
}

async fn run() -> Result<(), String> {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut root: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args
                    .next()
                    .ok_or(format!("--listen needs a value\n{USAGE}"))?;
                listen = value
                    .parse()
                    .map_err(|_| format!("--listen: not ADDR:PORT: {value}"))?;
            }
            _ if arg.starts_with('-') => return Err(format!("unknown argument {arg}\n{USAGE}")),
            _ => root = Some(PathBuf::from(arg)),
        }
    }
    let root = root.ok_or(format!("ROOT is required\n{USAGE}"))?;
    let bound = ferry_testkit::s3_sink::start(listen, root)
        .await
        .map_err(|err| format!("cannot listen on {listen}: {err}"))?;
    println!("port {}", bound.port());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|err| err.to_string())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
