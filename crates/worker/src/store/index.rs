//! The sharded status index `ferry jobs` reads: its name and key
//! attributes (which the stack's template and doctor check), the shard a
//! job's entry lives in, and `entering`, which adds the index attributes to
//! every write that changes a status. Its tests pin the index's cost: a
//! heartbeat or a digest state write touches nothing the index holds.

use std::time::SystemTime;

use super::codec::s;
use super::{Status, UpdateBuilder};

/// The index `ferry jobs` reads: records by status, spread over
/// [`INDEX_SHARDS`] partitions per status so that no index partition takes
/// more than a share of the fleet's writes (docs/scale.md). Only status
/// changes write to it: its key is `status_shard` + `status_at`, both set
/// only when the status changes, and it projects nothing else (KEYS_ONLY),
/// so heartbeats cost it no write at all.
pub const STATUS_INDEX: &str = "status-shard-index";
pub const STATUS_INDEX_PARTITION_KEY: &str = "status_shard";
pub const STATUS_INDEX_SORT_KEY: &str = "status_at";
pub const INDEX_SHARDS: u32 = 16;

/// Which of the [`INDEX_SHARDS`] a job's index entry lives in: FNV-1a of
/// the job id, stable across versions and platforms (the shard is stored,
/// and readers query every shard, so only its spread matters).
pub fn index_shard(job_id: &str) -> u32 {
    let hash = job_id.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash % INDEX_SHARDS
}

/// The index partition of a job in `status`: `failed#07`.
pub fn status_shard(job_id: &str, status: Status) -> String {
    format!("{}#{:02}", status.as_str(), index_shard(job_id))
}

/// `status_at`: when a record entered its status, to the millisecond, so
/// the listing's order is stable among jobs of the same second.
pub(super) fn status_time() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Adds the index attributes to a write that moves a job to `status`.
pub(super) fn entering(update: UpdateBuilder, job_id: &str, status: Status) -> UpdateBuilder {
    let expression = update.get_update_expression().clone().unwrap_or_default();
    let expression = match expression.strip_prefix("SET ") {
        Some(rest) => format!("SET #status_shard = :status_shard, #status_at = :status_at, {rest}"),
        None => format!("SET #status_shard = :status_shard, #status_at = :status_at {expression}"),
    };
    update
        .update_expression(expression)
        .expression_attribute_values(":status_shard", s(&status_shard(job_id, status)))
        .expression_attribute_values(":status_at", s(&status_time()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::checkpoint::CHECKPOINT_ATTRIBUTES;
    use crate::store::{DIGEST_STATE_UPDATE, RENEW_UPDATE};

    #[test]
    fn job_ids_spread_evenly_over_the_index_shards() {
        let id_kinds: [Box<dyn Fn(usize) -> String>; 3] = [
            Box::new(|_| uuid::Uuid::new_v4().to_string()),
            Box::new(|n| format!("job-{n:05}")),
            Box::new(|n| format!("nightly:2026-12-01:{n}")),
        ];
        for make_id in id_kinds {
            let mut counts = [0u32; INDEX_SHARDS as usize];
            for n in 0..10_000 {
                counts[index_shard(&make_id(n)) as usize] += 1;
            }
            let mean = 10_000.0 / f64::from(INDEX_SHARDS);
            let busiest = f64::from(*counts.iter().max().unwrap());
            assert!(busiest <= 1.5 * mean, "{counts:?}");
        }
        assert_eq!(
            status_shard("job-1", Status::Failed).len(),
            "failed#00".len()
        );
    }

    /// The attribute names an update expression writes (`#name` after SET,
    /// REMOVE, ADD or DELETE, before `=` or `,`).
    fn written(expression: &str) -> Vec<String> {
        expression
            .split([',', ' '])
            .filter_map(|word| word.strip_prefix('#'))
            .map(str::to_owned)
            .collect()
    }

    /// The sharded index as the stack's template defines it: key attributes
    /// and projection type, read from deploy/cloudformation/ferry.yaml.
    fn index_in_template() -> (Vec<String>, String) {
        let template = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../deploy/cloudformation/ferry.yaml"),
        )
        .unwrap();
        let block: Vec<&str> = template
            .lines()
            .skip_while(|line| !line.contains(&format!("IndexName: {STATUS_INDEX}")))
            .take_while(|line| !line.contains("TimeToLiveSpecification"))
            .collect();
        assert!(!block.is_empty(), "the template has no {STATUS_INDEX}");
        let keys = block
            .iter()
            .filter_map(|line| line.split("AttributeName:").nth(1))
            .map(|rest| rest.split(',').next().unwrap().trim().to_owned())
            .collect();
        let projection = block
            .iter()
            .find_map(|line| line.split("ProjectionType:").nth(1))
            .unwrap()
            .trim()
            .to_owned();
        (keys, projection)
    }

    #[test]
    fn a_heartbeat_writes_no_index_key_and_nothing_the_index_projects() {
        let (keys, projection) = index_in_template();
        assert_eq!(keys, [STATUS_INDEX_PARTITION_KEY, STATUS_INDEX_SORT_KEY]);
        // KEYS_ONLY: the index holds its keys and the table's key, nothing else.
        assert_eq!(projection, "KEYS_ONLY");
        let in_index = [STATUS_INDEX_PARTITION_KEY, STATUS_INDEX_SORT_KEY, "job_id"];
        let heartbeat = written(RENEW_UPDATE);
        assert!(
            heartbeat.contains(&"bytes_done".to_owned()),
            "{heartbeat:?}"
        );
        for attribute in &heartbeat {
            assert!(
                !in_index.contains(&attribute.as_str()),
                "a heartbeat writes {attribute}"
            );
        }

        // Whereas every write that changes the status moves the entry.
        let moved = entering(
            aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::Config::builder()
                    .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                    .build(),
            )
            .update_item()
            .update_expression("SET #status = :failed REMOVE #lease_owner"),
            "job-1",
            Status::Failed,
        );
        let written = written(&moved.get_update_expression().clone().unwrap());
        for key in [STATUS_INDEX_PARTITION_KEY, STATUS_INDEX_SORT_KEY, "status"] {
            assert!(written.contains(&key.to_owned()), "{written:?}");
        }
    }

    /// Jobs with an expected digest write their digest state about once a
    /// part: like a heartbeat, that write must cost the index nothing.
    #[test]
    fn the_digest_state_write_touches_nothing_the_index_holds() {
        let (keys, _) = index_in_template();
        let written = written(DIGEST_STATE_UPDATE);
        assert_eq!(written, ["digest_state"]);
        assert!(!keys.contains(&written[0]) && written[0] != "job_id");
        assert!(
            CHECKPOINT_ATTRIBUTES.contains("#digest_state"),
            "removed with the checkpoint"
        );
    }
}
