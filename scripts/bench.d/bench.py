"""Benchmark driver: ferry vs rclone, the AWS CLI and s5cmd, on loopback.

Called by scripts/bench (which installs the tools and builds ferry); reads
its settings from BENCH_* variables (documented there). Starts nginx and
s3s-fs (servers.py), generates the source files on tmpfs, runs every
scenario with tools alternating run by run, verifies each stored object's
sha256, and writes every run to results.json in the output directory;
report.py turns that into tables and a chart.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).parent))
import far  # noqa: E402
import measure  # noqa: E402
from servers import ACCESS_KEY, BUCKET, SECRET_KEY, Servers  # noqa: E402

MIB = 1 << 20


def env_list(name: str, default: str) -> list[int]:
    return [int(x) for x in os.environ.get(name, default).split()]


@dataclass
class Settings:
    root: Path
    out: Path
    ferry: str
    # The same build with symbols and line tables (cargo --profile profiling), for perf.
    ferry_profiling: str
    s3s_fs: str
    # The cheap sink of the far scenario (crates/testkit's ferry-s3-sink).
    sink: str
    venv_bin: Path
    s5cmd: str
    sizes: list[int]
    runs: int
    rss_sizes: list[int]
    throttle_mbps: float
    throttle_size: int
    sweep_size: int
    sweep_runs: int
    sweep_parts: list[int]
    sweep_conc: list[int]
    scenarios: list[str]
    far_rtts: list[int]
    far_size: int
    far_runs: int
    quiet_wait_s: float
    quiet_budget_s: float
    redo_noisy: int

    @classmethod
    def from_env(cls) -> "Settings":
        e = os.environ
        return cls(
            root=Path(e.get("BENCH_DIR", "/dev/shm/ferry-bench")),
            out=Path(e["BENCH_OUT"]),
            ferry=e["BENCH_FERRY"],
            ferry_profiling=e.get("BENCH_FERRY_PROFILING", e["BENCH_FERRY"]),
            s3s_fs=e["BENCH_S3S_FS"],
            sink=e["BENCH_SINK"],
            venv_bin=Path(e["BENCH_VENV"]) / "bin",
            s5cmd=e["BENCH_S5CMD"],
            sizes=env_list("BENCH_SIZES", "1024 4096"),
            runs=int(e.get("BENCH_RUNS", "3")),
            rss_sizes=env_list("BENCH_RSS_SIZES", "64 1024 4096"),
            throttle_mbps=float(e.get("BENCH_THROTTLE_MBPS", "20")),
            throttle_size=int(e.get("BENCH_THROTTLE_SIZE", "512")),
            sweep_size=int(e.get("BENCH_SWEEP_SIZE", "1024")),
            sweep_runs=int(e.get("BENCH_SWEEP_RUNS", "1")),
            sweep_parts=env_list("BENCH_SWEEP_PARTS", "8 16 32"),
            sweep_conc=env_list("BENCH_SWEEP_CONCURRENCY", "4 8 16"),
            scenarios=e.get("BENCH_SCENARIOS", "main rss throttle sweep far").split(),
            far_rtts=env_list("BENCH_FAR_RTTS", "0 50 150"),
            far_size=int(e.get("BENCH_FAR_SIZE", "1024")),
            far_runs=int(e.get("BENCH_FAR_RUNS", "3")),
            quiet_wait_s=float(e.get("BENCH_QUIET_WAIT", "120")),
            quiet_budget_s=float(e.get("BENCH_QUIET_BUDGET", "2400")),
            redo_noisy=int(e.get("BENCH_REDO_NOISY", "2")),
        )


# --- the tools -------------------------------------------------------------


@dataclass
class Tool:
    name: str
    kind: str  # "ferry" | "peer" | "limit"
    stages: Callable[["Bench", str, str, Path], list[list[str]]]
    stores: bool = True  # writes an object whose sha256 we check


def curl(url: str, *extra: str) -> list[str]:
    return ["curl", "--silent", "--show-error", "--fail", *extra, url]


# N curls at once, each reading one Nth of the object as a range: what the
# origin and the path give to parallel readers that store nothing.
RANGED_READS = (8, 16)
RANGED_SCRIPT = """\
url=$1; size=$2; n=$3; chunk=$(( (size + n - 1) / n )); i=0
while [ "$i" -lt "$n" ]; do
  start=$((i * chunk)); end=$((start + chunk - 1)); [ "$end" -ge "$size" ] && end=$((size - 1))
  curl --silent --show-error --fail --output /dev/null --range "$start-$end" "$url" &
  pids="$pids $!"; i=$((i + 1))
