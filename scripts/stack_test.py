"""Creates deploy/cloudformation/ferry.yaml as a stack in moto's CloudFormation
and runs a worker job through what the stack made (run by scripts/stack-test).

1. The template as written, to record what moto makes of it: moto 5.2.5 does
   not implement the `AWS::LanguageExtensions` transform, reads
   `Fn::ForEach::BucketAccess` as a resource, fails inside CreateStack (HTTP
   500) and leaves the stack CREATE_IN_PROGRESS for ever.
2. The template expanded by scripts/cfn_expand.py (the transform's
   `Fn::ForEach`, nothing else changed) must reach CREATE_COMPLETE. Every
   resource is then looked up through its own service's API: those moto
   creates are checked against the template (queue attributes and redrive,
   table key, index and TTL, roles' actions, task definition); those it does
   not create must be exactly NOT_CREATED, which docs/deploy.md lists.
3. scripts/local_aws.py (the quickstart's and compose's set-up) run on the
   same emulator must give its queue, dead-letter queue and table the shapes
   the stack gave its own.
4. The stack's redrive policy moves a message received maxReceiveCount times
   to the stack's dead-letter queue.
5. A worker configured with the task definition's own environment (read back
   from ECS) passes `ferry doctor`, copies a file submitted with
   `ferry submit --wait`, records it in the stack's table with its TTL
   attribute, lists it through the stack's index (`ferry jobs`), dead-letters
   a message that is not a job, and stops cleanly on SIGTERM.

Usage: stack_test.py FERRY_BINARY   (exits 1 listing every failure)
"""

import ast
import hashlib
import json
import operator
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import boto3
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from cfn_expand import ExpandError, expand  # noqa: E402
import check_deploy  # noqa: E402
from check_deploy import CfnLoader, policy_actions  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
TEMPLATE = ROOT / "deploy" / "cloudformation" / "ferry.yaml"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
BUCKET = "ferry-stack-test"
PARAMETERS = {
    "Image": "ferry:stack-test",
    "AllowedBuckets": f"{BUCKET},other.bucket-name",
    "Subnets": "subnet-0123456789abcdef0",
    "SecurityGroups": "sg-0123456789abcdef0",
    # Every optional resource made: the result topic and queue too.
    "ResultEvents": "both",
}
# Resource types moto 5.2.5's CloudFormation skips ("No Moto CloudFormation
# support for …"), or accepts without making anything its own API can show.
# docs/deploy.md names each; a change here means moto changed.
NOT_CREATED = {
    "AWS::IAM::RolePolicy",
    "AWS::ApplicationAutoScaling::ScalableTarget",
    "AWS::ApplicationAutoScaling::ScalingPolicy",
    "AWS::Logs::MetricFilter",
    "AWS::CloudWatch::Alarm",
}
TIMEOUT = 60


class Checks(check_deploy.Checks):
    """check_deploy's, printing each check as it goes (the run is long)."""

    def check(self, ok, what, detail=""):
        print(f"  {'ok  ' if ok else 'FAIL'}  {what}" + (f"\n{detail}" if detail and not ok else ""))
        return super().check(ok, what)

    def finish(self, name, work):
        """Prints the tally; removes `work` when all passed, else exits 1
        listing the failures (their logs stay in `work`)."""
        if not self.failures:
            shutil.rmtree(work)
            print(f"{name}: {self.passed} checks passed")
            return
        print(f"{name}: {self.passed} checks passed, {len(self.failures)} failed (logs in {work})")
        print("failures:\n  " + "\n  ".join(self.failures))
        sys.exit(1)


