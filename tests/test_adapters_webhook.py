"""``webhook.post`` against a real receiver on 127.0.0.1 that verifies what it gets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import pytest_asyncio

from adapters.http import new_http_client
from adapters.registry import AdapterResources, default_catalog
from adapters.webhook import SignatureInvalid, sign, verify
from stead.operations.base import AdapterError, OperationContext
from stead.operations.catalog import InvalidArguments
from stead.secrets import EnvSecretBackend, Secrets
from tests.peers import serve_handler

CATALOG = default_catalog(plugins=False)
OP = CATALOG.get("webhook.post")
KEY_BYTES = b"a receiver and stead share this key"
SECRET = "whsec_" + base64.b64encode(KEY_BYTES).decode()
TENANT = "acme"


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: str  # "ok" or why verify() refused it


@dataclass
class Receiver:
    base: str
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def at(self, path: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.path == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    box = Receiver(base="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                verify(SECRET, headers, body)
                verdict = "ok"
            except SignatureInvalid as exc:
                verdict = str(exc)
            with box.lock:
                box.deliveries.append(Delivery(self.path, headers, body, verdict))
            code = int(self.path.rsplit("/", 1)[1]) if self.path.startswith("/status/") else 204
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serve_handler(Handler) as box.base:
        yield box


@pytest_asyncio.fixture(scope="module")
async def resources() -> AsyncIterator[AdapterResources]:
    store = Secrets(
        [
            EnvSecretBackend(
                {
                    "STEAD_SECRET__ACME__WEBHOOK__SIGNING_KEY": SECRET,
                    "STEAD_SECRET__ACME__WEBHOOK__PARTNER": "plain-partner-key",
                    "STEAD_SECRET__GLOBEX__WEBHOOK__SIGNING_KEY": "globex-key",
                    # Signing keys are bound to the receivers they sign for: a signature
                    # sent elsewhere could be replayed to the real receiver.
                    "STEAD_SECRET__ACME__WEBHOOK__SIGNING_KEY__DESTINATIONS": "127.0.0.1",
                    "STEAD_SECRET__ACME__WEBHOOK__PARTNER__DESTINATIONS": "127.0.0.1",
                    "STEAD_SECRET__GLOBEX__WEBHOOK__SIGNING_KEY__DESTINATIONS": "127.0.0.1",
                }
            )
        ]
    )
    client = new_http_client()
    try:
        yield AdapterResources(http=client, secrets=store)
    finally:
        await client.aclose()


def _ctx(resources: AdapterResources, tenant: str = TENANT) -> OperationContext:
    wf = f"wf-{uuid.uuid4().hex[:8]}"
    return OperationContext(
        tenant=tenant,
        principal="user:ada",
        workflow_id=wf,
        step_id="notify",
        idempotency_key=f"{wf}/notify",
        resources=resources,
    )


async def _post(ctx: OperationContext, **args: Any) -> Any:
    return await OP.run(ctx, CATALOG.parse_args("webhook.post", args))


async def test_delivery_is_signed_verifiable_and_carries_the_key(
    resources: AdapterResources, receiver: Receiver
) -> None:
    ctx = _ctx(resources)
    result = await _post(
        ctx, url=f"{receiver.base}/hooks/a", event="invoice.paid", payload={"id": 7, "é": True}
    )
    assert (result.status, result.webhook_id) == (204, ctx.idempotency_key)
    (got,) = receiver.at("/hooks/a")
    assert got.verified == "ok"
    assert json.loads(got.body) == {"type": "invoice.paid", "data": {"id": 7, "é": True}}
    assert got.headers["webhook-id"] == got.headers["idempotency-key"] == ctx.idempotency_key
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 30
    # Checked by hand too, not only with the adapter's own verify().
    signed = f"{ctx.idempotency_key}.{got.headers['webhook-timestamp']}.".encode() + got.body
    expected = base64.b64encode(hmac.new(KEY_BYTES, signed, hashlib.sha256).digest()).decode()
    assert got.headers["webhook-signature"] == f"v1,{expected}"
    assert SECRET not in json.dumps(got.headers) and SECRET.encode() not in got.body


async def test_a_retry_sends_the_same_id_and_body(
    resources: AdapterResources, receiver: Receiver
) -> None:
    ctx = _ctx(resources)
    for _ in range(2):
        await _post(ctx, url=f"{receiver.base}/hooks/retry", event="e", payload=[1, 2])
    first, second = receiver.at("/hooks/retry")
    assert first.body == second.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.verified == second.verified == "ok"


def test_a_tampered_body_or_stale_timestamp_fails_verification() -> None:
    body = b'{"data":1,"type":"e"}'
    stamp = int(time.time())
    headers = {
        "webhook-id": "wf/s",
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(KEY_BYTES, "wf/s", stamp, body),
    }
    verify(SECRET, headers, body)
    with pytest.raises(SignatureInvalid, match="no signature matches"):
        verify(SECRET, headers, body.replace(b"1", b"2"))
    with pytest.raises(SignatureInvalid, match="no signature matches"):
        verify("whsec_" + base64.b64encode(b"another key").decode(), headers, body)
    with pytest.raises(SignatureInvalid, match="tolerance"):
        verify(SECRET, headers, body, now=stamp + 301)


async def test_a_named_signing_secret_is_used(
    resources: AdapterResources, receiver: Receiver
) -> None:
    await _post(
        _ctx(resources),
        url=f"{receiver.base}/hooks/partner",
        event="e",
        signing_secret="secret://acme/webhook/partner",
    )
    (got,) = receiver.at("/hooks/partner")
    verify("plain-partner-key", got.headers, got.body)
    assert got.verified != "ok"  # the receiver holds the default key, not the partner's


async def test_another_tenants_secret_is_refused_before_sending(
    resources: AdapterResources, receiver: Receiver
) -> None:
    with pytest.raises(AdapterError) as caught:
        await _post(
            _ctx(resources),
            url=f"{receiver.base}/hooks/stolen",
            event="e",
            signing_secret="secret://globex/webhook/signing_key",
        )
    assert not caught.value.retryable and "may not use" in caught.value.message
    assert receiver.at("/hooks/stolen") == []


async def test_a_missing_secret_names_the_reference(
    resources: AdapterResources, receiver: Receiver
) -> None:
    with pytest.raises(AdapterError) as caught:
        await _post(_ctx(resources, "initech"), url=f"{receiver.base}/hooks/none", event="e")
    assert "secret://initech/webhook/signing_key" in caught.value.message
    assert not caught.value.retryable
    assert receiver.at("/hooks/none") == []


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (429, True), (400, False)])
async def test_receiver_errors_decide_retryability(
    resources: AdapterResources, receiver: Receiver, status: int, retryable: bool
) -> None:
    with pytest.raises(AdapterError) as caught:
        await _post(_ctx(resources), url=f"{receiver.base}/status/{status}", event="e")
    assert caught.value.retryable is retryable
    assert caught.value.details["status"] == status


async def test_an_unreachable_receiver_is_retryable(resources: AdapterResources) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(AdapterError) as caught:
        await _post(_ctx(resources), url=f"http://127.0.0.1:{port}/x", event="e")
    assert caught.value.retryable is True


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"url": "ftp://example.com/x", "event": "e"}, "url"),
        ({"url": "https://user:pw@example.com/x", "event": "e"}, "url"),
        ({"url": "https://example.com/x", "event": "bad event!"}, "event"),
        ({"url": "https://example.com/x", "event": "e", "signing_secret": "hunter2"}, "signing"),
        ({"url": "https://example.com/x", "event": "e", "headers": {}}, "headers"),
    ],
)
def test_bad_arguments_fail_the_schema(args: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArguments) as caught:
        CATALOG.parse_args("webhook.post", args)
    assert field in str(caught.value)
