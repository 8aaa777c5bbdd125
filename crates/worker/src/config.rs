//! Configuration: raw flag/env values (units in their names) turned into
//! validated typed settings at start-up. Every problem is reported at once.
//!
//! Over 500 lines: one documented flag per setting (its env name, default
//! and help text are the user's reference) and the validation of all of
//! them together; about 120 lines are tests.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ferry_engine::plan::MIB;
use ferry_engine::source::guard::AddressPolicy;
use ferry_engine::{
    ChecksumPolicy, EngineConfig, ObjectDefaults, RetryPolicy, SourceConfig, UploadChecksum,
};

use crate::job;
use crate::results::ResultTargets;

/// Problems found in the configuration; `main` exits 64 on these.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {}", .problems.join("; "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    pub fn one(problem: impl Into<String>) -> Self {
        Self {
            problems: vec![problem.into()],
        }
    }
}

/// Engine settings shared by `ferry copy` and `ferry worker`.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Preferred S3 part size in MiB (5..=5120); enlarged for objects that
    /// would need more than 10,000 parts.
    #[arg(long, env = "FERRY_PART_SIZE_MIB", default_value_t = 16)]
    pub part_size_mib: u64,
    /// Parts downloaded/uploaded at once per transfer (1..=64); a far source
    /// (ranged GETs waiting ≳110 ms for their answers) gets up to 4× this,
    /// within half the memory budget.
    #[arg(long, env = "FERRY_MAX_CONCURRENT_UPLOADS", default_value_t = 8)]
    pub max_concurrent_uploads: usize,
    /// Bytes of part buffers all transfers of this process may hold, in MiB.
    #[arg(long, env = "FERRY_MEMORY_BUDGET_MIB", default_value_t = 1024)]
    pub memory_budget_mib: u64,
    /// Longest wait for the next bytes from a source.
    #[arg(long, env = "FERRY_READ_TIMEOUT_SECS", default_value_t = 60)]
    pub read_timeout_secs: u64,
    #[arg(long, env = "FERRY_CONNECT_TIMEOUT_SECS", default_value_t = 10)]
    pub connect_timeout_secs: u64,
    /// Tries per request (the first included) before a part fails.
    #[arg(long, env = "FERRY_RETRY_ATTEMPTS", default_value_t = 6)]
    pub retry_attempts: u32,
    /// Extra PEM CA certificates to trust for HTTPS sources.
    #[arg(long, env = "FERRY_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
    /// Networks sources may reach besides public addresses, e.g.
    /// `127.0.0.0/8` for local development (comma-separated CIDRs).
    #[arg(long, env = "FERRY_SOURCE_ALLOW_CIDRS", value_delimiter = ',')]
    pub source_allow_cidrs: Vec<String>,
    /// Largest object a job may store, in MiB; larger (or endless) sources
    /// fail with `too_large`. Default: S3's own limit.
    #[arg(long, env = "FERRY_MAX_OBJECT_SIZE_MIB")]
    pub max_object_size_mib: Option<u64>,
    /// What S3 is asked to verify as it stores: `crc64nvme` (full-object,
    /// AWS S3's default), `crc32c` or `crc32` (composite, for stores without
    /// CRC64NVME), `md5` (Content-MD5 per part) or `none` (docs/compatibility.md).
    #[arg(long, env = "FERRY_S3_CHECKSUM", default_value = "crc64nvme")]
    pub s3_checksum: String,
    /// Per-bucket exceptions to `FERRY_S3_CHECKSUM`: `bucket=mode,…`.
    #[arg(long, env = "FERRY_S3_CHECKSUM_BUCKETS", default_value = "")]
    pub s3_checksum_buckets: String,
    /// Only these source ports (comma-separated); default: any.
    #[arg(long, env = "FERRY_SOURCE_ALLOW_PORTS", value_delimiter = ',')]
    pub source_allow_ports: Vec<u16>,
    /// Cap on source reads per second, shared fairly by all jobs of this
    /// process: `20MiB`, `100MB`, `1.5GiB`, `500KiB` or plain bytes (a
    /// trailing `/s` is allowed). A job's `max_bytes_per_sec` applies too.
    /// Default: none.
    #[arg(long, env = "FERRY_MAX_BANDWIDTH")]
    pub max_bandwidth: Option<String>,
    /// Source requests to one host:port at once, across all jobs of this
    /// process. Default: no limit.
    #[arg(long, env = "FERRY_MAX_CONNECTIONS_PER_HOST")]
    pub max_connections_per_host: Option<usize>,
    /// Server-side encryption for jobs that name none: `AES256` or
    /// `aws:kms`. Default: none asked (the bucket's default encryption).
    #[arg(long, env = "FERRY_SSE")]
    pub sse: Option<String>,
    /// With `FERRY_SSE=aws:kms`: the KMS key (id, ARN or alias); default
    /// the bucket's or AWS's managed key.
    #[arg(long, env = "FERRY_SSE_KMS_KEY_ID")]
    pub sse_kms_key_id: Option<String>,
    /// With `FERRY_SSE=aws:kms`: use an S3 Bucket Key (`true`/`false`);
    /// default the bucket's setting.
    #[arg(long, env = "FERRY_SSE_BUCKET_KEY")]
    pub sse_bucket_key: Option<bool>,
    /// The account (12 digits) every destination bucket must belong to,
    /// for jobs that name none: S3 refuses the writes otherwise.
    #[arg(long, env = "FERRY_EXPECTED_BUCKET_OWNER")]
    pub expected_bucket_owner: Option<String>,
}