def wait_for(what, probe, timeout=TIMEOUT, every=0.5):
    """Polls `probe` until it returns a true value; None after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            print(f"  timed out after {timeout} s waiting for {what}")
            return None
        time.sleep(every)


class Piped:
    """A server from scripts/ that prints `port N` and lives until its stdin closes."""

    def __init__(self, *args, log):
        self.process = subprocess.Popen(
            [sys.executable, *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        line = self.process.stdout.readline()
        if not line.startswith("port "):
            raise SystemExit(f"{args[0]} did not start (see {log.name})")
        self.port = int(line.split()[1])

    def stop(self):
        self.process.stdin.close()
        self.process.wait(timeout=30)


def clients(endpoint):
    config = Config(retries={"mode": "standard", "max_attempts": 3})
    return lambda service: boto3.client(service, endpoint_url=endpoint, config=config)


# ------------------------------------------------------------- the stack


def check_expander(c):
    """cfn_expand.py unrolls what the template uses and refuses the rest."""
    def outcome(resources):
        template = {
            "Transform": "AWS::LanguageExtensions",
            "Parameters": {"Names": {"Type": "CommaDelimitedList"}},
            "Resources": resources,
        }
        try:
            return expand(template, {"Names": "a,b-c"})["Resources"]
        except ExpandError as err:
            return f"refused: {err}"

    fragment = {"Type": "T", "Properties": {"Name": {"Fn::Sub": "x-${N}"}, "Same": {"Ref": "N"}}}
    loop = {"Fn::ForEach::L": ["N", {"Ref": "Names"}, {"R&{N}": fragment}]}
    c.check(
        outcome(loop) == {
            "Ra": {"Type": "T", "Properties": {"Name": {"Fn::Sub": "x-a"}, "Same": "a"}},
            "Rbc": {"Type": "T", "Properties": {"Name": {"Fn::Sub": "x-b-c"}, "Same": "b-c"}},
        },
        "cfn_expand.py unrolls Fn::ForEach over a list parameter",
    )
    for what, resources in [
        ("an intrinsic DeletionPolicy", {"R": {"Type": "T", "DeletionPolicy": {"Fn::If": ["c", "Retain", "Delete"]}}}),
        ("Fn::FindInMap with a default", {"R": {"Type": "T", "Properties": {"X": {"Fn::FindInMap": ["M", "a", "b", {"DefaultValue": "d"}]}}}}),
        ("Fn::Length", {"R": {"Type": "T", "Properties": {"X": {"Fn::Length": [1]}}}}),
        ("two values making one logical id", {"Fn::ForEach::L": ["N", ["a.b", "ab"], {"R&{N}": {"Type": "T"}}]}),
    ]:
        c.check(str(outcome(resources)).startswith("refused"), f"cfn_expand.py refuses {what}")



def raw_template_outcome(cfn, body):
    """What moto does with the template as written (recorded, not required)."""
    try:
        cfn.create_stack(
            StackName="ferry-raw",
            TemplateBody=body,
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in PARAMETERS.items()],
            Capabilities=CAPABILITIES,
        )
    except Exception as err:  # moto answers 500; boto3 raises after its retries
        outcome = f"CreateStack failed ({err})"
    else:
        outcome = "CreateStack accepted"
    try:
        status = cfn.describe_stacks(StackName="ferry-raw")["Stacks"][0]["StackStatus"]
    except Exception as err:
        status = f"DescribeStacks failed ({err})"
    return f"{outcome}; stack {status}"


CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]


def create_stack(c, cfn, template, parameters=PARAMETERS):
    cfn.create_stack(
        StackName="ferry",
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=CAPABILITIES,
    )

    def settled():
        stack = cfn.describe_stacks(StackName="ferry")["Stacks"][0]
        return None if stack["StackStatus"].endswith("_IN_PROGRESS") else stack

    stack = wait_for("the stack to settle", settled)
    status = stack["StackStatus"] if stack else "CREATE_IN_PROGRESS"
    if not c.check(status == "CREATE_COMPLETE", f"expanded template: stack {status}"):
        for event in cfn.describe_stack_events(StackName="ferry")["StackEvents"]:
            if "FAILED" in event["ResourceStatus"]:
                print(f"        {event['LogicalResourceId']}: {event.get('ResourceStatusReason')}")
        return None
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def physical_ids(cfn):
    summaries = cfn.list_stack_resources(StackName="ferry")["StackResourceSummaries"]
    return {s["LogicalResourceId"]: s.get("PhysicalResourceId") for s in summaries}


def lookup(aws, kind, logical, physical, props, outputs):
    """Whether the resource exists, asked of its own service's API."""
    if kind == "AWS::SQS::Queue":
        return bool(physical) and "QueueArn" in aws("sqs").get_queue_attributes(
            QueueUrl=physical, AttributeNames=["QueueArn"]
        )["Attributes"]
    if kind == "AWS::SNS::Topic":
        return bool(physical) and "TopicArn" in aws("sns").get_topic_attributes(
            TopicArn=physical
        )["Attributes"]
    if kind == "AWS::DynamoDB::Table":
        return aws("dynamodb").describe_table(TableName=physical)["Table"]["TableStatus"] == "ACTIVE"
    if kind == "AWS::ECS::Cluster":
        return bool(aws("ecs").describe_clusters(clusters=[physical])["clusters"])
    if kind == "AWS::ECS::TaskDefinition":
        return bool(aws("ecs").describe_task_definition(taskDefinition=physical)["taskDefinition"])
    if kind == "AWS::ECS::Service":
        services = aws("ecs").describe_services(
            cluster=outputs["ClusterName"], services=[outputs["ServiceName"]]
        )["services"]
        return bool(services) and services[0]["status"] == "ACTIVE"
    if kind == "AWS::Logs::LogGroup":
        groups = aws("logs").describe_log_groups(logGroupNamePrefix=physical)["logGroups"]
        return any(g["logGroupName"] == physical for g in groups)
    if kind == "AWS::Logs::MetricFilter":
        filters = aws("logs").describe_metric_filters(logGroupName=outputs["LogGroupName"])
        return bool(filters["metricFilters"])
    if kind == "AWS::IAM::Role":
        role_name = physical.rsplit("/", 1)[-1] if physical else logical
        return bool(aws("iam").get_role(RoleName=role_name)["Role"])
    if kind == "AWS::IAM::RolePolicy":
        role = role_names(aws)["TaskRole"]
        names = aws("iam").list_role_policies(RoleName=role)["PolicyNames"]
        name = props["PolicyName"]
        return (name["Fn::Sub"] if isinstance(name, dict) else name) in names
    if kind == "AWS::IAM::ManagedPolicy":
        return bool(aws("iam").get_policy(PolicyArn=physical)["Policy"])
    if kind == "AWS::ApplicationAutoScaling::ScalableTarget":
        targets = aws("application-autoscaling").describe_scalable_targets(ServiceNamespace="ecs")
        return bool(targets["ScalableTargets"])
    if kind == "AWS::ApplicationAutoScaling::ScalingPolicy":
        policies = aws("application-autoscaling").describe_scaling_policies(ServiceNamespace="ecs")
        return bool(policies["ScalingPolicies"])
    if kind == "AWS::CloudWatch::Alarm":
        alarms = aws("cloudwatch").describe_alarms()["MetricAlarms"]
        wanted = props.get("AlarmDescription")
        return any(a.get("AlarmDescription") == wanted for a in alarms)
    raise SystemExit(f"stack_test.py does not know how to look up {kind} ({logical})")


