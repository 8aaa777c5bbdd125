//! Successful transfers across sizes, source shapes and transports.

use ferry_testkit::{Behavior, Framing, Origin, TestCa, sha256_hex, test_bytes};

use crate::harness::{Harness, PART};

async fn copies_exactly(len: usize, behavior: Behavior) -> ferry_engine::TransferOutcome {
    let harness = Harness::new().await;
    let data = test_bytes(len, len as u64);
    let origin = Origin::start(data.clone(), behavior).await;
    let spec = harness.spec(&origin.url("file.bin"), "copy/file.bin");
    let outcome = harness.run(&spec).await.unwrap();
    harness
        .assert_stored("copy/file.bin", &data, &outcome)
        .await;
    outcome
}

#[tokio::test]
async fn copies_an_empty_object() {
    let outcome = copies_exactly(0, Behavior::default()).await;
    assert_eq!(outcome.parts, 1);
}

#[tokio::test]
async fn copies_one_byte() {
    copies_exactly(1, Behavior::default()).await;
}

#[tokio::test]
async fn copies_one_byte_less_than_a_part_with_a_single_put() {
    let outcome = copies_exactly(PART - 1, Behavior::default()).await;
    assert_eq!(outcome.parts, 1);
}

#[tokio::test]
async fn copies_exactly_one_part_with_a_single_put() {
    let outcome = copies_exactly(PART, Behavior::default()).await;
    assert_eq!(outcome.parts, 1);
}

#[tokio::test]
async fn copies_one_byte_more_than_a_part_as_two_parts() {
    let outcome = copies_exactly(PART + 1, Behavior::default()).await;
    assert_eq!(outcome.parts, 2);
}

#[tokio::test]
async fn copies_three_and_a_half_parts_with_ranged_reads() {
    let harness = Harness::new().await;
    let data = test_bytes(PART * 7 / 2, 35);
    let origin = Origin::start(data.clone(), Behavior::default()).await;
    let spec = harness.spec(&origin.url("big.bin"), "big.bin");
    let outcome = harness.run(&spec).await.unwrap();
    harness.assert_stored("big.bin", &data, &outcome).await;
    assert_eq!(outcome.parts, 4);
    // The probe's answer is part 1: four requests, each byte served once.
    assert_eq!(origin.requests(), 4);
    assert_eq!(origin.range_requests(), 4);
    assert_eq!(origin.bytes_served(), data.len() as u64);
}

#[tokio::test]
async fn streams_an_unknown_length_body_over_several_parts() {
    let outcome = copies_exactly(
        PART * 3 + 12_345,
        Behavior {
            ranges: false,
            framing: Framing::Chunked,
            ..Behavior::default()
        },
    )
    .await;
    assert_eq!(outcome.parts, 4);
}

#[tokio::test]
async fn streams_a_known_length_body_when_ranges_are_ignored() {
    let outcome = copies_exactly(
        PART * 2 + 7,
        Behavior {
            ranges: false,
            ..Behavior::default()
        },
    )
    .await;
    assert_eq!(outcome.parts, 3);
}

#[tokio::test]
async fn streams_a_small_unknown_length_body_with_a_single_put() {
    let outcome = copies_exactly(
        1000,
        Behavior {
            ranges: false,
            framing: Framing::Chunked,
            ..Behavior::default()
        },
    )
    .await;
    assert_eq!(outcome.parts, 1);
}

#[tokio::test]
async fn stream_ending_exactly_on_a_part_boundary() {
    let outcome = copies_exactly(
        PART * 2,
        Behavior {
            ranges: false,
            framing: Framing::Chunked,
            ..Behavior::default()
        },
    )
    .await;
    assert_eq!(outcome.parts, 2);
}

#[tokio::test]
async fn copies_from_an_https_origin_trusting_a_test_ca() {
    let ca = TestCa::new();
    let mut config = crate::harness::test_config();
    config.source.extra_ca_pem = Some(ca.pem().into_bytes());
    let harness = Harness::with_config(config).await;
    let data = test_bytes(PART + 100, 7);
    let origin = Origin::start_tls(data.clone(), Behavior::default(), &ca).await;
    let spec = harness.spec(&origin.localhost_url("secure.bin"), "secure.bin");
    let outcome = harness.run(&spec).await.unwrap();
    harness.assert_stored("secure.bin", &data, &outcome).await;
}

#[tokio::test]
async fn https_origin_with_an_untrusted_certificate_fails() {
    let harness = Harness::new().await;
    let origin = Origin::start_tls(test_bytes(10, 1), Behavior::default(), &TestCa::new()).await;
    let spec = harness.spec(&origin.localhost_url("x"), "untrusted.bin");
    let err = harness.run(&spec).await.unwrap_err();
    assert_eq!(err.kind(), "source_unreachable", "{err}");
    harness.assert_nothing_left("untrusted.bin").await;
}

#[tokio::test]
async fn stores_a_gzip_encoded_response_as_served() {
    let harness = Harness::new().await;
    // Bytes that claim to be gzip: the engine must neither decode nor reject them.
    let data = test_bytes(3000, 9);
    let origin = Origin::start(
        data.clone(),
        Behavior {
            content_encoding: Some("gzip".into()),
            ..Behavior::default()
        },
    )
    .await;
    let spec = harness.spec(&origin.url("archive.gz"), "archive.gz");
    let outcome = harness.run(&spec).await.unwrap();
    harness.assert_stored("archive.gz", &data, &outcome).await;
}

#[tokio::test]
async fn verifies_an_expected_sha256_and_md5() {
    let harness = Harness::new().await;
    let data = test_bytes(PART * 5 / 2, 11);
    let origin = Origin::start(data.clone(), Behavior::default()).await;
    let mut spec = harness.spec(&origin.url("d.bin"), "d.bin");
    spec.expected.sha256 = Some(sha256_hex(&data));
    spec.expected.md5 = Some(hex::encode(<md5::Md5 as md5::Digest>::digest(&data)));
    spec.expected.size = Some(data.len() as u64);
    let outcome = harness.run(&spec).await.unwrap();
    harness.assert_stored("d.bin", &data, &outcome).await;
}
