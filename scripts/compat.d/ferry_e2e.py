"""`ferry copy` in every FERRY_S3_CHECKSUM mode against the store in the
environment (AWS_ENDPOINT_URL_S3 and credentials, as `scripts/compat-s3 serve`
prints them), one single-PutObject object and one multipart object each, with
an expected sha256; then reads every object back and compares its bytes.

With --require MODE, each copy in MODE (the store's working mode) is a check:
PASS if ferry exited 0 and the store holds the right bytes, else FAIL (exit 1).
The other modes are reported only.

Usage: ferry_e2e.py --ferry BIN [--bucket B] [--modes crc64nvme,crc32c,...]
                    [--require MODE] [--markdown]
"""

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from compat_s3 import Client  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SIZES = {"1MiB": 1 << 20, "40MiB": 40 << 20}  # 40 MiB = 3 parts of 16 MiB


def start_origin(directory):
    p = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "scripts", "http_origin.py"), directory, "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = p.stdout.readline()
    if not line.startswith("port "):
        sys.exit("http_origin.py did not start")
    return p, f"http://127.0.0.1:{line.split()[1]}"


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--ferry", required=True)
    a.add_argument("--bucket", default=os.environ.get("COMPAT_BUCKET", "ferry-compat"))
    a.add_argument("--modes", default="crc64nvme,crc32c,crc32,md5,none")
    a.add_argument("--markdown", action="store_true")
    a.add_argument("--title", default="")
    a.add_argument("--require", default="", help="mode whose copies must succeed")
    args = a.parse_args()
    endpoint = os.environ["AWS_ENDPOINT_URL_S3"]
    client = Client(endpoint, os.environ.get("AWS_REGION", "us-east-1"), args.bucket, "")
    rows = []
    with tempfile.TemporaryDirectory() as src:
        digests = {}
        for name, size in SIZES.items():
            data = os.urandom(size)
            digests[name] = hashlib.sha256(data).hexdigest()
            with open(os.path.join(src, name), "wb") as f:
                f.write(data)
        origin, url = start_origin(src)
        try:
            env = dict(os.environ, FERRY_SOURCE_ALLOW_CIDRS="127.0.0.0/8", FERRY_LOG_FORMAT="text")
            env.setdefault("FERRY_S3_PATH_STYLE", "true")
            for mode in args.modes.split(","):
                for name in SIZES:
                    key = f"compat-e2e/{int(time.time())}/{mode}/{name}"
                    started = time.time()
                    p = subprocess.run(
                        [args.ferry, "copy", "-q", "--sha256", digests[name], f"{url}/{name}", f"s3://{args.bucket}/{key}"],
                        env=dict(env, FERRY_S3_CHECKSUM=mode),
                        capture_output=True,
                        text=True,
                        timeout=300,
                    )
                    said = (p.stdout.strip().splitlines() or p.stderr.strip().splitlines() or [""])[-1]
                    said = said.split(": ", 1)[-1] if p.returncode == 0 else said
                    got = client.get(key)
                    stored = (
                        "right bytes"
                        if got.ok and hashlib.sha256(got.body).hexdigest() == digests[name]
                        else "no object" if got.status == 404 else f"WRONG BYTES ({got.status}, {len(got.body)} B)"
                    )
                    head = client.head(key)
                    sums = ", ".join(
                        f"{k[len('x-amz-checksum-'):]}={v}"
                        for k, v in sorted(head.headers.items())
                        if k.startswith("x-amz-checksum-")
                    ) if head.ok else ""
                    rows.append((mode, name, p.returncode, f"{time.time() - started:.1f}", said, stored, sums or "-"))
                    print(f"  {mode:9} {name:5} exit {p.returncode}  {stored}  {said}", file=sys.stderr)
        finally:
            origin.stdin.close()
            origin.wait(timeout=10)
    if args.markdown:
        print(f"#### {args.title or endpoint}\n")
        print("| FERRY_S3_CHECKSUM | object | ferry exit | ferry says | store holds | store's x-amz-checksum-* (HEAD) |")
        print("|---|---|---|---|---|---|")
        for mode, name, rc, secs, said, stored, sums in rows:
            print(f"| `{mode}` | {name} | {rc} | {said.replace('|', '/')} | {stored} | {sums} |")
    else:
        for r in rows:
            print(" | ".join(str(x) for x in r))
    failed = False
    for mode, name, rc, secs, said, stored, sums in rows:
        if mode == args.require:
            ok = rc == 0 and stored == "right bytes"
            failed |= not ok
            print(f"{'PASS' if ok else 'FAIL'}  ferry copy {name} in {mode}: exit {rc}, {stored}, "
                  f"{secs} s, {said}; HEAD {sums}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
