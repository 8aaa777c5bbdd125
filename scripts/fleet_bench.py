"""Fleet benchmark driver (scripts/fleet-bench starts the servers and workers).

  fleet_bench.py small ORIGIN_URL BUCKET QUEUE_URL TABLE JOBS PROXIES PIDS LOGS NAME=PID...
  fleet_bench.py large FERRY S3S_FS QUEUE_URL DLQ_URL TABLE PROXIES OUT \
      JOBS JOB_MIB SINGLE_MIB RUNS [WORKER_ENV=VALUE...]

PROXIES, PIDS and LOGS are comma-separated: the fault proxies the workers
reach AWS through (their request counts are the workers' AWS calls), the
worker processes (peak RSS) and their JSON logs (job latency: from the
"claimed" line to the "succeeded" line of each job). The driver's own calls
go straight to the emulators (AWS_ENDPOINT_URL_*), so they are not counted.
`small` enqueues JOBS jobs of ORIGIN_URL at once to the running workers
and prints one JSON object. `large` starts nginx and s3s-fs (scripts/bench's
servers) and, for each phase, its own worker (S3 straight to s3s-fs, SQS and
DynamoDB through the first two PROXIES); it prints one JSON object a phase.
"""

import datetime
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request

import boto3

DEADLINE_SECS = 900
FINAL = ("succeeded", "failed", "rejected", "cancelled")


def proxy_calls(proxies: list[str]) -> dict[str, int]:
    calls: dict[str, int] = {}
    for proxy in proxies:
        with urllib.request.urlopen(f"{proxy}/__proxy/stats", timeout=30) as reply:
            for op, counts in json.load(reply).items():
                calls[op] = calls.get(op, 0) + counts.get("requests", 0)
    return calls


def enqueue(sqs, queue_url: str, bodies: list[dict]) -> None:
    for start in range(0, len(bodies), 10):
        entries = [
            {"Id": str(i), "MessageBody": json.dumps(body)}
            for i, body in enumerate(bodies[start : start + 10])
        ]
        sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)


def wait_drained(sqs, queue_url: str, started: float) -> None:
    """Until every message is deleted (each job's last step)."""
    while time.monotonic() - started < DEADLINE_SECS:
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        if all(int(v) == 0 for v in attributes.values()):
            return
        # Rarely: moto counts the queue for each attribute asked. (The end
        # of the run is taken from the records, not from this loop.)
        time.sleep(1)
    sys.exit(f"the queue was not drained within {DEADLINE_SECS} s")


def records(dynamodb, table: str, ids: list[str]) -> list[dict]:
    found = []
    for start in range(0, len(ids), 100):
        keys = [{"job_id": {"S": j}} for j in ids[start : start + 100]]
        request = {table: {"Keys": keys}}
        while request:
            reply = dynamodb.batch_get_item(RequestItems=request)
            found += reply["Responses"].get(table, [])
            request = reply.get("UnprocessedKeys") or None
    return found


