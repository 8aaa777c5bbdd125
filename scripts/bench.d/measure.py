"""Runs one command pipeline and measures it: wall time, CPU, peak RSS, load.

Each process of the pipeline runs under `/usr/bin/time`, which reports the
user+sys seconds and max RSS of that process and everything it waited for.
The whole pipeline is one process group with a hard timeout. Around the run
we sample /proc/loadavg, /proc/stat (to tell how much CPU *other* work, such
as a concurrent cargo build, took during the run) and the names of build
processes, so noisy runs are visible in the results.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

TIME_FORMAT = "%e %U %S %M %x"
# Compilers and linkers: heavy CPU users (an idle `cargo` waiting on tests is not).
BUILD_PROCESSES = {"rustc", "clippy-driver", "cc1", "cc1plus", "ld", "ld.lld", "rust-lld"}


def busy_processes() -> list[str]:
    names = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                comm = Path(entry.path, "comm").read_text().strip()
            except OSError:
                continue
            if comm in BUILD_PROCESSES:
                names.append(comm)
    return sorted(names)


def wait_until_quiet(max_wait_s: float, idle_cores: float = 0.3) -> float:
    """Waits (bounded) until no compiler runs and the machine is near idle.

    Returns the seconds waited. "Near idle": less than `idle_cores` of CPU
    busy over one second, so a `cargo test` (whose test binaries are not
    compilers) is noticed too.
    """
    start = time.monotonic()
    while time.monotonic() - start < max_wait_s:
        before = machine_busy_seconds()
        time.sleep(1)
        if not busy_processes() and machine_busy_seconds() - before < idle_cores:
            break
    return time.monotonic() - start


def noisy(run: dict, cores: float = 0.25) -> bool:
    """Did other work overlap this run? True when CPU time spent outside the
    tool and the servers exceeded `cores` on average and half a CPU-second."""
    return run["foreign_cpu_s"] > max(cores * run["wall_s"], 0.5)


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def machine_busy_seconds() -> float:
    """CPU-seconds all cores spent not idle since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_pipeline(
    stages: list[list[str]], env: dict[str, str], timeout_s: float, log_dir: Path
) -> dict:
    """Runs `stages[0] | stages[1] | ...`; returns wall time and per-stage usage."""
    log_dir.mkdir(parents=True, exist_ok=True)
    time_files = [Path(tempfile.mkstemp(dir=log_dir, suffix=".time")[1]) for _ in stages]
    stderr = (log_dir / "stderr.log").open("w")
    stdout = (log_dir / "stdout.log").open("w")
    procs: list[subprocess.Popen] = []
    timed_out = False
    start = time.monotonic()
    try:
        prev = subprocess.DEVNULL
        for i, argv in enumerate(stages):
            last = i == len(stages) - 1
            proc = subprocess.Popen(
                ["/usr/bin/time", "-f", TIME_FORMAT, "-o", str(time_files[i]), *argv],
                stdin=prev,
                stdout=stdout if last else subprocess.PIPE,
                stderr=stderr,
                env=env,
                process_group=0 if i == 0 else procs[0].pid,
            )
            if prev is not subprocess.DEVNULL:
                prev.close()  # only the next stage holds the pipe
            prev = proc.stdout if not last else None
            procs.append(proc)
        deadline = start + timeout_s
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(procs[0].pid, signal.SIGKILL)
                break
        for proc in procs:
            proc.wait(timeout=30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(procs[0].pid, signal.SIGKILL)
                proc.wait(timeout=30)
        stderr.close()
        stdout.close()
    wall = time.monotonic() - start
    stage_usage = [parse_time(f) for f in time_files]
    for f in time_files:
        f.unlink(missing_ok=True)
    return {
        "wall_s": wall,
        "timed_out": timed_out,
        "exit_codes": [p.returncode for p in procs],
        "stages": [
            {"argv0": Path(argv[0]).name, **usage} for argv, usage in zip(stages, stage_usage)
        ],
    }


def parse_time(path: Path) -> dict:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        return {"user_s": 0.0, "sys_s": 0.0, "max_rss_kib": 0, "exit": None}
    elapsed, user, sys, rss, code = lines[-1].split()
    return {"user_s": float(user), "sys_s": float(sys), "max_rss_kib": int(rss), "exit": int(code)}
