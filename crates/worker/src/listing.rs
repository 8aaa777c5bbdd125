//! Job records by status, newest first, read from the table's sharded
//! status index (see [`store::STATUS_INDEX`]): one paged Query per status
//! and shard, merged by `status_at`; the index keeps only keys, so each run
//! of merged keys is read back from the table with one BatchGetItem. Memory
//! stays at one page per shard however many jobs there are.

use std::collections::{HashMap, VecDeque};

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Select};

use crate::store::{
    INDEX_SHARDS, Record, STATUS_INDEX, STATUS_INDEX_PARTITION_KEY, STATUS_INDEX_SORT_KEY, Status,
    describe, text,
};

/// Keys read per Query page, and records per BatchGetItem (its limit).
const PAGE: i32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(
        "table {table} has no {STATUS_INDEX} ({STATUS_INDEX_PARTITION_KEY} HASH, \
         {STATUS_INDEX_SORT_KEY} RANGE, KEYS_ONLY); the stack and scripts/quickstart create it \
         — see docs/jobs.md#listing-jobs"
    )]
    NoIndex { table: String },
    #[error("DynamoDB {operation} failed: {message}")]
    Dynamo {
        operation: &'static str,
        message: String,
    },
}

/// Which records a listing returns.
#[derive(Debug, Clone)]
pub struct Filter {
    /// Empty: every status.
    pub statuses: Vec<Status>,
    /// Only records that entered their status at or after this RFC 3339 time.
    pub since: Option<String>,
}

/// One index partition (a status's shard), a page of keys at a time.
struct Pager {
    partition: String,
    keys: VecDeque<Record>,
    next: Option<HashMap<String, AttributeValue>>,
    exhausted: bool,
}

/// Job records matching a filter, newest `status_at` first.
pub struct Listing {
    client: aws_sdk_dynamodb::Client,
    table: String,
    since: Option<String>,
    pagers: Vec<Pager>,
    /// Records read back, in listing order, not yet returned.
    ready: VecDeque<Record>,
}

