"""Probes an S3-compatible store for what ferry's upload modes need, and prints
which requests it accepts, rejects or silently ignores.

Every request is built and signed here (botocore's SigV4 signer, nothing of
boto3's request pipeline), so exactly the headers listed are sent: no SDK adds
a checksum of its own (the 2025 SDKs' `when_supported` default would). The
payload is UNSIGNED-PAYLOAD, as ferry sends it, unless that is refused.

Verdicts:
  ok        the store did what AWS S3 does
  REJECTS   a request ferry may send was refused (status and S3 error code shown)
  IGNORES   a request that AWS refuses (a wrong checksum, a broken
            precondition) was accepted: the store does not check it
  differs   accepted, but the answer is not AWS's (detail says how)
  n/a       not probed (a step it depends on failed, or not configured)

Usage: compat_s3.py --endpoint URL [--region R] [--bucket B]
                    [--vhost-domain D] [--json FILE] [--markdown]
       credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
It creates the bucket if missing and leaves only objects under `compat-probe/`.
"""

import argparse
import base64
import hashlib
import json
import os
import sys
import time
import uuid
import xml.etree.ElementTree as ET
import zlib
from urllib.parse import quote, urlencode, urlsplit

import requests
from awscrt import checksums
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

MIB = 1024 * 1024
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


# --- checksums, as S3 spells them -------------------------------------------


def b64(raw):
    return base64.b64encode(raw).decode()


def crc64nvme(data):
    return checksums.crc64nvme(data).to_bytes(8, "big")


def crc32c(data):
    return checksums.crc32c(data).to_bytes(4, "big")


def crc32(data):
    return zlib.crc32(data).to_bytes(4, "big")


ALGOS = {"CRC64NVME": crc64nvme, "CRC32C": crc32c, "CRC32": crc32}


def checksum(algo, data):
    return b64(ALGOS[algo](data))


def composite(algo, parts):
    """S3's checksum of checksums: the algorithm over the parts' raw
    checksums, then `-N`."""
    raw = b"".join(ALGOS[algo](p) for p in parts)
    return f"{b64(ALGOS[algo](raw))}-{len(parts)}"


def wrong(value):
    """A well-formed checksum of the same length that is not the right one."""
    raw = bytearray(base64.b64decode(value.split("-")[0]))
    raw[0] ^= 0xFF
    return b64(bytes(raw))


def md5_b64(data):
    return b64(hashlib.md5(data).digest())


# --- a signing client that sends exactly what it is given -------------------


class Signer(S3SigV4Auth):
    sign_payload = False

    def _should_sha256_sign_payload(self, request):
        return self.sign_payload


class Response:
    def __init__(self, r):
        self.status = r.status_code
        self.headers = {k.lower(): v for k, v in r.headers.items()}
        self.body = r.content
        self.code = ""
        self.message = ""
        if self.body.lstrip().startswith(b"<"):
            try:
                root = ET.fromstring(self.body)
            except ET.ParseError:
                root = None
            if root is not None and strip(root.tag) == "Error":
                self.code = text(root, "Code")
                self.message = text(root, "Message")

    @property
    def ok(self):
        # S3 may answer 200 to Complete and put an <Error> in the body.
        return 200 <= self.status < 300 and not self.code

    def why(self):
        msg = (self.message or "")[:90]
        return f"{self.status} {self.code or '-'}{': ' + msg if msg else ''}"


def strip(tag):
    return tag.split("}", 1)[-1]


def text(el, name):
    for child in el:
        if strip(child.tag) == name:
            return child.text or ""
    return ""


def children(el, name):
    return [c for c in el.iter() if strip(c.tag) == name]


