//! The checks that need no AWS call: the worker's own validation, the
//! metrics address, the source policy; and the [`Plan`], the settings the
//! other checks read even when validation failed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ferry_engine::ChecksumPolicy;
use ferry_engine::source::guard::AddressPolicy;

use super::{Check, DoctorArgs};
use crate::cli::worker::WorkerCommand;
use crate::config::AllowedDestination;

/// What the worker would use, read leniently from the raw settings: a bad
/// value is the config check's to report; the other checks go on with the
/// values that are usable.
pub(super) struct Plan {
    pub queues: Vec<String>,
    pub dlq: Option<String>,
    pub table: Option<String>,
    pub max_attempts: u32,
    /// FERRY_ALLOWED_BUCKETS, then `--bucket`.
    pub destinations: Vec<AllowedDestination>,
    /// FERRY_ALLOWED_BUCKETS is empty: jobs may write anywhere the role allows.
    pub any_bucket: bool,
    pub metrics: Metrics,
    pub policy: AddressPolicy,
    /// Each bucket's upload checksum mode (an unreadable setting is the
    /// config check's to report; the default is probed meanwhile).
    pub checksums: ChecksumPolicy,
    /// FERRY_RESULT_TOPIC_ARN and FERRY_RESULT_QUEUE_URL, when set.
    pub result_topic: Option<String>,
    pub result_queue: Option<String>,
}

pub(super) enum Metrics {
    Off,
    At(SocketAddr),
    /// Not HOST:PORT; the config check reports it.
    Invalid,
}

impl Plan {
    pub fn new(args: &DoctorArgs) -> Self {
        let worker = &args.worker.worker;
        let mut allowed = destinations(&worker.allowed_buckets);
        let any_bucket = allowed.is_empty();
        for extra in destinations(&args.buckets) {
            if !allowed.contains(&extra) {
                allowed.push(extra);
            }
        }
        let metrics = match worker.metrics_addr.trim() {
            "" | "off" => Metrics::Off,
            addr => addr.parse().map_or(Metrics::Invalid, Metrics::At),
        };
        let engine = &args.worker.engine;
        Self {
            queues: non_empty(&worker.jobs.queue_urls),
            dlq: worker.dlq_url.clone().filter(|d| !d.trim().is_empty()),
            table: Some(worker.jobs.table.trim().to_owned()).filter(|t| !t.is_empty()),
            max_attempts: worker.max_attempts,
            destinations: allowed,
            any_bucket,
            metrics,
            policy: AddressPolicy {
                allow: engine
                    .source_allow_cidrs
                    .iter()
                    .filter_map(|c| c.trim().parse().ok())
                    .collect(),
                ports: (!engine.source_allow_ports.is_empty())
                    .then(|| engine.source_allow_ports.clone()),
            },
            checksums: engine
                .to_config()
                .map(|config| config.upload_checksum)
                .unwrap_or_default(),
            result_topic: set(worker.result_topic_arn.as_deref()),
            result_queue: set(worker.result_queue_url.as_deref()),
        }
    }
}

