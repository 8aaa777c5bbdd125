//! Fencing to the end: a worker cut off from DynamoDB and SQS — it can no
//! longer renew its lease, and never learns that it lost it — writes nothing
//! to S3 once another worker may hold the job: no part, no Complete, no
//! PutObject, no abort. The two workers' clocks differ by a quarter of the
//! lease, the skew leases tolerate (docs/reliability.md, "Clocks"): the
//! other's runs ahead, or the cut-off one's behind.

use std::time::{Duration, Instant};

use ferry_testkit::aws_proxy::{AwsProxy, Fault, Rule};
use ferry_testkit::{Behavior, sha256_hex, test_bytes, unique_name};

use crate::harness::{PART, Stack, number, proxied_clients, spawn_worker_with, text};

const LEASE: Duration = Duration::from_secs(8);

/// A quarter of the lease: the most the clocks of two workers may differ.
const SKEW_SECS: i64 = 2;

/// From the renewal's arrival at the proxy to A's gate check before an S3
/// request, and the request's arrival: loopback and a busy machine.
const GATE_SLACK_MS: u64 = 250;

struct Cut {
    stack: Stack,
    /// Worker A's way to AWS, cut off from DynamoDB and SQS mid-job.
    cut_off: AwsProxy,
    /// Worker B's, untouched: its log dates B's claim.
    other: AwsProxy,
}

impl Cut {
    async fn new() -> Self {
        let stack = Stack::new().await;
        let cut_off = AwsProxy::start(stack.moto.endpoint()).await;
        let other = AwsProxy::start(stack.moto.endpoint()).await;
        Self {
            stack,
            cut_off,
            other,
        }
    }

    fn config(&self, skew_secs: i64) -> ferry_worker::config::WorkerConfig {
        let mut config = self.stack.config();
        config.worker_id = unique_name("fenced");
        config.lease = LEASE;
        config.heartbeat = Duration::from_secs(1);
        config.visibility = LEASE;
        config.busy_recheck = Duration::from_secs(2);
        config.clock_skew_secs = skew_secs;
        config
    }

