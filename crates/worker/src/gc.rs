//! Orphaned multipart uploads: find ferry's, abort those no job will finish.
//!
//! An upload is ferry's when the job table holds its `upload#<id>` item
//! (written with the checkpoint, before the first part). It is aborted when
//! it is older than the threshold and its job is final, unknown, or has moved
//! on to another upload; a job that is queued, retrying or running on this
//! upload keeps it. An upload without that item (its Create reply was lost,
//! or it was never checkpointed) is placed through the `dest#<bucket>/<key>`
//! item every job writes before CreateMultipartUpload: it is aborted once
//! that job has ended. Uploads on keys no ferry job wrote are not ferry's and
//! are left alone — the bucket's AbortIncompleteMultipartUpload lifecycle
//! rule is the backstop for everything (deploy/s3-lifecycle.json).

use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use crate::store::{self, JobStore, StoreError};

/// What one sweep should do.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub bucket: String,
    pub prefix: Option<String>,
    pub older_than: Duration,
    /// Decide and report, but abort nothing.
    pub dry_run: bool,
}

/// One upload and what the sweep decided about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub key: String,
    pub upload_id: String,
    pub job_id: Option<String>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Aborted (or would be, in a dry run), with the reason.
    Abort(&'static str),
    /// Left alone, with the reason.
    Keep(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("S3 {operation} failed: {message}")]
    S3 {
        operation: &'static str,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Examines every open upload under `sweep.bucket`/`prefix` (all pages) and
/// aborts the orphans. Returns every decision, in listing order.
pub async fn sweep(
    s3: &aws_sdk_s3::Client,
    store: &JobStore,
    sweep: &Sweep,
) -> Result<Vec<Decision>, GcError> {
    let cutoff = SystemTime::now()
        .checked_sub(sweep.older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut decisions = Vec::new();
    let mut key_marker = None;
    let mut upload_marker = None;
    loop {
        let page = s3
            .list_multipart_uploads()
            .bucket(&sweep.bucket)
            .set_prefix(sweep.prefix.clone())
            .set_key_marker(key_marker.take())
            .set_upload_id_marker(upload_marker.take())
            .send()
            .await
            .map_err(|err| GcError::S3 {
                operation: "ListMultipartUploads",
                message: store::describe(&err),
            })?;
        for upload in page.uploads() {
            let (Some(key), Some(upload_id)) = (upload.key(), upload.upload_id()) else {
                continue;
            };
            let young = upload
                .initiated()
                .and_then(|at| SystemTime::try_from(*at).ok())
                .is_some_and(|at| at > cutoff);
            let (job_id, verdict) = if young {
                (None, Verdict::Keep("younger than the threshold"))
            } else {
                judge(store, &sweep.bucket, key, upload_id).await?
            };
            let verdict = match verdict {
                Verdict::Abort(reason) if !sweep.dry_run => {
                    match abort(s3, &sweep.bucket, key, upload_id).await {
                        Ok(()) => {
                            metrics::counter!("ferry_gc_aborted_uploads_total").increment(1);
                            info!(
                                key,
                                job_id = job_id.as_deref(),
                                reason,
                                "aborted orphaned upload"
                            );
                            verdict
                        }
                        Err(err) => {
                            warn!(key, error = %err, "could not abort orphaned upload");
                            Verdict::Keep("the abort failed (see the log)")
                        }
                    }
                }
                other => other,
            };
            decisions.push(Decision {
                key: key.to_owned(),
                upload_id: upload_id.to_owned(),
                job_id,
                verdict,
            });
        }
        if page.is_truncated() != Some(true) {
            return Ok(decisions);
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        upload_marker = page.next_upload_id_marker().map(str::to_owned);
        if key_marker.is_none() && upload_marker.is_none() {
            return Ok(decisions);
        }
    }
}

/// Whose upload it is, and whether that job still needs it.
async fn judge(
    store: &JobStore,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<(Option<String>, Verdict), GcError> {
    let marker = match store.get(&store::upload_key(upload_id)).await? {
        Some(marker) => marker,
        None => return judge_unrecorded(store, bucket, key).await,
    };
    let Some(job_id) = store::text(&marker, "upload_job_id").map(str::to_owned) else {
        return Ok((None, Verdict::Keep("not started by ferry")));
    };
    let Some(record) = store.get(&job_id).await? else {
        return Ok((Some(job_id), Verdict::Abort("its job is unknown")));
    };
    let view = store::JobView::of(&record);
    let status = view.status();
    let verdict = match status {
        Some(status) if status.is_final() => Verdict::Abort("its job has ended"),
        _ if view.upload_id() != Some(upload_id) => {
            Verdict::Abort("its job has moved on to another upload")
        }
        _ => Verdict::Keep("its job will still use it"),
    };
    Ok((Some(job_id), verdict))
}

/// An upload no checkpoint recorded: the job that last started an upload to
/// its key owns it; once that job has ended, nothing will complete it.
async fn judge_unrecorded(
    store: &JobStore,
    bucket: &str,
    key: &str,
) -> Result<(Option<String>, Verdict), GcError> {
    let Some(job_id) = store
        .get(&store::destination_key(bucket, key))
        .await?
        .and_then(|marker| store::text(&marker, "upload_job_id").map(str::to_owned))
    else {
        return Ok((None, Verdict::Keep("not started by ferry")));
    };
    let status = store
        .get(&job_id)
        .await?
        .and_then(|record| store::JobView::of(&record).status());
    let verdict = match status {
        Some(status) if status.is_final() => Verdict::Abort("its job has ended"),
        None => Verdict::Abort("its job is unknown"),
        Some(_) => Verdict::Keep("its job may still use it"),
    };
    Ok((Some(job_id), verdict))
}

async fn abort(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<(), GcError> {
    let destination = ferry_engine::Destination {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        ..ferry_engine::Destination::default()
    };
    ferry_engine::sink::S3Sink::new(s3.clone())
        .abort(&destination, upload_id)
        .await
        .map_err(|err| GcError::S3 {
            operation: "AbortMultipartUpload",
            message: err.to_string(),
        })
}

/// The worker's periodic sweep over its allowed destinations, until `stop`.
pub async fn sweep_periodically(
    s3: aws_sdk_s3::Client,
    store: JobStore,
    destinations: Vec<crate::config::AllowedDestination>,
    schedule: crate::config::GcSchedule,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(schedule.interval) => {}
        }
        for destination in &destinations {
            let sweep = Sweep {
                bucket: destination.bucket.clone(),
                prefix: Some(destination.prefix.clone()).filter(|p| !p.is_empty()),
                older_than: schedule.older_than,
                dry_run: false,
            };
            let result = tokio::select! {
                () = stop.cancelled() => return,
                result = self::sweep(&s3, &store, &sweep) => result,
            };
            match result {
                Ok(decisions) => info!(
                    bucket = %sweep.bucket,
                    examined = decisions.len(),
                    aborted = decisions.iter().filter(|d| matches!(d.verdict, Verdict::Abort(_))).count(),
                    "upload sweep done"
                ),
                Err(err) => warn!(bucket = %sweep.bucket, error = %err, "upload sweep failed"),
            }
        }
    }
}