class Client:
    def __init__(self, endpoint, region, bucket, vhost_domain):
        self.endpoint = endpoint.rstrip("/")
        self.region = region
        self.bucket = bucket
        self.vhost_domain = vhost_domain
        self.signer = Signer(
            Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]),
            "s3",
            region,
        )
        self.http = requests.Session()

    def request(self, method, key=None, query=None, headers=None, body=b"", vhost=False):
        path = "/" if vhost else f"/{self.bucket}"
        if key is not None:
            path = path.rstrip("/") + "/" + quote(key, safe="/~")
        url = self.endpoint + path
        if query:
            url += "?" + urlencode(query, quote_via=quote).replace("=&", "&").rstrip("=")
        hdrs = dict(headers or {})
        if vhost:
            hdrs["Host"] = f"{self.bucket}.{self.vhost_domain}:{urlsplit(self.endpoint).port}"
        req = AWSRequest(method=method, url=url, data=body, headers=hdrs)
        self.signer.add_auth(req)
        prepared = req.prepare()
        r = self.http.request(
            method, prepared.url, headers=dict(prepared.headers), data=body, timeout=60
        )
        return Response(r)

    # The calls ferry makes, with the headers each mode sends.
    def put(self, key, body, headers=None, **kw):
        return self.request("PUT", key, headers=headers, body=body, **kw)

    def head(self, key):
        return self.request("HEAD", key, headers={"x-amz-checksum-mode": "ENABLED"})

    def get(self, key):
        return self.request("GET", key)

    def create(self, key, headers=None):
        r = self.request("POST", key, query={"uploads": ""}, headers=headers)
        upload_id = text(ET.fromstring(r.body), "UploadId") if r.ok else None
        return r, upload_id

    def upload_part(self, key, upload_id, number, body, headers=None):
        return self.request(
            "PUT",
            key,
            query={"partNumber": str(number), "uploadId": upload_id},
            headers=headers,
            body=body,
        )

    def complete(self, key, upload_id, parts, headers=None):
        """parts: [(number, etag, {ChecksumCRC32C: value, …})] in the order given."""
        xml = ['<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">']
        for number, etag, sums in parts:
            xml.append(f"<Part><PartNumber>{number}</PartNumber><ETag>{etag}</ETag>")
            for name, value in sums.items():
                xml.append(f"<{name}>{value}</{name}>")
            xml.append("</Part>")
        xml.append("</CompleteMultipartUpload>")
        hdrs = {"Content-Type": "application/xml"}
        hdrs.update(headers or {})
        return self.request(
            "POST", key, query={"uploadId": upload_id}, headers=hdrs, body="".join(xml).encode()
        )

    def abort(self, key, upload_id):
        return self.request("DELETE", key, query={"uploadId": upload_id})

    def list_parts(self, key, upload_id):
        return self.request("GET", key, query={"uploadId": upload_id})

    def list_uploads(self, prefix):
        return self.request("GET", None, query={"uploads": "", "prefix": prefix})


# --- the probe ----------------------------------------------------------------


