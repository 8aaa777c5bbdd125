//! Each allowed bucket: a multipart upload can be created under the allowed
//! prefix and aborted — what a job does first, and what a failed job does
//! last. The probe never leaves its upload open: it is aborted whatever the
//! outcome, and one whose Create got no answer is looked for by its unique
//! key and aborted too.

use aws_sdk_s3::error::{ProvideErrorMetadata as _, SdkError};

use super::Check;
use super::sdk_error::{Failure, Trouble};
use crate::config::AllowedDestination;

/// Aborts tried before the probe's upload is reported as left open (the
/// client retries each once more by itself).
const ABORT_TRIES: u32 = 3;

pub(super) async fn buckets(
    s3: &aws_sdk_s3::Client,
    destinations: &[AllowedDestination],
    any_bucket: bool,
) -> Vec<Check> {
    let mut checks = Vec::new();
    if any_bucket {
        let mut detail =
            "FERRY_ALLOWED_BUCKETS not set: jobs may write to any bucket the role allows"
                .to_owned();
        if destinations.is_empty() {
            detail.push_str("; none checked (name one with --bucket)");
        }
        checks.push(Check::pass("bucket", detail));
    }
    checks.extend(futures_util::future::join_all(destinations.iter().map(|d| probe(s3, d))).await);
    checks
}

/// Create, then abort, a multipart upload at `<prefix>ferry-doctor/<uuid>`.
async fn probe(s3: &aws_sdk_s3::Client, destination: &AllowedDestination) -> Check {
    let AllowedDestination { bucket, prefix } = destination;
    let key = format!("{prefix}ferry-doctor/{}", uuid::Uuid::new_v4());
    let place = format!("s3://{bucket}/{prefix}");
    // Access only: whether the store takes the bucket's checksum mode is
    // the checksum check's (checksum.rs), which names a mode it does take.
    let created = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(&key)
        .send()
        .await;
    let upload_id = match created {
        Ok(output) => output.upload_id,
        Err(err) => {
            let failure = Failure::of("CreateMultipartUpload", &err);
            let mut detail = format!("{place}: {}", failure.line);
            if may_have_applied(&err) {
                detail.push_str(&sweep(s3, bucket, &key).await);
            }
            let fix = failure.fix(
                &format!("create the bucket, or correct FERRY_ALLOWED_BUCKETS ({bucket})"),
                &format!("s3:PutObject on arn:aws:s3:::{bucket}/{prefix}* (it covers CreateMultipartUpload)"),
            );
            return Check::fail("bucket", detail, fix);
        }
    };
    let Some(upload_id) = upload_id else {
        let detail = format!(
            "{place}: CreateMultipartUpload answered without an upload id{}",
            sweep(s3, bucket, &key).await
        );
        return Check::fail(
            "bucket",
            detail,
            "the endpoint does not behave like S3: check AWS_ENDPOINT_URL",
        );
    };
    match abort(s3, bucket, &key, &upload_id).await {
        Ok(()) => Check::pass(
            "bucket",
            format!("{place}: created and aborted a multipart upload ({key})"),
        ),
        Err(failure) => {
            let by_hand = format!(
                "then abort it: aws s3api abort-multipart-upload --bucket {bucket} --key {key} --upload-id {upload_id}"
            );
            let fix = match failure.trouble {
                Trouble::AccessDenied => format!(
                    "grant the worker's role s3:AbortMultipartUpload on arn:aws:s3:::{bucket}/{prefix}* (failed jobs abort their uploads), {by_hand}"
                ),
                _ => format!("{}; {by_hand}", failure.fix("", "s3:AbortMultipartUpload")),
            };
            Check::fail(
                "bucket",
                format!(
                    "{place}: created a multipart upload but could not abort it, it is left open: {}",
                    failure.line
                ),
                fix,
            )
        }
    }
}

async fn abort(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<(), Failure> {
    let mut tries = 0;
    loop {
        tries += 1;
        let result = s3
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
        match result {
            Ok(_) => return Ok(()),
            Err(err) if err.code() == Some("NoSuchUpload") => return Ok(()),
            Err(err) => {
                let failure = Failure::of("AbortMultipartUpload", &err);
                // Denied stays denied; anything else may pass on a new try.
                if tries >= ABORT_TRIES || failure.trouble == Trouble::AccessDenied {
                    return Err(failure);
                }
            }
        }
    }
}

/// Whether a failed Create may still have made an upload: its answer was
/// lost, unreadable or a server error (a 4xx answer means it did not).
fn may_have_applied<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> bool {
    match err {
        SdkError::ServiceError(context) => context.raw().status().is_server_error(),
        SdkError::ConstructionFailure(_) => false,
        _ => true,
    }
}

/// Aborts any upload at the probe's key (unique to this run: only ours);
/// returns a note for the check's detail, empty when there is nothing to say.
pub(super) async fn sweep(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> String {
    let listed = s3
        .list_multipart_uploads()
        .bucket(bucket)
        .prefix(key)
        .send()
        .await;
    let uploads = match listed {
        Ok(output) => output.uploads.unwrap_or_default(),
        // S3 is out of reach altogether: the Create did not get there either.
        Err(err) if Trouble::of(&err) == Trouble::Unreachable => return String::new(),
        Err(err) => {
            let failure = Failure::of("ListMultipartUploads", &err);
            return format!(
                "; could not look for an upload the Create may have made at {key} ({}): the bucket's lifecycle rule aborts it after 7 days",
                failure.line
            );
        }
    };
    let ours: Vec<&str> = uploads
        .iter()
        .filter(|u| u.key() == Some(key))
        .filter_map(|u| u.upload_id())
        .collect();
    let mut left = Vec::new();
    for upload_id in &ours {
        if abort(s3, bucket, key, upload_id).await.is_err() {
            left.push(*upload_id);
        }
    }
    match (ours.is_empty(), left.is_empty()) {
        (true, _) => String::new(),
        (false, true) => format!(
            "; aborted the {} upload(s) it had made nonetheless",
            ours.len()
        ),
        (false, false) => format!(
            "; the upload it had made is left open ({}): abort it by hand",
            left.join(", ")
        ),
    }
}
