//! Result events: each job's final record, published once it is final, to
//! the SNS topic (`FERRY_RESULT_TOPIC_ARN`) and/or the SQS queue
//! (`FERRY_RESULT_QUEUE_URL`) a worker is given — so a pipeline subscribes
//! instead of polling DynamoDB.
//!
//! The event is the record's user-facing attributes (never a lease field, a
//! token or the kept message; the URL is the redacted one the record holds)
//! and an `event_id` that names the final state: `JOB:RETRIED:FENCE:STATUS`.
//! The same final state published twice — a worker that died between the
//! publish and the message delete, a duplicate message that finds the job
//! final — carries the same id, so a subscriber drops the second copy (a
//! FIFO topic or queue does so itself: the id is its deduplication id).
//!
//! Publishing never decides a job's fate: the record is written first and
//! stays the truth. A publish is retried (the SDK's adaptive retries, then a
//! few more tries), and one that still fails is counted
//! (`ferry_result_events_total{outcome="failed"}`) and logged; the job's
//! message is deleted all the same.

use aws_sdk_sns::types::MessageAttributeValue as SnsAttribute;
use aws_sdk_sqs::types::MessageAttributeValue as SqsAttribute;
use serde_json::{Map, Value};
use sha2::Digest as _;
use tracing::{info, warn};

use crate::patience;
use crate::store::{self, JobStore, Record, Status};

/// Where final records go, when anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultTargets {
    pub topic_arn: Option<String>,
    pub queue_url: Option<String>,
}

impl ResultTargets {
    pub fn is_empty(&self) -> bool {
        self.topic_arn.is_none() && self.queue_url.is_none()
    }
}

/// Record attributes an event carries: what a user reads in `ferry status
/// --json`, without the internals.
const EVENT_FIELDS: &[&str] = &[
    "job_id",
    "status",
    "url",
    "bucket",
    "key",
    "size",
    "etag",
    "checksum",
    "checksum_algorithm",
    "source_integrity",
    "source_digests",
    "skipped",
    "error_kind",
    "error",
    "attempts",
    "retried",
    "duration_secs",
    "throughput_mbps",
    "parts",
    "created_at",
    "started_at",
    "finished_at",
    "cancelled_by",
];

/// The event of a final record; `None` for a record that is not final.
pub fn event(record: &Record) -> Option<Value> {
    let json = store::to_json(record);
    let status = json.get("status")?.as_str()?;
    if !Status::parse(status).is_some_and(Status::is_final) {
        return None;
    }
    let job_id = json.get("job_id")?.as_str()?.to_owned();
    let count = |name: &str| json.get(name).and_then(Value::as_u64).unwrap_or(0);
    let mut event = Map::new();
    event.insert("type".into(), "ferry.job.final".into());
    event.insert("version".into(), 1.into());
    event.insert(
        "event_id".into(),
        format!("{job_id}:{}:{}:{status}", count("retried"), count("fence")).into(),
    );
    for name in EVENT_FIELDS {
        if let Some(value) = json.get(*name) {
            event.insert((*name).into(), value.clone());
        }
    }
    Some(Value::Object(event))
}

/// What an event carries besides its body, on SNS and SQS alike: a FIFO
/// target's group and deduplication ids, and the `event_id` and `status`
/// attributes (subscription filter policies select on them). The two SDKs'
/// request builders share these setters but no trait.
macro_rules! envelope {
    ($request:expr, $attribute:ty, $target:expr, $event_id:expr, $status:expr) => {{
        let fifo = $target.ends_with(".fifo");
        let mut request = $request
            .set_message_group_id(fifo.then(|| group_of($event_id)))
            .set_message_deduplication_id(fifo.then(|| deduplication_id($event_id)));
        for (name, value) in [("event_id", $event_id), ("status", $status)] {
            if let Ok(value) = <$attribute>::builder()
                .data_type("String")
                .string_value(value)
                .build()
            {
                request = request.message_attributes(name, value);
            }
        }
        request
    }};
}

/// Publishes final records to the configured targets.
#[derive(Clone)]
pub struct Publisher {
    sns: aws_sdk_sns::Client,
    sqs: aws_sdk_sqs::Client,
    targets: ResultTargets,
}

/// Rounds of one publish, each the SDK's own retries (adaptive, six
/// attempts): the job's slot and message wait for it, so an SNS or SQS
/// outage costs each job about a minute at most, never its result.
const PUBLISH_TRIES: u32 = 2;

impl Publisher {
    pub fn new(sns: aws_sdk_sns::Client, sqs: aws_sdk_sqs::Client, targets: ResultTargets) -> Self {
        Self { sns, sqs, targets }
    }

