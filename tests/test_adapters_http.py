"""``http.request`` against a real HTTP server the test starts on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest

from adapters.http import new_http_client
from adapters.registry import AdapterResources, default_catalog
from stead.operations.base import AdapterError, OperationContext
from stead.operations.catalog import InvalidArguments
from tests.peers import serve_handler

CATALOG = default_catalog()
OP = CATALOG.get("http.request")


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class ServiceLog:
    requests: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def for_path(self, path: str) -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


@dataclass(frozen=True)
class Service:
    base: str
    log: ServiceLog


def _handler(log: ServiceLog) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            headers = {k.lower(): v for k, v in self.headers.items()}
            with log.lock:
                log.requests.append(Seen(self.command, self.path, headers, body))
            if self.path.startswith("/status/"):
                code = int(self.path.rsplit("/", 1)[1])
                self._reply(code, {"error": f"status {code}"})
            elif self.path == "/slow":
                time.sleep(1.0)
                self._reply(200, {"late": True})
            elif self.path == "/text":
                self._reply_raw(200, b"plain words", "text/plain")
            elif self.path == "/login":
                self._reply(200, {"ok": True}, extra={"Set-Cookie": "session=secret; Path=/"})
            elif self.command == "GET":
                self._reply(
                    200,
                    {"path": self.path, "cookie": headers.get("cookie")},
                    extra={"X-Request-Id": "req-1", "Set-Cookie": "tracking=1; Path=/"},
                )
            else:
                self._reply(201, {"received": body, "key": headers.get("idempotency-key")})

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def _reply(self, code: int, payload: Any, extra: dict[str, str] | None = None) -> None:
            self._reply_raw(code, json.dumps(payload).encode(), "application/json", extra)

        def _reply_raw(
            self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None
        ) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    log = ServiceLog()
    with serve_handler(_handler(log)) as base:
        yield Service(base=base, log=log)


def _ctx(resources: object = None) -> OperationContext:
    wf = f"wf-{uuid.uuid4().hex[:8]}"
    return OperationContext(
        tenant="acme",
        principal="user:ada",
        workflow_id=wf,
        step_id="call",
        idempotency_key=f"{wf}/call",
        resources=resources,
    )


async def _call(ctx: OperationContext, **args: Any) -> Any:
    return await OP.run(ctx, CATALOG.parse_args("http.request", args))


async def test_get_returns_json_and_only_safe_headers(service: Service) -> None:
    result = await _call(_ctx(), method="GET", url=f"{service.base}/items/1")
    assert result.status == 200
    assert result.json_body == {"path": "/items/1", "cookie": None}
    assert result.headers["x-request-id"] == "req-1"
    assert result.headers["content-type"] == "application/json"
    assert "set-cookie" not in result.headers
    assert result.model_dump(mode="json")["json"] == {"path": "/items/1", "cookie": None}


async def test_post_sends_json_body_and_idempotency_key(service: Service) -> None:
    ctx = _ctx()
    result = await _call(
        ctx,
        method="POST",
        url=f"{service.base}/orders",
        json={"sku": "A-1", "qty": 2},
        headers={"X-Trace": "t-1"},
    )
    assert result.status == 201
    assert result.json_body == {"received": {"sku": "A-1", "qty": 2}, "key": ctx.idempotency_key}
    seen = service.log.for_path("/orders")[-1]
    assert seen.headers["idempotency-key"] == ctx.idempotency_key
    assert seen.headers["x-trace"] == "t-1"
    assert seen.body == {"sku": "A-1", "qty": 2}


async def test_a_retry_resends_the_same_idempotency_key(service: Service) -> None:
    ctx = _ctx()
    path = f"/retry-{uuid.uuid4().hex[:6]}"
    for _ in range(2):
        await _call(ctx, method="PUT", url=f"{service.base}{path}", json={"n": 1})
    keys = [seen.headers["idempotency-key"] for seen in service.log.for_path(path)]
    assert keys == [ctx.idempotency_key, ctx.idempotency_key]


async def test_text_body_is_returned_as_text(service: Service) -> None:
    result = await _call(_ctx(), method="GET", url=f"{service.base}/text")
    assert result.json_body is None
    assert result.text == "plain words"
    assert result.truncated is False


@pytest.mark.parametrize("code", [500, 503, 429])
async def test_server_errors_and_throttling_are_retryable(service: Service, code: int) -> None:
    with pytest.raises(AdapterError) as caught:
        await _call(_ctx(), method="POST", url=f"{service.base}/status/{code}", json={})
    assert caught.value.retryable is True
    assert caught.value.details["status"] == code
    assert f"answered {code}" in caught.value.message


@pytest.mark.parametrize("code", [404, 400, 409])
async def test_client_errors_are_not_retryable(service: Service, code: int) -> None:
    with pytest.raises(AdapterError) as caught:
        await _call(_ctx(), method="GET", url=f"{service.base}/status/{code}")
    assert caught.value.retryable is False
    assert caught.value.details["status"] == code


async def test_a_status_outside_the_expected_range_is_not_retryable(service: Service) -> None:
    with pytest.raises(AdapterError) as caught:
        await _call(
            _ctx(),
            method="POST",
            url=f"{service.base}/orders",
            json={},
            expect_status_min=200,
            expect_status_max=200,
        )
    assert caught.value.retryable is False
    assert "answered 201, expected 200..200" in caught.value.message


async def test_an_expected_error_status_is_a_result(service: Service) -> None:
    result = await _call(
        _ctx(),
        method="GET",
        url=f"{service.base}/status/404",
        expect_status_min=200,
        expect_status_max=404,
    )
    assert result.status == 404


async def test_timeout_is_retryable(service: Service) -> None:
    with pytest.raises(AdapterError) as caught:
        await _call(_ctx(), method="GET", url=f"{service.base}/slow", timeout_seconds=0.2)
    assert caught.value.retryable is True
    assert caught.value.details["reason"] == "timeout"


async def test_connection_refused_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(AdapterError) as caught:
        await _call(_ctx(), method="GET", url=f"http://127.0.0.1:{port}/")
    assert caught.value.retryable is True


@pytest.mark.parametrize("make_client", [new_http_client, httpx.AsyncClient])
async def test_shared_client_never_carries_cookies_between_calls(
    service: Service, make_client: Callable[[], httpx.AsyncClient]
) -> None:
    async with make_client() as client:
        resources = AdapterResources(http=client)
        await _call(_ctx(resources), method="GET", url=f"{service.base}/login")
        result = await _call(_ctx(resources), method="GET", url=f"{service.base}/whoami")
    assert result.json_body == {"path": "/whoami", "cookie": None}


@pytest.mark.parametrize(
    "header", ["Authorization", "authorization", "Cookie", "Proxy-Authorization", "Idempotency-Key"]
)
def test_credential_headers_are_refused_by_the_schema(header: str) -> None:
    with pytest.raises(InvalidArguments) as caught:
        CATALOG.parse_args(
            "http.request",
            {"method": "GET", "url": "https://api.example.com/", "headers": {header: "x"}},
        )
    assert header in str(caught.value)
    assert "headers" in caught.value.errors[0]


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x", "/relative", "https://"]
)
def test_non_http_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidArguments) as caught:
        CATALOG.parse_args("http.request", {"method": "GET", "url": url})
    assert caught.value.errors[0].startswith("url:")


def test_credentials_in_the_url_are_refused() -> None:
    with pytest.raises(InvalidArguments):
        CATALOG.parse_args("http.request", {"method": "GET", "url": "https://u:p@example.com/"})


@pytest.mark.parametrize(
    "bad",
    [
        {"method": "TRACE"},
        {"timeout_seconds": 0},
        {"timeout_seconds": 61},
        {"expect_status_min": 300, "expect_status_max": 299},
        {"body": {"x": 1}},
        {"json_body": {"x": 1}},
    ],
)
def test_other_bad_arguments_are_refused(bad: dict[str, Any]) -> None:
    args: dict[str, Any] = {"method": "GET", "url": "https://api.example.com/", **bad}
    with pytest.raises(InvalidArguments):
        CATALOG.parse_args("http.request", args)


async def test_reconcile_says_resend_with_the_same_key() -> None:
    assert OP.reconcile is not None
    args = CATALOG.parse_args("http.request", {"method": "POST", "url": "https://x.example/"})
    assert await OP.reconcile(_ctx(), args) is None


def test_spec_tells_policy_and_planner_how_the_operation_behaves() -> None:
    spec = OP.spec()
    assert (spec.side_effect, spec.risk, spec.idempotency) == ("external", "medium", "key")
    assert spec.scopes == ("http:request",)
    properties = spec.args_schema["properties"]
    assert isinstance(properties, dict)
    assert "json" in properties and "json_body" not in properties
