"""The chaos soak's origin, driver and invariant checker (run by scripts/chaos).

  chaos.py origin DIR --seed N
      An HTTP origin for the soak's sources, on loopback until stdin closes;
      prints `port N`. URLs are /MODE/JOB_ID/FILE: MODE `range` (ranges,
      ETag, Content-Length), `norange` (ignores Range, no Accept-Ranges),
      `nolength` (chunked, no Content-Length, no ranges), and the lying
      origin's: `weak` (a weak ETag only), `lastmod` (Last-Modified and
      Date, no ETag), `novalidator`, `close` (the body ends with its
      connection), `ifrange-ignored`, `changing` (replaced once, after the
      job's first requests, by FILE.v2; see MODES). On top: an occasional
      503 and a connection reset mid-body (never in `close`), at most
      ORIGIN_FAULT_CAP per job so that every job can succeed.
      GET /__origin/stats, POST /__origin/faults?on=0|1.

  chaos.py run --mode short|long --minutes N --seed N --proxy URL --origin URL ...
      Generates the sources (seeded) into DIR, creates the bucket, queue, DLQ
      and table on the emulator (AWS_ENDPOINT_URL: moto, which the driver and
      checker use directly), starts the workers against the fault proxy,
      installs the fault rules, submits the jobs and the bad messages (which
      must be rejected), kills and restarts workers, then stops the faults, drains, runs `ferry gc`, checks the invariants
      and prints the report (also written as JSON). Exit 1 if any invariant
      fails.
"""

import argparse
import base64
import ctypes
import datetime
import email.utils
import hashlib
import http.server
import json
import math
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field

MiB = 1 << 20
FINAL = ("succeeded", "failed", "rejected")
ORIGIN_FAULT_CAP = 2  # origin faults per job at most: the job's retries absorb them


def close_inherited_pipes() -> None:
    """Closes pipe ends inherited from scripts/chaos beyond stdin/out/err: the
    servers it started end when their stdin pipe has no writer left, and a
    killed script must not have them kept alive through this process."""
    import stat

    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                if stat.S_ISFIFO(os.fstat(fd).st_mode):
                    os.close(fd)
            except OSError:
                pass


