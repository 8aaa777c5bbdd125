"""The plot: a run's per-minute series (tasks, backlog, waits) and its three
panels. `plot` runs in the simulator's Python and hands the series to `draw`
in FERRY_CHART_PYTHON (`python -m scale_sim --draw`), the one Python with
matplotlib; `draw` needs nothing else (the chart venv has no pyyaml)."""

import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile

from .model import pct
from .params import PERIOD_SECS

# The folder holding this package, so that FERRY_CHART_PYTHON can import it.
PACKAGE_PARENT = pathlib.Path(__file__).resolve().parent.parent


def series_of(sim):
    """What the three panels draw: one row per minute."""
    waits = {}
    for minute, ws in sim.minute_waits.items():
        v = pct(ws)
        waits[minute] = (v["p50"], v["p95"], v["max"])
    return {
        "title": f"{sim.workload.name}: backlog target {sim.p.target:g}"
                 + (f", busy-slots target {sim.p.slots_target:g}" if sim.p.slots_target > 0 else "")
                 + ", tasks "
                 f"{sim.p.min_tasks}-{sim.p.max_tasks}, protection {'on' if sim.p.protection else 'off'}",
        "target": sim.p.target,
        "t": [s[0] for s in sim.series], "running": [s[1] for s in sim.series],
        "desired": [s[2] for s in sim.series], "visible": [s[3] for s in sim.series],
        "wait_t": sorted(m * PERIOD_SECS for m in waits),
        "wait": [waits[m] for m in sorted(waits)],
    }


def plot(sim, out, window=None):
    """Writes the series and draws them with matplotlib in FERRY_CHART_PYTHON."""
    chart_python = os.environ.get("FERRY_CHART_PYTHON", sys.executable)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(series_of(sim), f)
    try:
        extra = [f"{window[0]},{window[1]}"] if window else []
        path = os.pathsep.join(filter(None, (str(PACKAGE_PARENT), os.environ.get("PYTHONPATH"))))
        subprocess.run([chart_python, "-m", __package__, "--draw", f.name, str(out)] + extra,
                       check=True, env=dict(os.environ, PYTHONPATH=path))
    finally:
        os.unlink(f.name)


def draw(series_path, out, window=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = json.load(open(series_path, encoding="utf-8"))
    lo, hi = window or (-math.inf, math.inf)
    keep = [i for i, t in enumerate(s["t"]) if lo <= t / 3600 <= hi]
    hours = [s["t"][i] / 3600 for i in keep]
    pick = lambda key: [s[key][i] for i in keep]  # noqa: E731
    fig, (a, b, c) = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True)
    a.step(hours, pick("desired"), where="post", label="desired", color="#dd8452")
    a.step(hours, pick("running"), where="post", label="running", color="#4c72b0")
    a.set_ylabel("tasks")
    a.set_ylim(bottom=0)
    a.legend(loc="upper right")
    a.set_title(s["title"])
    b.plot(hours, pick("visible"), color="#55a868", label="visible messages")
    b.plot(hours, [s["target"] * r for r in pick("running")], color="grey", lw=0.8, ls="--",
           label="target x running tasks")
    b.set_ylabel("visible backlog")
    b.set_yscale("symlog", linthresh=10)
    b.legend(loc="upper right")
    waits = [(t / 3600, w) for t, w in zip(s["wait_t"], s["wait"]) if lo <= t / 3600 <= hi]
    top = max((w[2] for _, w in waits), default=0)
    unit, div = ("min", 60) if top > 180 else ("s", 1)
    for i, (label, color) in enumerate((("p50", "#4c72b0"), ("p95", "#dd8452"), ("max", "#c44e52"))):
        c.plot([h for h, _ in waits], [w[i] / div for _, w in waits], ".", ms=3, color=color, label=label)
    c.set_ylabel(f"wait before start ({unit})\nby minute of arrival")
    c.set_ylim(bottom=0)
    c.set_xlabel("hours")
    c.legend(loc="upper right", markerscale=3)
    for ax in (a, b, c):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
