//! An in-process HTTP/1.1 origin on a loopback port, with switchable faults.
//!
//! Written on raw TCP rather than a server framework because its job is to
//! misbehave precisely: lie about lengths, reset mid-body, stall, change the
//! content between requests. It counts requests and body bytes served so tests
//! can prove what was (not) fetched, and the most requests it answered at once.
//!
//! Over 500 lines because every way of lying is one more branch of the same
//! response writer (framing, validators, replacement, If-Range, redirects,
//! floods): split apart, each piece would need the whole request/response
//! state handed to it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// How a response body's end is marked (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body ends when the connection closes, so a cut body
    /// looks exactly like a whole one.
    Close,
}

/// A new version of the resource, served from a given request on: the origin
/// changes its content between two requests of one transfer.
#[derive(Debug, Clone)]
pub struct Replacement {
    /// Requests answered with the old version first (the probe is request 1).
    pub after_requests: u64,
    pub body: Bytes,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// How the origin behaves; change it at any time with [`Origin::set`].
#[derive(Debug, Clone)]
pub struct Behavior {
    /// Honour `Range` (206) or ignore it (200 with the whole body).
    pub ranges: bool,
    pub framing: Framing,
    /// Sent as is: a strong (`"v1"`) or weak (`W/"v1"`) entity tag.
    pub etag: Option<String>,
    /// Sent as is (an HTTP date).
    pub last_modified: Option<String>,
    /// The `Date` header, when set (it decides whether a `Last-Modified`
    /// is a strong validator, RFC 9110 §8.8.2.2).
    pub date: Option<String>,
    /// Evaluate `If-Range` (RFC 9110 §13.1.5); otherwise a range is served
    /// whatever validator the request names.
    pub honour_if_range: bool,
    /// Serve another version of the resource from a given request on.
    pub replace: Option<Replacement>,
    pub content_encoding: Option<String>,
    pub content_type: Option<String>,
    /// Answer this status (with a short body) to every request.
    pub status: Option<u16>,
    /// Answer 503 to this many requests before behaving.
    pub fail_first: u32,
    /// Close the connection once the body reaches this object offset, this
    /// many times (each reset uses one).
    pub reset_at: Option<(u64, u32)>,
    /// Stop sending (without closing) at this object offset, for this long; once.
    pub stall_at: Option<(u64, Duration)>,
    /// Announce this `Content-Length` whatever the body really is.
    pub announced_length: Option<u64>,
    /// Pause between body chunks (a slow origin).
    pub chunk_delay: Option<Duration>,
    /// Pause before answering each request (a far origin: a round trip
    /// before the first byte).
    pub answer_delay: Option<Duration>,
    /// Answer this many requests with 200 and the whole body even if they ask
    /// for a range (still advertising `Accept-Ranges`).
    pub ignore_range_requests: u32,
    /// Answer requests with `302 Found` to this location: every request,
    /// or only those for the path `redirect_from` names.
    pub redirect_to: Option<String>,
    pub redirect_from: Option<String>,
    /// Send the body over and over, chunked, until the client goes away.
    pub endless: bool,
    /// Add a response header of this many bytes.
    pub huge_header: usize,
    /// Add this many small response headers (a header flood).
    pub extra_headers: usize,
    /// More response headers, sent as given (`Cache-Control`, …).
    pub headers: Vec<(String, String)>,
}

impl Default for Behavior {
    fn default() -> Self {
        Self {
            ranges: true,
            framing: Framing::Length,
            etag: Some("\"v1\"".into()),
            last_modified: None,
            date: None,
            honour_if_range: true,
            replace: None,
            content_encoding: None,
            content_type: Some("application/octet-stream".into()),
            status: None,
            fail_first: 0,
            reset_at: None,
            stall_at: None,
            announced_length: None,
            chunk_delay: None,
            answer_delay: None,
            ignore_range_requests: 0,
            redirect_to: None,
            redirect_from: None,
            endless: false,
            huge_header: 0,
            extra_headers: 0,
            headers: Vec::new(),
        }
    }
}

struct State {
    body: Mutex<Bytes>,
    behavior: Mutex<Behavior>,
    requests: AtomicU64,
    range_requests: AtomicU64,
    bytes_served: AtomicU64,
    /// Requests being answered now, and the most there ever were.
    active: AtomicU64,
    most_active: AtomicU64,
    /// Every request's head, in arrival order.
    seen: Mutex<Vec<SeenRequest>>,
}

/// A request as the origin received it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub path: String,
    /// Header names lower-cased, in the order sent.
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Counts one request as being answered until dropped.
struct Answering<'a>(&'a State);

