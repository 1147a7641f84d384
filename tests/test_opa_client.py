"""The OPA client fails closed: every answer that is not a well-formed decision is an error.

Decisions come from the session stack's real OPA (the repo's ``policies/``). Outages
and malformed policies use OPA processes these tests start, kill and reap themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import pickle
import re
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from stead.devstack.opa import ensure_binary
from stead.devstack.ports import LOOPBACK, free_port
from stead.errors import ErrorCode, SteadError
from stead.policy import (
    OpaClient,
    PlanPolicyResult,
    PolicyUnavailable,
    PolicyUndefined,
    StepPolicyResult,
)
from stead.settings import Settings

REPO = Path(__file__).resolve().parents[1]

READ_STEP: dict[str, Any] = {
    "tenant": "acme",
    "principal": "user:carol",
    "run": {"workflow_id": "run-7", "run_id": "r-1", "started_by": "user:carol"},
    "step": {"id": "lookup", "operation": "records.get", "args": {"key": "orders"}},
    "operation": {
        "name": "records.get",
        "side_effect": "read",
        "risk": "low",
        "scopes": ["records:read"],
    },
    "budget": {"max_steps": 10, "max_tokens": 10000, "max_usd": 1},
    "spent": {"steps": 2, "tokens": 1500, "usd": 0.1},
    "approvals": [],
}


def email_step(tenant: str) -> dict[str, Any]:
    step = copy.deepcopy(READ_STEP)
    step["tenant"] = tenant
    step["step"] = {
        "id": "notify",
        "operation": "email.send",
        "args": {"to": "ops@example.com"},
        # What the policy activity adds: where it goes (shipped tenants list
        # mail:example.com), and that a playbook wrote the arguments.
        "destinations": [{"kind": "mail", "host": "example.com"}],
        "secrets": [],
        "tainted": [],
    }
    step["operation"] = {
        "name": "email.send",
        "side_effect": "external",
        "risk": "high",
        "scopes": ["email:send"],
    }
    return step


def plan_input(operation: str, catalog: dict[str, Any]) -> dict[str, Any]:
    return {
        "tenant": "acme",
        "principal": "user:carol",
        "plan": {
            "plan_id": "plan-1",
            "plan_hash": "sha256:0f1e",
            "steps": [{"id": "lookup", "operation": operation, "args": {}, "depends_on": []}],
            "planner": {"kind": "playbook", "model": None, "tokens": 0, "cost_usd": 0},
        },
        "budget": {"max_steps": 5, "max_tokens": 4000, "max_usd": 1},
        "operations": catalog,
    }


RECORDS_CATALOG = {"records.get": {"side_effect": "read", "risk": "low", "scopes": []}}

# A policy set that answers step decisions in shapes that break the contract, chosen
# by input.case, plus a plan policy that tries to hold a plan and a rule whose two
# definitions conflict (OPA answers that with HTTP 500).
MALFORMED_POLICY = """\
package stead.step

cases := {
	"maybe": {"outcome": "maybe", "reasons": ["not sure"], "approval": null},
	"no_reasons": {"outcome": "allow", "approval": null},
	"empty_reasons": {"outcome": "allow", "reasons": [], "approval": null},
	"extra_key": {"outcome": "allow", "reasons": ["ok"], "approval": null, "override": true},
	"approve_without_terms": {"outcome": "approve", "reasons": ["risky"], "approval": null},
	"allow_with_terms": {"outcome": "allow", "reasons": ["ok"], "approval": terms},
	"string_min_approvals": {
		"outcome": "approve",
		"reasons": ["risky"],
		"approval": object.union(terms, {"min_approvals": "1"}),
	},
	"bare_true": true,
	"bare_string": "allow",
}

terms := {
	"approvers": ["group:approvers"],
	"min_approvals": 1,
	"timeout_seconds": 60,
	"on_timeout": "reject",
	"escalate_to": [],
	"allow_self_approval": false,
}

decision := cases[input.case]
"""

MALFORMED_PLAN_POLICY = """\
package stead.plan

decision := {"outcome": "approve", "reasons": ["plans cannot be held"]}
"""

CONFLICT_POLICY = """\
package stead.conflict

decision := "allow" if input.a
decision := "deny" if input.b
"""

# A result as large as the input asks: OPA streams big answers with chunked transfer
# coding, and they arrive over several socket reads.
BIG_POLICY = """\
package stead.big

