//! One chunk of a bulk submit: up to [`CHUNK_LINES`] good lines, in five
//! steps — find which jobs exist (BatchGetItem), write an `unsent#` marker
//! for each new one, write its `queued` record (BatchWriteItem), send the
//! messages (SendMessageBatch), delete the markers of the messages sent.
//!
//! Why the markers: BatchWriteItem cannot be conditional and SQS cannot be
//! asked whether a message exists, so a run that stops between a record and
//! its message (killed, SQS down) would leave a queued job nobody will ever
//! run — and a re-run could not tell it from a job whose message is waiting
//! in the queue. The marker, written before the record and deleted only
//! after the message was sent, tells them apart: a re-run re-sends exactly
//! the messages that may be missing ("re-enqueued"), and nothing else. A
//! duplicate message is harmless (the worker's claim runs a job once); a
//! missing one strands the job.
//!
//! Order, always: marker → record → message → marker deleted. Records are
//! written only for ids the read found absent, since a batch write would
//! overwrite whatever is there.

use std::collections::HashMap;

use crate::bulk::BulkError;
use crate::bulk::input::{BadLine, Entry};
use crate::bulk::messages::{Messages, Outgoing};
use crate::bulk::records::{self, Records};
use crate::store::{self, Record, Status};

/// Good lines per chunk: one BatchGetItem, four BatchWriteItems of records,
/// ten SendMessageBatches. Bigger chunks would not need fewer calls per job.
pub const CHUNK_LINES: usize = 100;

/// How long an `unsent#` marker outlives its run at most (DynamoDB TTL):
/// as long as finished job records are kept, far longer than anyone waits
/// to re-run a file.
const MARKER_RETENTION_SECS: u64 = 30 * 24 * 3600;

/// Key of the marker saying "this job's message may not have been sent".
/// `#` never occurs in a job id, so it cannot collide with a job.
pub fn unsent_key(job_id: &str) -> String {
    format!("unsent#{job_id}")
}

fn unsent_marker(job_id: &str) -> Record {
    use aws_sdk_dynamodb::types::AttributeValue;
    let expires = store::now_secs() + MARKER_RETENTION_SECS;
    HashMap::from([
        ("job_id".to_owned(), AttributeValue::S(unsent_key(job_id))),
        (
            "expires_at".to_owned(),
            AttributeValue::N(expires.to_string()),
        ),
    ])
}

/// Where a chunk goes.
#[derive(Clone)]
pub struct Target {
    pub records: Records,
    pub messages: Messages,
}

