"""Running the model: one run (simulate), or the same workload and seed at
several targets (sweep), in parallel processes since runs are independent."""

from dataclasses import replace

from .model import Sim
from .workloads import WORKLOADS


def simulate(p, workload, seed, hours=None):
    """One run; returns (result dict, Sim) so that plots and checks can look inside."""
    sim = Sim(p, workload, seed, hours)
    return sim.run(), sim


def sweep_row(args):
    p, name, seed = args
    return simulate(p, WORKLOADS[name], seed)[0]


def sweep(p, workload, targets, seed, procs, swept="target"):
    """The same workload and seed at each value of `swept` (a Params field:
    target or slots_target), in parallel: runs are independent."""
    jobs = [(replace(p, **{swept: t}), workload.name, seed) for t in targets]
    if procs > 1 and len(jobs) > 1:
        import multiprocessing
        with multiprocessing.get_context("fork").Pool(min(procs, len(jobs))) as pool:
            return pool.map(sweep_row, jobs)
    return [sweep_row(j) for j in jobs]