# The SQS and ECS metrics a scaling policy's math may name, by the simulator's
# names for them (scripts/scale_sim/model.py, policy_metric).
POLICY_INPUTS = {
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "Sum"): "visible",
    ("AWS/SQS", "ApproximateNumberOfMessagesNotVisible", "Sum"): "received",
    ("ECS/ContainerInsights", "RunningTaskCount", "Average"): "tasks",
}
# The policies the stack must have, and the simulator's metric for each.
POLICY_METRICS = {"BacklogPerTaskPolicy": "visible", "BusySlotsPerTaskPolicy": "visible+inflight"}


def evaluate(expression, values):
    """CloudWatch metric math of + - * / and parentheses over metric ids."""
    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
            return OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError(f"metric math this check does not evaluate: {ast.dump(node)}")

    return walk(ast.parse(expression, mode="eval"))


OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def check_scaling_math(c, template):
    """Each scaling policy's metric math, evaluated over sample datapoints,
    equals what scripts/scale-sim models for it, over the stack's own queue
    and service (moto creates no scaling policies: see NOT_CREATED)."""
    from scale_sim.model import policy_metric

    resources = template["Resources"]
    samples = [(0, 0, 1), (10, 50, 2), (4000, 0, 10), (0, 96, 4), (7, 3, 5)]
    for name, metric in POLICY_METRICS.items():
        config = resources.get(name, {}).get("Properties", {}).get("TargetTrackingScalingPolicyConfiguration", {})
        queries = config.get("CustomizedMetricSpecification", {}).get("Metrics", [])
        inputs, returned, sources = {}, [q for q in queries if q.get("ReturnData")], set()
        for query in queries:
            stat = query.get("MetricStat")
            if not stat:
                continue
            key = (stat["Metric"]["Namespace"], stat["Metric"]["MetricName"], stat["Stat"])
            inputs[query["Id"]] = POLICY_INPUTS.get(key)
            sources |= {json.dumps(d["Value"], sort_keys=True) for d in stat["Metric"].get("Dimensions", [])}
        ok = len(returned) == 1 and None not in inputs.values()
        detail = "no single returned expression, or an unknown metric"
        if ok:
            try:
                got = [evaluate(returned[0]["Expression"], {i: dict(zip(("visible", "received", "tasks"), s))[v]
                                                            for i, v in inputs.items()}) for s in samples]
                want = [policy_metric(metric, *s) for s in samples]
                ok, detail = got == want, f"{returned[0]['Expression']} gives {got}, the simulator {want}"
            except (ValueError, KeyError, ZeroDivisionError) as err:
                ok, detail = False, f"{returned[0]['Expression']}: {err}"
        c.check(ok, f"{name}: its metric math is the simulator's {metric!r} per running task ({detail})")
        c.check(sources == {json.dumps(v, sort_keys=True) for v in (
                    {"Fn::GetAtt": ["Queue", "QueueName"]}, {"Ref": "Cluster"}, {"Fn::GetAtt": ["Service", "Name"]})},
                f"{name}: over the stack's own queue, cluster and service ({sorted(sources)})")


