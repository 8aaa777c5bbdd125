//! Multipart slots: with `max_multipart_transfers`, large transfers take
//! turns while small ones pass them, and a transfer that finds no free slot
//! waits holding nothing — a streamed one reads its first part again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferry_testkit::{Behavior, Origin, test_bytes};

use crate::harness::{Harness, PART, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_transfers_take_turns_and_small_ones_pass_them() {
    let mut config = test_config();
    config.max_multipart_transfers = Some(1);
    let h = Arc::new(Harness::with_config(config).await);
    // 64 KiB chunks: a 5 MiB part takes ~1.6 s from the slow origin and
    // ~0.4 s from the streamed one, which so reads its first part while
    // the ranged transfer still holds the slot.
    let large = test_bytes(3 * PART, 1);
    let ranged = Origin::start(
        large.clone(),
        Behavior {
            chunk_delay: Some(Duration::from_millis(20)),
            ..Behavior::default()
        },
    )
    .await;
    let streamed = Origin::start(
        large.clone(),
        Behavior {
            ranges: false,
            chunk_delay: Some(Duration::from_millis(5)),
            ..Behavior::default()
        },
    )
    .await;
    let small = test_bytes(100 * 1024, 2);
    let small_origin = Origin::start(small.clone(), Behavior::default()).await;

    // Watch what S3 holds: never more than one open multipart upload.
    let done = Arc::new(AtomicBool::new(false));
    let most_open = Arc::new(AtomicUsize::new(0));
    let most_waiting = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (h, done, most_open, most_waiting) = (
            Arc::clone(&h),
            Arc::clone(&done),
            Arc::clone(&most_open),
            Arc::clone(&most_waiting),
        );
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                most_open.fetch_max(h.open_uploads().await, Ordering::SeqCst);
                most_waiting.fetch_max(h.engine.multipart().waiting(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let first = {
        let h = Arc::clone(&h);
        let spec = h.spec(&ranged.url("big"), "ranged");
        tokio::spawn(async move { (h.run(&spec).await, Instant::now()) })
    };
    // Once the ranged transfer holds the only slot, the streamed one must
    // wait for it, and small ones must not.
    while h.engine.multipart().free() != Some(0) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = {
        let h = Arc::clone(&h);
        let spec = h.spec(&streamed.url("big"), "streamed");
        tokio::spawn(async move { h.run(&spec).await })
    };
    let mut smalls = Vec::new();
    for i in 0..3 {
        let h = Arc::clone(&h);
        let spec = h.spec(&small_origin.url("small"), &format!("small-{i}"));
        smalls.push(tokio::spawn(
            async move { (h.run(&spec).await, Instant::now()) },
        ));
    }
    let mut small_finished = Vec::new();
    for (i, task) in smalls.into_iter().enumerate() {
        let (outcome, at) = task.await.unwrap();
        assert_eq!(outcome.unwrap().parts, 1);
        // (Not `assert_stored`: the large upload is still open.)
        assert_eq!(
            h.object(&format!("small-{i}")).await.as_deref(),
            Some(&small[..])
        );
        small_finished.push(at);
    }
    let (first_outcome, first_finished) = first.await.unwrap();
    let second_outcome = second.await.unwrap().unwrap();
    done.store(true, Ordering::SeqCst);
    watcher.await.unwrap();

    h.assert_stored("ranged", &large, &first_outcome.unwrap())
        .await;
    h.assert_stored("streamed", &large, &second_outcome).await;
    assert!(
        small_finished.iter().all(|at| *at < first_finished),
        "small transfers finished before the large one holding the slot"
    );
    assert_eq!(most_open.load(Ordering::SeqCst), 1, "one upload at a time");
    assert!(
        most_waiting.load(Ordering::SeqCst) >= 1,
        "the streamed one waited"
    );
    // It let go of its first part while it waited, and read it again.
    assert!(
        second_outcome.bytes_fetched > large.len() as u64,
        "fetched {} of {}",
        second_outcome.bytes_fetched,
        large.len()
    );
    assert_eq!(h.engine.multipart().free(), Some(1), "the slot is back");
}
