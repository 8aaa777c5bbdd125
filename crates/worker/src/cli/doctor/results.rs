//! The result targets (FERRY_RESULT_TOPIC_ARN, FERRY_RESULT_QUEUE_URL): each
//! one set exists and the worker's role may read it. Nothing is published:
//! a test event would reach every subscriber. Only GetTopicAttributes and
//! GetQueueAttributes, which the stack's result policies grant.

use aws_sdk_sns::operation::get_topic_attributes::GetTopicAttributesOutput;
use aws_sdk_sqs::types::QueueAttributeName;

use super::Check;
use super::sdk_error::Failure;

/// The last segment of an ARN or a queue URL.
fn name(id: &str) -> &str {
    id.trim_end_matches('/')
        .rsplit([':', '/'])
        .next()
        .unwrap_or(id)
}

/// A check per result target set; none when neither is.
pub(super) async fn targets(
    sns: &aws_sdk_sns::Client,
    sqs: &aws_sdk_sqs::Client,
    topic: Option<&str>,
    queue: Option<&str>,
) -> Vec<Check> {
    let topic = async {
        match topic {
            Some(arn) => Some(result_topic(sns, arn).await),
            None => None,
        }
    };
    let queue = async {
        match queue {
            Some(url) => Some(result_queue(sqs, url).await),
            None => None,
        }
    };
    let (topic, queue) = tokio::join!(topic, queue);
    topic.into_iter().chain(queue).collect()
}

async fn result_topic(sns: &aws_sdk_sns::Client, arn: &str) -> Check {
    let topic = name(arn);
    match sns.get_topic_attributes().topic_arn(arn).send().await {
        Ok(output) => Check::pass("result topic", topic_detail(topic, &output)),
        Err(err) => {
            let failure = Failure::of("GetTopicAttributes", &err);
            let fix = failure.fix(
                &format!("create the topic, or correct FERRY_RESULT_TOPIC_ARN ({arn})"),
                "sns:GetTopicAttributes and sns:Publish on the topic",
            );
            Check::fail("result topic", format!("{topic}: {}", failure.line), fix)
        }
    }
}

fn topic_detail(topic: &str, output: &GetTopicAttributesOutput) -> String {
    let confirmed = output
        .attributes()
        .and_then(|attributes| attributes.get("SubscriptionsConfirmed"))
        .and_then(|count| count.parse::<u64>().ok());
    match confirmed {
        Some(0) => format!(
            "{topic} exists, with no confirmed subscription yet: events published now reach no one; nothing published"
        ),
        Some(count) => {
            format!("{topic} exists; {count} confirmed subscription(s); nothing published")
        }
        None => format!("{topic} exists; nothing published"),
    }
}

async fn result_queue(sqs: &aws_sdk_sqs::Client, url: &str) -> Check {
    let queue = name(url);
    let answer = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::MessageRetentionPeriod)
        .send()
        .await;
    match answer {
        Ok(output) => {
            let retention = output
                .attributes()
                .and_then(|attributes| attributes.get(&QueueAttributeName::MessageRetentionPeriod))
                .and_then(|secs| secs.parse::<u64>().ok())
                .map_or(String::new(), |secs| {
                    format!("; events kept {} days", secs / 86_400)
                });
            Check::pass(
                "result queue",
                format!("{queue} exists{retention}; nothing sent"),
            )
        }
        Err(err) => {
            let failure = Failure::of("GetQueueAttributes", &err);
            let fix = failure.fix(
                &format!("create the queue, or correct FERRY_RESULT_QUEUE_URL ({url})"),
                "sqs:GetQueueAttributes and sqs:SendMessage on the queue",
            );
            Check::fail("result queue", format!("{queue}: {}", failure.line), fix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_named_by_their_last_segment() {
        assert_eq!(
            name("arn:aws:sns:us-east-1:123456789012:ferry-results"),
            "ferry-results"
        );
        assert_eq!(
            name("https://sqs.us-east-1.amazonaws.com/123456789012/ferry-results/"),
            "ferry-results"
        );
    }
}
