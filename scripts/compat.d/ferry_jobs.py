"""ferry's worker against a second S3: resume after SIGKILL and `ferry gc`,
with S3 on the store in the environment (AWS_ENDPOINT_URL_S3, its keys) and
SQS + DynamoDB on moto (AWS_ENDPOINT_URL, FERRY_QUEUE_URL, FERRY_DLQ_URL,
FERRY_TABLE from scripts/local_aws.py). `scripts/compat-s3 e2e` runs it.

One run, one FERRY_S3_CHECKSUM mode (--mode):
  1. a slow local origin (ranges, strong ETag, Content-Length, a sleep per
     64 KiB chunk, bytes served counted per path) serves two 40 MiB files;
  2. worker 1 takes job `resume` (with --sha256) and job `orphan`; once
     `resume` has >= 2 parts acknowledged (`bytes_done`) and `orphan` has a
     checkpointed upload, worker 1 is killed with SIGKILL;
  3. after the dead worker's lease has run out, `ferry cancel orphan` ends
     that job at once, leaving its upload open (docs/jobs.md: "An upload left
     by a dead worker is aborted by `ferry gc`");
  4. a multipart upload ferry never started (`orphans/x`, boto3) is opened;
  5. worker 2 starts and resumes `resume`; while it runs, `ferry gc
     --older-than 1s` (first with --dry-run) must abort the cancelled job's
     upload, keep the running job's, and leave the foreign one alone;
  6. `resume` must succeed: the object's bytes are the source's, parts were
     reused, the origin served less than 2x the object, and HeadObject
     (ChecksumMode ENABLED) shows the mode's checksum, equal to one computed
     here from the source.

Every check prints PASS or FAIL with its figures; exit 1 on any FAIL.

Usage: ferry_jobs.py --ferry BIN --mode MODE [--bucket B] [--markdown]
                     [--title T]
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import boto3
from botocore.config import Config

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from compat_s3 import checksum, composite  # noqa: E402
from http_origin import MemoryOrigin  # noqa: E402

MIB = 1 << 20
SIZE = 40 * MIB
PART = 5 * MIB  # FERRY_PART_SIZE_MIB below
CHUNK = 64 * 1024
CHUNK_DELAY = 0.04  # about 1.5 MiB/s per connection
LEASE_SECS = 6


# --- checks -----------------------------------------------------------------


class Checks:
    def __init__(self):
        self.rows = []

    def check(self, name, ok, figures):
        word = "PASS" if ok else "FAIL"
        self.rows.append((name, word, figures))
        print(f"{word}  {name}: {figures}", flush=True)
        return ok

    def note(self, name, figures):
        self.rows.append((name, "info", figures))
        print(f"info  {name}: {figures}", flush=True)

    @property
    def failed(self):
        return any(word == "FAIL" for _, word, _ in self.rows)


# --- ferry ------------------------------------------------------------------


class Ferry:
    def __init__(self, binary, env, logs):
        self.binary = binary
        self.env = env
        self.logs = logs
        self.workers = []

    def run(self, *args, timeout=60):
        return subprocess.run(
            [self.binary, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def status(self, job_id):
        p = self.run("status", job_id, "--json")
        if p.returncode != 0:
            return {}
        try:
            return json.loads(p.stdout)
        except json.JSONDecodeError:
            return {}

    def start_worker(self, name):
        log = open(os.path.join(self.logs, f"{name}.log"), "w")
        p = subprocess.Popen(
            [self.binary, "worker"],
            env=dict(self.env, FERRY_WORKER_ID=name, FERRY_LOG_FORMAT="json", RUST_LOG="info"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        self.workers.append(p)
        return p

    def stop_all(self):
        for p in self.workers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.workers:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


def wait_for(what, predicate, timeout, every=0.5):
    """Calls predicate until it returns something true, at most `timeout`
    seconds; returns its last value."""
    deadline = time.time() + timeout
    value = None
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    print(f"  (gave up waiting for {what} after {timeout} s)", file=sys.stderr)
    return value


def num(record, name):
    v = record.get(name)
    return v if isinstance(v, (int, float)) else 0


def open_uploads(s3, bucket, prefix):
    """{upload id: key} of the open uploads under prefix (all pages, bounded)."""
    found, kw = {}, {}
    for _ in range(100):
        page = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix, **kw)
        for u in page.get("Uploads", []):
            found[u["UploadId"]] = u["Key"]
        if not page.get("IsTruncated"):
            break
        kw = {"KeyMarker": page.get("NextKeyMarker", ""), "UploadIdMarker": page.get("NextUploadIdMarker", "")}
    return found


def gc_lines(stdout):
    """`ferry gc` output: {key: (word, reason)}."""
    out = {}
    for line in stdout.splitlines():
        m = re.match(r"\s*(would abort|aborted|kept)\s+s3://[^/]+/(\S+)\s+job \S+: (.*)$", line)
        if m:
            out[m.group(2)] = (m.group(1), m.group(3))
    return out


def expected_checksum(mode, data, part_size):
    """What HeadObject should show for `data` uploaded in `part_size` parts."""
    parts = [data[i : i + part_size] for i in range(0, len(data), part_size)]
    if mode == "crc64nvme":
        return "ChecksumCRC64NVME", checksum("CRC64NVME", data)
    if mode in ("crc32c", "crc32"):
        algo = mode.upper()
        return f"Checksum{algo}", composite(algo, parts)
    return None, None


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--ferry", required=True)
    a.add_argument("--mode", required=True, choices=["crc64nvme", "crc32c", "crc32", "md5", "none"])
    a.add_argument("--bucket", default=os.environ.get("COMPAT_BUCKET", "ferry-compat"))
    a.add_argument("--markdown", action="store_true")
    a.add_argument("--title", default="")
    args = a.parse_args()
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "FERRY_QUEUE_URL", "FERRY_TABLE"):
        if not os.environ.get(var):
            sys.exit(f"{var} is not set (run through scripts/compat-s3 e2e)")
    bucket, mode = args.bucket, args.mode
    run = f"{int(time.time())}-{mode}"
    prefix = f"compat-jobs/{run}/"
    resume_id, orphan_id = f"resume-{run}", f"orphan-{run}"
    resume_key, orphan_key = prefix + "resume", prefix + "orphan"
    foreign_key = f"orphans/x-{run}"

    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 2},
        ),
    )
    data = {"resume": os.urandom(SIZE), "orphan": os.urandom(SIZE)}
    sha = hashlib.sha256(data["resume"]).hexdigest()
    origin = MemoryOrigin(data, chunk=CHUNK, chunk_delay=CHUNK_DELAY)
    logs = tempfile.mkdtemp(prefix="ferry-compat-jobs.")
    env = dict(
        os.environ,
        FERRY_S3_CHECKSUM=mode,
        FERRY_S3_PATH_STYLE="true",
        FERRY_SOURCE_ALLOW_CIDRS="127.0.0.0/8",
        FERRY_PART_SIZE_MIB=str(PART // MIB),
        FERRY_LEASE_SECS=str(LEASE_SECS),
        FERRY_HEARTBEAT_SECS="1",
        FERRY_POLL_WAIT_SECS="1",
        FERRY_RETRY_BASE_DELAY_SECS="1",
        FERRY_MAX_CONCURRENT_UPLOADS="2",
        FERRY_MEMORY_BUDGET_MIB="64",
        FERRY_METRICS_ADDR="off",
        FERRY_LOG_FORMAT="text",
    )
    ferry = Ferry(args.ferry, env, logs)
    c = Checks()
    print(f"== resume and gc, FERRY_S3_CHECKSUM={mode}, bucket {bucket}, logs in {logs}", flush=True)
    try:
        steps(c, ferry, s3, origin, bucket, mode, sha, data, resume_id, orphan_id,
              resume_key, orphan_key, foreign_key, prefix)
    finally:
        ferry.stop_all()
        origin.close()
        # The foreign upload is not ferry's to abort; end it here.
        for upload_id, key in open_uploads(s3, bucket, foreign_key).items():
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    if not c.failed:
        shutil.rmtree(logs, ignore_errors=True)
    else:
        for name in sorted(os.listdir(logs)):
            print(f"--- {name} (last 15 lines)", file=sys.stderr)
            with open(os.path.join(logs, name)) as f:
                sys.stderr.writelines(f.readlines()[-15:])
    if args.markdown:
        print(f"\n#### {args.title or 'resume and gc'} (`FERRY_S3_CHECKSUM={mode}`)\n")
        print("| check | result | figures |")
        print("|---|---|---|")
        for name, word, figures in c.rows:
            print(f"| {name} | {word} | {figures.replace('|', '/')} |")
    sys.exit(1 if c.failed else 0)


def steps(c, ferry, s3, origin, bucket, mode, sha, data, resume_id, orphan_id,
          resume_key, orphan_key, foreign_key, prefix):
    # 1. Two jobs on worker 1.
    first = ferry.start_worker("worker-1")
    for job_id, name, key, extra in (
        (resume_id, "resume", resume_key, ["--sha256", sha]),
        (orphan_id, "orphan", orphan_key, []),
    ):
        p = ferry.run("submit", f"{origin.url}/{name}", f"s3://{bucket}/{key}", "--job-id", job_id, *extra)
        if not c.check(f"submit {name}", p.returncode == 0, f"exit {p.returncode} {p.stderr.strip()[-200:]}"):
            return

    def both_under_way():
        r, o = ferry.status(resume_id), ferry.status(orphan_id)
        if num(r, "bytes_done") >= 2 * PART and o.get("upload_id") and num(o, "bytes_done") >= PART:
            return r, o
        if first.poll() is not None:
            return "worker exited"
        return None

    got = wait_for("2 parts of `resume` and a checkpointed `orphan`", both_under_way, 180)
    if not c.check(
        "worker 1: resume has >= 2 parts acknowledged, orphan a checkpointed upload",
        isinstance(got, tuple),
        f"{got!r:.200}" if not isinstance(got, tuple) else
        f"resume bytes_done {num(got[0], 'bytes_done')}, orphan bytes_done {num(got[1], 'bytes_done')}",
    ):
        return
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    killed_at = time.time()
    record, orphan_record = got
    done_at_kill = num(record, "bytes_done")
    served_at_kill = origin.bytes_served("resume")
    orphan_upload = orphan_record["upload_id"]
    resume_upload = record.get("upload_id")
    c.note(
        "SIGKILL worker 1",
        f"pid {first.pid}; resume: {done_at_kill} B acknowledged ({done_at_kill // PART} parts), "
        f"origin had served {served_at_kill} B; orphan upload {orphan_upload[:16]}…",
    )

    # 2. The dead worker's lease runs out; cancel `orphan` (final at once).
    time.sleep(LEASE_SECS + 1.5 - (time.time() - killed_at))
    p = ferry.run("cancel", orphan_id, "--by", "compat-s3")
    rec = wait_for("orphan cancelled", lambda: (lambda r: r if r.get("status") == "cancelled" else None)(ferry.status(orphan_id)), 20)
    c.check(
        "ferry cancel of the dead worker's job: cancelled at once",
        bool(rec),
        f"exit {p.returncode}, status {(rec or ferry.status(orphan_id)).get('status')}: {p.stdout.strip()[-160:]}",
    )
    open_now = open_uploads(s3, bucket, prefix)
    c.check(
        "the cancelled job's upload is still open (left for gc)",
        orphan_upload in open_now,
        f"{len(open_now)} open under {prefix}",
    )

    # 3. An upload ferry never started.
    foreign = s3.create_multipart_upload(Bucket=bucket, Key=foreign_key)["UploadId"]
    s3.upload_part(Bucket=bucket, Key=foreign_key, UploadId=foreign, PartNumber=1, Body=b"x" * MIB)

    # 4. Worker 2 resumes `resume`; gc while it runs.
    ferry.start_worker("worker-2")
    resumed = wait_for(
        "worker 2 to resume",
        lambda: (lambda r: r if r.get("status") == "running" and num(r, "resumes") >= 1 else
                 r if r.get("status") in ("succeeded", "failed") else None)(ferry.status(resume_id)),
        120,
    )
    c.note("worker 2 took the job", f"status {resumed and resumed.get('status')}, resumes {resumed and resumed.get('resumes')}, "
           f"bytes_reused {resumed and resumed.get('bytes_reused')}")
    time.sleep(1.5)  # the foreign upload is older than --older-than
    running_at_gc = ferry.status(resume_id).get("status") == "running"
    # The default threshold (24h) keeps every upload here: the store's
    # Initiated dates are what gc goes by (an upload without one counts as old).
    initiated = {
        u["UploadId"]: u.get("Initiated")
        for u in s3.list_multipart_uploads(Bucket=bucket, Prefix=orphan_key).get("Uploads", [])
    }.get(orphan_upload)
    young = ferry.run("gc", "--bucket", bucket, "--dry-run")
    said = gc_lines(young.stdout).get(orphan_key)
    c.check(
        "ferry gc --dry-run, default --older-than 24h: a seconds-old upload kept as young",
        young.returncode == 0 and said == ("kept", "younger than the threshold"),
        f"exit {young.returncode}; said {said}; ListMultipartUploads Initiated {initiated}",
    )
    dry = ferry.run("gc", "--bucket", bucket, "--older-than", "1s", "--dry-run")
    dry_lines = gc_lines(dry.stdout)
    still = open_uploads(s3, bucket, "")
    c.check(
        "ferry gc --dry-run: would abort the cancelled job's upload, aborts nothing",
        dry.returncode == 0
        and dry_lines.get(orphan_key, ("",))[0] == "would abort"
        and orphan_upload in still,
        f"exit {dry.returncode}; {orphan_key.rsplit('/', 1)[-1]}: {dry_lines.get(orphan_key)}; "
        f"{dry.stdout.strip().splitlines()[-1:] or dry.stderr.strip()[-200:]}",
    )
    gc = ferry.run("gc", "--bucket", bucket, "--older-than", "1s")
    print("  " + gc.stdout.strip().replace("\n", "\n  ") + (gc.stderr.strip()[-300:] if gc.returncode else ""), flush=True)
    lines = gc_lines(gc.stdout)
    after = open_uploads(s3, bucket, "")
    c.check(
        "ferry gc: the cancelled job's upload aborted",
        gc.returncode == 0 and lines.get(orphan_key, ("",))[0] == "aborted" and orphan_upload not in after,
        f"exit {gc.returncode}; said {lines.get(orphan_key)}; listed after: {orphan_upload in after}",
    )
    c.check(
        "ferry gc: an upload ferry did not start (boto3, orphans/x) left alone",
        lines.get(foreign_key, ("",))[0] == "kept" and foreign in after,
        f"said {lines.get(foreign_key)}; listed after: {foreign in after}",
    )
    if running_at_gc and ferry.status(resume_id).get("status") == "running":
        c.check(
            "ferry gc: the running job's upload kept",
            lines.get(resume_key, ("",))[0] == "kept" and resume_upload in after,
            f"said {lines.get(resume_key)}; listed after: {resume_upload in after}",
        )
    else:
        c.note("ferry gc: the running job's upload", f"not exercised: the job was not running throughout (said {lines.get(resume_key)})")

    # 5. The resumed job ends.
    final = wait_for(
        "resume to end",
        lambda: (lambda r: r if r.get("status") in ("succeeded", "failed", "cancelled", "rejected") else None)(ferry.status(resume_id)),
        300,
    ) or ferry.status(resume_id)
    c.check("resumed job succeeded", final.get("status") == "succeeded",
            f"status {final.get('status')} {final.get('error_kind', '')} {final.get('error', '')[:160]}")
    if final.get("status") != "succeeded":
        return
    obj = s3.get_object(Bucket=bucket, Key=resume_key)["Body"].read()
    got_sha = hashlib.sha256(obj).hexdigest()
    c.check("object bytes equal the source (sha256)", got_sha == sha, f"{len(obj)} B, sha256 {got_sha[:16]}… vs {sha[:16]}…")
    reused, parts = num(final, "parts_reused"), num(final, "parts")
    c.check(
        "parts reused (parts_reused > 0, >= parts acknowledged at the kill)",
        reused > 0 and reused >= done_at_kill // PART,
        f"parts_reused {reused} of {parts} (part_size {final.get('part_size')}), bytes_reused {final.get('bytes_reused')}, "
        f"{done_at_kill // PART} parts acknowledged at the kill; resumes {final.get('resumes')}, restarts {final.get('restarts', 0)}, "
        f"attempts {final.get('attempts')}",
    )
    served = origin.bytes_served("resume")
    c.check(
        "origin served < 2x the object",
        served < 2 * SIZE,
        f"served {served} B for {SIZE} B ({served / SIZE:.3f}x; {served_at_kill} B before the kill, "
        f"{origin.requests['resume']} requests); record: bytes_fetched {final.get('bytes_fetched')}, "
        f"bytes_refetched {final.get('bytes_refetched')}",
    )
    head = s3.head_object(Bucket=bucket, Key=resume_key, ChecksumMode="ENABLED")
    field, want = expected_checksum(mode, data["resume"], int(final.get("part_size") or PART))
    shown = {k: v for k, v in head.items() if k.startswith("Checksum")}
    if field:
        got = head.get(field)
        # Garage 1.x gives a composite value without AWS's `-N` (docs/compatibility.md).
        same = got is not None and (got == want or got == want.split("-")[0])
        c.check(f"HeadObject (ChecksumMode ENABLED) shows the {mode} checksum of the source", same,
                f"{field}={got} (computed here: {want}); {shown}")
    else:
        c.note(f"HeadObject (ChecksumMode ENABLED), mode {mode}", f"{shown or 'no checksum'}")
    if mode == "crc64nvme":
        c.check("the record's checksum is S3's CRC64NVME", final.get("checksum") == head.get("ChecksumCRC64NVME"),
                f"record {final.get('checksum')}, S3 {head.get('ChecksumCRC64NVME')}")
    left = open_uploads(s3, bucket, prefix)
    c.check("no upload left open under the run's prefix", not left, f"{len(left)} open: {sorted(left.values())}")
    try:
        s3.head_object(Bucket=bucket, Key=orphan_key)
        gone = False
    except s3.exceptions.ClientError:
        gone = True
    c.check("the cancelled job stored no object", gone, f"HEAD {orphan_key}: {'404' if gone else 'exists'}")


if __name__ == "__main__":
    main()
