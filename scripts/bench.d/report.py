"""Turns a benchmark's results.json into tables (markdown, CSV) and a chart.

    report.py OUT_DIR [--doc docs/benchmarks.md]

Writes OUT_DIR/runs.csv (every run), summary.csv (medians), results.md (the
tables) and chart.png. With --doc, replaces the text between the
`<!-- bench:results:begin -->` and `<!-- bench:results:end -->` markers of
that file with results.md. Medians are over the runs of one invocation.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"
sys.path.insert(0, str(Path(__file__).parent))
from measure import noisy  # noqa: E402


def summarize(all_runs: list[dict]) -> dict:
    runs = [r for r in all_runs if not r.get("discarded")]
    good = [r for r in runs if r["ok"] and r["verified"] is not False]
    med = lambda k: statistics.median(r[k] for r in good) if good else float("nan")  # noqa: E731
    sink = [
        (r["server_cpu_s"]["s3s_fs"] + r["server_cpu_s"]["nginx"]) / (r["size_mib"] / 1024) for r in good
    ]
    return {
        "n": len(runs),
        "ok": len(good),
        "verified": sum(1 for r in runs if r["verified"]),
        "stores": runs[0]["verified"] is not None,
        "noisy": sum(1 for r in runs if noisy(r)),
        "retried": len(all_runs) - len(runs),
        "mb_s": med("mb_s"),
        "mb_s_min": min((r["mb_s"] for r in good), default=float("nan")),
        "mb_s_max": max((r["mb_s"] for r in good), default=float("nan")),
        "cpu_s_per_gib": med("cpu_s_per_gib"),
        "servers_cpu_s_per_gib": statistics.median(sink) if sink else float("nan"),
        "max_rss_mib": med("max_rss_mib"),
        "max_rss_mib_max": max((r["max_rss_mib"] for r in good), default=float("nan")),
        "load_before": statistics.median(r["load_before"] for r in runs),
        "load_after": statistics.median(r["load_after"] for r in runs),
    }


def group(runs: list[dict], scenario: str) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        if r["scenario"] == scenario:
            out[(r["size_mib"], r["tool"], tuple(sorted(r["params"].items())))].append(r)
    return out


def fmt(x: float, digits: int = 1) -> str:
    return "–" if x != x else f"{x:.{digits}f}"


def cell(tool: str) -> str:
    name = tool.replace("|", "\\|")
    return f"**{name}**" if tool == "ferry" else name


def noise(s: dict) -> str:
    return f"{s['noisy']}/{s['n']}" + (f" (+{s['retried']} redone)" if s["retried"] else "")


def checks(s: dict) -> str:
    return f"{s['verified']}/{s['n']}" if s["stores"] else f"n/a ({s['ok']}/{s['n']} ok)"


def main_tables(runs: list[dict], rows: list[dict]) -> list[str]:
    lines = []
    groups = group(runs, "main")
    for size in sorted({k[0] for k in groups}):
        summ = {tool: summarize(rs) for (sz, tool, _), rs in groups.items() if sz == size}
        kinds = {r["tool"]: r["kind"] for r in runs if r["scenario"] == "main"}
        peers = [t for t in summ if kinds[t] == "peer"]
        best_peer = max((summ[t]["mb_s"] for t in peers), default=float("nan"))
        origin = summ.get("limit: curl > /dev/null", {}).get("mb_s", float("nan"))
        uploads = [summ[t]["mb_s"] for t in summ if kinds[t] == "limit" and t.endswith("FILE")]
        limit = min(origin, max(uploads)) if uploads else origin
        frugal = min((summ[t]["cpu_s_per_gib"] for t in peers), default=float("nan"))
        lines += [
            f"### {size} MiB object ({len([r for r in next(iter(groups.values())) if not r.get('discarded')])} runs per tool, medians)",
            "",
            f"Limit = min(origin → /dev/null, fastest upload of the local file) = **{fmt(limit)} MB/s**; "
            f"best peer **{fmt(best_peer)} MB/s**; most frugal peer **{fmt(frugal, 2)} CPU-s/GiB**.",
            "",
            "| tool | MB/s | × best peer | × limit | CPU-s/GiB | × frugal peer | servers CPU-s/GiB | peak RSS MiB | sha256 ok | noisy runs |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        order = sorted(summ, key=lambda t: ({"ferry": 0, "peer": 1, "limit": 2}[kinds[t]], -summ[t]["mb_s"]))
        for tool in order:
            s = summ[tool]
            lines.append(
                f"| {cell(tool)} | {fmt(s['mb_s'])} | {fmt(s['mb_s'] / best_peer, 2)} | {fmt(s['mb_s'] / limit, 2)} "
                f"| {fmt(s['cpu_s_per_gib'], 2)} | {fmt(s['cpu_s_per_gib'] / frugal, 2)} "
                f"| {fmt(s['servers_cpu_s_per_gib'], 2)} | {fmt(s['max_rss_mib'])} | {checks(s)} | {noise(s)} |"
            )
            rows.append({"scenario": "main", "size_mib": size, "tool": tool, "params": "", **s,
                         "x_best_peer": s["mb_s"] / best_peer, "x_limit": s["mb_s"] / limit})
        lines.append("")
    return lines


def throttle_table(runs: list[dict], rows: list[dict], meta: dict) -> list[str]:
    groups = group(runs, "throttle")
    if not groups:
        return []
    summ = {tool: summarize(rs) for (_, tool, _), rs in groups.items()}
    size = next(iter(groups))[0]
    kinds = {r["tool"]: r["kind"] for r in runs if r["scenario"] == "throttle"}
    best = max((summ[t]["mb_s"] for t in summ if kinds[t] == "peer"), default=float("nan"))
    rate = meta["settings"]["throttle_mb_s_per_connection"]
    lines = [
        f"### Throttled origin: nginx `limit_rate` {rate:g} MB/s per connection, {size} MiB object",
        "",
        "| tool | MB/s | × best single-stream peer | CPU-s/GiB | peak RSS MiB | sha256 ok | noisy runs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for tool in sorted(summ, key=lambda t: -summ[t]["mb_s"]):
        s = summ[tool]
        lines.append(
            f"| {cell(tool)} | {fmt(s['mb_s'])} | {fmt(s['mb_s'] / best, 2)} "
            f"| {fmt(s['cpu_s_per_gib'], 2)} | {fmt(s['max_rss_mib'])} | {checks(s)} | {noise(s)} |"
        )
        rows.append({"scenario": "throttle", "size_mib": size, "tool": tool, "params": "", **s,
                     "x_best_peer": s["mb_s"] / best, "x_limit": float("nan")})
    return lines + [""]


def far_table(runs: list[dict], rows: list[dict]) -> list[str]:
    """ferry and the peers against what parallel ranged reads get from the
    same far origin, one block per round-trip time."""
    groups = group(runs, "far")
    if not groups:
        return []
    size = next(iter(groups))[0]
    kinds = {r["tool"]: r["kind"] for r in runs if r["scenario"] == "far"}
    by_rtt: dict[int, dict[str, dict]] = defaultdict(dict)
    for (_, tool, params), rs in groups.items():
        by_rtt[dict(params)["rtt_ms"]][tool] = summarize(rs)
    limit_tool = "limit: 8 ranged curls > /dev/null"
    lines = [
        f"### Far origin: {size} MiB through a delay line (MTU 9000), ferry-s3-sink beside the client",
        "",
        "× 8 ranges = MB/s ÷ what 8 parallel ranged curls (to /dev/null, storing nothing) got at the "
        "same round-trip time in the same run.",
        "",
        "| RTT ms | tool | MB/s | × 8 ranges | CPU-s/GiB | peak RSS MiB | sha256 ok | noisy runs |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    order = {"ferry": 0, "peer": 1, "limit": 2}
    for rtt in sorted(by_rtt):
        summ = by_rtt[rtt]
        limit = summ.get(limit_tool, {}).get("mb_s", float("nan"))
        for tool in sorted(summ, key=lambda t: (order[kinds[t]], -summ[t]["mb_s"])):
            s = summ[tool]
            lines.append(
                f"| {rtt} | {cell(tool)} | {fmt(s['mb_s'])} | {fmt(s['mb_s'] / limit, 2)} "
                f"| {fmt(s['cpu_s_per_gib'], 2)} | {fmt(s['max_rss_mib'])} | {checks(s)} | {noise(s)} |"
            )
            rows.append({"scenario": "far", "size_mib": size, "tool": tool, "params": f"rtt_ms={rtt}", **s,
                         "x_best_peer": float("nan"), "x_limit": s["mb_s"] / limit})
    return lines + [""]


def rss_table(runs: list[dict], rows: list[dict]) -> list[str]:
    by_size: dict[int, list[dict]] = defaultdict(list)
    for r in runs:
        if r["tool"] == "ferry" and r["scenario"] in ("main", "rss"):
            by_size[r["size_mib"]].append(r)
    if not by_size:
        return []
    lines = [
        "### ferry's peak RSS by object size (default flags: 16 MiB parts, 8 in flight, 1024 MiB budget)",
        "",
        "| object MiB | runs | peak RSS MiB, median | max |",
        "|---:|---:|---:|---:|",
    ]
    for size in sorted(by_size):
        s = summarize(by_size[size])
        lines.append(f"| {size} | {s['n']} | {fmt(s['max_rss_mib'])} | {fmt(s['max_rss_mib_max'])} |")
        rows.append({"scenario": "rss", "size_mib": size, "tool": "ferry", "params": "", **s,
                     "x_best_peer": float("nan"), "x_limit": float("nan")})
    return lines + [""]


def sweep_table(runs: list[dict], rows: list[dict]) -> list[str]:
    groups = group(runs, "sweep")
    if not groups:
        return []
    cells = {}
    for (size, _, params), rs in groups.items():
        p = dict(params)
        cells[(p["part_size_mib"], p["concurrency"])] = summarize(rs)
        rows.append({"scenario": "sweep", "size_mib": size, "tool": "ferry",
                     "params": f"part={p['part_size_mib']} conc={p['concurrency']}", **cells[(p["part_size_mib"], p["concurrency"])],
                     "x_best_peer": float("nan"), "x_limit": float("nan")})
    parts = sorted({k[0] for k in cells})
    concs = sorted({k[1] for k in cells})
    n = len([r for r in next(iter(groups.values())) if not r.get("discarded")])
    lines = [
        f"### Sweep: ferry at {size} MiB, part size × concurrency ({n} run(s) each; MB/s · CPU-s/GiB · peak RSS MiB)",
        "",
        "| part MiB \\ in flight | " + " | ".join(str(c) for c in concs) + " |",
        "|---|" + "---:|" * len(concs),
    ]
    for p in parts:
        row = []
        for c in concs:
            s = cells.get((p, c))
            row.append("–" if s is None else f"{fmt(s['mb_s'])} · {fmt(s['cpu_s_per_gib'], 2)} · {fmt(s['max_rss_mib'], 0)}"
                       + (" ⚠" if s and s["noisy"] else ""))
        lines.append(f"| {p} | " + " | ".join(row) + " |")
    return lines + ["", "⚠ = a run overlapped other CPU work (see runs.csv)." , ""]


def machine_lines(meta: dict) -> list[str]:
    m = meta["machine"]
    v = m["versions"]
    return [
        f"Run {meta['started_at']} → {meta['finished_at']} on {m['nproc']} cores ({m['cpu']}), "
        f"{m['memory_gib']} GiB RAM, Linux {m['kernel']}.",
        f"ferry {v['ferry']}; {v['s3s-fs']}; {v['nginx']}; {v['rclone']}; {v['aws']}; s5cmd {v['s5cmd']}; "
        f"{' '.join(v['curl'].split()[:2])}.",
        "",
    ]


def chart(runs: list[dict], path: Path, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    origin_tool = "limit: curl > /dev/null"  # far off the scale: quoted in the title
    main = group(runs, "main")
    sizes = sorted({k[0] for k in main})
    kinds = {r["tool"]: r["kind"] for r in runs}
    rank = {"ferry": 0, "peer": 1, "limit": 2}
    names = sorted({k[1] for k in main} - {origin_tool}, key=lambda t: (rank[kinds[t]], t), reverse=True)
    color = {"ferry": "#d62728", "peer": "#1f77b4", "limit": "#8c8c8c"}
    throttle = group(runs, "throttle")
    ncols = 3 if throttle else 2
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 1.6 + 0.55 * len(names)), constrained_layout=True)
    height = 0.8 / max(len(sizes), 1)
    label = lambda t: t.replace("limit: ", "limit: ")  # noqa: E731
    for metric, ax, title in (("mb_s", axes[0], "MB/s (higher is better)"),
                              ("cpu_s_per_gib", axes[1], "client CPU-s per GiB (lower is better)")):
        for i, size in enumerate(sizes):
            vals = [summarize(main[(size, t, ())])[metric] if (size, t, ()) in main else 0 for t in names]
            ys = [j + ((len(sizes) - 1) / 2 - i) * height for j in range(len(names))]
            bars = ax.barh(ys, vals, height, color=[color[kinds[t]] for t in names],
                           alpha=1.0 if i == len(sizes) - 1 else 0.55, edgecolor="black", linewidth=0.4,
                           label=f"{size} MiB")
            ax.bar_label(bars, labels=[f"{v:.0f}" if metric == "mb_s" else f"{v:.1f}" for v in vals],
                         fontsize=7, padding=2)
        ax.set_yticks(range(len(names)), [label(t) for t in names], fontsize=8)
        sub = ", ".join(f"{s} MiB" for s in sizes)
        if metric == "mb_s" and any(k[1] == origin_tool for k in main):
            o = [fmt(summarize(main[(s, origin_tool, ())])["mb_s"], 0) for s in sizes if (s, origin_tool, ()) in main]
            sub += f"\norigin → /dev/null (curl): {' / '.join(o)} MB/s"
        ax.set_title(f"{title}\nbars top to bottom: {sub}", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.15)
    if throttle:
        ax = axes[2]
        tnames = sorted({k[1] for k in throttle}, key=lambda t: (rank[kinds[t]], t), reverse=True)
        vals = [summarize(throttle[next(k for k in throttle if k[1] == t)])["mb_s"] for t in tnames]
        bars = ax.barh(range(len(tnames)), vals, 0.6, color=[color[kinds[t]] for t in tnames],
                       edgecolor="black", linewidth=0.4)
        ax.bar_label(bars, labels=[f"{v:.0f}" for v in vals], fontsize=7, padding=2)
        ax.set_yticks(range(len(tnames)), tnames, fontsize=8)
        rate = meta["settings"]["throttle_mb_s_per_connection"]
        size = next(iter(throttle))[0]
        ax.set_title(f"origin throttled to {rate:g} MB/s per connection\n{size} MiB object, MB/s", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.15)
    m = meta["machine"]
    fig.suptitle(f"ferry vs peers: HTTP (nginx) → S3 (s3s-fs) on loopback, {m['nproc']} cores ({m['cpu']}), "
                 f"medians of {meta['settings']['runs']} runs", fontsize=10)
    fig.savefig(path, dpi=100)


def main(argv: list[str]) -> int:
    out = Path(argv[1])
    meta = json.loads((out / "results.json").read_text())
    runs = meta["runs"]
    rows: list[dict] = []
    lines = machine_lines(meta)
    lines += main_tables(runs, rows)
    lines += throttle_table(runs, rows, meta)
    lines += far_table(runs, rows)
    lines += rss_table(runs, rows)
    lines += sweep_table(runs, rows)
    text = "\n".join(lines)
    (out / "results.md").write_text(text)

    fields = ["scenario", "size_mib", "tool", "run", "params", "ok", "verified", "wall_s", "mb_s", "cpu_s",
              "cpu_s_per_gib", "max_rss_mib", "s3s_fs_cpu_s", "nginx_cpu_s", "foreign_cpu_s", "load_before",
              "load_after", "busy_before", "busy_after", "waited_for_quiet_s", "started_at"]
    with (out / "runs.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fields, extrasaction="ignore")
        w.writeheader()
        for r in runs:
            w.writerow({**r, "params": " ".join(f"{k}={v}" for k, v in r["params"].items()),
                        "s3s_fs_cpu_s": r["server_cpu_s"]["s3s_fs"], "nginx_cpu_s": r["server_cpu_s"]["nginx"],
                        "busy_before": " ".join(r["busy_before"]), "busy_after": " ".join(r["busy_after"])})
    if rows:
        with (out / "summary.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, list(rows[0]))
            w.writeheader()
            for row in rows:
                w.writerow({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()})
    if any(r["scenario"] in ("main", "throttle") for r in runs):
        chart(runs, out / "chart.png", meta)

    if len(argv) > 3 and argv[2] == "--doc":
        doc = Path(argv[3])
        body = doc.read_text() if doc.exists() else ""
        if BEGIN in body and END in body:
            head, rest = body.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            doc.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
        else:
            print(f"warning: {doc} has no {BEGIN} … {END} markers; not updated", file=sys.stderr)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
