//! Where each AWS service's requests go.
//!
//! The SDKs send a service's calls to `AWS_ENDPOINT_URL_<SERVICE>`
//! (`_S3`, `_SQS`, `_DYNAMODB`) or a profile's `services` section when set,
//! else to `AWS_ENDPOINT_URL` or the profile's `endpoint_url`, else to AWS.
//! ferry asks the same sources through the same keys, so that its messages,
//! `ferry doctor` and S3's addressing style agree with where the requests
//! really go — S3 may be one store while SQS and DynamoDB are another.

use aws_config::SdkConfig;
use aws_types::service_config::ServiceConfigKey;

/// An AWS service ferry calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    S3,
    Sqs,
    DynamoDb,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::S3, Service::Sqs, Service::DynamoDb];

    /// The SDK's service id, which names its environment variable and its
    /// profile section.
    fn id(self) -> &'static str {
        match self {
            Service::S3 => "S3",
            Service::Sqs => "SQS",
            Service::DynamoDb => "DynamoDB",
        }
    }

    /// `AWS_ENDPOINT_URL_S3`, …: the variable that moves only this service.
    pub fn variable(self) -> &'static str {
        match self {
            Service::S3 => "AWS_ENDPOINT_URL_S3",
            Service::Sqs => "AWS_ENDPOINT_URL_SQS",
            Service::DynamoDb => "AWS_ENDPOINT_URL_DYNAMODB",
        }
    }

    /// The service an IAM action (`s3:PutObject`, `sqs:…`) belongs to.
    pub fn of_action(action: &str) -> Option<Service> {
        match action.split_once(':')?.0 {
            "s3" => Some(Service::S3),
            "sqs" => Some(Service::Sqs),
            "dynamodb" => Some(Service::DynamoDb),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Service::S3 => "S3",
            Service::Sqs => "SQS",
            Service::DynamoDb => "DynamoDB",
        }
    }
}

/// An endpoint that replaces AWS's for one service, and what set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    /// `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, or the profile.
    pub set_by: &'static str,
}

/// Where `service`'s calls go instead of AWS, if anywhere (the SDK's own
/// order: the service's setting first, then the shared one).
pub fn endpoint(sdk: &SdkConfig, service: Service) -> Option<Endpoint> {
    let own = sdk.service_config().and_then(|config| {
        let key = ServiceConfigKey::builder()
            .service_id(service.id())
            .env("AWS_ENDPOINT_URL")
            .profile("endpoint_url")
            .build()
            .ok()?;
        config.load_config(key)
    });
    let url = own
        .filter(|url| !url.trim().is_empty())
        .or_else(|| sdk.endpoint_url().map(str::to_owned))?;
    // The SDK's lookup answers with the shared setting too when the
    // service has none of its own; the variables say which one it was.
    let set_by = [service.variable(), "AWS_ENDPOINT_URL"]
        .into_iter()
        .find(|variable| env_set(variable))
        .unwrap_or("the profile");
    Some(Endpoint { url, set_by })
}

/// For messages: `AWS_ENDPOINT_URL_S3 http://…`, or `AWS`.
pub fn describe(sdk: &SdkConfig, service: Service) -> String {
    endpoint(sdk, service).map_or_else(
        || "AWS".to_owned(),
        |endpoint| format!("{} {}", endpoint.set_by, endpoint.url),
    )
}

/// Path-style addressing (`host/bucket/key`) unless told otherwise
/// (`FERRY_S3_PATH_STYLE`) whenever S3 is not AWS's: most other stores
/// and emulators have no DNS for `bucket.host`.
pub fn s3_path_style(sdk: &SdkConfig, told: Option<bool>) -> bool {
    told.unwrap_or_else(|| endpoint(sdk, Service::S3).is_some())
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| !value.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_name_their_service() {
        assert_eq!(Service::of_action("s3:PutObject"), Some(Service::S3));
        assert_eq!(
            Service::of_action("dynamodb:UpdateItem"),
            Some(Service::DynamoDb)
        );
        assert_eq!(Service::of_action("sqs:SendMessage"), Some(Service::Sqs));
        assert_eq!(Service::of_action("kms:Decrypt"), None);
        assert_eq!(Service::of_action("nothing"), None);
    }
}
