//! SQS: receive (long poll, batch), extend visibility, delete, release,
//! hand off, and dead-letter. Nothing here decides what a message means.
//!
//! # Handing a message off
//!
//! SQS bounds one message's life three ways: one receive stays invisible for
//! at most 12 hours, every receive counts towards the queue's
//! `maxReceiveCount` (then the message is dead-lettered), and a message older
//! than the queue's retention is deleted. A job may outlive all three — a
//! transfer of days, released at every deploy. [`Queue::hand_off`] puts an
//! identical job message on the queue (its `job_id` written into the body, so
//! it names the same job) and deletes the old one: the job goes on under a
//! message with a fresh receive count and retention. A copy left behind when
//! the delete fails is harmless — the claim lets one run and finds the job
//! final for the others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};
use ferry_engine::ErrorClass;

#[derive(Debug, thiserror::Error)]
#[error("SQS {operation} failed: {message}")]
pub struct QueueError {
    pub operation: &'static str,
    pub message: String,
    /// Why no retry can succeed (`aws_error::permanent_reason`: no such
    /// queue, access denied, an invalid receipt handle …), or `None` when
    /// waiting may help.
    pub permanent: Option<&'static str>,
}

impl QueueError {
    /// Whether the same request could succeed later.
    pub fn class(&self) -> ErrorClass {
        match self.permanent {
            Some(_) => ErrorClass::Permanent,
            None => ErrorClass::Transient,
        }
    }

    /// SQS's refusal as a metric label, when it refused for good.
    pub fn permanent_reason(&self) -> Option<&'static str> {
        self.permanent
    }
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
    /// Set once a successor carries the job: this message is gone (or about
    /// to be), and nothing more is done to it.
    handed_off: Arc<AtomicBool>,
}

impl Received {
    /// Until when no other receive can be handed this message.
    pub fn visible_until(&self) -> Instant {
        *self.visible_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_visible_until(&self, deadline: Instant) {
        *self.visible_until.lock().unwrap_or_else(|e| e.into_inner()) = deadline;
    }

    /// Whether a successor message carries the job now.
    pub fn handed_off(&self) -> bool {
        self.handed_off.load(Ordering::SeqCst)
    }
}

/// SendMessage's longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

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
        // A refusal is an answer: SQS is reachable (the poll loop says
        // what it refused, `worker::poll`).
        let answered = match &output {
            Ok(_) => true,
            Err(err) => crate::aws_error::permanent_reason(err).is_some(),
        };
        crate::metrics::health().sqs(answered);
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
                    handed_off: Arc::new(AtomicBool::new(false)),
                })
            })
            .collect();
        if messages.is_empty() {
            metrics::counter!("ferry_sqs_empty_receives_total").increment(1);
        }
        Ok(messages)
    }

    pub async fn delete(&self, message: &Received) -> Result<(), QueueError> {
        if message.handed_off() {
            return Ok(());
        }
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
        if message.handed_off() {
            return Ok(());
        }
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
                    permanent: Some("request_not_built"),
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

    /// Puts a successor for job `job_id`'s message on its queue, visible after
    /// `delay` (at most 15 minutes), then deletes the message (see the module
    /// docs). On a failed send nothing changed and the caller still holds the
    /// message; a failed delete leaves a harmless copy and is only counted.
    pub async fn hand_off(
        &self,
        message: &Received,
        job_id: &str,
        delay: Duration,
    ) -> Result<(), QueueError> {
        if message.handed_off() {
            return Ok(());
        }
        self.client
            .send_message()
            .queue_url(&message.queue_url)
            .message_body(body_naming(&message.body, job_id))
            .delay_seconds(secs_i32(delay.min(MAX_DELAY)))
            .send()
            .await
            .map_err(|err| queue_error("SendMessage", err))?;
        message.handed_off.store(true, Ordering::SeqCst);
        metrics::counter!("ferry_sqs_handoffs_total").increment(1);
        let deleted = self
            .client
            .delete_message()
            .queue_url(&message.queue_url)
            .receipt_handle(&message.receipt_handle)
            .send()
            .await;
        if let Err(err) = deleted {
            metrics::counter!("ferry_sqs_handoff_copies_total").increment(1);
            tracing::warn!(
                error = %queue_error("DeleteMessage", err),
                "handed-off message not deleted; its copy will be found a duplicate"
            );
        }
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

/// The message body with `job_id` written in, so that a successor names the
/// same job as a message whose id was its SQS MessageId. A body that is not
/// a JSON object (never a claimed job's) is kept as it is.
fn body_naming(body: &str, job_id: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut fields)) if !fields.contains_key("job_id") => {
            fields.insert("job_id".into(), job_id.into());
            serde_json::Value::Object(fields).to_string()
        }
        _ => body.to_owned(),
    }
}

fn secs_i32(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

fn queue_error<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    operation: &'static str,
    err: SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
) -> QueueError {
    let permanent = crate::aws_error::permanent_reason(&err);
    if let Some(reason) = permanent {
        metrics::counter!("ferry_sqs_refused_total", "operation" => operation, "reason" => reason)
            .increment(1);
    }
    QueueError {
        operation,
        message: crate::store::describe(&err),
        permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_successor_names_the_job_its_message_named() {
        let named = r#"{"url":"https://a/b","bucket":"b","key":"k","job_id":"given"}"#;
        assert_eq!(body_naming(named, "message-id"), named);
        let unnamed = r#"{"url":"https://a/b","bucket":"b","key":"k"}"#;
        let successor: serde_json::Value =
            serde_json::from_str(&body_naming(unnamed, "message-id")).unwrap();
        assert_eq!(successor["job_id"], "message-id");
        assert_eq!(successor["url"], "https://a/b");
        assert_eq!(body_naming("not json", "id"), "not json");
    }
}