items := numbers.range(1, input.n)
"""


# --- helpers: an OPA process of our own, always reaped ------------------------------


@contextlib.asynccontextmanager
async def own_opa(
    settings: Settings, policy_dir: Path, log: Path
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """``opa run --server`` on a free port; killed and waited for however the test ends."""
    binary = ensure_binary(settings.home, settings.opa_bin)
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    argv = [
        str(binary), "run", "--server", "--addr", f"{LOOPBACK}:{port}",
        "--log-level", "error", "--skip-version-check", str(policy_dir),
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink)
    try:
        await wait_healthy(url, process, log)
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


async def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(trust_env=False, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"opa exited with {process.returncode}:\n{log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/health")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    pytest.fail(f"opa at {url} was not healthy in 30 s:\n{log.read_text()}")


@pytest.fixture(scope="module")
async def malformed_opa(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """One OPA of our own serving the malformed policies to every test that needs it."""
    folder = tmp_path_factory.mktemp("malformed-policies")
    (folder / "step.rego").write_text(MALFORMED_POLICY)
    (folder / "plan.rego").write_text(MALFORMED_PLAN_POLICY)
    (folder / "conflict.rego").write_text(CONFLICT_POLICY)
    (folder / "big.rego").write_text(BIG_POLICY)
    async with own_opa(stack, folder, folder.parent / f"{folder.name}.log") as (url, _):
        yield url


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: bound once to pick it, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_listener() -> Iterator[socket.socket]:
    """A socket whose kernel backlog completes the TCP handshake but which never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen(8)
        yield sock


def connections_waiting(listener: socket.socket) -> int:
    """How many connections the kernel completed for ``listener`` (accepted and closed here).

    A connection the client already gave up on still waits in the backlog, so this
    counts every attempt the client made.
    """
    listener.setblocking(False)
    count = 0
    while True:
        try:
            accepted, _ = listener.accept()
        except BlockingIOError:
            return count
        accepted.close()
        count += 1


