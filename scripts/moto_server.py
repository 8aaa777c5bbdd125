"""Runs moto's server (S3, SQS, DynamoDB, CloudFormation…) with six moto
5.2.5 bugs mended (below): the one emulator of the tests, the scripts and
docker-compose.yml.

Prints `port N` once it listens. By default it serves on loopback until stdin
closes: tying its life to a pipe means the emulator ends with whoever started
it, even if that process is killed — no orphans. In a container, where stdin
is closed and the container is the process's owner, `--until-signal` serves
until SIGTERM or SIGINT instead.

Usage: moto_server.py [--host ADDRESS] [--until-signal] [PORT]
       (defaults: 127.0.0.1, until stdin closes, port 0 = an ephemeral port)
"""

import argparse
import signal
import sys
import threading

from moto.s3.models import FakeMultipart, S3Backend
from moto.s3.responses import S3Response
from moto.server import ThreadedMotoServer
from moto.core.utils import unix_time
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto.sqs.models import Queue, SQSBackend


def _list_parts_with_s3s_root(original):
    """moto 5.2.5 names ListParts' XML root `ListPartsResponse`; S3 (and the
    AWS SDK for Rust, which checks) calls it `ListPartsResult`."""

    def list_parts(self):
        status, headers, body = original(self)
        if isinstance(body, bytes):
            body = body.replace(b"<ListPartsResponse", b"<ListPartsResult", 1)
            body = body.replace(b"</ListPartsResponse>", b"</ListPartsResult>", 1)
        elif isinstance(body, str):
            body = body.replace("<ListPartsResponse", "<ListPartsResult", 1)
            body = body.replace("</ListPartsResponse>", "</ListPartsResult>", 1)
        return status, headers, body

    return list_parts


S3Response.list_parts = _list_parts_with_s3s_root(S3Response.list_parts)


# moto 5.2.5 pages ListParts by treating the part-number marker as a list
# index, so with gaps in the part numbers (1, 3, 4: what an interrupted
# upload leaves) pages skip parts and end early. S3 lists the parts numbered
# above the marker.
def _parts_after(self, part_number_marker, max_parts):
    later = [number for number in self.partlist if number > part_number_marker]
    for number in later[:max_parts]:
        yield self.parts[number]


def _is_truncated(self, bucket_name, multipart_id, next_part_number_marker):
    parts = self.get_bucket(bucket_name).multiparts[multipart_id].parts
    return any(int(number) > int(next_part_number_marker) for number in parts)


FakeMultipart.list_parts = _parts_after
S3Backend.is_truncated = _is_truncated


# moto 5.2.5's SendMessage reads `queue.attributes` once per message, and
# that builds every attribute, counting the queue's messages (a clock read
# per message): sending n messages costs O(n²) — about 70 s for the first
# 1,000 messages of a queue, and a queue of 10,000 is out of reach (bulk
# submit's tests). For a standard queue the only attribute it reads there,
# ContentBasedDeduplication, does not exist, so during a send a standard
# queue answers with no attributes. FIFO queues, and every other caller
# (GetQueueAttributes), get the real ones.
_sending = threading.local()
_queue_attributes = Queue.attributes.fget


def _attributes_outside_sends(self):
    if getattr(_sending, "active", False) and not self.fifo_queue:
        return {}
    return _queue_attributes(self)


def _send_without_recounting(original):
    def send_message(self, *args, **kwargs):
        _sending.active = True
        try:
            return original(self, *args, **kwargs)
        finally:
            _sending.active = False

    return send_message


Queue.attributes = property(_attributes_outside_sends)
SQSBackend.send_message = _send_without_recounting(SQSBackend.send_message)


# The same in ReceiveMessage: for each candidate message it reads the
# queue's MessageRetentionPeriod through GetQueueAttributes, which counts
# the queue's messages — O(n²) per receive, ~40 ms a message with 500
# waiting (scripts/fleet-bench). The retention period is a plain attribute.
def _valid_based_on_retention_period(self, queue_name, message):
    retention_period = self.get_queue(queue_name).message_retention_period
    return retention_period + message.sent_timestamp / 1000 > unix_time()


SQSBackend.is_message_valid_based_on_retention_period = _valid_based_on_retention_period


# moto 5.2.5's CloudFormation creates a DynamoDB table without its
# TimeToLiveSpecification, so the stack's table (deploy/cloudformation) would
# never expire records; scripts/stack_test.py checks the table as created.
_table_from_cloudformation = Table.create_from_cloudformation_json.__func__


def _table_with_ttl(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
    table = _table_from_cloudformation(
        cls, resource_name, cloudformation_json, account_id, region_name, **kwargs
    )
    spec = cloudformation_json["Properties"].get("TimeToLiveSpecification")
    if spec and str(spec.get("Enabled")).lower() == "true":
        dynamodb_backends[account_id][region_name].update_time_to_live(
            table.name, {"Enabled": True, "AttributeName": spec["AttributeName"]}
        )
    return table


Table.create_from_cloudformation_json = classmethod(_table_with_ttl)


# moto 5.2.5 serves requests on parallel threads and applies a DynamoDB
# request without a lock: two conditional UpdateItems on one item can both
# pass their condition (two workers' claims of one job both "succeed", and
# the job runs twice), and a GetItem can read an item half-updated. DynamoDB
# is atomic per item; one lock over every DynamoDB request makes moto so.
_dynamodb_lock = threading.Lock()
_dynamodb_call_action = DynamoHandler.call_action


def _dynamodb_one_at_a_time(self):
    with _dynamodb_lock:
        return _dynamodb_call_action(self)


DynamoHandler.call_action = _dynamodb_one_at_a_time


def main() -> None:
    parser = argparse.ArgumentParser(description="moto's server with ferry's mends")
    parser.add_argument("port", nargs="?", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--until-signal",
        action="store_true",
        help="serve until SIGTERM/SIGINT, not until stdin closes",
    )
    args = parser.parse_args()
    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    print(f"port {server.get_host_and_port()[1]}", flush=True)
    if args.until_signal:
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        stop.wait()
    else:
        sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
