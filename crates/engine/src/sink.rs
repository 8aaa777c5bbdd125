//! The S3 side: create / upload part / complete (sorted) / abort, and a single
//! PutObject for objects smaller than one part.
//!
//! By default every upload carries CRC64NVME: per part, and the full-object
//! value at Complete (`ChecksumType::FullObject`), so S3 checks the bytes it
//! stored. A bucket's [`UploadChecksum`] mode may ask for CRC32C/CRC32
//! (composite), Content-MD5 or nothing instead, for stores without
//! CRC64NVME; the table is in [`crate::upload_checksum`].
//! Payload signing is off: the CRC already covers the body, and hashing every
//! byte with SHA-256 for SigV4 would cost a CPU-second or more per GiB.
//!
//! Every request waits for its bucket's [`Limiter`](crate::throttle::Limiter)
//! and tells it whether S3 throttled it.
//!
//! What a new object is stored with (SSE, tags, representation headers,
//! metadata) is set by one `object_settings!` on PutObject and
//! CreateMultipartUpload alike; `if_exists: fail` makes those two writes
//! conditional; every call names the expected bucket owner.
//!
//! Over ~500 lines because each of the eight S3 calls is spelled out with
//! its checksum-mode headers beside it, and the SDK error mapping every call
//! shares lives here too; which mode sends what is decided in
//! [`crate::upload_checksum`], what an object is stored with in
//! [`crate::destination`], not here.

use std::collections::HashMap;
use std::future::Future;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart, ServerSideEncryption,
    StorageClass,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;

use crate::checksum;
pub use crate::destination::Destination;
use crate::destination::{Encryption, ExistingObject};
use crate::error::{S3Operation, TransferError, is_throttle_code};
pub use crate::stored::{ListedPart, StoredObject, UploadedPart};
use crate::throttle::Limiters;
use crate::upload_checksum::{ChecksumFault, ChecksumPolicy, UploadChecksum};

/// What a new object is stored with, set on a PutObject or a
/// CreateMultipartUpload request: the two builders share these setters but
/// no trait, and the two must never differ.
macro_rules! object_settings {
    ($request:expr, $dest:expr) => {{
        let dest: &Destination = $dest;
        let kms = match &dest.encryption {
            Some(Encryption::Kms { key_id, bucket_key }) => (key_id.clone(), *bucket_key),
            _ => (None, None),
        };
        $request
            .set_content_type(dest.content_type.clone())
            .set_cache_control(dest.cache_control.clone())
            .set_content_disposition(dest.content_disposition.clone())
            .set_content_encoding(dest.content_encoding.clone())
            .set_content_language(dest.content_language.clone())
            .set_metadata(metadata(dest))
            .set_storage_class(dest.storage_class.as_deref().map(StorageClass::from))
            .set_tagging(dest.tagging())
            .set_server_side_encryption(
                dest.encryption
                    .as_ref()
                    .map(|e| ServerSideEncryption::from(e.algorithm())),
            )
            .set_ssekms_key_id(kms.0)
            .set_bucket_key_enabled(kms.1)
    }};
}

#[derive(Clone)]
pub struct S3Sink {
    client: aws_sdk_s3::Client,
    limiters: Limiters,
    checksums: ChecksumPolicy,
    fault: Option<ChecksumFault>,
}

impl S3Sink {
    /// A sink that uploads with CRC64NVME, S3's default mode.
    pub fn new(client: aws_sdk_s3::Client) -> Self {
        Self::with_checksums(client, ChecksumPolicy::default(), None)
    }

    pub fn with_checksums(
        client: aws_sdk_s3::Client,
        checksums: ChecksumPolicy,
        fault: Option<ChecksumFault>,
    ) -> Self {
        Self {
            client,
            limiters: Limiters::default(),
            checksums,
            fault,
        }
    }

    /// The checksum mode of `bucket`'s uploads.
    pub fn mode(&self, bucket: &str) -> UploadChecksum {
        self.checksums.for_bucket(bucket)
    }

    /// `crc` as sent: off by one bit under the test hook.
    fn part_crc(&self, crc: u64) -> u64 {
        match self.fault {
            Some(ChecksumFault::Part) => crc ^ 1,
            _ => crc,
        }
    }

