//! A fault-injecting proxy between ferry and the AWS emulator.
//!
//! ferry only needs `AWS_ENDPOINT_URL` pointed at it. Every request is
//! recognised (`s3:UploadPart`, `dynamodb:UpdateItem`, `sqs:ReceiveMessage`,
//! …; see [`operation`]), matched against the installed [`Rule`]s and then
//! forwarded, answered with an AWS error, delayed, cut off before or after
//! forwarding, or held until the client gives up. Every request — faulted
//! or not — is logged with its operation, the fault and the time, so a test
//! can assert on what happened and a checker can count what reached the
//! emulator.
//!
//! S3 requests go to the strict S3 when the tests use one
//! (`FERRY_TEST_S3_ENDPOINT`, see [`crate::moto`]), everything else to moto,
//! so the fault tests exercise whichever S3 the suite runs against.
//!
//! In a test, use [`AwsProxy`] directly; scripts run the `ferry-aws-proxy`
//! binary and steer it over HTTP (`/__proxy/rules`, `/__proxy/log`). Bodies
//! are buffered whole, which is fine for tests and not meant for more.
//!
//! Over ~500 lines: recognising, faulting, forwarding (to moto, or S3 to
//! the strict S3) and logging are one request's path, kept in one reading;
//! the operations and the rules are their own modules.

pub mod operation;
pub mod rules;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use operation::{Operation, Service};
pub use rules::{Fault, Rule};

use rules::Installed;

/// One request as the proxy saw and handled it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    pub seq: u64,
    /// Milliseconds since the proxy started.
    pub t_ms: u64,
    /// Wall clock, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// `s3:UploadPart`, `dynamodb:UpdateItem`, …
    pub op: String,
    /// S3: `bucket/key`; empty for DynamoDB and SQS.
    pub target: String,
    /// S3: the multipart upload the request names (`uploadId`), if any.
    pub upload_id: Option<String>,
    /// The terminal fault applied (`error`, `throttle`, `reset`, `lost`,
    /// `hang`, `error200`), if any.
    pub fault: Option<&'static str>,
    /// Milliseconds of `delay` rules applied.
    pub delayed_ms: u64,
    /// The rules that acted, by id.
    pub rules: Vec<String>,
    /// Whether the request reached the emulator.
    pub forwarded: bool,
    /// The emulator's HTTP status, when forwarded and answered.
    pub upstream_status: Option<u16>,
    /// The status the client received; `None` when the connection was cut.
    pub answered: Option<u16>,
}

/// Settings of one proxy.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// The emulator, e.g. `http://127.0.0.1:5000`.
    pub upstream: String,
    /// Where S3 requests go instead, if not to `upstream` (the strict S3).
    pub s3_upstream: Option<String>,
    /// Seed of the generator behind `probability` rules.
    pub seed: u64,
    /// Loopback port to listen on (0: ephemeral).
    pub port: u16,
    /// Also append every log entry to this file, one JSON object a line.
    pub log_file: Option<std::path::PathBuf>,
}

struct State {
    upstream: String,
    s3_upstream: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
    rules: Mutex<Vec<Installed>>,
    log: Mutex<Vec<LogEntry>>,
    log_file: Option<Mutex<std::fs::File>>,
    rng: Mutex<rand::rngs::StdRng>,
    started: Instant,
}

/// A running proxy; stops (with its connections) when dropped.
pub struct AwsProxy {
    addr: SocketAddr,
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
}

impl AwsProxy {
    /// A proxy in front of `upstream` on an ephemeral loopback port, seed 0;
    /// S3 requests go to the strict S3 when the tests use one.
    pub async fn start(upstream: &str) -> AwsProxy {
        Self::start_with(ProxyOptions {
            upstream: upstream.to_owned(),
            s3_upstream: crate::moto::strict_s3_endpoint(),
            seed: 0,
            port: 0,
            log_file: None,
        })
        .await
        .expect("start the AWS fault proxy")
    }

    pub async fn start_with(options: ProxyOptions) -> std::io::Result<AwsProxy> {
        let listener = TcpListener::bind(("127.0.0.1", options.port)).await?;
        let addr = listener.local_addr()?;
        let log_file = match &options.log_file {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
            None => None,
        };
        let state = Arc::new(State {
            upstream: options.upstream.trim_end_matches('/').to_owned(),
            s3_upstream: options
                .s3_upstream
                .as_deref()
                .map(|url| url.trim_end_matches('/').to_owned()),
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build_http(),
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            log_file,
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(options.seed)),
            started: Instant::now(),
        });
        let server = tokio::spawn(serve(listener, Arc::clone(&state)));
        Ok(AwsProxy {
            addr,
            state,
            server,
        })
    }

    /// What `AWS_ENDPOINT_URL` should be.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Replaces every rule.
    pub fn set_rules(&self, rules: Vec<Rule>) {
        self.state.set_rules(rules);
    }

    /// Appends a rule (evaluated after those already installed).
    pub fn add_rule(&self, rule: Rule) {
        self.state.add_rules(vec![rule]);
    }

    pub fn clear_rules(&self) {
        self.state.set_rules(Vec::new());
    }

    /// Every request so far, in arrival order.
    pub fn log(&self) -> Vec<LogEntry> {
        lock(&self.state.log).clone()
    }

    /// Requests for `op` that a terminal fault hit.
    pub fn faults(&self, op: &str) -> Vec<LogEntry> {
        self.log()
            .into_iter()
            .filter(|e| e.op == op && e.fault.is_some())
            .collect()
    }

    /// Requests for `op` that reached the emulator.
    pub fn forwarded(&self, op: &str) -> Vec<LogEntry> {
        self.log()
            .into_iter()
            .filter(|e| e.op == op && e.forwarded)
            .collect()
    }
}

