//! AWS SDK errors as one line a person can read: the service's error code
//! and message and the request id, or what kept the request from being
//! answered — never the SDK's Debug dump (which the logs' `debug` level and
//! structured fields keep for whoever needs it). Also the one answer to
//! whether sending a DynamoDB or SQS request again could ever help
//! ([`permanent_reason`]).

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

/// Why no retry of this request can succeed, as a machine word of bounded
/// cardinality (a metric label), or `None` when one may.
///
/// Permanent: a request the service refuses as such — invalid or too large
/// (`ValidationException`, which includes "Item size has exceeded the
/// maximum allowed size"), unreadable, about a table or queue that does not
/// exist, or not allowed — and a request the SDK could not even build.
/// Everything else is worth waiting out: throttling, AWS errors (5xx),
/// timeouts, requests that were not sent or not answered, and any code not
/// named here (waiting costs time; giving up on an answer that would have
/// changed could lose a job).
pub fn permanent_reason<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&'static str> {
    match err {
        SdkError::ConstructionFailure(_) => Some("request_not_built"),
        SdkError::ServiceError(_) => match err.code()? {
            "ValidationException" => Some("validation"),
            "SerializationException" => Some("serialization"),
            "ResourceNotFoundException" => Some("resource_not_found"),
            "AccessDeniedException" => Some("access_denied"),
            "UnrecognizedClientException" => Some("unrecognized_client"),
            "ItemCollectionSizeLimitExceededException" => Some("item_collection_too_large"),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::operation::update_item::UpdateItemError;

    /// The decision reads the code only; the raw response plays no part.
    fn answered(code: &str) -> SdkError<UpdateItemError, ()> {
        let meta = ErrorMetadata::builder().code(code).message("m").build();
        SdkError::service_error(UpdateItemError::generic(meta), ())
    }

    #[test]
    fn refusals_are_permanent_and_trouble_is_not() {
        let cases = [
            (answered("ValidationException"), Some("validation")),
            (answered("SerializationException"), Some("serialization")),
            (
                answered("ResourceNotFoundException"),
                Some("resource_not_found"),
            ),
            (answered("AccessDeniedException"), Some("access_denied")),
            (
                answered("UnrecognizedClientException"),
                Some("unrecognized_client"),
            ),
            (answered("ProvisionedThroughputExceededException"), None),
            (answered("ThrottlingException"), None),
            (answered("RequestLimitExceeded"), None),
            (answered("TransactionConflictException"), None),
            (answered("InternalServerError"), None),
            (answered("ServiceUnavailable"), None),
            (answered("SomethingNew"), None),
            (SdkError::timeout_error("slow"), None),
            (
                SdkError::construction_failure("unbuildable"),
                Some("request_not_built"),
            ),
        ];
        for (err, want) in cases {
            assert_eq!(permanent_reason(&err), want, "{:?}", err.code());
        }
    }
}
