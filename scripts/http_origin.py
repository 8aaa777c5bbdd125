"""A small HTTP origin for the quickstart: serves a directory on loopback with
Range support, ETag and Content-Length, until stdin closes.

Prints `port N` once it listens. Usage: http_origin.py DIR [PORT]
"""

import hashlib
import http.server
import os
import re
import sys
import threading
import time


def send_head(handler, size: int, etag: str):
    """Answers a GET's head for an entity of `size` bytes and `etag`: 206 for
    a satisfiable `Range` (whose `If-Range`, if any, names `etag`), 200
    otherwise. Returns the (start, end) bytes to send, or None after a 416."""
    start, end, status = 0, size, 200
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", handler.headers.get("Range", ""))
    if match and handler.headers.get("If-Range", etag) == etag:
        start = int(match.group(1))
        if start >= size:
            handler.send_response(416)
            handler.send_header("Content-Range", f"bytes */{size}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return None
        end = min(size, int(match.group(2)) + 1) if match.group(2) else size
        status = 206
    handler.send_response(status)
    handler.send_header("Accept-Ranges", "bytes")
    handler.send_header("ETag", etag)
    handler.send_header("Content-Type", "application/octet-stream")
    handler.send_header("Content-Length", str(end - start))
    if status == 206:
        handler.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
    handler.end_headers()
    return start, end


class MemoryOrigin:
    """Files from memory over HTTP/1.1 (HTTPS with `tls`, an ssl.SSLContext)
    with Range, a strong ETag and Content-Length, in `chunk`-byte writes with
    `chunk_delay` seconds after each (an attribute: a test may change it
    mid-run); counts the body bytes sent per path.
    For the scripts' end-to-end tests (compat.d/ferry_jobs.py, image_test.py)."""

    def __init__(self, files, chunk=64 * 1024, chunk_delay=0.0, tls=None):
        self.files = files
        self.chunk_delay = chunk_delay
        self.served = {name: 0 for name in files}
        self.requests = {name: 0 for name in files}
        self.lock = threading.Lock()
        origin = self

        class MemoryHandler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                data = origin.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                size = len(data)
                etag = '"' + hashlib.md5(data[: 1 << 20]).hexdigest() + f'-{size:x}"'
                span = send_head(self, size, etag)
                if span is None:
                    return
                at, end = span
                with origin.lock:
                    origin.requests[name] += 1
                try:
                    while at < end:
                        piece = memoryview(data)[at : min(end, at + chunk)]
                        self.wfile.write(piece)
                        with origin.lock:
                            origin.served[name] += len(piece)
                        at += len(piece)
                        if origin.chunk_delay:
                            time.sleep(origin.chunk_delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MemoryHandler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"

    def bytes_served(self, name):
        with self.lock:
            return self.served[name]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        size = os.path.getsize(path)
        stat = os.stat(path)
        etag = f'"{stat.st_mtime_ns:x}-{size:x}"'
        span = send_head(self, size, etag)
        if span is None:
            return
        start, end = span
        with open(path, "rb") as f:
            f.seek(start)
            remaining = end - start
            while remaining:
                chunk = f.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)


def main() -> None:
    directory = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    handler = lambda *a, **kw: Handler(*a, directory=directory, **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"port {server.server_address[1]}", flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
