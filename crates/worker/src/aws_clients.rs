//! The one place AWS clients are built, from the SDK settings
//! ([`crate::preflight::load`]) and ferry's own ([`AwsArgs`]): the worker's
//! patient clients (adaptive retries, minutes of patience, SQS's long polls
//! inside the attempt timeout; S3 with the engine's settings), and the
//! quick ones `ferry doctor` answers with in seconds.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

use crate::config::AwsArgs;

/// How long the SDK waits to connect to any AWS endpoint.
const AWS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// SQS's longest long poll, added to a receive's attempt timeout.
const LONG_POLL: Duration = Duration::from_secs(20);

/// DynamoDB and SQS: the SDKs' adaptive retry mode (a client-side rate
/// limiter that backs off on throttling), patient backoff, and timeouts.
fn patient(args: &AwsArgs, extra_attempt_time: Duration) -> (RetryConfig, TimeoutConfig) {
    let attempt = Duration::from_secs(args.aws_attempt_timeout_secs) + extra_attempt_time;
    let retry = RetryConfig::adaptive()
        .with_max_attempts(6)
        .with_initial_backoff(Duration::from_millis(500))
        .with_max_backoff(Duration::from_secs(20));
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(AWS_CONNECT_TIMEOUT)
        .operation_attempt_timeout(attempt)
        .operation_timeout(Duration::from_secs(args.aws_operation_timeout_secs).max(attempt))
        .build();
    (retry, timeouts)
}

/// A DynamoDB client with ferry's retry mode and timeouts.
pub fn dynamodb(sdk: &aws_config::SdkConfig, args: &AwsArgs) -> aws_sdk_dynamodb::Client {
    let (retry, timeouts) = patient(args, Duration::ZERO);
    let config = aws_sdk_dynamodb::config::Builder::from(sdk)
        .retry_config(retry)
        .timeout_config(timeouts)
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// An SQS client with ferry's retry mode and timeouts (long polls included).
pub fn sqs(sdk: &aws_config::SdkConfig, args: &AwsArgs) -> aws_sdk_sqs::Client {
    let (retry, timeouts) = patient(args, LONG_POLL);
    let config = aws_sdk_sqs::config::Builder::from(sdk)
        .retry_config(retry)
        .timeout_config(timeouts)
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// An SNS client (result events) with ferry's retry mode and timeouts.
pub fn sns(sdk: &aws_config::SdkConfig, args: &AwsArgs) -> aws_sdk_sns::Client {
    let (retry, timeouts) = patient(args, Duration::ZERO);
    let config = aws_sdk_sns::config::Builder::from(sdk)
        .retry_config(retry)
        .timeout_config(timeouts)
        .build();
    aws_sdk_sns::Client::from_conf(config)
}

/// An S3 client set up the way the engine expects.
pub fn s3(sdk: &aws_config::SdkConfig, args: &AwsArgs) -> aws_sdk_s3::Client {
    let path_style = crate::endpoints::s3_path_style(sdk, args.s3_path_style);
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(AWS_CONNECT_TIMEOUT)
        .operation_attempt_timeout(Duration::from_secs(args.s3_attempt_timeout_secs))
        .build();
    let builder = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(path_style)
        .timeout_config(timeouts);
    aws_sdk_s3::Client::from_conf(ferry_engine::s3_config(&builder).build())
}

/// Longest wait for a quick client to connect to an AWS endpoint.
const QUICK_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest one try of a quick client's call may take.
const QUICK_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one quick call may take, its retry included.
const QUICK_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Clients with short timeouts and one retry, for answers in seconds
/// (`ferry doctor`; a worker's clients wait minutes for AWS to recover).
pub struct QuickClients {
    pub sqs: aws_sdk_sqs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    pub sns: aws_sdk_sns::Client,
}

impl QuickClients {
    pub fn new(sdk: &aws_config::SdkConfig, aws: &AwsArgs) -> Self {
        let retry = RetryConfig::standard().with_max_attempts(2);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(QUICK_CONNECT_TIMEOUT)
            .operation_attempt_timeout(QUICK_ATTEMPT_TIMEOUT)
            .operation_timeout(QUICK_CALL_TIMEOUT)
            .build();
        let sqs = aws_sdk_sqs::config::Builder::from(sdk)
            .retry_config(retry.clone())
            .timeout_config(timeouts.clone())
            .build();
        let dynamodb = aws_sdk_dynamodb::config::Builder::from(sdk)
            .retry_config(retry.clone())
            .timeout_config(timeouts.clone())
            .build();
        let sns = aws_sdk_sns::config::Builder::from(sdk)
            .retry_config(retry.clone())
            .timeout_config(timeouts.clone())
            .build();
        // The engine's S3 settings (checksums), so a probe upload is made
        // the way a job's is.
        let s3 = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(crate::endpoints::s3_path_style(sdk, aws.s3_path_style));
        let s3 = ferry_engine::s3_config(&s3)
            .retry_config(retry)
            .timeout_config(timeouts)
            .build();
        Self {
            sqs: aws_sdk_sqs::Client::from_conf(sqs),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb),
            s3: aws_sdk_s3::Client::from_conf(s3),
            sns: aws_sdk_sns::Client::from_conf(sns),
        }
    }
}
