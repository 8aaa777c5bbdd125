//! `ferry worker`: the SQS poll loop and the one shutdown path.
//!
//! The loop receives only as many messages as it has free job slots (never a
//! message it cannot start now) and, while jobs turn out large, hardly more
//! than it has multipart slots (see [`batch_size`]); it polls queues in
//! strict priority order (or weighted), passing over a queue SQS refuses to
//! receive from for good (see [`Refusals`]), and on
//! shutdown stops polling at once, gives running jobs the grace period, then
//! releases what still runs. Every job task is owned by one `TaskTracker`.

use std::sync::Arc;
use std::time::Duration;

use ferry_engine::admission::MultipartGate;
use ferry_engine::{Engine, ErrorClass};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::WorkerConfig;
use crate::protection::TaskProtection;
use crate::queue::{Queue, QueueError, Received};
use crate::results::Publisher;
use crate::runner::{self, Context};
use crate::store::JobStore;

/// What a worker talks to; tests build these against the emulator.
pub struct Clients {
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// Result events to an SNS topic (used only when one is configured).
    pub sns: aws_sdk_sns::Client,
    /// ECS scale-in protection while jobs run (disabled off ECS).
    pub protection: TaskProtection,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot start the engine: {0}")]
    Engine(#[from] ferry_engine::TransferError),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Runs until `shutdown` fires, then drains as described above.
pub async fn run(
    config: WorkerConfig,
    clients: Clients,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let s3 = clients.s3.clone();
    let engine = Engine::new(config.engine.clone(), clients.s3)?;
    crate::metrics::watch_pool(engine.pool());
    crate::metrics::watch_s3_limiters(engine.s3_limiters());
    let protection = clients.protection;
    let background = TaskTracker::new();
    let stop_background = CancellationToken::new();
    background.spawn(protection.clone().run(stop_background.clone()));
    let health = crate::metrics::health();
    if let Some(addr) = config.metrics_addr {
        crate::metrics::serve(addr, stop_background.clone(), &background)
            .await
            .map_err(|source| WorkerError::Metrics { addr, source })?;
    }
    let ctx = Arc::new(Context {
        results: Publisher::new(clients.sns, clients.sqs.clone(), config.results.clone()),
        queue: Queue::new(clients.sqs),
        store: JobStore::new(clients.dynamodb, config.table.clone())
            .with_clock_skew(config.clock_skew_secs),
        engine,
        config,
    });
    if let Some(schedule) = ctx.config.gc {
        background.spawn(crate::gc::sweep_periodically(
            s3,
            ctx.store.clone(),
            ctx.config.destinations.clone(),
            schedule,
            stop_background.clone(),
        ));
    }
    let slots = Arc::new(Semaphore::new(ctx.config.max_concurrent_jobs));
    let jobs = TaskTracker::new();
    let release_jobs = CancellationToken::new();
    info!(
        worker_id = %ctx.config.worker_id, queues = ctx.config.queues.len(),
        max_concurrent_jobs = ctx.config.max_concurrent_jobs,
        max_large_jobs = ?ctx.engine.multipart().limit(), "worker started"
    );
    let mut failures = 0u32;
    let mut order = PollOrder::new(&ctx.config.queue_weights, ctx.config.queues.len());
    let mut refusals = Refusals::new(ctx.config.queues.len());
    loop {
        health.set_waiting_for_slot(true);
        let first_slot = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        // Zero while a received job waits for a multipart slot (or may be
        // about to): the loop waits for that to change (see `batch_size`).
        // Under load, a few slots are gathered first (see `GATHER_SLOTS`).
        let enough = (ctx.config.max_concurrent_jobs / 8).clamp(1, GATHER_SLOTS);
        let gathering_since = tokio::time::Instant::now();
        let want = loop {
            let free = 1 + slots.available_permits();
            let want = batch_size(free, ctx.engine.multipart());
            let pause = if want == 0 {
                Duration::from_millis(20)
            } else if free < enough && gathering_since.elapsed() < GATHER_AT_MOST {
                Duration::from_millis(10)
            } else {
                break want;
            };
            tokio::select! {
                () = shutdown.cancelled() => break 0,
                () = tokio::time::sleep(pause) => {}
            }
        };
        if shutdown.is_cancelled() {
            break;
        }
        health.set_waiting_for_slot(false);
        let poll_order = order.next();
        let received = tokio::select! {
            // Dropping an in-flight receive loses nothing: anything SQS sent
            // but we did not read becomes visible again after its timeout.
            () = shutdown.cancelled() => break,
            received = poll(&ctx, &poll_order, want, &mut refusals) => received,
        };
        let messages = match received {
            Ok(messages) => {
                failures = 0;
                messages
            }
            Err(PollError::AllRefused { next_try }) => {
                // Every queue refused for good (/readyz says so): nothing
                // to ask until the first of them is due again.
                failures = 0;
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep_until(next_try) => continue,
                }
            }
            Err(PollError::Trouble(err)) => {
                failures += 1;
                metrics::counter!("ferry_sqs_errors_total").increment(1);
                let pause = Duration::from_millis(250 << failures.min(6));
                warn!(error = %err, retry_in_ms = pause.as_millis() as u64, "receive failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let mut first_slot = Some(first_slot);
        for message in messages {
            // At most `free` messages arrived, so a slot is always there.
            let Some(slot) = first_slot
                .take()
                .or_else(|| Arc::clone(&slots).try_acquire_owned().ok())
            else {
                warn!("no free slot for a received message; releasing it");
                let _ = ctx.queue.set_visibility(&message, Duration::ZERO).await;
                continue;
            };
            let ctx = Arc::clone(&ctx);
            let stop = release_jobs.clone();
            let busy = protection.busy();
            // From now until its transfer knows its size, the job may be a
            // large one: the next receive must count it.
            let deciding = ctx.engine.multipart().deciding_one();
            jobs.spawn(async move {
                runner::handle(ctx, message, stop, deciding).await;
                drop((slot, busy));
            });
        }
    }
    drain(&ctx.config, &jobs, &release_jobs).await;
    // Only now may scale-in take the task: no job runs any more.
    stop_background.cancel();
    background.close();
    background.wait().await;
    info!("worker stopped");
    Ok(())
}

/// A busy worker's slots free one at a time, and a receive per freed slot
/// costs an SQS call per job. So a receive waits until an eighth of the
/// slots, at most this many, are free (a worker with few slots does not
/// wait: its jobs are few and long) …
const GATHER_SLOTS: usize = 4;
/// … but no longer than this: a job waiting in the queue starts at most
/// this much later, and a saturated worker makes at most one receive per
/// four jobs.
const GATHER_AT_MOST: Duration = Duration::from_millis(250);

/// Consecutive small jobs after which the next receive asks for a full
/// batch: below that, any message may be a large job.
const SMALL_STREAK_FOR_FULL_BATCHES: u32 = 10;

/// How many messages one receive asks for, given `free` job slots. A job
/// waiting here for a multipart slot holds its message from other workers,
/// so: none while one waits. Otherwise all free slots (up to SQS's 10) while
/// recent jobs were small; else no more than the multipart slots not
/// spoken for by jobs still finding out their size — and when all are
/// busy, one (a small job runs at once; a large one is the only one that
/// waits here), but none while a job may still turn out large.
fn batch_size(free: usize, multipart: &MultipartGate) -> usize {
    let free = free.min(10);
    if multipart.waiting() > 0 {
        return 0;
    }
    match multipart.free() {
        None => free,
        Some(_) if multipart.small_streak() >= SMALL_STREAK_FOR_FULL_BATCHES => free,
        Some(large_free) => {
            let deciding = multipart.deciding();
            match large_free.saturating_sub(deciding) {
                0 if deciding == 0 => free.min(1),
                0 => 0,
                open => free.min(open),
            }
        }
    }
}

/// Which queue each poll tries first: strict priority, or smooth weighted
/// round-robin (deterministic: weights 3,1 give A A B A, A A B A, …).
struct PollOrder {
    weights: Vec<i64>,
    current: Vec<i64>,
    queues: usize,
}

impl PollOrder {
    fn new(weights: &[u32], queues: usize) -> Self {
        Self {
            weights: weights.iter().map(|w| i64::from(*w)).collect(),
            current: vec![0; weights.len()],
            queues,
        }
    }

    /// Queue indexes for the next poll: the chosen first, then the rest in
    /// priority order.
    fn next(&mut self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.queues).collect();
        if self.weights.is_empty() {
            return order;
        }
        let total: i64 = self.weights.iter().sum();
        for (current, weight) in self.current.iter_mut().zip(&self.weights) {
            *current += weight;
        }
        let first = (0..self.current.len())
            .max_by_key(|&i| (self.current[i], std::cmp::Reverse(i)))
            .unwrap_or(0);
        self.current[first] -= total;
        order.retain(|&i| i != first);
        order.insert(0, first);
        order
    }
}

/// Why a poll brought nothing.
enum PollError {
    /// SQS trouble worth retrying soon (throttled, 5xx, no answer).
    Trouble(QueueError),
    /// Every queue refused for good lately; the first is asked again at
    /// `next_try`.
    AllRefused { next_try: tokio::time::Instant },
}

/// Receives from the queues in `order`, returning the first batch. A queue
/// SQS refuses to receive from for good (deleted, access denied, its KMS
/// key unusable) is passed over until its pause is over (see [`Refusals`]):
/// the other queues are still polled, and `/readyz` names the refusal.
async fn poll(
    ctx: &Context,
    order: &[usize],
    max: usize,
    refusals: &mut Refusals,
) -> Result<Vec<Received>, PollError> {
    let queues = &ctx.config.queues;
    let max = i32::try_from(max).unwrap_or(10);
    let asked: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&index| !refusals.paused(index))
        .collect();
    let mut answered = false;
    for (position, &index) in asked.iter().enumerate() {
        let queue_url = &queues[index];
        let last = position + 1 == asked.len();
        // Higher-priority queues get a short wait so lower ones are reached;
        // the last one long-polls so an idle worker makes few calls.
        let wait = if last {
            ctx.config.poll_wait
        } else {
            Duration::from_secs(1).min(ctx.config.poll_wait)
        };
        match ctx
            .queue
            .receive(queue_url, max, wait, ctx.config.visibility)
            .await
        {
            Ok(messages) => {
                answered = true;
                if refusals.answered(index) {
                    crate::metrics::health().receive_answered(queue_url);
                    info!(queue = %queue_url, "SQS receives from the queue again");
                }
                if !messages.is_empty() {
                    return Ok(messages);
                }
            }
            Err(err) if err.class() == ErrorClass::Permanent => {
                let reason = err.permanent_reason().unwrap_or("refused");
                crate::metrics::health().receive_refused(queue_url, reason);
                let pause = refusals.refused(index);
                warn!(
                    queue = %queue_url, error = %err, reason, retry_in_secs = pause.as_secs(),
                    "SQS refused to receive from the queue for good; the others are still polled"
                );
            }
            Err(err) => return Err(PollError::Trouble(err)),
        }
    }
    match (answered, refusals.next_try()) {
        (false, Some(next_try)) => Err(PollError::AllRefused { next_try }),
        _ => Ok(Vec::new()),
    }
}

/// The shortest and longest pause before a queue that refused a receive
/// for good is asked again: it doubles with each refusal in a row. Short
/// enough that a mended queue (re-created, permission restored) is polled
/// again within half a minute; long enough that a deleted one costs two
/// calls a minute.
const REFUSED_QUEUE_PAUSE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// Per queue: refusals in a row and when it may be asked again.
struct Refusals {
    queues: Vec<Option<(u32, tokio::time::Instant)>>,
}

impl Refusals {
    fn new(queues: usize) -> Self {
        Self {
            queues: vec![None; queues],
        }
    }

    /// Whether queue `index` waits out a refusal now.
    fn paused(&self, index: usize) -> bool {
        self.queues[index].is_some_and(|(_, at)| at > tokio::time::Instant::now())
    }

    /// Counts a refusal; returns the pause before the queue is asked again.
    fn refused(&mut self, index: usize) -> Duration {
        let (short, long) = REFUSED_QUEUE_PAUSE;
        let in_a_row = self.queues[index].map_or(0, |(n, _)| n) + 1;
        let pause = short
            .saturating_mul(1 << in_a_row.saturating_sub(1).min(10))
            .min(long);
        self.queues[index] = Some((in_a_row, tokio::time::Instant::now() + pause));
        pause
    }

    /// Forgets the queue's refusals; says whether there were any.
    fn answered(&mut self, index: usize) -> bool {
        self.queues[index].take().is_some()
    }

    /// When the first refused queue may be asked again, if any is refused.
    fn next_try(&self) -> Option<tokio::time::Instant> {
        self.queues.iter().flatten().map(|&(_, at)| at).min()
    }
}

async fn drain(config: &WorkerConfig, jobs: &TaskTracker, release_jobs: &CancellationToken) {
    jobs.close();
    if jobs.is_empty() {
        return;
    }
    info!(
        running = jobs.len(),
        grace_secs = config.shutdown_grace.as_secs(),
        "stopping: letting running jobs finish"
    );
    if tokio::time::timeout(config.shutdown_grace, jobs.wait())
        .await
        .is_err()
    {
        warn!(
            running = jobs.len(),
            "grace period over: releasing running jobs"
        );
        release_jobs.cancel();
        jobs.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::{
        Duration, MultipartGate, PollOrder, REFUSED_QUEUE_PAUSE, Refusals,
        SMALL_STREAK_FOR_FULL_BATCHES, batch_size,
    };

    #[test]
    fn receives_follow_the_free_multipart_slots_until_jobs_prove_small() {
        assert_eq!(batch_size(32, &MultipartGate::new(None)), 10);
        let gate = MultipartGate::new(Some(4));
        assert_eq!(batch_size(32, &gate), 4);
        assert_eq!(batch_size(2, &gate), 2);
        for _ in 0..SMALL_STREAK_FOR_FULL_BATCHES {
            gate.small_stored();
        }
        assert_eq!(batch_size(32, &gate), 10);
        let gate = MultipartGate::new(Some(1));
        let held = gate.try_enter().expect("a free slot");
        assert_eq!(batch_size(32, &gate), 1, "a full gate still lets one in");
        let deciding = gate.deciding_one();
        assert_eq!(batch_size(32, &gate), 0, "not while that one may be large");
        drop(deciding);
        let gate = MultipartGate::new(Some(4));
        let _deciding = (gate.deciding_one(), gate.deciding_one());
        assert_eq!(batch_size(32, &gate), 2, "slots spoken for");
        drop(held);
    }

    #[test]
    fn strict_priority_always_starts_with_the_first_queue() {
        let mut order = PollOrder::new(&[], 3);
        for _ in 0..5 {
            assert_eq!(order.next(), vec![0, 1, 2]);
        }
    }

    #[test]
    fn weights_decide_how_often_each_queue_goes_first() {
        let mut order = PollOrder::new(&[3, 1], 2);
        let firsts: Vec<usize> = (0..8).map(|_| order.next()[0]).collect();
        assert_eq!(firsts, vec![0, 0, 1, 0, 0, 0, 1, 0]);
        let mut order = PollOrder::new(&[1, 1, 2], 3);
        let firsts: Vec<usize> = (0..4).map(|_| order.next()[0]).collect();
        assert_eq!(firsts.iter().filter(|&&q| q == 2).count(), 2);
        assert_eq!(order.next().len(), 3, "every queue is still polled");
    }

    #[test]
    fn a_refused_queue_waits_a_doubling_pause_and_the_others_do_not() {
        let mut refusals = Refusals::new(2);
        assert_eq!(refusals.next_try(), None);
        let pauses: Vec<u64> = (0..7).map(|_| refusals.refused(0).as_secs()).collect();
        assert_eq!(pauses, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(REFUSED_QUEUE_PAUSE.1, Duration::from_secs(30));
        assert!(refusals.paused(0));
        assert!(!refusals.paused(1), "the other queue is still polled");
        assert!(refusals.next_try().is_some());
        assert!(refusals.answered(0));
        assert!(!refusals.answered(0), "forgotten once answered");
        assert!(!refusals.paused(0));
        assert_eq!(
            refusals.refused(0).as_secs(),
            1,
            "a new streak starts short"
        );
    }
}
