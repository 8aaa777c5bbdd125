//! The job table as the stack creates it, for tests that make their own.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
};
use ferry_worker::store;

/// A string attribute definition, for table and index keys.
pub fn string_attribute(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .unwrap()
}

/// One element of a table's or an index's key.
pub fn key_element(name: &str, kind: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .unwrap()
}

/// A job table as the stack creates it: `job_id` key and, with `indexed`,
/// the sharded status index `ferry jobs` reads.
pub async fn create_table(dynamodb: &aws_sdk_dynamodb::Client, table: &str, indexed: bool) {
    let (attribute, key) = (string_attribute, key_element);
    let mut create = dynamodb
        .create_table()
        .table_name(table)
        .attribute_definitions(attribute("job_id"))
        .key_schema(key("job_id", KeyType::Hash))
        .billing_mode(BillingMode::PayPerRequest);
    if indexed {
        create = create
            .attribute_definitions(attribute(store::STATUS_INDEX_PARTITION_KEY))
            .attribute_definitions(attribute(store::STATUS_INDEX_SORT_KEY))
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(store::STATUS_INDEX)
                    .key_schema(key(store::STATUS_INDEX_PARTITION_KEY, KeyType::Hash))
                    .key_schema(key(store::STATUS_INDEX_SORT_KEY, KeyType::Range))
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::KeysOnly)
                            .build(),
                    )
                    .build()
                    .unwrap(),
            );
    }
    create.send().await.unwrap();
}
