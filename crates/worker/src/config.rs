//! Configuration: raw flag/env values (units in their names) turned into
//! validated typed settings at start-up. Every problem is reported at once.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ferry_engine::plan::MIB;
use ferry_engine::{EngineConfig, RetryPolicy, SourceConfig};

/// Problems found in the configuration; `main` exits 64 on these.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {}", .problems.join("; "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    pub fn one(problem: impl Into<String>) -> Self {
        Self {
            problems: vec![problem.into()],
        }
    }
}

/// Engine settings shared by `ferry copy` and `ferry worker`.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Preferred S3 part size in MiB (5..=5120); enlarged for objects that
    /// would need more than 10,000 parts.
    #[arg(long, env = "FERRY_PART_SIZE_MIB", default_value_t = 16)]
    pub part_size_mib: u64,
    /// Parts downloaded/uploaded at once per transfer (1..=64).
    #[arg(long, env = "FERRY_MAX_CONCURRENT_UPLOADS", default_value_t = 8)]
    pub max_concurrent_uploads: usize,
    /// Bytes of part buffers all transfers of this process may hold, in MiB.
    #[arg(long, env = "FERRY_MEMORY_BUDGET_MIB", default_value_t = 1024)]
    pub memory_budget_mib: u64,
    /// Longest wait for the next bytes from a source.
    #[arg(long, env = "FERRY_READ_TIMEOUT_SECS", default_value_t = 60)]
    pub read_timeout_secs: u64,
    #[arg(long, env = "FERRY_CONNECT_TIMEOUT_SECS", default_value_t = 10)]
    pub connect_timeout_secs: u64,
    /// Tries per request (the first included) before a part fails.
    #[arg(long, env = "FERRY_RETRY_ATTEMPTS", default_value_t = 6)]
    pub retry_attempts: u32,
    /// Extra PEM CA certificates to trust for HTTPS sources.
    #[arg(long, env = "FERRY_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
}

/// AWS settings beyond the standard AWS environment.
#[derive(Debug, Clone, Args)]
pub struct AwsArgs {
    /// Path-style S3 addressing (`endpoint/bucket/key`); on by default when
    /// `AWS_ENDPOINT_URL` points at an emulator.
    #[arg(long, env = "FERRY_S3_PATH_STYLE")]
    pub s3_path_style: Option<bool>,
}

impl EngineArgs {
    pub fn to_config(&self) -> Result<EngineConfig, ConfigError> {
        let mut problems = Vec::new();
        let extra_ca_pem = match &self.ca_bundle {
            Some(path) => match std::fs::read(path) {
                Ok(pem) => Some(pem),
                Err(err) => {
                    problems.push(format!("CA bundle {}: {err}", path.display()));
                    None
                }
            },
            None => None,
        };
        let config = EngineConfig {
            part_size: self.part_size_mib.saturating_mul(MIB),
            max_concurrent_parts: self.max_concurrent_uploads,
            memory_budget: usize::try_from(self.memory_budget_mib.saturating_mul(MIB))
                .unwrap_or(usize::MAX),
            retry: RetryPolicy {
                max_attempts: self.retry_attempts,
                ..RetryPolicy::default()
            },
            source: SourceConfig {
                read_timeout: Duration::from_secs(self.read_timeout_secs),
                connect_timeout: Duration::from_secs(self.connect_timeout_secs),
                extra_ca_pem,
                ..SourceConfig::default()
            },
            ..EngineConfig::default()
        };
        if let Err(err) = config.validate() {
            problems.push(err.to_string());
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// The AWS SDK configuration from the standard environment (`AWS_REGION`,
/// `AWS_ENDPOINT_URL`, profiles, the credentials chain).
pub async fn load_aws() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

/// An S3 client set up the way the engine expects.
pub fn s3_client(sdk: &aws_config::SdkConfig, args: &AwsArgs) -> aws_sdk_s3::Client {
    let path_style = args
        .s3_path_style
        .unwrap_or_else(|| sdk.endpoint_url().is_some());
    let builder = aws_sdk_s3::config::Builder::from(sdk).force_path_style(path_style);
    aws_sdk_s3::Client::from_conf(ferry_engine::s3_config(&builder).build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        engine: EngineArgs,
    }

    #[test]
    fn defaults_make_a_valid_engine_config() {
        let config = Probe::parse_from(["x"]).engine.to_config().unwrap();
        assert_eq!(config.part_size, 16 * MIB);
        assert_eq!(config.max_concurrent_parts, 8);
    }

    #[test]
    fn every_bad_value_is_reported() {
        let args = Probe::parse_from([
            "x",
            "--part-size-mib",
            "1",
            "--max-concurrent-uploads",
            "0",
            "--ca-bundle",
            "/nonexistent/ca.pem",
        ])
        .engine;
        let err = args.to_config().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("CA bundle"), "{text}");
        assert!(text.contains("part size"), "{text}");
        assert!(text.contains("concurrent"), "{text}");
    }
}