done
fail=0; for pid in $pids; do wait "$pid" || fail=1; done; exit "$fail"
"""


def ranged_reads(n: int) -> str:
    return f"limit: {n} ranged curls > /dev/null"


BASELINE = "ferry (baseline)"


def tools(extra_ferry: list[str] | None = None) -> dict[str, Tool]:
    s3 = lambda key: f"s3://{BUCKET}/{key}"  # noqa: E731
    baseline = os.environ.get("BENCH_FERRY_BASELINE")
    return {
        # An earlier build, to measure a change side by side (far scenario).
        **({BASELINE: Tool(
            BASELINE, "ferry",
            lambda b, url, key, f: [[baseline, "copy", "-q", url, s3(key)]],
        )} if baseline else {}),
        "ferry": Tool(
            "ferry", "ferry",
            lambda b, url, key, f: [[b.s.ferry, "copy", "-q", *(extra_ferry or []), url, s3(key)]],
        ),
        "rclone copyurl": Tool(
            "rclone copyurl", "peer",
            lambda b, url, key, f: [[str(b.s.venv_bin / "rclone"), "copyurl", url, f"bench:{BUCKET}/{key}"]],
        ),
        "curl | aws s3 cp -": Tool(
            "curl | aws s3 cp -", "peer",
            lambda b, url, key, f: [curl(url), [str(b.s.venv_bin / "aws"), "s3", "cp", "--only-show-errors", "-", s3(key)]],
        ),
        "curl | s5cmd pipe": Tool(
            "curl | s5cmd pipe", "peer",
            lambda b, url, key, f: [curl(url), [b.s.s5cmd, "--endpoint-url", b.servers.endpoint, "pipe", s3(key)]],
        ),
        "limit: curl > /dev/null": Tool(
            "limit: curl > /dev/null", "limit",
            lambda b, url, key, f: [curl(url, "--output", "/dev/null")],
            stores=False,
        ),
        **{
            ranged_reads(n): Tool(
                ranged_reads(n), "limit",
                lambda b, url, key, f, n=n: [["sh", "-c", RANGED_SCRIPT, "sh", url, str(f.stat().st_size), str(n)]],
                stores=False,
            )
            for n in RANGED_READS
        },
        "limit: s5cmd cp FILE": Tool(
            "limit: s5cmd cp FILE", "limit",
            lambda b, url, key, f: [[b.s.s5cmd, "--endpoint-url", b.servers.endpoint, "cp", str(f), s3(key)]],
        ),
        "limit: rclone copyto FILE": Tool(
            "limit: rclone copyto FILE", "limit",
            lambda b, url, key, f: [[str(b.s.venv_bin / "rclone"), "copyto", str(f), f"bench:{BUCKET}/{key}"]],
        ),
        "limit: aws s3 cp FILE": Tool(
            "limit: aws s3 cp FILE", "limit",
            lambda b, url, key, f: [[str(b.s.venv_bin / "aws"), "s3", "cp", "--only-show-errors", str(f), s3(key)]],
        ),
    }


# --- the driver ------------------------------------------------------------


class Bench:
    def __init__(self, settings: Settings, servers: Servers):
        self.s = settings
        self.servers = servers
        self.runs: list[dict] = []
        self.quiet_spent = 0.0
        self.digests: dict[int, str] = {}
        self.env = self._tool_env()

    def _tool_env(self) -> dict[str, str]:
        home = self.s.root / "home"
        home.mkdir(parents=True, exist_ok=True)
        aws_config = home / "aws-config"
        aws_config.write_text("[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n")
        endpoint = self.servers.endpoint
        return {
            "PATH": f"{self.s.venv_bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),  # no user config of any tool leaks in
            "LANG": "C.UTF-8",
            "NO_PROXY": "127.0.0.1,localhost",
            # ferry refuses loopback and private sources unless told
            # otherwise (SSRF guard); the far scenario's origin is private.
            "FERRY_SOURCE_ALLOW_CIDRS": f"127.0.0.0/8,{far.LINK_CIDR}",
            "AWS_ENDPOINT_URL": endpoint,
            "S3_ENDPOINT_URL": endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_CONFIG_FILE": str(aws_config),
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",  # never ask for instance credentials
            "RCLONE_CONFIG": "/dev/null",
            "RCLONE_CONFIG_BENCH_TYPE": "s3",
            "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
            "RCLONE_CONFIG_BENCH_ENDPOINT": endpoint,
            "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
            "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": ACCESS_KEY,
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": SECRET_KEY,
            "FERRY_LOG_FORMAT": "text",
        }

    def source(self, size_mib: int) -> Path:
        """The generated source file of SIZE MiB (random bytes), with its sha256."""
        path = self.servers.www / f"obj-{size_mib}.bin"
        stamp = path.with_suffix(".sha256")
        if path.exists() and stamp.exists() and path.stat().st_size == size_mib * MIB:
            self.digests[size_mib] = stamp.read_text().strip()
            return path
        print(f"==> generating {size_mib} MiB of random data", file=sys.stderr)
        h = hashlib.sha256()
        with path.open("wb") as f:
            for _ in range(size_mib):
                block = os.urandom(MIB)
                h.update(block)
                f.write(block)
        self.digests[size_mib] = h.hexdigest()
        stamp.write_text(self.digests[size_mib] + "\n")
        return path

    def run_clean(self, scenario: str, tool: Tool, size_mib: int, run: int, **kw) -> dict:
        """run_one, redone (up to BENCH_REDO_NOISY times) while other work overlaps
        it; the noisy attempts stay in the results, marked `discarded`."""
        for attempt in range(self.s.redo_noisy + 1):
            record = self.run_one(scenario, tool, size_mib, run, **kw)
            if not measure.noisy(record) or attempt == self.s.redo_noisy:
                return record
            record["discarded"] = True
            print("    (noisy: discarded, redoing)", file=sys.stderr)
        return record

    def run_one(self, scenario: str, tool: Tool, size_mib: int, run: int, throttled=False, params=None) -> dict:
        file = self.source(size_mib)
        url = self.servers.url(file.name, throttled)
        slug = re.sub(r"[^a-z0-9]+", "-", tool.name.lower()).strip("-")
        suffix = "".join(f"-{v}" for v in (params or {}).values())
        key = f"{scenario}-{size_mib}-{run}-{slug}{suffix}"
        stages = [self.servers.prefix() + stage for stage in tool.stages(self, url, key, file)]
        self.servers.clear_bucket()

        waited = 0.0
        if self.quiet_spent < self.s.quiet_budget_s:
            waited = measure.wait_until_quiet(min(self.s.quiet_wait_s, self.s.quiet_budget_s - self.quiet_spent))
            self.quiet_spent += waited
        slowest_mb_s = self.s.throttle_mbps / 2 if throttled else 5
        timeout = 120 + size_mib * MIB / 1e6 / slowest_mb_s

        before = {
            "load": measure.loadavg(),
            "busy": measure.busy_processes(),
            "machine_cpu": measure.machine_busy_seconds(),
            "servers": self.servers.server_cpu(),
        }
        log_dir = self.s.root / "logs" / key
        result = measure.run_pipeline(stages, self.env, timeout, log_dir)
        after = {
            "load": measure.loadavg(),
            "busy": measure.busy_processes(),
            "machine_cpu": measure.machine_busy_seconds(),
            "servers": self.servers.server_cpu(),
        }

        ok = not result["timed_out"] and all(c == 0 for c in result["exit_codes"])
        verified = None
        if tool.stores:
            stored = self.servers.stored_files(key)
            verified = ok and stored is not None and sha256_files(stored) == self.digests[size_mib]
        tool_cpu = sum(s["user_s"] + s["sys_s"] for s in result["stages"])
        server_cpu = {k: after["servers"][k] - before["servers"][k] for k in after["servers"]}
        machine_cpu = after["machine_cpu"] - before["machine_cpu"]
        record = {
            "scenario": scenario,
            "tool": tool.name,
            "kind": tool.kind,
            "size_mib": size_mib,
            "run": run,
            "params": params or {},
            "throttled": throttled,
            "ok": ok,
            "verified": verified,
            "wall_s": round(result["wall_s"], 3),
            "mb_s": round(size_mib * MIB / 1e6 / result["wall_s"], 2),
            "cpu_s": round(tool_cpu, 3),
            "cpu_s_per_gib": round(tool_cpu / (size_mib / 1024), 3),
            "max_rss_mib": round(max(s["max_rss_kib"] for s in result["stages"]) / 1024, 1),
            "stages": result["stages"],
            "server_cpu_s": {k: round(v, 2) for k, v in server_cpu.items()},
            "foreign_cpu_s": round(machine_cpu - tool_cpu - sum(server_cpu.values()), 2),
            "load_before": before["load"],
            "load_after": after["load"],
            "busy_before": before["busy"],
            "busy_after": after["busy"],
            "waited_for_quiet_s": round(waited, 1),
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "exit_codes": result["exit_codes"],
            "timed_out": result["timed_out"],
        }
        status = "ok" if ok and verified is not False else "FAILED"
        print(
            f"  {scenario:8} {size_mib:5} MiB run {run} {tool.name:26} {record['mb_s']:8.1f} MB/s "
            f"cpu {record['cpu_s_per_gib']:6.2f} s/GiB rss {record['max_rss_mib']:7.1f} MiB "
            f"load {before['load']:.2f}->{after['load']:.2f} foreign {record['foreign_cpu_s']:.1f}s {status}",
            file=sys.stderr,
            flush=True,
        )
        if not ok or verified is False:
            tail = (log_dir / "stderr.log").read_text(errors="replace")[-1500:]
            print(f"    stderr: {tail}", file=sys.stderr)
        self.servers.clear_bucket()
        self.runs.append(record)
        return record

    # --- scenarios ---

    def alternate(self, scenario: str, names: list[str], size: int, runs: int, throttled=False,
                  params=None) -> None:
        """Runs each tool `runs` times, ABCD ABCD…, rotating who goes first."""
        t = tools()
        for run in range(1, runs + 1):
            k = (run - 1) % len(names)
            for name in names[k:] + names[:k]:
                self.run_clean(scenario, t[name], size, run, throttled=throttled, params=params)

    def main(self) -> None:
        names = [n for n in tools() if n not in [BASELINE, *map(ranged_reads, RANGED_READS)]]
        for size in self.s.sizes:
            self.alternate("main", names, size, self.s.runs)

    def rss(self) -> None:
        """ferry's peak RSS by object size (sizes the main scenario ran are reused)."""
        for size in self.s.rss_sizes:
            if "main" in self.s.scenarios and size in self.s.sizes:
                continue
            for run in range(1, self.s.runs + 1):
                self.run_clean("rss", tools()["ferry"], size, run)

    def throttle(self) -> None:
        names = ["ferry", "rclone copyurl", "curl | aws s3 cp -", "curl | s5cmd pipe", "limit: curl > /dev/null"]
        self.alternate("throttle", names, self.s.throttle_size, self.s.runs, throttled=True)

    def sweep(self) -> None:
        combos = [(p, c) for p in self.s.sweep_parts for c in self.s.sweep_conc]
        for run in range(1, self.s.sweep_runs + 1):
            for p, c in combos:
                flags = ["--part-size-mib", str(p), "--max-concurrent-uploads", str(c)]
                tool = tools(flags)["ferry"]
                self.run_clean("sweep", tool, self.s.sweep_size, run, params={"part_size_mib": p, "concurrency": c})

    def far(self) -> None:
        """The origin behind a delay line (far.py), at each of BENCH_FAR_RTTS:
        ferry, the single-stream peers, and what one and N parallel ranged
        reads get from the same path, alternating within each RTT."""
        names = ["ferry", *[n for n in tools() if n == BASELINE], "rclone copyurl", "curl | s5cmd pipe",
                 "limit: curl > /dev/null", *map(ranged_reads, RANGED_READS)]
        self.source(self.s.far_size)
        for rtt in self.s.far_rtts:
            with far.FarServers(self.s.root, self.s.sink, rtt, self.servers.www) as servers:
                print(f"==> far origin: rtt {rtt} ms, nginx on {servers.url('')} "
                      f"(namespace {servers.far}), clients in {servers.near}", file=sys.stderr)
                near = Bench(self.s, servers)
                near.runs, near.quiet_spent = self.runs, self.quiet_spent
                near.alternate("far", names, self.s.far_size, self.s.far_runs, params={"rtt_ms": rtt})
                self.quiet_spent = near.quiet_spent

    def perf(self) -> None:
        """One ferry copy under `perf record`; the flat profile goes to perf-ferry.txt."""
        data = self.s.root / "perf.data"
        perf_tool = Tool(
            "ferry (perf record)", "ferry",
            lambda b, url, key, f: [["perf", "record", "-F", "999", "-g", "-o", str(data), "--",
                                     b.s.ferry_profiling, "copy", "-q", url,
                                     f"s3://{BUCKET}/{key}"]],
        )
        self.run_one("perf", perf_tool, self.s.sweep_size, 1)
        with (self.s.out / "perf-ferry.txt").open("w") as out:
            subprocess.run(
                ["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", "dso,symbol",
                 "--percent-limit", "0.5", "-g", "none"],
                stdout=out, stderr=subprocess.DEVNULL, timeout=600, check=False,
            )


