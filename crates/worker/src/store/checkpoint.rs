//! What a resume needs, kept by a leased attempt: the checkpoint (upload
//! id, part size, source length and validator) and the digest state on the
//! job's own item, with the `upload#` marker written alongside
//! (`markers.rs` owns its key); the `restarts`/`resumes` counts; one
//! `JOB#part#N` item per acknowledged part with its CRC (the job's item
//! could not hold 10,000). `checkpoint_of` reads a checkpoint back for the
//! claim.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use ferry_engine::Checkpoint;
use ferry_engine::sink::UploadedPart;
use ferry_engine::source::Validator;

use super::codec::{n, now_secs, now_text, number, s, text};
use super::markers::upload_key;
use super::{JobStore, Lease, RETENTION, Record, StoreError, dynamo};

/// The digest state's write: that one attribute, nothing the index holds.
pub const DIGEST_STATE_UPDATE: &str = "SET #digest_state = :digest_state";

/// The attributes a checkpoint is stored in; removed when it is used up.
pub(super) const CHECKPOINT_ATTRIBUTES: &str = "#upload_id, #upload_part_size, #source_length, #source_etag, #source_last_modified, \
     #checkpointed_at, #digest_state, #object_crc";

/// Key of the item that keeps one part's CRC (outside the job's own item,
/// which could not hold 10,000 of them). `#` never occurs in a job id.
fn part_key(job_id: &str, number: u32) -> String {
    format!("{job_id}#part#{number}")
}

pub(super) fn checkpoint_of(item: &Record) -> Option<Checkpoint> {
    let validator = match (
        text(item, "source_etag"),
        text(item, "source_last_modified"),
    ) {
        (Some(etag), _) => Validator::ETag(etag.to_owned()),
        (None, Some(date)) => Validator::LastModified(date.to_owned()),
        (None, None) => return None,
    };
    Some(Checkpoint {
        upload_id: text(item, "upload_id")?.to_owned(),
        part_size: number(item, "upload_part_size")?,
        length: number(item, "source_length")?,
        validator,
        digest_state: text(item, "digest_state").map(str::to_owned),
        object_crc: text(item, "object_crc").and_then(ferry_engine::checksum::from_base64),
    })
}

