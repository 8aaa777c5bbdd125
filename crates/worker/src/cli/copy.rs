//! `ferry copy URL s3://BUCKET/KEY`: the engine directly, no queue.

use std::sync::Arc;

use clap::Args;
use ferry_engine::source::{HeaderMap, Url};
use ferry_engine::{Destination, Engine, Expected, SourceRequest, TransferSpec};
use tokio_util::sync::CancellationToken;

use super::progress::BarObserver;
use crate::CliError;
use crate::config::{AwsArgs, EngineArgs};
use crate::redact::RedactedUrl;
use crate::s3url::S3Url;

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// http(s) URL of the source.
    pub url: Url,
    /// Destination, s3://BUCKET/KEY.
    pub destination: S3Url,
    /// Expected sha256 (hex); a mismatch fails and stores nothing.
    #[arg(long)]
    pub sha256: Option<String>,
    /// Expected md5 (hex).
    #[arg(long)]
    pub md5: Option<String>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub aws: AwsArgs,
}

pub async fn run(args: CopyArgs, cancel: CancellationToken) -> Result<(), CliError> {
    let config = args.engine.to_config().map_err(CliError::Config)?;
    let sdk = crate::preflight::aws().await?;
    let s3 = crate::aws_clients::s3(&sdk, &args.aws);
    // Before the source is contacted: a copy that cannot land fails now.
    crate::preflight::bucket(&sdk, &s3, &args.destination.bucket).await?;
    let engine = Engine::new(config, s3)
        .map_err(|err| CliError::Config(crate::config::ConfigError::one(err.to_string())))?;
    let spec = TransferSpec {
        source: SourceRequest {
            url: args.url.clone(),
            headers: HeaderMap::new(),
            headers_cross_origin: false,
        },
        destination: Destination {
            bucket: args.destination.bucket.clone(),
            key: args.destination.key.clone(),
            ..Destination::default()
        },
        expected: Expected {
            sha256: args.sha256.map(|h| h.to_ascii_lowercase()),
            md5: args.md5.map(|h| h.to_ascii_lowercase()),
            size: None,
        },
        max_bytes_per_sec: None,
    };
    let bar = Arc::new(BarObserver::new(args.quiet));
    let result = engine.transfer(&spec, bar.clone(), &cancel).await;
    bar.finish();
    let outcome = result.map_err(|err| CliError::Failed {
        kind: err.kind(),
        message: err.to_string(),
    })?;
    let secs = outcome.duration.as_secs_f64();
    out!(
        "copied {} -> {}: {} bytes in {:.2} s ({:.1} MB/s), {} parts, crc64nvme {}{}",
        RedactedUrl::new(&args.url),
        args.destination,
        outcome.size,
        secs,
        outcome.size as f64 / secs.max(1e-9) / 1e6,
        outcome.parts,
        outcome.checksum_crc64nvme,
        if outcome.checksum_confirmed_by_s3 {
            " (confirmed by S3)"
        } else {
            " (S3 reported none)"
        },
    );
    if outcome.integrity == ferry_engine::Integrity::Unframed {
        eprintln!(
            "warning: the source marked the body's end only by closing the connection, so a cut \
             connection would have looked the same: the length ({} bytes) is unverified",
            outcome.size
        );
    }
    Ok(())
}