impl Drop for AwsProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl State {
    fn set_rules(&self, rules: Vec<Rule>) {
        *lock(&self.rules) = rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| Installed::new(r, i))
            .collect();
    }

    fn add_rules(&self, rules: Vec<Rule>) {
        let mut installed = lock(&self.rules);
        for rule in rules {
            let position = installed.len();
            installed.push(Installed::new(rule, position));
        }
    }

    /// The delay to add and the terminal fault to apply, with the rules' labels.
    fn decide(&self, op: &Operation, body: &[u8]) -> (u64, Option<Fault>, Vec<String>) {
        let mut rules = lock(&self.rules);
        let mut rng = lock(&self.rng);
        let mut roll = || rng.random::<f64>();
        let mut delayed = 0;
        let mut acted = Vec::new();
        for rule in rules.iter_mut() {
            if !rule.fires(op, body, &mut roll) {
                continue;
            }
            acted.push(rule.label.clone());
            match &rule.rule.fault {
                Fault::Delay { ms } => delayed += ms,
                fault => return (delayed, Some(fault.clone()), acted),
            }
        }
        (delayed, None, acted)
    }

    fn record(&self, mut entry: LogEntry) {
        let mut log = lock(&self.log);
        entry.seq = log.len() as u64;
        if let Some(file) = &self.log_file
            && let Ok(line) = serde_json::to_string(&entry)
        {
            let _ = writeln!(lock(file), "{line}");
        }
        log.push(entry);
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        let state = Arc::clone(&state);
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { handle(&state, request).await }
            });
            // An error here is usually a fault we injected on purpose.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Why a connection is closed without an answer.
#[derive(Debug)]
struct Cut;

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection cut by a fault rule")
    }
}

impl std::error::Error for Cut {}

type Answer = Result<Response<Full<Bytes>>, Cut>;

/// A log entry that is recorded when dropped, so that a request whose
/// client went away mid-flight (hyper then drops the handler) still shows,
/// with what had happened to it by then.
struct Pending<'a> {
    state: &'a State,
    entry: LogEntry,
    logged: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.logged {
            self.state.record(self.entry.clone());
        }
    }
}

async fn handle(state: &State, request: Request<Incoming>) -> Answer {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(Cut),
    };
    if let Some(control) = parts.uri.path().strip_prefix("/__proxy/") {
        return Ok(control_api(state, &parts.method, control, &body));
    }
    let op = operation::recognise(&parts, &body);
    let (delayed_ms, fault, rules) = state.decide(&op, &body);
    let mut pending = Pending {
        state,
        entry: LogEntry {
            seq: 0,
            t_ms: state.started.elapsed().as_millis() as u64,
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            op: op.qualified(),
            target: op.target.clone(),
            upload_id: op.upload_id.clone(),
            fault: fault.as_ref().map(Fault::name),
            delayed_ms,
            rules,
            forwarded: false,
            upstream_status: None,
            answered: None,
        },
        logged: false,
    };
    if delayed_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delayed_ms)).await;
    }
    let answer = match &fault {
        // `decide` never returns a delay as the terminal fault.
        None | Some(Fault::Delay { .. }) => {
            forward(state, op.service, parts, body, &mut pending.entry).await
        }
        Some(Fault::Error { status, code }) => Ok(error_response(
            op.service,
            status.unwrap_or(500),
            code.as_deref().unwrap_or(internal_code(op.service)),
            &parts,
        )),
        Some(Fault::Throttle) => {
            let (status, code) = throttle_shape(op.service);
            Ok(error_response(op.service, status, code, &parts))
        }
        Some(Fault::Reset) => Err(Cut),
        Some(Fault::Lost) => {
            let _ = forward(state, op.service, parts, body, &mut pending.entry).await;
            Err(Cut)
        }
        Some(Fault::Hang { ms }) => {
            // Logged now: the client gives up long before the hang ends.
            state.record(pending.entry.clone());
            pending.logged = true;
            tokio::time::sleep(Fault::hang_for(*ms)).await;
            return Err(Cut);
        }
        Some(Fault::Error200 { forward: applied }) => {
            if *applied {
                let _ = forward(state, op.service, parts.clone(), body, &mut pending.entry).await;
            }
            let mut response = error_response(Service::S3, 500, "InternalError", &parts);
            *response.status_mut() = StatusCode::OK;
            Ok(response)
        }
    };
    pending.entry.answered = answer.as_ref().ok().map(|r| r.status().as_u16());
    answer
}

