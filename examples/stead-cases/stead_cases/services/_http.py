"""A tiny JSON-over-HTTP server the example services share.

Each service is a plain object with a ``route`` method; this module turns it into
a real server on a loopback port (a ``ThreadingHTTPServer`` in a daemon thread),
so adapters talk to it through real sockets, headers and JSON.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class Service(Protocol):
    def route(self, request: Request) -> Response: ...


def error(status: int, message: str, **extra: Any) -> Response:
    return Response(status, {"error": {"message": message, **extra}})


@contextmanager
def serve(service: Service, port: int = 0) -> Iterator[str]:
    """Serve ``service`` on 127.0.0.1 (a free port unless given); yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                self._send(error(400, "the body is not JSON"))
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            self._send(service.route(Request(self.command, self.path, headers, body)))

        def _send(self, response: Response) -> None:
            data = json.dumps(response.body).encode()
            try:
                self.send_response(response.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in response.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                return

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_forever(service: Service, port: int, name: str) -> None:
    """``python -m stead_cases.services.<name> --port N``: serve until Ctrl-C."""
    with serve(service, port) as url:
        print(f"{name} listening on {url}", flush=True)
        with suppress(KeyboardInterrupt):
            threading.Event().wait()
