//! Who the worker is to AWS: region, credentials (and which provider of the
//! SDK's chain found them), and an endpoint override. Never shows key
//! material beyond the last four characters of an access key id.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::{Credentials, ProvideCredentials as _};

use super::Check;
use crate::endpoints::{self, Service};

/// How long the credentials chain may take: off AWS, the instance metadata
/// lookup at its end can otherwise hang for a while.
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(3);

const CREDENTIALS_FIX: &str = "give the worker credentials: an ECS task role or instance profile on AWS, \
    else AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE \
    (off AWS, AWS_EC2_METADATA_DISABLED=true skips the instance metadata lookup)";

pub(super) fn region(sdk: &aws_config::SdkConfig) -> Check {
    match sdk.region() {
        Some(region) => Check::pass("region", format!("{region} (from {})", region_source())),
        None => Check::fail(
            "region",
            "no region in AWS_REGION, the profile or instance metadata",
            "set AWS_REGION (e.g. AWS_REGION=eu-west-1), or AWS_PROFILE to a profile with a region",
        ),
    }
}

/// The SDK reads `AWS_REGION`, then `AWS_DEFAULT_REGION`, then the profile,
/// then instance metadata.
fn region_source() -> &'static str {
    let set = |name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    if set("AWS_REGION") {
        "AWS_REGION"
    } else if set("AWS_DEFAULT_REGION") {
        "AWS_DEFAULT_REGION"
    } else {
        "the profile or instance metadata"
    }
}

/// Resolves credentials exactly as the worker's clients would.
pub(super) async fn credentials(sdk: &aws_config::SdkConfig) -> Check {
    let Some(provider) = sdk.credentials_provider() else {
        return Check::fail("credentials", "no credentials provider", CREDENTIALS_FIX);
    };
    match tokio::time::timeout(CREDENTIALS_TIMEOUT, provider.provide_credentials()).await {
        Err(_) => Check::fail(
            "credentials",
            format!(
                "the credentials chain gave no answer within {} s",
                CREDENTIALS_TIMEOUT.as_secs()
            ),
            CREDENTIALS_FIX,
        ),
        Ok(Err(err)) => {
            // The chain says this of every provider it tried; once is enough.
            const NOT_ENABLED: &str = "the credential provider was not enabled";
            let text = super::sdk_error::chain(&err).replace(&format!(": {NOT_ENABLED}"), "");
            let text = text
                .strip_prefix(&format!("{NOT_ENABLED}: "))
                .unwrap_or(&text);
            Check::fail("credentials", text, CREDENTIALS_FIX)
        }
        Ok(Ok(credentials)) => Check::pass("credentials", describe(&credentials)),
    }
}

/// `from Environment, access key …WXYZ, expires in 50 min`.
fn describe(credentials: &Credentials) -> String {
    let provider = provider_name(credentials);
    let mut text = format!("from {provider}");
    if let Some(meaning) = provider_meaning(&provider) {
        text.push_str(&format!(" ({meaning})"));
    }
    let key = credentials.access_key_id();
    // Real key ids are 20 characters; a short one (an emulator's `test`)
    // would be shown whole.
    if key.chars().count() >= 16 {
        let tail: String = key.chars().skip(key.chars().count() - 4).collect();
        text.push_str(&format!(", access key …{tail}"));
    }
    if credentials.session_token().is_some() {
        text.push_str(", temporary");
    }
    if let Some(expiry) = credentials.expiry() {
        match expiry.duration_since(SystemTime::now()) {
            Ok(left) => text.push_str(&format!(", expiring in {} min", left.as_secs() / 60)),
            Err(_) => text.push_str(", expired"),
        }
    }
    text
}

/// The name of the provider in the SDK's chain that found the credentials
/// (`EnvironmentVariable`, `ProfileFile`, `WebIdentityToken`, `EcsContainer`,
/// `IMDSv2`, …). aws-credential-types 1.3 keeps it private and
/// shows it only in `Debug`, so it is read from there; nothing else of that
/// text is kept.
fn provider_name(credentials: &Credentials) -> String {
    let debug = format!("{credentials:?}");
    debug
        .split_once("provider_name: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or_else(
            || "an unnamed provider".to_owned(),
            |(name, _)| name.to_owned(),
        )
}

/// What the default chain's provider names stand for.
fn provider_meaning(name: &str) -> Option<&'static str> {
    Some(match name {
        "EnvironmentVariable" => "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        "ProfileFile" => "the AWS_PROFILE or default profile",
        "WebIdentityToken" => "AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN",
        "EcsContainer" => "the ECS task role",
        "IMDSv2" => "the EC2 instance profile",
        _ => return None,
    })
}

/// Where each service's calls go, when not to AWS (informational): one line
/// per service, so a split set-up (S3 on one store, SQS and DynamoDB on
/// another) reads as such.
pub(super) fn endpoints(sdk: &aws_config::SdkConfig) -> Vec<Check> {
    Service::ALL
        .into_iter()
        .filter_map(|service| {
            let endpoint = endpoints::endpoint(sdk, service)?;
            Some(Check::pass(
                "endpoint",
                format!(
                    "{}: {} (from {}), not AWS",
                    service.name(),
                    endpoint.url,
                    endpoint.set_by
                ),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_provider_and_hides_the_key() {
        let credentials = Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "EnvironmentVariable",
        );
        let text = describe(&credentials);
        assert_eq!(
            text,
            "from EnvironmentVariable (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), access key …MPLE"
        );
        assert!(!text.contains("wJalr"));
    }
}