@contextlib.asynccontextmanager
async def not_opa_server() -> AsyncIterator[str]:
    """A real HTTP server that is not OPA: it answers every request with an HTML page."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n")
             if line.lower().startswith(b"content-length:")),
            0,
        )  # fmt: skip
        await reader.readexactly(length)
        page = b"<html>welcome</html>"
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(page)).encode() + b"\r\n\r\n" + page
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(answer, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def scripted_server(
    reply: Callable[[int], Awaitable[bytes]],
) -> AsyncIterator[tuple[str, list[int]]]:
    """A real HTTP server that is not OPA, answering the n-th request with ``reply(n)``.

    Yields its URL and how many requests each connection carried, in connection order.
    A connection is closed once ``reply`` returns bytes that say ``Connection: close``.
    """
    per_connection: list[int] = []
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        slot = len(per_connection)
        per_connection.append(0)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1]) for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )  # fmt: skip
                await reader.readexactly(length)
                per_connection[slot] += 1
                served += 1
                answer = await reply(served)
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    break
        writer.close()

    server = await asyncio.start_server(handle, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://{LOOPBACK}:{port}", per_connection
    finally:
        server.close()
        await server.wait_closed()


def http_reply(body: bytes, *, close: bool = False, length: bool = True) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    if length:
        head += b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + body


def connections_to(url: str) -> int:
    """This process's established TCP connections to ``url``'s port (what OPA sees)."""
    port = int(url.rsplit(":", 1)[1])
    return sum(
        1
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    )


# --- decisions from the shipped policies ---------------------------------------------


async def test_low_risk_read_is_allowed(stack: Settings) -> None:
    async with OpaClient(stack.opa_url, token=stack.opa_token) as opa:
        result = await opa.decide_step(READ_STEP)
    assert isinstance(result, StepPolicyResult)
    assert result.outcome == "allow"
    assert result.reasons == ("allowed by policy",)
    assert result.approval is None
    assert 0 < result.eval_ms < 1500


async def test_high_risk_step_is_held_for_the_tenants_approvers(stack: Settings) -> None:
    async with OpaClient(stack.opa_url, token=stack.opa_token) as opa:
        result = await opa.decide_step(email_step("demo"))
    assert result.outcome == "approve"
    assert result.reasons == (
        "operation email.send has high risk, at or above the approval threshold (high) "
        "of tenant demo",
    )
    assert result.approval is not None
    assert result.approval.approvers == ("group:approvers", "user:alice")
    assert result.approval.min_approvals == 1
    assert result.approval.timeout_seconds == 3600
    assert result.approval.on_timeout == "reject"
    assert result.approval.allow_self_approval is False


async def test_approve_result_converts_to_the_workflow_decision(stack: Settings) -> None:
    async with OpaClient(stack.opa_url, token=stack.opa_token) as opa:
        result = await opa.decide_step(email_step("acme"))
        decision = result.to_decision("d-1", policy_revision=await opa.revision())
    assert decision.outcome == "approve"
    assert decision.policy_revision == "dev"
    assert decision.approval is not None
    assert decision.approval.approvers == ("group:approvers",)


async def test_exhausted_step_budget_is_denied_with_the_reason(stack: Settings) -> None:
    exhausted = {**READ_STEP, "spent": {"steps": 10, "tokens": 0, "usd": 0}}
    async with OpaClient(stack.opa_url, token=stack.opa_token) as opa:
        result = await opa.decide_step(exhausted)
    assert result.outcome == "deny"
    assert result.reasons == ("step budget exhausted: 10 of 10 steps already run",)


async def test_empty_step_input_is_denied_naming_the_missing_fields(stack: Settings) -> None:
    async with OpaClient(stack.opa_url, token=stack.opa_token) as opa:
        result = await opa.decide_step({})
    assert result.outcome == "deny"
    assert "input.tenant must be a string" in result.reasons


async def test_plan_inside_the_catalog_is_allowed(stack: Settings) -> None:
    async with OpaClient(stack.opa_url, token=stack.opa_token) as opa:
        result = await opa.decide_plan(plan_input("records.get", RECORDS_CATALOG))
    assert isinstance(result, PlanPolicyResult)
    assert result.outcome == "allow"
    assert result.eval_ms > 0


async def test_plan_with_an_unknown_operation_is_denied(stack: Settings) -> None:
    async with OpaClient(stack.opa_url, token=stack.opa_token) as opa:
        result = await opa.decide_plan(plan_input("records.drop", RECORDS_CATALOG))
    assert result.outcome == "deny"
    assert result.reasons == (
        "step lookup: operation records.drop is unknown (not in the adapter catalog)",
    )


async def test_revision_of_the_shipped_policies_is_dev(stack: Settings) -> None:
    async with OpaClient(stack.opa_url, token=stack.opa_token) as opa:
        assert await opa.revision() == "dev"
        assert await opa.revision() == "dev"


async def test_undefined_path_raises_policy_undefined(stack: Settings) -> None:
    async with OpaClient(stack.opa_url, token=stack.opa_token) as opa:
        with pytest.raises(PolicyUndefined) as caught:
            await opa.evaluate("stead/nonexistent/decision", {"tenant": "acme"})
    assert caught.value.path == "stead/nonexistent/decision"
    assert caught.value.code == ErrorCode.CONFIG
    assert "data.stead.nonexistent.decision" in str(caught.value)
    assert "stays blocked" in str(caught.value)


async def test_evaluate_rejects_a_path_that_is_not_a_data_path(stack: Settings) -> None:
    async with OpaClient(stack.opa_url, token=stack.opa_token) as opa:
        with pytest.raises(ValueError, match="not an OPA data path"):
            await opa.evaluate("../policies", {})


# --- OPA out of reach -----------------------------------------------------------------


async def test_nothing_listening_raises_policy_unavailable_at_once(closed_port: int) -> None:
    # A deadline far beyond any test's: a client that retried a refused connection
    # would run into it and say "did not answer", not "could not be reached".
    async with OpaClient(f"http://{LOOPBACK}:{closed_port}", timeout=3600) as opa:
        with pytest.raises(PolicyUnavailable) as caught:
            await opa.decide_step(READ_STEP)
    assert "did not answer" not in str(caught.value)
    assert caught.value.code == ErrorCode.SERVICE_NOT_READY
    assert isinstance(caught.value, SteadError)
    message = str(caught.value)
    assert f"OPA at {LOOPBACK}:{closed_port} could not be reached" in message
    assert "the step stays blocked. Is `stead dev up` running?" in message


async def test_revision_is_unknown_when_opa_is_down(closed_port: int) -> None:
    async with OpaClient(f"http://{LOOPBACK}:{closed_port}") as opa:
        assert await opa.revision() == "unknown"


async def test_silent_opa_times_out_within_the_budget(silent_listener: socket.socket) -> None:
    port = int(silent_listener.getsockname()[1])
    async with OpaClient(f"http://{LOOPBACK}:{port}", timeout=0.3) as opa:
        with pytest.raises(PolicyUnavailable) as caught:
            await opa.decide_plan(plan_input("records.get", RECORDS_CATALOG))
    assert str(caught.value) == (
        f"OPA at {LOOPBACK}:{port} did not answer in 0.3 s; the plan stays blocked. "
        "Is `stead dev up` running?"
    )
    # One connection for the one question: the budget was not spent on retries.
    assert connections_waiting(silent_listener) == 1


async def test_opa_killed_mid_run_raises_policy_unavailable(
    stack: Settings, tmp_path: Path
) -> None:
    async with (
        own_opa(stack, REPO / "policies", tmp_path / "opa.log") as (url, process),
        OpaClient(url, timeout=3600) as opa,
    ):
        assert (await opa.decide_step(READ_STEP)).outcome == "allow"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        with pytest.raises(PolicyUnavailable) as caught:
            await opa.decide_step(READ_STEP)
    assert caught.value.url == url
    # At once: the dead pooled connection or the refused new one, not the hour's deadline.
    assert re.search(r"dropped the connection|could not be reached", str(caught.value))


async def test_not_opa_at_the_url_raises_policy_unavailable() -> None:
    async with not_opa_server() as url, OpaClient(url) as opa:
        with pytest.raises(PolicyUnavailable, match="body that is not JSON"):
            await opa.decide_step(READ_STEP)


def test_policy_errors_survive_pickling() -> None:
    """Temporal and multiprocessing pickle errors; ours take arguments other than .args."""
    unavailable = PolicyUnavailable("http://127.0.0.1:8181", "did not answer in 1.5 s")
    undefined = PolicyUndefined("stead/step/decision", subject="the plan")
    assert str(pickle.loads(pickle.dumps(unavailable))) == str(unavailable)
    assert str(pickle.loads(pickle.dumps(undefined))) == str(undefined)


# --- malformed policies: never read as allow -----------------------------------------


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("maybe", "outcome: Input should be 'allow', 'deny' or 'approve'"),
        ("no_reasons", "reasons: Field required"),
        ("empty_reasons", "reasons: Tuple should have at least 1 item"),
        ("extra_key", "override: Extra inputs are not permitted"),
        ("approve_without_terms", "approval must be an object when outcome is approve"),
        ("allow_with_terms", "approval must be an object when outcome is approve"),
        ("string_min_approvals", "approval.min_approvals: Input should be a valid integer"),
        ("bare_true", "Input should be a valid dictionary or instance of StepPolicy"),
        ("bare_string", "Input should be a valid dictionary or instance of StepPolicy"),
    ],
)
async def test_malformed_step_result_raises_policy_undefined(
    malformed_opa: str, case: str, problem: str
) -> None:
    async with OpaClient(malformed_opa) as opa:
        with pytest.raises(PolicyUndefined) as caught:
            await opa.decide_step({"case": case})
    message = str(caught.value)
    assert "data.stead.step.decision" in message
    assert "does not follow the decision contract" in message
    assert problem in message


async def test_plan_result_cannot_hold_a_plan_for_approval(malformed_opa: str) -> None:
    async with OpaClient(malformed_opa) as opa:
        with pytest.raises(PolicyUndefined, match="the plan stays blocked") as caught:
            await opa.decide_plan({})
    assert "outcome: Input should be 'allow' or 'deny'" in str(caught.value)


async def test_revision_is_unknown_when_the_policies_do_not_define_it(malformed_opa: str) -> None:
    async with OpaClient(malformed_opa) as opa:
        assert await opa.revision() == "unknown"


async def test_policy_conflict_500_raises_policy_unavailable(malformed_opa: str) -> None:
    async with OpaClient(malformed_opa) as opa:
        assert await opa.evaluate("stead/conflict/decision", {"a": True}) == "allow"
        with pytest.raises(PolicyUnavailable, match="answered HTTP 500") as caught:
            await opa.evaluate("stead/conflict/decision", {"a": True, "b": True})
    message = str(caught.value)
    assert "eval_conflict_error: rule data.stead.conflict.decision produced conflicting values" in (
        message
    )
    assert message.endswith("See the OPA log: the policy may fail to evaluate for this input.")


# --- the wire: keep-alive, framing, concurrency, broken connections --------------------


async def test_sequential_decisions_share_one_connection(stack: Settings) -> None:
    async with OpaClient(stack.opa_url, token=stack.opa_token) as opa:
        for _ in range(20):
            assert (await opa.decide_step(READ_STEP)).outcome == "allow"
        assert connections_to(stack.opa_url) == 1
    assert connections_to(stack.opa_url) == 0


async def test_concurrent_decisions_each_get_their_own_answer(stack: Settings) -> None:
    exhausted = {**READ_STEP, "spent": {"steps": 10, "tokens": 0, "usd": 0}}
    inputs = [READ_STEP, email_step("demo"), exhausted] * 10
    async with OpaClient(stack.opa_url, token=stack.opa_token) as opa:
        results = await asyncio.gather(*(opa.decide_step(step) for step in inputs))
        again = await asyncio.gather(*(opa.decide_step(step) for step in inputs))
    assert [r.outcome for r in results] == ["allow", "approve", "deny"] * 10
    assert [r.outcome for r in again] == ["allow", "approve", "deny"] * 10


async def test_a_large_chunked_result_arrives_whole(malformed_opa: str) -> None:
    async with OpaClient(malformed_opa) as opa:
        items = await opa.evaluate("stead/big/items", {"n": 60000})
        assert items == list(range(1, 60001))
        assert await opa.evaluate("stead/big/items", {"n": 3}) == [1, 2, 3]


async def test_an_answer_after_the_deadline_is_never_read_as_the_next_answer() -> None:
    late = asyncio.Event()

    async def reply(n: int) -> bytes:
        if n == 1:
            await late.wait()
            return http_reply(b'{"result": "first"}')
        return http_reply(b'{"result": "second"}')

    async with scripted_server(reply) as (url, per_connection), OpaClient(url, timeout=0.2) as opa:
        with pytest.raises(PolicyUnavailable, match=r"did not answer in 0\.2 s"):
            await opa.evaluate("stead/any", {})
        late.set()
        assert await opa.evaluate("stead/any", {}) == "second"
    assert per_connection == [1, 1]


async def test_server_asking_to_close_gets_a_fresh_connection_next_time() -> None:
    async def reply(n: int) -> bytes:
        return http_reply(b'{"result": %d}' % n, close=n == 1)

    async with scripted_server(reply) as (url, per_connection), OpaClient(url) as opa:
        assert [await opa.evaluate("stead/any", {}) for _ in range(3)] == [1, 2, 3]
    assert per_connection == [1, 2]


async def test_a_body_framed_by_closing_the_connection_is_read_to_the_end() -> None:
    async def reply(n: int) -> bytes:
        return http_reply(b'{"result": "until close"}', close=True, length=False)

    async with scripted_server(reply) as (url, _), OpaClient(url) as opa:
        assert await opa.evaluate("stead/any", {}) == "until close"
        assert await opa.evaluate("stead/any", {}) == "until close"


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"res",
         "dropped the connection (the connection closed in the middle of the response)"),
        (b"SSH-2.0-OpenSSH_9.6\r\nConnection: close\r\n\r\n",
         "dropped the connection (the server broke HTTP/1.1: illegal status line"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n",
         "dropped the connection (the server broke HTTP/1.1: illegal chunk header"),
    ],
    ids=["cut-mid-body", "not-http", "bad-chunk"],
)  # fmt: skip
async def test_a_broken_response_raises_policy_unavailable(answer: bytes, problem: str) -> None:
    async def reply(n: int) -> bytes:
        return answer

    async with scripted_server(reply) as (url, _), OpaClient(url) as opa:
        with pytest.raises(PolicyUnavailable) as caught:
            await opa.decide_step(READ_STEP)
    assert problem in str(caught.value)
    assert str(caught.value).endswith("the step stays blocked. Is `stead dev up` running?")


async def test_an_httpx_client_of_your_own_is_used_and_left_open(stack: Settings) -> None:
    async with httpx.AsyncClient(trust_env=False) as http:
        async with OpaClient(stack.opa_url, token=stack.opa_token, client=http) as opa:
            assert (await opa.decide_step(READ_STEP)).outcome == "allow"
        assert not http.is_closed


@pytest.mark.parametrize(
    ("first", "per_connection"),
    [
        (b"HTTP/1.1 100 Continue\r\n\r\n" + http_reply(b'{"result": 1}'), [2]),
        (http_reply(b'{"result": 1}') + b"HTTP/1.1 200 OK\r\n", [1, 1]),
        (http_reply(b'{"result": 1}').replace(b"HTTP/1.1", b"HTTP/1.0"), [1, 1]),
    ],
    ids=["interim-100", "bytes-after-the-response", "http-1.0"],
)  # fmt: skip
async def test_a_connection_is_reused_only_when_the_answer_ended_cleanly(
    first: bytes, per_connection: list[int]
) -> None:
    async def reply(n: int) -> bytes:
        return first if n == 1 else http_reply(b'{"result": %d}' % n)

    async with scripted_server(reply) as (url, served), OpaClient(url) as opa:
        assert [await opa.evaluate("stead/any", {}) for _ in range(2)] == [1, 2]
    assert served == per_connection
