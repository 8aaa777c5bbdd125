//! Metrics, health endpoints and structured logs of a real worker process.

use std::time::{Duration, Instant};

use ferry_testkit::{Behavior, Origin, test_bytes};

use crate::harness::{PART, Stack, text};

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[allow(
    clippy::disallowed_methods,
    reason = "a small metrics page, not a source body"
)]
pub(crate) async fn get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// The value of a sample line `name{labels} value`, or 0 when absent.
pub(crate) fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_a_real_job_and_logs_carry_its_id() {
    let stack = Stack::new().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut worker =
        stack.start_worker_process(&[("FERRY_METRICS_ADDR", &format!("127.0.0.1:{port}"))]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, _)) = get(&format!("{base}/readyz")).await {
            break;
        }
        assert!(Instant::now() < deadline, "worker never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(&format!("{base}/healthz")).await.unwrap().0, 200);
    let before = get(&format!("{base}/metrics")).await.unwrap().1;

    let data = test_bytes(PART * 2 + 5, 9);
    let origin = Origin::start(data.clone(), Behavior::default()).await;
    stack
        .send(
            &stack.queue,
            &stack.message("observed", &origin.url("f"), "observed"),
        )
        .await;
    let record = stack.wait_final("observed", Duration::from_secs(60)).await;
    assert_eq!(text(&record, "status"), "succeeded");
    // The worker counts the outcome just after writing the record: poll
    // (bounded) until it shows, then check every amount exactly.
    let succeeded = "ferry_jobs_total{outcome=\"succeeded\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let after = get(&format!("{base}/metrics")).await.unwrap().1;
        if sample(&after, "ferry_sqs_deletes_total") > sample(&before, "ferry_sqs_deletes_total")
            || Instant::now() > deadline
        {
            break after;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let moved = |series: &str| sample(&after, series) - sample(&before, series);
    let size = data.len() as f64;
    assert_eq!(moved(succeeded), 1.0, "{after}");
    assert_eq!(moved("ferry_uploaded_bytes_total"), size, "{after}");
    assert_eq!(moved("ferry_downloaded_bytes_total"), size, "{after}");
    assert_eq!(moved("ferry_part_upload_seconds_count"), 3.0, "{after}");
    assert!(moved("ferry_sqs_receives_total") >= 1.0);
    assert_eq!(moved("ferry_sqs_deletes_total"), 1.0);
    assert!(!after.contains("observed"), "no job id in metrics");
    assert!(!after.contains("127.0.0.1"), "no URL in metrics");

    worker.terminate();
    let (status, log) = worker.wait(Duration::from_secs(30));
    assert!(status.success());
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("log line is not JSON: {l}")))
        .collect();
    for event in ["claimed", "succeeded"] {
        let line = lines
            .iter()
            .find(|l| l["message"] == event)
            .unwrap_or_else(|| panic!("no {event} line in {log}"));
        assert_eq!(line["span"]["job_id"], "observed", "{line}");
    }
}

#[tokio::test]
async fn readiness_follows_the_emulator_going_away_and_coming_back() {
    // A server of this test's own, so stopping it disturbs no other test.
    let moto: &'static ferry_testkit::Moto = Box::leak(Box::new(ferry_testkit::Moto::start()));
    let stack = Stack::on(moto).await;
    let port = free_port();
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let mut worker =
        stack.start_worker_process(&[("FERRY_METRICS_ADDR", &format!("127.0.0.1:{port}"))]);
    let wait_for = |want: u16| {
        let readyz = readyz.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if get(&readyz).await.is_some_and(|(status, _)| status == want) {
                    return;
                }
                assert!(Instant::now() < deadline, "/readyz never answered {want}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_for(200).await;
    let emulator_port = moto.port();
    moto.stop();
    wait_for(503).await;
    assert_eq!(
        get(&format!("http://127.0.0.1:{port}/healthz"))
            .await
            .unwrap()
            .0,
        200,
        "still alive"
    );
    // The emulator comes back (empty): recreate the queue under its old name.
    let back: &'static ferry_testkit::Moto =
        Box::leak(Box::new(ferry_testkit::Moto::start_on(emulator_port)));
    let name = stack.queue.rsplit('/').next().unwrap().to_owned();
    back.sqs()
        .await
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap();
    wait_for(200).await;
    worker.terminate();
    worker.wait(Duration::from_secs(30));
    back.stop();
}
