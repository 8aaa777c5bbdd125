//! The job table in batches: BatchGetItem (100 keys a call) and
//! BatchWriteItem (25 items a call), a few calls at once, with whatever
//! DynamoDB leaves unprocessed sent again after a growing pause.
//!
//! Batch writes carry no conditions: deciding *what* may be written is
//! `chunk`'s business, not this module's.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, KeysAndAttributes, PutRequest, WriteRequest,
};
use futures_util::{StreamExt as _, TryStreamExt as _};

use crate::bulk::{BulkError, CALL_TRIES, Calls, ROUNDS, is_permanent};
use crate::patience::{aws_backoff, retry_with};
use crate::store::Record;

/// DynamoDB's limits per call.
const GET_KEYS: usize = 100;
const WRITE_ITEMS: usize = 25;

/// Batch calls in flight at once: enough to hide latency, few enough not to
/// provoke throttling of a fresh on-demand table.
const CALLS_AT_ONCE: usize = 4;

#[derive(Clone)]
pub struct Records {
    client: aws_sdk_dynamodb::Client,
    table: Arc<str>,
    calls: Arc<Calls>,
}

impl Records {
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str, calls: Arc<Calls>) -> Self {
        Self {
            client,
            table: table.into(),
            calls,
        }
    }

    /// The items under `ids` that exist, by id, with only `attributes` (and
    /// `job_id`) read. Consistent reads: an item written a moment ago by this
    /// run must be seen.
    pub async fn find(
        &self,
        ids: &[String],
        attributes: &[&str],
    ) -> Result<HashMap<String, Record>, BulkError> {
        let found: Vec<Vec<Record>> = futures_util::stream::iter(ids.chunks(GET_KEYS))
            .map(|chunk| self.find_some(chunk, attributes))
            .buffer_unordered(CALLS_AT_ONCE)
            .try_collect()
            .await?;
        Ok(found
            .into_iter()
            .flatten()
            .filter_map(|item| Some((crate::store::JobView::of(&item).job_id()?.to_owned(), item)))
            .collect())
    }

    async fn find_some(
        &self,
        ids: &[String],
        attributes: &[&str],
    ) -> Result<Vec<Record>, BulkError> {
        // Attribute names go through placeholders: `status`, `key` and
        // `url` are DynamoDB reserved words.
        let mut names = HashMap::from([("#a0".to_owned(), "job_id".to_owned())]);
        for (i, name) in attributes.iter().enumerate() {
            names.insert(format!("#a{}", i + 1), (*name).to_owned());
        }
        let projection = (0..names.len())
            .map(|i| format!("#a{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let keys = ids
            .iter()
            .map(|id| HashMap::from([("job_id".to_owned(), AttributeValue::S(id.clone()))]))
            .collect();
        let mut request = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .projection_expression(projection)
                .set_expression_attribute_names(Some(names))
                .build()
                .map_err(|err| build_error("BatchGetItem", &err))?,
        );
        let mut items = Vec::new();
        let mut round = 0;
        while let Some(keys) = request.take() {
            next_round(&mut round, "BatchGetItem").await?;
            let output = retry_with(
                "BatchGetItem",
                CALL_TRIES,
                aws_backoff,
                is_permanent,
                || {
                    self.calls.count_dynamodb();
                    let call = self
                        .client
                        .batch_get_item()
                        .request_items(self.table.as_ref(), keys.clone())
                        .send();
                    async move { call.await.map_err(|err| dynamo_error("BatchGetItem", &err)) }
                },
            )
            .await?;
            if let Some(mut responses) = output.responses {
                items.extend(responses.remove(self.table.as_ref()).unwrap_or_default());
            }
            request = output
                .unprocessed_keys
                .and_then(|mut rest| rest.remove(self.table.as_ref()))
                .filter(|rest| !rest.keys().is_empty());
        }
        Ok(items)
    }

    /// Applies every request, 25 a call, until none is left unprocessed.
    pub async fn write(&self, requests: Vec<WriteRequest>) -> Result<(), BulkError> {
        futures_util::stream::iter(requests.chunks(WRITE_ITEMS).map(<[_]>::to_vec))
            .map(|group| self.write_some(group))
            .buffer_unordered(CALLS_AT_ONCE)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn write_some(&self, group: Vec<WriteRequest>) -> Result<(), BulkError> {
        let mut pending = group;
        let mut round = 0;
        while !pending.is_empty() {
            next_round(&mut round, "BatchWriteItem").await?;
            let output = retry_with(
                "BatchWriteItem",
                CALL_TRIES,
                aws_backoff,
                is_permanent,
                || {
                    self.calls.count_dynamodb();
                    let call = self
                        .client
                        .batch_write_item()
                        .request_items(self.table.as_ref(), pending.clone())
                        .send();
                    async move {
                        call.await
                            .map_err(|err| dynamo_error("BatchWriteItem", &err))
                    }
                },
            )
            .await?;
            pending = output
                .unprocessed_items
                .and_then(|mut rest| rest.remove(self.table.as_ref()))
                .unwrap_or_default();
        }
        Ok(())
    }
}

/// A write of `item` (the whole item: BatchWriteItem cannot update).
pub fn put(item: Record) -> Result<WriteRequest, BulkError> {
    let put = PutRequest::builder()
        .set_item(Some(item))
        .build()
        .map_err(|err| build_error("BatchWriteItem", &err))?;
    Ok(WriteRequest::builder().put_request(put).build())
}

/// A delete of the item under `job_id` (nothing happens if there is none).
pub fn delete(job_id: &str) -> Result<WriteRequest, BulkError> {
    let delete = DeleteRequest::builder()
        .key("job_id", AttributeValue::S(job_id.to_owned()))
        .build()
        .map_err(|err| build_error("BatchWriteItem", &err))?;
    Ok(WriteRequest::builder().delete_request(delete).build())
}

fn dynamo_error<E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static>(
    operation: &'static str,
    err: &aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> BulkError {
    BulkError::Dynamo {
        operation,
        message: crate::store::describe(err),
        permanent: crate::aws_error::permanent_reason(err),
    }
}

fn build_error(operation: &'static str, err: &dyn std::fmt::Display) -> BulkError {
    BulkError::Dynamo {
        operation,
        message: err.to_string(),
        permanent: Some("request_not_built"),
    }
}

/// Before each call of a loop that re-sends what DynamoDB left unprocessed:
/// after the first, a growing pause; after `ROUNDS` calls, the run stops.
async fn next_round(round: &mut u32, operation: &'static str) -> Result<(), BulkError> {
    if *round > 0 {
        if *round >= ROUNDS {
            return Err(BulkError::Unprocessed { operation });
        }
        tokio::time::sleep(aws_backoff(*round)).await;
    }
    *round += 1;
    Ok(())
}
