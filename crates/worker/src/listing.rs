//! Job records by status, newest first, read from the table's `status-index`
//! (partition key `status`, sort key `updated_at`): one paged Query per
//! status, merged, so memory stays at one page per status however many jobs
//! there are.

use std::collections::VecDeque;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, Select};

use crate::store::{Record, Status, describe, text};

/// The global secondary index every listing reads.
pub const STATUS_INDEX: &str = "status-index";

/// Records read per Query page.
const PAGE: i32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(
        "table {table} has no {STATUS_INDEX} (status HASH, updated_at RANGE); \
         the stack and scripts/quickstart create it — see docs/jobs.md#listing-jobs"
    )]
    NoIndex { table: String },
    #[error("DynamoDB Query failed: {0}")]
    Dynamo(String),
}

/// Which records a listing returns.
#[derive(Debug, Clone)]
pub struct Filter {
    /// Empty: every status.
    pub statuses: Vec<Status>,
    /// Only records updated at or after this RFC 3339 time.
    pub since: Option<String>,
}

impl Filter {
    fn statuses(&self) -> Vec<Status> {
        if self.statuses.is_empty() {
            Status::ALL.to_vec()
        } else {
            self.statuses.clone()
        }
    }
}

/// One status's records, a page at a time.
struct Pager {
    status: Status,
    buffered: VecDeque<Record>,
    next: Option<std::collections::HashMap<String, AttributeValue>>,
    exhausted: bool,
}

/// Job records matching a filter, newest `updated_at` first.
pub struct Listing {
    client: aws_sdk_dynamodb::Client,
    table: String,
    since: Option<String>,
    pagers: Vec<Pager>,
}

impl Listing {
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str, filter: &Filter) -> Self {
        let pagers = filter
            .statuses()
            .into_iter()
            .map(|status| Pager {
                status,
                buffered: VecDeque::new(),
                next: None,
                exhausted: false,
            })
            .collect();
        Self {
            client,
            table: table.to_owned(),
            since: filter.since.clone(),
            pagers,
        }
    }

    /// The next record, newest first; `None` when all are listed.
    pub async fn next(&mut self) -> Result<Option<Record>, ListError> {
        for at in 0..self.pagers.len() {
            while self.pagers[at].buffered.is_empty() && !self.pagers[at].exhausted {
                self.fill(at).await?;
            }
        }
        let newest = self
            .pagers
            .iter()
            .enumerate()
            .filter_map(|(at, pager)| {
                let head = pager.buffered.front()?;
                Some((text(head, "updated_at").unwrap_or(""), at))
            })
            .max()
            .map(|(_, at)| at);
        Ok(newest.and_then(|at| self.pagers[at].buffered.pop_front()))
    }

    async fn fill(&mut self, at: usize) -> Result<(), ListError> {
        let pager = &self.pagers[at];
        let query = self
            .query(pager.status)
            .limit(PAGE)
            .set_exclusive_start_key(pager.next.clone());
        let output = query.send().await.map_err(|err| self.error(err))?;
        let pager = &mut self.pagers[at];
        pager.buffered.extend(output.items.unwrap_or_default());
        pager.next = output.last_evaluated_key.filter(|key| !key.is_empty());
        pager.exhausted = pager.next.is_none();
        Ok(())
    }

    /// How many records each status has (after `since`), status by status.
    pub async fn count(&self) -> Result<Vec<(Status, u64)>, ListError> {
        let mut counts = Vec::new();
        for pager in &self.pagers {
            let mut total = 0u64;
            let mut next = None;
            loop {
                let output = self
                    .query(pager.status)
                    .select(Select::Count)
                    .set_exclusive_start_key(next)
                    .send()
                    .await
                    .map_err(|err| self.error(err))?;
                total += u64::try_from(output.count).unwrap_or(0);
                next = output.last_evaluated_key.filter(|key| !key.is_empty());
                if next.is_none() {
                    break;
                }
            }
            counts.push((pager.status, total));
        }
        Ok(counts)
    }

    fn query(
        &self,
        status: Status,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(STATUS_INDEX)
            .scan_index_forward(false)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", AttributeValue::S(status.as_str().into()));
        query = match &self.since {
            Some(since) => query
                .key_condition_expression("#status = :status AND #updated_at >= :since")
                .expression_attribute_names("#updated_at", "updated_at")
                .expression_attribute_values(":since", AttributeValue::S(since.clone())),
            None => query.key_condition_expression("#status = :status"),
        };
        query
    }

    fn error<E: ProvideErrorMetadata, R>(&self, err: SdkError<E, R>) -> ListError {
        let missing_index = err.code() == Some("ValidationException")
            && err
                .message()
                .is_some_and(|m| m.to_ascii_lowercase().contains("index"));
        if missing_index {
            ListError::NoIndex {
                table: self.table.clone(),
            }
        } else {
            ListError::Dynamo(describe(&err))
        }
    }
}
