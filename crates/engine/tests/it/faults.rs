//! Faulty sources: each either recovers to a byte-identical object or fails
//! with a clear error and leaves nothing behind.

use std::time::Duration;

use ferry_engine::ErrorClass;
use ferry_testkit::{Behavior, Origin, test_bytes};

use crate::harness::{Harness, PART};

#[tokio::test]
async fn connection_reset_mid_part_resumes_from_the_last_good_byte() {
    let harness = Harness::new().await;
    let data = test_bytes(PART * 3, 21);
    let reset_at = PART as u64 + 123_456;
    let origin = Origin::start(
        data.clone(),
        Behavior {
            reset_at: Some((reset_at, 1)),
            ..Behavior::default()
        },
    )
    .await;
    let spec = harness.spec(&origin.url("r.bin"), "r.bin");
    let outcome = harness.run(&spec).await.unwrap();
    harness.assert_stored("r.bin", &data, &outcome).await;
    assert!(outcome.retries >= 1);
    // The retry asked only for the rest of the part.
    assert_eq!(origin.bytes_served(), data.len() as u64);
}

#[tokio::test]
async fn reset_of_a_stream_resumes_with_a_range_request() {
    let harness = Harness::new().await;
    let data = test_bytes(PART * 2 + 999, 22);
    // The probe is answered 200 (a streamed body) by a server that still
    // honours Range, so the resume asks only for what is missing.
    let origin = Origin::start(
        data.clone(),
        Behavior {
            reset_at: Some((PART as u64 + 777, 1)),
            ignore_range_requests: 1,
            ..Behavior::default()
        },
    )
    .await;
    let spec = harness.spec(&origin.url("s.bin"), "s.bin");
    let outcome = harness.run(&spec).await.unwrap();
    harness.assert_stored("s.bin", &data, &outcome).await;
    assert_eq!(origin.requests(), 2);
    assert_eq!(origin.bytes_served(), data.len() as u64);
}

#[tokio::test]
async fn reset_of_a_stream_without_ranges_fails_transiently_and_leaves_nothing() {
    let harness = Harness::new().await;
    let origin = Origin::start(
        test_bytes(PART * 2 + 999, 22),
        Behavior {
            ranges: false,
            reset_at: Some((PART as u64 + 777, 1)),
            ..Behavior::default()
        },
    )
    .await;
    let spec = harness.spec(&origin.url("s.bin"), "s.bin");
    let err = harness.run(&spec).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    harness.assert_nothing_left("s.bin").await;
}

#[tokio::test]
async fn server_errors_are_retried() {
    let harness = Harness::new().await;
    let data = test_bytes(PART + 10, 23);
    let origin = Origin::start(
        data.clone(),
        Behavior {
            fail_first: 2,
            ..Behavior::default()
        },
    )
    .await;
    let spec = harness.spec(&origin.url("e.bin"), "e.bin");
    let outcome = harness.run(&spec).await.unwrap();
    harness.assert_stored("e.bin", &data, &outcome).await;
    assert_eq!(outcome.retries, 2);
}

#[tokio::test]
async fn not_found_fails_at_once_as_permanent() {
    let harness = Harness::new().await;
    let origin = Origin::start(
        test_bytes(10, 1),
        Behavior {
            status: Some(404),
            ..Behavior::default()
        },
    )
    .await;
    let spec = harness.spec(&origin.url("missing"), "missing.bin");
    let err = harness.run(&spec).await.unwrap_err();
    assert_eq!(err.kind(), "source_not_found");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(origin.requests(), 1, "a 404 is not retried");
    harness.assert_nothing_left("missing.bin").await;
}

#[tokio::test]
async fn a_length_that_lies_fails_and_leaves_nothing() {
    let harness = Harness::new().await;
    let data = test_bytes(PART * 2, 24);
    let origin = Origin::start(
        data,
        Behavior {
            ranges: false,
            announced_length: Some(PART as u64 * 3),
            ..Behavior::default()
        },
    )
    .await;
    let spec = harness.spec(&origin.url("liar.bin"), "liar.bin");
    let err = harness.run(&spec).await.unwrap_err();
    assert!(
        matches!(err.kind(), "source_length_mismatch" | "source_unreachable"),
        "{err}"
    );
    harness.assert_nothing_left("liar.bin").await;
}

