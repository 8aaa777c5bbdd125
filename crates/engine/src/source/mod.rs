//! The HTTP(S) source: one probe, then ranged reads or one resumable stream.
//!
//! The object stored is the resource byte for byte as served: requests ask for
//! `identity` encoding and nothing is ever decompressed (reqwest is built without
//! its decoders). Every body is read chunk by chunk into a pooled part buffer; no
//! body is ever read whole. Each request holds a slot of its host (`hosts`)
//! until its body is read; each chunk read is paid for to the transfer's
//! bandwidth caps (`crate::bandwidth`) before the next.
//!
//! # One version, whole
//!
//! An origin may replace its content at any moment, and the object stored must
//! still be bytes one version of the resource really had. Two requests can
//! only be combined when a *strong validator* pins them to one version: a
//! strong `ETag`, or a `Last-Modified` that is strong by RFC 9110 §8.8.2.2 (at
//! least a second older than the answer's `Date`). Every later request names
//! it in `If-Range`, and every answer must show it again — a server that
//! ignores `If-Range` is caught by that second check. A source without one is
//! read in one response from byte 0 and is never resumed by range; a cut
//! fails the attempt instead. What an answer's framing cannot tell — a body
//! that ends with its connection, no length or chunking to say it is whole —
//! is reported as [`Integrity::Unframed`] for the job record.

mod digests;
pub mod guard;
mod hosts;
mod range;
mod redirect;
mod representation;
mod stream;

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header;
use reqwest::{Client, Response, StatusCode};

pub use hosts::HostSlot;
pub use range::ContentRange;
pub use representation::{Integrity, Validator};
pub use reqwest::Url;
pub use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
pub use stream::BodyStream;

use crate::bandwidth::{Pacer, RateCap};
use crate::checksum::PartCrc;
use crate::config::SourceConfig;
use crate::destination::OriginHeaders;
use crate::error::TransferError;
use crate::pool::PartBuffer;
pub use digests::SourceDigests;
use guard::{AddressPolicy, GuardedResolver};
use hosts::HostSlots;
use redirect::{headers_may_follow, redirect_target};
use representation::is_unframed;

/// What to fetch: the URL and the caller's request headers (e.g. Authorization).
#[derive(Clone)]
pub struct SourceRequest {
    pub url: Url,
    /// Sent to the source only: to every redirect hop of the same origin,
    /// to another origin only when `headers_cross_origin`, and never from
    /// `https` down to `http`.
    pub headers: HeaderMap,
    /// Whether `headers` may follow a redirect to another origin (scheme,
    /// host and port); some CDNs redirect to a signed host that needs them.
    pub headers_cross_origin: bool,
}

impl std::fmt::Debug for SourceRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the query string nor the headers may ever reach a log.
        f.debug_struct("SourceRequest")
            .field("scheme", &self.url.scheme())
            .field("host", &self.url.host_str())
            .field("headers", &self.headers.len())
            .finish()
    }
}

/// What the first request learned about the resource.
pub struct Probe {
    /// Total length, when the server said.
    pub length: Option<u64>,
    /// Whether ranged reads work (the probe's own Range was honoured) and
    /// may be combined: a strong validator pins them to one version, or
    /// the probe's answer holds the whole resource.
    pub ranges: bool,
    pub validator: Option<Validator>,
    /// Its representation headers and validators, for the object.
    pub origin: OriginHeaders,
    /// What the origin says the resource hashes to, checked like `expected`.
    pub digests: SourceDigests,
    /// The body's end is marked only by its connection closing.
    pub unframed: bool,
    /// The probe's body, starting at byte 0: the first bytes when `ranges`,
    /// otherwise the whole resource. `None` for an empty resource.
    pub(crate) body: Option<OpenBody>,
}

/// A response whose body is still to be read, and the host slot its request
/// holds until then.
pub(crate) struct OpenBody {
    pub(crate) response: Response,
    pub(crate) slot: HostSlot,
}

/// Trips when a response delivers less than a minimum rate over a window of
/// time spent waiting for it: time its body sat unread (a bandwidth cap, S3
/// making us wait) is not the source's.
pub(crate) struct RateFloor {
    min_bytes_per_sec: u64,
    window: Duration,
    /// Time spent waiting for the source since the window began.
    waited: Duration,
    bytes: u64,
}

