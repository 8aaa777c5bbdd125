"""The model: one run of a workload through the fleet, as a discrete-event
loop. Sim owns the queue, each task's job slots and bandwidth (Job, Task),
the ECS service scheduler (launch, stop, SIGTERM drain, scale-in protection)
and Application Auto Scaling's target tracking, and turns a run into a
result dict (pct: its percentiles)."""

import heapq
import itertools
import math
import random
from collections import deque

from .params import (FARGATE_MIN_BILLED_SECS, GIB, MIB, PERIOD_SECS, SCALE_IN_DATAPOINTS,
                     SCALE_IN_FRACTION, SCALE_OUT_DATAPOINTS, SMALL_JOB_OVERHEAD_SECS)

STARTING, RUNNING, DRAINING, STOPPED = range(4)
DONE, READY, TICK, DRAIN_END = range(4)


class Job:
    __slots__ = ("arrival", "size", "large", "enq", "queued", "start", "task",
                 "ver", "remaining", "rate", "last", "attempts")

    def __init__(self, arrival, size, large):
        self.arrival = self.enq = arrival
        self.size = self.remaining = size
        self.large = large
        self.queued = 0.0  # seconds spent visible in the queue or held unstarted
        self.start = None
        self.task = None
        self.ver = 0  # bumped whenever a scheduled completion becomes stale
        self.rate = 0.0
        self.last = 0.0
        self.attempts = 0


class Task:
    __slots__ = ("id", "state", "launched", "ready_at", "stopped_at", "jobs", "large", "held")

    def __init__(self, tid, now):
        self.id = tid
        self.state = STARTING
        self.launched = now
        self.ready_at = None
        self.stopped_at = None
        # Insertion-ordered (a dict, not a set): a drained task re-queues its
        # jobs in the order it started them, the same in every process.
        self.jobs = {}
        self.large = []  # the running large jobs, which share the task's bandwidth
        self.held = None  # one received large job waiting for a multipart slot