#[tokio::test]
async fn a_stalled_part_times_out_and_is_fetched_again() {
    let harness = Harness::new().await;
    let data = test_bytes(PART * 2 + 5, 25);
    let origin = Origin::start(
        data.clone(),
        Behavior {
            stall_at: Some((PART as u64 + 4096 * 16, Duration::from_secs(5))),
            ..Behavior::default()
        },
    )
    .await;
    let spec = harness.spec(&origin.url("slow.bin"), "slow.bin");
    let outcome = harness.run(&spec).await.unwrap();
    harness.assert_stored("slow.bin", &data, &outcome).await;
    assert!(outcome.retries >= 1);
}

#[tokio::test]
async fn a_source_that_changes_mid_transfer_fails_without_an_object() {
    let harness = Harness::new().await;
    // More parts than parts in flight, so some are requested after the change.
    let data = test_bytes(PART * 8, 26);
    let origin = Origin::start(
        data,
        Behavior {
            // Slow enough that the change lands while parts are still pending.
            chunk_delay: Some(Duration::from_millis(5)),
            ..Behavior::default()
        },
    )
    .await;
    let spec = harness.spec(&origin.url("moving.bin"), "moving.bin");
    let run = harness.run(&spec);
    let change = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        origin.set(|b| b.etag = Some("\"v2\"".into()));
    };
    let (result, ()) = tokio::join!(run, change);
    let err = result.unwrap_err();
    assert_eq!(err.kind(), "source_changed", "{err}");
    harness.assert_nothing_left("moving.bin").await;
}

#[tokio::test]
async fn a_wrong_expected_sha256_fails_and_leaves_no_object() {
    let harness = Harness::new().await;
    let data = test_bytes(PART * 2 + 1, 27);
    let origin = Origin::start(data, Behavior::default()).await;
    for (key, len) in [
        ("wrong-multi.bin", None),
        ("wrong-single.bin", Some(100u64)),
    ] {
        let mut spec = harness.spec(&origin.url(key), key);
        spec.expected.sha256 = Some("ab".repeat(32));
        if let Some(len) = len {
            // A small source: the single-PutObject path checks too.
            origin.set_body(test_bytes(len as usize, 3));
        }
        let err = harness.run(&spec).await.unwrap_err();
        assert_eq!(err.kind(), "checksum_mismatch", "{err}");
        harness.assert_nothing_left(key).await;
    }
}

#[tokio::test]
async fn a_wrong_expected_size_fails_before_any_upload() {
    let harness = Harness::new().await;
    let origin = Origin::start(test_bytes(PART * 2, 28), Behavior::default()).await;
    let mut spec = harness.spec(&origin.url("size.bin"), "size.bin");
    spec.expected.size = Some(5);
    let err = harness.run(&spec).await.unwrap_err();
    assert_eq!(err.kind(), "size_mismatch");
    harness.assert_nothing_left("size.bin").await;
}

#[tokio::test]
async fn a_missing_bucket_is_a_permanent_s3_error() {
    let harness = Harness::new().await;
    let origin = Origin::start(test_bytes(100, 29), Behavior::default()).await;
    let mut spec = harness.spec(&origin.url("x"), "x");
    spec.destination.bucket = "no-such-bucket-here".into();
    let err = harness.run(&spec).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
}

#[tokio::test]
async fn cancellation_aborts_the_upload() {
    let harness = Harness::new().await;
    let origin = Origin::start(
        test_bytes(PART * 4, 30),
        Behavior {
            chunk_delay: Some(Duration::from_millis(5)),
            ..Behavior::default()
        },
    )
    .await;
    let spec = harness.spec(&origin.url("c.bin"), "c.bin");
    let cancel = tokio_util::sync::CancellationToken::new();
    let run = harness.engine.transfer(
        &spec,
        std::sync::Arc::new(ferry_engine::NoopObserver),
        &cancel,
    );
    let stop = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
    };
    let (result, ()) = tokio::join!(run, stop);
    assert_eq!(result.unwrap_err().kind(), "cancelled");
    harness.assert_nothing_left("c.bin").await;
}
