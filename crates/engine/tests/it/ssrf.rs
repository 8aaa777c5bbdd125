//! The address guard end to end: blocked destinations fail with
//! `blocked_destination` and are never dialled.

use std::net::IpAddr;

use ferry_engine::ErrorClass;
use ferry_engine::source::guard::AddressPolicy;
use ferry_testkit::{Behavior, CountingListener, Origin, test_bytes};

use crate::harness::{Harness, test_config};

async fn default_policy_harness() -> Harness {
    let mut config = test_config();
    config.source.address_policy = AddressPolicy::default();
    Harness::with_config(config).await
}

#[tokio::test]
async fn every_loopback_spelling_is_blocked_without_a_connection() {
    let harness = default_policy_harness().await;
    let target = CountingListener::bind("127.0.0.1".parse().unwrap()).await;
    let port = target.addr.port();
    let spellings = [
        format!("http://127.0.0.1:{port}/x"),
        format!("http://2130706433:{port}/x"),
        format!("http://0177.0.0.1:{port}/x"),
        format!("http://127.1:{port}/x"),
        format!("http://0x7f.1:{port}/x"),
        format!("http://[::ffff:127.0.0.1]:{port}/x"),
        format!("http://localhost:{port}/x"),
        format!("http://something.localhost:{port}/x"),
    ];
    for url in &spellings {
        let err = harness
            .run(&harness.spec(url, "blocked"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "blocked_destination", "{url}: {err}");
        assert_eq!(err.class(), ErrorClass::Permanent);
    }
    assert_eq!(
        target.connections(),
        0,
        "no connection may reach the target"
    );
    harness.assert_nothing_left("blocked").await;
}

#[tokio::test]
async fn private_metadata_and_special_ranges_are_blocked() {
    let harness = default_policy_harness().await;
    for url in [
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://169.254.170.2/v2/credentials/x",
        "http://[fd00:ec2::254]/latest/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.0.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://[fe80::1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:a9fe:a9fe::]/",
        "http://224.0.0.251/",
        "http://198.18.0.1/",
    ] {
        let err = harness
            .run(&harness.spec(url, "blocked"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "blocked_destination", "{url}: {err}");
    }
}

#[tokio::test]
async fn a_redirect_to_a_blocked_address_is_refused_before_connecting() {
    let mut config = test_config();
    // The origin is allowed; its neighbour on 127.0.0.2 is not.
    config.source.address_policy = AddressPolicy {
        allow: vec!["127.0.0.1/32".parse().unwrap()],
        ports: None,
    };
    let harness = Harness::with_config(config).await;
    let target = CountingListener::bind("127.0.0.2".parse::<IpAddr>().unwrap()).await;
    let origin = Origin::start(
        test_bytes(10, 1),
        Behavior {
            redirect_to: Some(format!("http://{}/secret", target.addr)),
            ..Behavior::default()
        },
    )
    .await;
    let err = harness
        .run(&harness.spec(&origin.url("start"), "redirected"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "blocked_destination", "{err}");
    assert_eq!(origin.requests(), 1, "the allowed origin was asked once");
    assert_eq!(
        target.connections(),
        0,
        "the redirect target was never dialled"
    );
}

#[tokio::test]
async fn an_allowed_port_list_blocks_other_ports() {
    let mut config = test_config();
    config.source.address_policy.ports = Some(vec![443]);
    let harness = Harness::with_config(config).await;
    let origin = Origin::start(test_bytes(10, 1), Behavior::default()).await;
    let err = harness
        .run(&harness.spec(&origin.url("x"), "port"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "blocked_destination");
    assert_eq!(origin.requests(), 0);
}
