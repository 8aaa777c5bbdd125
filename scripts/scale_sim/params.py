"""What one run depends on besides the workload and the seed: the scaling
settings' defaults (read from the CloudFormation template with pyyaml), the
Params they become, and the fixed figures the model uses (per-task throughput,
Fargate prices, Application Auto Scaling's alarms). Sizes and paths too."""

import pathlib
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
TEMPLATE = ROOT / "deploy" / "cloudformation" / "ferry.yaml"
MIB = 1 << 20
GIB = 1 << 30

# -------------------------------------------------------------- throughput
# Per-task figures, each from the project's measurements (docs/fleet.md,
# docs/benchmarks.md) or the assumption docs/scale.md already makes.
#
# Small jobs: docs/fleet.md puts a 1-vCPU worker at ~110-160 small jobs/s,
# CPU bound (6-9 ms of CPU per 256 KiB job, measured), with 32 slots able to
# keep ~400 jobs/s in flight at in-region AWS latency. We take the low end.
SMALL_JOBS_PER_TASK = 110.0
# A small job's AWS time (claim + PUT + record + delete, docs/fleet.md: ~75 ms).
SMALL_JOB_OVERHEAD_SECS = 0.075
# Large jobs: one 2 GiB job alone ran at 70-102 MiB/s and eight at once shared
# ~96-100 MiB/s (docs/fleet.md, sink-bound on loopback); one `ferry copy` of
# 1-4 GiB did 139-142 MB/s (docs/benchmarks.md). docs/scale.md assumes
# 100 MB/s per task on Fargate, whose network rate per task size AWS does not
# publish. So: 100 MiB/s per job alone, 100 MiB/s shared by a task's jobs.
LARGE_JOB_MIBPS = 100.0
TASK_MIBPS = 100.0

# -------------------------------------------------------------- prices
# Fargate Linux/x86_64 On-Demand, us-east-1, 2026 list prices (the same
# figures as scripts/capacity-model). Billed per second from the image pull
# to the task's stop, one minute at least.
REGION = "us-east-1"
FARGATE_VCPU_HOUR = 0.04048
FARGATE_GB_HOUR = 0.004445
FARGATE_MIN_BILLED_SECS = 60

# ------------------------------------------------ Application Auto Scaling
# Target tracking's two CloudWatch alarms for ECS, as AWS documents them:
# above the target for 3 of 3 one-minute datapoints scales out; below 90 % of
# it for 15 of 15 scales in.
PERIOD_SECS = 60
SCALE_OUT_DATAPOINTS = 3
SCALE_IN_DATAPOINTS = 15
SCALE_IN_FRACTION = 0.9


# ------------------------------------------------------------ the template
def template_defaults(path=TEMPLATE):
    """The scaling settings' defaults, read from the CloudFormation template."""
    import yaml  # the project's .venv; only this needs it

    class CfnLoader(yaml.SafeLoader):
        """Reads CloudFormation's short tags (!Ref, !Sub …) as plain mappings
        (the idea of scripts/check_deploy.py's loader, not an import of it)."""

    def intrinsic(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            return {suffix: loader.construct_scalar(node)}
        if isinstance(node, yaml.SequenceNode):
            return {suffix: loader.construct_sequence(node, deep=True)}
        return {suffix: loader.construct_mapping(node, deep=True)}

    CfnLoader.add_multi_constructor("!", intrinsic)
    doc = yaml.load(pathlib.Path(path).read_text(), Loader=CfnLoader)
    param = {k: v.get("Default") for k, v in doc["Parameters"].items()}
    res = doc["Resources"]
    tracking = res["BacklogPerTaskPolicy"]["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    # The second policy, on busy job slots per task, if the template has it.
    slots_target = float(param["TargetBusySlotsPerTask"]) if "BusySlotsPerTaskPolicy" in res else 0.0
    env = res["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]["Environment"]
    env = {e["Name"]: e["Value"] for e in env if isinstance(e, dict) and "Name" in e}
    return {
        "target": float(param["TargetBacklogPerTask"]),
        "slots_target": slots_target,
        "min_tasks": int(param["MinTasks"]),
        "max_tasks": int(param["MaxTasks"]),
        "scale_out_cooldown": float(tracking["ScaleOutCooldown"]),
        "scale_in_cooldown": float(tracking["ScaleInCooldown"]),
        "max_concurrent_jobs": int(param["MaxConcurrentJobs"]),
        "max_large_jobs": int(param["MaxLargeJobs"]),
        "stop_timeout": float(param["StopTimeout"]),
        "shutdown_grace": float(param["ShutdownGraceSecs"]),
        "task_vcpu": int(param["TaskCpu"]) / 1024,
        "task_memory_gb": int(param["TaskMemory"]) / 1024,
        # A job bigger than one part is a multipart ("large") job.
        "part_size_mib": float(env["FERRY_PART_SIZE_MIB"]),
    }


@dataclass(frozen=True)
class Params:
    """Everything one run depends on besides the workload and the seed."""

    target: float
    # The busy-slots policy's target (0: no such policy): (visible + received
    # messages) / running tasks, tracked beside the backlog policy; AWS scales
    # out when either policy asks and in only when both do.
    slots_target: float
    min_tasks: int
    max_tasks: int
    scale_out_cooldown: float
    scale_in_cooldown: float
    max_concurrent_jobs: int
    max_large_jobs: int
    stop_timeout: float
    shutdown_grace: float
    task_vcpu: float
    task_memory_gb: float
    part_size_mib: float
    startup_secs: float = 60.0
    metric_delay_secs: float = 60.0
    protection: bool = True
    small_jobs_per_task: float = SMALL_JOBS_PER_TASK
    large_job_mibps: float = LARGE_JOB_MIBPS
    task_mibps: float = TASK_MIBPS
    load: float = 1.0
    # The backlog policy's metric. "visible": the template's. "visible+inflight"
    # adds ApproximateNumberOfMessagesNotVisible (jobs received, running or
    # held): a what-if with that single policy (use --slots-target 0 with it).
    metric: str = "visible"

    def policies(self):
        """(metric, target) of each target tracking policy."""
        return [(self.metric, self.target)] + (
            [("visible+inflight", self.slots_target)] if self.slots_target > 0 else [])

    def task_hour_price(self):
        return self.task_vcpu * FARGATE_VCPU_HOUR + self.task_memory_gb * FARGATE_GB_HOUR
