"""The self-checks (`--check`): small runs whose outcome is known, against
the model's bookkeeping (conservation of jobs, Little's law), AWS's
documented scaling behaviour, MaxTasks, scale-in protection and determinism.
Each check returns a list of (name, ok, detail); run_checks prints PASS/FAIL
lines and returns the exit status."""

import sys
import time
from dataclasses import replace

from .params import GIB, PERIOD_SECS
from .runs import simulate
from .workloads import Workload, burst_arrivals, steady_arrivals


def _conserved(r):
    ok = (r["jobs_arrived"] == r["jobs_done"] + r["jobs_running_at_end"] + r["jobs_waiting_at_end"]
          and r["job_starts"] == r["jobs_done"] + r["jobs_interrupted"] + r["jobs_running_at_end"])
    return ok, (f"{r['jobs_arrived']} arrived = {r['jobs_done']} done + {r['jobs_running_at_end']} "
                f"running + {r['jobs_waiting_at_end']} waiting; {r['job_starts']} starts = done + "
                f"{r['jobs_interrupted']} interrupted + running")


def _little(r):
    area, waited = r["little"]["area"], r["little"]["waited"]
    hours = r["hours"] * 3600
    lam, w = r["jobs_arrived"] / hours, waited / max(1, r["jobs_arrived"])
    ok = abs(area - waited) <= 0.01 * max(waited, 1.0)
    return ok, f"mean waiting L = {area / hours:.3f}, lambda x W = {lam:.3f}/s x {w:.2f} s = {lam * w:.3f}"


def check_idle_never_scales(base, seed):
    """A target no backlog reaches and a load one task carries: no scale-out."""
    w = Workload("check-light", "40 small jobs/s, 2 h", 2,
                 steady_arrivals([(0, 40), (2, 40)], 256 * 1024, 2), ())
    r, _ = simulate(replace(base, target=1e6), w, seed)
    return [("one task suffices: never scales out",
             r["scale_outs"] == 0 and r["peak_desired_tasks"] == 1 and r["tasks_launched"] == 0,
             f"{r['scale_outs']} scale-outs, peak desired {r['peak_desired_tasks']}"),
            ("conservation (light load)", *_conserved(r)),
            ("Little's law (light load)", *_little(r))]


def check_step(base, seed):
    """A step of load scales out only after 3 datapoints + the metric delay,
    its tasks take work only after start-up, and never above MaxTasks."""
    step, p = 1800.0, replace(base, target=4, max_tasks=4, startup_secs=60, metric_delay_secs=60)
    w = Workload("check-step", "30 small jobs/s, then 200/s from 30 min", 1,
                 steady_arrivals([(0, 30), (0.5, 30), (0.5, 200), (1, 200)], 256 * 1024, 1), ())
    r, sim = simulate(p, w, seed)
    outs = [e for e in sim.events if e[1] == "out"]
    first = outs[0][0] if outs else None
    # AWS's documented 3 one-minute datapoints, written out: the check must
    # not follow the model if SCALE_OUT_DATAPOINTS were changed.
    earliest = step + 3 * 60 + p.metric_delay_secs
    new_ready = [t.ready_at for t in sim.tasks[p.min_tasks:] if t.ready_at is not None]
    out = [("step: scale-out waits 3 datapoints + metric delay",
            first is not None and earliest <= first <= earliest + PERIOD_SECS,
            f"step at {step:g} s, first scale-out at {first} s (expected {earliest:g}-"
            f"{earliest + PERIOD_SECS:g} s)"),
           ("step: new tasks take work only after start-up",
            bool(new_ready) and first is not None and min(new_ready) >= first + p.startup_secs,
            f"first new task ready at {min(new_ready) if new_ready else None} s"),
           ("step: never above MaxTasks",
            r["peak_desired_tasks"] == p.max_tasks and r["peak_running_tasks"] <= p.max_tasks
            and max(s[1] for s in sim.series) <= p.max_tasks,
            f"peak desired {r['peak_desired_tasks']}, running {r['peak_running_tasks']}, "
            f"MaxTasks {p.max_tasks}"),
           ("conservation (step)", *_conserved(r)),
           ("Little's law (step)", *_little(r))]
    again, _ = simulate(p, w, seed)
    out.append(("deterministic for a seed", again == r, "two runs of the step, same seed"))
    return out


