"""The text output: durations, the parameter and price lines, one run's
summary and a sweep's Markdown table (the JSON report is the result dicts
themselves, written by __main__)."""

from .params import FARGATE_GB_HOUR, FARGATE_VCPU_HOUR, REGION


def fmt_s(v):
    if v is None:
        return "-"
    if v < 60:
        return f"{v:.1f} s"
    if v < 3600:
        return f"{v / 60:.1f} min"
    return f"{v / 3600:.2f} h"


def describe_params(p):
    return (f"target {p.target:g} visible/task, tasks {p.min_tasks}-{p.max_tasks}, cooldowns "
            f"out {p.scale_out_cooldown:g} s / in {p.scale_in_cooldown:g} s, "
            f"{p.max_concurrent_jobs} jobs ({p.max_large_jobs} large) per task, "
            f"start-up {p.startup_secs:g} s, metric delay {p.metric_delay_secs:g} s, "
            f"protection {'on' if p.protection else 'off'}, grace "
            f"{min(p.shutdown_grace, p.stop_timeout):g} s; per task {p.small_jobs_per_task:g} "
            f"small jobs/s, {p.large_job_mibps:g} MiB/s per large job, {p.task_mibps:g} MiB/s "
            f"in all; load x{p.load:g}"
            + ("" if p.metric == "visible" else f"; metric ({p.metric}) / running tasks")
            + (f"; and busy slots/task target {p.slots_target:g}" if p.slots_target > 0
               else "; no busy-slots policy"))


def price_line(p):
    return (f"Fargate {REGION} Linux/x86_64 list price: ${FARGATE_VCPU_HOUR}/vCPU-h, "
            f"${FARGATE_GB_HOUR}/GB-h; a task of {p.task_vcpu:g} vCPU / {p.task_memory_gb:g} GB "
            f"= ${p.task_hour_price():.5f}/task-hour")


def summary_text(r, p, workload):
    w, lat = r["wait_s"], r["latency_s"]
    lines = [
        f"## {workload.name}: {workload.about}",
        f"   {describe_params(p)}",
        f"   jobs: {r['jobs_arrived']:,} arrived ({r['gib_arrived']:,} GiB), {r['jobs_done']:,} done, "
        f"{r['jobs_running_at_end']} running and {r['jobs_waiting_at_end']} waiting at the end, "
        f"{r['jobs_interrupted']} interrupted by scale-in",
        f"   task-hours {r['task_hours']:,.2f} -> ${r['cost_usd']:,.2f} over {r['hours']:g} h",
        f"   wait before start: p50 {fmt_s(w['p50'])}, p95 {fmt_s(w['p95'])}, "
        f"p99 {fmt_s(w['p99'])}, max {fmt_s(w['max'])} (mean {fmt_s(w['mean'])})",
        f"   arrival to done:   p50 {fmt_s(lat['p50'])}, p95 {fmt_s(lat['p95'])}, "
        f"p99 {fmt_s(lat['p99'])}, max {fmt_s(lat['max'])}",
        f"   peak tasks {r['peak_running_tasks']} running / {r['peak_desired_tasks']} desired; "
        f"peak visible backlog {r['peak_backlog']:,}; {r['scale_outs']} scale-outs, "
        f"{r['scale_ins']} scale-ins, {r['tasks_launched']} tasks launched",
    ]
    return "\n".join(lines)


def sweep_table(rows, workload, swept="target"):
    head = (f"| {'busy-slots target' if swept == 'slots_target' else 'target'} | task-hours | cost | wait p50 | p95 | p99 | max | peak tasks "
            "| scale-outs |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    body = [f"| {r[swept]:g} | {r['task_hours']:,.1f} | ${r['cost_usd']:,.2f} | "
            f"{fmt_s(r['wait_s']['p50'])} | {fmt_s(r['wait_s']['p95'])} | "
            f"{fmt_s(r['wait_s']['p99'])} | {fmt_s(r['wait_s']['max'])} | "
            f"{r['peak_running_tasks']} | {r['scale_outs']} |" for r in rows]
    return f"{workload.name} (max tasks {rows[0]['max_tasks']}):\n" + "\n".join([head] + body)