    /// A mode's base64 value as sent: off by one bit under the test hook.
    fn part_value(&self, value: Option<&str>) -> Option<String> {
        let value = value?;
        if self.fault != Some(ChecksumFault::Part) {
            return Some(value.to_owned());
        }
        let mut raw = BASE64.decode(value).ok()?;
        if let Some(last) = raw.last_mut() {
            *last ^= 1;
        }
        Some(BASE64.encode(raw))
    }

    /// The per-bucket rate limiters every request of this sink goes through.
    pub fn limiters(&self) -> &Limiters {
        &self.limiters
    }

    /// Sends `request` when `bucket`'s limiter allows, and tells the limiter
    /// whether S3 throttled it.
    async fn limited<T, E, R>(
        &self,
        bucket: &str,
        request: impl Future<Output = Result<T, SdkError<E, R>>>,
    ) -> Result<T, SdkError<E, R>>
    where
        E: ProvideErrorMetadata,
        R: HasStatus,
    {
        let limiter = self.limiters.for_bucket(bucket);
        limiter.acquire().await;
        let result = request.await;
        match &result {
            Err(err) if throttled(err) => limiter.throttled(),
            _ => limiter.succeeded(),
        }
        result
    }

    /// The checksum headers a body (a part, or a single PUT) is sent with
    /// in `bucket`'s mode: `crc` is ferry's CRC64NVME, `sent` the mode's
    /// own value ([`UploadChecksum::of_body`]).
    fn body_headers(&self, bucket: &str, crc: u64, sent: Option<&str>) -> BodyHeaders {
        let mode = self.mode(bucket);
        let sent = self.part_value(sent);
        let only = |wanted: UploadChecksum| sent.clone().filter(|_| mode == wanted);
        BodyHeaders {
            algorithm: mode.create_settings().0,
            crc64nvme: (mode == UploadChecksum::Crc64Nvme)
                .then(|| checksum::to_base64(self.part_crc(crc))),
            crc32c: only(UploadChecksum::Crc32c),
            crc32: only(UploadChecksum::Crc32),
            md5: only(UploadChecksum::Md5),
        }
    }

    pub async fn create(&self, dest: &Destination) -> Result<String, TransferError> {
        let op = S3Operation::CreateMultipartUpload;
        let (algorithm, checksum_type) = self.mode(&dest.bucket).create_settings();
        let request = self
            .client
            .create_multipart_upload()
            .bucket(&dest.bucket)
            .set_expected_bucket_owner(dest.expected_bucket_owner.clone())
            .key(&dest.key)
            .set_checksum_algorithm(algorithm)
            .set_checksum_type(checksum_type);
        let request = object_settings!(request, dest).send();
        let output = self
            .limited(&dest.bucket, request)
            .await
            .map_err(|err| s3_error(op, err))?;
        output.upload_id.ok_or_else(|| missing(op, "upload id"))
    }

    pub async fn upload_part(
        &self,
        dest: &Destination,
        upload_id: &str,
        number: u32,
        body: Bytes,
        crc: u64,
        sent: Option<&str>,
    ) -> Result<String, TransferError> {
        let op = S3Operation::UploadPart;
        let headers = self.body_headers(&dest.bucket, crc, sent);
        let request = self
            .client
            .upload_part()
            .bucket(&dest.bucket)
            .set_expected_bucket_owner(dest.expected_bucket_owner.clone())
            .key(&dest.key)
            .upload_id(upload_id)
            .part_number(part_number(number))
            .content_length(body.len() as i64)
            .set_checksum_crc64_nvme(headers.crc64nvme)
            .set_checksum_crc32_c(headers.crc32c)
            .set_checksum_crc32(headers.crc32)
            .set_content_md5(headers.md5)
            .body(ByteStream::from(body))
            .customize()
            .disable_payload_signing()
            .send();
        let output = self
            .limited(&dest.bucket, request)
            .await
            .map_err(|err| s3_error(op, err))?;
        output.e_tag.ok_or_else(|| missing(op, "ETag"))
    }

