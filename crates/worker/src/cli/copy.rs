//! `ferry copy URL s3://BUCKET/KEY`: the engine directly, no queue. The
//! copy is the job `ferry submit` would send, parsed by the worker's own
//! parser, so its settings mean and are checked the same.

use std::sync::Arc;

use clap::Args;
use ferry_engine::source::Url;
use ferry_engine::{Engine, TransferSpec};
use tokio_util::sync::CancellationToken;

use super::progress::BarObserver;
use crate::config::{AwsArgs, EngineArgs};
use crate::object_args::StoredArgs;
use crate::redact::RedactedUrl;
use crate::s3url::S3Url;
use crate::{CliError, job};

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
    // Encryption and the bucket owner are the engine's defaults (`--sse`,
    // `--sse-kms-key-id`, `--sse-bucket-key`, `--expected-bucket-owner`),
    // which a copy that names none takes.
    #[command(flatten)]
    pub stored: StoredArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub aws: AwsArgs,
}

pub async fn run(args: CopyArgs, cancel: CancellationToken) -> Result<(), CliError> {
    let spec = spec(&args)?;
    let config = args.engine.to_config().map_err(CliError::Config)?;
    let sdk = crate::preflight::aws().await?;
    let s3 = crate::aws_clients::s3(&sdk, &args.aws);
    // Before the source is contacted: a copy that cannot land fails now.
    crate::preflight::bucket(&sdk, &s3, &args.destination.bucket).await?;
    let engine = Engine::new(config, s3)
        .map_err(|err| CliError::Config(crate::config::ConfigError::one(err.to_string())))?;
    let bar = Arc::new(BarObserver::new(args.quiet));
    let result = engine.transfer(&spec, bar.clone(), &cancel).await;
    bar.finish();
    let outcome = result.map_err(|err| CliError::Failed {
        kind: err.kind(),
        message: err.to_string(),
    })?;
    if outcome.skipped {
        out!(
            "skipped {} -> {}: already stored, {} bytes of this version of the source, crc64nvme {}",
            RedactedUrl::new(&args.url),
            args.destination,
            outcome.size,
            outcome.checksum_crc64nvme,
        );
        return Ok(());
    }
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

/// The job this copy is, checked like a queued one (a bad setting is a
/// usage error with the worker's reason, before anything is contacted).
fn spec(args: &CopyArgs) -> Result<TransferSpec, CliError> {
    let mut message = serde_json::json!({
        "version": job::SUPPORTED_VERSION,
        "job_id": "copy",
        "url": args.url.as_str(),
        "bucket": args.destination.bucket,
        "key": args.destination.key,
    });
    let mut expected = serde_json::Map::new();
    for (name, value) in [("sha256", &args.sha256), ("md5", &args.md5)] {
        if let Some(hex) = value {
            expected.insert(name.into(), hex.to_ascii_lowercase().into());
        }
    }
    if let Some(fields) = message.as_object_mut() {
        if !expected.is_empty() {
            fields.insert("expected".into(), expected.into());
        }
        args.stored.apply(fields).map_err(CliError::Usage)?;
    }
    job::parse(&message.to_string(), "copy")
        .map(|job| job.spec)
        .map_err(|rejection| CliError::Usage(rejection.reason))
}
