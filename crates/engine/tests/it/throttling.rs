//! S3 saying "slow down", through the AWS fault proxy: the transfer waits
//! without failing, and the bucket's limiter lowers the request rate.

use ferry_engine::Engine;
use ferry_testkit::aws_proxy::{AwsProxy, Fault, Rule};
use ferry_testkit::{Moto, Origin, test_bytes};

use crate::harness::{Harness, PART, test_config};

/// An engine whose S3 client goes through a fault proxy in front of the
/// tests' S3.
async fn through_proxy() -> (Harness, AwsProxy, Engine) {
    let harness = Harness::new().await;
    let proxy = AwsProxy::start(Moto::shared().endpoint()).await;
    let sdk = ferry_testkit::moto::sdk_config_at(&proxy.endpoint()).await;
    let builder = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true);
    let s3 = aws_sdk_s3::Client::from_conf(ferry_engine::s3_config(&builder).build());
    let engine = Engine::new(test_config(), s3).unwrap();
    (harness, proxy, engine)
}

async fn transfer(
    engine: &Engine,
    spec: &ferry_engine::TransferSpec,
) -> Result<ferry_engine::TransferOutcome, ferry_engine::TransferError> {
    let observer = std::sync::Arc::new(ferry_engine::NoopObserver);
    engine.transfer(spec, observer, &Default::default()).await
}

#[tokio::test]
async fn a_slowdown_storm_slows_the_bucket_down_and_the_transfer_still_succeeds() {
    let (harness, proxy, engine) = through_proxy().await;
    let data = test_bytes(6 * PART, 11);
    let origin = Origin::start(data.clone(), Default::default()).await;
    // Every part is throttled for the first four seconds.
    proxy.set_rules(vec![
        Rule::new("s3:UploadPart", Fault::Throttle).window(0.0, 4.0),
    ]);
    let spec = harness.spec(&origin.url("f"), "storm");
    let outcome = transfer(&engine, &spec)
        .await
        .expect("throttling delays a transfer, it never fails it");
    harness.assert_stored("storm", &data, &outcome).await;

    let throttled = proxy.faults("s3:UploadPart").len();
    assert!(throttled > 0, "the storm hit the parts");
    // Without a limiter, four parts in flight retrying every 20-200 ms
    // (the test backoff) would send well over a hundred requests in four
    // seconds; the limiter spaces them at a fraction of the rate S3 refused.
    assert!(
        throttled < 40,
        "{throttled} throttled UploadParts: the limiter did not slow down"
    );
    let stats = engine.s3_limiters().stats();
    let bucket = stats
        .iter()
        .find(|s| s.bucket == harness.bucket)
        .expect("a limiter for the bucket");
    assert_eq!(bucket.throttles, throttled as u64);
    assert!(bucket.rate.is_some_and(|r| r >= 0.5), "{bucket:?}");
}

#[tokio::test]
async fn a_lost_put_object_reply_is_not_followed_by_a_second_put() {
    let (harness, proxy, engine) = through_proxy().await;
    let data = test_bytes(100 * 1024, 12);
    let origin = Origin::start(data.clone(), Default::default()).await;
    proxy.set_rules(vec![Rule::new("s3:PutObject", Fault::Lost).times(1)]);
    let spec = harness.spec(&origin.url("f"), "lost");
    let outcome = transfer(&engine, &spec).await.unwrap();
    harness.assert_stored("lost", &data, &outcome).await;
    assert_eq!(proxy.forwarded("s3:PutObject").len(), 1, "one PutObject");
    assert_eq!(proxy.forwarded("s3:HeadObject").len(), 1, "checked instead");
}