    /// Completes with `parts` sorted by number (S3 rejects any other order).
    pub async fn complete(
        &self,
        dest: &Destination,
        upload_id: &str,
        parts: &[UploadedPart],
        full_crc: u64,
        size: u64,
    ) -> Result<StoredObject, TransferError> {
        let op = S3Operation::CompleteMultipartUpload;
        let mode = self.mode(&dest.bucket);
        let mut sorted: Vec<&UploadedPart> = parts.iter().collect();
        sorted.sort_by_key(|p| p.number);
        let completed = sorted
            .into_iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(part_number(p.number))
                    .e_tag(&p.etag)
                    .set_checksum_crc64_nvme(
                        (mode == UploadChecksum::Crc64Nvme).then(|| checksum::to_base64(p.crc)),
                    )
                    .set_checksum_crc32_c(p.sent.clone().filter(|_| mode == UploadChecksum::Crc32c))
                    .set_checksum_crc32(p.sent.clone().filter(|_| mode == UploadChecksum::Crc32))
                    .build()
            })
            .collect();
        let request = self
            .client
            .complete_multipart_upload()
            .bucket(&dest.bucket)
            .set_expected_bucket_owner(dest.expected_bucket_owner.clone())
            .key(&dest.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .set_checksum_crc64_nvme(
                (mode == UploadChecksum::Crc64Nvme)
                    .then(|| checksum::to_base64(self.whole_crc(full_crc))),
            )
            .set_checksum_type(
                (mode == UploadChecksum::Crc64Nvme).then_some(ChecksumType::FullObject),
            )
            // A 2024 header: sent with the mode that needs a 2024 S3 anyway,
            // not to the older stores the other modes are for.
            .set_mpu_object_size((mode == UploadChecksum::Crc64Nvme).then_some(size as i64))
            .set_if_none_match(dest.if_exists.condition())
            .send();
        let output = self
            .limited(&dest.bucket, request)
            .await
            .map_err(|err| s3_error(op, err))?;
        Ok(StoredObject {
            // A 200 without an ETag is a Complete that answered with an
            // error body: whether it applied is for the retry to find out.
            etag: output.e_tag.ok_or_else(|| TransferError::S3 {
                operation: op,
                code: None,
                message: "answered 200 without an ETag (an error body?)".into(),
                transient: true,
                throttled: false,
            })?,
            crc64nvme: output.checksum_crc64_nvme,
            crc32c: output.checksum_crc32_c,
            crc32: output.checksum_crc32,
            size: Some(size),
        })
    }

    /// The full-object CRC as sent: off by one bit under the test hook.
    fn whole_crc(&self, crc: u64) -> u64 {
        match self.fault {
            Some(ChecksumFault::WholeObject) => crc ^ 1,
            _ => crc,
        }
    }

    pub async fn abort(&self, dest: &Destination, upload_id: &str) -> Result<(), TransferError> {
        let request = self
            .client
            .abort_multipart_upload()
            .bucket(&dest.bucket)
            .set_expected_bucket_owner(dest.expected_bucket_owner.clone())
            .key(&dest.key)
            .upload_id(upload_id)
            .send();
        let result = self.limited(&dest.bucket, request).await;
        match result {
            Ok(_) => Ok(()),
            // Already gone is what we wanted.
            Err(err) if err.code() == Some("NoSuchUpload") => Ok(()),
            Err(err) => Err(s3_error(S3Operation::AbortMultipartUpload, err)),
        }
    }

    /// Every part of an open upload, all pages; `None` when the upload is gone.
    pub async fn list_parts(
        &self,
        dest: &Destination,
        upload_id: &str,
    ) -> Result<Option<Vec<ListedPart>>, TransferError> {
        self.list_parts_in_pages(dest, upload_id, None).await
    }

    /// [`list_parts`](Self::list_parts) with at most `page_size` parts a page
    /// (S3's default is 1,000; an upload may have 10,000).
    pub async fn list_parts_in_pages(
        &self,
        dest: &Destination,
        upload_id: &str,
        page_size: Option<i32>,
    ) -> Result<Option<Vec<ListedPart>>, TransferError> {
        let op = S3Operation::ListParts;
        let mode = self.mode(&dest.bucket);
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let request = self
                .client
                .list_parts()
                .bucket(&dest.bucket)
                .set_expected_bucket_owner(dest.expected_bucket_owner.clone())
                .set_expected_bucket_owner(dest.expected_bucket_owner.clone())
                .key(&dest.key)
                .upload_id(upload_id)
                .set_max_parts(page_size)
                .set_part_number_marker(marker.take())
                .send();
            let result = self.limited(&dest.bucket, request).await;
            let page = match result {
                Ok(page) => page,
                Err(err) if err.code() == Some("NoSuchUpload") => return Ok(None),
                Err(err) => return Err(s3_error(op, err)),
            };
            for part in page.parts() {
                let (Some(number), Some(etag), Some(len)) =
                    (part.part_number(), part.e_tag(), part.size())
                else {
                    return Err(missing(op, "part number, ETag or size"));
                };
                parts.push(ListedPart {
                    number: u32::try_from(number).map_err(|_| missing(op, "valid part number"))?,
                    etag: etag.to_owned(),
                    len: u64::try_from(len).map_err(|_| missing(op, "valid part size"))?,
                    crc: part.checksum_crc64_nvme().and_then(checksum::from_base64),
                    sent: match mode {
                        UploadChecksum::Crc32c => part.checksum_crc32_c().map(str::to_owned),
                        UploadChecksum::Crc32 => part.checksum_crc32().map(str::to_owned),
                        _ => None,
                    },
                });
            }
            match page.next_part_number_marker() {
                Some(next) if page.is_truncated() == Some(true) => marker = Some(next.to_owned()),
                _ => return Ok(Some(parts)),
            }
        }
    }

    pub async fn put(
        &self,
        dest: &Destination,
        body: Bytes,
        crc: u64,
        sent: Option<&str>,
    ) -> Result<StoredObject, TransferError> {
        let op = S3Operation::PutObject;
        let size = body.len() as u64;
        let headers = self.body_headers(&dest.bucket, crc, sent);
        let request = self
            .client
            .put_object()
            .bucket(&dest.bucket)
            .set_expected_bucket_owner(dest.expected_bucket_owner.clone())
            .key(&dest.key)
            .content_length(size as i64)
            .set_checksum_algorithm(headers.algorithm)
            .set_checksum_crc64_nvme(headers.crc64nvme)
            .set_checksum_crc32_c(headers.crc32c)
            .set_checksum_crc32(headers.crc32)
            .set_content_md5(headers.md5)
            .set_if_none_match(dest.if_exists.condition());
        let request = object_settings!(request, dest)
            .body(ByteStream::from(body))
            .customize()
            .disable_payload_signing()
            .send();
        let output = self
            .limited(&dest.bucket, request)
            .await
            .map_err(|err| s3_error(op, err))?;
        Ok(StoredObject {
            etag: output.e_tag.ok_or_else(|| missing(op, "ETag"))?,
            crc64nvme: output.checksum_crc64_nvme,
            crc32c: output.checksum_crc32_c,
            crc32: output.checksum_crc32,
            size: Some(size),
        })
    }

    /// The object now at the destination, if any, with its checksum.
    pub async fn head(&self, dest: &Destination) -> Result<Option<StoredObject>, TransferError> {
        Ok(self.head_output(dest).await?.map(|output| StoredObject {
            etag: output.e_tag.unwrap_or_default(),
            crc64nvme: output.checksum_crc64_nvme,
            crc32c: output.checksum_crc32_c,
            crc32: output.checksum_crc32,
            size: output.content_length.and_then(|l| u64::try_from(l).ok()),
        }))
    }

    /// The object now at the destination, if any, with its metadata.
    pub async fn existing(
        &self,
        dest: &Destination,
    ) -> Result<Option<ExistingObject>, TransferError> {
        Ok(self.head_output(dest).await?.map(|output| ExistingObject {
            size: output.content_length.and_then(|l| u64::try_from(l).ok()),
            etag: output.e_tag.unwrap_or_default(),
            crc64nvme: output.checksum_crc64_nvme,
            metadata: output.metadata.unwrap_or_default(),
        }))
    }

    /// HEAD of the destination key. A 403 counts as missing: without
    /// `s3:ListBucket` (the stack's policy) S3 answers a missing object so.
    async fn head_output(
        &self,
        dest: &Destination,
    ) -> Result<Option<HeadObjectOutput>, TransferError> {
        let request = self
            .client
            .head_object()
            .bucket(&dest.bucket)
            .set_expected_bucket_owner(dest.expected_bucket_owner.clone())
            .key(&dest.key)
            .checksum_mode(ChecksumMode::Enabled)
            .send();
        match self.limited(&dest.bucket, request).await {
            Ok(output) => Ok(Some(output)),
            Err(SdkError::ServiceError(ctx))
                if matches!(ctx.raw().status().as_u16(), 403 | 404) =>
            {
                Ok(None)
            }
            Err(err) => Err(s3_error(S3Operation::HeadObject, err)),
        }
    }

    /// Deletes an object this transfer stored but must not leave behind.
    pub async fn delete(&self, dest: &Destination) -> Result<(), TransferError> {
        let request = self
            .client
            .delete_object()
            .bucket(&dest.bucket)
            .set_expected_bucket_owner(dest.expected_bucket_owner.clone())
            .key(&dest.key)
            .send();
        self.limited(&dest.bucket, request)
            .await
            .map(|_| ())
            .map_err(|err| s3_error(S3Operation::PutObject, err))
    }
}