impl<'a> Answering<'a> {
    fn start(state: &'a State) -> Self {
        let now = state.active.fetch_add(1, Ordering::SeqCst) + 1;
        state.most_active.fetch_max(now, Ordering::SeqCst);
        Self(state)
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running origin; stops when dropped.
pub struct Origin {
    addr: std::net::SocketAddr,
    scheme: &'static str,
    state: Arc<State>,
    _tasks: JoinSet<()>,
}

const CHUNK: usize = 64 * 1024;

impl Origin {
    pub async fn start(body: impl Into<Bytes>, behavior: Behavior) -> Self {
        Self::serve(body.into(), behavior, None).await
    }

    /// The same origin behind TLS, with a certificate for `localhost` and
    /// `127.0.0.1` signed by `ca`.
    pub async fn start_tls(
        body: impl Into<Bytes>,
        behavior: Behavior,
        ca: &crate::tls::TestCa,
    ) -> Self {
        Self::serve(body.into(), behavior, Some(ca.server_config())).await
    }

    async fn serve(
        body: Bytes,
        behavior: Behavior,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin address");
        let state = Arc::new(State {
            body: Mutex::new(body),
            behavior: Mutex::new(behavior),
            requests: AtomicU64::new(0),
            range_requests: AtomicU64::new(0),
            bytes_served: AtomicU64::new(0),
            active: AtomicU64::new(0),
            most_active: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let mut tasks = JoinSet::new();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let shared = Arc::clone(&state);
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&shared);
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(socket).await {
                                connection(stream, state).await;
                            }
                        }
                        None => connection(socket, state).await,
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Self {
            addr,
            scheme,
            state,
            _tasks: tasks,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "{}://{}/{}",
            self.scheme,
            self.addr,
            path.trim_start_matches('/')
        )
    }

    /// The URL with `localhost` as host (for TLS name checks).
    pub fn localhost_url(&self, path: &str) -> String {
        format!(
            "{}://localhost:{}/{}",
            self.scheme,
            self.addr.port(),
            path.trim_start_matches('/')
        )
    }

    pub fn set(&self, change: impl FnOnce(&mut Behavior)) {
        change(&mut self.state.behavior.lock().expect("behavior lock"));
    }

    pub fn set_body(&self, body: impl Into<Bytes>) {
        *self.state.body.lock().expect("body lock") = body.into();
    }

    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn range_requests(&self) -> u64 {
        self.state.range_requests.load(Ordering::SeqCst)
    }

    pub fn bytes_served(&self) -> u64 {
        self.state.bytes_served.load(Ordering::SeqCst)
    }

    /// Every request received so far, in arrival order.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.state.seen.lock().expect("seen lock").clone()
    }

    /// The most requests this origin was answering at one time (from the
    /// request's head read to its body's last byte written).
    pub fn most_concurrent_requests(&self) -> u64 {
        self.state.most_active.load(Ordering::SeqCst)
    }
}

struct Request {
    method: String,
    range: Option<String>,
    if_range: Option<String>,
    seen: SeenRequest,
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, state: Arc<State>) {
    let mut pending = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut pending).await else {
            return;
        };
        if !respond(&mut stream, &state, request).await {
            return;
        }
    }
}

