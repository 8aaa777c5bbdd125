"""Bandwidth benchmark driver: does --max-bandwidth hold, and is it shared fairly?

Usage: bandwidth_bench.py FERRY CAP SECONDS OUT_JSON
  FERRY    the ferry binary (release build)
  CAP      the cap as ferry reads it, e.g. 50MiB
  SECONDS  the measured window (at least 30)

Runs with AWS_ENDPOINT_URL pointing at moto (SQS and DynamoDB for the
worker). Starts its own origin on 127.0.0.1 that serves synthetic objects and
counts the bytes it sends per object, sampled every 0.5 s: the rates are
measured outside ferry. S3 is a discarding sink in this process (just enough
multipart S3 for ferry, bodies read and dropped, through AWS_ENDPOINT_URL_S3),
so that the sink is never what limits the rate; BW_SINK=moto uses moto's S3
instead (on 2 cores it cannot take 50 MiB/s).

  copy     one `ferry copy --max-bandwidth CAP`
  worker   one `ferry worker` with FERRY_MAX_BANDWIDTH=CAP running two jobs
           at once (FERRY_MAX_CONCURRENT_JOBS=2)

Each object is sized so the transfer outlasts the window; the window starts
WARMUP seconds after the first byte (socket buffers fill at first, faster
than the cap) and rates are per whole second inside it. Writes OUT_JSON and
prints a Markdown summary. Every process it starts, it stops; loopback only.
"""

import http.server
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

import boto3

WARMUP = 4.0
SAMPLE_EVERY = 0.5
BLOCK = os.urandom(1 << 20)
UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9,
         "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30}