class Probe:
    def __init__(self, client):
        self.c = client
        self.rows = []
        self.prefix = f"compat-probe/{uuid.uuid4().hex[:8]}/"
        self.part1 = os.urandom(5 * MIB)
        self.part2 = os.urandom(1 * MIB + 17)
        self.part3 = os.urandom(5 * MIB)

    def key(self, name):
        return self.prefix + name

    def row(self, feature, request, verdict, detail=""):
        self.rows.append(
            {"feature": feature, "request": request, "verdict": verdict, "detail": detail}
        )
        print(f"  {verdict:8} {feature}: {request} {('— ' + detail) if detail else ''}", file=sys.stderr)

    def expect_ok(self, feature, request, r, detail=""):
        if r.ok:
            self.row(feature, request, "ok", detail)
        else:
            self.row(feature, request, "REJECTS", r.why())
        return r.ok

    def expect_refused(self, feature, request, r, want_codes):
        if r.ok:
            self.row(feature, request, "IGNORES", f"{r.status}: accepted")
        elif r.code in want_codes:
            self.row(feature, request, "ok", r.why())
        else:
            self.row(feature, request, "differs", f"refused, but as {r.why()} (AWS: {'/'.join(want_codes)})")

    def stored(self, key, algo, expected):
        """What HEAD with x-amz-checksum-mode: ENABLED shows for the object."""
        h = self.c.head(key)
        if not h.ok:
            return "differs", f"HEAD {h.status}"
        got = h.headers.get(f"x-amz-checksum-{algo.lower()}")
        ctype = h.headers.get("x-amz-checksum-type", "")
        others = sorted(k for k in h.headers if k.startswith("x-amz-checksum-") and k != "x-amz-checksum-type")
        if got is None:
            return "differs", "HEAD shows no x-amz-checksum-%s%s" % (
                algo.lower(),
                f" (shows {', '.join(others)})" if others else "",
            )
        if got != expected and "-" in expected and got == expected.split("-")[0]:
            return "differs", f"HEAD shows {got}: the right value without AWS's `-N` part count"
        if got != expected:
            return "differs", f"HEAD shows {got}, expected {expected}"
        return "ok", f"HEAD echoes it{' (' + ctype + ')' if ctype else ''}"

    # Each step: one feature of the table.

    def unsigned_payload(self):
        r = self.c.put(self.key("unsigned"), b"hello")
        if r.ok:
            self.row("UNSIGNED-PAYLOAD", "PutObject, x-amz-content-sha256: UNSIGNED-PAYLOAD", "ok")
            return
        self.row("UNSIGNED-PAYLOAD", "PutObject, x-amz-content-sha256: UNSIGNED-PAYLOAD", "REJECTS", r.why())
        self.c.signer.sign_payload = True  # go on with signed payloads
        r = self.c.put(self.key("signed"), b"hello")
        self.expect_ok("signed payload (fallback)", "PutObject, sha256 payload", r)

    def single_put(self, algo):
        key = self.key(f"put-{algo}")
        data = os.urandom(64 * 1024)
        value = checksum(algo, data)
        hdr = {f"x-amz-checksum-{algo.lower()}": value, "x-amz-sdk-checksum-algorithm": algo}
        r = self.c.put(key, data, hdr)
        if self.expect_ok(f"{algo} PutObject", f"x-amz-checksum-{algo.lower()} right", r):
            verdict, detail = self.stored(key, algo, value)
            self.row(f"{algo} PutObject stored", "HEAD x-amz-checksum-mode: ENABLED", verdict, detail)
        bad = dict(hdr)
        bad[f"x-amz-checksum-{algo.lower()}"] = wrong(value)
        r = self.c.put(self.key(f"put-{algo}-bad"), data, bad)
        self.expect_refused(f"{algo} PutObject", f"x-amz-checksum-{algo.lower()} wrong", r, ["BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch"])

    def content_md5(self):
        data = os.urandom(64 * 1024)
        r = self.c.put(self.key("md5"), data, {"Content-MD5": md5_b64(data)})
        self.expect_ok("Content-MD5 PutObject", "Content-MD5 right", r)
        r = self.c.put(self.key("md5-bad"), data, {"Content-MD5": md5_b64(data + b"x")})
        self.expect_refused("Content-MD5 PutObject", "Content-MD5 wrong", r, ["BadDigest", "InvalidDigest"])

    def multipart(self, mode):
        """mode: CRC64NVME (full object), CRC32C / CRC32 (composite), MD5, NONE."""
        key = self.key(f"mpu-{mode}")
        parts = [self.part1, self.part2]
        algo = mode if mode in ALGOS else None
        create_h = {}
        if algo:
            create_h["x-amz-checksum-algorithm"] = algo
            create_h["x-amz-checksum-type"] = "FULL_OBJECT" if algo == "CRC64NVME" else "COMPOSITE"
        feature = {
            "CRC64NVME": "CRC64NVME multipart FULL_OBJECT",
            "CRC32C": "CRC32C multipart COMPOSITE",
            "CRC32": "CRC32 multipart COMPOSITE",
            "MD5": "Content-MD5 multipart",
            "NONE": "multipart, no checksum",
        }[mode]
        r, upload = self.c.create(key, create_h)
        if not self.expect_ok(feature, "CreateMultipartUpload " + (", ".join(f"{k}: {v}" for k, v in create_h.items()) or "plain"), r):
            return None
        etags, sums = [], []
        for i, data in enumerate(parts, 1):
            h = {}
            if algo:
                h[f"x-amz-checksum-{algo.lower()}"] = checksum(algo, data)
            if mode == "MD5":
                h["Content-MD5"] = md5_b64(data)
            r = self.c.upload_part(key, upload, i, data, h)
            if not r.ok:
                self.row(feature, f"UploadPart {i} with its checksum", "REJECTS", r.why())
                self.c.abort(key, upload)
                return None
            etags.append(r.headers.get("etag", ""))
            sums.append({f"Checksum{algo}": checksum(algo, data)} if algo else {})
        self.row(feature, "UploadPart ×2 with " + (f"x-amz-checksum-{algo.lower()}" if algo else "Content-MD5" if mode == "MD5" else "no checksum"), "ok")

        if algo:
            # A part with a wrong checksum: does the store look?
            bad_h = {f"x-amz-checksum-{algo.lower()}": wrong(checksum(algo, self.part2))}
            r = self.c.upload_part(key, upload, 3, self.part2, bad_h)
            self.expect_refused(feature, "UploadPart with a wrong checksum", r, ["BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch"])
        if mode == "MD5":
            r = self.c.upload_part(key, upload, 3, self.part2, {"Content-MD5": md5_b64(self.part2 + b"x")})
            self.expect_refused(feature, "UploadPart with a wrong Content-MD5", r, ["BadDigest", "InvalidDigest"])

        # ListParts: sizes, ETags, per-part checksums.
        r = self.c.list_parts(key, upload)
        if r.ok:
            root = ET.fromstring(r.body)
            listed = {int(text(p, "PartNumber")): p for p in children(root, "Part")}
            detail = []
            if sorted(listed)[:2] != [1, 2]:
                detail.append(f"lists parts {sorted(listed)}")
            if algo:
                got = [text(listed[n], f"Checksum{algo}") if n in listed else "" for n in (1, 2)]
                want = [checksum(algo, p) for p in parts]
                if got == want:
                    self.row(feature, f"ListParts shows Checksum{algo} per part", "ok")
                elif any(got):
                    self.row(feature, f"ListParts shows Checksum{algo} per part", "differs", f"listed {got}, expected {want}")
                else:
                    self.row(feature, f"ListParts shows Checksum{algo} per part", "differs", "no per-part checksum listed")
            sizes = [text(listed[n], "Size") if n in listed else "" for n in (1, 2)]
            if sizes != [str(len(p)) for p in parts]:
                detail.append(f"sizes {sizes}")
            self.row(feature, "ListParts", "ok" if not detail else "differs", "; ".join(detail))
        else:
            self.row(feature, "ListParts", "REJECTS", r.why())

        complete_parts = [(i + 1, etags[i], sums[i]) for i in range(2)]
        complete_h = {}
        if algo == "CRC64NVME":
            complete_h = {
                "x-amz-checksum-crc64nvme": checksum(algo, b"".join(parts)),
                "x-amz-checksum-type": "FULL_OBJECT",
                "x-amz-mp-object-size": str(sum(len(p) for p in parts)),
            }
        if algo:
            self.wrong_complete(feature, algo, create_h, complete_h)
        r = self.c.complete(key, upload, complete_parts, complete_h)
        if not self.expect_ok(feature, "CompleteMultipartUpload" + (" with full-object checksum, type, MpuObjectSize" if algo == "CRC64NVME" else f" with part Checksum{algo}" if algo else ""), r):
            self.c.abort(key, upload)
            return None
        if algo:
            want = checksum(algo, b"".join(parts)) if algo == "CRC64NVME" else composite(algo, parts)
            answered = text(ET.fromstring(r.body), f"Checksum{algo}")
            if answered == want:
                self.row(feature, f"Complete's answer carries Checksum{algo}", "ok", answered)
            elif answered and answered == want.split("-")[0]:
                self.row(feature, f"Complete's answer carries Checksum{algo}", "differs", f"{answered}: the right value without AWS's `-N` part count")
            else:
                self.row(feature, f"Complete's answer carries Checksum{algo}", "differs", f"{answered or 'none'}, expected {want}")
        got = self.c.get(key)
        if got.body != b"".join(parts):
            self.row(feature, "GET after Complete", "differs", f"{len(got.body)} bytes, not the parts in order")
        if algo == "CRC64NVME":
            verdict, detail = self.stored(key, algo, checksum(algo, b"".join(parts)))
            self.row(feature, "full-object CRC64NVME stored", verdict, detail)
        elif algo:
            verdict, detail = self.stored(key, algo, composite(algo, parts))
            self.row(feature, "composite checksum stored", verdict, detail)
        else:
            etag = self.c.head(key).headers.get("etag", "").strip('"')
            want = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-2"
            self.row(
                feature,
                "object ETag is md5(part md5s)-N",
                "ok" if etag == want else "differs",
                "" if etag == want else f"ETag {etag}, md5-of-md5s {want}",
            )
        return key

    def wrong_complete(self, feature, algo, create_h, complete_h):
        """On an upload of its own: Complete with a wrong whole-object
        checksum (full object) or a wrong part checksum (composite)."""
        key = self.key(f"mpu-{algo}-wrong")
        r, upload = self.c.create(key, create_h)
        if not r.ok:
            return
        etags = []
        for i, data in enumerate([self.part1, self.part2], 1):
            h = {f"x-amz-checksum-{algo.lower()}": checksum(algo, data)}
            etags.append(self.c.upload_part(key, upload, i, data, h).headers.get("etag", ""))
        sums = [{f"Checksum{algo}": checksum(algo, d)} for d in (self.part1, self.part2)]
        if algo == "CRC64NVME":
            bad_h = dict(complete_h, **{"x-amz-checksum-crc64nvme": wrong(complete_h["x-amz-checksum-crc64nvme"])})
            r = self.c.complete(key, upload, [(1, etags[0], sums[0]), (2, etags[1], sums[1])], bad_h)
            request = "Complete with a wrong full-object checksum"
        else:
            bad = {f"Checksum{algo}": wrong(sums[0][f"Checksum{algo}"])}
            r = self.c.complete(key, upload, [(1, etags[0], bad), (2, etags[1], sums[1])])
            request = "Complete listing a wrong part checksum"
        self.expect_refused(feature, request, r, ["BadDigest", "InvalidDigest", "InvalidPart", "InvalidRequest"])
        if not r.ok:
            self.c.abort(key, upload)

    def out_of_order(self):
        key = self.key("order")
        r, upload = self.c.create(key)
        if not r.ok:
            self.row("parts out of order at Complete", "-", "n/a", r.why())
            return
        etags = []
        for i, data in ((1, self.part1), (2, self.part3)):  # both full size: only the order is wrong
            etags.append(self.c.upload_part(key, upload, i, data).headers.get("etag", ""))
        r = self.c.complete(key, upload, [(2, etags[1], {}), (1, etags[0], {})])
        self.expect_refused("parts out of order at Complete", "Complete listing part 2 before part 1", r, ["InvalidPartOrder"])
        if r.ok:
            body = self.c.get(key).body
            order = "part-number order" if body == self.part1 + self.part3 else "listed order" if body == self.part3 + self.part1 else f"{len(body)} bytes, neither order"
            self.rows[-1]["detail"] += f"; object holds the parts in {order}"
        if not r.ok:
            r = self.c.complete(key, upload, [(1, etags[0] + "x", {}), (2, etags[1], {})])
            self.expect_refused("wrong part ETag at Complete", "Complete listing a wrong ETag", r, ["InvalidPart"])
            self.c.abort(key, upload)

    def unknown_upload(self):
        r = self.c.upload_part(self.key("nope"), "no-such-upload-id-" + uuid.uuid4().hex, 1, b"x")
        self.expect_refused("UploadPart to an unknown upload id", "UploadPart uploadId=<made up>", r, ["NoSuchUpload"])

    def if_none_match(self, existing_key):
        key = self.key("inm-new")
        r = self.c.put(key, b"one", {"If-None-Match": "*"})
        self.expect_ok("If-None-Match: * PutObject", "new key", r)
        r = self.c.put(key, b"two", {"If-None-Match": "*"})
        self.expect_refused("If-None-Match: * PutObject", "existing key", r, ["PreconditionFailed"])
        if not r.ok:
            pass
        elif self.c.get(key).body == b"two":
            self.rows[-1]["detail"] += "; the object was overwritten"
        if existing_key is None:
            self.row("If-None-Match: * Complete", "-", "n/a", "no multipart upload completed")
            return
        r, upload = self.c.create(existing_key)
        if not r.ok:
            self.row("If-None-Match: * Complete", "-", "n/a", r.why())
            return
        etag = self.c.upload_part(existing_key, upload, 1, b"small").headers.get("etag", "")
        r = self.c.complete(existing_key, upload, [(1, etag, {})], {"If-None-Match": "*"})
        self.expect_refused("If-None-Match: * Complete", "existing key", r, ["PreconditionFailed"])
        if not r.ok:
            self.c.abort(existing_key, upload)

    def list_uploads(self):
        key = self.key("listed")
        r, upload = self.c.create(key)
        if not r.ok:
            self.row("ListMultipartUploads", "-", "n/a", r.why())
            return
        r = self.c.list_uploads(self.prefix)
        if not r.ok:
            self.row("ListMultipartUploads", "prefix=", "REJECTS", r.why())
        else:
            ids = [text(u, "UploadId") for u in children(ET.fromstring(r.body), "Upload")]
            self.row(
                "ListMultipartUploads",
                "prefix= lists an open upload",
                "ok" if upload in ids else "differs",
                "" if upload in ids else f"listed {len(ids)} uploads, not ours",
            )
        r = self.c.abort(key, upload)
        self.expect_ok("AbortMultipartUpload", "DELETE ?uploadId", r)

    def addressing(self):
        r = self.c.put(self.key("path-style"), b"p")
        self.expect_ok("path-style", "http://host/bucket/key", r)
        if not self.c.vhost_domain:
            self.row("virtual-host style", "-", "n/a", "no --vhost-domain given")
            return
        r = self.c.put(self.key("vhost"), b"v", vhost=True)
        self.expect_ok("virtual-host style", f"Host: bucket.{self.c.vhost_domain}", r)

    def run(self):
        self.unsigned_payload()
        self.addressing()
        for algo in ("CRC64NVME", "CRC32C", "CRC32"):
            self.single_put(algo)
        self.content_md5()
        done = None
        for mode in ("CRC64NVME", "CRC32C", "CRC32", "MD5", "NONE"):
            key = self.multipart(mode)
            done = done or key
        self.out_of_order()
        self.unknown_upload()
        self.if_none_match(done)
        self.list_uploads()
        return self.rows


