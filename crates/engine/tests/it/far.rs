//! A far source: more parts download at once when a ranged GET's answer
//! takes a round trip that the configured slots cannot cover (`reach`).

use std::time::Duration;

use ferry_testkit::{Behavior, Origin, test_bytes};

use crate::harness::{Harness, PART, test_config};

/// Copies 8 parts with 2 download slots configured; returns the most
/// requests the origin answered at once.
async fn most_concurrent_requests(answer_delay: Option<Duration>) -> u64 {
    let mut config = test_config();
    config.max_concurrent_parts = 2;
    let harness = Harness::with_config(config).await;
    let data = test_bytes(8 * PART, 18);
    let origin = Origin::start(
        data.clone(),
        Behavior {
            answer_delay,
            // A body that takes a while, so that parts overlap.
            chunk_delay: Some(Duration::from_millis(2)),
            ..Behavior::default()
        },
    )
    .await;
    let spec = harness.spec(&origin.url("far.bin"), "far.bin");
    let outcome = harness.run(&spec).await.unwrap();
    harness.assert_stored("far.bin", &data, &outcome).await;
    origin.most_concurrent_requests()
}

#[tokio::test]
async fn a_near_source_gets_the_configured_download_slots() {
    assert_eq!(most_concurrent_requests(None).await, 2);
}

#[tokio::test]
async fn a_far_source_gets_more_parts_downloading_at_once() {
    // 160 ms before each answer is two sets' worth (one per ~75 ms).
    let most = most_concurrent_requests(Some(Duration::from_millis(160))).await;
    assert!(
        (3..=4).contains(&most),
        "{most} requests at once; expected 2 slots widened to at most 4"
    );
}
