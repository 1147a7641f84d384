"""Real local HTTP peers the tests start: an idempotency-honouring API and a fake LLM.

They are actual servers on loopback (threads with ``ThreadingHTTPServer``), so the
adapters and litellm go through real sockets, headers and JSON, not patched functions.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class IdempotentApi:
    """Honours ``Idempotency-Key`` like a payment API: one effect per key, replayed answers."""

    effects: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: int = 0
    on_first_effect: Callable[[], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, key: str | None, body: Any) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests += 1
            if key and key in self.answers:
                return 200, self.answers[key]
            effect = {"id": len(self.effects) + 1, "key": key, "body": body}
            self.effects.append(effect)
            answer = {"created": effect["id"]}
            if key:
                self.answers[key] = answer
            hook, self.on_first_effect = self.on_first_effect, None
        if hook is not None:
            hook()  # e.g. SIGKILL the worker after the effect, before it can complete
        return 201, answer


@dataclass
class FakeLlm:
    """An OpenAI-compatible /v1/chat/completions that plays scripted replies in order."""

    replies: list[tuple[int, dict[str, Any] | str, dict[str, str]]] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reply_plan(self, plan: dict[str, Any] | str, tokens: int = 100) -> None:
        content = plan if isinstance(plan, str) else json.dumps(plan)
        self.replies.append((200, _completion(content, tokens), {}))

    def reply_error(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.replies.append(
            (status, {"error": {"message": f"scripted {status}", "type": "error"}}, headers or {})
        )

    def handle(self, body: Any) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            self.bodies.append(body)
            if not self.replies:
                return 500, {"error": {"message": "no scripted reply left"}}, {}
            status, payload, headers = (
                self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
            )
            return status, payload, headers


def _completion(content: str, tokens: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-planner",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
        "usage": {
            "prompt_tokens": tokens // 2,
            "completion_tokens": tokens - tokens // 2,
            "total_tokens": tokens,
        },
    }


@contextmanager
def serve(peer: IdempotentApi | FakeLlm) -> Iterator[str]:
    """Serve ``peer`` on a free loopback port; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            headers: dict[str, str] = {}
            if isinstance(peer, FakeLlm):
                status, payload, headers = peer.handle(body)
            else:
                status, payload = peer.handle(self.headers.get("Idempotency-Key"), body)
            data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                return

        do_PUT = do_POST

    with serve_handler(Handler) as url:
        yield url


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _QuietServer(_Server):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (a timeout under test) is expected here, not an error."""


@contextmanager
def serve_handler(handler: type[BaseHTTPRequestHandler], *, quiet: bool = False) -> Iterator[str]:
    """Serve ``handler`` on a free loopback port in a thread; yields ``http://127.0.0.1:<port>``.

    The one local HTTP server of the test suite: every test peer is a request handler
    class given to this, so start-up, shutdown and the port live in one place. ``quiet``
    keeps a client that hung up (a timeout the test provokes) out of stderr.
    """
    server = (_QuietServer if quiet else _Server)(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name=f"test-peer-{handler.__name__}",
        daemon=True,
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
