//! The job table: its key is exactly `job_id` (S), TTL is on `expires_at`,
//! and the status index `ferry jobs` lists from is there as the store writes
//! it. DescribeTable and DescribeTimeToLive only.

use aws_sdk_dynamodb::types::{
    IndexStatus, KeyType, ProjectionType, TableDescription, TableStatus, TimeToLiveStatus,
};

use super::Check;
use super::sdk_error::Failure;
use crate::store::{STATUS_INDEX, STATUS_INDEX_PARTITION_KEY, STATUS_INDEX_SORT_KEY};

/// The attribute the store sets on records that may expire.
const TTL_ATTRIBUTE: &str = "expires_at";

pub(super) async fn table(dynamodb: &aws_sdk_dynamodb::Client, table: Option<&str>) -> Vec<Check> {
    let Some(table) = table else {
        return vec![Check::skipped("table", "no table named (see config)")];
    };
    let described = dynamodb.describe_table().table_name(table).send().await;
    let description = match described.map(|output| output.table) {
        Ok(Some(description)) => description,
        Ok(None) => {
            return vec![Check::fail(
                "table",
                format!("{table}: DescribeTable answered without a table description"),
                "the endpoint does not behave like DynamoDB: check AWS_ENDPOINT_URL",
            )];
        }
        Err(err) => {
            let failure = Failure::of("DescribeTable", &err);
            let fix = failure.fix(
                &format!("create the table (the CloudFormation stack's JobTable; docs/deploy.md), or correct FERRY_TABLE ({table})"),
                "dynamodb:DescribeTable on the table",
            );
            return vec![Check::fail(
                "table",
                format!("{table}: {}", failure.line),
                fix,
            )];
        }
    };
    vec![
        key(table, &description),
        ttl(dynamodb, table).await,
        job_index(table, &description),
    ]
}

/// The type (`S`, `N`, `B`) an attribute is declared with.
fn attribute_type<'a>(description: &'a TableDescription, name: &str) -> &'a str {
    description
        .attribute_definitions()
        .iter()
        .find(|a| a.attribute_name() == name)
        .map_or("?", |a| a.attribute_type().as_str())
}

/// `job_id (HASH, S)`, for each element of a key schema.
fn show_keys(
    description: &TableDescription,
    keys: &[aws_sdk_dynamodb::types::KeySchemaElement],
) -> String {
    let shown: Vec<String> = keys
        .iter()
        .map(|k| {
            format!(
                "{} ({}, {})",
                k.attribute_name(),
                k.key_type().as_str(),
                attribute_type(description, k.attribute_name())
            )
        })
        .collect();
    shown.join(", ")
}

fn key(table: &str, description: &TableDescription) -> Check {
    let keys = description.key_schema();
    let right = matches!(keys, [only] if only.attribute_name() == "job_id" && *only.key_type() == KeyType::Hash)
        && attribute_type(description, "job_id") == "S";
    if !right {
        return Check::fail(
            "table",
            format!(
                "{table}: key is {}; ferry needs exactly job_id (HASH, S)",
                show_keys(description, keys)
            ),
            "a table's key cannot be changed: create a table with partition key job_id (S) and no sort key (as the stack's JobTable), and set FERRY_TABLE to it",
        );
    }
    let status = description.table_status().unwrap_or(&TableStatus::Active);
    let mut detail = format!("{table}: key job_id (S)");
    if *status != TableStatus::Active {
        detail.push_str(&format!("; note: the table is {}", status.as_str()));
    }
    Check::pass("table", detail)
}