def sha256_files(paths: list[Path]) -> str:
    """The sha256 of the files' concatenation."""
    h = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            while chunk := f.read(4 * MIB):
                h.update(chunk)
    return h.hexdigest()


def command_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def machine(s: Settings) -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / MIB, 1),
        "kernel": platform.release(),
        "versions": {
            "ferry": os.environ.get("BENCH_FERRY_VERSION", "unknown"),
            "nginx": command_version(["nginx", "-v"]),
            "s3s-fs": command_version([s.s3s_fs, "--version"]),
            "rclone": command_version([str(s.venv_bin / "rclone"), "version"]),
            "aws": command_version([str(s.venv_bin / "aws"), "--version"]),
            "s5cmd": command_version([s.s5cmd, "version"]),
            "curl": command_version(["curl", "--version"]),
        },
    }


def main() -> int:
    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    s = Settings.from_env()
    s.out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rate = int(s.throttle_mbps * 1e6)
    with Servers(s.root, s.s3s_fs, rate) as servers:
        bench = Bench(s, servers)
        print(f"==> nginx on {servers.url('')} (throttled: port {servers.throttled_port}), "
              f"s3s-fs on {servers.endpoint}", file=sys.stderr)
        try:
            for scenario in s.scenarios:
                print(f"==> scenario {scenario}", file=sys.stderr)
                getattr(bench, scenario)()
        finally:
            runs = bench.runs
            earlier = s.out / "results.json"
            if os.environ.get("BENCH_APPEND") == "1" and earlier.exists():
                # Keep the earlier invocation's runs of the scenarios not rerun now.
                prev = json.loads(earlier.read_text())
                kept = [r for r in prev["runs"] if r["scenario"] not in s.scenarios]
                runs = kept + bench.runs
                started = prev["started_at"]
            results = {
                "started_at": started,
                "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "machine": machine(s),
                "settings": {
                    "sizes_mib": s.sizes,
                    "runs": s.runs,
                    "rss_sizes_mib": s.rss_sizes,
                    "throttle_mb_s_per_connection": s.throttle_mbps,
                    "throttle_size_mib": s.throttle_size,
                    "sweep_size_mib": s.sweep_size,
                    "sweep_runs": s.sweep_runs,
                    "redo_noisy": s.redo_noisy,
                    "far_rtts_ms": s.far_rtts,
                    "far_size_mib": s.far_size,
                    "far_runs": s.far_runs,
                    "scenarios": sorted({r["scenario"] for r in runs}),
                },
                "runs": runs,
            }
            (s.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    bad = [r for r in bench.runs if not r["ok"] or r["verified"] is False]
    print(f"==> {len(bench.runs)} runs, {len(bad)} failed; results in {s.out}/results.json", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
