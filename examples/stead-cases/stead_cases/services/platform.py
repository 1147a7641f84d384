"""The example social "platform": where the creator's posts go.

It stands in for a SaaS publishing API (a video site, a social network) and behaves
like a careful one: ``POST /v1/posts`` needs an ``Idempotency-Key``; the first request
with a key creates the post, every later one replays the first answer (with
``Idempotent-Replayed: true``) and creates nothing. A request that reuses a key with
a different body is refused (422), as Stripe-style APIs do.

For the field case it can misbehave on purpose:

* ``fail_next(status=503, when="after")`` answers the next publish with a 5xx. With
  ``when="after"`` the post is created first, then the answer is lost, the case that
  double-posts when a client retries without a key;
* ``stall_next()`` creates the next post and then holds the answer until
  ``release()``, so a test can kill the worker between the effect and its completion.

Run it alone with ``python -m stead_cases.services.platform --port 8601``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from stead_cases.services._http import Request, Response, error, run_forever

Phase = Literal["before", "after"]


@dataclass
class _Failure:
    status: int
    when: Phase


@dataclass
class PlatformService:
    """The platform's state; thread-safe, inspected directly by tests."""

    base_url: str = "http://platform.example"
    posts: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    _answers: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    _failures: list[_Failure] = field(default_factory=list)
    _stall: threading.Event | None = None
    _stall_skip: int = 0
    _held: threading.Event | None = None
    _stalled: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --------------------------------------------------------- misbehaviour

    def fail_next(self, status: int = 503, when: Phase = "after", count: int = 1) -> None:
        with self._lock:
            self._failures.extend(_Failure(status, when) for _ in range(count))

    def stall_next(self, skip: int = 0) -> threading.Event:
        """Hold a publish after its effect, letting ``skip`` new posts pass first; the
        returned event is set once one is held."""
        with self._lock:
            self._stall = threading.Event()
            self._stall_skip = skip
            self._stalled.clear()
            return self._stalled

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, None
        if held is not None:
            held.set()

    # ---------------------------------------------------------------- HTTP

    def route(self, request: Request) -> Response:
        path = request.path.split("?", 1)[0].rstrip("/")
        if request.method == "POST" and path == "/v1/posts":
            return self.publish(request.headers.get("idempotency-key"), request.body)
        if request.method == "GET" and path == "/v1/posts":
            with self._lock:
                return Response(200, {"posts": list(self.posts)})
        if request.method == "POST" and path == "/_control/fail":
            body = request.body or {}
            self.fail_next(int(body.get("status", 503)), body.get("when", "after"))
            return Response(200, {"armed": True})
        return error(404, f"no route {request.method} {path}")

    def publish(self, key: str | None, body: Any) -> Response:
        if not key:
            return error(400, "Idempotency-Key header is required for POST /v1/posts")
        problem = _invalid(body)
        if problem:
            return error(422, problem)
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        with self._lock:
            self.requests += 1
            failure = self._failures.pop(0) if self._failures else None
            if failure is not None and failure.when == "before":
                return error(failure.status, "the platform is having a moment; try again")
            if key in self._answers:
                first_digest, answer = self._answers[key]
                if first_digest != digest:
                    return error(422, f"Idempotency-Key {key} was used with a different body")
                return Response(200, answer, {"Idempotent-Replayed": "true"})
            post_id = f"post_{len(self.posts) + 1}"
            post = {
                "id": post_id,
                "channel": body["channel"],
                "title": body.get("title", ""),
                "text": body["text"],
                "media": body.get("media", []),
                "url": f"{self.base_url}/{body['channel']}/{post_id}",
                "idempotency_key": key,
            }
            self.posts.append(post)
            self._answers[key] = (digest, post)
            stall = None
            if self._stall is not None:
                if self._stall_skip == 0:
                    stall, self._held, self._stall = self._stall, self._stall, None
                self._stall_skip -= 1
        if stall is not None:
            self._stalled.set()
            stall.wait(timeout=120)
        if failure is not None:
            return error(failure.status, "upstream timeout after the post was stored")
        return Response(201, post)


def _invalid(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "expected a JSON object with channel and text"
    if not isinstance(body.get("channel"), str) or not body["channel"]:
        return "channel is required"
    if not isinstance(body.get("text"), str) or not body["text"].strip():
        return "text is required and may not be blank"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=8601)
    run_forever(PlatformService(), parser.parse_args().port, "platform")


if __name__ == "__main__":
    main()