async fn forward(
    state: &State,
    service: Service,
    parts: hyper::http::request::Parts,
    body: Bytes,
    entry: &mut LogEntry,
) -> Answer {
    let upstream = match (&state.s3_upstream, service) {
        (Some(s3), Service::S3) => s3,
        _ => &state.upstream,
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri: hyper::Uri = format!("{upstream}{path}").parse().map_err(|_| Cut)?;
    let mut upstream = Request::builder().method(parts.method.clone()).uri(uri);
    for (name, value) in &parts.headers {
        if name != hyper::header::CONNECTION {
            upstream = upstream.header(name, value);
        }
    }
    let upstream = upstream.body(Full::new(body)).map_err(|_| Cut)?;
    entry.forwarded = true;
    let response = state.client.request(upstream).await.map_err(|_| Cut)?;
    let (mut head, body) = response.into_parts();
    entry.upstream_status = Some(head.status.as_u16());
    let body = body.collect().await.map_err(|_| Cut)?.to_bytes();
    head.headers.remove(hyper::header::TRANSFER_ENCODING);
    Ok(Response::from_parts(head, Full::new(body)))
}

fn internal_code(service: Service) -> &'static str {
    match service {
        Service::S3 | Service::Sqs | Service::Sns => "InternalError",
        Service::DynamoDb => "InternalServerError",
    }
}

fn throttle_shape(service: Service) -> (u16, &'static str) {
    match service {
        Service::S3 => (503, "SlowDown"),
        Service::DynamoDb => (400, "ProvisionedThroughputExceededException"),
        Service::Sqs => (400, "ThrottlingException"),
        Service::Sns => (400, "Throttling"),
    }
}

/// An error in the shape the service's SDK parses.
fn error_response(
    service: Service,
    status: u16,
    code: &str,
    parts: &hyper::http::request::Parts,
) -> Response<Full<Bytes>> {
    let message = "injected by ferry-aws-proxy";
    let request_id = "ferry-aws-proxy";
    let query_protocol = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let (content_type, body) = match service {
        Service::S3 => (
            "application/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
                 <Message>{message}</Message><RequestId>{request_id}</RequestId></Error>"
            ),
        ),
        Service::Sqs | Service::Sns if query_protocol => (
            "text/xml",
            format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>\
                 <Message>{message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
            ),
        ),
        Service::Sqs | Service::Sns => (
            "application/x-amz-json-1.0",
            format!(r#"{{"__type":"com.amazonaws.sqs#{code}","message":"{message}"}}"#),
        ),
        Service::DynamoDb => (
            "application/x-amz-json-1.0",
            format!(
                r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"{message}"}}"#
            ),
        ),
    };
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-amz-request-id", request_id)
        .header("x-amzn-requestid", request_id);
    if service == Service::Sqs {
        builder = builder.header("x-amzn-query-error", format!("{code};Sender"));
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// `PUT rules` (replace), `POST rules` (append), `DELETE rules`, `GET log`
/// (JSON lines; `?since=SEQ`), `GET stats`.
fn control_api(
    state: &State,
    method: &hyper::Method,
    path: &str,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let reply = |status: u16, text: String| {
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(text)))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    };
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let parse_rules = || -> Result<Vec<Rule>, String> {
        serde_json::from_slice::<Vec<Rule>>(body)
            .or_else(|_| serde_json::from_slice::<Rule>(body).map(|r| vec![r]))
            .map_err(|err| format!("rules must be a JSON rule or list of rules: {err}\n"))
    };
    match (method.as_str(), path) {
        ("PUT", "rules") => match parse_rules() {
            Ok(rules) => {
                state.set_rules(rules);
                reply(200, "ok\n".into())
            }
            Err(err) => reply(400, err),
        },
        ("POST", "rules") => match parse_rules() {
            Ok(rules) => {
                state.add_rules(rules);
                reply(200, "ok\n".into())
            }
            Err(err) => reply(400, err),
        },
        ("DELETE", "rules") => {
            state.set_rules(Vec::new());
            reply(200, "ok\n".into())
        }
        ("GET", "log") => {
            let since: u64 = query
                .strip_prefix("since=")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let log = lock(&state.log);
            let mut text = String::new();
            for entry in log
                .iter()
                .skip(usize::try_from(since).unwrap_or(usize::MAX))
            {
                if let Ok(line) = serde_json::to_string(entry) {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
            reply(200, text)
        }
        ("GET", "stats") => {
            let mut stats: std::collections::BTreeMap<
                String,
                std::collections::BTreeMap<&str, u64>,
            > = Default::default();
            for entry in lock(&state.log).iter() {
                let counts = stats.entry(entry.op.clone()).or_default();
                *counts.entry("requests").or_default() += 1;
                if let Some(fault) = entry.fault {
                    *counts.entry(fault).or_default() += 1;
                }
            }
            reply(200, serde_json::to_string(&stats).unwrap_or_default())
        }
        _ => reply(404, "unknown control path\n".into()),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