async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    pending: &mut Vec<u8>,
) -> Option<Request> {
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(pos) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if pending.len() > 64 * 1024 {
            return None;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&buf[..n]);
    };
    let head: Vec<u8> = pending.drain(..end).collect();
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next().unwrap_or("/").to_owned();
    let mut request = Request {
        method,
        range: None,
        if_range: None,
        seen: SeenRequest {
            path,
            headers: Vec::new(),
        },
    };
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim().to_owned();
            match name.as_str() {
                "range" => request.range = Some(value.clone()),
                "if-range" => request.if_range = Some(value.clone()),
                _ => {}
            }
            request.seen.headers.push((name, value));
        }
    }
    Some(request)
}

/// Writes one response; returns whether the connection may be reused.
async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, state: &State, request: Request) -> bool {
    let _answering = Answering::start(state);
    let number = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    state
        .seen
        .lock()
        .expect("seen lock")
        .push(request.seen.clone());
    let mut behavior = state.behavior.lock().expect("behavior lock").clone();
    let mut body = state.body.lock().expect("body lock").clone();
    if let Some(new) = behavior.replace.take()
        && number > new.after_requests
    {
        body = new.body;
        behavior.etag = new.etag;
        behavior.last_modified = new.last_modified;
    }
    if let Some(delay) = behavior.answer_delay {
        tokio::time::sleep(delay).await;
    }
    if u64::from(behavior.fail_first) >= number {
        return simple(stream, 503, "try later").await;
    }
    if let Some(location) = &behavior.redirect_to
        && behavior
            .redirect_from
            .as_ref()
            .is_none_or(|path| *path == request.seen.path)
    {
        let head =
            format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n");
        return stream.write_all(head.as_bytes()).await.is_ok();
    }
    if behavior.endless {
        let body = state.body.lock().expect("body lock").clone();
        return endless(stream, &state.bytes_served, &body).await;
    }
    if let Some(status) = behavior.status {
        return simple(stream, status, "as configured").await;
    }
    let total = body.len() as u64;
    // If-Range matches by strong comparison only (RFC 9110 §13.1.5).
    let validator_ok = match &request.if_range {
        None => true,
        Some(_) if !behavior.honour_if_range => true,
        Some(asked) => {
            behavior
                .etag
                .as_ref()
                .is_some_and(|etag| asked == etag && !etag.starts_with("W/"))
                || behavior.last_modified.as_ref() == Some(asked)
        }
    };
    let range = request
        .range
        .as_deref()
        .filter(|_| behavior.ranges && validator_ok)
        .filter(|_| number > u64::from(behavior.ignore_range_requests))
        .and_then(|r| parse_range(r, total));
    let mut head = String::new();
    let (status, start, end) = match range {
        Some(Ok((start, end))) => {
            state.range_requests.fetch_add(1, Ordering::SeqCst);
            head.push_str(&format!(
                "Content-Range: bytes {start}-{}/{total}\r\n",
                end - 1
            ));
            (206, start, end)
        }
        Some(Err(())) => {
            let head = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\n\r\n"
            );
            return stream.write_all(head.as_bytes()).await.is_ok();
        }
        None => (200, 0, total),
    };
    if behavior.ranges {
        head.push_str("Accept-Ranges: bytes\r\n");
    }
    if let Some(etag) = &behavior.etag {
        head.push_str(&format!("ETag: {etag}\r\n"));
    }
    if let Some(date) = &behavior.last_modified {
        head.push_str(&format!("Last-Modified: {date}\r\n"));
    }
    if let Some(date) = &behavior.date {
        head.push_str(&format!("Date: {date}\r\n"));
    }
    for n in 0..behavior.extra_headers {
        head.push_str(&format!("X-Flood-{n}: {n}\r\n"));
    }
    if behavior.huge_header > 0 {
        head.push_str(&format!(
            "X-Filler: {}\r\n",
            "a".repeat(behavior.huge_header)
        ));
    }
    if let Some(encoding) = &behavior.content_encoding {
        head.push_str(&format!("Content-Encoding: {encoding}\r\n"));
    }
    for (name, value) in &behavior.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(content_type) = &behavior.content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    let chunked = behavior.framing == Framing::Chunked;
    match behavior.framing {
        Framing::Chunked => head.push_str("Transfer-Encoding: chunked\r\n"),
        Framing::Length => {
            let length = behavior.announced_length.unwrap_or(end - start);
            head.push_str(&format!("Content-Length: {length}\r\n"));
        }
        Framing::Close => head.push_str("Connection: close\r\n"),
    }
    let reason = if status == 206 {
        "Partial Content"
    } else {
        "OK"
    };
    let head = format!("HTTP/1.1 {status} {reason}\r\n{head}\r\n");
    if stream.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    if request.method == "HEAD" {
        return true;
    }
    let mut offset = start;
    while offset < end {
        let mut next = (offset + CHUNK as u64).min(end);
        if let Some((at, _)) = behavior.reset_at
            && offset < at
            && next > at
        {
            next = at;
        }
        if let Some((at, _)) = behavior.stall_at
            && offset < at
            && next > at
        {
            next = at;
        }
        if offset == next {
            break;
        }
        let slice = &body[offset as usize..next as usize];
        let written = if chunked {
            let mut framed = format!("{:x}\r\n", slice.len()).into_bytes();
            framed.extend_from_slice(slice);
            framed.extend_from_slice(b"\r\n");
            stream.write_all(&framed).await
        } else {
            stream.write_all(slice).await
        };
        if written.is_err() {
            return false;
        }
        state
            .bytes_served
            .fetch_add(slice.len() as u64, Ordering::SeqCst);
        offset = next;
        if let Some(delay) = behavior.chunk_delay {
            tokio::time::sleep(delay).await;
        }
        if behavior.reset_at.is_some_and(|(at, _)| at == offset) && take_reset(state) {
            let _ = stream.flush().await;
            return false;
        }
        if let Some((at, pause)) = behavior.stall_at
            && at == offset
            && take_stall(state)
        {
            let _ = stream.flush().await;
            tokio::time::sleep(pause).await;
        }
    }
    if chunked && stream.write_all(b"0\r\n\r\n").await.is_err() {
        return false;
    }
    let _ = stream.flush().await;
    // A lying Content-Length leaves the framing broken: close. A body framed
    // by the connection ends only when it closes.
    behavior.announced_length.is_none() && behavior.framing != Framing::Close
}