/// What [`S3Sink::body_headers`] sends; at most one value is set.
struct BodyHeaders {
    algorithm: Option<aws_sdk_s3::types::ChecksumAlgorithm>,
    crc64nvme: Option<String>,
    crc32c: Option<String>,
    crc32: Option<String>,
    md5: Option<String>,
}

fn part_number(number: u32) -> i32 {
    // Part numbers are at most 10,000 by construction of every plan.
    i32::try_from(number).unwrap_or(i32::MAX)
}

fn metadata(dest: &Destination) -> Option<HashMap<String, String>> {
    (!dest.metadata.is_empty()).then(|| dest.metadata.clone())
}

fn missing(operation: S3Operation, what: &str) -> TransferError {
    TransferError::S3 {
        operation,
        code: None,
        message: format!("response carried no {what}"),
        transient: false,
        throttled: false,
    }
}

/// Maps an SDK error to ours, deciding whether it is worth a retry.
pub(crate) fn s3_error<E, R>(operation: S3Operation, err: SdkError<E, R>) -> TransferError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HasStatus + 'static,
{
    let code = err.code().map(str::to_owned);
    // A conditional write (`If-None-Match: *`, if_exists fail) found an
    // object there. Whether it is this transfer's own, stored by a try whose
    // reply was lost, is the caller's question.
    if matches!(
        operation,
        S3Operation::PutObject | S3Operation::CompleteMultipartUpload
    ) && code.as_deref() == Some("PreconditionFailed")
    {
        return TransferError::DestinationExists;
    }
    let throttled = throttled(&err);
    let (transient, message) = match &err {
        SdkError::TimeoutError(_) => (true, "timed out".to_owned()),
        SdkError::DispatchFailure(failure) => (
            !failure.is_user(),
            format!("request not sent: {}", root_cause(&err)),
        ),
        SdkError::ResponseError(_) => (true, format!("unreadable response: {}", root_cause(&err))),
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status_code();
            let transient = status >= 500
                || status == 429
                || matches!(
                    code.as_deref(),
                    Some(
                        "SlowDown"
                            | "RequestTimeout"
                            | "InternalError"
                            | "ServiceUnavailable"
                            // Two conditional writes of one key at once (409):
                            // S3 asks the loser to try again.
                            | "ConditionalRequestConflict"
                    )
                );
            let message = match (err.code(), err.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_owned(),
                _ => format!("HTTP {status}"),
            };
            let message = match ctx.raw().request_id() {
                Some(id) => format!("{message} (request id {id})"),
                None => message,
            };
            (transient, message)
        }
        _ => (false, root_cause(&err)),
    };
    tracing::debug!(%operation, error = ?err, "S3 error in full");
    TransferError::S3 {
        operation,
        code,
        message,
        transient: transient || throttled,
        throttled,
    }
}

/// Whether S3 asked us to slow down: a throttling code, 503 or 429.
fn throttled<E: ProvideErrorMetadata, R: HasStatus>(err: &SdkError<E, R>) -> bool {
    match err {
        SdkError::ServiceError(ctx) => {
            err.code().is_some_and(is_throttle_code) || matches!(ctx.raw().status_code(), 503 | 429)
        }
        _ => false,
    }
}

/// The HTTP status of a raw response, whatever the SDK's response type.
pub(crate) trait HasStatus {
    fn status_code(&self) -> u16;
    /// S3's id of the request, for support cases.
    fn request_id(&self) -> Option<&str>;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }

    fn request_id(&self) -> Option<&str> {
        self.headers().get("x-amz-request-id")
    }
}

/// The innermost error's message: what actually went wrong ("Connection
/// refused", "A region must be set…"), without the SDK's wrappers and
/// never its Debug dump.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = err;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}