impl Listing {
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str, filter: &Filter) -> Self {
        let statuses = if filter.statuses.is_empty() {
            Status::ALL.to_vec()
        } else {
            filter.statuses.clone()
        };
        let pagers = statuses
            .into_iter()
            .flat_map(|status| {
                (0..INDEX_SHARDS).map(move |shard| Pager {
                    partition: format!("{}#{shard:02}", status.as_str()),
                    keys: VecDeque::new(),
                    next: None,
                    exhausted: false,
                })
            })
            .collect();
        Self {
            client,
            table: table.to_owned(),
            since: filter.since.clone(),
            pagers,
            ready: VecDeque::new(),
        }
    }

    /// The next record, newest first; `None` when all are listed.
    pub async fn next(&mut self) -> Result<Option<Record>, ListError> {
        while self.ready.is_empty() {
            let mut keys = Vec::new();
            while keys.len() < PAGE as usize {
                match self.next_key().await? {
                    Some(key) => keys.push(key),
                    None => break,
                }
            }
            if keys.is_empty() {
                return Ok(None);
            }
            self.read_back(keys).await?;
        }
        Ok(self.ready.pop_front())
    }

    /// The newest key left across all partitions.
    async fn next_key(&mut self) -> Result<Option<String>, ListError> {
        for at in 0..self.pagers.len() {
            while self.pagers[at].keys.is_empty() && !self.pagers[at].exhausted {
                self.fill(at).await?;
            }
        }
        let newest = self
            .pagers
            .iter()
            .enumerate()
            .filter_map(|(at, pager)| {
                let head = pager.keys.front()?;
                Some((text(head, STATUS_INDEX_SORT_KEY).unwrap_or(""), at))
            })
            .max()
            .map(|(_, at)| at);
        Ok(newest
            .and_then(|at| self.pagers[at].keys.pop_front())
            .and_then(|key| text(&key, "job_id").map(str::to_owned)))
    }

    async fn fill(&mut self, at: usize) -> Result<(), ListError> {
        let pager = &self.pagers[at];
        let query = self
            .query(&pager.partition)
            .limit(PAGE)
            .set_exclusive_start_key(pager.next.clone());
        let output = query.send().await.map_err(|err| self.error("Query", err))?;
        let pager = &mut self.pagers[at];
        pager.keys.extend(output.items.unwrap_or_default());
        pager.next = output.last_evaluated_key.filter(|key| !key.is_empty());
        pager.exhausted = pager.next.is_none();
        Ok(())
    }

    /// Reads the records of `ids` (in that order) into `ready`; one that
    /// vanished since the index was read (TTL) is skipped.
    async fn read_back(&mut self, ids: Vec<String>) -> Result<(), ListError> {
        let mut found: HashMap<String, Record> = HashMap::new();
        let mut wanted: Vec<HashMap<String, AttributeValue>> = ids
            .iter()
            .map(|id| HashMap::from([("job_id".to_owned(), AttributeValue::S(id.clone()))]))
            .collect();
        // Unprocessed keys come back when DynamoDB throttles: ask again.
        for round in 0.. {
            if wanted.is_empty() {
                break;
            }
            if round > 0 {
                let pause = crate::patience::aws_backoff(round);
                tokio::time::sleep(pause).await;
            }
            let keys = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut wanted)))
                .build()
                .map_err(|err| ListError::Dynamo {
                    operation: "BatchGetItem",
                    message: err.to_string(),
                })?;
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, keys)
                .send()
                .await
                .map_err(|err| self.error("BatchGetItem", err))?;
            for item in output
                .responses
                .unwrap_or_default()
                .remove(&self.table)
                .unwrap_or_default()
            {
                if let Some(id) = text(&item, "job_id") {
                    found.insert(id.to_owned(), item);
                }
            }
            wanted = output
                .unprocessed_keys
                .and_then(|mut rest| rest.remove(&self.table))
                .map(|rest| rest.keys)
                .unwrap_or_default();
        }
        self.ready
            .extend(ids.iter().filter_map(|id| found.remove(id)));
        Ok(())
    }

    /// How many records each status has (after `since`), status by status.
    pub async fn count(&self) -> Result<Vec<(Status, u64)>, ListError> {
        let mut counts: Vec<(Status, u64)> = Vec::new();
        for pager in &self.pagers {
            let status = pager
                .partition
                .split_once('#')
                .and_then(|(status, _)| Status::parse(status))
                .unwrap_or(Status::Queued);
            let mut total = 0u64;
            let mut next = None;
            loop {
                let output = self
                    .query(&pager.partition)
                    .select(Select::Count)
                    .set_exclusive_start_key(next)
                    .send()
                    .await
                    .map_err(|err| self.error("Query", err))?;
                total += u64::try_from(output.count).unwrap_or(0);
                next = output.last_evaluated_key.filter(|key| !key.is_empty());
                if next.is_none() {
                    break;
                }
            }
            match counts.last_mut() {
                Some((last, sum)) if *last == status => *sum += total,
                _ => counts.push((status, total)),
            }
        }
        Ok(counts)
    }

    fn query(&self, partition: &str) -> QueryFluentBuilder {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(STATUS_INDEX)
            .scan_index_forward(false)
            .expression_attribute_names("#partition", STATUS_INDEX_PARTITION_KEY)
            .expression_attribute_values(":partition", AttributeValue::S(partition.to_owned()));
        match &self.since {
            Some(since) => query
                .key_condition_expression("#partition = :partition AND #at >= :since")
                .expression_attribute_names("#at", STATUS_INDEX_SORT_KEY)
                .expression_attribute_values(":since", AttributeValue::S(since.clone())),
            None => query.key_condition_expression("#partition = :partition"),
        }
    }

    fn error<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        operation: &'static str,
        err: SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
    ) -> ListError {
        let missing_index = err.code() == Some("ValidationException")
            && err
                .message()
                .is_some_and(|m| m.to_ascii_lowercase().contains("index"));
        if missing_index {
            ListError::NoIndex {
                table: self.table.clone(),
            }
        } else {
            ListError::Dynamo {
                operation,
                message: describe(&err),
            }
        }
    }
}

/// The `status_at` bound for "within `ago`".
pub fn since(ago: std::time::Duration) -> String {
    let at = std::time::SystemTime::now()
        .checked_sub(ago)
        .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
    humantime::format_rfc3339_millis(at).to_string()
}