/// A chunked body that never ends (until the client hangs up).
async fn endless<S: AsyncWrite + Unpin>(stream: &mut S, served: &AtomicU64, body: &[u8]) -> bool {
    let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() || body.is_empty() {
        return false;
    }
    loop {
        for slice in body.chunks(CHUNK) {
            let mut framed = format!("{:x}\r\n", slice.len()).into_bytes();
            framed.extend_from_slice(slice);
            framed.extend_from_slice(b"\r\n");
            if stream.write_all(&framed).await.is_err() {
                return false;
            }
            served.fetch_add(slice.len() as u64, Ordering::SeqCst);
        }
    }
}

/// Stalls are one-shot, so the retry after a stall can succeed.
fn take_stall(state: &State) -> bool {
    state
        .behavior
        .lock()
        .expect("behavior lock")
        .stall_at
        .take()
        .is_some()
}

fn take_reset(state: &State) -> bool {
    let mut behavior = state.behavior.lock().expect("behavior lock");
    match &mut behavior.reset_at {
        Some((_, remaining)) if *remaining > 0 => {
            *remaining -= 1;
            true
        }
        _ => false,
    }
}

async fn simple<S: AsyncWrite + Unpin>(stream: &mut S, status: u16, text: &str) -> bool {
    let head = format!(
        "HTTP/1.1 {status} Fault\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{text}",
        text.len()
    );
    stream.write_all(head.as_bytes()).await.is_ok()
}

/// `bytes=a-b` / `bytes=a-` → half-open `[a, b+1)`; `Err` when unsatisfiable.
fn parse_range(value: &str, total: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.strip_prefix("bytes=")?;
    let (first, last) = spec.split_once('-')?;
    let first: u64 = first.parse().ok()?;
    if first >= total {
        return Some(Err(()));
    }
    let end = match last {
        "" => total,
        last => last.parse::<u64>().ok()?.saturating_add(1).min(total),
    };
    Some(Ok((first, end)))
}
