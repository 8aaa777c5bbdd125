//! ECS task scale-in protection: keeps this task protected while any job runs,
//! so that service autoscaling or a deployment never stops it mid-copy.
//!
//! When ECS runs the task it sets `ECS_AGENT_URI`; a `PUT` of
//! `{"ProtectionEnabled":true,"ExpiresInMinutes":N}` to
//! `${ECS_AGENT_URI}/task-protection/v1/state` protects the task for N minutes
//! and `{"ProtectionEnabled":false}` removes the protection.
//!
//! [`TaskProtection`] owns that conversation. Each running job holds a
//! [`ProtectionGuard`] from [`TaskProtection::busy`]; the running count going
//! 0 → 1 turns protection on, going back to 0 turns it off. [`TaskProtection::run`]
//! is the one loop that talks to the agent: it follows the count, renews the
//! protection well before it expires, and retries failed calls. A failure is
//! logged and retried, never fatal: a job is never delayed or failed because
//! the agent is unreachable. Without `ECS_AGENT_URI` (local runs, docker
//! compose) nothing is ever sent.
//!
//! It deliberately does not decide when the worker stops taking jobs, and it
//! does not wait for protection to be confirmed before a job starts.
//!
//! Over ~500 lines only with its tests (~300 lines: a fake ECS agent on
//! loopback, answering, failing and hanging as the real one can).

use std::sync::Arc;
use std::time::Duration;

use ferry_engine::source::Url;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The environment variable the ECS agent sets inside a task's containers.
pub const AGENT_URI_ENV: &str = "ECS_AGENT_URI";

/// Most of an error body worth keeping for a log line.
const MAX_BODY_BYTES: usize = 4096;

/// Why the agent could not be asked, or what it refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtectionError {
    #[error("{AGENT_URI_ENV} {value:?} is not a usable http URL")]
    InvalidAgentUri { value: String },
    #[error("cannot build the HTTP client for the ECS agent: {source}")]
    Client { source: reqwest::Error },
    #[error("ECS agent request failed: {source}")]
    Request { source: reqwest::Error },
    #[error("ECS agent answered HTTP {status}: {reason}")]
    Status { status: u16, reason: String },
    #[error("ECS agent refused task protection: {reason}")]
    Refused { reason: String },
}

/// Timings of the protection loop. The defaults suit ECS; tests shorten them.
#[derive(Debug, Clone)]
pub struct ProtectionConfig {
    /// How long each protection lasts (`ExpiresInMinutes`, 1–2880). It bounds
    /// how long a crashed worker can keep a task from being scaled in.
    pub expires_in_minutes: u32,
    /// How often protection is renewed while a job runs; well under
    /// `expires_in_minutes` so a few failed renewals cannot let it lapse.
    pub renew_every: Duration,
    /// Delay before a failed call is tried again.
    pub retry_every: Duration,
    /// Ceiling on one call to the agent (it is on the task's own network).
    pub request_timeout: Duration,
}

