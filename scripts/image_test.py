"""ferry's image run the way ECS runs it (scripts/image-test runs this inside
a network namespace of its own, so every address below is that namespace's
loopback and the image's metrics port 9090 is free).

The container settings are not copied by hand: deploy/cloudformation/
ferry.yaml is created as a stack in moto (as scripts/stack_test.py does), the
task definition is read back through ECS's DescribeTaskDefinition, and
`podman_flags` turns it into `podman run` flags — read-only root, user,
environment, memory, CPU, health check and stop timeout. Only what a local
run must differ in is added, and printed: the emulator's endpoint and keys
(ECS gives a task role), and the few test overrides each step names.

1. The image as built: user 65532, entrypoint and command, no shell, every
   library of the binary present (`ferry --version`, the dynamic loader's
   list), `ferry doctor` in the container against the stack's resources.
2. A job submitted from the host runs in the container: object and record.
3. The health check, run as ECS runs it (`podman healthcheck run`), and
   the same command failing when nothing answers.
4. `podman stop` (SIGTERM, the task's StopTimeout) mid-job: the worker
   drains, exits 0, the job is released, and the next container finishes it.
5. `podman kill` (SIGKILL) mid-job: a second container resumes the job
   without fetching the acknowledged parts again.
6. A 1 GiB object under the task's memory limit: the copy succeeds and the
   worker's peak resident memory stays under the limit.
7. HTTPS from a private CA: refused without it; accepted with the CA added
   as docs/deploy.md says (FERRY_CA_BUNDLE in an image built FROM ferry's)
   and with the CA in the image's system bundle (what the image's CA
   certificates are for).

Usage: image_test.py IMAGE FERRY_CLI   (exits 1 listing every failure)
"""

import datetime
import hashlib
import json
import os
import pathlib
import shutil
import ssl
import subprocess
import sys
import tempfile
import time

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import stack_test  # noqa: E402
from cfn_expand import expand  # noqa: E402
from check_deploy import CfnLoader  # noqa: E402
from http_origin import MemoryOrigin  # noqa: E402
from stack_test import Checks, Piped, clients, create_stack, wait_for  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
MIB = 1 << 20
BUCKET = stack_test.BUCKET
# Template parameters a user sets: the source's network (the test origin is on
# loopback) and the shortest stop timeout the template allows, with the drain
# grace under it, so a stop takes 20 s rather than 100.
PARAMETERS = dict(
    stack_test.PARAMETERS,
    SourceAllowCidrs="127.0.0.0/8",
    StopTimeout="30",
    ShutdownGraceSecs="20",
)
# What a local run adds to the task's own environment: the emulator stands
# where AWS's endpoints are, and its keys where the task role is.
LOCAL_AWS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
# One-second receives: a worker stopped mid-receive drops its long poll, and
# a message SQS hands to that dropped poll stays invisible for the queue's
# visibility timeout (a minute) before the next container can take it; with
# the default 20 s poll, a job submitted just after a stop would wait for that.
SHORT_POLLS = {"FERRY_POLL_WAIT_SECS": "1"}
# How long a dropped one-second receive can still take a message after its
# worker is gone: moto ends a poll at the first one-second wait that passes its
# deadline, so up to two seconds; one more for the stop itself.
DROPPED_RECEIVE_SECS = 3
# Shorter leases so a killed worker's job is taken again in seconds, not a
# minute (the template keeps ferry's defaults).
SHORT_LEASES = {"FERRY_LEASE_SECS": "6", "FERRY_HEARTBEAT_SECS": "1"}
# The template skips the part CRC items because AWS S3 lists each part's
# CRC64NVME; moto lists none, so a resume here needs the items to reuse a
# finished part (without them it uploads the part again, as it must).
KEEP_PART_ITEMS = {"FERRY_PART_CHECKSUM_ITEMS": "keep"}


def podman(*args, timeout=120, check=False):
    return subprocess.run(
        ["podman", *map(str, args)], capture_output=True, text=True, timeout=timeout, check=check
    )


# ------------------------------------------------------- the task definition


def read_task(aws, outputs):
    """The stack's task definition and its one container, from ECS."""
    service = aws("ecs").describe_services(
        cluster=outputs["ClusterName"], services=[outputs["ServiceName"]]
    )["services"][0]
    task = aws("ecs").describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    (container,) = task["containerDefinitions"]
    return task, container


