//! Metrics, health and readiness: the Prometheus recorder and the small HTTP
//! server for `/metrics`, `/healthz` and `/readyz`.
//!
//! Metric names live where they are recorded and follow
//! `ferry_<what>_<unit>[_total]` with labels of bounded cardinality (never a
//! job id or URL); docs/operations.md lists them. Health is process-wide
//! state that the poll loop, the queue and the store update.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// The poll loop counts as stuck after this long without a turn (unless it
/// is waiting for a free job slot, which can rightly take hours).
const STUCK_AFTER: Duration = Duration::from_secs(120);

/// Claims DynamoDB refused for good, one after another, before the worker
/// says it is not ready: one such message is the message's fault, several
/// in a row are the worker's (its table, its permissions, its credentials).
pub const REFUSED_CLAIMS_NOT_READY: u32 = 3;

/// Process-wide liveness and readiness signals.
pub struct Health {
    loop_turn_ms: AtomicU64,
    waiting_for_slot: AtomicBool,
    sqs_ok: AtomicBool,
    dynamodb_ok: AtomicBool,
    /// Claims refused for good since the last claim DynamoDB answered.
    claims_refused: AtomicU32,
    /// The queues (by URL) whose latest receive SQS refused for good, and
    /// why: no job can come from them until that changes.
    receives_refused: Mutex<BTreeMap<String, &'static str>>,
}

pub fn health() -> &'static Health {
    static HEALTH: OnceLock<Health> = OnceLock::new();
    HEALTH.get_or_init(|| Health {
        loop_turn_ms: AtomicU64::new(now_ms()),
        waiting_for_slot: AtomicBool::new(false),
        sqs_ok: AtomicBool::new(true),
        dynamodb_ok: AtomicBool::new(true),
        claims_refused: AtomicU32::new(0),
        receives_refused: Mutex::new(BTreeMap::new()),
    })
}

