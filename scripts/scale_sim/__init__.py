"""Discrete-event simulator of the deployed fleet's autoscaling (scripts/scale-sim).

It owns one question: for a given arrival pattern, what do the stack's scaling
settings (deploy/cloudformation/ferry.yaml) cost in task-hours and in how long
jobs wait before they start? It replays the queue, each Fargate task's job
slots and throughput, Application Auto Scaling's target tracking on visible
messages per running task (its alarms, cooldowns and clamps), task start-up,
scale-in protection and the SIGTERM drain. docs/scaling.md explains the model,
its figures and what it leaves out.

It does not talk to AWS, run ferry, or model failures, retries, DynamoDB or
S3 limits (docs/scale.md covers those). The simulation is Python's standard
library only; pyyaml (the project's .venv) reads the template's defaults, and
matplotlib (.ferry/chart-venv) is imported only by `--draw`, which `--plot`
runs in the Python named by FERRY_CHART_PYTHON.

    scripts/scale-sim                             # both workloads, template defaults
    scripts/scale-sim --workload bursty-large --target 2 --max-tasks 50 --plot out.png
    scripts/scale-sim --workload steady-small --sweep 4,64,1024 [--json]
    scripts/scale-sim --workload steady-small --metric visible+inflight --target 24   # a what-if
    scripts/scale-sim --check                     # self-checks, < 20 s; exit 1 on failure

(or `python -m scale_sim ARGS` with scripts/ on PYTHONPATH, as the wrapper does).

Layout, in the order a run uses it:

    params.py     the template's defaults (pyyaml), Params, throughput figures,
                  Fargate prices, Application Auto Scaling's alarm constants
    workloads.py  the named arrival patterns (Poisson, bursts)
    model.py      the event loop: Job, Task, Sim (queue, tasks, ECS, scaling), pct
    runs.py       one run (simulate) and a sweep of targets in parallel
    report.py     the text output: parameter and price lines, summaries, sweep tables
    plot.py       the plot's series, and the drawing (matplotlib, chart venv only)
    checks.py     the --check self-checks
    __main__.py   the command line: arguments, the JSON report, main
"""
