"""Runs moto's server (S3 + SQS + DynamoDB) on loopback until stdin closes,
with four moto 5.2.5 bugs mended (below).

Prints `port N` once it listens. Tying its life to a pipe means the emulator
ends with whoever started it, even if that process is killed: no orphans.
Usage: moto_server.py [PORT]   (default 0: an ephemeral port)
"""

import sys
import threading

from moto.s3.models import FakeMultipart, S3Backend
from moto.s3.responses import S3Response
from moto.server import ThreadedMotoServer
from moto.core.utils import unix_time
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


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print(f"port {server.get_host_and_port()[1]}", flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