def role_names(aws):
    roles = aws("iam").list_roles()["Roles"]
    return {
        logical: next(r["RoleName"] for r in roles if f"-{logical}-" in r["RoleName"])
        for logical in ("TaskRole", "ExecutionRole")
    }


def check_resources(c, aws, cfn, template, outputs):
    ids = physical_ids(cfn)
    created, missing = {}, {}
    for logical, resource in template["Resources"].items():
        kind = resource["Type"]
        try:
            exists = lookup(aws, kind, logical, ids.get(logical), resource.get("Properties", {}), outputs)
        except ClientError as err:  # moto answers "no such …": not there
            print(f"        {logical} ({kind}): {err}")
            exists = False
        (created if exists else missing)[logical] = kind
    print("  created by moto: " + ", ".join(f"{k} ({v})" for k, v in created.items()))
    print("  not created:     " + ", ".join(f"{k} ({v})" for k, v in missing.items()))
    c.check(
        set(missing.values()) == NOT_CREATED,
        f"moto leaves out exactly {sorted(NOT_CREATED)} (left out: {sorted(set(missing.values()))})",
    )
    doc = DEPLOY_DOC.read_text()
    for kind in sorted(set(missing.values())):
        c.check(f"`{kind}`" in doc, f"docs/deploy.md names {kind} as not created by moto")
    return created