class Sim:
    """One run: a workload through a fleet under one set of Params."""

    def __init__(self, p, workload, seed, hours=None):
        self.p = p
        self.workload = workload
        self.end = (hours if hours is not None else workload.hours) * 3600
        self.arrivals = workload.arrivals(random.Random(seed), p.load)
        self.ecs_rng = random.Random(seed * 1_000_003 + 17)  # which task ECS stops
        self.now = 0.0
        self.heap, self.seq = [], itertools.count()
        self.queue = deque()
        self.tasks, self.ready = [], []
        self.rr = 0
        self.n_active = 0  # starting + running: what ECS compares with desired
        self.desired = p.min_tasks
        self.large_bytes = p.part_size_mib * MIB
        slots = p.max_concurrent_jobs
        # A saturated task finishes small_jobs_per_task jobs/s: each of its
        # slots holds a small job at least slots / rate seconds.
        self.small_secs = max(SMALL_JOB_OVERHEAD_SECS, slots / p.small_jobs_per_task)
        self.job_bps = p.large_job_mibps * MIB
        self.task_bps = p.task_mibps * MIB
        # Bookkeeping and results.
        self.arrived = self.done = self.interrupted = self.n_held = self.bytes_arrived = self.starts = 0
        self.waits, self.latencies = [], []
        self.queued_sum = self.queue_area = 0.0
        self.last_t = 0.0
        self.peak_backlog = self.peak_running = self.peak_desired = 0
        self.datapoints = []  # (minute end, visible, received, running)
        self.last_out = self.last_in = -math.inf
        self.events = []  # (t, "out"/"in", old desired, new desired)
        self.protected_kept = 0  # busy tasks scale-in wanted gone but protection kept
        self.series = []
        self.minute_waits = {}
        for _ in range(p.min_tasks):
            self.ready_task(self.launch(), initial=True)
        self.push(PERIOD_SECS, TICK)

    # --- the event loop
    def push(self, t, kind, a=None, b=None, c=None):
        heapq.heappush(self.heap, (t, next(self.seq), kind, a, b, c))

    def run(self):
        heap, pop = self.heap, heapq.heappop
        nxt = next(self.arrivals, None)
        large_bytes = self.large_bytes
        while True:
            if nxt is not None and (not heap or nxt[0] <= heap[0][0]):
                t, size = nxt
                self.advance(t)
                self.arrive(Job(t, size, size > large_bytes))
                nxt = next(self.arrivals, None)
                continue
            if not heap or heap[0][0] > self.end:
                break
            t, _, kind, a, b, c = pop(heap)
            self.advance(t)
            if kind == DONE:
                if b.task is a and b.ver == c:
                    self.finish(a, b)
            elif kind == READY:
                if a.state == STARTING:
                    self.ready_task(a)
            elif kind == TICK:
                self.tick()
            elif kind == DRAIN_END:
                self.drain_end(a)
        self.advance(self.end)
        return self.result()

    def advance(self, t):
        # Little's law bookkeeping: jobs waiting (visible or held) × time.
        self.queue_area += (len(self.queue) + self.n_held) * (t - self.last_t)
        self.last_t = self.now = t

    # --- jobs
    def arrive(self, job):
        self.arrived += 1
        self.bytes_arrived += job.size
        q = self.queue
        q.append(job)
        if len(q) > self.peak_backlog:
            self.peak_backlog = len(q)
        if len(q) == 1:
            # Only an empty queue can have tasks with room; a long-polling
            # receive gets the message (SQS picks among the pollers).
            self.dispatch()

    def dispatch(self):
        ready, q = self.ready, self.queue
        n = len(ready)
        for i in range(n):
            if not q:
                return
            self.pull(ready[(self.rr + i) % n])
        self.rr += 1

    def pull(self, task):
        """A running task receives while it has a job slot and no held job."""
        q, p = self.queue, self.p
        while q and task.held is None and len(task.jobs) < p.max_concurrent_jobs:
            job = q.popleft()
            if job.large and len(task.large) >= p.max_large_jobs:
                task.held = job  # invisible, unstarted; the worker takes no more
                self.n_held += 1
            else:
                self.start(task, job)

    def start(self, task, job):
        now = self.now
        job.queued += now - job.enq
        self.queued_sum += now - job.enq
        job.start, job.task = now, task
        job.attempts += 1
        self.starts += 1
        task.jobs[job] = None
        if job.large:
            job.remaining, job.last, job.rate = job.size, now, 0.0
            task.large.append(job)
            self.share(task)
        else:
            self.push(now + self.small_secs, DONE, task, job, job.ver)

    def share(self, task):
        """Large jobs of a task share its bandwidth; reschedule their ends."""
        now = self.now
        rate = min(self.job_bps, self.task_bps / len(task.large)) if task.large else 0.0
        for j in task.large:
            j.remaining -= j.rate * (now - j.last)
            j.last, j.rate = now, rate
            j.ver += 1
            self.push(now + max(j.remaining, 0.0) / rate, DONE, task, j, j.ver)

    def finish(self, task, job):
        now = self.now
        task.jobs.pop(job, None)
        job.task = None
        self.done += 1
        wait = job.start - job.arrival
        self.waits.append(wait)
        self.latencies.append(now - job.arrival)
        self.minute_waits.setdefault(int(job.arrival // PERIOD_SECS), []).append(wait)
        if job.large:
            task.large.remove(job)
            self.share(task)
            held = task.held
            if held is not None and task.state == RUNNING:
                task.held = None
                self.n_held -= 1
                self.start(task, held)
        if task.state == DRAINING:
            if not task.jobs:
                self.stop(task)
            return
        self.pull(task)
        if not task.jobs and task.held is None and self.n_active > self.desired:
            self.stop(task)  # idle: its protection is off, ECS takes it now

    # --- tasks and ECS
    def launch(self):
        task = Task(len(self.tasks), self.now)
        self.tasks.append(task)
        self.n_active += 1
        return task

    def ready_task(self, task, initial=False):
        task.state, task.ready_at = RUNNING, self.now
        self.ready.append(task)
        if not initial:
            self.pull(task)
            if not task.jobs and task.held is None and self.n_active > self.desired:
                self.stop(task)

    def stop(self, task):
        if task.state in (STARTING, RUNNING):
            self.n_active -= 1
        if task.state == RUNNING:
            self.ready.remove(task)
        task.state, task.stopped_at = STOPPED, self.now

    def sigterm(self, task):
        """ECS stops a busy, unprotected task: it drains for the grace period."""
        self.n_active -= 1
        self.ready.remove(task)
        task.state = DRAINING
        if task.held is not None:  # not started: handed back at once, still waiting
            self.queue.appendleft(task.held)
            task.held = None
            self.n_held -= 1
        grace = min(self.p.shutdown_grace, self.p.stop_timeout)
        self.push(self.now + grace, DRAIN_END, task)
        self.dispatch()

    def drain_end(self, task):
        if task.state != DRAINING:
            return
        for job in list(task.jobs):
            job.task = None
            job.ver += 1
            self.interrupted += 1
            self.requeue(job)
        task.jobs.clear()
        task.large.clear()
        self.stop(task)
        self.dispatch()

    def requeue(self, job):
        job.enq = self.now
        self.queue.appendleft(job)  # visible again at once (released, visibility 0)

    def reconcile(self):
        """The ECS service scheduler: bring starting + running tasks to desired."""
        while self.n_active < self.desired:
            task = self.launch()
            self.push(self.now + self.p.startup_secs, READY, task)
        excess = self.n_active - self.desired
        if excess <= 0:
            return
        starting = [t for t in self.tasks if t.state == STARTING]
        idle = [t for t in self.ready if not t.jobs and t.held is None]
        busy = [t for t in self.ready if t.jobs or t.held is not None]
        for task in (starting[::-1] + idle)[:excess]:
            self.stop(task)
            excess -= 1
        if excess <= 0:
            return
        if self.p.protection:
            self.protected_kept += min(excess, len(busy))  # stopped when idle
            return
        for task in self.ecs_rng.sample(busy, min(excess, len(busy))):
            self.sigterm(task)

    # --- Application Auto Scaling
    def tick(self):
        """One minute: a datapoint per policy, then each policy's alarms. As
        AWS combines target tracking policies: out when any policy's scale-out
        alarm fires (to the largest capacity asked), in only when every
        policy's scale-in alarm fires (to the largest capacity they ask)."""
        now, p = self.now, self.p
        draining = [t for t in self.tasks if t.state == DRAINING]
        running = len(self.ready) + len(draining)
        visible = len(self.queue)
        received = sum(len(t.jobs) + (t.held is not None) for t in self.ready + draining)
        self.datapoints.append((now, visible, received, running))
        # The datapoints CloudWatch has by now (SQS reports with a delay).
        avail = [d for d in self.datapoints[-(SCALE_IN_DATAPOINTS + 5):]
                 if d[0] + p.metric_delay_secs <= now and d[3] > 0]
        outs, ins = [], []
        for metric, target in p.policies():
            values = [policy_metric(metric, v, r, n) for _, v, r, n in avail]
            if not values:
                continue
            want = math.ceil(avail[-1][3] * values[-1] / target)
            if len(values) >= SCALE_OUT_DATAPOINTS and all(m > target for m in values[-SCALE_OUT_DATAPOINTS:]):
                outs.append(want)
            elif len(values) >= SCALE_IN_DATAPOINTS and all(
                    m < SCALE_IN_FRACTION * target for m in values[-SCALE_IN_DATAPOINTS:]):
                ins.append(want)
        if outs:
            want = min(p.max_tasks, max(p.min_tasks, max(outs)))
            if want > self.desired and now >= self.last_out + p.scale_out_cooldown:
                self.events.append((now, "out", self.desired, want))
                self.desired, self.last_out = want, now
                self.reconcile()
        elif ins and len(ins) == len(p.policies()):
            want = max(p.min_tasks, max(ins))
            if (want < self.desired and now >= self.last_in + p.scale_in_cooldown
                    and now >= self.last_out + p.scale_out_cooldown):
                self.events.append((now, "in", self.desired, want))
                self.desired, self.last_in = want, now
                self.reconcile()
        running = len(self.ready) + sum(1 for t in self.tasks if t.state == DRAINING)
        self.peak_running = max(self.peak_running, running)
        self.peak_desired = max(self.peak_desired, self.desired)
        self.series.append((now, running, self.desired, len(self.queue), self.n_held))
        if now + PERIOD_SECS <= self.end:
            self.push(now + PERIOD_SECS, TICK)

    # --- results
    def result(self):
        p, end = self.p, self.end
        billed = sum(max(FARGATE_MIN_BILLED_SECS, (t.stopped_at if t.stopped_at is not None else end)
                         - t.launched) for t in self.tasks)
        running = sum(len(t.jobs) for t in self.tasks if t.state in (RUNNING, DRAINING))
        waiting = list(self.queue) + [t.held for t in self.tasks if t.held is not None]
        task_hours = billed / 3600
        return {
            "workload": self.workload.name,
            "target": p.target,
            "slots_target": p.slots_target,
            "max_tasks": p.max_tasks,
            "protection": p.protection,
            "hours": end / 3600,
            "jobs_arrived": self.arrived,
            "gib_arrived": round(self.bytes_arrived / GIB, 1),
            "jobs_done": self.done,
            "jobs_running_at_end": running,
            "jobs_waiting_at_end": len(waiting),
            "jobs_interrupted": self.interrupted,
            "job_starts": self.starts,
            "task_hours": round(task_hours, 3),
            "cost_usd": round(task_hours * p.task_hour_price(), 4),
            "wait_s": pct(self.waits),
            "latency_s": pct(self.latencies),
            "peak_running_tasks": self.peak_running,
            "peak_desired_tasks": self.peak_desired,
            "peak_backlog": self.peak_backlog,
            "scale_outs": sum(1 for e in self.events if e[1] == "out"),
            "scale_ins": sum(1 for e in self.events if e[1] == "in"),
            "tasks_launched": len(self.tasks) - p.min_tasks,
            "busy_tasks_kept_by_protection": self.protected_kept,
            # Little's law: the integral of the waiting count over time must
            # equal the sum of every job's time waiting (jobs still waiting
            # count until the end).
            "little": {"area": self.queue_area,
                       "waited": self.queued_sum + sum(self.now - j.enq for j in waiting)},
        }


def policy_metric(metric, visible, received, tasks):
    """A policy's datapoint from the queue's visible and received (not
    visible) messages and the running tasks: the metric math of the
    template's scaling policies (scripts/stack_test.py checks the two agree)."""
    return (visible + (received if metric == "visible+inflight" else 0)) / tasks


def pct(values):
    """p50/p95/p99/max and mean (nearest rank), in seconds."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    v = sorted(values)
    n = len(v)
    at = lambda q: v[min(n - 1, max(0, math.ceil(q * n) - 1))]  # noqa: E731
    return {"p50": round(at(0.5), 2), "p95": round(at(0.95), 2), "p99": round(at(0.99), 2),
            "max": round(v[-1], 2), "mean": round(sum(v) / n, 2)}