def podman_flags(task, container, extra_env):
    """`podman run` flags for `container` of `task` as Fargate runs it, plus
    `extra_env`, and the container's command. Refuses a setting it does not
    translate, so a template change cannot slip past the test unseen."""
    known = {
        "name", "image", "essential", "command", "readonlyRootFilesystem", "stopTimeout",
        "portMappings", "healthCheck", "logConfiguration", "environment", "user",
        "memory", "memoryReservation", "cpu",
    }
    unknown = sorted(k for k, v in container.items() if k not in known and v not in (None, [], {}, ""))
    if unknown:
        raise SystemExit(f"podman_flags: the task's container sets {unknown}, which this test does not translate")
    flags = []
    if container.get("readonlyRootFilesystem"):
        # Fargate mounts no tmpfs anywhere; podman would, on /tmp and /run.
        flags += ["--read-only", "--read-only-tmpfs=false"]
    if container.get("user"):
        flags += ["--user", container["user"]]
    memory = container.get("memory") or task.get("memory")
    if memory:
        # The task's memory is a hard limit, and Fargate has no swap.
        flags += [f"--memory={int(memory)}m", f"--memory-swap={int(memory)}m"]
    if task.get("cpu"):
        flags += [f"--cpus={int(task['cpu']) / 1024:g}"]
    check = container.get("healthCheck")
    if check:
        kind, *command = check["command"]
        flags += [f"--health-cmd={json.dumps(command) if kind == 'CMD' else command[0]}"]
        flags += [
            f"--health-interval={check.get('interval', 30)}s",
            f"--health-timeout={check.get('timeout', 5)}s",
            f"--health-retries={check.get('retries', 3)}",
            f"--health-start-period={check.get('startPeriod', 0)}s",
        ]
    if container.get("stopTimeout"):
        flags += [f"--stop-timeout={int(container['stopTimeout'])}"]
    env = {e["name"]: e["value"] for e in container.get("environment") or [] if e}
    env.update(extra_env)
    for name, value in sorted(env.items()):
        flags += ["--env", f"{name}={value}"]
    return flags, list(container.get("command") or [])


class Containers:
    """The containers this run started, removed at the end."""

    def __init__(self, image, flags, command, logs):
        self.image, self.flags, self.command, self.logs = image, flags, command, logs
        self.names = []

    def start(self, name, extra_flags=(), env=None):
        name = f"ferry-image-test-{os.getpid()}-{name}"
        env_flags = [f for k, v in (env or {}).items() for f in ("--env", f"{k}={v}")]
        p = podman(
            "run", "--detach", "--name", name, "--network", "host", *self.flags, *env_flags,
            *extra_flags, self.image, *self.command,
        )
        if p.returncode != 0:
            raise SystemExit(f"podman run {name} failed: {p.stderr.strip()}")
        self.names.append(name)
        return name

    def run(self, *args, extra_flags=(), env=None, timeout=300):
        """A one-off `ferry ARGS` in a container with the task's flags."""
        env_flags = [f for k, v in (env or {}).items() for f in ("--env", f"{k}={v}")]
        flags = [f for f in self.flags if not f.startswith("--health-")]
        return podman("run", "--rm", "--network", "host", *flags, *env_flags, *extra_flags,
                      *args, timeout=timeout)

    def stop(self, name, *, kill=False, timeout=120):
        """`podman stop` (or `kill -s KILL`) and wait for the container to
        end; then waits out the receive it may have dropped, so the next
        step's message does not go to a worker that no longer exists."""
        if kill:
            podman("kill", "--signal", "KILL", name)
            p = podman("wait", name, timeout=timeout)
        else:
            p = podman("stop", name, timeout=timeout)
        time.sleep(DROPPED_RECEIVE_SECS)
        return p

    def state(self, name):
        p = podman("inspect", "--format", "json", name)
        return json.loads(p.stdout)[0]["State"] if p.returncode == 0 else {}

    def save_log(self, name):
        p = podman("logs", name)
        (self.logs / f"{name}.log").write_text(p.stdout + p.stderr)
        return p.stdout + p.stderr

    def remove_all(self):
        for name in self.names:
            self.save_log(name)
            podman("rm", "--force", "--time", "0", name)


# ------------------------------------------------------------------ steps


def job_record(aws, table, job_id):
    item = aws("dynamodb").get_item(TableName=table, Key={"job_id": {"S": job_id}}).get("Item", {})
    return {k: (v.get("S") or v.get("N") or v.get("BOOL")) for k, v in item.items()}


