//! Job slots: small jobs (one PutObject) do not wait behind large ones, and
//! a worker whose multipart slots are busy takes at most one more large job
//! off the queue — the rest stay visible for other workers.

use std::time::Duration;

use ferry_testkit::test_bytes;

use crate::harness::{PART, Stack, text};

fn one_multipart_slot(stack: &Stack) -> ferry_worker::config::WorkerConfig {
    let mut config = stack.config();
    config.max_concurrent_jobs = 8;
    config.engine.max_multipart_transfers = Some(1);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_jobs_pass_a_large_job_holding_the_only_multipart_slot() {
    let stack = Stack::new().await;
    // ~8 s a part (its three parts run side by side): the large job runs
    // long enough for four small ones even on a loaded machine.
    let _large = stack
        .submit(
            "large",
            test_bytes(3 * PART, 1),
            ferry_testkit::Behavior {
                chunk_delay: Some(Duration::from_millis(100)),
                ..ferry_testkit::Behavior::default()
            },
        )
        .await;
    let worker = stack.spawn_worker(one_multipart_slot(&stack));
    // Its checkpoint names its upload: it holds the slot.
    stack
        .wait_for_checkpoint("large", Duration::from_secs(30))
        .await;
    let small = test_bytes(64 * 1024, 2);
    let mut origins = Vec::new();
    for i in 0..4 {
        origins.push(
            stack
                .submit(&format!("small-{i}"), small.clone(), Default::default())
                .await,
        );
    }
    for i in 0..4 {
        let record = stack
            .wait_final(&format!("small-{i}"), Duration::from_secs(30))
            .await;
        assert_eq!(text(&record, "status"), "succeeded");
    }
    assert_eq!(
        stack.status("large").await.as_deref(),
        Some("running"),
        "the small jobs finished while the large one still ran"
    );
    let record = stack.wait_final("large", Duration::from_secs(60)).await;
    assert_eq!(text(&record, "status"), "succeeded");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_leaves_large_jobs_on_the_queue_for_others() {
    let stack = Stack::new().await;
    let mut origins = Vec::new();
    for i in 0..4 {
        origins.push(
            stack
                .submit_slow(&format!("large-{i}"), test_bytes(2 * PART, i))
                .await,
        );
    }
    let worker = stack.spawn_worker(one_multipart_slot(&stack));
    // Until the first job's record is final, one runs (or has just ended
    // its transfer and is writing its record), one more may hold the freed
    // multipart slot and one more may wait for it: at least one of the four
    // stays visible. (Without the rule, the first receive takes all four.)
    // Later, finished jobs' messages may be in flight while they are
    // deleted, so only that first stretch counts.
    let mut fewest_visible = u64::MAX;
    let mut finished = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while finished < 4 && tokio::time::Instant::now() < deadline {
        let (visible, _) = stack.queue_depth(&stack.queue).await;
        finished = 0;
        for i in 0..4 {
            let status = stack.status(&format!("large-{i}")).await;
            finished += usize::from(status.as_deref() == Some("succeeded"));
        }
        // Read after the depth: if none had finished by now, none had when
        // the depth was read (a job's record is final before its message
        // goes and before the next job can be received).
        if finished == 0 {
            fewest_visible = fewest_visible.min(visible);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.stop().await;
    assert_eq!(finished, 4, "every large job succeeded");
    assert!(
        (1..=4).contains(&fewest_visible),
        "before the first finished, {} of 4 large jobs were received; at most 3 may be",
        4 - fewest_visible.min(4)
    );
}
