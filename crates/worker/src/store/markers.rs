//! The marker items that name the job an upload belongs to, for `ferry gc`:
//! their keys, `upload#UPLOAD_ID` and `dest#BUCKET/KEY`, and the `dest#`
//! write before every CreateMultipartUpload. The `upload#` item is written
//! by `JobStore::save_checkpoint` (`checkpoint.rs`) in the same step as the
//! checkpoint it belongs to. Bulk submit's `unsent#` markers are its own
//! (`bulk/chunk.rs`).

use std::collections::HashMap;

use super::codec::{n, now_secs, s};
use super::{JobStore, RETENTION, StoreError, dynamo};

/// Key of the item that names the job an upload belongs to, for `ferry gc`.
pub fn upload_key(upload_id: &str) -> String {
    format!("upload#{upload_id}")
}

/// Key of the item that names the job that last started an upload to
/// `bucket`/`key`: written before every CreateMultipartUpload, so `ferry gc`
/// can place an upload that has no `upload#` item (its Create reply was
/// lost, or it was never checkpointed).
pub fn destination_key(bucket: &str, key: &str) -> String {
    format!("dest#{bucket}/{key}")
}

impl JobStore {
    /// Names `job_id` as the job about to start an upload to `bucket`/`key`
    /// (see [`destination_key`]). Idempotent: a retry writes the same item.
    pub async fn mark_destination(
        &self,
        job_id: &str,
        bucket: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(HashMap::from([
                ("job_id".into(), s(&destination_key(bucket, key))),
                ("upload_job_id".into(), s(job_id)),
                ("expires_at".into(), n(now_secs() + RETENTION.as_secs())),
            ])))
            .send()
            .await
            .map_err(|err| dynamo("PutItem", err))?;
        Ok(())
    }
}
