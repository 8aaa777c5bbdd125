//! Destination policy and secrets: what strangers write never leaks.

use std::time::Duration;

use ferry_testkit::{Behavior, Origin, test_bytes};

use crate::harness::{Stack, text};

#[tokio::test]
async fn a_destination_outside_the_allowed_buckets_is_rejected() {
    let stack = Stack::new().await;
    let origin = Origin::start(test_bytes(100, 50), Behavior::default()).await;
    let mut config = stack.config();
    config.destinations = vec![ferry_worker::config::AllowedDestination {
        bucket: stack.bucket.clone(),
        prefix: "incoming/".into(),
    }];
    let worker = stack.spawn_worker(config);
    stack
        .send(
            &stack.queue,
            &stack.message("outside", &origin.url("x"), "elsewhere/x"),
        )
        .await;
    stack
        .send(
            &stack.queue,
            &stack.message("inside", &origin.url("x"), "incoming/x"),
        )
        .await;
    let outside = stack.wait_final("outside", Duration::from_secs(60)).await;
    let inside = stack.wait_final("inside", Duration::from_secs(60)).await;
    worker.stop().await;
    assert_eq!(text(&outside, "status"), "rejected");
    assert_eq!(text(&outside, "error_kind"), "destination_not_allowed");
    assert_eq!(text(&inside, "status"), "succeeded");
    assert_eq!(stack.drain(&stack.dlq).await.len(), 1);
    assert!(stack.object("elsewhere/x").await.is_none());
}

/// A presigned-style query, userinfo and an Authorization header, through a
/// real worker process: the secret strings appear in no log line, no job
/// record, no metric and no CLI output — on success and on failure.
#[tokio::test]
async fn secrets_never_reach_logs_records_metrics_or_cli_output() {
    let stack = Stack::new().await;
    let good = Origin::start(test_bytes(3000, 51), Behavior::default()).await;
    let missing = Origin::start(
        Vec::new(),
        Behavior {
            status: Some(404),
            ..Behavior::default()
        },
    )
    .await;
    let secrets = ["PASSWORDSECRET", "SIGSECRET", "CREDSECRET", "HDRSECRET"];
    let with_secrets = |origin: &Origin| {
        origin
            .url("f?X-Amz-Signature=SIGSECRET&X-Amz-Credential=CREDSECRET")
            .replacen("http://", "http://user:PASSWORDSECRET@", 1)
    };
    for (id, origin) in [("secret-ok", &good), ("secret-404", &missing)] {
        let mut message = stack.message(id, &with_secrets(origin), id);
        message["headers"] = serde_json::json!({"Authorization": "Bearer HDRSECRET"});
        stack.send(&stack.queue, &message).await;
    }
    // A rejected message with secrets too (bad bucket).
    let mut rejected = stack.message("secret-rejected", &with_secrets(&good), "k");
    rejected["bucket"] = "Not_A_Bucket".into();
    stack.send(&stack.queue, &rejected).await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut worker = stack.start_worker_process(&[
        ("FERRY_METRICS_ADDR", &format!("127.0.0.1:{port}")),
        ("RUST_LOG", "debug"),
    ]);
    let mut dumps = Vec::new();
    for id in ["secret-ok", "secret-404", "secret-rejected"] {
        let record = stack.wait_final(id, Duration::from_secs(60)).await;
        dumps.push(ferry_worker::store::to_json(&record).to_string());
        let cli = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["status", id, "--json", "--table", &stack.table])
            .env("AWS_ENDPOINT_URL", stack.moto.endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .output()
            .unwrap();
        assert!(cli.status.success());
        dumps.push(String::from_utf8_lossy(&cli.stdout).into_owned());
        dumps.push(String::from_utf8_lossy(&cli.stderr).into_owned());
    }
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    #[allow(
        clippy::disallowed_methods,
        reason = "a small metrics page, not a source body"
    )]
    let metrics = metrics.text().await.unwrap();
    worker.terminate();
    let (_, log) = worker.wait(Duration::from_secs(30));
    assert!(
        log.contains("secret-404") && log.contains("source_not_found"),
        "{log}"
    );
    dumps.push(log);
    dumps.push(metrics);
    for dump in &dumps {
        for secret in secrets {
            assert!(!dump.contains(secret), "{secret} leaked into: {dump}");
        }
    }
}
