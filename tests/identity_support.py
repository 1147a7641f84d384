"""What the approval, cancel and attack tests share: a managed tenant, a run held at an
approval, principal tokens narrowed as the CLI narrows them, and what the run wrote.

Fixtures here (``pool``, ``issuer``, ``identity_public``, and the autouse
``_identity_public_key`` that ``scoped`` relies on) take effect in a test module that
imports them.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from biscuit_auth import KeyPair, PublicKey
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError

from stead.audit.log import AuditRecord, list_events
from stead.contracts.approval_token import ApprovalScope
from stead.contracts.run import ApprovalInput, PendingApproval, RunStatus, Verdict
from stead.db.pool import create_pool, tenant_transaction
from stead.identity import directory
from stead.identity.tokens import PrincipalTokenIssuer, scope_to_approval
from stead.keys import IDENTITY, key_store
from tests.conftest import REPO, WorkerHandle, subprocess_env
from tests.runs import configure_tenant, new_tenant, playbook, start_run, wait_pending

PUT = playbook({"id": "put", "operation": "records.put", "args": {"key": "a", "value": {}}})
Handle = WorkflowHandle[Any, RunStatus]


@pytest_asyncio.fixture(scope="module")
async def pool(worker: WorkerHandle) -> AsyncIterator[asyncpg.Pool]:
    """The app role (stead_app): what the worker, and an attacker holding its DSN, uses."""
    pool = await create_pool(worker.settings.postgres_dsn, max_size=3)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
def issuer(worker: WorkerHandle) -> PrincipalTokenIssuer:
    private = key_store(worker.settings).private(IDENTITY)
    assert private is not None
    return PrincipalTokenIssuer(private)


async def managed_tenant(pool: asyncpg.Pool, approvers: dict[str, list[str]]) -> str:
    """A tenant in the directory: user:ann starts runs; each key joins its groups."""
    tenant = new_tenant()
    async with tenant_transaction(pool, tenant) as conn:
        await directory.create_tenant(conn, tenant)
        for principal in ("user:ann", *approvers):
            await directory.add_principal(conn, tenant, principal)
        for principal, groups in approvers.items():
            for group in groups:
                await directory.join_group(conn, tenant, principal, group)
    return tenant


async def held_run(
    worker: WorkerHandle, tenant: str, approvers: tuple[str, ...] = ("group:approvers",)
) -> tuple[Handle, PendingApproval]:
    await configure_tenant(
        worker.settings.opa_url,
        tenant,
        approval_risk="low",
        approvers=list(approvers),
        approval_authentication="token",
    )
    handle = await start_run(
        worker.client, worker.task_queue, tenant=tenant, principal="user:ann", playbook_source=PUT
    )
    return handle, await wait_pending(handle, "put")


def scoped(
    token: str,
    handle: Handle,
    pending: PendingApproval,
    verdict: Verdict = "approve",
    *,
    public: PublicKey | None = None,
    **scope: str,
) -> str:
    """What `stead approve` sends: the token attenuated to this one approval."""
    fields: dict[str, Any] = {
        "workflow_id": handle.id,
        "step_id": pending.step_id,
        "plan_hash": pending.plan_hash,
        "verdict": verdict,
        **scope,
    }
    return scope_to_approval(token, public or _identity_public[0], ApprovalScope(**fields))


@pytest.fixture(scope="module")
def identity_public(worker: WorkerHandle) -> PublicKey:
    key = key_store(worker.settings).public(IDENTITY)
    assert key is not None
    return key


_identity_public: list[PublicKey] = []


@pytest.fixture(scope="module", autouse=True)
def _identity_public_key(worker: WorkerHandle) -> None:
    """``scoped`` narrows with the stack's identity key unless told another."""
    public = key_store(worker.settings).public(IDENTITY)
    assert public is not None
    _identity_public[:] = [public]


def forged_token(tenant: str, handle: Handle, pending: PendingApproval) -> str:
    """Well formed and scoped, but signed by a key Stead never issued."""
    stranger = KeyPair()
    token = PrincipalTokenIssuer(stranger.private_key).issue(tenant, "user:bob").token
    return scoped(token, handle, pending, public=stranger.public_key)


def vote(
    pending: PendingApproval, approver: str, token: str | None, verdict: Verdict = "approve"
) -> ApprovalInput:
    return ApprovalInput(
        step_id="put", plan_hash=pending.plan_hash, approver=approver, verdict=verdict, token=token
    )


async def writes(pool: asyncpg.Pool, tenant: str) -> int:
    async with tenant_transaction(pool, tenant) as conn:
        return int(await conn.fetchval("SELECT count(*) FROM records_writes"))


async def audit(pool: asyncpg.Pool, tenant: str, handle: Handle, kind: str) -> list[AuditRecord]:
    async with tenant_transaction(pool, tenant) as conn:
        return [e for e in await list_events(conn, tenant, handle.id) if e.kind == kind]


async def audited(
    pool: asyncpg.Pool, tenant: str, handle: Handle, kind: str, count: int
) -> list[AuditRecord]:
    """The run's ``kind`` rows once there are ``count`` (bounded poll, then what is there).

    Refusals by the update validator reach the audit log through the worker's drain
    (stead/approval_refusals.py), after the refused update has already returned.
    """
    for _ in range(200):
        found = await audit(pool, tenant, handle, kind)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    return await audit(pool, tenant, handle, kind)


async def refused_update(handle: Handle, approval: ApprovalInput) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update("approve", approval)
    return str(refused.value.cause)


async def still_waiting_then_cancel(handle: Handle, pool: asyncpg.Pool, tenant: str) -> None:
    pending = await handle.query("pending_approvals", result_type=list[PendingApproval])
    assert [p.step_id for p in pending] == ["put"], "a refused vote must not move the step"
    assert await writes(pool, tenant) == 0
    await handle.signal("cancel")
    assert (await handle.result()).status == "cancelled"


async def stead(worker: WorkerHandle, *args: str, **env: str) -> tuple[int, str, str]:
    """The real `stead` CLI in a child process, pointed at the test stack and queue."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stead.cli",
        *args,
        env=subprocess_env(worker.settings, STEAD_TASK_QUEUE=worker.task_queue, **env),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate()
    return child.returncode or 0, out.decode(), err.decode()
