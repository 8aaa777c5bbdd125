"""The named workloads: arrival patterns that yield (time, bytes) in time
order, built from a Poisson process with a piecewise-linear rate (steady
traffic) or from periodic bursts of large files."""

import bisect
from dataclasses import dataclass

from .params import GIB


def poisson(rng, rate_at, start, end, slice_secs=10.0):
    """Arrival times of a Poisson process whose rate is rate_at(t), held
    constant over each slice (exact for that step function: the process is
    memoryless, so each slice starts afresh)."""
    expo = rng.expovariate
    s0 = start
    while s0 < end:
        s1 = min(end, s0 + slice_secs)
        rate = rate_at((s0 + s1) / 2)
        if rate > 0:
            t = s0 + expo(rate)
            while t < s1:
                yield t
                t += expo(rate)
        s0 = s1


def piecewise(points):
    """rate(t) interpolated linearly between (seconds, rate) points."""
    xs = [p[0] for p in points]

    def rate(t):
        i = bisect.bisect_right(xs, t)
        if i == 0:
            return points[0][1]
        if i == len(points):
            return points[-1][1]
        (x0, y0), (x1, y1) = points[i - 1], points[i]
        return y0 if x1 == x0 else y0 + (y1 - y0) * (t - x0) / (x1 - x0)

    return rate


@dataclass(frozen=True)
class Workload:
    """A named arrival pattern: `arrivals(rng, load)` yields (time, bytes) in time order."""

    name: str
    about: str
    hours: float
    arrivals: object
    sweep: tuple


def steady_arrivals(points, size, hours):
    def gen(rng, load):
        pts = [(h * 3600, r * load) for h, r in points]
        for t in poisson(rng, piecewise(pts), 0.0, hours * 3600):
            yield t, size
    return gen


def burst_arrivals(every_h, first_h, count, within_s, lo, hi, hours):
    def gen(rng, load):
        n = round(count * load)
        t0 = first_h * 3600
        while t0 < hours * 3600:
            times = sorted(t0 + rng.uniform(0, within_s) for _ in range(n))
            for t in times:
                yield t, int(rng.uniform(lo, hi))
            t0 += every_h * 3600
    return gen


# A working day of 256 KiB files: a quiet night, a morning ramp, a plateau
# with a one-hour step (a batch submitted on top), an evening ramp down.
STEADY_POINTS = [(0, 20), (6, 20), (9, 250), (12, 250), (12, 400), (13, 400),
                 (13, 250), (17, 250), (21, 20), (24, 20)]
WORKLOADS = {
    w.name: w for w in (
        Workload("steady-small",
                 "256 KiB files, Poisson; 20 jobs/s at night, ramp to 250/s 06-09h, "
                 "a step to 400/s 12-13h, ramp down 17-21h; 24 h",
                 24, steady_arrivals(STEADY_POINTS, 256 * 1024, 24),
                 (4, 256, 1024, 4096, 16384)),
        Workload("bursty-large",
                 "bursts of 200 files of 1-8 GiB (uniform), all arriving within 5 min, "
                 "every 4 h from 01:00; 24 h",
                 24, burst_arrivals(4, 1, 200, 300, 1 * GIB, 8 * GIB, 24),
                 (1, 2, 4, 8, 16, 32)),
    )
}