def stored_sha256(aws, key):
    try:
        body = aws("s3").get_object(Bucket=BUCKET, Key=key)["Body"]
    except aws("s3").exceptions.NoSuchKey:
        return None
    digest = hashlib.sha256()
    for chunk in iter(lambda: body.read(8 * MIB), b""):
        digest.update(chunk)
    return digest.hexdigest()


def check_image(c, image, containers):
    inspected = json.loads(podman("image", "inspect", "--format", "json", image).stdout)[0]
    config = inspected["Config"]
    c.check(config.get("User") == "65532:65532", f"the image runs as 65532:65532 (User {config.get('User')!r})")
    c.check(config.get("Entrypoint") == ["/usr/local/bin/ferry"] and config.get("Cmd") == ["worker"],
            f"entrypoint ferry, command worker ({config.get('Entrypoint')} {config.get('Cmd')})")
    # podman shows a Docker-format image's health check beside Config, not in it.
    health = (inspected.get("Healthcheck") or config.get("Healthcheck") or {}).get("Test")
    c.check(health == ["CMD", "/usr/local/bin/ferry", "healthcheck"],
            f"the image keeps the Dockerfile's HEALTHCHECK ({health})")
    for shell in ("/bin/sh", "/bin/bash", "/usr/bin/sh", "/bin/busybox"):
        p = podman("run", "--rm", "--entrypoint", shell, image, "-c", "true")
        c.check(p.returncode != 0, f"no shell: {shell} cannot be started (exit {p.returncode})")
    version = podman("run", "--rm", image, "--version")
    c.check(version.returncode == 0 and version.stdout.startswith("ferry "),
            f"`ferry --version` runs in the image: {version.stdout.strip() or version.stderr.strip()}")
    loader = podman("run", "--rm", "--entrypoint", "/lib64/ld-linux-x86-64.so.2", image,
                    "--list", "/usr/local/bin/ferry")
    missing = [line.strip() for line in loader.stdout.splitlines() if "not found" in line]
    c.check(loader.returncode == 0 and not missing,
            f"every library the binary needs is in the image ({len(loader.stdout.splitlines())} listed, missing {missing})",
            loader.stdout + loader.stderr)
    doctor = containers.run(containers.image, "doctor")
    c.check(doctor.returncode == 0, "`ferry doctor` in the container passes on the stack's resources",
            doctor.stdout + doctor.stderr)


def check_job_and_health(c, aws, cli, outputs, containers):
    data = os.urandom(40 * MIB + 4321)
    sha = hashlib.sha256(data).hexdigest()
    origin = MemoryOrigin({"job.bin": data})
    name = containers.start("worker")
    try:
        submit = cli("submit", f"{origin.url}/job.bin", f"s3://{BUCKET}/image/job.bin", "--job-id", "image-job",
                     "--sha256", sha, "--wait", timeout=180)
        c.check(submit.returncode == 0, "a job submitted from the host succeeds in the container",
                submit.stdout + submit.stderr + containers.save_log(name))
        c.check(stored_sha256(aws, "image/job.bin") == sha, "the object in S3 is the source's bytes")
        record = job_record(aws, outputs["TableName"], "image-job")
        c.check(record.get("status") == "succeeded", f"the job's record says succeeded ({record.get('status')})")
        pid = containers.state(name).get("Pid")
        uid = next((line.split()[1] for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("Uid:")), None) if pid else None
        c.check(uid == "65532", f"the worker process runs as uid 65532 (uid {uid})")
        health = podman("healthcheck", "run", name)
        status = containers.state(name).get("Health", {}).get("Status") or containers.state(name).get(
            "Healthcheck", {}).get("Status")
        c.check(health.returncode == 0 and status == "healthy",
                f"the task's health check passes (exit {health.returncode}, {health.stdout.strip() or health.stderr.strip()}, status {status})")
        unreachable = podman("exec", name, "/usr/local/bin/ferry", "healthcheck", "--url", "http://127.0.0.1:1/healthz")
        c.check(unreachable.returncode != 0,
                f"the same command fails when nothing answers (exit {unreachable.returncode})")
    finally:
        origin.close()
        stop = containers.stop(name)
        c.check(stop.returncode == 0 and containers.state(name).get("ExitCode") == 0,
                f"an idle worker stops on SIGTERM with exit 0 (exit {containers.state(name).get('ExitCode')})")