def parse_time(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def latencies(logs: list[str], ids: set[str]) -> list[float]:
    """Seconds from each job's claim to its success, from the JSON logs."""
    claimed: dict[str, float] = {}
    done: dict[str, float] = {}
    for path in logs:
        with open(path, encoding="utf-8", errors="replace") as log:
            for line in log:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                message = entry.get("message")
                job = entry.get("span", {}).get("job_id")
                if job not in ids or message not in ("claimed", "succeeded"):
                    continue
                at = parse_time(entry["timestamp"])
                (claimed if message == "claimed" else done)[job] = at
    return sorted(done[j] - claimed[j] for j in done if j in claimed)


def peak_rss_mib(pids: list[str]) -> list[float]:
    peaks = []
    for pid in pids:
        with open(f"/proc/{pid}/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    peaks.append(round(int(line.split()[1]) / 1024, 1))
    return peaks


def cpu_seconds(pid: str) -> float:
    """utime + stime of one process, in seconds."""
    with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def run(kind, bodies, queue_url, table, proxies, pids, logs, others=()) -> dict:
    """`others`: (name, pid) of the servers whose CPU time is reported too."""
    sqs = boto3.client("sqs")
    dynamodb = boto3.client("dynamodb")
    processes = [("worker", pid) for pid in pids] + list(others)
    cpu_before = [cpu_seconds(pid) for _, pid in processes]
    before = proxy_calls(proxies)
    started_wall = time.time()
    started = time.monotonic()
    enqueue(sqs, queue_url, bodies)
    wait_drained(sqs, queue_url, started)
    ids = [b["job_id"] for b in bodies]
    found = records(dynamodb, table, ids)
    statuses = [r.get("status", {}).get("S") for r in found]
    not_succeeded = [s for s in statuses if s != "succeeded"]
    if len(found) != len(ids) or not_succeeded:
        sys.exit(f"{len(found)} records of {len(ids)}; not succeeded: {not_succeeded[:5]}")
    finished_wall = max(parse_time(r["status_at"]["S"]) for r in found)
    seconds = finished_wall - started_wall
    after = proxy_calls(proxies)
    cpu = {}
    for (name, pid), was in zip(processes, cpu_before):
        cpu[name] = cpu.get(name, 0) + cpu_seconds(pid) - was
    calls = {op: after.get(op, 0) - before.get(op, 0) for op in after}
    calls = {op: n for op, n in sorted(calls.items()) if n}
    total_calls = sum(calls.values())
    waits = latencies(logs, set(ids))
    size = sum(int(r["size"]["N"]) for r in found)
    result = {
        "scenario": kind,
        "workers": len(pids),
        "jobs": len(ids),
        "bytes": size,
        "seconds": round(seconds, 2),
        "jobs_per_second": round(len(ids) / seconds, 1),
        "aggregate_mib_per_second": round(size / seconds / 2**20, 1),
        "aws_calls": total_calls,
        "aws_calls_per_job": round(total_calls / len(ids), 2),
        "calls_by_operation": calls,
        "job_latency_p50_secs": round(percentile(waits, 50), 3),
        "job_latency_p99_secs": round(percentile(waits, 99), 3),
        "peak_rss_mib": peak_rss_mib(pids),
        # CPU time per job, ms: the worker's, and the emulators' and proxies'
        # (on a 2-core machine they compete for the same cores).
        "cpu_ms_per_job": {name: round(s * 1000 / len(ids), 2) for name, s in cpu.items()},
        "cpu_cores_busy": round(sum(cpu.values()) / seconds, 2),
    }
    if kind == "large":
        rates = [
            int(r["size"]["N"]) / float(r["duration_secs"]["N"]) / 2**20 for r in found
        ]
        mean = statistics.mean(rates)
        result["job_mib_per_second"] = [round(r, 1) for r in rates]
        result["largest_deviation_from_mean"] = round(max(abs(r / mean - 1) for r in rates), 3)
    return result


def large(args: list[str]) -> None:
    """8 jobs of 256 MiB at once against one job of 2 GiB, each in a fresh
    worker (its own peak RSS), alternating which goes first run by run."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "bench.d"))
    import servers  # scripts/bench.d: nginx (origin) and s3s-fs (S3 sink)

    ferry, s3s_fs, queue_url, dlq_url, table, proxies, out = args[:7]
    jobs, job_mib, single_mib, runs = (int(a) for a in args[7:11])
    env_extra = dict(a.split("=", 1) for a in args[11:])
    root = pathlib.Path("/dev/shm/ferry-fleet")
    shutil.rmtree(root, ignore_errors=True)
    try:
        with servers.Servers(root, s3s_fs, 10**9) as srv:
            for mib in (job_mib, single_mib):
                with open(srv.www / f"{mib}.bin", "wb") as f:
                    for _ in range(mib):
                        f.write(os.urandom(2**20))
            phases = {
                f"{jobs}x{job_mib}": [srv.url(f"{job_mib}.bin")] * jobs,
                f"1x{single_mib}": [srv.url(f"{single_mib}.bin")],
            }
            for run_number in range(1, runs + 1):
                order = list(phases) if run_number % 2 else list(reversed(phases))
                for phase in order:
                    result = large_phase(ferry, srv, phases[phase], queue_url, dlq_url, table,
                                         proxies, out, f"{run_number}-{phase}", env_extra)
                    result["phase"], result["run"] = phase, run_number
                    print(json.dumps(result), flush=True)
                    srv.clear_bucket()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def large_phase(ferry, srv, urls, queue_url, dlq_url, table, proxies, out, label, env_extra):
    log = pathlib.Path(out) / f"large-{label}-worker.log"
    env = dict(
        os.environ,
        AWS_ENDPOINT_URL=srv.endpoint,
        AWS_ENDPOINT_URL_S3=srv.endpoint,
        AWS_ENDPOINT_URL_SQS=proxies.split(",")[0],
        AWS_ENDPOINT_URL_DYNAMODB=proxies.split(",")[1],
        AWS_ACCESS_KEY_ID=servers_key("ACCESS_KEY"),
        AWS_SECRET_ACCESS_KEY=servers_key("SECRET_KEY"),
        FERRY_QUEUE_URL=queue_url,
        FERRY_DLQ_URL=dlq_url,
        FERRY_TABLE=table,
        FERRY_SOURCE_ALLOW_CIDRS="127.0.0.0/8",
        FERRY_LOG_FORMAT="json",
        RUST_LOG="info",
        FERRY_METRICS_ADDR="off",
        FERRY_POLL_WAIT_SECS="1",
        **env_extra,
    )
    with open(log, "w") as stderr:
        worker = subprocess.Popen([ferry, "worker"], env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        time.sleep(1)
        stamp = int(time.time() * 1000)
        bodies = [
            {"job_id": f"large-{stamp}-{i}", "url": url, "bucket": servers_key("BUCKET"),
             "key": f"{stamp}/{i}"}
            for i, url in enumerate(urls)
        ]
        return run("large", bodies, queue_url, table, proxies.split(","), [str(worker.pid)],
                   [str(log)])
    finally:
        worker.terminate()
        worker.wait(timeout=120)


def servers_key(name: str) -> str:
    import servers

    return getattr(servers, name)


def main() -> None:
    kind = sys.argv[1]
    if kind == "large":
        large(sys.argv[2:])
        return
    stamp = int(time.time() * 1000)
    origin, bucket, queue_url, table, jobs, proxies, pids, logs, others = sys.argv[2:11]
    bodies = [
        {"job_id": f"small-{stamp}-{i}", "url": origin, "bucket": bucket, "key": f"{stamp}/{i}"}
        for i in range(int(jobs))
    ]
    split = lambda text: [t for t in text.split(",") if t]  # noqa: E731
    others = [tuple(o.split("=", 1)) for o in split(others)]
    print(json.dumps(run(kind, bodies, queue_url, table, split(proxies), split(pids), split(logs),
                         others)))


if __name__ == "__main__":
    main()
