"""Creates ferry's AWS resources on the local emulator (AWS_ENDPOINT_URL): the
one set-up of scripts/quickstart, the benchmarks and docker-compose.yml's init.

The queue, dead-letter queue and table have the shapes
deploy/cloudformation/ferry.yaml gives them (scripts/stack_test.py compares
the two on one emulator). Safe to run again: what exists with these settings
is kept (a queue or table made otherwise is an error or left as it is).

Usage: local_aws.py [--lifecycle FILE] BUCKET [QUEUE TABLE]
Prints shell assignments: FERRY_QUEUE_URL, FERRY_DLQ_URL, FERRY_TABLE.
"""

import argparse
import json

import boto3

# As the stack's queues (seconds): a dead-lettered message keeps its enqueue
# time, so the DLQ keeps messages longer than the queue.
QUEUE_RETENTION = "345600"
DLQ_RETENTION = "1209600"
VISIBILITY_TIMEOUT = "60"
RECEIVE_WAIT = "20"
# Above FERRY_MAX_ATTEMPTS (5): each retry is a receive.
MAX_RECEIVE_COUNT = 10
INDEX = "status-shard-index"


def create_bucket(bucket, lifecycle):
    s3 = boto3.client("s3")
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    if lifecycle:
        with open(lifecycle) as f:
            s3.put_bucket_lifecycle_configuration(
                Bucket=bucket, LifecycleConfiguration=json.load(f)
            )


def create_queues(queue):
    sqs = boto3.client("sqs")
    # CreateQueue with the same attributes returns the existing queue.
    dlq_url = sqs.create_queue(
        QueueName=f"{queue}-dlq",
        Attributes={"MessageRetentionPeriod": DLQ_RETENTION},
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName=queue,
        Attributes={
            "MessageRetentionPeriod": QUEUE_RETENTION,
            "VisibilityTimeout": VISIBILITY_TIMEOUT,
            "ReceiveMessageWaitTimeSeconds": RECEIVE_WAIT,
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}
            ),
        },
    )["QueueUrl"]
    return queue_url, dlq_url


def create_table(table):
    dynamodb = boto3.client("dynamodb")
    try:
        dynamodb.create_table(
            TableName=table,
            AttributeDefinitions=[
                {"AttributeName": name, "AttributeType": "S"}
                for name in ("job_id", "status_shard", "status_at")
            ],
            KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
            # `ferry jobs` lists by status, newest first (docs/scale.md says
            # why it is sharded and keys-only).
            GlobalSecondaryIndexes=[
                {
                    "IndexName": INDEX,
                    "KeySchema": [
                        {"AttributeName": "status_shard", "KeyType": "HASH"},
                        {"AttributeName": "status_at", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                }
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    except dynamodb.exceptions.ResourceInUseException:
        pass
    dynamodb.get_waiter("table_exists").wait(TableName=table)
    # Finished records carry `expires_at`.
    ttl = dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        dynamodb.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bucket")
    parser.add_argument("queue", nargs="?")
    parser.add_argument("table", nargs="?")
    parser.add_argument("--lifecycle", help="S3 lifecycle configuration (JSON) for the bucket")
    args = parser.parse_args()
    if (args.queue is None) != (args.table is None):
        parser.error("give both QUEUE and TABLE, or neither")
    create_bucket(args.bucket, args.lifecycle)
    if args.queue is None:
        return
    queue_url, dlq_url = create_queues(args.queue)
    create_table(args.table)
    print(f"FERRY_QUEUE_URL={queue_url}")
    print(f"FERRY_DLQ_URL={dlq_url}")
    print(f"FERRY_TABLE={args.table}")


if __name__ == "__main__":
    main()