def check_shapes(c, aws, template, outputs):
    """What moto created has the template's settings."""
    sqs, ddb = aws("sqs"), aws("dynamodb")
    props = template["Resources"]
    queue = sqs.get_queue_attributes(QueueUrl=outputs["QueueUrl"], AttributeNames=["All"])["Attributes"]
    dlq = sqs.get_queue_attributes(
        QueueUrl=outputs["DeadLetterQueueUrl"], AttributeNames=["All"]
    )["Attributes"]
    want = props["Queue"]["Properties"]
    for name in ("VisibilityTimeout", "MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds"):
        c.check(queue.get(name) == str(want[name]), f"queue {name} = {want[name]} (got {queue.get(name)})")
    redrive = json.loads(queue.get("RedrivePolicy", "{}"))
    c.check(
        redrive.get("deadLetterTargetArn") == dlq["QueueArn"],
        "queue redrives to the stack's dead-letter queue",
    )
    max_receives = int(redrive.get("maxReceiveCount", 0))
    c.check(
        max_receives == want["RedrivePolicy"]["maxReceiveCount"],
        f"queue maxReceiveCount = {want['RedrivePolicy']['maxReceiveCount']} (got {max_receives})",
    )
    c.check(
        dlq.get("MessageRetentionPeriod") == str(props["DeadLetterQueue"]["Properties"]["MessageRetentionPeriod"]),
        "dead-letter queue keeps messages 14 days",
    )
    table = ddb.describe_table(TableName=outputs["TableName"])["Table"]
    c.check(
        table["KeySchema"] == [{"AttributeName": "job_id", "KeyType": "HASH"}],
        "table key is job_id",
    )
    c.check(
        table.get("BillingModeSummary", {}).get("BillingMode") == "PAY_PER_REQUEST",
        "table is on demand",
    )
    index = {i["IndexName"]: i for i in table.get("GlobalSecondaryIndexes", [])}.get("status-shard-index")
    c.check(
        index is not None
        and index["KeySchema"]
        == [
            {"AttributeName": "status_shard", "KeyType": "HASH"},
            {"AttributeName": "status_at", "KeyType": "RANGE"},
        ]
        and index["Projection"]["ProjectionType"] == "KEYS_ONLY",
        "table has status-shard-index (status_shard, status_at), keys only",
    )
    ttl = ddb.describe_time_to_live(TableName=outputs["TableName"])["TimeToLiveDescription"]
    c.check(
        ttl.get("TimeToLiveStatus") == "ENABLED" and ttl.get("AttributeName") == "expires_at",
        f"table TTL on expires_at (got {ttl})",
    )
    roles = role_names(aws)
    iam = aws("iam")
    granted = set()
    for name in iam.list_role_policies(RoleName=roles["TaskRole"])["PolicyNames"]:
        document = iam.get_role_policy(RoleName=roles["TaskRole"], PolicyName=name)["PolicyDocument"]
        if isinstance(document, str):
            # moto keeps a CloudFormation role's inline policies as Python
            # reprs, not JSON.
            try:
                document = json.loads(document)
            except json.JSONDecodeError:
                document = ast.literal_eval(document)
        granted |= set(policy_actions([{"PolicyDocument": document}]))
    # The per-bucket AWS::IAM::RolePolicy resources are among NOT_CREATED.
    expected = set(policy_actions(props["TaskRole"]["Properties"]["Policies"]))
    c.check(granted == expected, f"task role holds the template's inline actions (diff {granted ^ expected})")
    return queue, dlq, table


def task_environment(aws, outputs):
    service = aws("ecs").describe_services(
        cluster=outputs["ClusterName"], services=[outputs["ServiceName"]]
    )["services"][0]
    definition = aws("ecs").describe_task_definition(taskDefinition=service["taskDefinition"])
    (container,) = definition["taskDefinition"]["containerDefinitions"]
    # moto leaves an `!If [..., !Ref AWS::NoValue]` entry as null (AWS drops it).
    return {e["name"]: e["value"] for e in container.get("environment", []) if e}


def check_local_setup(c, aws, endpoint, queue, dlq, table):
    """scripts/local_aws.py gives its resources the stack's shapes."""
    env = dict(os.environ, AWS_ENDPOINT_URL=endpoint)
    result = subprocess.run(
        [sys.executable, SCRIPTS / "local_aws.py", "local-setup", "local-setup", "local-setup"],
        env=env, capture_output=True, text=True, check=False,
    )
    if not c.check(result.returncode == 0, "local_aws.py runs", result.stderr):
        return
    urls = dict(line.split("=", 1) for line in result.stdout.split())
    local_queue = aws("sqs").get_queue_attributes(QueueUrl=urls["FERRY_QUEUE_URL"], AttributeNames=["All"])["Attributes"]
    for name in ("VisibilityTimeout", "MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds"):
        c.check(local_queue.get(name) == queue.get(name), f"local set-up: queue {name} as the stack's")
    local_redrive = json.loads(local_queue["RedrivePolicy"])
    stack_redrive = json.loads(queue["RedrivePolicy"])
    c.check(
        int(local_redrive["maxReceiveCount"]) == int(stack_redrive["maxReceiveCount"]),
        "local set-up: maxReceiveCount as the stack's",
    )
    local_dlq = aws("sqs").get_queue_attributes(QueueUrl=urls["FERRY_DLQ_URL"], AttributeNames=["All"])["Attributes"]
    c.check(
        local_dlq.get("MessageRetentionPeriod") == dlq.get("MessageRetentionPeriod"),
        "local set-up: DLQ retention as the stack's",
    )
    local_table = aws("dynamodb").describe_table(TableName=urls["FERRY_TABLE"])["Table"]

    def shape(t):
        return (
            t["KeySchema"],
            sorted(t["AttributeDefinitions"], key=lambda a: a["AttributeName"]),
            [(i["IndexName"], i["KeySchema"], i["Projection"]) for i in t.get("GlobalSecondaryIndexes", [])],
        )

    c.check(shape(local_table) == shape(table), "local set-up: table key and index as the stack's")
    ttl = aws("dynamodb").describe_time_to_live(TableName=urls["FERRY_TABLE"])["TimeToLiveDescription"]
    c.check(ttl.get("AttributeName") == "expires_at", "local set-up: TTL on expires_at as the stack's")