    /// Publishes `job_id`'s record if it is final (read again, consistently:
    /// the event is what DynamoDB holds). Never fails the caller.
    pub async fn job_final(&self, store: &JobStore, job_id: &str) {
        if self.targets.is_empty() {
            return;
        }
        let record = match patience::retry_with(
            "result event record read",
            PUBLISH_TRIES,
            patience::aws_backoff,
            |_| false,
            || store.get(job_id),
        )
        .await
        {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(err) => {
                failed("record", &err.to_string());
                return;
            }
        };
        let Some(event) = event(&record) else { return };
        let event_id = event["event_id"].as_str().unwrap_or_default().to_owned();
        let status = event["status"].as_str().unwrap_or_default().to_owned();
        let body = event.to_string();
        if let Some(topic) = &self.targets.topic_arn {
            let sent = patience::retry_with(
                "result event publish (SNS)",
                PUBLISH_TRIES,
                patience::aws_backoff,
                |err| crate::aws_error::permanent_reason(err).is_some(),
                || self.publish_sns(topic, &body, &event_id, &status),
            )
            .await;
            report(
                "sns",
                sent.map(|_| ()).map_err(|e| e.to_string()),
                &event_id,
            );
        }
        if let Some(queue) = &self.targets.queue_url {
            let sent = patience::retry_with(
                "result event send (SQS)",
                PUBLISH_TRIES,
                patience::aws_backoff,
                |err| crate::aws_error::permanent_reason(err).is_some(),
                || self.send_sqs(queue, &body, &event_id, &status),
            )
            .await;
            report(
                "sqs",
                sent.map(|_| ()).map_err(|e| e.to_string()),
                &event_id,
            );
        }
    }

    async fn publish_sns(
        &self,
        topic: &str,
        body: &str,
        event_id: &str,
        status: &str,
    ) -> Result<
        aws_sdk_sns::operation::publish::PublishOutput,
        aws_sdk_sns::error::SdkError<aws_sdk_sns::operation::publish::PublishError>,
    > {
        let request = self.sns.publish().topic_arn(topic).message(body);
        envelope!(request, SnsAttribute, topic, event_id, status)
            .send()
            .await
    }

    async fn send_sqs(
        &self,
        queue: &str,
        body: &str,
        event_id: &str,
        status: &str,
    ) -> Result<
        aws_sdk_sqs::operation::send_message::SendMessageOutput,
        aws_sdk_sqs::error::SdkError<aws_sdk_sqs::operation::send_message::SendMessageError>,
    > {
        let request = self.sqs.send_message().queue_url(queue).message_body(body);
        envelope!(request, SqsAttribute, queue, event_id, status)
            .send()
            .await
    }
}

/// One FIFO group per job: its events stay in order, jobs do not wait on
/// each other.
fn group_of(event_id: &str) -> String {
    let job_id = event_id.split(':').next().unwrap_or(event_id);
    job_id.to_owned()
}

/// FIFO deduplication ids are at most 128 characters: the event id's
/// SHA-256, hex.
fn deduplication_id(event_id: &str) -> String {
    hex::encode(sha2::Sha256::digest(event_id.as_bytes()))
}

fn report(target: &'static str, sent: Result<(), String>, event_id: &str) {
    match sent {
        Ok(()) => {
            metrics::counter!("ferry_result_events_total", "target" => target, "outcome" => "published")
                .increment(1);
            info!(target, event_id, "result event published");
        }
        Err(err) => failed(target, &err),
    }
}

fn failed(target: &'static str, err: &str) {
    metrics::counter!("ferry_result_events_total", "target" => target, "outcome" => "failed")
        .increment(1);
    warn!(
        target,
        error = err,
        "result event not published; the job record holds the result"
    );
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::AttributeValue;

    use super::*;

    fn record(pairs: &[(&str, AttributeValue)]) -> Record {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect()
    }

    fn s(text: &str) -> AttributeValue {
        AttributeValue::S(text.into())
    }

    fn n(number: u64) -> AttributeValue {
        AttributeValue::N(number.to_string())
    }

    #[test]
    fn an_event_is_the_user_facing_record_with_a_stable_id() {
        let final_record = record(&[
            ("job_id", s("j-1")),
            ("status", s("succeeded")),
            ("url", s("https://example.com/a?<redacted>")),
            ("bucket", s("b")),
            ("key", s("k")),
            ("size", n(5)),
            ("fence", n(2)),
            ("retried", n(1)),
            ("claim_token", s("secret-token")),
            ("lease_owner", s("w-1")),
            ("message", s(r#"{"version":1}"#)),
            ("status_shard", s("succeeded#03")),
            ("skipped", AttributeValue::Bool(true)),
        ]);
        let event = event(&final_record).expect("final");
        assert_eq!(event["event_id"], "j-1:1:2:succeeded");
        assert_eq!(event["type"], "ferry.job.final");
        assert_eq!(event["size"], 5);
        assert_eq!(event["skipped"], true);
        let text = event.to_string();
        for internal in [
            "secret-token",
            "w-1",
            "status_shard",
            "fence",
            "\"message\"",
        ] {
            assert!(!text.contains(internal), "{internal} in {text}");
        }
        // The same final state gives the same id; another one another.
        assert_eq!(self::event(&final_record), Some(event));
        let running = record(&[("job_id", s("j-1")), ("status", s("running"))]);
        assert_eq!(self::event(&running), None);
    }

    #[test]
    fn fifo_ids_fit_their_limits() {
        let id = format!("{}:0:1:failed", "j".repeat(128));
        assert_eq!(deduplication_id(&id).len(), 64);
        assert_eq!(group_of(&id), "j".repeat(128));
    }
}
