//! The queues: each jobs queue exists and has a redrive policy whose
//! `maxReceiveCount` leaves room for every attempt and whose dead-letter
//! target exists; the worker's own dead-letter queue (FERRY_DLQ_URL) exists.
//! Only GetQueueAttributes, which the worker's role already holds.

use std::collections::HashMap;

use aws_sdk_sqs::types::QueueAttributeName;

use super::Check;
use super::sdk_error::Failure;

type Attributes = HashMap<QueueAttributeName, String>;

/// The queue's name: the last segment of its URL.
fn name(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

async fn attributes(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<Attributes, Failure> {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map(|output| output.attributes.unwrap_or_default())
        .map_err(|err| Failure::of("GetQueueAttributes", &err))
}

/// One jobs queue (an entry of FERRY_QUEUE_URL): exists, then its redrive.
pub(super) async fn queue(sqs: &aws_sdk_sqs::Client, url: &str, max_attempts: u32) -> Vec<Check> {
    let queue = name(url);
    let attributes = match attributes(sqs, url).await {
        Ok(attributes) => attributes,
        Err(failure) => {
            let fix = failure.fix(
                &format!("create the queue, or correct FERRY_QUEUE_URL ({url})"),
                "sqs:GetQueueAttributes on the queue",
            );
            return vec![Check::fail(
                "queue",
                format!("{queue}: {}", failure.line),
                fix,
            )];
        }
    };
    let visibility = attributes
        .get(&QueueAttributeName::VisibilityTimeout)
        .map_or("unknown".to_owned(), |v| format!("{v} s"));
    let mut checks = vec![Check::pass(
        "queue",
        format!(
            "{queue} exists; visibility timeout {visibility} (a worker sets its own per receive)"
        ),
    )];
    checks.extend(redrive(sqs, url, &attributes, max_attempts).await);
    checks
}

/// The redrive policy: present, `maxReceiveCount` above FERRY_MAX_ATTEMPTS,
/// its target queue there.
async fn redrive(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    attributes: &Attributes,
    max_attempts: u32,
) -> Vec<Check> {
    let queue = name(url);
    // Every attempt is a receive, and so are releases, crash resumes and
    // deferrals (docs/jobs.md); the stack gives 10 for the default 5.
    let advised = u64::from(max_attempts) * 2;
    let Some(policy) = attributes.get(&QueueAttributeName::RedrivePolicy) else {
        return vec![Check::fail(
            "redrive",
            format!(
                "{queue} has no redrive policy: a message whose job never ends (say, one that crashes workers) is received forever"
            ),
            format!(
                "give {queue} a RedrivePolicy: deadLetterTargetArn = a dead-letter queue's ARN, maxReceiveCount = {advised} (2 × FERRY_MAX_ATTEMPTS), as the CloudFormation stack does"
            ),
        )];
    };
    let policy: serde_json::Value = serde_json::from_str(policy).unwrap_or_default();
    // SQS gives the count as a number or as a string, depending on who set it.
    let count = match &policy["maxReceiveCount"] {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    };
    let target = policy["deadLetterTargetArn"].as_str().unwrap_or_default();
    let target_name = target.rsplit(':').next().unwrap_or_default();
    let mut checks = Vec::new();
    match count {
        None => checks.push(Check::fail(
            "redrive",
            format!("{queue}'s redrive policy has no maxReceiveCount"),
            format!("set maxReceiveCount = {advised} (2 × FERRY_MAX_ATTEMPTS) in its RedrivePolicy"),
        )),
        Some(count) if count <= u64::from(max_attempts) => checks.push(Check::fail(
            "redrive",
            format!("{queue}: maxReceiveCount {count} ≤ FERRY_MAX_ATTEMPTS {max_attempts}: every attempt is a receive, and so is every release, deferral or resume after a crash, so a job can reach the DLQ before its last attempt"),
            format!("raise maxReceiveCount to {advised} (2 × FERRY_MAX_ATTEMPTS: releases and deferrals are receives too), or lower FERRY_MAX_ATTEMPTS"),
        )),
        Some(count) if count < advised => checks.push(Check::pass(
            "redrive",
            format!("{queue} → {target_name} after {count} receives, above FERRY_MAX_ATTEMPTS {max_attempts}; note: below 2 × ({advised}), and releases, crash resumes and deferrals are receives too"),
        )),
        Some(count) => checks.push(Check::pass(
            "redrive",
            format!("{queue} → {target_name} after {count} receives (FERRY_MAX_ATTEMPTS {max_attempts})"),
        )),
    }
    checks.push(redrive_target(sqs, url, target).await);
    checks
}

/// The dead-letter target exists. SQS wants it in the queue's account and
/// region, so its URL is the queue's with the name swapped: no
/// sqs:GetQueueUrl needed, only GetQueueAttributes on the DLQ, which the
/// worker's role has.
async fn redrive_target(sqs: &aws_sdk_sqs::Client, url: &str, target: &str) -> Check {
    let queue = name(url);
    let Some(target_name) = target.rsplit(':').next().filter(|n| !n.is_empty()) else {
        return Check::fail(
            "redrive target",
            format!("{queue}'s redrive policy names no deadLetterTargetArn"),
            "set deadLetterTargetArn in its RedrivePolicy to the dead-letter queue's ARN",
        );
    };
    let target_url = match url.trim_end_matches('/').rsplit_once('/') {
        Some((account_path, _)) => format!("{account_path}/{target_name}"),
        None => target_name.to_owned(),
    };
    match attributes(sqs, &target_url).await {
        Ok(attributes) => {
            let arn = attributes.get(&QueueAttributeName::QueueArn);
            if arn.is_some_and(|arn| arn != target) {
                return Check::fail(
                    "redrive target",
                    format!(
                        "{queue} dead-letters to {target}, which is not the queue {target_url} (its ARN is {})",
                        arn.map_or("", String::as_str)
                    ),
                    "point the redrive policy at a queue of this account and region",
                );
            }
            Check::pass("redrive target", format!("{target_name} exists"))
        }
        Err(failure) => {
            let fix = failure.fix(
                &format!("create the queue {target_name}, or point {queue}'s redrive policy at an existing one"),
                &format!("sqs:GetQueueAttributes on {target_name}"),
            );
            Check::fail(
                "redrive target",
                format!("{queue} dead-letters to {target_name}: {}", failure.line),
                fix,
            )
        }
    }
}

/// FERRY_DLQ_URL, where the worker sends messages it rejects.
pub(super) async fn dlq(sqs: &aws_sdk_sqs::Client, url: Option<&str>) -> Check {
    let Some(url) = url else {
        return Check::pass(
            "dlq",
            "FERRY_DLQ_URL not set: rejected messages are left to the queue's redrive policy",
        );
    };
    let dlq = name(url);
    match attributes(sqs, url).await {
        Ok(_) => Check::pass("dlq", format!("{dlq} exists (rejected messages go there)")),
        Err(failure) => {
            let fix = failure.fix(
                &format!("create the queue, or correct FERRY_DLQ_URL ({url})"),
                "sqs:GetQueueAttributes (and sqs:SendMessage) on the dead-letter queue",
            );
            Check::fail("dlq", format!("{dlq}: {}", failure.line), fix)
        }
    }
}
