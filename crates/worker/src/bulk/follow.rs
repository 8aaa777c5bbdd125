//! `ferry submit --from FILE --wait`: following every job of a file until
//! each one is final, by reading statuses 100 jobs a call (BatchGetItem with
//! only `status` and `error_kind`), never one GetItem per job.
//!
//! Holds the ids still pending (a few MB for 100,000 jobs) and nothing else.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::bulk::BulkError;
use crate::bulk::records::Records;
use crate::store::{self, Status};

/// Unsuccessful jobs kept by name for the report; the rest are counted.
const NAMED_FAILURES: usize = 20;

/// A job that ended other than `succeeded`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsuccessful {
    pub job_id: String,
    pub status: String,
    pub error_kind: Option<String>,
}

/// How the jobs ended.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Jobs by final status (`missing`: the record is gone, e.g. expired).
    pub by_status: BTreeMap<String, u64>,
    /// The first [`NAMED_FAILURES`] jobs that did not succeed.
    pub unsuccessful: Vec<Unsuccessful>,
}

impl Outcome {
    pub fn all_succeeded(&self) -> bool {
        self.by_status
            .keys()
            .all(|status| status == Status::Succeeded.as_str())
    }

    fn record(&mut self, job_id: &str, status: &str, error_kind: Option<&str>) {
        *self.by_status.entry(status.to_owned()).or_default() += 1;
        if status != Status::Succeeded.as_str() && self.unsuccessful.len() < NAMED_FAILURES {
            self.unsuccessful.push(Unsuccessful {
                job_id: job_id.to_owned(),
                status: status.to_owned(),
                error_kind: error_kind.map(str::to_owned),
            });
        }
    }
}

/// Reads the status of every pending job every `every` until all are final;
/// `progress(final, total)` after each round.
pub async fn follow(
    records: &Records,
    ids: Vec<String>,
    every: Duration,
    mut progress: impl FnMut(u64, u64),
) -> Result<Outcome, BulkError> {
    let total = ids.len() as u64;
    let mut pending = ids;
    let mut outcome = Outcome::default();
    loop {
        let found = records.find(&pending, &["status", "error_kind"]).await?;
        pending.retain(|id| {
            let Some(record) = found.get(id) else {
                // Every job of the file had a record when it was submitted;
                // one that is gone now will not come back.
                outcome.record(id, "missing", None);
                return false;
            };
            // moto applies an update attribute by attribute: a record being
            // claimed can be read without its status. Not final, then.
            let view = store::JobView::of(record);
            match view.status() {
                Some(final_status) if final_status.is_final() => {
                    outcome.record(id, final_status.as_str(), view.error_kind());
                    false
                }
                _ => true,
            }
        });
        progress(total - pending.len() as u64, total);
        if pending.is_empty() {
            return Ok(outcome);
        }
        tokio::time::sleep(every).await;
    }
}
