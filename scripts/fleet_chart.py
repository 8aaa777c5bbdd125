"""Draws docs/bench-results/fleet.png from scripts/fleet-bench's results.jsonl.

Usage: fleet_chart.py RESULTS.jsonl OUT.png
Left: small jobs — jobs/s and AWS calls per job for each configuration.
Right: large jobs — each job's rate when 8 share a worker, against one job.
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8") if line.strip()]
    # The measured small runs; a run with perf attached is a profile, not a figure.
    small = [r for r in rows if r["result"].get("scenario") == "small" and "perf" not in r["config"]]
    large = [r["result"] for r in rows if r["result"].get("scenario") == "large"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = [
        f'{r["result"]["workers"]} worker{"s" if r["result"]["workers"] > 1 else ""}\n'
        f'{"4 slots (old)" if r["config"] != "defaults" else "32 slots / 4 large"}'
        for r in small[-3:]
    ]
    rates = [r["result"]["jobs_per_second"] for r in small[-3:]]
    calls = [r["result"]["aws_calls_per_job"] for r in small[-3:]]
    bars = left.bar(labels, rates, color="#4c72b0")
    left.bar_label(bars, labels=[f"{c} calls/job" for c in calls], fontsize=8)
    left.set_ylabel("small jobs per second (256 KiB)")
    last = small[-1] if small else {}
    stand_ins = ", ".join(
        f"{service} {last.get(key, 'moto')}"
        for service, key in (("DynamoDB", "dynamodb"), ("SQS", "sqs"), ("S3", "s3"))
    )
    left.set_title(f"small jobs ({stand_ins})", fontsize=9)
    for run, marker in ((1, "o"), (2, "s")):
        eight = [r for r in large if r["run"] == run and r["jobs"] > 1]
        one = [r for r in large if r["run"] == run and r["jobs"] == 1]
        if eight:
            rates = eight[0]["job_mib_per_second"]
            right.scatter([f"8 × 256 MiB, run {run}"] * len(rates), rates, marker=marker)
            right.scatter([f"8 × 256 MiB, run {run}"], [eight[0]["aggregate_mib_per_second"]],
                          marker="_", s=600, color="black")
        if one:
            right.scatter([f"1 × 2 GiB, run {run}"], [one[0]["aggregate_mib_per_second"]],
                          marker="_", s=600, color="black")
    right.set_ylabel("MiB/s (dots: each job; bar: aggregate)")
    right.set_title("large jobs sharing one worker")
    right.tick_params(axis="x", labelsize=8)
    right.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
