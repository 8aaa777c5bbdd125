//! Workers as real processes: many jobs across two workers, shutdown, priority.

use std::time::{Duration, Instant};

use ferry_testkit::{Behavior, Origin, sha256_hex, test_bytes};

use crate::harness::{PART, Stack, number, text};

#[tokio::test]
async fn twenty_jobs_across_two_worker_processes_all_succeed() {
    let stack = Stack::new().await;
    let sizes = [
        0,
        1,
        1000,
        PART - 1,
        PART,
        PART + 1,
        3 * PART / 2,
        2 * PART + 3,
    ];
    // Both workers are polling before the jobs arrive, so both take part.
    let mut workers = [
        stack.start_worker_process(&[("FERRY_MAX_CONCURRENT_JOBS", "3")]),
        stack.start_worker_process(&[("FERRY_MAX_CONCURRENT_JOBS", "3")]),
    ];
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut expected = Vec::new();
    let mut origins = Vec::new();
    for i in 0..20 {
        let data = test_bytes(sizes[i % sizes.len()], i as u64);
        let origin = Origin::start(data.clone(), Behavior::default()).await;
        let id = format!("many-{i}");
        stack
            .send(&stack.queue, &stack.message(&id, &origin.url("f"), &id))
            .await;
        expected.push((id, data));
        origins.push(origin);
    }
    for (id, data) in &expected {
        let record = stack.wait_final(id, Duration::from_secs(120)).await;
        assert_eq!(text(&record, "status"), "succeeded", "{id}");
        assert_eq!(number(&record, "attempts"), 1, "{id}");
        let stored = stack.object(id).await.expect("stored");
        assert_eq!(sha256_hex(&stored), sha256_hex(data), "{id}");
    }
    let mut owners = std::collections::HashSet::new();
    for (id, _) in &expected {
        let record = stack.record(id).await.unwrap();
        owners.insert(text(&record, "worker_id").to_owned());
    }
    for worker in &mut workers {
        worker.terminate();
        let (status, log) = worker.wait(Duration::from_secs(30));
        assert!(status.success(), "worker exit {status:?}: {log}");
    }
    assert_eq!(owners.len(), 2, "both workers ran jobs: {owners:?}");
}