/// What became of a chunk's lines.
#[derive(Debug, Default)]
pub struct ChunkReport {
    /// New records, messages sent.
    pub submitted: u64,
    /// Jobs that exist already (in the table, or earlier in this file).
    pub already_present: u64,
    /// Existing queued jobs whose message an earlier run may not have sent:
    /// sent (again).
    pub re_enqueued: u64,
    /// Lines whose job id names a different job.
    pub bad: Vec<BadLine>,
    /// Jobs recorded whose message SQS did not take: their markers stay, so
    /// running the file again sends them.
    pub not_enqueued: Vec<NotEnqueued>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotEnqueued {
    pub line: u64,
    pub job_id: String,
    pub reason: String,
}

/// What the table says about one line's job.
enum Found {
    Absent,
    /// The same job exists; `queued` when it has not been claimed yet.
    Same {
        queued: bool,
    },
    Different,
}

/// Submits one chunk (at most [`CHUNK_LINES`] entries, in file order). An
/// error leaves the chunk partly done, but never a record without either
/// its message or its marker.
pub async fn submit(target: &Target, entries: &[Entry]) -> Result<ChunkReport, BulkError> {
    let mut report = ChunkReport::default();
    // A job id twice in one chunk: the later line is a repeat of the
    // earlier (or a conflict), as it would be one chunk later.
    let mut first_line: HashMap<&str, &Entry> = HashMap::new();
    let mut unique = Vec::new();
    for entry in entries {
        match first_line.get(entry.job.id.as_str()) {
            None => {
                first_line.insert(&entry.job.id, entry);
                unique.push(entry);
            }
            Some(earlier) if same_destination(earlier, entry) => report.already_present += 1,
            Some(earlier) => report.bad.push(BadLine {
                line: entry.line,
                reason: format!(
                    "job id {} is already used by line {} for a different job",
                    entry.job.id, earlier.line
                ),
            }),
        }
    }

    let ids: Vec<String> = unique.iter().map(|e| e.job.id.clone()).collect();
    let existing = target
        .records
        .find(&ids, &["status", "url", "bucket", "key"])
        .await?;
    let mut new = Vec::new();
    let mut queued = Vec::new();
    for entry in unique {
        match found(existing.get(&entry.job.id), entry) {
            Found::Absent => new.push(entry),
            Found::Same { queued: true } => queued.push(entry),
            Found::Same { queued: false } => report.already_present += 1,
            Found::Different => report.bad.push(BadLine {
                line: entry.line,
                reason: format!("job id {} already names a different job", entry.job.id),
            }),
        }
    }

    // Of the queued ones, those an earlier run left with a marker.
    let mut resend = Vec::new();
    if !queued.is_empty() {
        let keys: Vec<String> = queued.iter().map(|e| unsent_key(&e.job.id)).collect();
        let markers = target.records.find(&keys, &[]).await?;
        for entry in queued {
            if markers.contains_key(&unsent_key(&entry.job.id)) {
                resend.push(entry);
            } else {
                report.already_present += 1;
            }
        }
    }

    if !new.is_empty() {
        let markers = new
            .iter()
            .map(|e| records::put(unsent_marker(&e.job.id)))
            .collect::<Result<_, _>>()?;
        target.records.write(markers).await?;
        let queued_records = new
            .iter()
            .map(|e| records::put(store::queued_record(&e.job)))
            .collect::<Result<_, _>>()?;
        target.records.write(queued_records).await?;
    }

    let outgoing: Vec<Outgoing> = new
        .iter()
        .chain(&resend)
        .map(|e| Outgoing {
            job_id: e.job.id.clone(),
            body: e.body.clone(),
        })
        .collect();
    if outgoing.is_empty() {
        return Ok(report);
    }
    let unsent = target.messages.send(outgoing).await?;
    let unsent_reason: HashMap<&str, &str> = unsent
        .iter()
        .map(|u| (u.job_id.as_str(), u.reason.as_str()))
        .collect();
    let mut sent = Vec::new();
    for (entry, is_new) in new
        .iter()
        .map(|e| (e, true))
        .chain(resend.iter().map(|e| (e, false)))
    {
        match unsent_reason.get(entry.job.id.as_str()) {
            Some(reason) => report.not_enqueued.push(NotEnqueued {
                line: entry.line,
                job_id: entry.job.id.clone(),
                reason: (*reason).to_owned(),
            }),
            None if is_new => {
                report.submitted += 1;
                sent.push(records::delete(&unsent_key(&entry.job.id))?);
            }
            None => {
                report.re_enqueued += 1;
                sent.push(records::delete(&unsent_key(&entry.job.id))?);
            }
        }
    }
    // A marker left behind costs one duplicate message on a re-run, which
    // the claim absorbs: not worth stopping the run for.
    if let Err(err) = target.records.write(sent).await {
        tracing::warn!(error = %err, "could not delete unsent# markers; a re-run will send those messages again");
    }
    Ok(report)
}

fn found(record: Option<&Record>, entry: &Entry) -> Found {
    let Some(record) = record else {
        return Found::Absent;
    };
    let destination = &entry.job.spec.destination;
    // An attribute the record lacks (a rejection recorded before any
    // record existed has none) cannot tell a different job.
    let view = store::JobView::of(record);
    let differs = |theirs: Option<&str>, ours: &str| theirs.is_some_and(|theirs| theirs != ours);
    if differs(view.url(), entry.job.shown_url.as_str())
        || differs(view.bucket(), &destination.bucket)
        || differs(view.key(), &destination.key)
    {
        return Found::Different;
    }
    Found::Same {
        queued: view.status() == Some(Status::Queued),
    }
}

fn same_destination(a: &Entry, b: &Entry) -> bool {
    a.job.shown_url == b.job.shown_url
        && a.job.spec.destination.bucket == b.job.spec.destination.bucket
        && a.job.spec.destination.key == b.job.spec.destination.key
}
