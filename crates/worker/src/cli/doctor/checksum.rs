//! Each allowed bucket's upload checksum mode (`FERRY_S3_CHECKSUM`, and
//! `FERRY_S3_CHECKSUM_BUCKETS`): does the store accept it, and does it
//! verify it? A probe upload at `<prefix>ferry-doctor/<uuid>` gets a
//! one-byte part with the right checksum, then one with a wrong one, and is
//! aborted, with any upload a retried Create left at its key. A mode the
//! store refuses fails the check, naming the first mode it accepts; one it accepts without verifying passes with a warning that
//! only ferry's own checks protect the bytes (moto, and many older stores).

use bytes::Bytes;
use ferry_engine::sink::S3Sink;
use ferry_engine::upload_checksum::ChecksumFault;
use ferry_engine::{ChecksumPolicy, Destination, TransferError, UploadChecksum};

use super::Check;
use crate::config::AllowedDestination;

/// What a store did with one mode's probe.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Accepted the right value and refused a wrong one, saying this.
    Verified(String),
    /// Accepted both: the store does not check this mode.
    Ignored,
    /// Refused the mode itself (at Create or at the right part).
    Refused(String),
}

/// The fallbacks tried, in order of strength, when a mode is refused.
const FALLBACKS: [UploadChecksum; 4] = [
    UploadChecksum::Crc64Nvme,
    UploadChecksum::Crc32c,
    UploadChecksum::Crc32,
    UploadChecksum::Md5,
];

pub(super) async fn checksums(
    s3: &aws_sdk_s3::Client,
    destinations: &[AllowedDestination],
    policy: &ChecksumPolicy,
) -> Vec<Check> {
    futures_util::future::join_all(destinations.iter().map(|destination| {
        let mode = policy.for_bucket(&destination.bucket);
        check(s3, destination, mode)
    }))
    .await
}

async fn check(
    s3: &aws_sdk_s3::Client,
    destination: &AllowedDestination,
    mode: UploadChecksum,
) -> Check {
    let place = format!("s3://{}/{}", destination.bucket, destination.prefix);
    if mode == UploadChecksum::None {
        return Check::pass(
            "checksum",
            format!(
                "{place}: none — the store is asked to verify nothing (ferry's own CRC64NVME and \
                 expected digests still apply)"
            ),
        );
    }
    match probe(s3, destination, mode).await {
        Verdict::Verified(refusal) => Check::pass(
            "checksum",
            format!(
                "{place}: {mode} accepted and verified (a wrong part checksum was refused: \
                 {refusal})"
            ),
        ),
        Verdict::Ignored => Check::pass(
            "checksum",
            format!(
                "{place}: {mode} accepted but NOT verified (a wrong part checksum was accepted \
                 too): only ferry's own checks protect these bytes"
            ),
        ),
        Verdict::Refused(why) => {
            let mut fix = format!(
                "no mode this store accepts was found: set FERRY_S3_CHECKSUM_BUCKETS={}=none",
                destination.bucket
            );
            for fallback in FALLBACKS.into_iter().filter(|f| *f != mode) {
                if !matches!(probe(s3, destination, fallback).await, Verdict::Refused(_)) {
                    fix = format!(
                        "the store accepts {fallback}: set FERRY_S3_CHECKSUM_BUCKETS={}={fallback} \
                         (docs/compatibility.md)",
                        destination.bucket
                    );
                    break;
                }
            }
            Check::fail("checksum", format!("{place}: {mode} refused: {why}"), fix)
        }
    }
}

/// One probe upload in `mode`: Create, a right part, a wrong part, Abort.
async fn probe(
    s3: &aws_sdk_s3::Client,
    destination: &AllowedDestination,
    mode: UploadChecksum,
) -> Verdict {
    let policy = ChecksumPolicy {
        default: mode,
        ..ChecksumPolicy::default()
    };
    let right = S3Sink::with_checksums(s3.clone(), policy.clone(), None);
    let wrong = S3Sink::with_checksums(s3.clone(), policy, Some(ChecksumFault::Part));
    let dest = Destination {
        bucket: destination.bucket.clone(),
        key: format!(
            "{}ferry-doctor/{}",
            destination.prefix,
            uuid::Uuid::new_v4()
        ),
        ..Destination::default()
    };
    let upload_id = match right.create(&dest).await {
        Ok(id) => id,
        Err(err) => {
            // A Create whose answer was lost may still have made an upload.
            let _ = super::bucket::sweep(s3, &dest.bucket, &dest.key).await;
            return Verdict::Refused(said(&err));
        }
    };
    let body = Bytes::from_static(b"f");
    let crc = ferry_engine::checksum::crc64nvme(&body);
    let sent = mode.of_body(&body);
    let verdict = match right
        .upload_part(&dest, &upload_id, 1, body.clone(), crc, sent.as_deref())
        .await
    {
        Err(err) => Verdict::Refused(said(&err)),
        Ok(_) => match wrong
            .upload_part(&dest, &upload_id, 2, body, crc, sent.as_deref())
            .await
        {
            Ok(_) => Verdict::Ignored,
            Err(err) => Verdict::Verified(said(&err)),
        },
    };
    // The bucket check already proved aborting works; a failure here is
    // left to the bucket's lifecycle rule (and `ferry gc`).
    if let Err(err) = right.abort(&dest, &upload_id).await {
        tracing::warn!(error = %err, key = dest.key, "could not abort the checksum probe's upload");
    }
    // The client retries a Create whose answer was lost, which can leave a
    // second upload at the probe's key (unique to this run: only ours).
    let _ = super::bucket::sweep(s3, &dest.bucket, &dest.key).await;
    verdict
}

fn said(err: &TransferError) -> String {
    err.to_string()
}
