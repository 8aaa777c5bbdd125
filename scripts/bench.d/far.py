"""The far-origin scenario's network: the origin (nginx) in one network
namespace, the client and the S3 sink (ferry-s3-sink, crates/testkit) in another, joined by the
userspace delay line (delay_line.py) with a chosen round-trip time.

    near namespace                         far namespace
    ferry / rclone / curl ── 10.201.0.1 ══ delay line ══ 10.201.0.2 ── nginx
    ferry-s3-sink (the S3 sink) on the near namespace's 127.0.0.1

Only addresses inside these namespaces are used; both namespaces are created
here and deleted at the end, and every process is started and stopped here
by the PID Popen returned.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from servers import NGINX_CONF, Servers, children, cpu_seconds, wait_for_port

NEAR_ADDR = "10.201.0.1"
FAR_ADDR = "10.201.0.2"
LINK_CIDR = "10.201.0.0/24"
CLONE_NEWNET = 0x40000000



def in_netns(netns: str, fn):
    """Runs `fn()` on a thread that has joined `netns` (setns affects only
    the calling thread), so sockets it opens live there."""
    result: dict = {}

    def body():
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns}")
            finally:
                os.close(fd)
            result["value"] = fn()
        except BaseException as err:  # handed to the caller
            result["error"] = err

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


class FarServers(Servers):
    """nginx behind the delay line, the tmpfs sink beside the client; one RTT."""

    def __init__(self, root: Path, sink: str, rtt_ms: float, www: Path):
        super().__init__(root, s3s_fs="", throttle_bytes_per_s=0)
        self.sink = sink
        self.rtt_ms = rtt_ms
        self.www = www  # the sources the other scenarios generated
        self.s3dir = root / "s3-far"
        self.ngdir = root / "nginx-far"
        tag = os.getpid() % 100000
        self.near, self.far = f"ferry-near-{tag}", f"ferry-far-{tag}"
        self.namespaces: list[str] = []

    def prefix(self) -> list[str]:
        """What runs a command in the client's namespace."""
        return ["ip", "netns", "exec", self.near]

    def _start(self) -> None:
        for ns in (self.near, self.far):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            self.namespaces.append(ns)
        for d in (self.s3dir / "bench", self.ngdir / "tmp"):
            d.mkdir(parents=True, exist_ok=True)

        log = self.root / f"delay-line-{self.rtt_ms:g}.log"
        line = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "delay_line.py"),
             "--near", self.near, "--far", self.far, "--rtt-ms", str(self.rtt_ms),
             "--near-addr", NEAR_ADDR, "--far-addr", FAR_ADDR],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
        )
        self.procs.append(("delay line", line))
        ready = line.stdout.readline() if line.stdout else ""
        if not ready.startswith("ready"):
            raise RuntimeError(f"delay line did not start: {ready!r}\n{log.read_text()[-2000:]}")
        self.line_pid = line.pid

        self.http_port = 8080
        conf = self.ngdir / "nginx.conf"
        # The same server block as on loopback; the throttled one is unused.
        conf.write_text(NGINX_CONF.format(dir=self.ngdir, www=self.www, addr=FAR_ADDR,
                                          port=self.http_port, throttled_port=self.http_port + 1,
                                          rate=0))
        log = self.ngdir / "stderr.log"
        nginx = subprocess.Popen(
            ["ip", "netns", "exec", self.far, "nginx", "-p", str(self.ngdir),
             "-e", str(self.ngdir / "error.log"), "-c", str(conf)],
            stdin=subprocess.DEVNULL, stdout=log.open("w"), stderr=subprocess.STDOUT,
        )
        self.procs.append(("nginx", nginx))
        # Reached through the delay line, from the client's side.
        in_netns(self.near, lambda: wait_for_port(self.http_port, nginx, "nginx", log, FAR_ADDR))
        self.nginx_pids = [nginx.pid, *children(nginx.pid)]

        # The cheap sink (ferry-s3-sink), not s3s-fs: on two cores s3s-fs's
        # hashing would take the CPU this scenario measures the path with.
        log = self.root / "sink-far.log"
        s3 = subprocess.Popen(
            [*self.prefix(), self.sink, "--listen", "127.0.0.1:9000", str(self.s3dir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
        )
        self.procs.append(("sink", s3))
        said = s3.stdout.readline() if s3.stdout else ""
        if not said.startswith("port "):
            raise RuntimeError(f"sink did not start: {said!r}\n{log.read_text()[-2000:]}")
        self.s3_port = int(said.split()[1])
        self.s3_pid = s3.pid

    def stop(self) -> None:
        super().stop()
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], check=False)
        self.namespaces.clear()

    def stored_files(self, key: str) -> list[Path] | None:
        """A completed upload stays as its parts (ferry-s3-sink does not
        concatenate them): KEY.parts/ and its `order` file."""
        path = self.stored_path(key)
        if path.is_file():
            return [path]
        parts = path.with_name(path.name + ".parts")
        order = parts / "order"
        return [parts / n for n in order.read_text().split()] if order.is_file() else None

    def clear_bucket(self) -> None:
        for p in self.s3dir.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    def url(self, name: str, throttled: bool = False) -> str:
        return f"http://{FAR_ADDR}:{self.http_port}/{name}"

    def server_cpu(self) -> dict[str, float]:
        cpu = super().server_cpu()
        cpu["delay_line"] = cpu_seconds([self.line_pid])
        return cpu