async fn ttl(dynamodb: &aws_sdk_dynamodb::Client, table: &str) -> Check {
    let off_fix = format!(
        "turn it on: aws dynamodb update-time-to-live --table-name {table} \
         --time-to-live-specification Enabled=true,AttributeName={TTL_ATTRIBUTE}"
    );
    let described = dynamodb
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await;
    let (status, attribute) = match described {
        Ok(output) => {
            let description = output.time_to_live_description;
            (
                description
                    .as_ref()
                    .and_then(|d| d.time_to_live_status().cloned()),
                description
                    .and_then(|d| d.attribute_name)
                    .unwrap_or_default(),
            )
        }
        Err(err) => {
            let failure = Failure::of("DescribeTimeToLive", &err);
            let fix = failure.fix(&off_fix, "dynamodb:DescribeTimeToLive on the table");
            return Check::fail("ttl", format!("{table}: {}", failure.line), fix);
        }
    };
    match status {
        Some(status @ (TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling))
            if attribute == TTL_ATTRIBUTE =>
        {
            let mut detail =
                format!("on {TTL_ATTRIBUTE}: finished job records expire after 30 days");
            if status == TimeToLiveStatus::Enabling {
                detail.push_str("; note: still being enabled");
            }
            Check::pass("ttl", detail)
        }
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling) => Check::fail(
            "ttl",
            format!(
                "{table}: TTL is on {attribute}, but ferry writes {TTL_ATTRIBUTE}: job records never expire"
            ),
            format!(
                "turn TTL off, then on with AttributeName={TTL_ATTRIBUTE} (DynamoDB allows one change an hour)"
            ),
        ),
        _ => Check::fail(
            "ttl",
            format!("{table}: TTL is off: finished job records are kept, and paid for, forever"),
            off_fix,
        ),
    }
}

fn job_index(table: &str, description: &TableDescription) -> Check {
    let wanted = format!(
        "partition key {STATUS_INDEX_PARTITION_KEY} (S), sort key {STATUS_INDEX_SORT_KEY} (S), projection KEYS_ONLY"
    );
    let indexes = description.global_secondary_indexes();
    let Some(index) = indexes
        .iter()
        .find(|i| i.index_name() == Some(STATUS_INDEX))
    else {
        let older = indexes
            .iter()
            .any(|i| i.index_name() == Some("status-index"));
        return Check::fail(
            "job index",
            format!(
                "{table} has no index {STATUS_INDEX}{}: `ferry jobs` and `ferry retry --status` cannot list jobs",
                if older {
                    " (only the older status-index)"
                } else {
                    ""
                }
            ),
            format!(
                "add the global secondary index {STATUS_INDEX}: {wanted} (as the stack's JobTable; docs/jobs.md, \"Migrating from status-index\")"
            ),
        );
    };
    let keys = index.key_schema();
    let mut problems = Vec::new();
    let right_keys = matches!(keys, [hash, range]
        if hash.attribute_name() == STATUS_INDEX_PARTITION_KEY && *hash.key_type() == KeyType::Hash
        && range.attribute_name() == STATUS_INDEX_SORT_KEY && *range.key_type() == KeyType::Range)
        && attribute_type(description, STATUS_INDEX_PARTITION_KEY) == "S"
        && attribute_type(description, STATUS_INDEX_SORT_KEY) == "S";
    if !right_keys {
        problems.push(format!("its key is {}", show_keys(description, keys)));
    }
    let projection = index.projection().and_then(|p| p.projection_type());
    if projection != Some(&ProjectionType::KeysOnly) {
        problems.push(format!(
            "it projects {} (every progress write would then write the index too)",
            projection.map_or("nothing", ProjectionType::as_str)
        ));
    }
    if !problems.is_empty() {
        return Check::fail(
            "job index",
            format!("{table}'s {STATUS_INDEX}: {}", problems.join("; ")),
            format!("delete the index and create it again with {wanted}"),
        );
    }
    match index.index_status() {
        Some(IndexStatus::Active) | None => Check::pass(
            "job index",
            format!(
                "{STATUS_INDEX} ({STATUS_INDEX_PARTITION_KEY}, {STATUS_INDEX_SORT_KEY}, keys only), ACTIVE"
            ),
        ),
        Some(status) => Check::fail(
            "job index",
            format!(
                "{table}'s {STATUS_INDEX} is {}: `ferry jobs` cannot list until it is ACTIVE",
                status.as_str()
            ),
            "wait until DynamoDB has built it (aws dynamodb describe-table shows IndexStatus)",
        ),
    }
}
