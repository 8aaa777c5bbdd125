//! Proving the AWS set-up usable before any job or source is touched:
//! region, credentials, and (for the commands that need them) the queue,
//! table and bucket. A problem is one line saying what to set, and `main`
//! exits 64 (configuration), within a second or two even where no instance
//! metadata service answers.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::imds::region::ImdsRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_credential_types::provider::ProvideCredentials as _;
use aws_sdk_dynamodb::types::KeyType;

use crate::aws_error::readable;
use crate::config::ConfigError;
use crate::endpoints::{self, Service};

/// How long finding credentials may take: the environment and profiles
/// answer at once, ECS's endpoint in milliseconds; only instance metadata,
/// off EC2, would otherwise take several seconds to give up.
const CREDENTIALS_TIME: Duration = Duration::from_secs(3);
/// One try of the instance metadata service, off EC2 a closed door.
const IMDS_TIMEOUT: Duration = Duration::from_millis(500);

/// The AWS SDK configuration from the standard environment (`AWS_REGION`,
/// `AWS_ENDPOINT_URL` and its per-service forms, `AWS_PROFILE`, the
/// credentials chain), with instance
/// metadata asked once and briefly.
pub async fn load() -> SdkConfig {
    let imds = aws_config::imds::Client::builder()
        .connect_timeout(IMDS_TIMEOUT)
        .read_timeout(IMDS_TIMEOUT)
        .max_attempts(1)
        .build();
    let region = RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
        .or_else(ProfileFileRegionProvider::builder().build())
        .or_else(
            ImdsRegionProvider::builder()
                .imds_client(imds.clone())
                .build(),
        );
    let credentials = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
        .imds_client(imds)
        .build()
        .await;
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(region)
        .credentials_provider(credentials)
        .load()
        .await
}

/// [`load`], then proof that a region is set and credentials resolve.
pub async fn aws() -> Result<SdkConfig, ConfigError> {
    let sdk = load().await;
    if sdk.region().is_none() {
        return Err(ConfigError::one(
            "no AWS region: set AWS_REGION (e.g. us-east-1), or use a profile \
             (AWS_PROFILE) that has one",
        ));
    }
    let Some(provider) = sdk.credentials_provider() else {
        return Err(no_credentials("no credentials provider"));
    };
    match tokio::time::timeout(CREDENTIALS_TIME, provider.provide_credentials()).await {
        Ok(Ok(_)) => Ok(sdk),
        Ok(Err(err)) => Err(no_credentials(&crate::aws_error::root_cause(&err))),
        Err(_) => Err(no_credentials(
            "none found within 3 s, instance metadata included",
        )),
    }
}

fn no_credentials(why: &str) -> ConfigError {
    // The chain lists every provider it tried, one per line: the first line
    // says it; the last provider's own error is worth quoting.
    let first_line = why
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches(['.', ':']);
    let said = if first_line.starts_with("no credentials found") {
        String::new()
    } else {
        format!(" (the last one tried said: {first_line})")
    };
    ConfigError::one(format!(
        "no usable AWS credentials in the environment, a profile, or a task or instance \
         role{said}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run \
         with a task or instance role"
    ))
}

