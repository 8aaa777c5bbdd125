"""The benchmark's servers: nginx (the HTTP origin) and s3s-fs (the S3 sink).

Both listen on 127.0.0.1 only, keep their data on tmpfs, and are started and
stopped here by the PID this process got from Popen; nothing else is killed.
Also reads the servers' CPU time from /proc so each run can report what the
sink and the origin spent on it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

ACCESS_KEY = "bench"
SECRET_KEY = "bench-secret-key"
BUCKET = "bench"

NGINX_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
daemon off;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    # Full speed: sendfile from tmpfs.
    server {{
        listen {addr}:{port};
        root {www};
    }}
    # A CDN-like origin that throttles each connection.
    server {{
        listen {addr}:{throttled_port};
        root {www};
        limit_rate {rate};
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(
    port: int, proc: subprocess.Popen, name: str, log: Path, host: str = "127.0.0.1"
) -> None:
    for _ in range(100):  # 10 s at most
        if proc.poll() is not None:
            break
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not start; log:\n{log.read_text(errors='replace')[-2000:]}")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the given processes (not their children), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


class Servers:
    """nginx + s3s-fs, started together; use as a context manager."""

    def __init__(self, root: Path, s3s_fs: str, throttle_bytes_per_s: int):
        self.root = root
        self.www = root / "www"
        self.s3dir = root / "s3"
        self.ngdir = root / "nginx"
        self.s3s_fs = s3s_fs
        self.rate = throttle_bytes_per_s
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def __enter__(self) -> "Servers":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _start(self) -> None:
        for d in (self.www, self.s3dir / BUCKET, self.ngdir / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        self.http_port, self.throttled_port, self.s3_port = free_port(), free_port(), free_port()
        conf = self.ngdir / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                addr="127.0.0.1",
                dir=self.ngdir,
                www=self.www,
                port=self.http_port,
                throttled_port=self.throttled_port,
                rate=self.rate,
            )
        )
        log = self.ngdir / "stderr.log"
        nginx = subprocess.Popen(
            ["nginx", "-p", str(self.ngdir), "-e", str(self.ngdir / "error.log"), "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        self.procs.append(("nginx", nginx))
        wait_for_port(self.http_port, nginx, "nginx", log)
        wait_for_port(self.throttled_port, nginx, "nginx", log)
        self.nginx_pids = [nginx.pid, *children(nginx.pid)]

        log = self.root / "s3s-fs.log"
        s3 = subprocess.Popen(
            [
                self.s3s_fs,
                "--host", "127.0.0.1",
                "--port", str(self.s3_port),
                "--access-key", ACCESS_KEY,
                "--secret-key", SECRET_KEY,
                str(self.s3dir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        self.procs.append(("s3s-fs", s3))
        wait_for_port(self.s3_port, s3, "s3s-fs", log)
        self.s3_pid = s3.pid

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs.clear()

    def prefix(self) -> list[str]:
        """What runs a client command where it reaches these servers."""
        return []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def url(self, name: str, throttled: bool = False) -> str:
        port = self.throttled_port if throttled else self.http_port
        return f"http://127.0.0.1:{port}/{name}"

    def stored_path(self, key: str) -> Path:
        return self.s3dir / BUCKET / key

    def stored_files(self, key: str) -> list[Path] | None:
        """The files whose concatenation is the stored object, if there is one."""
        path = self.stored_path(key)
        return [path] if path.is_file() else None

    def server_cpu(self) -> dict[str, float]:
        return {"s3s_fs": cpu_seconds([self.s3_pid]), "nginx": cpu_seconds(self.nginx_pids)}

    def clear_bucket(self) -> None:
        """Delete every stored object, its metadata and any unfinished upload."""
        for p in self.s3dir.iterdir():
            if p.is_dir():
                for q in p.iterdir():
                    if q.is_file():
                        q.unlink()
            elif p.is_file():
                p.unlink()