/// AWS settings beyond the standard AWS environment.
#[derive(Debug, Clone, Args)]
pub struct AwsArgs {
    /// Path-style S3 addressing (`endpoint/bucket/key`); on by default when
    /// `AWS_ENDPOINT_URL` points at an emulator.
    #[arg(long, env = "FERRY_S3_PATH_STYLE")]
    pub s3_path_style: Option<bool>,
    /// Longest one DynamoDB or SQS request may take (each try; a receive
    /// gets its long-poll wait on top): a hung call cannot pin a job.
    #[arg(long, env = "FERRY_AWS_ATTEMPT_TIMEOUT_SECS", default_value_t = 20)]
    pub aws_attempt_timeout_secs: u64,
    /// Longest one DynamoDB or SQS call may take, the SDK's retries included.
    #[arg(long, env = "FERRY_AWS_OPERATION_TIMEOUT_SECS", default_value_t = 120)]
    pub aws_operation_timeout_secs: u64,
    /// Longest one S3 request may take, an UploadPart of the largest part
    /// included (the engine retries it).
    #[arg(long, env = "FERRY_S3_ATTEMPT_TIMEOUT_SECS", default_value_t = 600)]
    pub s3_attempt_timeout_secs: u64,
}

impl AwsArgs {
    /// Every problem with these settings.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.aws_attempt_timeout_secs == 0 || self.s3_attempt_timeout_secs == 0 {
            problems.push("AWS attempt timeouts must be positive".to_owned());
        }
        if self.aws_operation_timeout_secs < self.aws_attempt_timeout_secs {
            problems.push(format!(
                "the AWS operation timeout ({} s) must be at least the attempt timeout ({} s)",
                self.aws_operation_timeout_secs, self.aws_attempt_timeout_secs
            ));
        }
        problems
    }
}