#[tokio::test]
async fn sigterm_mid_job_releases_it_and_a_second_worker_finishes() {
    let stack = Stack::new().await;
    let data = test_bytes(PART * 3, 7);
    // ~1.5 s per part: the job is still running when SIGTERM lands.
    let origin = stack.submit_slow("long", data.clone()).await;
    let mut first = stack.start_worker_process(&[("FERRY_SHUTDOWN_GRACE_SECS", "1")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.status("long").await.as_deref() != Some("running") {
        assert!(Instant::now() < deadline, "job never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopping = Instant::now();
    first.terminate();
    let (status, log) = first.wait(Duration::from_secs(30));
    let took = stopping.elapsed();
    assert!(status.success(), "exit 0 on SIGTERM, got {status:?}: {log}");
    assert!(
        took < Duration::from_secs(15),
        "stopped within the grace period (+ release), took {took:?}"
    );
    assert!(
        log.lines().any(|l| l.contains("\"released\"")),
        "log: {log}"
    );
    assert_eq!(stack.status("long").await.as_deref(), Some("queued"));

    origin.set(|b| b.chunk_delay = None);
    let mut second = stack.start_worker_process(&[]);
    let record = stack.wait_final("long", Duration::from_secs(60)).await;
    second.terminate();
    second.wait(Duration::from_secs(30));
    assert_eq!(text(&record, "status"), "succeeded");
    assert_eq!(number(&record, "attempts"), 2);
    let stored = stack.object("long").await.unwrap();
    assert_eq!(sha256_hex(&stored), sha256_hex(&data));
    assert_eq!(
        number(&record, "resumes"),
        1,
        "the released upload was resumed"
    );
    assert_eq!(stack.open_uploads().await, 0, "no upload left open");
}

#[tokio::test]
async fn the_high_priority_queue_is_drained_first() {
    let stack = Stack::new().await;
    let high = stack.create_queue("high").await;
    let origin = Origin::start(test_bytes(100, 8), Behavior::default()).await;
    for i in 0..4 {
        stack
            .send(
                &stack.queue,
                &stack.message(&format!("low-{i}"), &origin.url("x"), &format!("low-{i}")),
            )
            .await;
        stack
            .send(
                &high,
                &stack.message(&format!("high-{i}"), &origin.url("x"), &format!("high-{i}")),
            )
            .await;
    }
    let mut config = stack.config();
    config.queues = vec![high.clone(), stack.queue.clone()];
    config.max_concurrent_jobs = 1;
    let worker = stack.spawn_worker(config);
    let mut finished = Vec::new();
    for id in [
        "high-0", "high-1", "high-2", "high-3", "low-0", "low-1", "low-2", "low-3",
    ] {
        let record = stack.wait_final(id, Duration::from_secs(60)).await;
        finished.push((text(&record, "finished_at").to_owned(), id));
    }
    worker.stop().await;
    let last_high = finished
        .iter()
        .filter(|(_, id)| id.starts_with("high"))
        .map(|(t, _)| t)
        .max()
        .unwrap();
    let first_low = finished
        .iter()
        .filter(|(_, id)| id.starts_with("low"))
        .map(|(t, _)| t)
        .min()
        .unwrap();
    assert!(
        last_high <= first_low,
        "high jobs finish before low ones: {finished:?}"
    );
}

#[tokio::test]
async fn a_worker_whose_lease_is_taken_over_stops_and_writes_nothing() {
    let stack = Stack::new().await;
    let origin = stack
        .submit(
            "taken",
            test_bytes(PART * 3, 60),
            Behavior {
                // ~8 s per part: without lease-loss handling it would still be
                // fetching when the test looks.
                chunk_delay: Some(Duration::from_millis(100)),
                ..Behavior::default()
            },
        )
        .await;
    let worker = stack.spawn_worker(stack.config());
    // From the checkpoint on, the upload belongs to the job.
    stack
        .wait_for_checkpoint("taken", Duration::from_secs(30))
        .await;
    stack.take_over("taken").await;
    // Within a heartbeat or two the first worker notices and stops fetching.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let served = origin.bytes_served();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        origin.bytes_served(),
        served,
        "the stale worker kept fetching"
    );
    let record = stack.record("taken").await.unwrap();
    assert_eq!(
        text(&record, "status"),
        "running",
        "the stale worker wrote an outcome"
    );
    assert_eq!(text(&record, "lease_owner"), "rival");
    assert!(stack.object("taken").await.is_none());
    worker.stop().await;
    // The upload belongs to the job, now the rival's to resume: the stale
    // worker must leave it open.
    assert_eq!(
        stack.open_uploads().await,
        1,
        "the stale worker left the upload for the new owner"
    );
}

#[tokio::test]
async fn a_worker_whose_lease_was_taken_over_cannot_complete() {
    let stack = Stack::new().await;
    let data = test_bytes(PART * 2, 61);
    let origin = Origin::start(
        data,
        Behavior {
            // Part 2 pauses mid-body: the take-over happens meanwhile.
            stall_at: Some((PART as u64 + 64 * 1024, Duration::from_secs(3))),
            ..Behavior::default()
        },
    )
    .await;
    // The first heartbeat would come only after the whole job: the fenced
    // lease renewal before Complete is what must stop this worker.
    let mut config = stack.config();
    config.lease = Duration::from_secs(30);
    config.visibility = Duration::from_secs(30);
    config.heartbeat = Duration::from_secs(10);
    let worker = stack.spawn_worker(config);
    stack
        .send(
            &stack.queue,
            &stack.message("fenced", &origin.url("f"), "fenced"),
        )
        .await;
    stack
        .wait_for_checkpoint("fenced", Duration::from_secs(30))
        .await;
    stack.take_over("fenced").await;
    // The stall ends, part 2 arrives; without the fence the job would now
    // complete within a second.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let record = stack.record("fenced").await.unwrap();
    assert_eq!(text(&record, "lease_owner"), "rival");
    assert_eq!(text(&record, "status"), "running", "{record:?}");
    assert!(
        stack.object("fenced").await.is_none(),
        "the stale worker completed the upload"
    );
    assert_eq!(stack.open_uploads().await, 1, "left for the new owner");
    worker.stop().await;
}