impl RateFloor {
    fn record(&mut self, bytes: u64, waited: Duration) -> Result<(), TransferError> {
        self.bytes += bytes;
        self.waited += waited;
        if self.waited < self.window {
            return Ok(());
        }
        if (self.bytes as f64) < self.min_bytes_per_sec as f64 * self.waited.as_secs_f64() {
            return Err(TransferError::SourceTooSlow {
                min_bytes_per_sec: self.min_bytes_per_sec,
                window_secs: self.window.as_secs(),
            });
        }
        self.waited = Duration::ZERO;
        self.bytes = 0;
        Ok(())
    }
}

#[derive(Clone)]
pub struct HttpSource {
    client: Client,
    max_redirects: usize,
    read_timeout: Duration,
    connect_timeout: Duration,
    min_rate_bytes_per_sec: u64,
    min_rate_window: Duration,
    policy: Arc<AddressPolicy>,
    /// The cap all transfers of the engine share, if any.
    bandwidth: Option<Arc<RateCap>>,
    /// The per-host connection cap, if any.
    hosts: Option<Arc<HostSlots>>,
}

impl HttpSource {
    pub fn new(config: &SourceConfig) -> Result<Self, TransferError> {
        let policy = Arc::new(config.address_policy.clone());
        let mut builder = Client::builder()
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.connect_timeout)
            // Redirects are followed by `sent`, which decides per hop which
            // headers go along.
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver::new(Arc::clone(&policy))))
            // One connection per ranged part: CDNs throttle per connection, and
            // HTTP/2 would multiplex every part onto one.
            .http1_only()
            .tcp_nodelay(true)
            // Proxies only when the operator configures one explicitly.
            .no_proxy();
        if let Some(pem) = &config.extra_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|err| {
                TransferError::InvalidConfig {
                    reason: format!("extra CA bundle: {err}"),
                }
            })?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder
            .build()
            .map_err(|err| TransferError::InvalidConfig {
                reason: format!("http client: {err}"),
            })?;
        Ok(Self {
            client,
            max_redirects: config.max_redirects,
            read_timeout: config.read_timeout,
            connect_timeout: config.connect_timeout,
            min_rate_bytes_per_sec: config.min_rate_bytes_per_sec,
            min_rate_window: config.min_rate_window,
            policy,
            bandwidth: config
                .max_bytes_per_sec
                .and_then(NonZeroU64::new)
                .map(|rate| Arc::new(RateCap::new(rate))),
            hosts: config
                .max_connections_per_host
                .filter(|n| *n > 0)
                .map(|n| Arc::new(HostSlots::new(n))),
        })
    }

    /// The bandwidth cap all transfers of this source share, if any.
    pub(crate) fn shared_bandwidth(&self) -> Option<Arc<RateCap>> {
        self.bandwidth.clone()
    }

    /// Waits for a free slot for `url`'s host (at once when uncapped). Not
    /// cancellable by itself: callers select on their token.
    pub(crate) async fn host_slot(&self, url: &Url) -> HostSlot {
        match &self.hosts {
            Some(hosts) => hosts.take(url).await,
            None => HostSlot::default(),
        }
    }

    /// Refuses what the address policy refuses before any connection is made.
    pub fn check(&self, request: &SourceRequest) -> Result<(), TransferError> {
        match request.url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(TransferError::InvalidSource {
                    reason: format!("scheme {other:?} is not http or https"),
                });
            }
        }
        self.policy
            .check_url(&request.url)
            .map_err(|blocked| TransferError::BlockedDestination {
                reason: blocked.to_string(),
            })
    }

    /// Asks for the first `first_len` bytes and learns length, range support and
    /// validator from the answer. The answer's body is kept for reading.
    pub async fn probe(
        &self,
        request: &SourceRequest,
        first_len: u64,
    ) -> Result<Probe, TransferError> {
        self.probe_range(request, 0, first_len.max(1) - 1).await
    }

    /// Like [`probe`](Self::probe), for bytes `start..=end`; a resuming run
    /// asks for its first missing part. When ranges work, the body starts at
    /// `start`; a 200 (no ranges) carries the whole resource from byte 0.
    pub async fn probe_range(
        &self,
        request: &SourceRequest,
        start: u64,
        end: u64,
    ) -> Result<Probe, TransferError> {
        self.check(request)?;
        let slot = self.host_slot(&request.url).await;
        let response = self
            .sent(request, &[(header::RANGE, format!("bytes={start}-{end}"))])
            .await?;
        let headers = response.headers();
        let validator = Validator::from_headers(headers);
        let origin = OriginHeaders::from_headers(headers);
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {
                let range = ContentRange::from_response(&response)?;
                let Some(total) = range.total else {
                    // Ranges without a total are no use for planning; read it
                    // from the start as one stream instead (on the same slot).
                    drop(response);
                    return self.probe_without_range(request, slot).await;
                };
                range.expect(start, end.min(total.max(1) - 1), Some(total))?;
                if validator.is_none() && start == 0 && end.saturating_add(1) < total {
                    // Nothing pins this version for the requests after this
                    // one: read it all in one answer instead.
                    drop(response);
                    return self.probe_without_range(request, slot).await;
                }
                Ok(Probe {
                    length: Some(total),
                    ranges: true,
                    validator,
                    digests: SourceDigests::from_headers(response.headers(), false),
                    origin,
                    unframed: false,
                    body: Some(OpenBody { response, slot }),
                })
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let range = ContentRange::from_response(&response)?;
                // From byte 0, the only unsatisfiable resource is an empty one.
                if start == 0 && range.total != Some(0) {
                    return Err(TransferError::SourceRange {
                        detail: "416 for the first byte of a non-empty resource".into(),
                    });
                }
                Ok(Probe {
                    length: range.total,
                    ranges: true,
                    validator,
                    digests: SourceDigests::default(),
                    origin,
                    unframed: false,
                    body: None,
                })
            }
            StatusCode::OK => Ok(Probe {
                length: response.content_length(),
                ranges: false,
                validator,
                digests: SourceDigests::from_headers(response.headers(), true),
                origin,
                unframed: is_unframed(&response),
                body: Some(OpenBody { response, slot }),
            }),
            status => Err(TransferError::SourceStatus {
                status: status.as_u16(),
            }),
        }
    }

    async fn probe_without_range(
        &self,
        request: &SourceRequest,
        slot: HostSlot,
    ) -> Result<Probe, TransferError> {
        let response = self.sent(request, &[]).await?;
        if response.status() != StatusCode::OK {
            return Err(TransferError::SourceStatus {
                status: response.status().as_u16(),
            });
        }
        let headers = response.headers();
        Ok(Probe {
            length: response.content_length(),
            ranges: false,
            validator: Validator::from_headers(headers),
            origin: OriginHeaders::from_headers(headers),
            digests: SourceDigests::from_headers(headers, true),
            unframed: is_unframed(&response),
            body: Some(OpenBody { response, slot }),
        })
    }

    /// Requests bytes `start..=end` (or `start..` when `end` is `None`) pinned to
    /// `validator`; the answer must be a 206 for exactly that range of the
    /// same version: the validator shown again, the total unchanged. The
    /// caller holds the host slot (see [`host_slot`](Self::host_slot)).
    pub async fn get_range(
        &self,
        request: &SourceRequest,
        start: u64,
        end: Option<u64>,
        total: Option<u64>,
        validator: Option<&Validator>,
    ) -> Result<Response, TransferError> {
        let range = match end {
            Some(end) => format!("bytes={start}-{end}"),
            None => format!("bytes={start}-"),
        };
        let mut extra = vec![(header::RANGE, range)];
        if let Some(validator) = validator {
            extra.push((header::IF_RANGE, validator.as_header_value().to_owned()));
        }
        let response = self.sent(request, &extra).await?;
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {}
            // If-Range answered with the whole (new) representation; or a
            // range inside the length the transfer planned with is no longer
            // satisfiable: the resource is shorter now.
            StatusCode::OK
            | StatusCode::PRECONDITION_FAILED
            | StatusCode::RANGE_NOT_SATISFIABLE => {
                return Err(TransferError::SourceChanged);
            }
            status => {
                return Err(TransferError::SourceStatus {
                    status: status.as_u16(),
                });
            }
        }
        if validator.is_some_and(|v| !v.shown_by(response.headers())) {
            return Err(TransferError::SourceChanged);
        }
        let range = ContentRange::from_response(&response)?;
        if total.is_some() && range.total.is_some() && range.total != total {
            return Err(TransferError::SourceChanged);
        }
        let expected_end = end.or(total.map(|t| t - 1));
        range.expect_start(start, expected_end, total)?;
        Ok(response)
    }

    /// Reads `response` into `buffer` until it holds `want` bytes or the body ends.
    /// Returns whether the body ended. Bytes read are counted even on error, so
    /// the caller can resume from the last good offset. Each chunk is paid
    /// for to `pacer` before the next is read.
    pub(crate) async fn read_into(
        &self,
        response: &mut Response,
        buffer: &mut PartBuffer,
        want: usize,
        crc: &mut PartCrc,
        on_bytes: &(dyn Fn(u64) + Sync),
        pacer: &Pacer,
    ) -> Result<bool, TransferError> {
        let mut floor = self.rate_floor();
        while buffer.len() < want {
            let asked = Instant::now();
            let Some(chunk) = self.next_chunk(response).await? else {
                return Ok(true);
            };
            floor.record(chunk.len() as u64, asked.elapsed())?;
            let room = want - buffer.len();
            if chunk.len() > room {
                return Err(TransferError::SourceRange {
                    detail: format!("{} bytes more than requested", chunk.len() - room),
                });
            }
            crc.update(&chunk);
            buffer.extend_from_slice(&chunk);
            on_bytes(chunk.len() as u64);
            pacer.pay(chunk.len() as u64).await?;
        }
        Ok(false)
    }

    pub(crate) fn rate_floor(&self) -> RateFloor {
        RateFloor {
            min_bytes_per_sec: self.min_rate_bytes_per_sec,
            window: self.min_rate_window,
            waited: Duration::ZERO,
            bytes: 0,
        }
    }

    pub(crate) async fn next_chunk(
        &self,
        response: &mut Response,
    ) -> Result<Option<bytes::Bytes>, TransferError> {
        // The read timeout counts only while we wait for the source: time
        // the body sat unread (while S3 made us wait) is not the source's.
        match tokio::time::timeout(self.read_timeout, response.chunk()).await {
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(err)) if err.is_timeout() => Err(self.stalled()),
            Ok(Err(err)) => Err(TransferError::source_request(err)),
            Err(_) => Err(self.stalled()),
        }
    }

    fn stalled(&self) -> TransferError {
        TransferError::SourceStalled {
            idle_secs: self.read_timeout.as_secs(),
        }
    }

    /// Sends a GET for `request` with `extra` headers (the range asked for),
    /// following redirects: every hop is checked like the first request
    /// (names again by the resolver when the hop connects), and the job's
    /// headers go along only as [`SourceRequest::headers`] says. Each hop
    /// waits at most the read timeout for its answer's head once connected.
    async fn sent(
        &self,
        request: &SourceRequest,
        extra: &[(HeaderName, String)],
    ) -> Result<Response, TransferError> {
        let mut url = request.url.clone();
        let mut headers = Some(&request.headers);
        for _ in 0..=self.max_redirects {
            let mut builder = self.client.get(url.clone());
            if let Some(headers) = headers {
                builder = builder.headers(headers.clone());
            }
            for (name, value) in extra {
                builder = builder.header(name, value);
            }
            let send = builder.header(header::ACCEPT_ENCODING, "identity").send();
            let response =
                match tokio::time::timeout(self.read_timeout + self.connect_timeout, send).await {
                    Ok(result) => result.map_err(TransferError::source_request)?,
                    Err(_) => return Err(self.stalled()),
                };
            let Some(next) = redirect_target(&response, &url)? else {
                return Ok(response);
            };
            self.policy
                .check_url(&next)
                .map_err(|blocked| TransferError::BlockedDestination {
                    reason: blocked.to_string(),
                })?;
            if !headers_may_follow(&url, &next, request.headers_cross_origin) {
                headers = None;
            }
            url = next;
        }
        Err(TransferError::SourceRedirect {
            reason: format!("more than {} redirects", self.max_redirects),
        })
    }
}