impl EngineArgs {
    pub fn to_config(&self) -> Result<EngineConfig, ConfigError> {
        let mut problems = Vec::new();
        let extra_ca_pem = match &self.ca_bundle {
            Some(path) => match std::fs::read(path) {
                Ok(pem) => Some(pem),
                Err(err) => {
                    problems.push(format!("CA bundle {}: {err}", path.display()));
                    None
                }
            },
            None => None,
        };
        let mut allow = Vec::new();
        for cidr in self
            .source_allow_cidrs
            .iter()
            .map(|c| c.trim())
            .filter(|c| !c.is_empty())
        {
            match cidr.parse::<ipnet::IpNet>() {
                Ok(net) => allow.push(net),
                Err(_) => problems.push(format!(
                    "source allow CIDR {cidr:?} is not a network like 10.0.0.0/8"
                )),
            }
        }
        let max_bytes_per_sec = self.max_bandwidth.as_deref().and_then(|text| {
            parse_bandwidth(text)
                .map_err(|problem| problems.push(problem))
                .ok()
        });
        if self.max_connections_per_host == Some(0) {
            problems.push("max connections per host must be at least 1".to_owned());
        }
        let upload_checksum = self
            .s3_checksum
            .parse::<UploadChecksum>()
            .and_then(|default| {
                Ok(ChecksumPolicy {
                    default,
                    by_bucket: ChecksumPolicy::parse_exceptions(&self.s3_checksum_buckets)?,
                })
            })
            .map_err(|problem| problems.push(problem))
            .unwrap_or_default();
        let mut object_defaults = ObjectDefaults::default();
        let refused = |(_, reason): job::limits::Refusal| {
            format!("{reason} (the worker's default, FERRY_SSE…)")
        };
        match job::settings::encryption(
            self.sse.as_deref().filter(|s| !s.is_empty()),
            self.sse_kms_key_id.as_deref().filter(|s| !s.is_empty()),
            self.sse_bucket_key,
        ) {
            Ok(encryption) => object_defaults.encryption = encryption,
            Err(refusal) => problems.push(refused(refusal)),
        }
        if let Some(owner) = self
            .expected_bucket_owner
            .as_deref()
            .filter(|s| !s.is_empty())
        {
            match job::settings::expected_bucket_owner(owner) {
                Ok(()) => object_defaults.expected_bucket_owner = Some(owner.to_owned()),
                Err(refusal) => problems.push(refused(refusal)),
            }
        }
        let address_policy = AddressPolicy {
            allow,
            ports: (!self.source_allow_ports.is_empty()).then(|| self.source_allow_ports.clone()),
        };
        let config = EngineConfig {
            part_size: self.part_size_mib.saturating_mul(MIB),
            max_concurrent_parts: self.max_concurrent_uploads,
            memory_budget: usize::try_from(self.memory_budget_mib.saturating_mul(MIB))
                .unwrap_or(usize::MAX),
            retry: RetryPolicy {
                max_attempts: self.retry_attempts,
                ..RetryPolicy::default()
            },
            source: SourceConfig {
                read_timeout: Duration::from_secs(self.read_timeout_secs),
                connect_timeout: Duration::from_secs(self.connect_timeout_secs),
                extra_ca_pem,
                address_policy,
                max_bytes_per_sec,
                max_connections_per_host: self.max_connections_per_host.filter(|n| *n > 0),
                ..SourceConfig::default()
            },
            max_object_size: self.max_object_size_mib.map(|m| m.saturating_mul(MIB)),
            upload_checksum,
            object_defaults,
            ..EngineConfig::default()
        };
        if let Err(err) = config.validate() {
            problems.push(err.to_string());
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// A bandwidth like `20MiB`, `100MB`, `1.5GiB`, `500KiB` or `1048576`
/// (bytes), optionally followed by `/s`, as bytes per second (at least 1).
pub fn parse_bandwidth(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let amount = trimmed.strip_suffix("/s").unwrap_or(trimmed).trim_end();
    let bytes = amount
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| {
            format!(
                "max bandwidth {text:?} is not a rate like 20MiB, 100MB, 1.5GiB or plain bytes per second"
            )
        })?;
    if bytes == 0 {
        return Err(format!(
            "max bandwidth {text:?} must be at least 1 byte per second"
        ));
    }
    Ok(bytes)
}

/// Settings of `ferry worker`, validated.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queues in priority order: the first is drained first.
    pub queues: Vec<String>,
    /// Empty: strict priority. Otherwise one weight per queue: weighted
    /// round-robin decides which queue each poll tries first.
    pub queue_weights: Vec<u32>,
    pub table: String,
    pub dlq_url: Option<String>,
    pub worker_id: String,
    pub max_concurrent_jobs: usize,
    /// Starts of one job (first included) before a transient error is final.
    pub max_attempts: u32,
    /// How long a claim holds without renewal.
    pub lease: Duration,
    /// How often the lease is renewed and progress recorded.
    pub heartbeat: Duration,
    /// Visibility given to a received message (extended while it runs).
    pub visibility: Duration,
    /// SQS's limit on one receive's total invisibility (12 h); a job nearing
    /// it goes on under a successor message (`queue::Queue::hand_off`).
    pub visibility_cap: Duration,
    /// Longest long-poll wait.
    pub poll_wait: Duration,
    /// Base of the backoff before a transiently failed job runs again.
    pub retry_base_delay: Duration,
    /// How long a duplicate of a job running elsewhere stays invisible.
    pub busy_recheck: Duration,
    /// Time running jobs get to finish after SIGTERM before they are released.
    pub shutdown_grace: Duration,
    /// Whether acknowledged parts' CRCs are kept in items of their own
    /// (`FERRY_PART_CHECKSUM_ITEMS`).
    pub keep_part_checksums: bool,
    /// How far this worker's lease clock is off the host's: always 0 but in
    /// tests of clock skew (`JobStore::with_clock_skew`). No flag sets it.
    pub clock_skew_secs: i64,
    /// Where the metrics and health endpoints listen, if anywhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Where jobs may write; empty means anywhere the IAM role allows.
    pub destinations: Vec<AllowedDestination>,
    /// The periodic sweep for orphaned uploads, when on.
    pub gc: Option<GcSchedule>,
    /// Where final records are published (result events), if anywhere.
    pub results: ResultTargets,
    pub engine: EngineConfig,
}

/// How often the worker sweeps its allowed buckets, and what it spares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcSchedule {
    pub interval: Duration,
    pub older_than: Duration,
}

