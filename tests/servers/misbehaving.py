"""A real HTTP server on 127.0.0.1 whose paths misbehave, for testing any source's faults.

| path | answer |
| --- | --- |
| `/slow` | 200 JSON after 3 s (`?seconds=N` for another delay) |
| `/malformed` | 200, `application/json`, but not JSON |
| `/error500` | 500 with a LiteLLM-style JSON error body (`ERROR_MESSAGE`) |
| `/wrongshape` | 200 with valid JSON that no source expects (a list of strings) |
| `/drop` | closes the connection without answering |
| anything else | 404 JSON |

Any method works, and any path prefix too (`/slow/metrics/` is `/slow`), so a source built on
`base_url + "/slow"` sees the same misbehaviour on all of its endpoints.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

SLOW_DEFAULT_S = 3.0
ERROR_MESSAGE = "misbehaving server: deliberate internal error"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests read outcomes, not access logs."""

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _answer(self) -> None:
        url = urlsplit(self.path)
        first = url.path.strip("/").split("/", 1)[0]
        if first == "slow":
            seconds = float(parse_qs(url.query).get("seconds", [SLOW_DEFAULT_S])[0])
            time.sleep(seconds)
            self._send(200, json.dumps({"slept_s": seconds}).encode())
        elif first == "malformed":
            self._send(200, b'{"data": [{"id": "half an obj')
        elif first == "error500":
            body = {"error": {"message": ERROR_MESSAGE, "type": "internal_error", "code": "500"}}
            self._send(500, json.dumps(body).encode())
        elif first == "wrongshape":
            self._send(200, json.dumps(["not", "the", "expected", "shape"]).encode())
        elif first == "drop":
            self.close_connection = True
            self.connection.close()
        else:
            self._send(404, json.dumps({"detail": "Not Found"}).encode())

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._answer()

    do_PUT = do_DELETE = do_HEAD = do_POST


@dataclass(frozen=True)
class MisbehavingServer:
    """Where the misbehaving server listens; `url("/slow")` is `base_url + "/slow"`."""

    base_url: str
    host: str
    port: int

    def url(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/")


@pytest.fixture(scope="session")
def misbehaving_server() -> Iterator[MisbehavingServer]:
    """A threaded HTTP server on a free loopback port, up for the whole session."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="misbehaving-server", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield MisbehavingServer(f"http://{host}:{port}", str(host), int(port))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
