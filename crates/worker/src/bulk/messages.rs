//! Job messages onto the queue with SendMessageBatch: 10 a call (and at most
//! SQS's 256 KiB a call), a few calls at once; entries SQS failed for its
//! own reasons are sent again after a growing pause, those it refused are
//! reported.

use std::collections::HashSet;
use std::sync::Arc;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures_util::{StreamExt as _, TryStreamExt as _};

use crate::bulk::input::MAX_MESSAGE_BYTES;
use crate::bulk::{BulkError, CALL_TRIES, Calls, ROUNDS, is_permanent};
use crate::patience::{aws_backoff, retry_with};

/// SQS's limits per SendMessageBatch: entries, and bytes of all bodies.
const BATCH_ENTRIES: usize = 10;
const BATCH_BYTES: usize = MAX_MESSAGE_BYTES;

/// Calls in flight at once: a chunk's 10 batches go out together.
const CALLS_AT_ONCE: usize = 10;

/// A message to send: the job it starts and its body.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub job_id: String,
    pub body: String,
}

/// A job whose message SQS did not take, and SQS's error code (never the
/// body: it holds the URL's query and any header values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsent {
    pub job_id: String,
    pub reason: String,
}

#[derive(Clone)]
pub struct Messages {
    client: aws_sdk_sqs::Client,
    queue_url: Arc<str>,
    calls: Arc<Calls>,
}

impl Messages {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: &str, calls: Arc<Calls>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            calls,
        }
    }

    /// Sends every message; returns those SQS would not take. An error means
    /// the queue could not be reached at all (then nothing can be said about
    /// which of these were sent).
    pub async fn send(&self, messages: Vec<Outgoing>) -> Result<Vec<Unsent>, BulkError> {
        let unsent: Vec<Vec<Unsent>> = futures_util::stream::iter(batches(messages))
            .map(|batch| self.send_batch(batch))
            .buffer_unordered(CALLS_AT_ONCE)
            .try_collect()
            .await?;
        Ok(unsent.into_iter().flatten().collect())
    }

    async fn send_batch(&self, batch: Vec<Outgoing>) -> Result<Vec<Unsent>, BulkError> {
        // Entry ids are positions in `batch`: unique within the call, as
        // SQS requires.
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        let mut unsent = Vec::new();
        let mut round = 0;
        while !pending.is_empty() {
            if round > 0 {
                tokio::time::sleep(aws_backoff(round)).await;
            }
            round += 1;
            let entries = pending
                .iter()
                .map(|&i| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(&batch[i].body)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| BulkError::Sqs {
                    operation: "SendMessageBatch",
                    message: err.to_string(),
                    permanent: Some("request_not_built"),
                })?;
            let output = retry_with(
                "SendMessageBatch",
                CALL_TRIES,
                aws_backoff,
                is_permanent,
                || {
                    self.calls.count_sqs();
                    let call = self
                        .client
                        .send_message_batch()
                        .queue_url(self.queue_url.as_ref())
                        .set_entries(Some(entries.clone()))
                        .send();
                    async move {
                        call.await.map_err(|err| BulkError::Sqs {
                            operation: "SendMessageBatch",
                            message: crate::store::describe(&err),
                            permanent: crate::aws_error::permanent_reason(&err),
                        })
                    }
                },
            )
            .await?;
            let sent: HashSet<&str> = output.successful().iter().map(|s| s.id()).collect();
            let mut again = Vec::new();
            for &i in &pending {
                let id = i.to_string();
                if sent.contains(id.as_str()) {
                    continue;
                }
                let failure = output.failed().iter().find(|f| f.id() == id);
                match failure {
                    // The sender's fault (a body SQS refuses): no retry helps.
                    Some(failure) if failure.sender_fault() || round >= ROUNDS => {
                        unsent.push(Unsent {
                            job_id: batch[i].job_id.clone(),
                            reason: format!("SQS did not take the message ({})", failure.code()),
                        });
                    }
                    None if round >= ROUNDS => unsent.push(Unsent {
                        job_id: batch[i].job_id.clone(),
                        reason: "SQS did not confirm the message".to_owned(),
                    }),
                    _ => again.push(i),
                }
            }
            pending = again;
        }
        Ok(unsent)
    }
}

/// Messages grouped into SendMessageBatch calls, in order.
fn batches(messages: Vec<Outgoing>) -> Vec<Vec<Outgoing>> {
    let mut batches: Vec<Vec<Outgoing>> = Vec::new();
    let mut bytes = 0;
    for message in messages {
        let fits = batches.last().is_some_and(|batch| {
            batch.len() < BATCH_ENTRIES && bytes + message.body.len() <= BATCH_BYTES
        });
        if !fits {
            batches.push(Vec::new());
            bytes = 0;
        }
        bytes += message.body.len();
        if let Some(batch) = batches.last_mut() {
            batch.push(message);
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(bytes: usize) -> Outgoing {
        Outgoing {
            job_id: "j".into(),
            body: "x".repeat(bytes),
        }
    }

    #[test]
    fn batches_hold_ten_messages_and_at_most_256_kib() {
        let sizes = |messages: Vec<Outgoing>| -> Vec<usize> {
            batches(messages).iter().map(Vec::len).collect()
        };
        assert_eq!(sizes((0..25).map(|_| message(100)).collect()), [10, 10, 5]);
        assert_eq!(sizes(Vec::new()), Vec::<usize>::new());
        let big = BATCH_BYTES / 3;
        assert_eq!(sizes((0..7).map(|_| message(big)).collect()), [3, 3, 1]);
        assert_eq!(
            sizes(vec![message(BATCH_BYTES), message(1), message(BATCH_BYTES)]),
            [1, 1, 1]
        );
    }
}
