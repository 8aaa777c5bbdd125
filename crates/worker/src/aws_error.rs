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
/// cardinality (a metric label), or `None` when one may. One table for
/// DynamoDB and SQS: their codes do not overlap in meaning.
///
/// Permanent: a request the service refuses as such — invalid or too large
/// (`ValidationException`, which includes "Item size has exceeded the
/// maximum allowed size"; SQS's `InvalidParameterValue`, also its answer to
/// a message past 256 KiB), unreadable, about a table or queue that does not
/// exist, with a receipt handle that is no longer valid, not allowed (IAM,
/// credentials, the queue's KMS key), or not supported — and a request the
/// SDK could not even build. Everything else is worth waiting out:
/// throttling (`RequestThrottled`, `KMS.ThrottlingException`, `OverLimit`),
/// AWS errors (5xx), timeouts, requests that were not sent or not answered,
/// and any code not named here (waiting costs time; giving up on an answer
/// that would have changed could lose a job).
///
/// SQS speaks JSON but keeps its query-protocol codes: the SDK's `code()`
/// is the `x-amzn-query-error` header's (`AWS.SimpleQueueService.NonExistentQueue`,
/// `KMS.DisabledException`, `AccessDenied`); without that header it is the
/// JSON error shape's name (`QueueDoesNotExist`, `KmsDisabled`). Both are
/// listed.
pub fn permanent_reason<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&'static str> {
    match err {
        SdkError::ConstructionFailure(_) => Some("request_not_built"),
        SdkError::ServiceError(_) => refusal(err.code()?),
        _ => None,
    }
}

/// The permanent class of a service error code, if it has one.
fn refusal(code: &str) -> Option<&'static str> {
    let reason = match code {
        // Both services.
        "AccessDeniedException" | "AccessDenied" => "access_denied",
        "UnrecognizedClientException" | "InvalidClientTokenId" => "unrecognized_client",
        // DynamoDB.
        "ValidationException" => "validation",
        "SerializationException" => "serialization",
        "ResourceNotFoundException" => "resource_not_found",
        "ItemCollectionSizeLimitExceededException" => "item_collection_too_large",
        // SQS.
        "AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist" => "queue_not_found",
        "InvalidParameterValue"
        | "InvalidParameterCombination"
        | "MissingParameter"
        | "InvalidAttributeName"
        | "InvalidAttributeValue" => "invalid_parameter",
        "InvalidMessageContents" => "invalid_message_contents",
        "MessageTooLong" | "AWS.SimpleQueueService.BatchRequestTooLong" | "BatchRequestTooLong" => {
            "message_too_long"
        }
        "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"
        | "BatchEntryIdsNotDistinct"
        | "AWS.SimpleQueueService.EmptyBatchRequest"
        | "EmptyBatchRequest"
        | "AWS.SimpleQueueService.InvalidBatchEntryId"
        | "InvalidBatchEntryId"
        | "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"
        | "TooManyEntriesInBatchRequest" => "invalid_batch",
        "ReceiptHandleIsInvalid" | "InvalidIdFormat" => "receipt_handle_invalid",
        // SNS (result events).
        "AuthorizationError" => "access_denied",
        "NotFound" => "resource_not_found",
        "InvalidParameter" => "invalid_parameter",
        "AWS.SimpleQueueService.MessageNotInflight" | "MessageNotInflight" => {
            "message_not_in_flight"
        }
        "AWS.SimpleQueueService.UnsupportedOperation" | "UnsupportedOperation" => {
            "unsupported_operation"
        }
        "InvalidAddress" => "invalid_address",
        "InvalidSecurity" => "invalid_security",
        "KMS.AccessDeniedException" | "KmsAccessDenied" => "kms_access_denied",
        "KMS.DisabledException" | "KmsDisabled" => "kms_disabled",
        "KMS.NotFoundException" | "KmsNotFound" => "kms_not_found",
        "KMS.InvalidKeyUsageException" | "KmsInvalidKeyUsage" => "kms_invalid_key_usage",
        "KMS.InvalidStateException" | "KmsInvalidState" => "kms_invalid_state",
        "KMS.OptInRequired" | "KmsOptInRequired" => "kms_opt_in_required",
        _ => return None,
    };
    Some(reason)
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

    /// Every SQS class, under its query-compatible code (what the SDK reads
    /// from `x-amzn-query-error`) and its JSON shape name.
    #[test]
    fn sqs_refusals_are_permanent_under_either_code() {
        let cases = [
            ("AWS.SimpleQueueService.NonExistentQueue", "queue_not_found"),
            ("QueueDoesNotExist", "queue_not_found"),
            ("AccessDenied", "access_denied"),
            ("AccessDeniedException", "access_denied"),
            ("InvalidClientTokenId", "unrecognized_client"),
            ("InvalidParameterValue", "invalid_parameter"),
            ("MissingParameter", "invalid_parameter"),
            ("InvalidAttributeValue", "invalid_parameter"),
            ("InvalidMessageContents", "invalid_message_contents"),
            ("MessageTooLong", "message_too_long"),
            (
                "AWS.SimpleQueueService.BatchRequestTooLong",
                "message_too_long",
            ),
            (
                "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
                "invalid_batch",
            ),
            ("BatchEntryIdsNotDistinct", "invalid_batch"),
            ("ReceiptHandleIsInvalid", "receipt_handle_invalid"),
            ("InvalidIdFormat", "receipt_handle_invalid"),
            (
                "AWS.SimpleQueueService.MessageNotInflight",
                "message_not_in_flight",
            ),
            (
                "AWS.SimpleQueueService.UnsupportedOperation",
                "unsupported_operation",
            ),
            ("UnsupportedOperation", "unsupported_operation"),
            ("InvalidAddress", "invalid_address"),
            ("InvalidSecurity", "invalid_security"),
            ("KMS.AccessDeniedException", "kms_access_denied"),
            ("KmsAccessDenied", "kms_access_denied"),
            ("KMS.DisabledException", "kms_disabled"),
            ("KmsDisabled", "kms_disabled"),
            ("KMS.NotFoundException", "kms_not_found"),
            ("KmsNotFound", "kms_not_found"),
            ("KMS.InvalidKeyUsageException", "kms_invalid_key_usage"),
            ("KmsInvalidKeyUsage", "kms_invalid_key_usage"),
            ("KMS.InvalidStateException", "kms_invalid_state"),
            ("KmsInvalidState", "kms_invalid_state"),
            ("KMS.OptInRequired", "kms_opt_in_required"),
        ];
        for (code, want) in cases {
            assert_eq!(permanent_reason(&answered(code)), Some(want), "{code}");
        }
        for code in [
            "RequestThrottled",
            "ThrottlingException",
            "KMS.ThrottlingException",
            "KmsThrottled",
            "OverLimit",
            "AWS.SimpleQueueService.QueueDeletedRecently",
            "AWS.SimpleQueueService.PurgeQueueInProgress",
            "InternalError",
            "InternalFailure",
            "ServiceUnavailable",
        ] {
            assert_eq!(permanent_reason(&answered(code)), None, "{code}");
        }
    }
}