impl Health {
    pub fn loop_turned(&self) {
        self.loop_turn_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn set_waiting_for_slot(&self, waiting: bool) {
        self.waiting_for_slot.store(waiting, Ordering::Relaxed);
        self.loop_turned();
    }

    /// The outcome of the latest SQS call.
    pub fn sqs(&self, ok: bool) {
        self.sqs_ok.store(ok, Ordering::Relaxed);
        metrics::gauge!("ferry_sqs_reachable").set(f64::from(u8::from(ok)));
    }

    /// The outcome of the latest DynamoDB call.
    pub fn dynamodb(&self, ok: bool) {
        self.dynamodb_ok.store(ok, Ordering::Relaxed);
        metrics::gauge!("ferry_dynamodb_reachable").set(f64::from(u8::from(ok)));
    }

    /// DynamoDB refused a claim for good (its message was given up).
    pub fn claim_refused(&self) {
        let streak = self.claims_refused.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("ferry_claims_refused_in_a_row").set(f64::from(streak));
    }

    /// DynamoDB answered a claim (acquired, duplicate or busy).
    pub fn claim_answered(&self) {
        if self.claims_refused.swap(0, Ordering::Relaxed) != 0 {
            metrics::gauge!("ferry_claims_refused_in_a_row").set(0.0);
        }
    }

    /// SQS refused a receive from `queue_url` for good (`reason`, the
    /// `aws_error::permanent_reason` label).
    pub fn receive_refused(&self, queue_url: &str, reason: &'static str) {
        let mut refused = self.receives_refused();
        refused.insert(queue_url.to_owned(), reason);
        metrics::gauge!("ferry_sqs_queues_refused").set(refused.len() as f64);
    }

    /// SQS answered a receive from `queue_url` (messages or none).
    pub fn receive_answered(&self, queue_url: &str) {
        let mut refused = self.receives_refused();
        if refused.remove(queue_url).is_some() {
            metrics::gauge!("ferry_sqs_queues_refused").set(refused.len() as f64);
        }
    }

    fn receives_refused(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, &'static str>> {
        self.receives_refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_live(&self) -> bool {
        let idle = now_ms().saturating_sub(self.loop_turn_ms.load(Ordering::Relaxed));
        self.waiting_for_slot.load(Ordering::Relaxed) || idle < STUCK_AFTER.as_millis() as u64
    }

    pub fn is_ready(&self) -> bool {
        self.not_ready_because().is_none()
    }

    /// Why the worker cannot make progress now, if it cannot.
    pub fn not_ready_because(&self) -> Option<String> {
        if self.claims_refused.load(Ordering::Relaxed) >= REFUSED_CLAIMS_NOT_READY {
            return Some("DynamoDB refused the latest claims for good".to_owned());
        }
        {
            let refused = self.receives_refused();
            if !refused.is_empty() {
                let mut reasons: Vec<&str> = refused.values().copied().collect();
                reasons.sort_unstable();
                reasons.dedup();
                let queues = match refused.len() {
                    1 => "a queue".to_owned(),
                    n => format!("{n} queues"),
                };
                return Some(format!(
                    "SQS refused the latest receive from {queues} for good: {}",
                    reasons.join(", ")
                ));
            }
        }
        if !(self.sqs_ok.load(Ordering::Relaxed) && self.dynamodb_ok.load(Ordering::Relaxed)) {
            return Some("SQS or DynamoDB unreachable".to_owned());
        }
        None
    }
}

/// The engine's memory pool, sampled at scrape time.
static POOL: OnceLock<ferry_engine::pool::MemoryPool> = OnceLock::new();

pub fn watch_pool(pool: &ferry_engine::pool::MemoryPool) {
    let _ = POOL.set(pool.clone());
}

/// The engine's per-bucket S3 rate limiters, sampled at scrape time.
static S3_LIMITERS: OnceLock<ferry_engine::throttle::Limiters> = OnceLock::new();

pub fn watch_s3_limiters(limiters: &ferry_engine::throttle::Limiters) {
    let _ = S3_LIMITERS.set(limiters.clone());
}

fn sample_pool() {
    if let Some(pool) = POOL.get() {
        metrics::gauge!("ferry_memory_budget_bytes").set(pool.budget() as f64);
        metrics::gauge!("ferry_memory_in_use_bytes").set(pool.in_use() as f64);
    }
    for limiter in S3_LIMITERS.get().map(|l| l.stats()).unwrap_or_default() {
        let bucket = limiter.bucket;
        // 0 while the limiter is open (S3 has not throttled this bucket).
        metrics::gauge!("ferry_s3_rate_limit_requests_per_second", "bucket" => bucket.clone())
            .set(limiter.rate.unwrap_or(0.0));
        metrics::counter!("ferry_s3_throttles_total", "bucket" => bucket)
            .absolute(limiter.throttles);
    }
}

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
            .unwrap_or_else(|_| PrometheusBuilder::new());
        match builder.install_recorder() {
            Ok(handle) => handle,
            // Another recorder is installed (only in tests): render ours anyway.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

/// Serves `/metrics`, `/healthz`, `/readyz` on `addr` until `cancel` fires.
pub async fn serve(
    addr: SocketAddr,
    cancel: CancellationToken,
    tasks: &TaskTracker,
) -> std::io::Result<SocketAddr> {
    let handle = recorder();
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    info!(addr = %bound, "metrics and health endpoints listening");
    let connections = tasks.clone();
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = cancel.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    connections.spawn(respond(stream, handle));
                }
                Err(err) => warn!(error = %err, "metrics accept failed"),
            }
        }
    });
    Ok(bound)
}

async fn respond(mut stream: TcpStream, handle: &'static PrometheusHandle) {
    let mut head = [0u8; 2048];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head)).await;
    let Ok(Ok(n)) = read else { return };
    let request = String::from_utf8_lossy(&head[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    handle.run_upkeep();
    sample_pool();
    let health = health();
    let (status, body) = match path {
        "/metrics" => ("200 OK", handle.render()),
        "/healthz" if health.is_live() => ("200 OK", "ok\n".to_owned()),
        "/healthz" => ("503 Service Unavailable", "poll loop stuck\n".to_owned()),
        "/readyz" => match health.not_ready_because() {
            None => ("200 OK", "ready\n".to_owned()),
            Some(why) => ("503 Service Unavailable", format!("{why}\n")),
        },
        _ => ("404 Not Found", "not found\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