fn set(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn non_empty(values: &[String]) -> Vec<String> {
    values
        .iter()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

/// `bucket` or `bucket/prefix` entries (FERRY_ALLOWED_BUCKETS, `--bucket`);
/// invalid bucket names are left to the config check.
fn destinations(entries: &[String]) -> Vec<AllowedDestination> {
    non_empty(entries)
        .iter()
        .map(|entry| entry.split_once('/').unwrap_or((entry, "")))
        .filter(|(bucket, _)| crate::s3url::validate_bucket(bucket).is_ok())
        .map(|(bucket, prefix)| AllowedDestination {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
        .collect()
}

/// The worker's own validation: each problem it would exit 64 for is a ✗.
pub(super) fn config(args: &WorkerCommand) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut problems = match args.validate() {
        Ok(_) => Vec::new(),
        Err(err) => err.problems,
    };
    if let Err(err) = crate::protection::TaskProtection::from_env(Default::default()) {
        problems.push(err.to_string());
    }
    // The two settings without a default get a line that names the variable.
    if non_empty(&args.worker.jobs.queue_urls).is_empty() {
        problems.retain(|p| p != "queue URLs must not be empty");
        checks.push(Check::fail(
            "config",
            "no queue URL",
            "set FERRY_QUEUE_URL (or --queue-url) to the jobs queue's URL",
        ));
    }
    if args.worker.jobs.table.trim().is_empty() {
        problems.retain(|p| p != "table must not be empty");
        checks.push(Check::fail(
            "config",
            "no table",
            "set FERRY_TABLE (or --table) to the job table's name",
        ));
    }
    checks.extend(problems.into_iter().map(|problem| {
        Check::fail(
            "config",
            problem,
            "correct that setting (`ferry worker --help` lists them); the worker refuses to start with it (exit 64)",
        )
    }));
    if checks.is_empty() {
        let worker = &args.worker;
        checks.push(Check::pass(
            "config",
            format!(
                "the worker's settings are valid ({} {}, {} jobs at once, FERRY_MAX_ATTEMPTS {})",
                worker.jobs.queue_urls.len(),
                if worker.jobs.queue_urls.len() == 1 {
                    "queue"
                } else {
                    "queues"
                },
                worker.max_concurrent_jobs,
                worker.max_attempts
            ),
        ));
    }
    checks
}

/// Whether the metrics listener could start: bind the address, let it go.
pub(super) fn metrics(plan: &Plan) -> Check {
    match plan.metrics {
        Metrics::Off => Check::pass(
            "metrics",
            "off (FERRY_METRICS_ADDR=off): no /metrics, /healthz or /readyz, so no container health check",
        ),
        Metrics::Invalid => Check::skipped("metrics", "the address is not HOST:PORT (see config)"),
        Metrics::At(addr) => match std::net::TcpListener::bind(addr) {
            Ok(_listener) => Check::pass(
                "metrics",
                format!("{addr} can be listened on (/metrics, /healthz, /readyz)"),
            ),
            Err(err) => Check::fail(
                "metrics",
                format!("cannot listen on {addr}: {err}"),
                if err.kind() == std::io::ErrorKind::AddrInUse {
                    "another process holds it (a worker already running here?): stop it, or set FERRY_METRICS_ADDR to a free HOST:PORT (or off)"
                } else {
                    "set FERRY_METRICS_ADDR to an address of this host (e.g. 0.0.0.0:9090), or off"
                },
            ),
        },
    }
}

/// Where the credentials of a task or an instance can be read: a source
/// there could hand a job this worker's role.
const CREDENTIAL_ENDPOINTS: [IpAddr; 3] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

/// What sources may be reached besides public unicast addresses
/// (informational; a note where it opens more than it should).
pub(super) fn source_policy(plan: &Plan) -> Check {
    let policy = &plan.policy;
    let networks = if policy.allow.is_empty() {
        "public unicast addresses only".to_owned()
    } else {
        let allow: Vec<String> = policy.allow.iter().map(ToString::to_string).collect();
        format!("public unicast addresses and {}", allow.join(", "))
    };
    let ports = match &policy.ports {
        None => "any port".to_owned(),
        Some(ports) => {
            let ports: Vec<String> = ports.iter().map(ToString::to_string).collect();
            format!("ports {}", ports.join(", "))
        }
    };
    let mut notes = Vec::new();
    if let Some(everything) = policy.allow.iter().find(|net| net.prefix_len() == 0) {
        notes.push(format!(
            "{everything} allows every address of its family: the guard against private sources is off"
        ));
    }
    let exposed: Vec<String> = CREDENTIAL_ENDPOINTS
        .iter()
        .filter(|ip| policy.permits(**ip))
        .map(ToString::to_string)
        .collect();
    if !exposed.is_empty() {
        notes.push(format!(
            "the credential endpoints {} are allowed: a job could read this worker's role credentials; narrow FERRY_SOURCE_ALLOW_CIDRS",
            exposed.join(", ")
        ));
    }
    let mut detail = format!("{networks}; {ports}");
    for note in notes {
        detail.push_str("; note: ");
        detail.push_str(&note);
    }
    Check::pass("source policy", detail)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        doctor: DoctorArgs,
    }

    fn args(flags: &[&str]) -> DoctorArgs {
        let base = ["ferry", "--queue-url", "http://sqs/1/q", "--table", "t"];
        Probe::parse_from(base.iter().chain(flags)).doctor
    }

    #[test]
    fn reads_destinations_leniently() {
        let plan = Plan::new(&args(&[
            "--allowed-buckets",
            "media/isos/,Not_A_Bucket",
            "--bucket",
            "scratch,media/isos/",
        ]));
        let found: Vec<(&str, &str)> = plan
            .destinations
            .iter()
            .map(|d| (d.bucket.as_str(), d.prefix.as_str()))
            .collect();
        assert_eq!(found, [("media", "isos/"), ("scratch", "")]);
        assert!(!plan.any_bucket);
    }

    #[test]
    fn missing_queue_and_table_are_checks_naming_the_variables() {
        let args = Probe::parse_from(["ferry"]).doctor;
        let lines: Vec<String> = config(&args.worker).iter().map(Check::line).collect();
        assert!(
            lines.iter().any(|l| l.contains("— set FERRY_QUEUE_URL")),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("— set FERRY_TABLE")),
            "{lines:?}"
        );
        assert!(
            !lines.iter().any(|l| l.contains("must not be empty")),
            "{lines:?}"
        );
    }

    #[test]
    fn source_policy_notes_what_opens_too_much() {
        let narrow = source_policy(&Plan::new(&args(&[
            "--source-allow-cidrs",
            "10.0.0.0/8",
            "--source-allow-ports",
            "443",
        ])));
        assert!(narrow.ok);
        assert_eq!(
            narrow.detail,
            "public unicast addresses and 10.0.0.0/8; ports 443"
        );
        let wide = source_policy(&Plan::new(&args(&["--source-allow-cidrs", "0.0.0.0/0"])));
        assert!(wide.ok, "informational");
        assert!(wide.detail.contains("note: 0.0.0.0/0 allows every address"));
        assert!(
            wide.detail
                .contains("169.254.169.254, 169.254.170.2 are allowed")
        );
        let link_local = source_policy(&Plan::new(&args(&[
            "--source-allow-cidrs",
            "169.254.0.0/16",
        ])));
        assert!(link_local.detail.contains("credential endpoints"));
    }
}
