"""Runs moto's server (S3 + SQS + DynamoDB) on loopback until stdin closes.

Prints `port N` once it listens. Tying its life to a pipe means the emulator
ends with whoever started it, even if that process is killed: no orphans.
Usage: moto_server.py [PORT]   (default 0: an ephemeral port)
"""

import sys

from moto.server import ThreadedMotoServer


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print(f"port {server.get_host_and_port()[1]}", flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
