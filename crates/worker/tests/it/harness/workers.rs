//! Workers for tests: in this process (with the product's clients, or
//! clients through a fault proxy) or as the real `ferry` binary, each stopped
//! or killed by the test and never left running after it.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ferry_engine::plan::MIB;
use ferry_engine::{EngineConfig, RetryPolicy};
use ferry_worker::config::WorkerConfig;
use ferry_worker::worker::{self, Clients};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::PART;

/// A worker running in this process with the given clients (e.g. through
/// the AWS fault proxy) until the handle is stopped.
pub fn spawn_worker_with(config: WorkerConfig, clients: Clients) -> InProcessWorker {
    let cancel = CancellationToken::new();
    let task = tokio::spawn(worker::run(config, clients, cancel.clone()));
    InProcessWorker { cancel, task }
}

pub fn engine_config() -> EngineConfig {
    let mut config = EngineConfig {
        part_size: PART as u64,
        max_concurrent_parts: 4,
        memory_budget: 64 * MIB as usize,
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            throttle_base_delay: Duration::from_millis(20),
            throttle_max_delay: Duration::from_millis(200),
            // The fault cells inject 8 S3 errors in a row: they must fit in
            // one attempt's patience even on a loaded 2-core machine.
            aws_patience: Duration::from_secs(10),
        },
        ..EngineConfig::default()
    };
    config.source.read_timeout = Duration::from_secs(2);
    config.source.address_policy.allow = vec!["127.0.0.0/8".parse().unwrap()];
    config
}

pub struct WorkerProcess {
    pub child: Child,
    pub log: std::path::PathBuf,
}

impl WorkerProcess {
    /// SIGTERM to the process we started, by its PID.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGKILL to the process we started, by its PID: no shutdown path runs.
    pub fn kill(&mut self) {
        let status = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let _ = self.child.wait();
    }

    /// Waits (bounded) for the exit; returns the status and the log.
    pub fn wait(&mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return (status, log);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "worker did not exit within {limit:?}; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        // A failed test must not leave its worker running.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub struct InProcessWorker {
    cancel: CancellationToken,
    task: JoinHandle<Result<(), worker::WorkerError>>,
}

impl InProcessWorker {
    pub async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("worker stops")
            .unwrap()
            .unwrap();
    }
}

/// Short timeouts so that a hung call is given up on quickly.
pub fn aws_args() -> ferry_worker::config::AwsArgs {
    ferry_worker::config::AwsArgs {
        s3_path_style: None,
        aws_attempt_timeout_secs: 4,
        aws_operation_timeout_secs: 30,
        s3_attempt_timeout_secs: 3,
    }
}

/// The product's clients (adaptive retries, the timeouts above) reaching AWS
/// only through `proxy`, in retry partitions of that proxy's own.
///
/// The SDK shares the retry token bucket and the adaptive rate limiter
/// among all clients of a partition in the process (by default, one per
/// service). A worker owns its process; tests share one, so without this
/// one proxy's injected throttles slow down every other test's SQS or
/// DynamoDB calls, and its errors drain the others' retry quota (seen on
/// CI: a cell's visibility extension never got sent).
pub async fn proxied_clients(proxy: &ferry_testkit::AwsProxy) -> Clients {
    use aws_sdk_sqs::config::retry::RetryPartition;
    let sdk = ferry_testkit::moto::sdk_config_at(&proxy.endpoint()).await;
    let aws = aws_args();
    let partition =
        |service: &str| RetryPartition::new(format!("{service}-proxy-{}", proxy.port()));
    let s3 = ferry_worker::aws_clients::s3(&sdk, &aws);
    let sqs = ferry_worker::aws_clients::sqs(&sdk, &aws);
    let dynamodb = ferry_worker::aws_clients::dynamodb(&sdk, &aws);
    let sns = ferry_worker::aws_clients::sns(&sdk, &aws);
    Clients {
        s3: aws_sdk_s3::Client::from_conf(
            s3.config()
                .to_builder()
                .retry_partition(partition("s3"))
                .build(),
        ),
        sqs: aws_sdk_sqs::Client::from_conf(
            sqs.config()
                .to_builder()
                .retry_partition(partition("sqs"))
                .build(),
        ),
        dynamodb: aws_sdk_dynamodb::Client::from_conf(
            dynamodb
                .config()
                .to_builder()
                .retry_partition(partition("dynamodb"))
                .build(),
        ),
        sns: aws_sdk_sns::Client::from_conf(
            sns.config()
                .to_builder()
                .retry_partition(partition("sns"))
                .build(),
        ),
        protection: ferry_worker::protection::TaskProtection::disabled(),
    }
}
