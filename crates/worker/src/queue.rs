//! SQS: receive (long poll, batch), extend visibility, delete, release, and
//! dead-letter. Nothing here decides what a message means.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};

#[derive(Debug, thiserror::Error)]
#[error("SQS {operation} failed: {message}")]
pub struct QueueError {
    pub operation: &'static str,
    pub message: String,
}

/// One received message and where it came from.
#[derive(Debug, Clone)]
pub struct Received {
    pub queue_url: String,
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub receive_count: u32,
    pub received_at: Instant,
    /// Until when the message stays invisible at least: moved by every
    /// visibility change this process makes, whichever phase of the job
    /// (claim, transfer, final record) makes it.
    visible_until: Arc<Mutex<Instant>>,
}

impl Received {
    /// Until when no other receive can be handed this message.
    pub fn visible_until(&self) -> Instant {
        *self.visible_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_visible_until(&self, deadline: Instant) {
        *self.visible_until.lock().unwrap_or_else(|e| e.into_inner()) = deadline;
    }
}

#[derive(Clone)]
pub struct Queue {
    client: aws_sdk_sqs::Client,
}

impl Queue {
    pub fn new(client: aws_sdk_sqs::Client) -> Self {
        Self { client }
    }

    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.client
    }

    /// Up to `max` (1..=10) messages, waiting up to `wait` for the first.
    pub async fn receive(
        &self,
        queue_url: &str,
        max: i32,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(secs_i32(wait).min(20))
            .visibility_timeout(secs_i32(visibility))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await;
        crate::metrics::health().sqs(output.is_ok());
        let output = output.map_err(|err| queue_error("ReceiveMessage", err))?;
        let received_at = Instant::now();
        metrics::counter!("ferry_sqs_receives_total").increment(1);
        let messages: Vec<Received> = output
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                Some(Received {
                    queue_url: queue_url.to_owned(),
                    message_id: m.message_id?,
                    receipt_handle: m.receipt_handle?,
                    body: m.body.unwrap_or_default(),
                    receive_count,
                    received_at,
                    visible_until: Arc::new(Mutex::new(received_at + visibility)),
                })
            })
            .collect();
        if messages.is_empty() {
            metrics::counter!("ferry_sqs_empty_receives_total").increment(1);
        }
        Ok(messages)
    }

    pub async fn delete(&self, message: &Received) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&message.queue_url)
            .receipt_handle(&message.receipt_handle)
            .send()
            .await
            .map_err(|err| queue_error("DeleteMessage", err))?;
        metrics::counter!("ferry_sqs_deletes_total").increment(1);
        Ok(())
    }

    /// Makes the message invisible for `timeout` from now (0 releases it).
    pub async fn set_visibility(
        &self,
        message: &Received,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        // From before the request: SQS counts from when it applies it.
        let sent = Instant::now();
        self.client
            .change_message_visibility()
            .queue_url(&message.queue_url)
            .receipt_handle(&message.receipt_handle)
            .visibility_timeout(secs_i32(timeout))
            .send()
            .await
            .map_err(|err| queue_error("ChangeMessageVisibility", err))?;
        message.set_visible_until(sent + timeout);
        metrics::counter!("ferry_sqs_visibility_changes_total").increment(1);
        Ok(())
    }

    /// Copies a message to the dead-letter queue with the reason attached.
    pub async fn dead_letter(
        &self,
        dlq_url: &str,
        message: &Received,
        reason: &str,
    ) -> Result<(), QueueError> {
        let attribute = |value: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|err| QueueError {
                    operation: "SendMessage",
                    message: err.to_string(),
                })
        };
        self.client
            .send_message()
            .queue_url(dlq_url)
            .message_body(&message.body)
            .message_attributes("ferry_rejection", attribute(reason)?)
            .message_attributes("ferry_source_queue", attribute(&message.queue_url)?)
            .message_attributes("ferry_message_id", attribute(&message.message_id)?)
            .send()
            .await
            .map_err(|err| queue_error("SendMessage", err))?;
        Ok(())
    }

    pub async fn send(&self, queue_url: &str, body: &str) -> Result<String, QueueError> {
        let output = self
            .client
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|err| queue_error("SendMessage", err))?;
        Ok(output.message_id.unwrap_or_default())
    }
}

fn secs_i32(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

fn queue_error<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    operation: &'static str,
    err: SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
) -> QueueError {
    QueueError {
        operation,
        message: crate::store::describe(&err),
    }
}