/// One allowed destination: a bucket and a key prefix (empty: any key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedDestination {
    pub bucket: String,
    pub prefix: String,
}

/// Whether `bucket`/`key` is within the allowed destinations.
pub fn destination_allowed(allowed: &[AllowedDestination], bucket: &str, key: &str) -> bool {
    allowed.is_empty()
        || allowed
            .iter()
            .any(|d| d.bucket == bucket && key.starts_with(&d.prefix))
}

/// Where jobs are queued and recorded: shared by `ferry worker` and `ferry submit`.
#[derive(Debug, Clone, Args)]
pub struct JobQueueArgs {
    /// SQS queue URL(s), highest priority first (repeat or comma-separate);
    /// `ferry submit` sends to the first.
    #[arg(
        long = "queue-url",
        env = "FERRY_QUEUE_URL",
        value_delimiter = ',',
        required = true
    )]
    pub queue_urls: Vec<String>,
    /// DynamoDB table of job records.
    #[arg(long, env = "FERRY_TABLE")]
    pub table: String,
}

/// The raw `ferry worker` settings as flags and `FERRY_*` variables.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub jobs: JobQueueArgs,
    /// Weighted instead of strict priority: one weight per queue (e.g. `3,1`
    /// polls the first queue first three times out of four).
    #[arg(long, env = "FERRY_QUEUE_WEIGHTS", value_delimiter = ',')]
    pub queue_weights: Vec<u32>,
    /// Dead-letter queue for rejected messages; without it they are left to
    /// the queue's redrive policy.
    #[arg(long, env = "FERRY_DLQ_URL")]
    pub dlq_url: Option<String>,
    /// Jobs run at once by this worker (1..=256); they share one memory budget.
    #[arg(long, env = "FERRY_MAX_CONCURRENT_JOBS", default_value_t = 32)]
    pub max_concurrent_jobs: usize,
    /// Of those, jobs in a multipart upload at once (at least 1; at most
    /// FERRY_MAX_CONCURRENT_JOBS is used). Small jobs — one PutObject — are
    /// not counted: they do not wait behind large ones.
    #[arg(long, env = "FERRY_MAX_LARGE_JOBS", default_value_t = 4)]
    pub max_large_jobs: usize,
    #[arg(long, env = "FERRY_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u32,
    #[arg(long, env = "FERRY_LEASE_SECS", default_value_t = 60)]
    pub lease_secs: u64,
    #[arg(long, env = "FERRY_HEARTBEAT_SECS", default_value_t = 5)]
    pub heartbeat_secs: u64,
    #[arg(long, env = "FERRY_POLL_WAIT_SECS", default_value_t = 20)]
    pub poll_wait_secs: u64,
    #[arg(long, env = "FERRY_RETRY_BASE_DELAY_SECS", default_value_t = 30)]
    pub retry_base_delay_secs: u64,
    /// Must fit ECS's stopTimeout (at most 120 s) with room to release jobs.
    #[arg(long, env = "FERRY_SHUTDOWN_GRACE_SECS", default_value_t = 100)]
    pub shutdown_grace_secs: u64,
    /// Whether every acknowledged part's CRC64NVME gets a DynamoDB item of
    /// its own (`keep`), for a resume on a store whose ListParts lists no
    /// part checksums, or none (`skip`: on AWS S3 with `FERRY_S3_CHECKSUM`
    /// crc64nvme, ListParts lists them, and the items are a third of a large
    /// job's write units). Skipped on a store that lists none, a resume
    /// uploads the finished parts again; it never trusts a part it cannot
    /// check (docs/jobs.md, "Resume").
    #[arg(long, env = "FERRY_PART_CHECKSUM_ITEMS", value_enum, default_value_t = PartChecksumItems::Keep)]
    pub part_checksum_items: PartChecksumItems,
    /// SNS topic (ARN) every job's final record is published to (result
    /// events, docs/jobs.md). Default: none.
    #[arg(long, env = "FERRY_RESULT_TOPIC_ARN")]
    pub result_topic_arn: Option<String>,
    /// SQS queue (URL) every job's final record is sent to. Default: none.
    #[arg(long, env = "FERRY_RESULT_QUEUE_URL")]
    pub result_queue_url: Option<String>,
    /// Buckets jobs may write to, optionally with a key prefix
    /// (`bucket` or `bucket/prefix/`, comma-separated); default: any.
    #[arg(long, env = "FERRY_ALLOWED_BUCKETS", value_delimiter = ',')]
    pub allowed_buckets: Vec<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `off` disables.
    #[arg(long, env = "FERRY_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: String,
    /// Sweep the allowed buckets for orphaned multipart uploads this often
    /// (what `ferry gc` does); 0 turns the sweep off. Needs FERRY_ALLOWED_BUCKETS.
    #[arg(long, env = "FERRY_GC_INTERVAL_SECS", default_value_t = 0)]
    pub gc_interval_secs: u64,
    /// The sweep leaves uploads younger than this alone.
    #[arg(long, env = "FERRY_GC_OLDER_THAN_SECS", default_value_t = 86_400)]
    pub gc_older_than_secs: u64,
    /// How long SQS keeps one receive invisible at most (its 12-hour cap); a
    /// job nearing it is released and resumed. Lowered only by tests.
    #[arg(
        long,
        env = "FERRY_VISIBILITY_CAP_SECS",
        default_value_t = 43_200,
        hide = true
    )]
    pub visibility_cap_secs: u64,
    /// Identifies this worker in leases (default: host name, pid and a random suffix).
    #[arg(long, env = "FERRY_WORKER_ID")]
    pub worker_id: Option<String>,
}