def wait_for_bytes(cli, job_id, at_least, timeout=120):
    def progressed():
        p = cli("status", job_id, "--json")
        try:
            record = json.loads(p.stdout) if p.returncode == 0 else {}
        except json.JSONDecodeError:
            return None
        done = record.get("bytes_done") or 0
        return record if done >= at_least else None

    return wait_for(f"{job_id} to have {at_least} bytes done", progressed, timeout=timeout)


def next_container_finishes(c, aws, outputs, containers, name, env, job_id, key, sha, what):
    """Starts container `name` and checks it takes `job_id` to succeeded with
    the source's bytes at `key`."""
    container = containers.start(name, env=env)
    done = wait_for(f"{name} to finish {job_id}",
                    lambda: job_record(aws, outputs["TableName"], job_id).get("status") == "succeeded",
                    timeout=240)
    c.check(bool(done) and stored_sha256(aws, key) == sha, what, containers.save_log(container)[-3000:])
    containers.stop(container)


def check_stop_drains(c, aws, cli, outputs, containers, stop_timeout):
    # 64 MiB in 4 parts of 16 MiB, all in flight at about 0.3 MiB/s each:
    # no part can finish within the drain grace, so the stop releases the job.
    data = os.urandom(64 * MIB)
    sha = hashlib.sha256(data).hexdigest()
    origin = MemoryOrigin({"stop.bin": data}, chunk_delay=0.2)
    first = containers.start("stopped", env=SHORT_LEASES)
    try:
        submit = cli("submit", f"{origin.url}/stop.bin", f"s3://{BUCKET}/image/stop.bin", "--job-id", "image-stop",
                     "--sha256", sha)
        c.check(submit.returncode == 0, "submit the job to stop under", submit.stdout + submit.stderr)
        c.check(bool(wait_for("the job to be under way", lambda: origin.bytes_served("stop.bin") > 2 * MIB)),
                "the job is under way before the stop", containers.save_log(first)[-3000:])
        started = time.monotonic()
        podman("stop", first, timeout=stop_timeout + 60)
        took = time.monotonic() - started
        time.sleep(DROPPED_RECEIVE_SECS)
        state = containers.state(first)
        log = containers.save_log(first)
        c.check(state.get("ExitCode") == 0 and not state.get("OOMKilled"),
                f"`podman stop` mid-job: the worker drained and exited 0 in {took:.1f} s "
                f"(exit {state.get('ExitCode')}, StopTimeout {stop_timeout} s)", log[-3000:])
        record = job_record(aws, outputs["TableName"], "image-stop")
        c.check(record.get("status") == "queued" and "lease_owner" not in record,
                f"the stopped worker released its job: queued, no lease (status {record.get('status')}, "
                f"lease_owner {record.get('lease_owner')})")
        origin.chunk_delay = 0
        next_container_finishes(c, aws, outputs, containers, "after-stop", SHORT_LEASES, "image-stop",
                                "image/stop.bin", sha, "the next container finishes the released job with the source's bytes")
    finally:
        origin.close()


def check_kill_resumes(c, aws, cli, outputs, containers):
    # 96 MiB in 6 parts of 16 MiB, two at a time at about 1.5 MiB/s each:
    # the kill comes once a part is acknowledged, with most still to do.
    part = 16 * MIB
    data = os.urandom(6 * part)
    sha = hashlib.sha256(data).hexdigest()
    origin = MemoryOrigin({"kill.bin": data}, chunk_delay=0.04)
    env = dict(SHORT_LEASES, FERRY_MAX_CONCURRENT_UPLOADS="2", **KEEP_PART_ITEMS)
    first = containers.start("killed", env=env)
    try:
        submit = cli("submit", f"{origin.url}/kill.bin", f"s3://{BUCKET}/image/kill.bin", "--job-id", "image-kill",
                     "--sha256", sha)
        c.check(submit.returncode == 0, "submit the job to kill under", submit.stdout + submit.stderr)
        wait_for_bytes(cli, "image-kill", part)
        containers.stop(first, kill=True, timeout=60)
        # What the dead worker left: the parts the next one may skip.
        acknowledged = int(job_record(aws, outputs["TableName"], "image-kill").get("bytes_done") or 0)
        before = origin.bytes_served("kill.bin")
        state = containers.state(first)
        c.check(0 < acknowledged < len(data) and state.get("ExitCode") == 137,
                f"`podman kill` mid-job, {acknowledged // MIB} of {len(data) // MIB} MiB acknowledged "
                f"(exit {state.get('ExitCode')})")
        origin.chunk_delay = 0
        next_container_finishes(c, aws, outputs, containers, "resumer", env, "image-kill", "image/kill.bin", sha,
                                "a second container resumes the killed job to the source's bytes")
        after = origin.bytes_served("kill.bin") - before
        # What was not acknowledged, and at most one part more: the one whose
        # checksum state was not yet kept (docs/jobs.md "Resume").
        c.check(0 < after <= len(data) - acknowledged + part,
                f"the resume fetched {after / MIB:.1f} MiB of {len(data) // MIB} MiB: "
                f"the {acknowledged // MIB} MiB acknowledged before the kill were not fetched again")
    finally:
        origin.close()


