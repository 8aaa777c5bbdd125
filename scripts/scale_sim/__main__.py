"""The command line (`python -m scale_sim`, run by scripts/scale-sim): parses
the arguments over the template's defaults, runs the workloads (one run, a
sweep, or the self-checks), prints the text or JSON report and asks for plots.
`--draw`, the chart venv's half of a plot, is answered before anything else."""

import argparse
import json
import os
import sys
from dataclasses import asdict, fields

from . import __doc__ as PACKAGE_DOC
from .checks import run_checks
from .params import (FARGATE_GB_HOUR, FARGATE_VCPU_HOUR, LARGE_JOB_MIBPS, REGION,
                     SMALL_JOBS_PER_TASK, TASK_MIBPS, TEMPLATE, Params, template_defaults)
from .plot import draw, plot
from .report import describe_params, price_line, summary_text, sweep_table
from .runs import simulate, sweep
from .workloads import WORKLOADS


def parse(argv, defaults):
    a = argparse.ArgumentParser(
        prog="scale-sim", description=PACKAGE_DOC.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a.add_argument("--workload", default="all",
                   help="comma-separated: " + ", ".join(WORKLOADS) + ", or all")
    a.add_argument("--seed", type=int, default=1)
    a.add_argument("--hours", type=float, help="simulate this long instead of the workload's length")
    a.add_argument("--load", type=float, default=1.0, help="multiply arrival rates (burst sizes)")
    a.add_argument("--template", default=str(TEMPLATE), help="CloudFormation template to read defaults from")
    g = a.add_argument_group("scaling (defaults from the template; shown: the stack's)")
    for name, kind, text in (
            ("target", float, "TargetBacklogPerTask"),
            ("slots_target", float, "TargetBusySlotsPerTask (0: no busy-slots policy)"),
            ("min_tasks", int, "MinTasks"),
            ("max_tasks", int, "MaxTasks"), ("scale_out_cooldown", float, "ScaleOutCooldown (s)"),
            ("scale_in_cooldown", float, "ScaleInCooldown (s)"),
            ("max_concurrent_jobs", int, "MaxConcurrentJobs"), ("max_large_jobs", int, "MaxLargeJobs"),
            ("stop_timeout", float, "StopTimeout (s)"), ("shutdown_grace", float, "ShutdownGraceSecs"),
            ("task_vcpu", float, "TaskCpu / 1024"), ("task_memory_gb", float, "TaskMemory / 1024"),
            ("part_size_mib", float, "FERRY_PART_SIZE_MIB: larger jobs are multipart")):
        g.add_argument("--" + name.replace("_", "-"), dest=name, type=kind,
                       default=defaults.get(name), help=text)
    m = a.add_argument_group("model")
    m.add_argument("--startup-secs", type=float, default=60.0, help="image pull + start before a task takes work")
    m.add_argument("--metric-delay-secs", type=float, default=60.0,
                   help="how long after its minute ends a datapoint reaches the alarms")
    m.add_argument("--no-protection", dest="protection", action="store_false",
                   help="scale-in stops busy tasks too (SIGTERM, drain for the grace period)")
    m.add_argument("--metric", choices=("visible", "visible+inflight"), default="visible",
                   help="what is divided by running tasks: the template's visible messages, "
                        "or (what-if) visible + not visible (received) messages")
    m.add_argument("--small-jobs-per-task", type=float, default=SMALL_JOBS_PER_TASK)
    m.add_argument("--large-job-mibps", type=float, default=LARGE_JOB_MIBPS)
    m.add_argument("--task-mibps", type=float, default=TASK_MIBPS)
    o = a.add_argument_group("output")
    o.add_argument("--sweep", nargs="?", const="default", metavar="T1,T2,…",
                   help="run these targets (default: the workload's list) and print a table")
    o.add_argument("--sweep-slots", action="store_true",
                   help="--sweep varies the busy-slots policy's target instead of the backlog one")
    o.add_argument("--procs", type=int, default=os.cpu_count() or 1, help="parallel sweep runs")
    o.add_argument("--plot", metavar="FILE.png", help="draw tasks, backlog and waits over time "
                   "(one workload; FILE may contain {workload})")
    o.add_argument("--plot-hours", metavar="FROM,TO", help="draw only these hours of the run")
    o.add_argument("--json", action="store_true", help="print JSON instead of text")
    o.add_argument("--json-out", metavar="FILE", help="also write the JSON report to FILE")
    o.add_argument("--check", action="store_true", help="run the self-checks and exit")
    o.add_argument("--draw", nargs=2, metavar=("SERIES.json", "OUT.png"), help=argparse.SUPPRESS)
    return a.parse_args(argv)


def main(argv):
    if argv[:1] == ["--draw"]:  # the chart venv has matplotlib but no pyyaml
        draw(argv[1], argv[2], [float(x) for x in argv[3].split(",")] if len(argv) > 3 else None)
        return 0
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--template", default=str(TEMPLATE))
    defaults = template_defaults(pre.parse_known_args(argv)[0].template)
    a = parse(argv, defaults)
    p = Params(**{f.name: getattr(a, f.name) for f in fields(Params)})
    if a.check:
        return run_checks(Params(**defaults), a.seed)
    names = list(WORKLOADS) if a.workload == "all" else a.workload.split(",")
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        sys.exit(f"unknown workload(s): {', '.join(unknown)} (have: {', '.join(WORKLOADS)})")
    report = {"params": asdict(p), "price": {"region": REGION, "vcpu_hour": FARGATE_VCPU_HOUR,
              "gb_hour": FARGATE_GB_HOUR, "task_hour": p.task_hour_price()},
              "seed": a.seed, "workloads": {}}
    if not a.json:
        print(price_line(p))
    for name in names:
        w = WORKLOADS[name]
        if a.sweep:
            targets = w.sweep if a.sweep == "default" else [float(x) for x in a.sweep.split(",")]
            swept = "slots_target" if a.sweep_slots else "target"
            rows = sweep(p, w, targets, a.seed, a.procs, swept)
            report["workloads"][name] = {"about": w.about, "sweep": rows}
            if not a.json:
                print(f"\n{w.about}\n{describe_params(p)}")
                print(sweep_table(rows, w, swept))
            continue
        r, sim = simulate(p, w, a.seed, a.hours)
        report["workloads"][name] = {"about": w.about, "result": r}
        if not a.json:
            print("\n" + summary_text(r, p, w))
        if a.plot:
            out = a.plot.replace("{workload}", name)
            plot(sim, out, [float(x) for x in a.plot_hours.split(",")] if a.plot_hours else None)
            if not a.json:
                print(f"   plot: {out}")
    if a.json:
        json.dump(report, sys.stdout, indent=1)
        print()
    if a.json_out:
        with open(a.json_out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
