"""``http.request`` with ``auth.secret``: resolved on the worker, never echoed back into history."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from adapters.registry import AdapterResources, default_catalog
from stead.operations.base import AdapterError, OperationContext
from stead.operations.catalog import InvalidArguments
from stead.secrets import REDACTED, EnvSecretBackend, Secrets
from tests.peers import serve_handler

CATALOG = default_catalog()
OP = CATALOG.get("http.request")
CANARY = f"canary-{uuid.uuid4().hex}"
REF = "secret://acme/http/api_token"


@dataclass
class Peer:
    """A real HTTP server on loopback that records the Authorization header of each call."""

    base: str = ""
    seen: dict[str, list[str | None]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def auth_for(self, path: str) -> list[str | None]:
        with self.lock:
            return list(self.seen.get(path, []))


def _handler(peer: Peer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            auth = self.headers.get("Authorization")
            with peer.lock:
                peer.seen.setdefault(self.path, []).append(auth)
            if self.path.startswith("/echo"):
                # Like httpbin's /headers: the credential comes back in body and headers.
                self._reply(200, {"authorization": auth}, {"X-Request-Id": str(auth)})
            elif self.path.startswith("/deny"):
                self._reply(401, {"error": f"token {auth} is not valid here"})
            else:
                self._reply(200, {"ok": True})

        do_GET = do_POST = _serve

        def _reply(self, code: int, payload: Any, extra: dict[str, str] | None = None) -> None:
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture(scope="module")
def peer() -> Iterator[Peer]:
    state = Peer()
    with serve_handler(_handler(state)) as state.base:
        yield state


def _resources(**variables: str) -> AdapterResources:
    # The token is bound to the loopback peer (the fail-closed default is "sent nowhere").
    env = {
        "STEAD_SECRET__ACME__HTTP__API_TOKEN": CANARY,
        "STEAD_SECRET__ACME__HTTP__API_TOKEN__DESTINATIONS": "127.0.0.1",
        **variables,
    }
    return AdapterResources(secrets=Secrets([EnvSecretBackend(env)]))


def _ctx(resources: object, tenant: str = "acme") -> OperationContext:
    wf = f"wf-{uuid.uuid4().hex[:8]}"
    return OperationContext(
        tenant=tenant,
        principal="user:ada",
        workflow_id=wf,
        step_id="call",
        idempotency_key=f"{wf}/call",
        resources=resources,
    )


async def _call(ctx: OperationContext, **args: Any) -> Any:
    return await OP.run(ctx, CATALOG.parse_args("http.request", args))


def _path() -> str:
    return f"/{uuid.uuid4().hex[:8]}"


async def test_the_secret_reaches_the_peer_as_a_bearer_authorization_header(peer: Peer) -> None:
    path = _path()
    result = await _call(
        _ctx(_resources()), method="GET", url=f"{peer.base}{path}", auth={"secret": REF}
    )
    assert result.status == 200
    assert peer.auth_for(path) == [f"Bearer {CANARY}"]


@pytest.mark.parametrize(("scheme", "expected"), [("Token", f"Token {CANARY}"), (None, CANARY)])
async def test_the_scheme_is_configurable(peer: Peer, scheme: str | None, expected: str) -> None:
    path = _path()
    auth = {"secret": REF, "scheme": scheme}
    await _call(_ctx(_resources()), method="POST", url=f"{peer.base}{path}", json={}, auth=auth)
    assert peer.auth_for(path) == [expected]


async def test_a_peer_echoing_the_secret_gets_it_redacted_from_the_result(peer: Peer) -> None:
    result = await _call(
        _ctx(_resources()), method="GET", url=f"{peer.base}/echo", auth={"secret": REF}
    )
    dumped = result.model_dump_json()
    assert CANARY not in dumped
    assert result.json_body == {"authorization": f"Bearer {REDACTED}"}
    assert result.headers["x-request-id"] == f"Bearer {REDACTED}"


async def test_an_error_quoting_the_secret_is_redacted(peer: Peer) -> None:
    with pytest.raises(AdapterError) as caught:
        await _call(_ctx(_resources()), method="GET", url=f"{peer.base}/deny", auth={"secret": REF})
    assert caught.value.retryable is False
    assert CANARY not in caught.value.message + json.dumps(caught.value.details)
    assert REDACTED in caught.value.details["text"]


async def test_another_tenants_reference_is_refused_before_any_request(peer: Peer) -> None:
    path = _path()
    with pytest.raises(AdapterError) as caught:
        await _call(
            _ctx(_resources(), tenant="globex"),
            method="GET",
            url=f"{peer.base}{path}",
            auth={"secret": REF},
        )
    assert caught.value.retryable is False
    assert "tenant 'globex' may not use secret://acme/http/api_token" in caught.value.message
    assert peer.auth_for(path) == []


def test_another_adapters_reference_fails_the_schema() -> None:
    with pytest.raises(InvalidArguments, match="belongs to the sql adapter"):
        CATALOG.parse_args(
            "http.request",
            {
                "method": "GET",
                "url": "http://127.0.0.1/x",
                "auth": {"secret": "secret://acme/sql/dsn"},
            },
        )


def test_a_raw_credential_in_place_of_a_reference_fails_the_schema() -> None:
    with pytest.raises(InvalidArguments, match="not a secret reference"):
        CATALOG.parse_args(
            "http.request",
            {"method": "GET", "url": "http://127.0.0.1/x", "auth": {"secret": CANARY}},
        )


async def test_a_missing_secret_is_a_final_error_naming_where_to_set_it(peer: Peer) -> None:
    path = _path()
    with pytest.raises(AdapterError) as caught:
        await _call(
            _ctx(_resources()),
            method="GET",
            url=f"{peer.base}{path}",
            auth={"secret": "secret://acme/http/unset"},
        )
    assert caught.value.retryable is False
    assert "STEAD_SECRET__ACME__HTTP__UNSET" in caught.value.message
    assert peer.auth_for(path) == []


async def test_a_worker_without_a_secret_store_says_so(peer: Peer) -> None:
    with pytest.raises(AdapterError, match="no secret store") as caught:
        await _call(
            _ctx(AdapterResources()), method="GET", url=f"{peer.base}/x", auth={"secret": REF}
        )
    assert caught.value.retryable is False


async def test_a_secret_that_would_split_the_header_is_refused_without_showing_it(
    peer: Peer,
) -> None:
    injected = f"{CANARY}\r\nX-Injected: 1"
    resources = _resources(STEAD_SECRET__ACME__HTTP__API_TOKEN=injected)
    path = _path()
    with pytest.raises(AdapterError, match="cannot carry") as caught:
        await _call(_ctx(resources), method="GET", url=f"{peer.base}{path}", auth={"secret": REF})
    assert CANARY not in caught.value.message
    assert peer.auth_for(path) == []


def test_args_and_their_json_schema_carry_only_the_reference() -> None:
    args = CATALOG.parse_args(
        "http.request", {"method": "GET", "url": "http://127.0.0.1/x", "auth": {"secret": REF}}
    )
    assert args.model_dump(mode="json")["auth"] == {"secret": REF, "scheme": "Bearer"}
    assert "auth" in OP.spec().args_schema["properties"]  # type: ignore[operator]


async def test_a_secret_without_declared_destinations_is_sent_nowhere(peer: Peer) -> None:
    resources = AdapterResources(
        secrets=Secrets([EnvSecretBackend({"STEAD_SECRET__ACME__HTTP__API_TOKEN": CANARY})])
    )
    path = _path()
    with pytest.raises(AdapterError) as caught:
        await _call(_ctx(resources), method="GET", url=f"{peer.base}{path}", auth={"secret": REF})
    assert caught.value.retryable is False
    assert caught.value.details["reason"] == "secret_not_bound"
    assert f"{REF} declares no destinations" in caught.value.message
    assert "STEAD_SECRET__ACME__HTTP__API_TOKEN__DESTINATIONS" in caught.value.message
    assert CANARY not in caught.value.message + json.dumps(caught.value.details)
    assert peer.auth_for(path) == []


async def test_a_secret_bound_elsewhere_is_refused_naming_the_reference_and_the_host(
    peer: Peer,
) -> None:
    resources = _resources(
        STEAD_SECRET__ACME__HTTP__API_TOKEN__DESTINATIONS="api.example.com, *.example.org"
    )
    path = _path()
    with pytest.raises(AdapterError) as caught:
        await _call(_ctx(resources), method="GET", url=f"{peer.base}{path}", auth={"secret": REF})
    message = caught.value.message
    assert f"{REF} may not be sent to http://127.0.0.1:" in message
    assert "api.example.com, *.example.org" in message
    assert CANARY not in message
    assert peer.auth_for(path) == []


async def test_a_secret_bound_to_scheme_host_and_port_goes_only_there(peer: Peer) -> None:
    port = peer.base.rsplit(":", 1)[1]
    exact = _resources(STEAD_SECRET__ACME__HTTP__API_TOKEN__DESTINATIONS=f"http://127.0.0.1:{port}")
    path = _path()
    await _call(_ctx(exact), method="GET", url=f"{peer.base}{path}", auth={"secret": REF})
    assert peer.auth_for(path) == [f"Bearer {CANARY}"]
    other = _resources(STEAD_SECRET__ACME__HTTP__API_TOKEN__DESTINATIONS="https://127.0.0.1")
    with pytest.raises(AdapterError, match="may not be sent to"):
        await _call(_ctx(other), method="GET", url=f"{peer.base}{path}", auth={"secret": REF})
    assert peer.auth_for(path) == [f"Bearer {CANARY}"]
