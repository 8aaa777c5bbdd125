//! One readable line per AWS SDK error (operation, error code and message,
//! request id) and what kind of trouble it is, so each check can name its
//! fix. Never a `Debug` dump: raw responses can carry anything.

use std::error::Error;

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::operation::RequestId as _;

use crate::endpoints::Service;

/// What went wrong, as far as the fix is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trouble {
    /// No answer: endpoint, network path, DNS, timeout.
    Unreachable,
    NotFound,
    AccessDenied,
    /// AWS refused the credentials themselves (unknown key, bad signature, expired).
    BadCredentials,
    Other,
}

pub(super) struct Failure {
    /// `GetQueueAttributes: AWS.SimpleQueueService.NonExistentQueue: … (request id …)`.
    pub line: String,
    pub trouble: Trouble,
}

const BAD_CREDENTIALS_FIX: &str = "AWS refused the credentials: check that they are current \
    (not rotated or expired) and belong to this account";

impl Failure {
    /// The SDK error of one call (the three SDKs share these types).
    pub fn of<E>(operation: &str, err: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + Error + 'static,
    {
        let trouble = Trouble::of(err);
        let mut line = match (err, err.code()) {
            (SdkError::ServiceError(_), Some(code)) => match err.message() {
                Some(message) => format!("{operation}: {code}: {message}"),
                None => format!("{operation}: {code}"),
            },
            (SdkError::ServiceError(context), None) => {
                format!("{operation}: HTTP {}", context.raw().status().as_u16())
            }
            _ => format!("{operation}: {}", chain(err)),
        };
        if let Some(id) = err.request_id() {
            line.push_str(&format!(" (request id {id})"));
        }
        Self { line, trouble }
    }

    /// The fix: `not_found` is the caller's for a missing resource, `action`
    /// the IAM action the call needs.
    pub fn fix(&self, not_found: &str, action: &str) -> String {
        match self.trouble {
            Trouble::NotFound => not_found.to_owned(),
            Trouble::AccessDenied => format!("grant the worker's role {action}"),
            Trouble::BadCredentials => BAD_CREDENTIALS_FIX.to_owned(),
            Trouble::Unreachable => match overridden_endpoint(action) {
                Some((variable, endpoint)) => format!(
                    "no answer from {endpoint}: check that the service runs there, or correct {variable}"
                ),
                None => {
                    "AWS did not answer: check the network path (NAT gateway or VPC endpoints, \
                      security group egress on 443, DNS)"
                        .to_owned()
                }
            },
            Trouble::Other => "fix what the AWS error says".to_owned(),
        }
    }
}

impl Trouble {
    pub fn of<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Self {
        match err {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => Self::Unreachable,
            _ => err.code().map_or(Self::Other, classify),
        }
    }
}

fn classify(code: &str) -> Trouble {
    match code {
        "AWS.SimpleQueueService.NonExistentQueue"
        | "QueueDoesNotExist"
        | "ResourceNotFoundException"
        | "NoSuchBucket"
        | "NotFound" => Trouble::NotFound,
        "AccessDenied" | "AccessDeniedException" | "AuthorizationError" => Trouble::AccessDenied,
        "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "ExpiredToken"
        | "ExpiredTokenException" => Trouble::BadCredentials,
        _ => Trouble::Other,
    }
}

/// An error and its sources on one line, `Display` only.
pub(super) fn chain(err: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(err) = current {
        let text = one_line(&err.to_string());
        // Some errors repeat their source in their own text.
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

/// Multi-line texts (the credentials chain lists every provider it tried)
/// folded onto one line.
fn one_line(text: &str) -> String {
    let mut line = String::new();
    for part in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !line.is_empty() {
            line.push_str(if line.ends_with(':') { " " } else { "; " });
        }
        line.push_str(part);
    }
    line
}

/// The variable that sent `action`'s service elsewhere than AWS, and where:
/// the service's own (`AWS_ENDPOINT_URL_S3`) before the shared one.
fn overridden_endpoint(action: &str) -> Option<(&'static str, String)> {
    let own = Service::of_action(action).map(Service::variable);
    own.into_iter()
        .chain(["AWS_ENDPOINT_URL"])
        .find_map(|variable| {
            let value = std::env::var(variable).ok()?;
            (!value.trim().is_empty()).then_some((variable, value))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_lines() {
        assert_eq!(
            one_line("none found. Attempted:\n  A: not set\n  B: off\n"),
            "none found. Attempted: A: not set; B: off"
        );
    }
}