def parse_rate(text: str) -> int:
    match = re.fullmatch(r"\s*([\d.]+)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in UNITS:
        raise SystemExit(f"cap {text!r} is not like 50MiB")
    return int(float(match.group(1)) * UNITS[match.group(2).upper()])


class Counters:
    """Bytes sent per object name, and samples of them over time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: dict[str, int] = {}
        self.first_byte: dict[str, float] = {}
        self.samples: list[tuple[float, dict[str, int]]] = []

    def add(self, name: str, count: int) -> None:
        with self.lock:
            self.sent[name] = self.sent.get(name, 0) + count
            self.first_byte.setdefault(name, time.monotonic())

    def sample_forever(self, stop: threading.Event) -> None:
        while not stop.wait(SAMPLE_EVERY):
            with self.lock:
                self.samples.append((time.monotonic(), dict(self.sent)))


COUNTERS = Counters()


class Origin(http.server.BaseHTTPRequestHandler):
    """GET /NAME-SIZE.bin: SIZE synthetic bytes, with Range and a strong ETag."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        match = re.fullmatch(r"/([a-z0-9]+)-(\d+)\.bin", self.path)
        if not match:
            self.send_error(404)
            return
        name, size = match.group(1), int(match.group(2))
        start, end, status = 0, size, 200
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if ranged:
            start = int(ranged.group(1))
            end = min(size, int(ranged.group(2)) + 1) if ranged.group(2) else size
            status = 206
        self.send_response(status)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{name}-{size}"')
        self.send_header("Content-Length", str(end - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        view = memoryview(BLOCK)
        offset = start
        while offset < end:
            # 256 KiB writes: each returns once the kernel took it, so the
            # counter follows what the reader let through closely.
            at = offset % len(BLOCK)
            count = min(end - offset, 256 << 10, len(BLOCK) - at)
            try:
                self.wfile.write(view[at : at + count])
            except OSError:
                return
            COUNTERS.add(name, count)
            offset += count


class Sink(http.server.BaseHTTPRequestHandler):
    """Just enough S3 for ferry: multipart create, part, complete, abort, and
    PutObject. Bodies are read and dropped; nothing is stored."""

    protocol_version = "HTTP/1.1"
    NS = "http://s3.amazonaws.com/doc/2006-03-01/"

    def log_message(self, *args):
        pass

    def drain(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                self.skip(size)
                self.rfile.readline()
        self.skip(int(self.headers.get("Content-Length", 0)))

    def skip(self, remaining: int) -> None:
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                return
            remaining -= len(chunk)

    def reply(self, status: int, xml: str = "", etag: str = "") -> None:
        body = xml.encode()
        self.send_response(status)
        if etag:
            self.send_header("ETag", etag)
        if body:
            self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.drain()
        url = urllib.parse.urlsplit(self.path)
        bucket, _, key = url.path.lstrip("/").partition("/")
        if "uploads" in urllib.parse.parse_qs(url.query, keep_blank_values=True):
            self.reply(200, f'<InitiateMultipartUploadResult xmlns="{self.NS}"><Bucket>{bucket}'
                            f"</Bucket><Key>{key}</Key><UploadId>{uuid.uuid4().hex}</UploadId>"
                            "</InitiateMultipartUploadResult>")
        else:
            self.reply(200, f'<CompleteMultipartUploadResult xmlns="{self.NS}"><Bucket>{bucket}'
                            f'</Bucket><Key>{key}</Key><ETag>"discarded-1"</ETag>'
                            "</CompleteMultipartUploadResult>")

    def do_PUT(self):
        self.drain()
        self.reply(200, etag='"discarded"')

    def do_DELETE(self):
        self.drain()
        self.reply(204)

    def do_HEAD(self):
        self.reply(404)


def serve(handler) -> str:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def rates(name: str, begin: float, seconds: float, step: float = 1.0) -> list[float]:
    """Bytes per second of `name` over each `step` seconds from `begin` on."""
    points = [(t, s.get(name, 0)) for t, s in COUNTERS.samples]

    def sent_at(when: float) -> float:
        for (t0, b0), (t1, b1) in zip(points, points[1:]):
            if t0 <= when <= t1:
                return b0 + (b1 - b0) * (when - t0) / (t1 - t0)
        raise SystemExit(f"no sample around {when} for {name}: the transfer ended early")

    steps = int(seconds / step)
    return [(sent_at(begin + (i + 1) * step) - sent_at(begin + i * step)) / step
            for i in range(steps)]


def summary(name: str, begin: float, seconds: float, cap: int) -> dict:
    """The window's mean rate, the median of its 5-second rates, and the
    1-second rates (noisier: a new request's socket buffers fill at once)."""
    per_second = rates(name, begin, seconds)
    per_5s = rates(name, begin, seconds, 5.0)
    return {
        "mean_bytes_per_sec": statistics.fmean(per_second),
        "median_5s_bytes_per_sec": statistics.median(per_5s),
        "median_1s_bytes_per_sec": statistics.median(per_second),
        "mean_vs_cap": statistics.fmean(per_second) / cap,
        "per_5s": [round(v) for v in per_5s],
        "per_second": [round(v) for v in per_second],
    }


SINK_URL = None


def ferry_env() -> dict:
    env = dict(os.environ)
    if SINK_URL:
        env["AWS_ENDPOINT_URL_S3"] = SINK_URL
    env.update(
        FERRY_SOURCE_ALLOW_CIDRS="127.0.0.0/8",
        FERRY_LOG_FORMAT="json",
        FERRY_METRICS_ADDR="off",
        RUST_LOG="warn",
    )
    return env


def run_copy(ferry: str, origin: str, cap_text: str, cap: int, seconds: float, bucket: str) -> dict:
    size = int(cap * (seconds + WARMUP + 4))
    started = time.monotonic()
    subprocess.run(
        [ferry, "copy", f"{origin}/copy-{size}.bin", f"s3://{bucket}/copy", "--quiet",
         "--max-bandwidth", cap_text],
        env=ferry_env(), check=True, timeout=seconds * 4 + 120, stdout=subprocess.DEVNULL,
    )
    took = time.monotonic() - started
    if not SINK_URL:
        boto3.client("s3").delete_object(Bucket=bucket, Key="copy")
    begin = COUNTERS.first_byte["copy"] + WARMUP
    return {"size": size, "wall_secs": took, **summary("copy", begin, seconds, cap)}


def run_worker(ferry: str, origin: str, cap_text: str, cap: int, seconds: float, bucket: str) -> dict:
    sqs, dynamodb = boto3.client("sqs"), boto3.client("dynamodb")
    run = f"bw{int(time.time())}"
    queue = sqs.create_queue(QueueName=run)["QueueUrl"]
    dynamodb.create_table(
        TableName=run,
        AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    # Each job gets half the cap.
    size = int(cap / 2 * (seconds + WARMUP + 4))
    for name in ("joba", "jobb"):
        body = {"job_id": f"{run}-{name}", "url": f"{origin}/{name}-{size}.bin",
                "bucket": bucket, "key": name}
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(body))
    env = ferry_env()
    env.update(FERRY_QUEUE_URL=queue, FERRY_TABLE=run, FERRY_MAX_BANDWIDTH=cap_text,
               FERRY_MAX_CONCURRENT_JOBS="2", FERRY_POLL_WAIT_SECS="1")
    log = open(os.path.join(os.environ.get("BENCH_STATE", "."), "bandwidth-worker.log"), "w")
    worker = subprocess.Popen([ferry, "worker"], env=env, stderr=log, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + seconds * 4 + 120
        pending = {f"{run}-joba", f"{run}-jobb"}
        durations = {}
        while pending:
            if time.monotonic() > deadline:
                raise SystemExit(f"jobs {sorted(pending)} did not finish in time")
            time.sleep(1)
            for job in sorted(pending):
                item = dynamodb.get_item(TableName=run, Key={"job_id": {"S": job}}).get("Item", {})
                status = item.get("status", {}).get("S")
                if status in ("failed", "rejected"):
                    raise SystemExit(f"job {job} {status}: {item.get('error', {}).get('S')}")
                if status == "succeeded":
                    pending.discard(job)
                    durations[job.rsplit("-", 1)[1]] = float(item["duration_secs"]["N"])
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=120)
        log.close()
    for name in ("joba", "jobb"):
        if not SINK_URL:
            boto3.client("s3").delete_object(Bucket=bucket, Key=name)
    # Both jobs run throughout the window.
    begin = max(COUNTERS.first_byte["joba"], COUNTERS.first_byte["jobb"]) + WARMUP
    with COUNTERS.lock:
        for t, sample in COUNTERS.samples:
            sample["both"] = sample.get("joba", 0) + sample.get("jobb", 0)
    result = {"size_per_job": size,
              # ferry's own view: each job's size over its recorded duration.
              "job_secs": durations,
              "job_bytes_per_sec": {job: size / secs for job, secs in durations.items()},
              "total": summary("both", begin, seconds, cap),
              "job_a": summary("joba", begin, seconds, cap / 2),
              "job_b": summary("jobb", begin, seconds, cap / 2)}
    result["ratio_a_to_b"] = result["job_a"]["mean_bytes_per_sec"] / result["job_b"]["mean_bytes_per_sec"]
    return result


def main() -> None:
    ferry, cap_text, seconds, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    cap = parse_rate(cap_text)
    stop = threading.Event()
    threading.Thread(target=COUNTERS.sample_forever, args=(stop,), daemon=True).start()
    global SINK_URL
    origin = serve(Origin)
    sink = os.environ.get("BW_SINK", "discard")
    if sink == "discard":
        SINK_URL = serve(Sink)
    bucket = f"bw{int(time.time())}"
    if not SINK_URL:
        boto3.client("s3").create_bucket(Bucket=bucket)
    results = {"cap": cap_text, "cap_bytes_per_sec": cap, "window_secs": seconds,
               "warmup_secs": WARMUP, "sink": sink}
    results["copy"] = run_copy(ferry, origin, cap_text, cap, seconds, bucket)
    results["worker"] = run_worker(ferry, origin, cap_text, cap, seconds, bucket)
    stop.set()
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    mib = lambda v: f"{v / (1 << 20):.2f}"  # noqa: E731
    copy, worker = results["copy"], results["worker"]
    print(f"| run | cap (share) MiB/s | {seconds:.0f}-s mean MiB/s | vs cap | "
          "median of 5-s rates | median of 1-s rates |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, share, s in [
        ("`ferry copy`, one job", cap, copy),
        ("worker, two jobs: total", cap, worker["total"]),
        ("worker: job a", cap / 2, worker["job_a"]),
        ("worker: job b", cap / 2, worker["job_b"]),
    ]:
        print(f"| {label} | {mib(share)} | {mib(s['mean_bytes_per_sec'])} | "
              f"{s['mean_bytes_per_sec'] / share - 1:+.1%} | {mib(s['median_5s_bytes_per_sec'])} | "
              f"{mib(s['median_1s_bytes_per_sec'])} |")
    print(f"\njob a / job b ({seconds:.0f}-s means): {worker['ratio_a_to_b']:.3f}")
    print(f"end to end (size / time): ferry copy {mib(copy['size'] / copy['wall_secs'])} MiB/s "
          f"(process start to exit); jobs a and b "
          f"{mib(worker['job_bytes_per_sec']['joba'])} and {mib(worker['job_bytes_per_sec']['jobb'])} "
          "MiB/s (size / the record's duration_secs)")
    ok = (abs(copy["mean_vs_cap"] - 1) <= 0.05 and abs(worker["total"]["mean_vs_cap"] - 1) <= 0.05
          and abs(worker["ratio_a_to_b"] - 1) <= 0.10)
    print("PASS: within ±5 % of the cap, jobs within ±10 % of each other" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