impl Default for ProtectionConfig {
    fn default() -> Self {
        Self {
            expires_in_minutes: 30,
            renew_every: Duration::from_secs(10 * 60),
            retry_every: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Scale-in protection for this task, shared by every job (cheap to clone).
#[derive(Debug, Clone)]
pub struct TaskProtection {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `${ECS_AGENT_URI}/task-protection/v1/state`; `None` outside ECS.
    agent: Option<Agent>,
    config: ProtectionConfig,
    /// How many jobs are running right now.
    running: watch::Sender<usize>,
}

#[derive(Debug)]
struct Agent {
    endpoint: Url,
    client: reqwest::Client,
}

/// Held by a running job; dropping it says the job is over.
#[must_use = "protection ends for this job when the guard is dropped"]
#[derive(Debug)]
pub struct ProtectionGuard {
    inner: Arc<Inner>,
}

impl Drop for ProtectionGuard {
    fn drop(&mut self) {
        self.inner
            .running
            .send_modify(|running| *running = running.saturating_sub(1));
    }
}

impl TaskProtection {
    /// Reads `ECS_AGENT_URI`: unset or empty means "not on ECS", so nothing
    /// will be sent.
    pub fn from_env(config: ProtectionConfig) -> Result<Self, ProtectionError> {
        let value = std::env::var(AGENT_URI_ENV).ok();
        Self::from_agent_uri(value.as_deref(), config)
    }

    /// Like [`Self::from_env`], from the variable's value.
    pub fn from_agent_uri(
        value: Option<&str>,
        config: ProtectionConfig,
    ) -> Result<Self, ProtectionError> {
        let agent_uri = match value.map(str::trim) {
            None | Some("") => None,
            Some(value) => {
                Some(
                    Url::parse(value).map_err(|_| ProtectionError::InvalidAgentUri {
                        value: value.to_owned(),
                    })?,
                )
            }
        };
        Self::new(agent_uri, config)
    }

    /// Protection through the agent at `agent_uri`, or none when `None`.
    pub fn new(agent_uri: Option<Url>, config: ProtectionConfig) -> Result<Self, ProtectionError> {
        let agent = match agent_uri {
            None => None,
            Some(agent_uri) => Some(Agent {
                endpoint: state_endpoint(&agent_uri)?,
                client: reqwest::Client::builder()
                    .timeout(config.request_timeout)
                    // The agent is link-local: a configured proxy must not see it.
                    .no_proxy()
                    .build()
                    .map_err(|source| ProtectionError::Client { source })?,
            }),
        };
        let (running, _) = watch::channel(0);
        Ok(Self {
            inner: Arc::new(Inner {
                agent,
                config,
                running,
            }),
        })
    }

    /// Protection that never calls anything.
    pub fn disabled() -> Self {
        let (running, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                agent: None,
                config: ProtectionConfig::default(),
                running,
            }),
        }
    }

    /// Whether an ECS agent is configured, i.e. whether [`Self::run`] talks to one.
    pub fn is_enabled(&self) -> bool {
        self.inner.agent.is_some()
    }

    /// Marks one job as running until the guard is dropped.
    pub fn busy(&self) -> ProtectionGuard {
        self.inner.running.send_modify(|running| *running += 1);
        ProtectionGuard {
            inner: Arc::clone(&self.inner),
        }
    }

    /// The loop that keeps the agent in step with the running jobs; spawn it on
    /// the worker's task tracker. Returns at once when no agent is configured.
    ///
    /// Cancel it once the worker has stopped running jobs: it then makes one
    /// last attempt to remove a protection it set, and returns.
    pub async fn run(self, cancel: CancellationToken) {
        let Some(agent) = &self.inner.agent else {
            return;
        };
        let config = &self.inner.config;
        let mut running = self.inner.running.subscribe();
        // What the agent last confirmed (a task starts unprotected), and when;
        // `None` after a failed call, when the agent's state is unknown.
        let mut confirmed = Some(false);
        let mut confirmed_at = Instant::now();
        let mut failed = false;
        loop {
            let want = *running.borrow_and_update() > 0;
            let renewal_due =
                want && confirmed == Some(true) && confirmed_at.elapsed() >= config.renew_every;
            if confirmed != Some(want) || renewal_due {
                match agent.put(want, config.expires_in_minutes).await {
                    Ok(()) => {
                        tracing::debug!(protected = want, "task protection updated");
                        confirmed = Some(want);
                        confirmed_at = Instant::now();
                        failed = false;
                    }
                    Err(err) => {
                        tracing::warn!(
                            error = %err,
                            protected = want,
                            retry_in_secs = config.retry_every.as_secs_f64(),
                            "cannot update task protection"
                        );
                        confirmed = None;
                        failed = true;
                    }
                }
            }
            let wake_at = if failed {
                Some(Instant::now() + config.retry_every)
            } else if confirmed == Some(true) {
                Some(confirmed_at + config.renew_every)
            } else {
                None
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                changed = running.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = sleep_until(wake_at) => {}
            }
        }
        if confirmed != Some(false)
            && let Err(err) = agent.put(false, config.expires_in_minutes).await
        {
            tracing::warn!(error = %err, "cannot remove task protection at shutdown");
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `${ECS_AGENT_URI}/task-protection/v1/state`, whatever the base's last segment.
fn state_endpoint(agent_uri: &Url) -> Result<Url, ProtectionError> {
    let invalid = || ProtectionError::InvalidAgentUri {
        value: agent_uri.to_string(),
    };
    if !matches!(agent_uri.scheme(), "http" | "https") {
        return Err(invalid());
    }
    let mut endpoint = agent_uri.clone();
    endpoint
        .path_segments_mut()
        .map_err(|()| invalid())?
        .pop_if_empty()
        .extend(["task-protection", "v1", "state"]);
    Ok(endpoint)
}

impl Agent {
    /// One `PUT` of the protection state; `Ok` only when the agent confirms it.
    async fn put(&self, enabled: bool, expires_in_minutes: u32) -> Result<(), ProtectionError> {
        let body = if enabled {
            serde_json::json!({
                "ProtectionEnabled": true,
                "ExpiresInMinutes": expires_in_minutes,
            })
        } else {
            serde_json::json!({ "ProtectionEnabled": false })
        };
        let mut response = self
            .client
            .put(self.endpoint.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|source| ProtectionError::Request { source })?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|source| ProtectionError::Request { source })?
        {
            let room = MAX_BODY_BYTES.saturating_sub(bytes.len());
            bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if bytes.len() >= MAX_BODY_BYTES {
                break;
            }
        }
        let refusal = refusal_reason(&bytes);
        if !status.is_success() {
            return Err(ProtectionError::Status {
                status: status.as_u16(),
                reason: refusal.unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()),
            });
        }
        match refusal {
            Some(reason) => Err(ProtectionError::Refused { reason }),
            None => Ok(()),
        }
    }
}

/// The agent reports a refusal as `{"failure":{"Reason":…}}` (from ECS) or
/// `{"error":{"Code":…,"Message":…}}` (its own), even on some 2xx answers.
fn refusal_reason(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    if let Some(failure) = value.get("failure").filter(|v| !v.is_null()) {
        let reason = failure.get("Reason").and_then(|v| v.as_str());
        return Some(reason.map_or_else(|| failure.to_string(), str::to_owned));
    }
    let error = value.get("error").filter(|v| !v.is_null())?;
    let text = |key: &str| error.get(key).and_then(|v| v.as_str()).unwrap_or_default();
    Some(
        format!("{} {}", text("Code"), text("Message"))
            .trim()
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;

    /// Generous: only a hang should ever reach it.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// One request the fake agent received.
    #[derive(Debug)]
    struct Call {
        method: String,
        path: String,
        body: serde_json::Value,
    }

    /// A stand-in for the ECS agent on 127.0.0.1: records every request and
    /// answers with the next scripted reply (then with success).
    struct FakeAgent {
        uri: Url,
        calls: mpsc::Receiver<Call>,
        server: JoinHandle<()>,
    }

    impl FakeAgent {
        async fn start(replies: Vec<(u16, &'static str)>) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let uri = Url::parse(&format!("http://127.0.0.1:{port}/api/task-1234")).unwrap();
            let (tx, calls) = mpsc::channel(64);
            let server = tokio::spawn(async move {
                let mut replies = replies.into_iter();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    let Some(call) = read_request(&mut read).await else {
                        continue;
                    };
                    let (status, body) = replies.next().unwrap_or((
                        200,
                        r#"{"protection":{"ProtectionEnabled":true,"TaskArn":"arn"}}"#,
                    ));
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    // Recorded before the reply, so a caller that saw the
                    // answer also finds the call recorded.
                    if tx.send(call).await.is_err() {
                        return;
                    }
                    let _ = write.write_all(reply.as_bytes()).await;
                    let _ = write.shutdown().await;
                }
            });
            Self { uri, calls, server }
        }

        async fn next_call(&mut self) -> Call {
            tokio::time::timeout(PATIENCE, self.calls.recv())
                .await
                .expect("the agent was not called in time")
                .expect("the fake agent stopped")
        }

        fn assert_no_more_calls(&mut self) {
            assert!(
                self.calls.try_recv().is_err(),
                "unexpected call to the agent"
            );
        }
    }

    impl Drop for FakeAgent {
        fn drop(&mut self) {
            self.server.abort();
        }
    }

    async fn read_request(read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<Call> {
        let mut line = String::new();
        read.read_line(&mut line).await.ok()?;
        let mut parts = line.split_whitespace();
        let method = parts.next()?.to_owned();
        let path = parts.next()?.to_owned();
        let mut length = 0;
        loop {
            line.clear();
            read.read_line(&mut line).await.ok()?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().ok()?;
            }
        }
        let mut body = vec![0; length];
        read.read_exact(&mut body).await.ok()?;
        let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        Some(Call { method, path, body })
    }

    fn fast() -> ProtectionConfig {
        ProtectionConfig {
            expires_in_minutes: 7,
            renew_every: Duration::from_secs(3600),
            retry_every: Duration::from_millis(20),
            request_timeout: Duration::from_secs(5),
        }
    }

    fn protect(call: &Call) {
        assert_eq!(call.method, "PUT");
        assert_eq!(call.path, "/api/task-1234/task-protection/v1/state");
        assert_eq!(
            call.body,
            serde_json::json!({"ProtectionEnabled": true, "ExpiresInMinutes": 7})
        );
    }

    fn unprotect(call: &Call) {
        assert_eq!(call.method, "PUT");
        assert_eq!(call.path, "/api/task-1234/task-protection/v1/state");
        assert_eq!(call.body, serde_json::json!({"ProtectionEnabled": false}));
    }

    /// Runs the loop; returns its cancel token and handle.
    fn spawn(protection: &TaskProtection) -> (CancellationToken, JoinHandle<()>) {
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(protection.clone().run(cancel.clone()));
        (cancel, handle)
    }

    async fn stop(cancel: CancellationToken, handle: JoinHandle<()>) {
        cancel.cancel();
        tokio::time::timeout(PATIENCE, handle)
            .await
            .expect("the protection loop did not stop")
            .unwrap();
    }

    #[tokio::test]
    async fn protects_on_first_job_and_unprotects_once_when_the_last_finishes() {
        let mut agent = FakeAgent::start(vec![]).await;
        let protection = TaskProtection::new(Some(agent.uri.clone()), fast()).unwrap();
        let (cancel, handle) = spawn(&protection);

        let first = protection.busy();
        protect(&agent.next_call().await);
        let second = protection.busy();
        drop(first);
        let third = protection.busy();
        drop(second);
        drop(third);
        // Anything sent while a job was still running would arrive first.
        unprotect(&agent.next_call().await);

        stop(cancel, handle).await;
        agent.assert_no_more_calls();
    }

    #[tokio::test]
    async fn renews_protection_before_it_expires() {
        let mut agent = FakeAgent::start(vec![]).await;
        let config = ProtectionConfig {
            renew_every: Duration::from_millis(30),
            ..fast()
        };
        let protection = TaskProtection::new(Some(agent.uri.clone()), config).unwrap();
        let (cancel, handle) = spawn(&protection);

        let job = protection.busy();
        for _ in 0..3 {
            protect(&agent.next_call().await);
        }
        drop(job);
        loop {
            let call = agent.next_call().await;
            if call.body["ProtectionEnabled"] == false {
                unprotect(&call);
                break;
            }
            protect(&call);
        }

        stop(cancel, handle).await;
        agent.assert_no_more_calls();
    }

    #[tokio::test]
    async fn retries_when_the_agent_fails_or_refuses() {
        let mut agent = FakeAgent::start(vec![
            (
                500,
                r#"{"error":{"Code":"ServerException","Message":"boom"}}"#,
            ),
            (
                200,
                r#"{"failure":{"Arn":"arn","Reason":"TASK_NOT_VALID"}}"#,
            ),
        ])
        .await;
        let protection = TaskProtection::new(Some(agent.uri.clone()), fast()).unwrap();
        let (cancel, handle) = spawn(&protection);

        let job = protection.busy();
        for _ in 0..3 {
            protect(&agent.next_call().await);
        }
        drop(job);
        unprotect(&agent.next_call().await);

        stop(cancel, handle).await;
        agent.assert_no_more_calls();
    }

    #[tokio::test]
    async fn removes_its_protection_when_cancelled() {
        let mut agent = FakeAgent::start(vec![]).await;
        let protection = TaskProtection::new(Some(agent.uri.clone()), fast()).unwrap();
        let (cancel, handle) = spawn(&protection);

        let job = protection.busy();
        protect(&agent.next_call().await);
        stop(cancel, handle).await;
        unprotect(&agent.next_call().await);
        drop(job);
        agent.assert_no_more_calls();
    }

    #[tokio::test]
    async fn makes_no_calls_without_an_agent_uri() {
        let mut agent = FakeAgent::start(vec![]).await;
        for value in [None, Some(""), Some("  ")] {
            let protection = TaskProtection::from_agent_uri(value, fast()).unwrap();
            assert!(!protection.is_enabled());
            let job = protection.busy();
            let cancel = CancellationToken::new();
            // Without an agent the loop has nothing to do and returns at once.
            tokio::time::timeout(PATIENCE, protection.clone().run(cancel))
                .await
                .expect("the loop should return at once");
            drop(job);
        }
        let job = TaskProtection::disabled().busy();
        drop(job);
        agent.assert_no_more_calls();
    }

    #[test]
    fn endpoint_is_appended_to_the_agent_uri() {
        for base in [
            "http://169.254.170.2/api/abc-123",
            "http://169.254.170.2/api/abc-123/",
        ] {
            let endpoint = state_endpoint(&Url::parse(base).unwrap()).unwrap();
            assert_eq!(
                endpoint.as_str(),
                "http://169.254.170.2/api/abc-123/task-protection/v1/state"
            );
        }
    }

    #[test]
    fn rejects_an_unusable_agent_uri() {
        for value in ["not a url", "mailto:ops@example.com", "file:///tmp/agent"] {
            let err = TaskProtection::from_agent_uri(Some(value), fast()).unwrap_err();
            assert!(
                matches!(err, ProtectionError::InvalidAgentUri { .. }),
                "{value}: {err}"
            );
        }
    }

    #[test]
    fn reads_refusals_from_the_agent_body() {
        assert_eq!(
            refusal_reason(br#"{"failure":{"Arn":"a","Reason":"TASK_NOT_VALID"}}"#).as_deref(),
            Some("TASK_NOT_VALID")
        );
        assert_eq!(
            refusal_reason(br#"{"error":{"Code":"AccessDeniedException","Message":"no"}}"#)
                .as_deref(),
            Some("AccessDeniedException no")
        );
        assert_eq!(
            refusal_reason(br#"{"protection":{"ProtectionEnabled":true}}"#),
            None
        );
        assert_eq!(refusal_reason(b"not json"), None);
    }
}