def check_redrive(c, aws, outputs, max_receives):
    """A message received maxReceiveCount times moves to the dead-letter queue."""
    sqs = aws("sqs")
    sqs.send_message(QueueUrl=outputs["QueueUrl"], MessageBody="redrive-probe")
    for _ in range(max_receives):
        got = sqs.receive_message(QueueUrl=outputs["QueueUrl"], VisibilityTimeout=0, WaitTimeSeconds=1)
        if not got.get("Messages"):
            break
    # The receive after the last allowed one moves it.
    sqs.receive_message(QueueUrl=outputs["QueueUrl"], VisibilityTimeout=0, WaitTimeSeconds=1)
    moved = take_from(sqs, outputs["DeadLetterQueueUrl"], "redrive-probe")
    c.check(moved, f"the stack's redrive policy moved a message after {max_receives} receives")


def take_from(sqs, queue_url, body, timeout=5):
    """Finds and deletes a message with `body`; whether it was there."""

    def probe():
        for message in sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", []):
            if message["Body"] == body:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                return True
        return False

    return bool(wait_for(f"{body!r} on {queue_url.rsplit('/', 1)[-1]}", probe, timeout=timeout))


def result_event(sqs, queue_url, job_id, timeout=TIMEOUT):
    """The status of `job_id`'s result event on `queue_url`, if one comes."""
    found = {}

    def probe():
        for message in sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", []):
            event = json.loads(message["Body"])
            if event.get("job_id") == job_id:
                found["status"] = event.get("status")
                return True
        return False

    if queue_url:
        wait_for(f"{job_id}'s result event", probe, timeout=timeout)
    return found.get("status")


# ------------------------------------------------------------ the worker