    /// Runs job `id` on worker A, cuts A off once `started` says so, lets B
    /// take it over (their clocks `SKEW_SECS` apart, as `skew` says), and
    /// checks that A sent no S3 request once its lease lapsed or B's claim
    /// reached DynamoDB.
    async fn run(&self, id: &str, data: &[u8], behavior: Behavior, started: Started, skew: Skew) {
        let (a_skew, b_skew) = match skew {
            Skew::OtherAhead => (0, SKEW_SECS),
            Skew::CutOffBehind => (-SKEW_SECS, 0),
        };
        let origin = ferry_testkit::Origin::start(data.to_vec(), behavior).await;
        let a = spawn_worker_with(self.config(a_skew), proxied_clients(&self.cut_off).await);
        self.stack
            .send(
                &self.stack.queue,
                &self.stack.message(id, &origin.url("f"), id),
            )
            .await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !started.reached(&self.stack, id).await {
            assert!(Instant::now() < deadline, "job {id} never got going");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.cut_off.set_rules(vec![
            Rule::new("dynamodb:*", Fault::Hang { ms: None }),
            Rule::new("sqs:*", Fault::Hang { ms: None }),
        ]);
        let b_config = self.config(b_skew);
        let b_id = b_config.worker_id.clone();
        let b = spawn_worker_with(b_config, proxied_clients(&self.other).await);
        // The source stays slow until B holds the job, so A is still at work
        // when its lease lapses; then both read at full speed, and A tries to
        // write what it read.
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.claim_ms().is_none() {
            assert!(Instant::now() < deadline, "B never claimed {id}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        origin.set(|b| b.chunk_delay = None);
        let record = self.stack.wait_final(id, Duration::from_secs(120)).await;
        // A's last reads end, and its refused writes with them. A reads at
        // full speed once B holds the job, but on a loaded machine may still
        // be reading when B is done: wait for its reads (bounded), not a
        // fixed time, before checking them below.
        if matches!(started, Started::Running(_)) {
            let deadline = Instant::now() + Duration::from_secs(30);
            while origin.bytes_served() < 2 * data.len() as u64 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        b.stop().await;
        drop(a);

        assert_eq!(text(&record, "status"), "succeeded", "{record:?}");
        assert_eq!(text(&record, "worker_id"), b_id, "B finished the job");
        let stored = self.stack.object(id).await.expect("stored");
        assert_eq!(sha256_hex(&stored), sha256_hex(data));
        let claimed_ms = self.claim_ms().expect("B's claim");
        let a_s3: Vec<_> = self
            .cut_off
            .log()
            .into_iter()
            .filter(|e| e.op.starts_with("s3:"))
            .collect();
        // A's own view: it may write until three quarters of the lease
        // after its last renewal that DynamoDB answered (sent a moment
        // before the proxy saw it).
        let renewed_ms = self
            .cut_off
            .log()
            .into_iter()
            .filter(|e| e.op == "dynamodb:UpdateItem" && e.answered == Some(200))
            .map(|e| e.unix_ms)
            .max()
            .expect("A's claim");
        let gate_ms = renewed_ms + (LEASE * 3 / 4).as_millis() as u64 + GATE_SLACK_MS;
        let late: Vec<_> = a_s3
            .iter()
            .filter(|e| e.unix_ms >= claimed_ms.min(gate_ms))
            .collect();
        assert!(
            late.is_empty(),
            "A wrote to S3 after its lease lapsed ({gate_ms}) or B claimed ({claimed_ms}): {late:#?}"
        );
        match started {
            // A had uploaded, then was refused.
            Started::BytesDone(_) => assert!(!a_s3.is_empty(), "A wrote before the cut"),
            // A read the whole source after B's claim and stored nothing.
            Started::Running(_) => {
                assert!(a_s3.is_empty(), "{a_s3:#?}");
                assert!(origin.bytes_served() >= 2 * data.len() as u64);
            }
        }
        println!(
            "{id}: A's last S3 request {} ms before B's claim, {} ms before its gate ({} requests)",
            claimed_ms as i64 - a_s3.last().map_or(0, |e| e.unix_ms as i64),
            gate_ms as i64 - a_s3.last().map_or(0, |e| e.unix_ms as i64),
            a_s3.len()
        );
        assert_eq!(number(&record, "attempts"), 2);
    }

    /// When B's claim reached DynamoDB: B's first UpdateItem answered 200
    /// (a refused claim answers 400).
    fn claim_ms(&self) -> Option<u64> {
        self.other
            .log()
            .into_iter()
            .find(|e| e.op == "dynamodb:UpdateItem" && e.answered == Some(200))
            .map(|e| e.unix_ms)
    }
}

/// Which worker's clock is off.
enum Skew {
    OtherAhead,
    CutOffBehind,
}

/// When worker A is far enough into the job to be cut off.
enum Started {
    /// Parts acknowledged by S3, in `bytes_done`.
    BytesDone(u64),
    /// Claimed, and reading for this long.
    Running(Duration),
}

impl Started {
    async fn reached(&self, stack: &Stack, id: &str) -> bool {
        let Some(record) = stack.record(id).await else {
            return false;
        };
        match self {
            Self::BytesDone(bytes) => {
                ferry_worker::store::number(&record, "bytes_done").unwrap_or(0) >= *bytes
            }
            Self::Running(after) => {
                if ferry_worker::store::text(&record, "status") != Some("running") {
                    return false;
                }
                tokio::time::sleep(*after).await;
                true
            }
        }
    }
}

/// A multipart job with a checkpoint: B resumes A's upload, and A must not
/// add a part to it (or complete it) once B may.
#[tokio::test]
async fn a_worker_cut_off_mid_upload_writes_no_part_once_another_claims() {
    let cut = Cut::new().await;
    let data = test_bytes(14 * PART, 71);
    let behavior = Behavior {
        chunk_delay: Some(Duration::from_millis(40)),
        ..Behavior::default()
    };
    cut.run(
        "parts",
        &data,
        behavior,
        Started::BytesDone(PART as u64),
        Skew::OtherAhead,
    )
    .await;
}

/// A single PutObject: A is still reading when its lease lapses and must not
/// store the object over the one B stores.
#[tokio::test]
async fn a_worker_cut_off_mid_read_stores_no_object_once_another_claims() {
    let cut = Cut::new().await;
    let data = test_bytes(PART - 1000, 72);
    let behavior = Behavior {
        chunk_delay: Some(Duration::from_millis(400)),
        ..Behavior::default()
    };
    cut.run(
        "single",
        &data,
        behavior,
        Started::Running(Duration::from_secs(1)),
        Skew::CutOffBehind,
    )
    .await;
}

/// A stream without a checkpoint: B starts its own upload, and A must not
/// abort its own (nor anything else) once B may hold the job.
#[tokio::test]
async fn a_worker_cut_off_mid_stream_aborts_nothing_once_another_claims() {
    let cut = Cut::new().await;
    let data = test_bytes(10 * PART, 73);
    let behavior = Behavior {
        ranges: false,
        chunk_delay: Some(Duration::from_millis(40)),
        ..Behavior::default()
    };
    cut.run(
        "stream",
        &data,
        behavior,
        Started::BytesDone(PART as u64),
        Skew::CutOffBehind,
    )
    .await;
}