impl JobStore {
    /// Records the upload this attempt writes to (before its first part), and
    /// the item `ferry gc` uses to find the job an upload belongs to.
    pub async fn save_checkpoint(
        &self,
        lease: &Lease,
        destination: (&str, &str),
        checkpoint: &Checkpoint,
    ) -> Result<(), StoreError> {
        let now = now_text();
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(HashMap::from([
                ("job_id".into(), s(&upload_key(&checkpoint.upload_id))),
                ("upload_job_id".into(), s(&lease.job_id)),
                ("bucket".into(), s(destination.0)),
                ("key".into(), s(destination.1)),
                ("created_at".into(), s(&now)),
                ("expires_at".into(), n(now_secs() + RETENTION.as_secs())),
            ])))
            .send()
            .await
            .map_err(|err| dynamo("PutItem", err))?;
        let (etag, last_modified) = match &checkpoint.validator {
            Validator::ETag(etag) => (Some(etag), None),
            Validator::LastModified(date) => (None, Some(date)),
        };
        let mut update = self
            .leased_update(lease)
            .update_expression(
                "SET #upload_id = :upload_id, #upload_part_size = :part_size, \
                 #source_length = :length, #source_etag = :etag, \
                 #source_last_modified = :last_modified, #checkpointed_at = :now_text, \
                 #updated_at = :now_text REMOVE #digest_state, #object_crc",
            )
            .expression_attribute_values(":upload_id", s(&checkpoint.upload_id))
            .expression_attribute_values(":part_size", n(checkpoint.part_size))
            .expression_attribute_values(":length", n(checkpoint.length))
            .expression_attribute_values(":now_text", s(&now));
        update = update
            .expression_attribute_values(":etag", etag.map_or(AttributeValue::Null(true), |e| s(e)))
            .expression_attribute_values(
                ":last_modified",
                last_modified.map_or(AttributeValue::Null(true), |d| s(d)),
            );
        self.send_leased(update).await
    }

    /// Keeps the digest state of the checkpointed upload's hashed prefix
    /// (`DigestState::encode`), fenced like the checkpoint it belongs to. A
    /// plain attribute: neither an index key nor projected, like a heartbeat.
    pub async fn save_digest_state(&self, lease: &Lease, state: &str) -> Result<(), StoreError> {
        let update = self
            .leased_update(lease)
            .update_expression(DIGEST_STATE_UPDATE)
            .expression_attribute_values(":digest_state", s(state));
        self.send_leased(update).await
    }

    /// The checkpoint was unusable and the job starts over.
    pub async fn record_restart(&self, lease: &Lease, reason: &str) -> Result<(), StoreError> {
        let update = self
            .leased_update(lease)
            .update_expression(format!(
                "SET #restart_reason = :reason, #updated_at = :now_text, #restarts = :restarts \
                 REMOVE {CHECKPOINT_ATTRIBUTES}"
            ))
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":now_text", s(&now_text()))
            .expression_attribute_values(":restarts", n(lease.restarts_before + 1));
        self.send_leased(update).await
    }

    /// This attempt continues an earlier one's upload.
    pub async fn record_resume(&self, lease: &Lease, bytes_reused: u64) -> Result<(), StoreError> {
        let update = self
            .leased_update(lease)
            .update_expression(
                "SET #bytes_reused = :reused, #updated_at = :now_text, #resumes = :resumes",
            )
            .expression_attribute_values(":reused", n(bytes_reused))
            .expression_attribute_values(":now_text", s(&now_text()))
            .expression_attribute_values(":resumes", n(lease.resumes_before + 1));
        self.send_leased(update).await
    }

    /// Keeps one acknowledged part's CRC where a resuming attempt finds it.
    pub async fn save_part(
        &self,
        job_id: &str,
        upload_id: &str,
        part: &UploadedPart,
    ) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(HashMap::from([
                ("job_id".into(), s(&part_key(job_id, part.number))),
                ("upload_id".into(), s(upload_id)),
                ("crc64nvme".into(), n(part.crc)),
                ("len".into(), n(part.len)),
                ("expires_at".into(), n(now_secs() + RETENTION.as_secs())),
            ])))
            .send()
            .await
            .map_err(|err| dynamo("PutItem", err))?;
        Ok(())
    }

    /// The CRCs kept for parts `numbers` of `upload_id` (others are absent).
    pub async fn part_checksums(
        &self,
        job_id: &str,
        upload_id: &str,
        numbers: &[u32],
    ) -> Result<HashMap<u32, u64>, StoreError> {
        let mut found = HashMap::new();
        for chunk in numbers.chunks(100) {
            let keys = chunk
                .iter()
                .map(|number| HashMap::from([("job_id".to_owned(), s(&part_key(job_id, *number)))]))
                .collect();
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(|err| StoreError::Dynamo {
                        operation: "BatchGetItem",
                        message: err.to_string(),
                        permanent: Some("request_not_built"),
                    })?,
            );
            let mut rounds = 0;
            while let Some(keys) = request.take() {
                rounds += 1;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, keys)
                    .send()
                    .await
                    .map_err(|err| dynamo("BatchGetItem", err))?;
                for item in output
                    .responses
                    .unwrap_or_default()
                    .remove(&self.table)
                    .unwrap_or_default()
                {
                    let part = text(&item, "job_id")
                        .and_then(|key| key.rsplit_once("#part#"))
                        .and_then(|(_, n)| n.parse().ok());
                    if let (Some(part), Some(crc), Some(upload)) =
                        (part, number(&item, "crc64nvme"), text(&item, "upload_id"))
                        && upload == upload_id
                    {
                        found.insert(part, crc);
                    }
                }
                // Unprocessed keys come back when DynamoDB throttles; a few
                // rounds, then the rest simply count as not kept.
                request = output
                    .unprocessed_keys
                    .and_then(|mut rest| rest.remove(&self.table))
                    .filter(|_| rounds < 5);
            }
        }
        Ok(found)
    }
}