impl WorkerArgs {
    pub fn to_config(&self, mut engine: EngineConfig) -> Result<WorkerConfig, ConfigError> {
        let mut problems = Vec::new();
        if self.jobs.queue_urls.iter().any(|q| q.trim().is_empty()) {
            problems.push("queue URLs must not be empty".to_owned());
        }
        if !self.queue_weights.is_empty()
            && (self.queue_weights.len() != self.jobs.queue_urls.len()
                || self.queue_weights.iter().all(|w| *w == 0))
        {
            problems.push(format!(
                "queue weights ({}) must give one weight per queue ({}) and not all zero",
                self.queue_weights.len(),
                self.jobs.queue_urls.len()
            ));
        }
        if self.jobs.table.trim().is_empty() {
            problems.push("table must not be empty".to_owned());
        }
        if !(1..=256).contains(&self.max_concurrent_jobs) {
            problems.push(format!(
                "max concurrent jobs {} is outside 1..=256",
                self.max_concurrent_jobs
            ));
        }
        if self.max_large_jobs == 0 {
            problems.push("max large jobs must be at least 1".to_owned());
        }
        engine.max_multipart_transfers = Some(self.max_large_jobs.min(self.max_concurrent_jobs));
        if self.max_attempts == 0 {
            problems.push("max attempts must be at least 1".to_owned());
        }
        if self.heartbeat_secs == 0 || self.heartbeat_secs * 3 > self.lease_secs {
            problems.push(format!(
                "heartbeat ({} s) must be positive and at most a third of the lease ({} s)",
                self.heartbeat_secs, self.lease_secs
            ));
        }
        if self.visibility_cap_secs > 12 * 3600 {
            problems.push("the visibility cap cannot exceed SQS's 12 hours".to_owned());
        }
        if self.lease_secs + 3 * self.heartbeat_secs >= self.visibility_cap_secs {
            problems.push(format!(
                "lease ({} s) plus three heartbeats must stay under the visibility cap ({} s)",
                self.lease_secs, self.visibility_cap_secs
            ));
        }
        if self.poll_wait_secs > 20 {
            problems.push("poll wait is at most 20 s (SQS's long-poll limit)".to_owned());
        }
        if self.shutdown_grace_secs > 110 {
            problems.push(format!(
                "shutdown grace {} s leaves no time to release jobs within ECS's 120 s stopTimeout",
                self.shutdown_grace_secs
            ));
        }
        let metrics_addr = match self.metrics_addr.trim() {
            "" | "off" => None,
            addr => match addr.parse::<std::net::SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    problems.push(format!("metrics address {addr:?} is not HOST:PORT"));
                    None
                }
            },
        };
        let mut destinations = Vec::new();
        for entry in self
            .allowed_buckets
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
        {
            let (bucket, prefix) = entry.split_once('/').unwrap_or((entry, ""));
            match crate::s3url::validate_bucket(bucket) {
                Ok(()) => destinations.push(AllowedDestination {
                    bucket: bucket.to_owned(),
                    prefix: prefix.to_owned(),
                }),
                Err(err) => problems.push(format!("allowed buckets: {err}")),
            }
        }
        if self.gc_interval_secs > 0 && destinations.is_empty() {
            problems.push(
                "the upload sweep (FERRY_GC_INTERVAL_SECS) needs FERRY_ALLOWED_BUCKETS to know where to look"
                    .to_owned(),
            );
        }
        let results = ResultTargets {
            topic_arn: self.result_topic_arn.clone().filter(|t| !t.is_empty()),
            queue_url: self.result_queue_url.clone().filter(|q| !q.is_empty()),
        };
        if let Some(topic) = &results.topic_arn
            && !(topic.starts_with("arn:") && topic.contains(":sns:"))
        {
            problems.push(format!(
                "FERRY_RESULT_TOPIC_ARN must be an SNS topic ARN (arn:…:sns:…), not {topic:?}"
            ));
        }
        if let Some(queue) = &results.queue_url
            && !queue.starts_with("http")
        {
            problems.push(format!(
                "FERRY_RESULT_QUEUE_URL must be an SQS queue URL, not {queue:?}"
            ));
        }
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        let worker_id = self.worker_id.clone().unwrap_or_else(default_worker_id);
        Ok(WorkerConfig {
            queues: self
                .jobs
                .queue_urls
                .iter()
                .map(|q| q.trim().to_owned())
                .collect(),
            queue_weights: self.queue_weights.clone(),
            table: self.jobs.table.clone(),
            dlq_url: self.dlq_url.clone().filter(|d| !d.is_empty()),
            worker_id,
            max_concurrent_jobs: self.max_concurrent_jobs,
            max_attempts: self.max_attempts,
            lease: Duration::from_secs(self.lease_secs),
            heartbeat: Duration::from_secs(self.heartbeat_secs),
            visibility: Duration::from_secs(self.lease_secs),
            visibility_cap: Duration::from_secs(self.visibility_cap_secs),
            poll_wait: Duration::from_secs(self.poll_wait_secs),
            retry_base_delay: Duration::from_secs(self.retry_base_delay_secs),
            busy_recheck: Duration::from_secs(self.lease_secs.max(300)),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            keep_part_checksums: self.part_checksum_items == PartChecksumItems::Keep,
            clock_skew_secs: 0,
            metrics_addr,
            destinations,
            gc: (self.gc_interval_secs > 0).then(|| GcSchedule {
                interval: Duration::from_secs(self.gc_interval_secs),
                older_than: Duration::from_secs(self.gc_older_than_secs),
            }),
            results,
            engine,
        })
    }
}