def check_memory(c, aws, cli, outputs, containers, limit_mib):
    size = 1 << 30
    data = os.urandom(size)
    sha = hashlib.sha256(data).hexdigest()
    origin = MemoryOrigin({"big.bin": data}, chunk=1 * MIB)
    name = containers.start("one-gib")
    try:
        started = time.monotonic()
        submit = cli("submit", f"{origin.url}/big.bin", f"s3://{BUCKET}/image/big.bin", "--job-id", "image-big",
                     "--sha256", sha, "--wait", timeout=900)
        took = time.monotonic() - started
        pid = containers.state(name).get("Pid")
        status = pathlib.Path(f"/proc/{pid}/status").read_text() if pid else ""
        peak_kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)
        state = containers.state(name)
        c.check(submit.returncode == 0 and not state.get("OOMKilled"),
                f"a 1 GiB object copies in the container under the task's {limit_mib} MiB limit ({took:.1f} s)",
                submit.stdout + submit.stderr + containers.save_log(name)[-3000:])
        c.check(stored_sha256(aws, "image/big.bin") == sha, "the 1 GiB object in S3 is the source's bytes")
        c.check(peak_kib is not None and peak_kib < limit_mib * 1024,
                f"the worker's peak resident memory: {peak_kib and peak_kib // 1024} MiB (limit {limit_mib} MiB)")
        print(f"  figure: 1 GiB copy {took:.1f} s, worker peak RSS {peak_kib and peak_kib // 1024} MiB")
    finally:
        origin.close()
        del data
        containers.stop(name)


