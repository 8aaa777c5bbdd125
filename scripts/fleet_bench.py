"""Fleet benchmark driver: enqueue N small jobs, wait until all succeed, report
jobs/s and AWS calls per job (counted from the emulator's request log).

Usage: fleet_bench.py ORIGIN_URL BUCKET QUEUE_URL TABLE JOBS MOTO_LOG
Runs with AWS_ENDPOINT_URL pointing at moto. Prints one JSON line.
"""

import json
import sys
import time

import boto3


def count_requests(log_path: str) -> int:
    with open(log_path, encoding="utf-8", errors="replace") as log:
        return sum(1 for line in log if '" 200 -' in line or '" 204 -' in line or '" 206 -' in line)


def main() -> None:
    origin, bucket, queue_url, table, jobs, moto_log = sys.argv[1:7]
    jobs = int(jobs)
    sqs = boto3.client("sqs")
    dynamodb = boto3.client("dynamodb")
    run = f"fleet-{int(time.time())}"
    before = count_requests(moto_log)
    sends = 0
    for start in range(0, jobs, 10):
        entries = [
            {
                "Id": str(i),
                "MessageBody": json.dumps(
                    {"job_id": f"{run}-{i}", "url": origin, "bucket": bucket, "key": f"{run}/{i}"}
                ),
            }
            for i in range(start, min(jobs, start + 10))
        ]
        sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        sends += 1
    started = time.monotonic()
    deadline = started + 600
    pending = {f"{run}-{i}" for i in range(jobs)}
    polls = 0
    while pending and time.monotonic() < deadline:
        time.sleep(0.5)
        for chunk in [sorted(pending)[i : i + 100] for i in range(0, len(pending), 100)]:
            found = dynamodb.batch_get_item(
                RequestItems={table: {"Keys": [{"job_id": {"S": j}} for j in chunk]}}
            )["Responses"][table]
            polls += 1
            for item in found:
                # moto applies an update attribute by attribute: a record being
                # claimed can be read before its status is there.
                status = item.get("status", {}).get("S")
                if status in ("succeeded", "failed", "rejected"):
                    if status != "succeeded":
                        sys.exit(f"job {item['job_id']['S']} ended {status}")
                    pending.discard(item["job_id"]["S"])
    elapsed = time.monotonic() - started
    if pending:
        sys.exit(f"{len(pending)} jobs unfinished after 600 s")
    total = count_requests(moto_log) - before
    worker_calls = total - sends - polls
    print(json.dumps({
        "jobs": jobs,
        "seconds": round(elapsed, 2),
        "jobs_per_second": round(jobs / elapsed, 1),
        "worker_aws_calls": worker_calls,
        "aws_calls_per_job": round(worker_calls / jobs, 2),
    }))


if __name__ == "__main__":
    main()