/// `FERRY_PART_CHECKSUM_ITEMS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PartChecksumItems {
    Keep,
    Skip,
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "ferry".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        engine: EngineArgs,
    }

    #[test]
    fn destinations_match_bucket_and_prefix() {
        let allowed = vec![
            AllowedDestination {
                bucket: "media".into(),
                prefix: "isos/".into(),
            },
            AllowedDestination {
                bucket: "scratch".into(),
                prefix: String::new(),
            },
        ];
        assert!(destination_allowed(&allowed, "media", "isos/a.iso"));
        assert!(!destination_allowed(&allowed, "media", "other/a.iso"));
        assert!(destination_allowed(&allowed, "scratch", "anything"));
        assert!(!destination_allowed(&allowed, "mediax", "isos/a.iso"));
        assert!(destination_allowed(&[], "any", "thing"));
    }

    #[test]
    fn defaults_make_a_valid_engine_config() {
        let config = Probe::parse_from(["x"]).engine.to_config().unwrap();
        assert_eq!(config.part_size, 16 * MIB);
        assert_eq!(config.max_concurrent_parts, 8);
    }

    #[test]
    fn bandwidths_read_si_and_iec_units_and_plain_bytes() {
        for (text, bytes) in [
            ("20MiB", 20 * MIB),
            ("100MB", 100_000_000),
            ("1.5GiB", 3 * 512 * MIB),
            ("500KiB", 500 * 1024),
            ("500 kB", 500_000),
            ("1048576", MIB),
            ("50MiB/s", 50 * MIB),
            (" 1 ", 1),
        ] {
            assert_eq!(parse_bandwidth(text), Ok(bytes), "{text}");
        }
        for bad in ["0", "0MiB", "abc", "", "-5MB", "1.2.3MB", "20 MiBps", "MiB"] {
            assert!(parse_bandwidth(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn bandwidth_and_connection_caps_reach_the_engine() {
        let config = Probe::parse_from([
            "x",
            "--max-bandwidth",
            "20MiB",
            "--max-connections-per-host",
            "2",
        ])
        .engine
        .to_config()
        .unwrap();
        assert_eq!(config.source.max_bytes_per_sec, Some(20 * MIB));
        assert_eq!(config.source.max_connections_per_host, Some(2));
        let defaults = Probe::parse_from(["x"]).engine.to_config().unwrap();
        assert_eq!(defaults.source.max_bytes_per_sec, None);
        assert_eq!(defaults.source.max_connections_per_host, None);
    }

    /// (`FERRY_MAX_BANDWIDTH` takes the same path; the worker's integration
    /// tests set it on a real process.)
    #[test]
    fn a_zero_or_garbage_bandwidth_is_refused_at_start_up() {
        for (bandwidth, expected) in [("0", "at least 1 byte"), ("abc", "not a rate")] {
            let err = Probe::parse_from(["x", "--max-bandwidth", bandwidth])
                .engine
                .to_config()
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{bandwidth}: {err}");
        }
        let err = Probe::parse_from([
            "x",
            "--max-bandwidth",
            "abc",
            "--max-connections-per-host",
            "0",
        ])
        .engine
        .to_config()
        .unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
    }

    #[test]
    fn every_bad_value_is_reported() {
        let args = Probe::parse_from([
            "x",
            "--part-size-mib",
            "1",
            "--max-concurrent-uploads",
            "0",
            "--ca-bundle",
            "/nonexistent/ca.pem",
            "--source-allow-cidrs",
            "10.0.0.0/8,nonsense",
        ])
        .engine;
        let err = args.to_config().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("CA bundle"), "{text}");
        assert!(text.contains("nonsense"), "{text}");
        assert!(text.contains("part size"), "{text}");
        assert!(text.contains("concurrent"), "{text}");
    }
}