def test_ca(work):
    """A CA and a server certificate for 127.0.0.1 it signed (PEM paths)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ferry image-test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (work / "ca.pem").write_bytes(ca.public_bytes(pem))
    (work / "server.pem").write_bytes(leaf.public_bytes(pem))
    (work / "server.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    return work / "ca.pem", work / "server.pem", work / "server.key"


def check_private_ca(c, aws, image, containers, work):
    ca, cert, key = test_ca(work)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    data = os.urandom(3 * MIB)
    sha = hashlib.sha256(data).hexdigest()
    origin = MemoryOrigin({"tls.bin": data}, tls=tls)
    try:
        def copy(tag, target):
            return containers.run(tag, "copy", "--sha256", sha, f"{origin.url}/tls.bin", f"s3://{BUCKET}/image/{target}")

        refused = copy(image, "tls-refused.bin")
        said = (refused.stdout + refused.stderr).strip()
        c.check(refused.returncode != 0 and "certificate" in said.lower(),
                f"an HTTPS source from an unknown CA is refused (exit {refused.returncode})", said[-1500:])
        # docs/deploy.md, "A private CA": an image FROM ferry's with the PEM file
        # and FERRY_CA_BUNDLE naming it.
        bundled = work / "with-bundle"
        bundled.mkdir()
        shutil.copy(ca, bundled / "ca.pem")
        (bundled / "Containerfile").write_text(
            f"FROM {image}\nCOPY ca.pem /etc/ferry/ca.pem\nENV FERRY_CA_BUNDLE=/etc/ferry/ca.pem\n")
        # And the system's way: the CA appended to the image's own bundle,
        # which shows the image's CA certificates are the ones ferry reads.
        system = work / "in-system-bundle"
        system.mkdir()
        podman("create", "--name", f"ferry-image-test-{os.getpid()}-bundle", image)
        podman("cp", f"ferry-image-test-{os.getpid()}-bundle:/etc/ssl/certs/ca-certificates.crt",
               str(system / "ca-certificates.crt"))
        podman("rm", f"ferry-image-test-{os.getpid()}-bundle")
        system_roots = (system / "ca-certificates.crt").read_bytes() if (system / "ca-certificates.crt").exists() else b""
        c.check(system_roots.count(b"BEGIN CERTIFICATE") > 100,
                f"the image carries a system CA bundle ({system_roots.count(b'BEGIN CERTIFICATE')} certificates)")
        (system / "ca-certificates.crt").write_bytes(system_roots + ca.read_bytes())
        (system / "Containerfile").write_text(
            f"FROM {image}\nCOPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n")
        mounted = containers.run("--volume", f"{ca}:/etc/ferry/ca.pem:ro", "--env",
                                 "FERRY_CA_BUNDLE=/etc/ferry/ca.pem", image, "copy", "--sha256", sha,
                                 f"{origin.url}/tls.bin", f"s3://{BUCKET}/image/tls-mounted.bin")
        c.check(mounted.returncode == 0 and stored_sha256(aws, "image/tls-mounted.bin") == sha,
                "an HTTPS source from the private CA is copied with the CA bind-mounted and in FERRY_CA_BUNDLE",
                (mounted.stdout + mounted.stderr)[-1500:])
        for directory, how, target in ((bundled, "FERRY_CA_BUNDLE", "tls-bundle.bin"),
                                       (system, "the system bundle", "tls-system.bin")):
            tag = f"localhost/ferry-image-test-ca:{directory.name}"
            built = podman("build", "--network", "none", "-t", tag, str(directory), timeout=300)
            if not c.check(built.returncode == 0, f"an image FROM ferry's with the CA in {how} builds",
                           built.stderr[-1500:]):
                continue
            accepted = copy(tag, target)
            c.check(accepted.returncode == 0 and stored_sha256(aws, f"image/{target}") == sha,
                    f"an HTTPS source from the private CA is copied with the CA in {how}",
                    (accepted.stdout + accepted.stderr)[-1500:])
            podman("rmi", tag)
    finally:
        origin.close()


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.split("\n\n")[-1])
    image, ferry_cli = sys.argv[1], sys.argv[2]
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)
    os.environ.update(AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1", **LOCAL_AWS)
    c = Checks()
    work = pathlib.Path(tempfile.mkdtemp(prefix="ferry-image-test-", dir=ROOT / ".ferry"))
    with open(work / "moto.log", "w") as moto_log:
        moto = Piped(SCRIPTS / "moto_server.py", 0, log=moto_log)
        containers = None
        try:
            endpoint = f"http://127.0.0.1:{moto.port}"
            aws = clients(endpoint)
            template = expand(yaml.load(stack_test.TEMPLATE.read_text(), Loader=CfnLoader), PARAMETERS)
            for bucket in PARAMETERS["AllowedBuckets"].split(","):
                aws("s3").create_bucket(Bucket=bucket)
            outputs = create_stack(c, aws("cloudformation"), template, PARAMETERS)
            if outputs is None:
                raise SystemExit("the stack was not created")
            task, container = read_task(aws, outputs)
            flags, command = podman_flags(task, container, dict(LOCAL_AWS, AWS_ENDPOINT_URL=endpoint, **SHORT_POLLS))
            print("  podman run flags from the task definition:\n    " + " ".join(flags) + f"\n    command {command}")
            containers = Containers(image, flags, command, work)
            env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, FERRY_QUEUE_URL=outputs["QueueUrl"],
                       FERRY_TABLE=outputs["TableName"], FERRY_LOG_FORMAT="text")

            def cli(*args, timeout=60):
                return subprocess.run([ferry_cli, *args], env=env, capture_output=True, text=True,
                                      timeout=timeout, check=False)

            limit = int(container.get("memory") or task["memory"])
            stop_timeout = int(container["stopTimeout"])
            steps = (
                ("the image", lambda: check_image(c, image, containers)),
                ("a job and the health check", lambda: check_job_and_health(c, aws, cli, outputs, containers)),
                ("podman stop mid-job", lambda: check_stop_drains(c, aws, cli, outputs, containers, stop_timeout)),
                ("podman kill mid-job", lambda: check_kill_resumes(c, aws, cli, outputs, containers)),
                ("1 GiB under the memory limit", lambda: check_memory(c, aws, cli, outputs, containers, limit)),
                ("a private CA", lambda: check_private_ca(c, aws, image, containers, work)),
            )
            only = os.environ.get("IMAGE_TEST_ONLY", "")
            for title, step in steps:
                if only and only not in title:
                    continue
                print(f"-- {title}", flush=True)
                started = time.monotonic()
                step()
                print(f"   ({time.monotonic() - started:.1f} s)", flush=True)
        finally:
            if containers is not None:
                containers.remove_all()
            moto.stop()
    c.finish("image test", work)


if __name__ == "__main__":
    main()