def _long_jobs(hours):
    # Long multipart jobs, so that scale-in comes while tasks are still busy.
    return Workload("check-long", "one burst of 60 files of 2-8 GiB at 20 MiB/s a task", hours,
                    burst_arrivals(100, 0.1, 60, 120, 2 * GIB, 8 * GIB, hours), ())


def check_protection(base, seed):
    """Protection on: scale-in never interrupts a job; off with a 5 s grace:
    interrupted jobs go back to the queue and all of them still finish."""
    p = replace(base, target=4, max_tasks=8, task_mibps=20, large_job_mibps=20)
    on, _ = simulate(p, _long_jobs(5), seed)
    off, _ = simulate(replace(p, protection=False, shutdown_grace=5), _long_jobs(8), seed)
    return [("protection on: no job interrupted by scale-in",
             on["jobs_interrupted"] == 0 and on["scale_ins"] > 0
             and on["busy_tasks_kept_by_protection"] > 0,
             f"{on['jobs_interrupted']} interrupted; {on['scale_ins']} scale-ins, "
             f"{on['busy_tasks_kept_by_protection']} busy tasks kept"),
            ("conservation (protection on)", *_conserved(on)),
            ("protection off: interrupted jobs re-queued, none lost",
             off["jobs_interrupted"] > 0 and off["jobs_done"] == off["jobs_arrived"],
             f"{off['jobs_interrupted']} interrupted, {off['jobs_done']}/{off['jobs_arrived']} done"),
            ("conservation (protection off)", *_conserved(off)),
            ("Little's law (protection off)", *_little(off))]


def check_two_policies(base, seed):
    """Two target tracking policies as AWS combines them: under a steady load
    of small jobs, the backlog policy alone scales in whenever the visible
    backlog reads 0 (and out again); with the busy-slots policy beside it,
    scale-in needs both, so the fleet scales out once and stays."""
    w = Workload("check-steady", "60 small jobs/s for 2 h, 20 jobs/s a task", 2,
                 steady_arrivals([(0, 60), (2, 60)], 256 * 1024, 2), ())
    p = replace(base, target=4, max_tasks=6, small_jobs_per_task=20)
    alone, _ = simulate(replace(p, slots_target=0), w, seed)
    both, sim = simulate(replace(p, slots_target=24), w, seed)
    # 60 jobs/s hold 60 x 32/20 s = 96 slots: 4 tasks at 24 busy slots each.
    first_out = next((e[0] for e in sim.events if e[1] == "out"), None)
    after = [desired for t, _, desired, _, _ in sim.series if first_out is not None and t > first_out]
    return [("backlog policy alone: scales in under steady load (the saw-tooth)",
             alone["scale_ins"] > 0 and alone["scale_outs"] > 2,
             f"{alone['scale_outs']} scale-outs, {alone['scale_ins']} scale-ins"),
            ("with the busy-slots policy: scale-in only when both agree, to the larger capacity",
             both["scale_outs"] <= 3 and bool(after) and min(after) >= 4,
             f"{both['scale_outs']} scale-outs, {both['scale_ins']} scale-ins, desired never below "
             f"{min(after) if after else None} after the first scale-out (4 carry the load at target 24)"),
            ("conservation (two policies)", *_conserved(both))]


def run_checks(base, seed):
    t0 = time.monotonic()
    results = []
    for check in (check_idle_never_scales, check_step, check_protection, check_two_policies):
        try:
            results += check(base, seed)
        except Exception as err:  # a crash is a failed check, reported with the others
            results.append((check.__name__, False, f"raised {type(err).__name__}: {err}"))
    for name, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")
    failed = [name for name, ok, _ in results if not ok]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed "
          f"({time.monotonic() - t0:.1f} s)")
    if failed:
        print("scale-sim self-checks failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0