def ensure_bucket(client):
    r = client.request("HEAD")
    if r.status == 404:
        r = client.request("PUT")
        if not r.ok and r.code not in ("BucketAlreadyOwnedByYou",):
            sys.exit(f"cannot create bucket {client.bucket}: {r.why()}")


def markdown(rows, title):
    out = [f"#### {title}", "", "| feature | request | verdict | detail |", "|---|---|---|---|"]
    for r in rows:
        detail = r["detail"].replace("|", "\\|")
        out.append(f"| {r['feature']} | {r['request']} | {r['verdict']} | {detail} |")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
    p.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    p.add_argument("--bucket", default="ferry-compat")
    p.add_argument("--vhost-domain", default="")
    p.add_argument("--title", default="")
    p.add_argument("--json")
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args()
    if not a.endpoint:
        sys.exit("--endpoint (or AWS_ENDPOINT_URL_S3) is required")
    client = Client(a.endpoint, a.region, a.bucket, a.vhost_domain)
    ensure_bucket(client)
    started = time.time()
    rows = Probe(client).run()
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"endpoint": a.endpoint, "title": a.title, "rows": rows}, f, indent=1)
    if a.markdown:
        print(markdown(rows, a.title or a.endpoint))
    else:
        width = max(len(r["feature"]) for r in rows)
        for r in rows:
            print(f"{r['verdict']:8} {r['feature']:{width}}  {r['request']}{('  — ' + r['detail']) if r['detail'] else ''}")
    print(f"({len(rows)} checks in {time.time() - started:.1f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
