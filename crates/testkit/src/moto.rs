//! moto's server mode (S3, SQS, DynamoDB) on an ephemeral loopback port.
//!
//! One server per test binary, shared by its tests (each uses its own bucket,
//! queue and table names). The server runs `scripts/moto_server.py` from the
//! project's virtualenv, made by `scripts/setup`; its life is tied to a pipe
//! held by this process, so it ends when the tests end, however they end.
//!
//! Which S3 the tests use is decided here and only here: moto's, or the
//! strict S3 named by `FERRY_TEST_S3_ENDPOINT` (LocalStack, run by
//! `scripts/strict-s3-test`; docs/testing.md). SQS and DynamoDB are always
//! moto's.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

pub struct Moto {
    endpoint: String,
    _child: Mutex<(Child, ChildStdin)>,
}

static SHARED: OnceLock<Moto> = OnceLock::new();

/// The variable naming a stricter S3 than moto's for the tests to use.
pub const STRICT_S3_ENV: &str = "FERRY_TEST_S3_ENDPOINT";

/// The strict S3 the tests use instead of moto's, when
/// `FERRY_TEST_S3_ENDPOINT` names one (e.g. `http://127.0.0.1:4566`).
pub fn strict_s3_endpoint() -> Option<String> {
    std::env::var(STRICT_S3_ENV)
        .ok()
        .map(|url| url.trim().trim_end_matches('/').to_owned())
        .filter(|url| !url.is_empty())
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The Python of the project's virtualenv; panics with the fix when missing.
pub fn venv_python() -> PathBuf {
    let python = std::env::var_os("FERRY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(
        python.exists(),
        "{} not found: run scripts/setup (it installs moto into .venv)",
        python.display()
    );
    python
}

impl Moto {
    /// The test binary's shared server, started on first use.
    pub fn shared() -> &'static Moto {
        SHARED.get_or_init(Moto::start)
    }

    pub fn start() -> Moto {
        Self::start_on(0)
    }

    /// A server on `port` (0: ephemeral), e.g. to restart one where it was.
    pub fn start_on(port: u16) -> Moto {
        let script = workspace_root().join("scripts/moto_server.py");
        // Kept for post-mortems of emulator errors (HTTP 500s carry no detail).
        let log_path = workspace_root().join(format!("target/moto-{}.log", std::process::id()));
        let log = std::fs::File::create(&log_path).expect("moto log file");
        let mut child = Command::new(venv_python())
            .arg(&script)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start moto server");
        let stdout = child.stdout.take().expect("moto stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read moto port");
        let port: u16 = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("moto server did not start (said {line:?})"));
        let stdin = child.stdin.take().expect("moto stdin");
        Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            _child: Mutex::new((child, stdin)),
        }
    }

    pub fn port(&self) -> u16 {
        self.endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// Ends the server now (it also ends with this process).
    pub fn stop(&self) {
        if let Ok(mut guard) = self._child.lock() {
            let _ = guard.0.kill();
            let _ = guard.0.wait();
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// SDK settings pointing at this server with dummy credentials.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config_at(&self.endpoint).await
    }

    /// The S3 the tests use: the strict one when set, else this server.
    pub fn s3_endpoint(&self) -> String {
        strict_s3_endpoint().unwrap_or_else(|| self.endpoint.clone())
    }

    /// An S3 client builder for [`s3_endpoint`](Self::s3_endpoint), with
    /// path-style addressing (neither emulator serves bucket host names on
    /// loopback).
    pub async fn s3_builder(&self) -> aws_sdk_s3::config::Builder {
        aws_sdk_s3::config::Builder::from(&sdk_config_at(&self.s3_endpoint()).await)
            .force_path_style(true)
    }

    pub async fn s3(&self) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(self.s3_builder().await.build())
    }

    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk_config().await)
    }

    pub async fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk_config().await)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Ok(mut guard) = self._child.lock() {
            let _ = guard.0.kill();
            let _ = guard.0.wait();
        }
    }
}

/// SDK settings pointing at `endpoint` (moto, or a proxy in front of it)
/// with dummy credentials. For SQS and DynamoDB; S3 clients come from
/// [`Moto::s3_builder`], which knows which S3 the tests use.
pub async fn sdk_config_at(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "ferry-testkit",
        ))
        .load()
        .await
}

/// Creates an on-demand table keyed by the string attribute `key` (tables
/// that are not ferry's own shape; `ferry_testkit` callers make those).
pub async fn create_table_keyed(dynamodb: &aws_sdk_dynamodb::Client, table: &str, key: &str) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    dynamodb
        .create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute definition"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(KeyType::Hash)
                .build()
                .expect("key schema"),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create table");
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::AttributeValue;

    use super::{Moto, create_table_keyed};

    /// DynamoDB applies a conditional write to one item atomically: of many
    /// concurrent claims exactly one passes its condition. moto 5.2.5 alone
    /// lets several through (scripts/moto_server.py serialises its DynamoDB
    /// requests); ferry's claims, fences and final records rely on it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_of_many_concurrent_conditional_claims_wins() {
        let moto = Moto::start();
        let dynamodb = moto.dynamodb().await;
        create_table_keyed(&dynamodb, "claims", "id").await;
        for item in 0..20 {
            let claims: Vec<_> = (0..8)
                .map(|claimant| {
                    let dynamodb = dynamodb.clone();
                    tokio::spawn(async move {
                        dynamodb
                            .update_item()
                            .table_name("claims")
                            .key("id", AttributeValue::S(format!("item-{item}")))
                            .condition_expression("attribute_not_exists(claimed_by)")
                            .update_expression("SET claimed_by = :me")
                            .expression_attribute_values(
                                ":me",
                                AttributeValue::S(claimant.to_string()),
                            )
                            .send()
                            .await
                            .is_ok()
                    })
                })
                .collect();
            let mut winners = 0;
            for claim in claims {
                winners += usize::from(claim.await.unwrap());
            }
            assert_eq!(
                winners, 1,
                "item-{item}: {winners} claims passed the condition"
            );
        }
    }
}
