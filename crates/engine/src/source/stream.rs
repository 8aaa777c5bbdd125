//! One sequential body, cut into parts by the caller, resumed after a mid-body
//! error with a Range request from the last good offset when the server allows
//! it and a strong validator pins the version (see the `source` module docs):
//! without one, the rest of a new version could follow the start of an old one.
//! The stream holds its host slot from the probe to its end, resumes included.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use reqwest::Response;
use reqwest::header::ACCEPT_RANGES;
use tokio_util::sync::CancellationToken;

use super::{HostSlot, HttpSource, Integrity, Probe, SourceRequest, Validator};
use crate::bandwidth::Pacer;
use crate::checksum::PartCrc;
use crate::error::{ErrorClass, TransferError};
use crate::pool::PartBuffer;
use crate::retry::RetryPolicy;

pub struct BodyStream {
    source: HttpSource,
    request: SourceRequest,
    response: Option<Response>,
    /// This stream's place among the requests to its host, until it ends.
    _slot: Option<HostSlot>,
    /// Bytes handed out so far (the carry not included).
    offset: u64,
    length: Option<u64>,
    validator: Option<Validator>,
    resumable: bool,
    /// The body's end is marked only by its connection closing.
    unframed: bool,
    /// Whether a second answer continued the first.
    reopened: bool,
    /// Bytes read past a part boundary, for the next part.
    carry: Option<Bytes>,
    ended: bool,
    retry: RetryPolicy,
    cancel: CancellationToken,
    floor: super::RateFloor,
    pacer: Arc<Pacer>,
}

impl BodyStream {
    pub(crate) fn new(
        source: HttpSource,
        request: SourceRequest,
        probe: Probe,
        retry: RetryPolicy,
        cancel: CancellationToken,
        pacer: Arc<Pacer>,
    ) -> Self {
        let resumable = probe.validator.is_some()
            && probe.body.as_ref().is_some_and(|body| {
                body.response
                    .headers()
                    .get(ACCEPT_RANGES)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"bytes"))
            });
        let (response, slot) = probe.body.map(|body| (body.response, body.slot)).unzip();
        Self {
            request,
            ended: response.is_none(),
            response,
            _slot: slot,
            offset: 0,
            length: probe.length,
            validator: probe.validator,
            resumable,
            unframed: probe.unframed,
            reopened: false,
            carry: None,
            retry,
            floor: source.rate_floor(),
            cancel,
            source,
            pacer,
        }
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// How the bytes read so far are known to be one version, whole.
    pub fn integrity(&self) -> Integrity {
        match (self.unframed, self.reopened) {
            (true, _) => Integrity::Unframed,
            (false, true) => Integrity::Pinned,
            (false, false) => Integrity::OneAnswer,
        }
    }

    /// Fills `buffer` up to `want` bytes, or fewer when the body ends.
    pub async fn fill(
        &mut self,
        buffer: &mut PartBuffer,
        want: usize,
        crc: &mut PartCrc,
        on_bytes: &(dyn Fn(u64) + Sync),
        on_retry: &mut (dyn FnMut(&TransferError, u32) + Send),
    ) -> Result<(), TransferError> {
        let mut attempt = 0;
        while buffer.len() < want {
            let chunk = match self.next_chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(err) => {
                    attempt += 1;
                    if !self.resumable
                        || err.class() != ErrorClass::Transient
                        || attempt >= self.retry.max_attempts
                    {
                        return Err(err);
                    }
                    on_retry(&err, attempt);
                    tokio::select! {
                        () = self.cancel.cancelled() => return Err(TransferError::Cancelled),
                        () = tokio::time::sleep(self.retry.delay(attempt)) => {}
                    }
                    match self.reopen().await {
                        Ok(()) => {}
                        // Counted as a failed attempt by the next read.
                        Err(err)
                            if err.class() == ErrorClass::Transient
                                && !matches!(err, TransferError::SourceChanged) => {}
                        Err(err) => return Err(err),
                    }
                    continue;
                }
            };
            let mut chunk = chunk;
            let room = want - buffer.len();
            if chunk.len() > room {
                self.carry = Some(chunk.split_off(room));
            }
            crc.update(&chunk);
            buffer.extend_from_slice(&chunk);
            self.offset += chunk.len() as u64;
            on_bytes(chunk.len() as u64);
        }
        Ok(())
    }

    /// Whether the body has ended; reads ahead one chunk to find out.
    pub async fn at_end(&mut self) -> Result<bool, TransferError> {
        if self.carry.is_some() {
            return Ok(false);
        }
        if self.length == Some(self.offset) {
            return Ok(true);
        }
        // An error here is left for the next `fill`, which knows how to resume.
        match self.next_chunk().await {
            Ok(Some(chunk)) => {
                self.carry = Some(chunk);
                Ok(false)
            }
            Ok(None) => Ok(true),
            Err(_) if self.resumable => {
                self.response = None;
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    async fn next_chunk(&mut self) -> Result<Option<Bytes>, TransferError> {
        if let Some(carry) = self.carry.take() {
            return Ok(Some(carry));
        }
        if self.ended {
            return Ok(None);
        }
        let Some(response) = self.response.as_mut() else {
            return Err(TransferError::SourceRange {
                detail: "body interrupted".into(),
            });
        };
        let asked = Instant::now();
        let next = self.source.next_chunk(response).await;
        if let Ok(Some(chunk)) = &next
            && let Err(err) = self.floor.record(chunk.len() as u64, asked.elapsed())
        {
            self.response = None;
            return Err(err);
        }
        if let Ok(Some(chunk)) = &next {
            // Paid for as soon as it is read, so the read ahead by `at_end`
            // is paced too.
            self.pacer.pay(chunk.len() as u64).await?;
        }
        match next {
            Ok(None) => {
                self.ended = true;
                self.response = None;
                self._slot = None;
                if let Some(length) = self.length
                    && length != self.offset
                {
                    return Err(TransferError::SourceLength {
                        expected: length,
                        received: self.offset,
                    });
                }
                Ok(None)
            }
            Ok(Some(chunk)) => {
                if self
                    .length
                    .is_some_and(|l| self.offset + chunk.len() as u64 > l)
                {
                    return Err(TransferError::SourceLength {
                        expected: self.length.unwrap_or_default(),
                        received: self.offset + chunk.len() as u64,
                    });
                }
                Ok(Some(chunk))
            }
            Err(err) => {
                self.response = None;
                Err(err)
            }
        }
    }

    async fn reopen(&mut self) -> Result<(), TransferError> {
        let response = self
            .source
            .get_range(
                &self.request,
                self.offset,
                None,
                self.length,
                self.validator.as_ref(),
            )
            .await?;
        self.response = Some(response);
        self.reopened = true;
        self.floor = self.source.rate_floor();
        Ok(())
    }
}
