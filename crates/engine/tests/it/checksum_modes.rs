//! Upload checksum modes (`FERRY_S3_CHECKSUM`): every mode stores the bytes
//! exactly in every planning shape, and the store reports the mode's
//! whole-object value; checksums sent wrong on purpose (a test hook) are
//! rejected by a store that checks.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ferry_engine::upload_checksum::ChecksumFault;
use ferry_engine::{ChecksumPolicy, UploadChecksum};
use ferry_testkit::{Behavior, Framing, Origin, test_bytes};
use md5::{Digest as _, Md5};

use crate::harness::{Harness, PART, store_checks, test_config};

async fn harness_in(mode: UploadChecksum) -> Harness {
    let mut config = test_config();
    config.upload_checksum = ChecksumPolicy {
        default: mode,
        ..ChecksumPolicy::default()
    };
    Harness::with_config(config).await
}

/// The shapes a plan takes: one PUT, ranged parts, a stream of unknown length.
fn shapes() -> [(&'static str, usize, Behavior); 3] {
    [
        ("single", PART / 2 + 7, Behavior::default()),
        ("ranged", 2 * PART + 11, Behavior::default()),
        (
            "streamed",
            PART + PART / 3,
            Behavior {
                framing: Framing::Chunked,
                ..Behavior::default()
            },
        ),
    ]
}

/// What S3's checksum headers carry: base64 of the big-endian CRC-32.
fn crc32_base64(algorithm: crc_fast::CrcAlgorithm, data: &[u8]) -> String {
    BASE64.encode((crc_fast::checksum(algorithm, data) as u32).to_be_bytes())
}

/// The object's value the store must report in `mode`, composed here
/// independently of the engine from the bytes and the part size.
fn expected_whole(mode: UploadChecksum, data: &[u8], parts: u32) -> Option<String> {
    let algorithm = match mode {
        UploadChecksum::Crc32c => crc_fast::CrcAlgorithm::Crc32Iscsi,
        UploadChecksum::Crc32 => crc_fast::CrcAlgorithm::Crc32IsoHdlc,
        UploadChecksum::Md5 if parts == 1 => {
            return Some(format!("\"{}\"", hex::encode(Md5::digest(data))));
        }
        UploadChecksum::Md5 => {
            let joined: Vec<u8> = data.chunks(PART).flat_map(Md5::digest).collect();
            return Some(format!("\"{}-{parts}\"", hex::encode(Md5::digest(&joined))));
        }
        _ => return None,
    };
    if parts == 1 {
        return Some(crc32_base64(algorithm, data));
    }
    let joined: Vec<u8> = data
        .chunks(PART)
        .flat_map(|chunk| (crc_fast::checksum(algorithm, chunk) as u32).to_be_bytes())
        .collect();
    Some(format!("{}-{parts}", crc32_base64(algorithm, &joined)))
}

#[tokio::test]
async fn every_mode_stores_every_shape_and_the_store_reports_the_modes_value() {
    for mode in UploadChecksum::ALL {
        let harness = harness_in(mode).await;
        for (shape, len, behavior) in shapes() {
            let data = test_bytes(len, len as u64);
            let origin = Origin::start(data.clone(), behavior).await;
            let key = format!("{mode}/{shape}");
            let spec = harness.spec(&origin.url("f"), &key);
            let outcome = harness
                .run(&spec)
                .await
                .unwrap_or_else(|err| panic!("{mode} {shape}: {err}"));
            let stored = harness.object(&key).await.expect("stored");
            assert!(stored == data, "{mode} {shape}: stored bytes differ");
            assert_eq!(harness.open_uploads().await, 0, "{mode} {shape}");
            let crc = ferry_engine::checksum::to_base64(ferry_engine::checksum::crc64nvme(&data));
            assert_eq!(
                outcome.checksum_crc64nvme, crc,
                "{mode} {shape}: ferry's own CRC"
            );

            let head = harness
                .s3
                .head_object()
                .bucket(&harness.bucket)
                .key(&key)
                .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
                .send()
                .await
                .unwrap();
            let reported = match mode {
                UploadChecksum::Crc32c => head.checksum_crc32_c.clone(),
                UploadChecksum::Crc32 => head.checksum_crc32.clone(),
                UploadChecksum::Md5 => head.e_tag.clone(),
                UploadChecksum::Crc64Nvme | UploadChecksum::None => None,
            };
            let mut expected = expected_whole(mode, &data, outcome.parts);
            if !store_checks() && matches!(mode, UploadChecksum::Crc32c | UploadChecksum::Crc32) {
                // moto reports a composite value without S3's `-N` suffix.
                expected = expected.map(|value| value.split('-').next().unwrap().to_owned());
            }
            assert_eq!(
                reported, expected,
                "{mode} {shape}: the store's whole-object value"
            );
            if mode == UploadChecksum::Crc64Nvme {
                assert_eq!(head.checksum_crc64_nvme.as_deref(), Some(crc.as_str()));
            }
            assert_eq!(
                head.checksum_crc32_c.is_some(),
                mode == UploadChecksum::Crc32c
            );
            assert_eq!(head.checksum_crc32.is_some(), mode == UploadChecksum::Crc32);
        }
    }
}

async fn with_fault(mode: UploadChecksum, fault: ChecksumFault) -> Harness {
    let mut config = test_config();
    config.upload_checksum.default = mode;
    config.checksum_fault = Some(fault);
    Harness::with_config(config).await
}

#[tokio::test]
async fn a_wrong_part_checksum_is_rejected_by_a_store_that_checks() {
    for mode in [
        UploadChecksum::Crc64Nvme,
        UploadChecksum::Crc32c,
        UploadChecksum::Crc32,
        UploadChecksum::Md5,
    ] {
        for (shape, len, behavior) in shapes() {
            let harness = with_fault(mode, ChecksumFault::Part).await;
            let data = test_bytes(len, 5);
            let origin = Origin::start(data.clone(), behavior).await;
            let key = format!("{mode}/{shape}");
            let result = harness.run(&harness.spec(&origin.url("f"), &key)).await;
            if store_checks() {
                let err = result.expect_err("a wrong checksum must be rejected");
                assert_eq!(err.kind(), "checksum_mismatch", "{mode} {shape}: {err}");
                assert!(
                    err.to_string().contains("BadDigest"),
                    "{mode} {shape}: {err}"
                );
                harness.assert_nothing_left(&key).await;
            } else {
                moto_never_stores_a_wrong_success(&harness, &key, &data, result).await;
            }
        }
    }
}

#[tokio::test]
async fn a_wrong_full_object_checksum_is_rejected_by_a_store_that_checks() {
    let harness = with_fault(UploadChecksum::Crc64Nvme, ChecksumFault::WholeObject).await;
    let data = test_bytes(2 * PART + 1, 6);
    let origin = Origin::start(data.clone(), Behavior::default()).await;
    let result = harness.run(&harness.spec(&origin.url("f"), "whole")).await;
    if store_checks() {
        let err = result.expect_err("a wrong full-object checksum must be rejected");
        assert_eq!(err.kind(), "checksum_mismatch", "{err}");
        harness.assert_nothing_left("whole").await;
    } else {
        moto_never_stores_a_wrong_success(&harness, "whole", &data, result).await;
    }
}

/// moto checks nothing it is sent; it stores a claimed CRC64NVME as told, so
/// ferry's own comparison may catch the lie. Either way no wrong object is
/// left as a success.
async fn moto_never_stores_a_wrong_success(
    harness: &Harness,
    key: &str,
    data: &[u8],
    result: Result<ferry_engine::TransferOutcome, ferry_engine::TransferError>,
) {
    match result {
        Ok(_) => assert!(harness.object(key).await.as_deref() == Some(data)),
        Err(err) => {
            assert_eq!(err.kind(), "checksum_mismatch", "{key}: {err}");
            harness.assert_nothing_left(key).await;
        }
    }
}
