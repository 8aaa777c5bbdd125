"""A userspace delay line: a link with a fixed round-trip time between two
network namespaces, for benchmarks of far-away origins.

This kernel has no netem qdisc, so the delay is made here: two TUN devices,
one moved into each namespace, and per direction a thread that reads every
packet from one device and writes it to the other once `rtt / 2` has passed. Packets
leave in the order they came (a constant delay needs no reordering), and a
direction holding more than `--queue-mib` drops at the tail, as a router's
buffer would. An MTU of 9000 keeps the packet rate (and these threads' CPU)
low enough that the link, not the line, is what a benchmark measures; the
line reports its packet and drop counts on stderr.

    delay_line.py --near NS --far NS --rtt-ms 50

Run as root; the namespaces must exist (`ip netns add`). Prints `ready` once
both ends have their addresses, then forwards until SIGTERM/SIGINT. The TUN
devices exist only while this process holds them: they vanish when it ends.
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
READS_PER_WAKE = 64
STATS_EVERY_S = 5.0


def open_tun(name: str) -> int:
    """A TUN device (IP packets, no header) named `name`, in this namespace."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def set_up_end(fd_name: str, netns: str, address: str, prefix: int, mtu: int) -> None:
    ip("link", "set", "dev", fd_name, "netns", netns)
    ip("-n", netns, "link", "set", "dev", "lo", "up")
    # A long transmit queue: a burst waits for this process to read it
    # instead of being dropped at the device (500 packets by default).
    ip("-n", netns, "link", "set", "dev", fd_name, "mtu", str(mtu), "txqueuelen", "20000", "up")
    ip("-n", netns, "addr", "add", f"{address}/{prefix}", "dev", fd_name)


class Direction:
    """One way through the line: packets read from `src` wait here until due."""

    def __init__(self, name: str, src: int, dst: int, delay_s: float, limit_bytes: int):
        self.name, self.src, self.dst = name, src, dst
        self.delay_s, self.limit = delay_s, limit_bytes
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.queued = 0
        self.packets = self.bytes = self.dropped = self.peak = 0

    def read(self, now: float, mtu: int) -> None:
        due = now + self.delay_s
        for _ in range(READS_PER_WAKE):
            try:
                packet = os.read(self.src, mtu + 64)
            except BlockingIOError:
                return
            if self.queued + len(packet) > self.limit:
                self.dropped += 1
                continue
            self.queue.append((due, packet))
            self.queued += len(packet)
            self.peak = max(self.peak, self.queued)

    def send_due(self, now: float) -> None:
        queue = self.queue
        while queue and queue[0][0] <= now:
            _, packet = queue.popleft()
            self.queued -= len(packet)
            try:
                os.write(self.dst, packet)
                self.packets += 1
                self.bytes += len(packet)
            except BlockingIOError:
                self.dropped += 1

    def run(self, mtu: int, stopped) -> None:
        poller = select.epoll()
        poller.register(self.src, select.EPOLLIN)
        while not stopped():
            now = time.monotonic()
            timeout = max(0.0, self.queue[0][0] - now) if self.queue else STATS_EVERY_S
            try:
                events = poller.poll(timeout)
            except InterruptedError:
                continue
            now = time.monotonic()
            if events:
                self.read(now, mtu)
            self.send_due(now)

    def stats(self) -> str:
        return (f"{self.name}: {self.packets} packets, {self.bytes / 1e6:.1f} MB, "
                f"{self.dropped} dropped, peak queue {self.peak / 1e6:.1f} MB")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--near", required=True, help="namespace of the client end")
    p.add_argument("--far", required=True, help="namespace of the origin end")
    p.add_argument("--rtt-ms", type=float, required=True, help="round-trip time to add")
    p.add_argument("--near-addr", default="10.201.0.1")
    p.add_argument("--far-addr", default="10.201.0.2")
    p.add_argument("--prefix", type=int, default=24)
    p.add_argument("--mtu", type=int, default=9000)
    p.add_argument("--queue-mib", type=int, default=64, help="per direction, then tail drop")
    args = p.parse_args()

    stop = False

    def on_signal(_signum, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # Unique names in this namespace while both still live here.
    tag = os.getpid() % 100000
    near_name, far_name = f"dln{tag}", f"dlf{tag}"
    near_fd, far_fd = open_tun(near_name), open_tun(far_name)
    set_up_end(near_name, args.near, args.near_addr, args.prefix, args.mtu)
    set_up_end(far_name, args.far, args.far_addr, args.prefix, args.mtu)

    delay = args.rtt_ms / 2000.0
    limit = args.queue_mib << 20
    directions = [
        Direction("to far", near_fd, far_fd, delay, limit),
        Direction("to near", far_fd, near_fd, delay, limit),
    ]
    # One thread per direction: the kernel's work for a written packet (the
    # receiving TCP stack) runs in the writer's context, and the two
    # directions' shares of it then use both cores (the GIL is released
    # around every read and write).
    threads = [
        threading.Thread(target=d.run, args=(args.mtu, lambda: stop), daemon=True)
        for d in directions
    ]
    for t in threads:
        t.start()
    print(f"ready {args.near}:{args.near_addr} <-> {args.far}:{args.far_addr} "
          f"rtt {args.rtt_ms} ms mtu {args.mtu}", flush=True)
    next_stats = time.monotonic() + STATS_EVERY_S
    while not stop:
        time.sleep(0.2)
        if time.monotonic() >= next_stats or stop:
            print("; ".join(d.stats() for d in directions), file=sys.stderr, flush=True)
            next_stats += STATS_EVERY_S
    return 0


if __name__ == "__main__":
    sys.exit(main())