/// The queue exists (and is reachable). A queue without a redrive policy is
/// allowed, but warned about: a message that keeps failing would come back
/// for ever.
pub async fn queue(
    sdk: &SdkConfig,
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> Result<(), ConfigError> {
    use aws_sdk_sqs::types::QueueAttributeName;
    let output = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .customize()
        .config_override(aws_sdk_sqs::config::Config::builder().retry_config(quick_retry()))
        .send()
        .await;
    let output = match output {
        Ok(output) => output,
        Err(err) if passing_trouble(&err) => return unchecked("queue", url, &readable(&err)),
        Err(err) => {
            return Err(ConfigError::one(
                match err.as_service_error().map(|e| e.is_queue_does_not_exist()) {
                    Some(true) => format!("queue {url} does not exist: check FERRY_QUEUE_URL"),
                    _ => unusable(sdk, Service::Sqs, "GetQueueAttributes", &readable(&err)),
                },
            ));
        }
    };
    let has_redrive = output
        .attributes
        .is_some_and(|a| a.contains_key(&QueueAttributeName::RedrivePolicy));
    if !has_redrive {
        tracing::warn!(
            queue = url,
            "the queue has no redrive policy: a message that keeps failing is received for ever \
             (give it a dead-letter queue; see docs/deploy.md)"
        );
    }
    Ok(())
}

/// The table exists with ferry's key: `job_id`, a string, alone.
pub async fn table(
    sdk: &SdkConfig,
    dynamodb: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Result<(), ConfigError> {
    let output = dynamodb
        .describe_table()
        .table_name(name)
        .customize()
        .config_override(aws_sdk_dynamodb::config::Config::builder().retry_config(quick_retry()))
        .send()
        .await;
    let output = match output {
        Ok(output) => output,
        Err(err) if passing_trouble(&err) => return unchecked("table", name, &readable(&err)),
        Err(err) => {
            return Err(ConfigError::one(
                match err
                    .as_service_error()
                    .map(|e| e.is_resource_not_found_exception())
                {
                    Some(true) => format!("table {name} does not exist: check FERRY_TABLE"),
                    _ => unusable(sdk, Service::DynamoDb, "DescribeTable", &readable(&err)),
                },
            ));
        }
    };
    let keys: Vec<(String, KeyType)> = output
        .table
        .and_then(|t| t.key_schema)
        .unwrap_or_default()
        .into_iter()
        .map(|k| (k.attribute_name, k.key_type))
        .collect();
    if keys != [("job_id".to_owned(), KeyType::Hash)] {
        let shown: Vec<String> = keys
            .iter()
            .map(|(n, k)| format!("{n} {}", k.as_str()))
            .collect();
        return Err(ConfigError::one(format!(
            "table {name} has key ({}), not ferry's (job_id HASH): check FERRY_TABLE",
            shown.join(", ")
        )));
    }
    Ok(())
}

/// The destination bucket exists. A 403 (no `s3:ListBucket`, as the stack's
/// role has) proves nothing either way and passes.
pub async fn bucket(
    sdk: &SdkConfig,
    s3: &aws_sdk_s3::Client,
    name: &str,
) -> Result<(), ConfigError> {
    let check = s3
        .head_bucket()
        .bucket(name)
        .customize()
        .config_override(aws_sdk_s3::config::Config::builder().retry_config(quick_retry()))
        .send()
        .await;
    match check {
        Ok(_) => Ok(()),
        Err(err) => {
            let status = err.raw_response().map(|r| r.status().as_u16());
            match status {
                Some(403) => Ok(()),
                Some(404) => Err(ConfigError::one(format!("bucket {name} does not exist"))),
                _ if passing_trouble(&err) => unchecked("bucket", name, &readable(&err)),
                _ => Err(ConfigError::one(unusable(
                    sdk,
                    Service::S3,
                    "HeadBucket",
                    &readable(&err),
                ))),
            }
        }
    }
}

/// Trouble that passes — throttling, a 5xx, a timeout, a reset connection —
/// says nothing about the set-up: a worker restarted in a throttling storm
/// must start, and its own patient calls ride it out. Only a definite answer
/// (no such queue or table, a wrong key, access denied, nothing listening at
/// the endpoint, an unknown host) stops the start.
fn passing_trouble<E>(
    err: &aws_sdk_sqs::error::SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
) -> bool
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_sqs::error::{ProvideErrorMetadata as _, SdkError};
    match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(failure) => {
            let cause = crate::aws_error::root_cause(err).to_ascii_lowercase();
            !failure.is_user()
                && !cause.contains("refused")
                && !cause.contains("dns")
                && !cause.contains("lookup")
        }
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            status >= 500
                || status == 429
                || err.code().is_some_and(|code| {
                    code.contains("Throttl")
                        || code.contains("ThroughputExceeded")
                        || code.contains("LimitExceeded")
                        || code == "SlowDown"
                })
        }
        _ => false,
    }
}

/// A check that could not be made now: said, and passed.
fn unchecked(what: &str, name: &str, error: &str) -> Result<(), ConfigError> {
    tracing::warn!(
        what,
        name,
        error,
        "could not check it at start-up (AWS trouble that passes); going on"
    );
    Ok(())
}

/// A start-up check answers quickly: one retry, not the minutes of patience
/// the running worker's calls get.
fn quick_retry() -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::standard().with_max_attempts(2)
}

fn unusable(sdk: &SdkConfig, service: Service, operation: &str, error: &str) -> String {
    let check = match endpoints::endpoint(sdk, service) {
        Some(endpoint) => format!("check {} and the network", endpoint.set_by),
        None => "check the network route to AWS (NAT or VPC endpoints) and the task's IAM role"
            .to_owned(),
    };
    format!(
        "{} {operation} through {} failed: {error} — {check}",
        service.name(),
        endpoints::describe(sdk, service)
    )
}