def run_worker_job(c, aws, ferry, endpoint, outputs, work):
    environment = task_environment(aws, outputs)
    c.check(environment.get("FERRY_QUEUE_URL") == outputs["QueueUrl"], "task env FERRY_QUEUE_URL is the stack's queue")
    c.check(environment.get("FERRY_DLQ_URL") == outputs["DeadLetterQueueUrl"], "task env FERRY_DLQ_URL is the stack's DLQ")
    c.check(environment.get("FERRY_TABLE") == outputs["TableName"], "task env FERRY_TABLE is the stack's table")
    env = dict(os.environ)
    env.update(environment)
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        # The test's origin is on loopback; the task's metrics port may be taken.
        FERRY_SOURCE_ALLOW_CIDRS="127.0.0.0/8",
        FERRY_METRICS_ADDR="127.0.0.1:0",
    )

    def ferry_run(*args, timeout=TIMEOUT):
        return subprocess.run(
            [ferry, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )

    doctor = ferry_run("doctor")
    c.check(doctor.returncode == 0, "ferry doctor passes on the stack's resources", doctor.stdout + doctor.stderr)

    data = os.urandom(40 * 1024 * 1024 + 12345)
    (work / "www").mkdir()
    (work / "www" / "stack.bin").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    with open(work / "origin.log", "w") as origin_log, open(work / "worker.log", "w") as worker_log:
        origin = Piped(SCRIPTS / "http_origin.py", work / "www", 0, log=origin_log)
        worker = subprocess.Popen([ferry, "worker"], env=env, stdout=worker_log, stderr=worker_log)
        try:
            url = f"http://127.0.0.1:{origin.port}/stack.bin"
            submit = ferry_run(
                "submit", url, f"s3://{BUCKET}/stack/stack.bin", "--job-id", "stack-job",
                "--sha256", sha, "--wait", timeout=120,
            )
            c.check(submit.returncode == 0, "ferry submit --wait succeeds", submit.stdout + submit.stderr)
            stored = aws("s3").get_object(Bucket=BUCKET, Key="stack/stack.bin")["Body"].read()
            c.check(hashlib.sha256(stored).hexdigest() == sha, "the object in S3 is the source's bytes")
            item = aws("dynamodb").get_item(
                TableName=outputs["TableName"], Key={"job_id": {"S": "stack-job"}}
            ).get("Item", {})
            c.check(item.get("status", {}).get("S") == "succeeded", "the stack's table records the job succeeded")
            expires = int(item.get("expires_at", {}).get("N", "0"))
            c.check(expires > time.time(), "the record carries the TTL attribute expires_at, in the future")
            listed = ferry_run("jobs", "--status", "succeeded", "--format", "jsonl")
            ids = [json.loads(line).get("job_id") for line in listed.stdout.splitlines() if line.strip()]
            c.check(
                listed.returncode == 0 and "stack-job" in ids,
                "ferry jobs lists it through the stack's index",
                listed.stdout + listed.stderr,
            )
            sqs = aws("sqs")
            c.check(
                environment.get("FERRY_RESULT_QUEUE_URL") == outputs.get("ResultQueueUrl")
                and environment.get("FERRY_RESULT_TOPIC_ARN") == outputs.get("ResultTopicArn"),
                "task env names the stack's result queue and topic (ResultEvents both)",
            )
            c.check(
                result_event(sqs, outputs.get("ResultQueueUrl"), "stack-job") == "succeeded",
                "the job's final record arrives on the stack's result queue",
            )
            sqs.send_message(QueueUrl=outputs["QueueUrl"], MessageBody="this is not a job")
            c.check(
                take_from(sqs, outputs["DeadLetterQueueUrl"], "this is not a job", timeout=TIMEOUT),
                "the worker dead-letters a message that is not a job into the stack's DLQ",
            )
            depth = sqs.get_queue_attributes(
                QueueUrl=outputs["QueueUrl"],
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            c.check(
                depth == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"},
                f"the stack's queue is empty afterwards ({depth})",
            )
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                code = worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                code = worker.wait()
            origin.stop()
    c.check(code == 0, f"the worker stops cleanly on SIGTERM (exit {code}; log {work / 'worker.log'})")


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.split("\n\n")[-1])
    ferry = sys.argv[1]
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)
    os.environ.update(
        AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
    )
    c = Checks()
    check_expander(c)
    work = pathlib.Path(tempfile.mkdtemp(prefix="ferry-stack-test-", dir=ROOT / ".ferry"))
    with open(work / "moto.log", "w") as moto_log:
        moto = Piped(SCRIPTS / "moto_server.py", 0, log=moto_log)
        try:
            endpoint = f"http://127.0.0.1:{moto.port}"
            aws = clients(endpoint)
            cfn = aws("cloudformation")
            body = TEMPLATE.read_text()
            print(f"template as written (Transform: AWS::LanguageExtensions): {raw_template_outcome(cfn, body)}")
            template = expand(yaml.load(body, Loader=CfnLoader), PARAMETERS)
            for bucket in PARAMETERS["AllowedBuckets"].split(","):
                aws("s3").create_bucket(Bucket=bucket)
            outputs = create_stack(c, cfn, template)
            if outputs is not None:
                print(f"  outputs: {sorted(outputs)}")
                check_resources(c, aws, cfn, template, outputs)
                check_scaling_math(c, template)
                queue, dlq, table = check_shapes(c, aws, template, outputs)
                check_local_setup(c, aws, endpoint, queue, dlq, table)
                check_redrive(c, aws, outputs, int(json.loads(queue["RedrivePolicy"])["maxReceiveCount"]))
                run_worker_job(c, aws, ferry, endpoint, outputs, work)
        finally:
            moto.stop()
    c.finish("stack test", work)


if __name__ == "__main__":
    main()
