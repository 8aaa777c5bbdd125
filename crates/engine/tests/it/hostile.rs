//! Hostile servers: each ends the transfer with a clear error, bounded
//! memory, and nothing left in S3.

use std::time::Duration;

use ferry_testkit::{Behavior, Origin, test_bytes};

use crate::harness::{Harness, PART, test_config};

#[tokio::test]
async fn an_endless_body_is_stopped_at_the_maximum_object_size() {
    let mut config = test_config();
    config.max_object_size = Some(3 * PART as u64);
    let harness = Harness::with_config(config).await;
    let origin = Origin::start(
        test_bytes(1 << 20, 40),
        Behavior {
            endless: true,
            ..Behavior::default()
        },
    )
    .await;
    let err = harness
        .run(&harness.spec(&origin.url("forever"), "forever"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "too_large", "{err}");
    harness.assert_nothing_left("forever").await;
    // Stopped within a part of the limit (plus what was in socket buffers).
    assert!(
        origin.bytes_served() < 6 * PART as u64,
        "served {}",
        origin.bytes_served()
    );
}

#[tokio::test]
async fn an_announced_length_over_the_maximum_fails_before_any_upload() {
    let mut config = test_config();
    config.max_object_size = Some(PART as u64);
    let harness = Harness::with_config(config).await;
    let origin = Origin::start(test_bytes(PART * 2, 41), Behavior::default()).await;
    let err = harness
        .run(&harness.spec(&origin.url("big"), "big"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "too_large");
    assert_eq!(origin.requests(), 1, "only the probe");
    harness.assert_nothing_left("big").await;
}

#[tokio::test]
async fn a_slowloris_drip_below_the_minimum_rate_fails() {
    let mut config = test_config();
    config.source.min_rate_bytes_per_sec = 200_000;
    config.source.min_rate_window = Duration::from_millis(300);
    let harness = Harness::with_config(config).await;
    // 64 KiB every 500 ms: ~128 KB/s, steady enough to beat the read timeout.
    let origin = Origin::start(
        test_bytes(PART * 2, 42),
        Behavior {
            chunk_delay: Some(Duration::from_millis(500)),
            ..Behavior::default()
        },
    )
    .await;
    let err = harness
        .run(&harness.spec(&origin.url("drip"), "drip"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "source_too_slow", "{err}");
    harness.assert_nothing_left("drip").await;
}

#[tokio::test]
async fn huge_response_headers_fail_clearly() {
    let harness = Harness::new().await;
    let origin = Origin::start(
        test_bytes(100, 43),
        Behavior {
            huge_header: 2 << 20,
            ..Behavior::default()
        },
    )
    .await;
    let err = harness
        .run(&harness.spec(&origin.url("headers"), "headers"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "source_unreachable", "{err}");
    harness.assert_nothing_left("headers").await;
}