def log(message: str) -> None:
    print(f"chaos: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the origin

PART = 5 * MiB  # the workers' FERRY_PART_SIZE_MIB: what a ranged part asks for
# Source modes: how the origin frames, validates and ranges each source.
#   range           ranges, strong ETag, Last-Modified, Content-Length
#   norange         no ranges (Range ignored, no Accept-Ranges), strong ETag
#   nolength        chunked, no Content-Length, no ranges, strong ETag
#   weak            ranges, a weak ETag W/"..." only (no Last-Modified)
#   lastmod         ranges, no ETag: Last-Modified (an hour old) and Date; If-Range by date
#   novalidator     ranges, Content-Length, neither ETag nor Last-Modified
#   close           no Content-Length, no chunking, `Connection: close`: the body
#                   ends with its connection (never reset: a cut there looks
#                   exactly like the end, docs/reliability.md)
#   ifrange-ignored ranges and a strong ETag, but If-Range is not looked at
#   changing        ranges and a strong validator; the content is replaced once,
#                   after the job's first few requests (`change_plan`)
MODES = ("range", "norange", "nolength", "weak", "lastmod", "novalidator", "close", "ifrange-ignored", "changing")
RANGED = {"range", "weak", "lastmod", "novalidator", "ifrange-ignored", "changing"}
# Modes whose sources carry a strong validator and ranges: read in parts.
PINNED_MODES = {"range", "lastmod", "ifrange-ignored", "changing"}
# The `source_integrity` each mode's record must show (a job resumed by range
# from a checkpoint is `pinned` too). An empty source's only answer is a 416
# without a validator, so its record says `one_answer` in every framed mode.
INTEGRITY = {
    "range": {"pinned"}, "lastmod": {"pinned"}, "ifrange-ignored": {"pinned"},
    "weak": {"one_answer"}, "novalidator": {"one_answer"},
    "close": {"unframed"},
    # Streams without ranges: one answer, unless a resume by range pinned them.
    "norange": {"one_answer", "pinned"}, "nolength": {"one_answer", "pinned"},
    # The version stored may have been read under a date that was still too
    # fresh to be strong (a replacement within the second): one answer.
    "changing": {"pinned", "one_answer"},
}


@dataclass(frozen=True)
class ChangePlan:
    """How a `changing` source is replaced: its first `after` GETs (every
    attempt's, faulted ones too) are served version 1, the rest version 2
    (FILE.v2, the driver's). The validator is a strong ETag or a
    Last-Modified (version 2's is the moment of the change), and If-Range
    is honoured or ignored."""

    after: int
    validator: str  # "etag" or "lastmod"
    honours_if_range: bool


def change_plan(seed: int, job_id: str, size: int) -> ChangePlan:
    """The change of one `changing` job, the same in the origin and the
    driver: after the probe and before the last part when the source has
    several parts, so that the first attempt sees it mid-copy."""
    rng = random.Random(f"change-{seed}-{job_id}")
    parts = max(1, -(-size // PART))
    return ChangePlan(
        after=rng.randint(1, max(1, parts - 1)),
        validator="etag" if rng.random() < 0.6 else "lastmod",
        honours_if_range=rng.random() < 0.6,
    )


@dataclass
class Representation:
    """What the origin serves for one request: the file and its headers."""

    path: str
    size: int
    etag: str | None
    last_modified: str | None
    ranges: bool
    honours_if_range: bool
    framing: str  # "length", "chunked" or "close"


class OriginState:
    def __init__(self, root: str, seed: int, p503: float, preset: float):
        self.root = root
        self.seed = seed
        self.rng = random.Random(f"origin-{seed}")
        self.p503 = p503
        self.preset = preset
        self.on = True
        self.lock = threading.Lock()
        self.faults_by_job: Counter = Counter()
        self.requests_by_job: Counter = Counter()
        self.changed_at: dict[str, float] = {}  # changing job -> when version 2 was first served
        self.stats: Counter = Counter()

    def fault(self, job: str, can_reset: bool):
        """None, "503" or ("reset", fraction of the body sent first)."""
        with self.lock:
            if not self.on or self.faults_by_job[job] >= ORIGIN_FAULT_CAP:
                return None
            roll = self.rng.random()
            if roll < self.p503:
                self.faults_by_job[job] += 1
                self.stats["fault_503"] += 1
                return "503"
            if can_reset and roll < self.p503 + self.preset:
                self.faults_by_job[job] += 1
                self.stats["fault_reset"] += 1
                return ("reset", self.rng.random())
            return None

    def version(self, job: str, plan: ChangePlan, counted: bool) -> tuple[int, float]:
        """Which version a `changing` job's request gets (1 or 2), and when
        version 2 appeared; a GET is counted, a HEAD is not."""
        with self.lock:
            served = self.requests_by_job[job]
            if counted:
                self.requests_by_job[job] += 1
            if served < plan.after:
                return 1, 0.0
            if job not in self.changed_at:
                self.changed_at[job] = time.time()
                self.stats["changed"] += 1
            return 2, self.changed_at[job]

    def representation(self, mode: str, job: str, name: str, head: bool) -> Representation | None:
        """The file and headers `mode` serves for `name`; None if there is none."""
        path = os.path.join(self.root, name)
        if not os.path.isfile(path):
            return None
        stat = os.stat(path)
        size = stat.st_size
        etag = f'"{stat.st_mtime_ns:x}-{size:x}"'
        modified = email.utils.formatdate(stat.st_mtime, usegmt=True)
        rep = Representation(path, size, etag, modified, mode in RANGED, mode != "ifrange-ignored",
                             {"nolength": "chunked", "close": "close"}.get(mode, "length"))
        if mode == "weak":
            rep.etag, rep.last_modified = f"W/{etag}", None
        elif mode == "lastmod":
            rep.etag = None
        elif mode == "novalidator":
            rep.etag = rep.last_modified = None
        elif mode == "changing":
            plan = change_plan(self.seed, job, size)
            version, since = self.version(job, plan, counted=not head)
            if version == 2:
                rep.path = path + ".v2"
                rep.size = os.path.getsize(rep.path)
                rep.etag = f'"{os.stat(rep.path).st_mtime_ns:x}-{rep.size:x}-v2"'
                rep.last_modified = email.utils.formatdate(since, usegmt=True)
            if plan.validator == "lastmod":
                rep.etag = None
            rep.honours_if_range = plan.honours_if_range
        return rep


def if_range_holds(rep: Representation, if_range: str | None) -> bool:
    """Whether a Range may be honoured under `if_range` (RFC 9110 §13.1.5):
    no If-Range, or one that names this representation's strong ETag or
    (exactly) its Last-Modified. An origin that ignores If-Range honours
    every Range."""
    if if_range is None or not rep.honours_if_range:
        return True
    if if_range.startswith('"'):
        return rep.etag is not None and not rep.etag.startswith("W/") and if_range == rep.etag
    return rep.last_modified is not None and if_range == rep.last_modified


class OriginHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: OriginState  # set on the class by serve_origin

    def log_message(self, *args):
        pass

    def reply_text(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/__origin/faults":
            on = urllib.parse.parse_qs(url.query).get("on", ["1"])[0] == "1"
            with self.state.lock:
                self.state.on = on
            self.reply_text(200, "ok\n")
        else:
            self.reply_text(404, "unknown\n")

    def do_HEAD(self):
        self.serve(head=True)

    def do_GET(self):
        self.serve(head=False)

    def cut(self) -> None:
        """Resets the connection (RST), mid-answer."""
        try:
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def serve(self, head: bool) -> None:
        state = self.state
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/__origin/stats":
            with state.lock:
                self.reply_text(200, json.dumps({**state.stats, "changed_at": state.changed_at}))
            return
        parts = url.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] not in MODES or parts[2] in ("", ".", "..") or "/" in parts[2]:
            self.reply_text(404, "no such source\n")
            return
        mode, job, name = parts
        rep = state.representation(mode, job, name, head)
        if rep is None:
            self.reply_text(404, "no such source\n")
            return
        with state.lock:
            state.stats[f"requests_{mode}"] += 1
        size = rep.size
        start, end, status = 0, size, 200
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if rep.ranges and match and (match.group(1) or match.group(2)) and if_range_holds(rep, self.headers.get("If-Range")):
            if match.group(1):
                start = int(match.group(1))
                end = min(size, int(match.group(2)) + 1) if match.group(2) else size
            else:
                start = max(0, size - int(match.group(2)))
            if start >= size or start >= end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        # A cut of an unframed body would look like its end: never injected.
        fault = None if head else state.fault(job, can_reset=end - start > 0 and rep.framing != "close")
        if fault == "503":
            self.reply_text(503, "injected by the chaos origin\n")
            return
        self.send_response(status)
        self.send_headers(rep, start, end, status)
        if not head:
            self.send_body(rep, start, end, fault)

    def send_headers(self, rep: Representation, start: int, end: int, status: int) -> None:
        if rep.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if rep.etag:
            self.send_header("ETag", rep.etag)
        if rep.last_modified:
            self.send_header("Last-Modified", rep.last_modified)
        self.send_header("Content-Type", "application/octet-stream")
        if rep.framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        elif rep.framing == "close":
            self.send_header("Connection", "close")  # also makes the handler close it after the body
        else:
            self.send_header("Content-Length", str(end - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{rep.size}")
        self.end_headers()

    def send_body(self, rep: Representation, start: int, end: int, fault) -> None:
        chunked = rep.framing == "chunked"
        cut_at = end + 1
        if fault is not None:
            cut_at = start + int((end - start) * fault[1])
        with open(rep.path, "rb") as f:
            f.seek(start)
            position = start
            while position < end:
                chunk = f.read(min(end - position, 256 * 1024, max(1, cut_at - position)))
                if not chunk:
                    break
                if chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                else:
                    self.wfile.write(chunk)
                position += len(chunk)
                if position >= cut_at:
                    self.cut()
                    return
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        with self.state.lock:
            self.state.stats["bytes_served"] += end - start


class OriginServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that goes away (a killed worker, a dropped range) is normal here.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def serve_origin(args) -> None:
    os.makedirs(args.dir, exist_ok=True)
    OriginHandler.state = OriginState(args.dir, args.seed, args.p503, args.preset)
    server = OriginServer(("127.0.0.1", args.port), OriginHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"port {server.server_address[1]}", flush=True)
    sys.stdin.read()
    server.shutdown()


# ------------------------------------------------------------------ the jobs


@dataclass
class Job:
    index: int
    job_id: str
    key: str
    size: int
    mode: str
    cls: str
    file: str
    submit_at: float
    expected: dict = field(default_factory=dict)
    duplicate_at: float | None = None
    sha256: str = ""
    md5: str = ""
    crc64nvme: str = ""
    # A `changing` job's second version (FILE.v2): its size, then its digests.
    v2_size: int | None = None
    v2: dict = field(default_factory=dict)

    def url(self, origin: str) -> str:
        return f"{origin}/{self.mode}/{self.job_id}/{self.file}"

    def message(self, origin: str, bucket: str) -> str:
        body = {"job_id": self.job_id, "url": self.url(origin), "bucket": bucket, "key": self.key}
        if self.expected:
            body["expected"] = self.expected
        return json.dumps(body)

    def versions(self) -> dict[str, dict]:
        """The versions the origin may serve: "v1" always, "v2" for a
        `changing` job; each with its size and digests."""
        found = {"v1": {"size": self.size, "sha256": self.sha256, "crc64nvme": self.crc64nvme}}
        if self.v2_size is not None:
            found["v2"] = {"size": self.v2_size, **self.v2}
        return found


# How often each source mode is drawn for tiny and small jobs (`changing`
# jobs are added on their own, below); the larger classes cycle through all
# of them but `changing`.
MODE_WEIGHTS = [("range", 0.45), ("norange", 0.1), ("nolength", 0.1), ("weak", 0.07), ("lastmod", 0.07),
                ("novalidator", 0.07), ("close", 0.07), ("ifrange-ignored", 0.07)]
CYCLE = ["range", "norange", "nolength", "weak", "lastmod", "novalidator", "close", "ifrange-ignored", "range"]


def draw_mode(rng: random.Random) -> str:
    roll = rng.random()
    for mode, weight in MODE_WEIGHTS:
        if roll < weight:
            return mode
        roll -= weight
    return "range"


def second_size(rng: random.Random, size: int) -> int:
    """Version 2's length: the same half of the time, else shorter or longer."""
    roll = rng.random()
    if roll < 0.5:
        return size
    if roll < 0.75:
        return max(1, int(size * rng.uniform(0.5, 0.95)))
    return int(size * rng.uniform(1.05, 1.5))


def plan_jobs(mode: str, minutes: int, seed: int, submit_window: float) -> list[Job]:
    """The job mix: sizes 0 B to 200 MiB, source modes, expected digests, and
    `changing` sources (never with an expected digest: either version is right)."""
    rng = random.Random(f"plan-{seed}")
    if mode == "short":
        count, medium, large, medium_range = 300, 10, 0, (6 * MiB, 24 * MiB)
        changing, changing_range = 12, (6 * MiB, 12 * MiB)
    else:
        count, medium, large, medium_range = max(300, 20 * minutes), 2 * minutes, 1 + minutes // 10, (6 * MiB, 40 * MiB)
        changing, changing_range = max(12, count // 25), (6 * MiB, 24 * MiB)
    drawn: list[tuple[str, int]] = []
    drawn += [("empty", 0)] * max(3, count * 3 // 100)
    drawn += [("boundary", 5 * MiB - 1), ("boundary", 5 * MiB), ("boundary", 5 * MiB + 1)]
    drawn += [("multipart", rng.randint(*medium_range)) for _ in range(medium)]
    if large:
        drawn += [("large", 200 * MiB)] + [("large", rng.randint(40 * MiB, 160 * MiB)) for _ in range(large - 1)]
    # Two thirds of the changing sources have several parts (the change comes
    # mid-copy); the others are small (only a retry sees it).
    changes = [("multipart", rng.randint(*changing_range)) if i % 3 else ("small", rng.randint(64 * 1024, 4 * MiB))
               for i in range(changing)]
    while len(drawn) + len(changes) < count:
        if rng.random() < 0.6:
            drawn.append(("tiny", int(math.exp(rng.uniform(0, math.log(64 * 1024))))))
        else:
            drawn.append(("small", int(math.exp(rng.uniform(math.log(64 * 1024), math.log(4.9 * MiB))))))
    mixed = [(cls, size, None) for cls, size in drawn] + [(cls, size, "changing") for cls, size in changes]
    rng.shuffle(mixed)
    # Every size class sees every source mode (from a seeded place in the cycle).
    per_class: Counter = Counter()
    offsets = {cls: rng.randrange(len(CYCLE)) for cls in ("multipart", "large", "boundary", "empty")}
    times = sorted(rng.uniform(0, submit_window) for _ in mixed)
    jobs = []
    for index, (cls, size, forced) in enumerate(mixed):
        if forced:
            mode_ = forced
        elif cls in offsets:
            mode_ = CYCLE[(offsets[cls] + per_class[cls]) % len(CYCLE)]
            per_class[cls] += 1
        else:
            mode_ = draw_mode(rng)
        job_id = f"chaos-{seed}-{index:05d}"
        job = Job(
            index=index,
            job_id=job_id,
            key=f"chaos/{index:05d}-{cls}-{mode_}-{size}",
            size=size,
            mode=mode_,
            cls=cls,
            file=f"src-{index:05d}.bin",
            submit_at=times[index],
        )
        roll = rng.random()
        if mode_ == "changing":
            job.v2_size = second_size(rng, size)
        elif roll < 0.3:
            job.expected["sha256"] = "?"
            if rng.random() < 0.5:
                job.expected["size"] = size
        elif roll < 0.35:
            job.expected["md5"] = "?"
        if rng.random() < 0.03:
            job.duplicate_at = job.submit_at + rng.uniform(1, 30)
        jobs.append(job)
    return jobs


def crc64nvme_b64(value: int) -> str:
    return base64.b64encode(value.to_bytes(8, "big")).decode()


def write_source(path: str, size: int, rng: random.Random) -> dict:
    """Writes `size` seeded bytes to `path`, dated an hour back (so that
    its Last-Modified is a strong validator from the start); returns its
    size and digests."""
    from awscrt import checksums

    sha, md5, crc = hashlib.sha256(), hashlib.md5(), 0
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = rng.randbytes(min(left, 8 * MiB))
            f.write(chunk)
            sha.update(chunk)
            md5.update(chunk)
            crc = checksums.crc64nvme(chunk, crc)
            left -= len(chunk)
    an_hour_ago = time.time() - 3600
    os.utime(path, (an_hour_ago, an_hour_ago))
    return {"size": size, "sha256": sha.hexdigest(), "md5": md5.hexdigest(), "crc64nvme": crc64nvme_b64(crc)}


def generate_sources(jobs: list[Job], www: str, seed: int) -> int:
    """Writes each job's source (seeded bytes) unless already there, and a
    `changing` job's second version; fills in the digests. Returns the bytes
    generated."""
    os.makedirs(www, exist_ok=True)
    manifest_path = os.path.join(www, "manifest.json")
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
        if manifest.get("seed") != seed:
            manifest = {"seed": seed, "files": {}}
    except (OSError, ValueError):
        manifest = {"seed": seed, "files": {}}
    wanted: dict[str, tuple[int, str]] = {}  # file -> (size, generator name)
    for job in jobs:
        wanted[job.file] = (job.size, f"data-{seed}-{job.index}")
        if job.v2_size is not None:
            wanted[job.file + ".v2"] = (job.v2_size, f"data-v2-{seed}-{job.index}")
    for name in os.listdir(www):
        if name.startswith("src-") and (name not in wanted or name not in manifest["files"]):
            os.remove(os.path.join(www, name))
    generated = 0
    for name, (size, generator) in wanted.items():
        path = os.path.join(www, name)
        known = manifest["files"].get(name)
        if not (known and known["size"] == size and os.path.isfile(path) and os.path.getsize(path) == size):
            known = manifest["files"][name] = write_source(path, size, random.Random(generator))
            generated += size
    for job in jobs:
        known = manifest["files"][job.file]
        job.sha256, job.md5, job.crc64nvme = known["sha256"], known["md5"], known["crc64nvme"]
        if job.v2_size is not None:
            v2 = manifest["files"][job.file + ".v2"]
            job.v2 = {"sha256": v2["sha256"], "crc64nvme": v2["crc64nvme"]}
        if "sha256" in job.expected:
            job.expected["sha256"] = job.sha256
        if "md5" in job.expected:
            job.expected["md5"] = job.md5
    manifest["files"] = {k: v for k, v in manifest["files"].items() if k in wanted}
    with open(manifest_path, "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    return generated


@dataclass
class BadMessage:
    """A message a worker must reject: its record `rejected` with `kind` (under
    its job_id, or its MessageId when it names none), the message in the DLQ."""

    label: str
    body: str
    kind: str
    job_id: str | None


def bad_messages(mode: str, minutes: int, seed: int, origin: str) -> list[BadMessage]:
    """The poison messages: five of the shape (not JSON, a missing key, an
    unknown field, version 2, an `ftp:` URL) and, seeded, messages past the
    limits of docs/jobs.md: a URL over 8 KiB, a ~200 KB URL (the message past
    64 KiB), a `Host` header, too many headers. The long soak sends the limit
    ones once per ten minutes. Their URLs name real sources: one wrongly
    accepted would store an object (a stray)."""
    rng = random.Random(f"bad-{seed}")
    bucket = "ferry-chaos"
    found = [
        BadMessage("not_json", "this is not JSON {", "malformed_json", None),
        BadMessage("missing_key", json.dumps({"job_id": f"poison-{seed}-missing", "url": "http://127.0.0.1:1/x", "bucket": bucket}),
                   "invalid_job", f"poison-{seed}-missing"),
        BadMessage("unknown_field", json.dumps({"job_id": f"poison-{seed}-unknown", "url": "http://127.0.0.1:1/x", "bucket": bucket,
                                                "key": "p/u", "expect": {}}), "invalid_job", f"poison-{seed}-unknown"),
        BadMessage("bad_version", json.dumps({"job_id": f"poison-{seed}-version", "url": "http://127.0.0.1:1/x", "bucket": bucket,
                                              "key": "p/v", "version": 2}), "unsupported_version", f"poison-{seed}-version"),
        BadMessage("bad_url", json.dumps({"job_id": f"poison-{seed}-url", "url": "ftp://127.0.0.1/x", "bucket": bucket, "key": "p/f"}),
                   "invalid_url", f"poison-{seed}-url"),
    ]
    rounds = 1 if mode == "short" else max(1, minutes // 10)
    for n in range(rounds):
        def job(kind: str, **extra) -> tuple[str, dict]:
            job_id = f"poison-{seed}-{kind}-{n}"
            return job_id, {"job_id": job_id, "url": f"{origin}/range/{job_id}/src-00000.bin", "bucket": bucket,
                            "key": f"p/{kind}-{n}", **extra}

        job_id, body = job("url-long")
        body["url"] += "?pad=" + "u" * rng.randint(8 * 1024, 12 * 1024)
        found.append(BadMessage(f"url_too_long#{n}", json.dumps(body), "url_too_long", job_id))
        job_id, body = job("huge")
        body["url"] += "?pad=" + "h" * rng.randint(195_000, 205_000)
        found.append(BadMessage(f"message_too_large#{n}", json.dumps(body), "message_too_large", job_id))
        host = rng.choice(["Host", "host", "HOST"])
        job_id, body = job("host", headers={host: "other.internal", "X-Api-Key": "k"})
        found.append(BadMessage(f"host_header#{n}", json.dumps(body), "header_not_allowed", job_id))
        many = rng.randint(33, 64)
        job_id, body = job("headers", headers={f"X-Chaos-{i}": str(i) for i in range(many)})
        found.append(BadMessage(f"too_many_headers#{n}", json.dumps(body), "too_many_headers", job_id))
    return found


# --------------------------------------------------------------- the workers


_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: a worker never outlives the driver, however it ends.
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)
    os.setpgid(0, 0)  # the terminal's Ctrl-C reaches the driver, which stops them


class Fleet:
    """The worker processes this driver started, and only those. A killed
    worker's slot gets a new process at once; the old one is watched until
    it is gone (a SIGTERMed one must exit 0 within `exit_within` seconds)."""

    def __init__(self, ferry: str, env: dict, logdir: str, count: int, exit_within: float):
        self.ferry, self.env, self.logdir, self.exit_within = ferry, env, logdir, exit_within
        os.makedirs(logdir, exist_ok=True)
        for name in os.listdir(logdir):
            if name.endswith(".log"):
                os.remove(os.path.join(logdir, name))
        self.slots: list[subprocess.Popen | None] = [None] * count
        self.incarnation = [0] * count
        self.dying: list[tuple[subprocess.Popen, str, float]] = []  # (process, signal, when)
        self.kills: Counter = Counter()
        self.events: list[dict] = []
        self.crashes: list[dict] = []
        self.unclean: list[dict] = []
        self.started = 0

    def start(self, slot: int) -> None:
        self.incarnation[slot] += 1
        worker_id = f"chaos-w{slot}-{self.incarnation[slot]}"
        env = dict(self.env, FERRY_WORKER_ID=worker_id)
        with open(os.path.join(self.logdir, f"{worker_id}.log"), "wb") as logfile:
            proc = subprocess.Popen(
                [self.ferry, "worker"], env=env, stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile,
                preexec_fn=_die_with_parent,
            )
        proc.worker_id = worker_id  # type: ignore[attr-defined]
        self.slots[slot] = proc
        self.started += 1

    def start_all(self) -> None:
        for slot in range(len(self.slots)):
            self.start(slot)

    def kill(self, slot: int, sig: signal.Signals, t: float) -> None:
        """Signals the worker in `slot` and starts its replacement."""
        proc = self.slots[slot]
        if proc is None or proc.poll() is not None:
            return
        name = "SIGKILL" if sig == signal.SIGKILL else "SIGTERM"
        proc.send_signal(sig)
        self.dying.append((proc, name, time.monotonic()))
        self.kills[name] += 1
        self.events.append({"t": round(t, 1), "signal": name, "worker": proc.worker_id})  # type: ignore[attr-defined]
        log(f"{name} {proc.worker_id} (pid {proc.pid})")  # type: ignore[attr-defined]
        self.start(slot)

    def tend(self, t: float, restart: bool = True) -> None:
        """Restarts workers that exited by themselves (a crash); checks that
        SIGTERMed ones exit 0 in time, and kills those that do not."""
        for slot, proc in enumerate(self.slots):
            if proc is None or proc.poll() is None:
                continue
            self.crashes.append({"worker": proc.worker_id, "exit": proc.returncode, "t": round(t, 1)})  # type: ignore[attr-defined]
            log(f"worker {proc.worker_id} exited by itself with {proc.returncode}")  # type: ignore[attr-defined]
            self.slots[slot] = None
            if len(self.crashes) > 10 * len(self.slots):
                raise SystemExit(f"chaos: workers keep exiting by themselves ({len(self.crashes)} times); "
                                 f"see {self.logdir}")
            if restart:
                self.start(slot)
        still = []
        for proc, name, when in self.dying:
            code = proc.poll()
            if code is None:
                if name == "SIGTERM" and time.monotonic() - when > self.exit_within:
                    self.unclean.append({"worker": proc.worker_id, "t": round(t, 1),  # type: ignore[attr-defined]
                                         "why": f"still running {self.exit_within:.0f} s after SIGTERM; SIGKILLed"})
                    proc.kill()
                    proc.wait()
                else:
                    still.append((proc, name, when))
            elif name == "SIGTERM" and code != 0:
                self.unclean.append({"worker": proc.worker_id, "t": round(t, 1), "why": f"exit {code} after SIGTERM"})  # type: ignore[attr-defined]
        self.dying = still

    def live(self) -> list[int]:
        return [i for i, p in enumerate(self.slots) if p is not None and p.poll() is None]

    def stop_all(self, t: float) -> None:
        """SIGTERM to every worker; waits for all of them to be gone."""
        self.tend(t, restart=False)
        for slot, proc in enumerate(self.slots):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                self.dying.append((proc, "SIGTERM", time.monotonic()))
                self.slots[slot] = None
        deadline = time.monotonic() + self.exit_within + 5
        while self.dying and time.monotonic() < deadline:
            self.tend(t, restart=False)
            time.sleep(0.2)
        self.kill_now()

    def kill_now(self) -> None:
        for proc in [p for p in self.slots if p is not None] + [d[0] for d in self.dying]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.dying = []


# ------------------------------------------------------------- the AWS side


def clients():
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 10, "mode": "standard"}, connect_timeout=5, read_timeout=120)
    return (boto3.client("s3", config=config), boto3.client("sqs", config=config), boto3.client("dynamodb", config=config))


def create_resources(s3, sqs, ddb, bucket: str, queue: str, table: str, max_receive: int) -> tuple[str, str]:
    s3.create_bucket(Bucket=bucket)
    dlq_url = sqs.create_queue(QueueName=f"{queue}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    # As deploy/cloudformation/ferry.yaml: visibility 60 s, maxReceiveCount 10.
    queue_url = sqs.create_queue(
        QueueName=queue,
        Attributes={
            "VisibilityTimeout": "60",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive)}),
        },
    )["QueueUrl"]
    ddb.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return queue_url, dlq_url


def attr(item: dict, name: str):
    value = item.get(name)
    if value is None:
        return None
    if "S" in value:
        return value["S"]
    if "N" in value:
        number = value["N"]
        return int(number) if re.fullmatch(r"-?\d+", number) else float(number)
    if "BOOL" in value:
        return value["BOOL"]
    return value


def scan_table(ddb, table: str) -> dict[str, dict]:
    items: dict[str, dict] = {}
    kwargs = {"TableName": table}
    for _ in range(10_000):
        page = ddb.scan(**kwargs)
        for item in page["Items"]:
            items[item["job_id"]["S"]] = item
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return items


def drain_queue(sqs, url: str) -> list[dict]:
    """Every message now receivable (workers stopped), hidden for 10 min."""
    messages: list[dict] = []
    empty = 0
    for _ in range(2000):
        got = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=600, WaitTimeSeconds=1,
            AttributeNames=["ApproximateReceiveCount"], MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not got:
            empty += 1
            if empty >= 2:
                break
            continue
        empty = 0
        messages += got
    return messages


def list_uploads(s3, bucket: str) -> list[dict]:
    uploads: list[dict] = []
    kwargs = {"Bucket": bucket}
    for _ in range(10_000):
        page = s3.list_multipart_uploads(**kwargs)
        uploads += page.get("Uploads", [])
        if not page.get("IsTruncated"):
            break
        kwargs["KeyMarker"] = page.get("NextKeyMarker")
        kwargs["UploadIdMarker"] = page.get("NextUploadIdMarker")
    return uploads


def queue_counts(sqs, url: str) -> dict:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]
    got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return {name: int(got.get(name, 0)) for name in names}


def http_call(method: str, url: str, body: bytes | None = None, timeout: float = 30) -> bytes:
    request = urllib.request.Request(url, data=body, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


# ------------------------------------------------------------------- faults


def fault_rules(chaos_secs: float, s3_storm: tuple[float, float], ddb_storm: tuple[float, float], storm_p: float) -> list[dict]:
    """About 5 % of every AWS call faulted, across every kind, for the chaos
    phase; plus one S3 SlowDown storm and one DynamoDB throttling storm."""
    until = chaos_secs

    def rule(id_, ops, fault, p=None, **extra):
        r = {"id": id_, "ops": ops, "fault": fault, "until_secs": until}
        if p is not None:
            r["probability"] = p
        r.update(extra)
        return r

    return [
        rule("latency", ["*"], {"kind": "delay", "ms": 100}, 0.05),
        rule("s3-slowdown-storm", ["s3:*"], {"kind": "throttle"}, storm_p, from_secs=s3_storm[0], until_secs=s3_storm[1]),
        rule("dynamodb-throttle-storm", ["dynamodb:*"], {"kind": "throttle"}, storm_p, from_secs=ddb_storm[0], until_secs=ddb_storm[1]),
        rule("complete-error200-applied", ["s3:CompleteMultipartUpload"], {"kind": "error200", "forward": True}, 0.08),
        rule("complete-error200", ["s3:CompleteMultipartUpload"], {"kind": "error200", "forward": False}, 0.05),
        rule("lost", ["*"], {"kind": "lost"}, 0.01),
        rule("error", ["*"], {"kind": "error"}, 0.012),
        rule("error-503", ["*"], {"kind": "error", "status": 503, "code": "ServiceUnavailable"}, 0.003),
        rule("throttle", ["*"], {"kind": "throttle"}, 0.01),
        rule("reset", ["*"], {"kind": "reset"}, 0.01),
        rule("hang", ["*"], {"kind": "hang", "ms": 20000}, 0.003),
    ]


# ------------------------------------------------------------------ the run


class Interrupted(Exception):
    pass


def _interrupt(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def run(args) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    began = time.monotonic()
    rng = random.Random(f"driver-{args.seed}")
    short = args.mode == "short"
    if short:
        chaos_secs, drain_secs, storm_secs = 95.0, 45.0, 20.0
        submit_window = 45.0
        s3_storm, ddb_storm = (15.0, 15.0 + storm_secs), (50.0, 50.0 + storm_secs)
    else:
        # `--minutes N` means N minutes of faults; the drain comes on top.
        chaos_secs = max(120.0, args.minutes * 60.0)
        # The drain outlasts the longest documented wait: a message deferred
        # for 5 minutes because its job's lease looked alive (docs/jobs.md).
        drain_secs, storm_secs = 400.0, min(60.0, chaos_secs / 4)
        submit_window = 0.8 * chaos_secs
        s3_storm = (0.25 * chaos_secs, 0.25 * chaos_secs + storm_secs)
        ddb_storm = (0.55 * chaos_secs, 0.55 * chaos_secs + storm_secs)
    jobs = plan_jobs(args.mode, args.minutes, args.seed, submit_window)
    poison = bad_messages(args.mode, args.minutes, args.seed, args.origin)
    generated = generate_sources(jobs, args.www, args.seed)
    total_bytes = sum(j.size for j in jobs)
    log(f"{len(jobs)} jobs, {total_bytes / MiB:.0f} MiB of sources ({generated / MiB:.0f} MiB generated now)")

    s3, sqs, ddb = clients()
    bucket, table = "ferry-chaos", "ferry-chaos"
    queue_url, dlq_url = create_resources(s3, sqs, ddb, bucket, "ferry-chaos", table, args.max_receive_count)
    worker_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "AWS_ENDPOINT_URL": args.proxy,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "FERRY_QUEUE_URL": queue_url,
        "FERRY_TABLE": table,
        "FERRY_DLQ_URL": dlq_url,
        "FERRY_LEASE_SECS": "10",
        "FERRY_HEARTBEAT_SECS": "2",
        "FERRY_POLL_WAIT_SECS": "1",
        "FERRY_RETRY_BASE_DELAY_SECS": "2",
        "FERRY_PART_SIZE_MIB": "5",
        "FERRY_MEMORY_BUDGET_MIB": "128",
        "FERRY_MAX_CONCURRENT_JOBS": "8",
        "FERRY_SOURCE_ALLOW_CIDRS": "127.0.0.0/8",
        "FERRY_METRICS_ADDR": "off",
        "FERRY_LOG_FORMAT": "json",
        "FERRY_SHUTDOWN_GRACE_SECS": "3",
        "FERRY_AWS_ATTEMPT_TIMEOUT_SECS": "5",
        "FERRY_AWS_OPERATION_TIMEOUT_SECS": "30",
        "FERRY_S3_ATTEMPT_TIMEOUT_SECS": "15",
        "RUST_LOG": "info",
    }
    # A SIGTERMed worker must be gone within its grace plus one AWS call
    # (its release) at the longest: 3 s + 30 s + 5 s of slack.
    fleet = Fleet(args.ferry, worker_env, args.logdir, args.workers, exit_within=3 + 30 + 5)
    report: dict = {"seed": args.seed, "mode": args.mode, "minutes": None if short else args.minutes}
    timings: dict = {}
    try:
        fleet.start_all()
        timings["setup_secs"] = round(time.monotonic() - began, 1)
        rules = fault_rules(chaos_secs, s3_storm, ddb_storm, args.storm_probability)
        http_call("PUT", f"{args.proxy}/__proxy/rules", json.dumps(rules).encode())
        t0 = time.monotonic()
        report["chaos_window_unix_ms"] = [int(time.time() * 1000), int((time.time() + chaos_secs) * 1000)]
        log(f"chaos for {chaos_secs:.0f} s: S3 storm {s3_storm[0]:.0f}-{s3_storm[1]:.0f} s, "
            f"DynamoDB storm {ddb_storm[0]:.0f}-{ddb_storm[1]:.0f} s, a kill every ~20 s")
        sends: list[tuple[float, str, str]] = []  # (at, label, body)
        for job in jobs:
            sends.append((job.submit_at, job.job_id, job.message(args.origin, bucket)))
            if job.duplicate_at is not None:
                sends.append((job.duplicate_at, job.job_id + " (duplicate)", job.message(args.origin, bucket)))
        for bad in poison:
            sends.append((rng.uniform(0, submit_window / 2), "poison:" + bad.label, bad.body))
        sends.sort(key=lambda s: s[0])
        poison_ids: dict[str, str] = {}  # label -> SQS MessageId
        poison_sent: dict[str, float] = {}  # label -> when sent (unix seconds)
        sent = 0
        next_kill = rng.uniform(10, 20)
        kill_kinds = [signal.SIGKILL, signal.SIGTERM]
        rng.shuffle(kill_kinds)  # alternate, starting at random: both kinds in every run
        next_progress = 10.0
        ids = [j.job_id for j in jobs]
        statuses: Counter = Counter()
        while True:
            now = time.monotonic() - t0
            if now >= chaos_secs:
                break
            due = []
            while sent < len(sends) and sends[sent][0] <= now:
                due.append(sends[sent])
                sent += 1
            for batch in batches(due):
                answer = sqs.send_message_batch(
                    QueueUrl=queue_url,
                    Entries=[{"Id": str(i), "MessageBody": body} for i, (_, _, body) in enumerate(batch)],
                )
                if answer.get("Failed"):
                    raise RuntimeError(f"SendMessageBatch failed: {answer['Failed']}")
                for ok in answer["Successful"]:
                    label = batch[int(ok["Id"])][1]
                    if label.startswith("poison:"):
                        poison_ids[label[len("poison:"):]] = ok["MessageId"]
                        poison_sent[label[len("poison:"):]] = time.time()
            if now >= next_kill and now < chaos_secs - 10:
                live = fleet.live()
                if live:
                    sig = kill_kinds[sum(fleet.kills.values()) % 2]
                    fleet.kill(rng.choice(live), sig, now)
                next_kill = now + rng.uniform(15, 25)
            fleet.tend(now)
            if now >= next_progress:
                statuses = job_statuses(ddb, table, ids)
                log(f"t={now:.0f}s sent {sent}/{len(sends)} " + " ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
                next_progress = now + (10 if short else 30)
            time.sleep(0.25)
        timings["chaos_secs"] = round(time.monotonic() - t0, 1)
        # Stop the faults (AWS and origin), then let everything drain.
        http_call("DELETE", f"{args.proxy}/__proxy/rules")
        http_call("POST", f"{args.origin}/__origin/faults?on=0")
        log(f"faults stopped; draining (at most {drain_secs:.0f} s)")
        drain_start = time.monotonic()
        while time.monotonic() - drain_start < drain_secs:
            fleet.tend(time.monotonic() - t0)
            statuses = job_statuses(ddb, table, ids)
            if sum(statuses[s] for s in FINAL) == len(ids):
                break
            time.sleep(2)
        timings["drain_secs"] = round(time.monotonic() - drain_start, 1)
        log("drained: " + " ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
        fleet.stop_all(time.monotonic() - t0)
    except BaseException:
        fleet.kill_now()
        raise

    check_start = time.monotonic()
    uploads_before_gc = Counter(f"{bucket}/{u['Key']}" for u in list_uploads(s3, bucket))
    gc = subprocess.run(
        [args.ferry, "gc", "--bucket", bucket, "--older-than", "0s", "--table", table],
        env=dict(os.environ, FERRY_LOG_FORMAT="json", RUST_LOG="warn"),
        capture_output=True, text=True, timeout=300,
    )
    gc_summary = (gc.stdout.strip().splitlines() or [""])[-1]
    log(f"ferry gc: exit {gc.returncode}: {gc_summary}")
    report.update(check(args, s3, sqs, ddb, bucket, table, queue_url, dlq_url, jobs, poison, poison_ids, fleet, gc,
                        uploads_before_gc, report, poison_sent))
    timings["check_secs"] = round(time.monotonic() - check_start, 1)
    timings["total_secs"] = round(time.monotonic() - began, 1)
    report["timings"] = timings
    report["storms"] = {"s3_slowdown": list(s3_storm), "dynamodb_throttle": list(ddb_storm), "probability": args.storm_probability}
    with open(args.report, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print_report(report, args.report)
    return 0 if report["passed"] else 1


def batches(sends: list[tuple[float, str, str]]) -> list[list[tuple[float, str, str]]]:
    """`sends` in SendMessageBatch-sized groups: at most 10 messages and
    250,000 bytes of bodies (SQS takes 256 KiB a batch; a bad message alone
    is ~200 KB)."""
    groups: list[list[tuple[float, str, str]]] = []
    size = 0
    for send in sends:
        length = len(send[2].encode())
        if not groups or len(groups[-1]) == 10 or size + length > 250_000:
            groups.append([])
            size = 0
        groups[-1].append(send)
        size += length
    return groups


def job_statuses(ddb, table: str, ids: list[str]) -> Counter:
    found: Counter = Counter()
    seen = set()
    for start in range(0, len(ids), 100):
        keys = [{"job_id": {"S": i}} for i in ids[start : start + 100]]
        request = {table: {"Keys": keys, "ProjectionExpression": "job_id, #s", "ExpressionAttributeNames": {"#s": "status"}}}
        for _ in range(20):
            answer = ddb.batch_get_item(RequestItems=request)
            for item in answer["Responses"].get(table, []):
                seen.add(item["job_id"]["S"])
                # moto applies an update attribute by attribute: a record being
                # claimed can be read before its status is there.
                found[attr(item, "status") or "running"] += 1
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                break
    found["unrecorded"] = len(ids) - len(seen)
    if not found["unrecorded"]:
        del found["unrecorded"]
    return found


# --------------------------------------------------------------- the checker


MOTO_LINE = re.compile(r'"(?:\x1b\[[0-9;]*m)*([A-Z]+) (\S+) HTTP/[0-9.]+(?:\x1b\[[0-9;]*m)*" (\d{3}) ')


def read_moto_writes(path: str, bucket: str) -> dict[str, dict]:
    """Per `bucket/key`: PutObjects moto answered 200, and the distinct
    upload ids it completed (200), from its request log (every request that
    reached it, whoever sent it; only workers write objects)."""
    found: dict[str, dict] = defaultdict(lambda: {"puts": 0, "completed_uploads": set()})
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            match = MOTO_LINE.search(line)
            if not match or match.group(3) != "200":
                continue
            method, target = match.group(1), match.group(2)
            path_, _, query = target.partition("?")
            name = urllib.parse.unquote(path_.lstrip("/"))
            if not name.startswith(bucket + "/"):
                continue
            params = urllib.parse.parse_qs(query, keep_blank_values=True)
            if method == "PUT" and "partNumber" not in params and "uploadId" not in params:
                found[name]["puts"] += 1
            elif method == "POST" and "uploadId" in params:
                found[name]["completed_uploads"].add(params["uploadId"][0])
    return found


def read_proxy_log(proxy: str) -> list[dict]:
    text = http_call("GET", f"{proxy}/__proxy/log?since=0", timeout=120).decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def worker_warnings(logdir: str, wanted: set[str], per_job: int = 8) -> dict[str, list[str]]:
    """The last WARN/ERROR, claim and deferral lines each wanted job logged,
    in time order, for the evidence."""
    found: dict[str, list[str]] = defaultdict(list)
    if not wanted:
        return found
    for name in sorted(os.listdir(logdir)):
        with open(os.path.join(logdir, name), encoding="utf-8", errors="replace") as f:
            for line in f:
                if '"WARN"' not in line and '"ERROR"' not in line and "deferred" not in line and '"claimed"' not in line:
                    continue
                match = re.search(r'"job_id":"([^"]+)"', line)
                if match and match.group(1) in wanted:
                    found[match.group(1)].append(f"[{name[:-4]}] {line.strip()[:600]}")
    stamp = re.compile(r'"timestamp":"([^"]+)"')

    def when(line: str) -> str:
        m = stamp.search(line)
        return m.group(1) if m else ""

    return {job: sorted(lines, key=when)[-per_job:] for job, lines in found.items()}


def check(args, s3, sqs, ddb, bucket, table, queue_url, dlq_url, jobs, poison, poison_ids, fleet, gc,
          uploads_before_gc: Counter, report_so_far: dict, poison_sent: dict[str, float]) -> dict:
    records = scan_table(ddb, table)
    proxy_log = read_proxy_log(args.proxy)
    stats = json.loads(http_call("GET", f"{args.proxy}/__proxy/stats"))
    origin_stats = json.loads(http_call("GET", f"{args.origin}/__origin/stats"))
    main_left = drain_queue(sqs, queue_url)
    main_counts = queue_counts(sqs, queue_url)
    dlq_left = drain_queue(sqs, dlq_url)
    by_key = {job.key: job for job in jobs}
    by_id = {job.job_id: job for job in jobs}

    # Faults injected, by kind (the proxy's own count), and storms.
    faults: Counter = Counter()
    requests = 0
    for op, counts in stats.items():
        requests += counts.get("requests", 0)
        for kind, n in counts.items():
            if kind != "requests":
                faults[kind] += n
    storm_hits: Counter = Counter()
    window = report_so_far.get("chaos_window_unix_ms") or [0, 1 << 62]
    in_window = {"requests": 0, "faults": 0, "storm": 0}
    for entry in proxy_log:
        stormed = False
        for rule in entry.get("rules") or []:
            if rule.endswith("-storm") and entry.get("fault"):
                storm_hits[rule] += 1
                stormed = True
        if window[0] <= entry.get("unix_ms", 0) < window[1]:
            in_window["requests"] += 1
            in_window["faults"] += 1 if entry.get("fault") else 0
            in_window["storm"] += 1 if stormed else 0

    # Writes per S3 target: PutObjects applied (forwarded, upstream 200), and
    # multipart uploads completed. The log does not name upload ids, but on
    # moto (as on S3) every upload ends one way: completed, aborted (204) or
    # still open; so the completed ones are those created (200) minus those
    # aborted minus those open before gc. A Complete retried for an upload
    # already completed answers 200 again and is no second write.
    s3_entries: dict[str, list[dict]] = defaultdict(list)
    applied: dict[str, Counter] = defaultdict(Counter)
    completed_ids: dict[str, set] = defaultdict(set)
    for entry in proxy_log:
        if entry["op"].startswith("s3:") and entry.get("target"):
            s3_entries[entry["target"]].append(entry)
            if entry.get("forwarded") and entry.get("upstream_status") in (200, 204):
                applied[entry["target"]][entry["op"]] += 1
                if entry["op"] == "s3:CompleteMultipartUpload" and entry.get("upload_id"):
                    completed_ids[entry["target"]].add(entry["upload_id"])

    moto_writes = read_moto_writes(args.moto_log, bucket)

    def writes(target: str) -> dict:
        """Writes of the object at `target`: from moto's request log, which
        names the upload ids (exact), and from the proxy's log (its view)."""
        ops = applied.get(target, Counter())
        open_before_gc = uploads_before_gc.get(target, 0)
        if len(completed_ids.get(target, ())) == ops["s3:CompleteMultipartUpload"] or completed_ids.get(target):
            completed = len(completed_ids.get(target, ()))  # the log names upload ids
        else:
            completed = ops["s3:CreateMultipartUpload"] - ops["s3:AbortMultipartUpload"] - open_before_gc
        at_moto = moto_writes.get(target, {"puts": 0, "completed_uploads": set()})
        return {"writes": at_moto["puts"] + len(at_moto["completed_uploads"]),
                "moto_puts": at_moto["puts"], "moto_completed_uploads": len(at_moto["completed_uploads"]),
                "proxy_writes": ops["s3:PutObject"] + completed, "proxy_puts": ops["s3:PutObject"],
                "proxy_uploads_created": ops["s3:CreateMultipartUpload"],
                "proxy_uploads_aborted": ops["s3:AbortMultipartUpload"],
                "uploads_open_before_gc": open_before_gc,
                "proxy_completes_200": ops["s3:CompleteMultipartUpload"]}

    def s3_trail(key: str, limit: int = 40) -> list[str]:
        trail = []
        for e in s3_entries.get(f"{bucket}/{key}", []):
            if e["op"] == "s3:UploadPart" and not e.get("fault"):
                continue
            upload = f" upload={e['upload_id'][:12]}…" if e.get("upload_id") else ""
            trail.append(f"#{e['seq']} t={e['t_ms'] / 1000:.1f}s {e['op']}{upload} fault={e.get('fault')} "
                         f"forwarded={e.get('forwarded')} upstream={e.get('upstream_status')} answered={e.get('answered')}")
        parts = sum(1 for e in s3_entries.get(f"{bucket}/{key}", []) if e["op"] == "s3:UploadPart" and not e.get("fault"))
        return trail[-limit:] + [f"({parts} unfaulted UploadPart requests not shown)"]

    main_by_job: Counter = Counter()
    for m in main_left:
        try:
            main_by_job[json.loads(m["Body"]).get("job_id")] += 1
        except (ValueError, AttributeError):
            pass
    poison_bodies = {bad.body: bad.label for bad in poison}

    lost, stuck, corrupt, wrongly_failed, doubled, unlogged, over_bound = [], [], [], [], [], [], []
    deferred = []  # short soak only: see below
    proxy_gaps = []  # objects whose writes the proxy's log does not account for (not a ferry invariant)
    checksum_reported = checksum_missing = 0
    integrity_by_mode: dict[str, Counter] = defaultdict(Counter)
    integrity_wrong: list[dict] = []
    changing_rows: list[dict] = []
    source_changed = error_kinds_logged(args.logdir, "source_changed")
    refetch_total = 0
    refetch_max = (0, None)
    attempts_hist: Counter = Counter()
    resumes = restarts = 0
    succeeded_keys = set()
    for job in jobs:
        record = records.get(job.job_id)
        status = attr(record, "status") if record else None
        if status not in FINAL:
            entry = {"job": job.job_id, "status": status, "key": job.key, "size": job.size, "mode": job.mode}
            if record:
                entry.update({k: attr(record, k) for k in ("attempts", "error_kind", "error", "resumes", "restarts", "upload_id",
                                                           "lease_owner", "lease_expires", "updated_at") if k in record})
            in_dlq = sum(1 for m in dlq_left if _job_id_of(m["Body"]) == job.job_id)
            if main_by_job[job.job_id]:
                entry["message"] = "in the main queue"
                stuck.append(entry)
            elif in_dlq:
                entry["message"] = "moved to the DLQ (redrive: maxReceiveCount)"
                lost.append(entry)
            elif main_counts["ApproximateNumberOfMessagesNotVisible"] or main_counts["ApproximateNumberOfMessagesDelayed"]:
                entry["message"] = "not seen, but the main queue still hides messages"
                killed = {e["worker"] for e in fleet.events if e.get("signal") == "SIGKILL"}
                if (args.mode == "short" and status == "running" and entry.get("lease_owner") in killed
                        and (entry.get("lease_expires") or 0) < time.time()):
                    # Its owner was SIGKILLed and its message, received meanwhile by
                    # another worker while the lease still looked alive, is deferred
                    # for the documented 5 minutes (docs/jobs.md): longer than the
                    # short soak's drain; the long soak's 400 s drain covers it.
                    entry["message"] += " (owner killed: the documented 5-minute deferral)"
                    deferred.append(entry)
                else:
                    stuck.append(entry)
            else:
                entry["message"] = "no message anywhere"
                lost.append(entry)
            continue
        attempts = attr(record, "attempts") or 0
        attempts_hist[attempts] += 1
        resumes += attr(record, "resumes") or 0
        restarts += attr(record, "restarts") or 0
        if status != "succeeded":
            wrongly_failed.append({"job": job.job_id, "status": status, "error_kind": attr(record, "error_kind"),
                                   "error": attr(record, "error"), "attempts": attempts, "key": job.key,
                                   "size": job.size, "mode": job.mode, "expected": list(job.expected)})
            continue
        succeeded_keys.add(job.key)
        problems, version, reported = verify_object(s3, bucket, job, record)
        if reported is not None:
            checksum_reported += reported
            checksum_missing += not reported
        if problems:
            corrupt.append({"job": job.job_id, "key": job.key, "mode": job.mode, "problems": problems,
                            "attempts": attempts, "s3_trail": s3_trail(job.key)})
        integrity = attr(record, "source_integrity")
        integrity_by_mode[job.mode][str(integrity)] += 1
        allowed = INTEGRITY[job.mode] | ({"one_answer"} if job.size == 0 and job.mode != "close" else set())
        if integrity not in allowed:
            integrity_wrong.append({"job": job.job_id, "mode": job.mode, "size": job.size, "source_integrity": integrity,
                                    "allowed": sorted(allowed), "attempts": attempts, "resumes": attr(record, "resumes")})
        if job.mode == "changing":
            plan = change_plan(args.seed, job.job_id, job.size)
            changing_rows.append({"job": job.job_id, "stored": version, "attempts": attempts,
                                  "size": job.size, "v2_size": job.v2_size, "validator": plan.validator,
                                  "if_range": "honoured" if plan.honours_if_range else "ignored",
                                  "changed": job.job_id in origin_stats.get("changed_at", {}),
                                  "source_changed_attempts": source_changed.get(job.job_id, 0),
                                  "source_integrity": integrity})
        written = writes(f"{bucket}/{job.key}")
        if written["writes"] > 1:
            doubled.append({"job": job.job_id, "key": job.key, "size": job.size, "mode": job.mode, **written,
                            "attempts": attempts, "resumes": attr(record, "resumes"),
                            "restarts": attr(record, "restarts"), "s3_trail": s3_trail(job.key)})
        elif written["writes"] < 1:
            unlogged.append({"job": job.job_id, "key": job.key, **written, "s3_trail": s3_trail(job.key)})
        if written["writes"] != written["proxy_writes"]:
            proxy_gaps.append({"job": job.job_id, "key": job.key, **written, "s3_trail": s3_trail(job.key)})
        # Re-fetched bytes: bounded by what interruptions and retries explain.
        refetched = attr(record, "bytes_refetched") or 0
        refetch_total += refetched
        if refetched > refetch_max[0]:
            refetch_max = (refetched, job.job_id)
        # A part is the whole object for a source read in one answer; a
        # changing source's bytes are bounded by its longer version.
        size = max(v["size"] for v in job.versions().values())
        part = size if job.mode not in PINNED_MODES else max(attr(record, "part_size") or 0, PART)
        part = min(part, size)
        retries = attr(record, "retries") or 0
        digest = 2 if ("sha256" in job.expected or "md5" in job.expected) else 1
        bound = max(0, attempts - 1) * (size + 2 * part) * digest + (retries + ORIGIN_FAULT_CAP) * part
        if refetched > bound:
            over_bound.append({"job": job.job_id, "size": job.size, "mode": job.mode, "bytes_refetched": refetched,
                               "bound": bound, "attempts": attempts, "retries": retries,
                               "bytes_fetched": attr(record, "bytes_fetched"), "resumes": attr(record, "resumes")})

    # Objects no succeeded job explains.
    stray = []
    kwargs = {"Bucket": bucket}
    for _ in range(10_000):
        page = s3.list_objects_v2(**kwargs)
        for obj in page.get("Contents", []):
            if obj["Key"] not in succeeded_keys:
                job = by_key.get(obj["Key"])
                stray.append({"key": obj["Key"], "size": obj["Size"], "job": job.job_id if job else None,
                              "job_status": attr(records.get(job.job_id, {}), "status") if job else None})
        if not page.get("IsTruncated"):
            break
        kwargs["ContinuationToken"] = page["NextContinuationToken"]

    # Open multipart uploads after gc.
    open_uploads = []
    for upload in list_uploads(s3, bucket):
        job = by_key.get(upload["Key"])
        marker = records.get(f"upload#{upload['UploadId']}")
        creates = [e for e in s3_entries.get(f"{bucket}/{upload['Key']}", []) if e["op"] == "s3:CreateMultipartUpload"]
        open_uploads.append({
            "key": upload["Key"], "upload_id": upload["UploadId"],
            "job": job.job_id if job else None,
            "job_status": attr(records.get(job.job_id, {}), "status") if job else None,
            "upload_marker": bool(marker),
            "creates": [f"#{e['seq']} t={e['t_ms'] / 1000:.1f}s fault={e.get('fault')} upstream={e.get('upstream_status')} answered={e.get('answered')}" for e in creates],
        })

    # The DLQ holds poison only; every poison message was dead-lettered and rejected.
    dlq_non_poison, poison_seen = [], Counter()
    for m in dlq_left:
        label = poison_bodies.get(m["Body"])
        if label:
            poison_seen[label] += 1
        else:
            dlq_non_poison.append({"job": _job_id_of(m["Body"]), "body": m["Body"][:200],
                                   "receives": m.get("Attributes", {}).get("ApproximateReceiveCount"),
                                   "rejection": (m.get("MessageAttributes", {}).get("ferry_rejection") or {}).get("StringValue")})
    poison_unhandled, rejections = check_bad_messages(poison, poison_ids, poison_sent, records, poison_seen, main_left)

    failures_by_kind = Counter(f["error_kind"] for f in wrongly_failed)
    evidence_jobs = {e["job"] for group in (lost, stuck, wrongly_failed, doubled, corrupt) for e in group[:15] if e.get("job")}
    warnings = worker_warnings(args.logdir, evidence_jobs)
    for group in (lost, stuck, wrongly_failed, doubled, corrupt):
        for entry in group[:15]:
            if entry.get("job") in warnings:
                entry["worker_warnings"] = warnings[entry["job"]]

    counts = {
        "lost": len(lost),
        "stuck": len(stuck),
        "corrupt": len(corrupt),
        "wrongly_failed": len(wrongly_failed),
        "doubled": len(doubled),
        "no_write_seen": len(unlogged),
        "dlq_non_poison": len(dlq_non_poison),
        "poison_unhandled": len(poison_unhandled),
        "open_uploads": len(open_uploads),
        "stray_objects": len(stray),
        "refetch_over_bound": len(over_bound),
        "integrity_wrong": len(integrity_wrong),
        "worker_crashes": len(fleet.crashes),
        "unclean_shutdowns": len(fleet.unclean),
        "gc_failed": int(gc.returncode != 0),
    }
    final = Counter(attr(records.get(j.job_id, {}), "status") or "unrecorded" for j in jobs)
    return {
        "passed": not any(counts.values()),
        "invariants": counts,
        "jobs": {
            "copies": len(jobs),
            "poison": len(poison),
            "duplicate_messages": sum(1 for j in jobs if j.duplicate_at is not None),
            "bytes": sum(j.size for j in jobs),
            "by_class": dict(Counter(j.cls for j in jobs)),
            "by_source_mode": dict(Counter(j.mode for j in jobs)),
            "with_expected_digest": sum(1 for j in jobs if "sha256" in j.expected or "md5" in j.expected),
            "final_status": dict(final),
            "attempts_histogram": {str(k): v for k, v in sorted(attempts_hist.items())},
            "resumes": resumes,
            "restarts": restarts,
        },
        "faults": {
            "aws_requests": requests,
            "injected": sum(faults.values()),
            "by_kind": dict(faults),
            "storm_hits": dict(storm_hits),
            "chaos_phase": in_window,
            "by_op": {op: c for op, c in stats.items() if len(c) > 1},
            "origin": origin_stats,
        },
        "kills": dict(fleet.kills, worker_starts=fleet.started, events=fleet.events),
        "refetch": {"total_bytes": refetch_total, "max_bytes": refetch_max[0], "max_job": refetch_max[1],
                    "per_kill_bytes": refetch_total // max(1, sum(fleet.kills.values()))},
        "s3_checksum": {"reported": checksum_reported, "not_reported": checksum_missing},
        "queues_after": {"main_left": len(main_left), "main_counts": main_counts, "dlq": len(dlq_left)},
        "gc": {"exit": gc.returncode, "stdout": gc.stdout.strip().splitlines()[-200:], "stderr": gc.stderr[-2000:],
               "open_uploads_before": sum(uploads_before_gc.values())},
        "failures_by_kind": dict(failures_by_kind),
        "source_integrity": {mode: dict(c) for mode, c in sorted(integrity_by_mode.items())},
        "changing": summarize_changing(changing_rows),
        "bad_messages": rejections,
        "details": {
            "lost": lost, "stuck": stuck, "deferred_after_kill": deferred, "corrupt": corrupt,
            "wrongly_failed": wrongly_failed,
            "doubled": doubled, "no_write_seen": unlogged, "proxy_log_gaps": proxy_gaps, "dlq_non_poison": dlq_non_poison,
            "poison_unhandled": poison_unhandled, "open_uploads": open_uploads, "stray_objects": stray,
            "refetch_over_bound": over_bound, "worker_crashes": fleet.crashes, "unclean_shutdowns": fleet.unclean,
            "integrity_wrong": integrity_wrong, "changing": changing_rows,
        },
    }


def summarize_changing(rows: list[dict]) -> dict:
    """The changing sources that succeeded: which version was stored, how many
    the origin changed, after how many `source_changed` attempts, by kind."""
    stored = Counter(str(r["stored"]) for r in rows)
    kinds = Counter(f"{r['validator']}/{r['if_range']}/{'same' if r['size'] == r['v2_size'] else 'new'} length"
                    for r in rows)
    return {"jobs": len(rows), "stored": dict(stored), "changed_by_origin": sum(r["changed"] for r in rows),
            "with_source_changed": sum(1 for r in rows if r["source_changed_attempts"]),
            "source_changed_attempts": sum(r["source_changed_attempts"] for r in rows), "kinds": dict(kinds)}


def check_bad_messages(poison: list[BadMessage], poison_ids: dict[str, str], poison_sent: dict[str, float],
                       records: dict[str, dict], in_dlq: Counter, main_left: list[dict]) -> tuple[list[dict], dict]:
    """Each bad message must end `rejected` with its kind (under its job_id,
    or its MessageId), be in the DLQ and not on the main queue (nothing
    retried for ever). Returns the ones that did not, and a summary: the
    rejections by kind and how long after its sending each was recorded."""
    on_main = Counter(m["Body"] for m in main_left)
    unhandled, kinds, latency = [], Counter(), {}
    for bad in poison:
        record_id = bad.job_id or poison_ids.get(bad.label)
        record = records.get(record_id or "", {})
        status, kind = attr(record, "status"), attr(record, "error_kind")
        finished = attr(record, "finished_at")
        if finished and bad.label in poison_sent:
            # The record's time has whole seconds: its end bounds the wait.
            at = datetime.datetime.fromisoformat(finished.replace("Z", "+00:00")).timestamp() + 1
            latency[bad.label] = round(max(0.0, at - poison_sent[bad.label]), 1)
        if in_dlq[bad.label] and status == "rejected" and kind == bad.kind and not on_main[bad.body]:
            kinds[kind] += 1
            continue
        unhandled.append({"poison": bad.label, "in_dlq": in_dlq[bad.label], "on_main_queue": on_main[bad.body],
                          "record": record_id, "status": status, "error_kind": kind, "wanted": bad.kind,
                          "error": attr(record, "error")})
    slowest = max(latency.items(), key=lambda item: item[1], default=(None, None))
    return unhandled, {"by_kind": dict(kinds), "seconds_after_sending": latency,
                       "slowest": {"label": slowest[0], "secs": slowest[1]}}


def verify_object(s3, bucket: str, job: Job, record: dict) -> tuple[list[str], str | None, bool | None]:
    """Checks a succeeded job's object against the one version of its source
    whose bytes it holds (sha256 of a GetObject): the record's size and
    checksum and S3's length and CRC64NVME must be that version's too.
    Returns the problems, the version ("v1", "v2"; None if it is none of
    them: a mix) and whether S3 reported a CRC64NVME (None: unreadable)."""
    problems: list[str] = []
    try:
        head = s3.head_object(Bucket=bucket, Key=job.key, ChecksumMode="ENABLED")
        body = s3.get_object(Bucket=bucket, Key=job.key)["Body"]
        sha = hashlib.sha256()
        for chunk in iter(lambda: body.read(8 * MiB), b""):
            sha.update(chunk)
    except s3.exceptions.ClientError as err:
        return [f"object unreadable: {err}"], None, None
    versions = job.versions()
    version = next((name for name, v in versions.items() if v["sha256"] == sha.hexdigest()), None)
    if version is None:
        shown = ", ".join(f"{name} {v['sha256']}" for name, v in versions.items())
        problems.append(f"object sha256 {sha.hexdigest()} is no version the origin served ({shown})")
    source = versions[version or "v1"]
    size, checksum = attr(record, "size"), attr(record, "checksum")
    if size != source["size"]:
        problems.append(f"record size {size} != source {source['size']}")
    if checksum != source["crc64nvme"]:
        problems.append(f"record checksum {checksum} != source CRC64NVME {source['crc64nvme']}")
    if head["ContentLength"] != source["size"]:
        problems.append(f"S3 size {head['ContentLength']} != source {source['size']}")
    s3_crc = head.get("ChecksumCRC64NVME")
    if s3_crc is not None and s3_crc != checksum:
        problems.append(f"S3 CRC64NVME {s3_crc} != record {checksum}")
    return problems, version, s3_crc is not None


def error_kinds_logged(logdir: str, kind: str) -> Counter:
    """Per job: how many attempts its workers logged as failed with `kind`."""
    found: Counter = Counter()
    needle = f'"error_kind":"{kind}"'
    for name in sorted(os.listdir(logdir)):
        with open(os.path.join(logdir, name), encoding="utf-8", errors="replace") as f:
            for line in f:
                if needle in line and "will retry" in line:
                    match = re.search(r'"job_id":"([^"]+)"', line)
                    if match:
                        found[match.group(1)] += 1
    return found


def _job_id_of(body: str):
    try:
        value = json.loads(body)
        return value.get("job_id") if isinstance(value, dict) else None
    except ValueError:
        return None


def print_report(report: dict, path: str) -> None:
    j, f, k, r, c = report["jobs"], report["faults"], report["kills"], report["refetch"], report["invariants"]
    out = sys.stdout
    mode = "short" if report["mode"] == "short" else f"{report['minutes']} min"
    print(f"chaos soak ({mode}, seed {report['seed']}, {report['timings']['total_secs']:.0f} s)", file=out)
    classes = ", ".join(f"{v} {k_}" for k_, v in sorted(j["by_class"].items()))
    modes = ", ".join(f"{v} {k_}" for k_, v in sorted(j["by_source_mode"].items()))
    print(f"jobs: {j['copies']} copies ({j['bytes'] / MiB:.0f} MiB; {classes}; sources {modes}; "
          f"{j['with_expected_digest']} with an expected digest; {j['duplicate_messages']} sent twice) "
          f"+ {j['poison']} poison", file=out)
    print("      final: " + ", ".join(f"{v} {k_}" for k_, v in sorted(j["final_status"].items()))
          + f"; attempts {j['attempts_histogram']}; {j['resumes']} resumes, {j['restarts']} restarts", file=out)
    kinds = ", ".join(f"{k_} {v}" for k_, v in sorted(f["by_kind"].items()))
    w = f["chaos_phase"]
    rate = 100 * w["faults"] / max(1, w["requests"])
    base = 100 * (w["faults"] - w["storm"]) / max(1, w["requests"] - w["storm"])
    print(f"faults injected: {f['injected']} ({kinds}); {w['faults']} of the {w['requests']} AWS calls of the "
          f"chaos phase ({rate:.1f} %; {base:.1f} % outside the storms), {f['aws_requests']} calls in all", file=out)
    print(f"      storms: " + ", ".join(f"{k_} {v}" for k_, v in sorted(f["storm_hits"].items()))
          + "; origin: " + ", ".join(f"{k_} {v}" for k_, v in sorted(f["origin"].items()) if k_.startswith("fault")), file=out)
    print(f"kills: {k.get('SIGKILL', 0)} SIGKILL, {k.get('SIGTERM', 0)} SIGTERM ({k['worker_starts']} worker starts)", file=out)
    print(f"re-fetched: {r['total_bytes'] / MiB:.1f} MiB total, max {r['max_bytes'] / MiB:.1f} MiB ({r['max_job']}), "
          f"{r['per_kill_bytes'] / MiB:.1f} MiB per kill", file=out)
    print_origin_rows(report, out)
    print(f"{c['lost']} lost, {c['stuck']} stuck, {c['corrupt']} corrupt, {c['wrongly_failed']} wrongly failed, "
          f"{c['doubled']} doubled", file=out)
    deferred = report["details"].get("deferred_after_kill") or []
    if deferred:
        print(f"{len(deferred)} deferred after their owner was SIGKILLed (the documented 5-minute "
              "recheck, past the short soak's drain; not a failure): "
              + ", ".join(e["job"] for e in deferred), file=out)
    print(f"{c['dlq_non_poison']} non-poison in the DLQ, {c['poison_unhandled']} poison not rejected as expected, "
          f"{c['open_uploads']} open uploads after gc, {c['stray_objects']} stray objects, "
          f"{c['no_write_seen']} succeeded without a write, {c['refetch_over_bound']} over the re-fetch bound, "
          f"{c['worker_crashes']} worker crashes, {c['unclean_shutdowns']} unclean shutdowns, gc failed {c['gc_failed']}, "
          f"{c['integrity_wrong']} with the wrong source_integrity", file=out)
    gaps = len(report["details"]["proxy_log_gaps"])
    if gaps:
        print(f"note: the proxy's log misses S3 writes moto saw for {gaps} object(s) (requests in flight when "
              f"their worker died); writes are counted from moto's log", file=out)
    if report["failures_by_kind"]:
        print("wrongly failed by error_kind: " + ", ".join(f"{k_} {v}" for k_, v in report["failures_by_kind"].items()), file=out)
    details = report["details"]
    for name in ("lost", "stuck", "corrupt", "wrongly_failed", "doubled", "no_write_seen", "dlq_non_poison",
                 "poison_unhandled", "open_uploads", "stray_objects", "refetch_over_bound", "worker_crashes", "unclean_shutdowns",
                 "integrity_wrong"):
        for entry in details[name][:5]:
            brief = {k_: v for k_, v in entry.items() if k_ not in ("s3_trail", "worker_warnings")}
            print(f"  {name}: {json.dumps(brief)}", file=out)
        if len(details[name]) > 5:
            print(f"  {name}: ... {len(details[name]) - 5} more in {path}", file=out)
    print(("PASS" if report["passed"] else "FAIL") + f" (report: {path})", file=out, flush=True)


def print_origin_rows(report: dict, out) -> None:
    """The report's rows for the lying origin and the bad messages."""
    ch, bad = report["changing"], report["bad_messages"]
    kinds = ", ".join(f"{k_} {v}" for k_, v in sorted(ch["kinds"].items()))
    stored = ", ".join(f"{k_} {v}" for k_, v in sorted(ch["stored"].items()))
    print(f"changing sources: {ch['jobs']} succeeded ({kinds}); stored {stored}; the origin replaced "
          f"{ch['changed_by_origin']}; {ch['with_source_changed']} saw source_changed "
          f"({ch['source_changed_attempts']} attempts)", file=out)
    integrity = "; ".join(f"{mode} " + ", ".join(f"{v} {k_}" for k_, v in sorted(c.items()))
                          for mode, c in report["source_integrity"].items())
    print(f"source_integrity: {integrity}", file=out)
    by_kind = ", ".join(f"{k_} {v}" for k_, v in sorted(bad["by_kind"].items()))
    slowest = bad["slowest"]
    print(f"bad messages: {sum(bad['by_kind'].values())} of {report['jobs']['poison']} rejected as expected "
          f"({by_kind}), each in the DLQ, none left on the queue; recorded at most {slowest['secs']} s after "
          f"sending ({slowest['label']})", file=out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    origin = sub.add_parser("origin")
    origin.add_argument("dir")
    origin.add_argument("--seed", type=int, default=0)
    origin.add_argument("--port", type=int, default=0)
    origin.add_argument("--p503", type=float, default=0.03)
    origin.add_argument("--preset", type=float, default=0.03)
    driver = sub.add_parser("run")
    driver.add_argument("--mode", choices=["short", "long"], required=True)
    driver.add_argument("--minutes", type=int, default=30)
    driver.add_argument("--seed", type=int, required=True)
    driver.add_argument("--proxy", required=True)
    driver.add_argument("--origin", required=True)
    driver.add_argument("--ferry", required=True)
    driver.add_argument("--www", required=True)
    driver.add_argument("--logdir", required=True)
    driver.add_argument("--report", required=True)
    driver.add_argument("--moto-log", required=True, help="moto's request log (scripts/chaos: .ferry/chaos-moto.log)")
    driver.add_argument("--workers", type=int, default=3)
    driver.add_argument("--storm-probability", type=float, default=1.0)
    driver.add_argument("--max-receive-count", type=int, default=10)
    args = parser.parse_args()
    close_inherited_pipes()
    if args.command == "origin":
        serve_origin(args)
        return
    try:
        sys.exit(run(args))
    except Interrupted as why:
        log(f"interrupted ({why}); workers stopped")
        sys.exit(130)


if __name__ == "__main__":
    main()
