//! SQS faults: messages are never lost or repeated.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqs_faults_never_lose_or_repeat_a_job() {
    run_cells(cells(&[
        ("sqs.receive", Kind::Small, "sqs:ReceiveMessage", None),
        ("sqs.delete", Kind::Small, "sqs:DeleteMessage", None),
        (
            "sqs.extend_visibility",
            Kind::Slow,
            "sqs:ChangeMessageVisibility",
            None,
        ),
        ("sqs.dead_letter", Kind::Poison, "sqs:SendMessage", None),
    ]))
    .await;
}
