"""Creates ferry's AWS resources on the local emulator (AWS_ENDPOINT_URL).

Usage: local_aws.py BUCKET [QUEUE TABLE]
Prints shell assignments: FERRY_QUEUE_URL, FERRY_DLQ_URL, FERRY_TABLE.
"""

import json
import sys

import boto3


def main() -> None:
    bucket = sys.argv[1]
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    if len(sys.argv) < 4:
        return
    queue, table = sys.argv[2], sys.argv[3]
    sqs = boto3.client("sqs")
    dlq_url = sqs.create_queue(QueueName=f"{queue}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName=queue,
        Attributes={
            "VisibilityTimeout": "60",
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "10"}
            ),
        },
    )["QueueUrl"]
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(
        TableName=table,
        AttributeDefinitions=[
            {"AttributeName": name, "AttributeType": "S"}
            for name in ("job_id", "status_shard", "status_at")
        ],
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
        # `ferry jobs` lists by status, newest first (as the stack's table;
        # docs/scale.md says why it is sharded and keys-only).
        GlobalSecondaryIndexes=[
            {
                "IndexName": "status-shard-index",
                "KeySchema": [
                    {"AttributeName": "status_shard", "KeyType": "HASH"},
                    {"AttributeName": "status_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    # Finished records carry `expires_at`; the stack expires them the same way.
    dynamodb.update_time_to_live(
        TableName=table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
    )
    print(f"FERRY_QUEUE_URL={queue_url}")
    print(f"FERRY_DLQ_URL={dlq_url}")
    print(f"FERRY_TABLE={table}")


if __name__ == "__main__":
    main()
