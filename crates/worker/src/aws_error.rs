//! AWS SDK errors as one line a person can read: the service's error code
//! and message and the request id, or what kept the request from being
//! answered — never the SDK's Debug dump (which the logs' `debug` level and
//! structured fields keep for whoever needs it).

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::operation::RequestId;

type HttpResponse = aws_sdk_sqs::config::http::HttpResponse;

/// `Code: message (request id …)`, or `timed out`, or the root cause of a
/// request that was not answered (`Connection refused (os error 111)`).
pub fn readable<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    tracing::debug!(error = ?err, "AWS error in full");
    let described = match (err, err.code(), err.message()) {
        (_, Some(code), Some(message)) => format!("{code}: {message}"),
        (_, Some(code), None) => code.to_owned(),
        (SdkError::ServiceError(ctx), None, _) => {
            format!("HTTP {}", ctx.raw().status().as_u16())
        }
        (SdkError::TimeoutError(_), ..) => "timed out".to_owned(),
        (SdkError::DispatchFailure(_), ..) => format!("request not sent: {}", root_cause(err)),
        (SdkError::ResponseError(_), ..) => format!("unreadable response: {}", root_cause(err)),
        _ => root_cause(err),
    };
    match err.request_id() {
        Some(id) => format!("{described} (request id {id})"),
        None => described,
    }
}

/// The innermost error's message: what actually went wrong, without the
/// wrappers' generic words ("dispatch failure", "other").
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = err;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}
