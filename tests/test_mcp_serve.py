"""``stead mcp serve`` driven by the MCP SDK's own client, against the real stack.

The server runs as ``stead mcp serve`` in a child process; the client authenticates
with principal tokens (bearer), starts a playbook run through the playbook's own tool,
follows it with ``run_status`` and approves its step as another principal.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from stead.contracts.run import RunStatus
from stead.identity.tokens import PrincipalTokenIssuer
from stead.keys import IDENTITY, key_store
from tests.conftest import REPO, WorkerHandle, subprocess_env
from tests.runs import configure_tenant, new_tenant


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def serve_url(worker: WorkerHandle) -> Iterator[str]:
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "stead.cli", "mcp", "serve", "--port", str(port)],
        env=subprocess_env(worker.settings, STEAD_TASK_QUEUE=worker.task_queue),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        for _ in range(600):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if child.poll() is not None:
                    raise AssertionError("stead mcp serve exited before listening") from None
                import time

                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        child.terminate()
        child.wait(timeout=20)
        if child.stdout is not None:
            child.stdout.close()


async def enroll(worker: WorkerHandle, tenant: str, *principals: str) -> None:
    """Tenant policy (approvals by user:bob, low threshold) and its directory entries:
    a start or approval carrying a principal token is checked against the directory."""
    from stead.db.pool import create_pool, tenant_transaction
    from stead.identity import directory

    await configure_tenant(
        worker.settings.opa_url, tenant, approval_risk="low", approvers=["user:bob"]
    )
    pool = await create_pool(worker.settings.postgres_dsn, max_size=1)
    try:
        async with tenant_transaction(pool, tenant) as conn:
            await directory.create_tenant(conn, tenant)
        for principal in principals:
            async with tenant_transaction(pool, tenant) as conn:
                await directory.add_principal(conn, tenant, principal)
    finally:
        await pool.close()


def token(worker: WorkerHandle, tenant: str, principal: str) -> str:
    private = key_store(worker.settings).private(IDENTITY)
    assert private is not None
    return PrincipalTokenIssuer(private).issue(tenant, principal).token


@asynccontextmanager
async def as_principal(url: str, bearer: str) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {bearer}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, cache=None) as client:
            yield client


async def poll(client: Client, run_id: str, until: set[str]) -> dict:  # type: ignore[type-arg]
    for _ in range(600):
        result = await client.call_tool("run_status", {"run_id": run_id})
        assert not result.is_error, result.content
        status = result.structured_content
        assert isinstance(status, dict)
        ended = status["status"] in {"completed", "failed", "denied", "plan_rejected"}
        if (
            ended
            or status["status"] in until
            or ("awaiting_approval" in until and status["pending_approvals"])
        ):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"{run_id} never reached {until}")


async def test_an_mcp_client_starts_a_playbook_run_and_another_principal_approves_it(
    worker: WorkerHandle, serve_url: str
) -> None:
    tenant = new_tenant()
    await enroll(worker, tenant, "user:alice", "user:bob")
    async with as_principal(serve_url, token(worker, tenant, "user:alice")) as alice:
        tools = {t.name: t for t in (await alice.list_tools()).tools}
        assert {"start_playbook", "run_status", "pending_approvals", "approve"} <= set(tools)
        schema = tools["playbook_records_demo"].input_schema
        assert schema["required"] == ["key"] and "note" in schema["properties"]
        started = await alice.call_tool("playbook_records_demo", {"key": "from-mcp"})
        assert not started.is_error, started.content
        assert isinstance(started.structured_content, dict)
        run_id = started.structured_content["run_id"]
        assert started.structured_content["principal"] == "user:alice"
        waiting = await poll(alice, run_id, {"awaiting_approval"})
        assert waiting["pending_approvals"], waiting
        assert waiting["pending_approvals"][0]["step_id"] == "put"
    async with as_principal(serve_url, token(worker, tenant, "user:bob")) as bob:
        pending = await bob.call_tool("pending_approvals", {})
        assert isinstance(pending.structured_content, dict)
        listed = pending.structured_content["result"]
        assert [p["workflow_id"] for p in listed] == [run_id]
        approved = await bob.call_tool("approve", {"run_id": run_id, "step_id": "put"})
        assert not approved.is_error, approved.content
        # records-demo reads the record back; at the tenant's "low" threshold that step
        # waits for a human too.
        done = await poll(bob, run_id, {"completed", "awaiting_approval"})
        for pending_step in done["pending_approvals"]:
            await bob.call_tool("approve", {"run_id": run_id, "step_id": pending_step["step_id"]})
        done = await poll(bob, run_id, {"completed"})
        assert done["status"] == "completed", done["reasons"]
    status = await worker.client.get_workflow_handle(run_id, result_type=RunStatus).result()
    assert status.principal == "user:alice"
    assert status.steps[0].approvals[0].approver == "user:bob"


async def test_a_client_without_a_valid_token_is_refused(serve_url: str) -> None:
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            serve_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={
                "Authorization": "Bearer not-a-token",
                "Accept": "application/json, text/event-stream",
            },
        )
    assert response.status_code == 401


async def test_another_tenants_run_is_not_visible(worker: WorkerHandle, serve_url: str) -> None:
    mine, theirs = new_tenant(), new_tenant()
    await enroll(worker, mine, "user:bob")
    await enroll(worker, theirs, "user:eve")
    async with as_principal(serve_url, token(worker, theirs, "user:eve")) as eve:
        started = await eve.call_tool("playbook_records_demo", {"key": "theirs"})
        assert isinstance(started.structured_content, dict)
        run_id = started.structured_content["run_id"]
    async with as_principal(serve_url, token(worker, mine, "user:bob")) as bob:
        peek = await bob.call_tool("run_status", {"run_id": run_id})
        assert peek.is_error and "not found" in str(peek.content)
        approve = await bob.call_tool("approve", {"run_id": run_id, "step_id": "put"})
        assert approve.is_error
