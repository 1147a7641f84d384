"""Starting runs, from the attacker's side: forged workflow input and unauthenticated starts.

The attacker can start ``stead.run`` on the Temporal cluster with any input, read every
run's history, and send signals. Each test goes around the CLI and asserts what the
attacker would want to see happen did not: no record written in the target system, no
policy decision, no plan; the run ends ``denied`` with a reason that names the problem,
and the refusal is in the tenant's audit log as ``run_refused``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from biscuit_auth import KeyPair, PrivateKey, PublicKey
from temporalio.client import WorkflowUpdateFailedError

from stead.audit.log import AuditRecord, list_events
from stead.capability.authority import utcnow
from stead.cli.starts import StartCredential, start_governed
from stead.contracts.approval_token import ApprovalScope
from stead.contracts.continuation import SealInput
from stead.contracts.run import (
    ApprovalInput,
    Plan,
    PlannerInfo,
    RunCarry,
    RunInput,
    RunOptions,
    RunRequest,
    RunStatus,
    Step,
    StepExecution,
    start_digest,
)
from stead.db.pool import tenant_transaction
from stead.identity import directory
from stead.identity.errors import PrincipalTokenScopeMismatch
from stead.identity.starts import StartScope, scope_to_start, verify_start
from stead.identity.tokens import (
    PrincipalTokenIssuer,
    PrincipalTokenVerifier,
    scope_to_approval,
)
from stead.keys import IDENTITY, key_store
from stead.runs.seal import seal, seal_problem
from tests.conftest import REPO, WorkerHandle, subprocess_env
from tests.identity_support import PUT, Handle
from tests.identity_support import identity_public as identity_public
from tests.identity_support import issuer as issuer
from tests.identity_support import pool as pool
from tests.record_histories import fetch_run_chain
from tests.runs import configure_tenant, new_tenant, playbook, wait_pending


def issuer_key(worker: WorkerHandle) -> PrivateKey:
    private = key_store(worker.settings).private(IDENTITY)
    assert private is not None
    return private


async def token_tenant(worker: WorkerHandle, pool: asyncpg.Pool, **config: Any) -> str:
    """A managed tenant whose policy data keeps the secure default: starts need tokens."""
    tenant = new_tenant()
    async with tenant_transaction(pool, tenant) as conn:
        await directory.create_tenant(conn, tenant)
        for principal in ("user:alice", "user:mallory"):
            await directory.add_principal(conn, tenant, principal)
    await configure_tenant(worker.settings.opa_url, tenant, start_authentication="token", **config)
    return tenant


def put_request(tenant: str, principal: str = "user:alice", **fields: Any) -> RunRequest:
    return RunRequest(tenant=tenant, principal=principal, playbook_source=PUT, **fields)


def narrow(token: str, public: PublicKey, workflow_id: str, request: RunRequest) -> str:
    """What ``stead run --token-file`` sends: the token narrowed to this start."""
    scope = StartScope(workflow_id=workflow_id, request_digest=start_digest(request))
    return scope_to_start(token, public, scope)


async def start(
    worker: WorkerHandle, inp: RunInput, workflow_id: str | None = None, **options: Any
) -> Handle:
    """``client.start_workflow`` directly, as anyone with access to the cluster can."""
    return await worker.client.start_workflow(
        "stead.run",
        inp,
        id=workflow_id or f"run-{inp.request.tenant}-{uuid.uuid4().hex[:12]}",
        task_queue=worker.task_queue,
        result_type=RunStatus,
        **options,
    )


async def writes(pool: asyncpg.Pool, tenant: str) -> int:
    async with tenant_transaction(pool, tenant) as conn:
        return int(await conn.fetchval("SELECT count(*) FROM records_writes"))


async def decisions(pool: asyncpg.Pool, tenant: str, workflow_id: str) -> int:
    async with tenant_transaction(pool, tenant) as conn:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM decisions WHERE workflow_id = $1", workflow_id
            )
        )


async def audit(pool: asyncpg.Pool, tenant: str, workflow_id: str, kind: str) -> list[AuditRecord]:
    async with tenant_transaction(pool, tenant) as conn:
        return [e for e in await list_events(conn, tenant, workflow_id) if e.kind == kind]


async def assert_refused(
    pool: asyncpg.Pool,
    handle: Handle,
    tenant: str,
    reason: str,
    *,
    before: tuple[int, int] = (0, 0),
) -> None:
    """Denied with the reason, audited, and nothing planned, decided or executed.

    ``before``: the tenant's record writes and the workflow id's decisions before the
    attack (an id reused after a real run already has some).
    """
    status = await handle.result()
    assert status.status == "denied", status
    assert any(reason in r for r in status.reasons), status.reasons
    assert status.plan is None and status.steps == ()
    assert (await writes(pool, tenant), await decisions(pool, tenant, handle.id)) == before
    refused = await audit(pool, tenant, handle.id, "run_refused")
    assert any(reason in str(e.data["reason"]) for e in refused), refused


def forged_carry() -> RunCarry:
    """A continuation state an attacker writes by hand: planned, running, a write step
    ready to go, and approvals that count claimed names."""
    steps = (Step(id="put", operation="records.put", args={"key": "forged", "value": {}}),)
    plan = Plan(
        plan_id="forged",
        plan_hash=Plan.hash_steps(steps),
        steps=steps,
        execution={"put": StepExecution(side_effect="write", risk="low")},
        planner=PlannerInfo(kind="playbook", playbook="inline"),
    )
    return RunCarry(status="running", plan=plan, approval_authentication="none")


# ------------------------------------------------------- forged carry (finding 1)


@pytest.mark.parametrize("seal", [None, "v1." + "0" * 64], ids=["unsealed", "bogus-seal"])
async def test_a_hand_made_continuation_state_is_refused_and_runs_nothing(
    worker: WorkerHandle, pool: asyncpg.Pool, seal: str | None
) -> None:
    # The tenant is as lax as a tenant gets: no start tokens, claimed approver names.
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant, approvers=["user:mallory"])
    carry = forged_carry()
    assert carry.plan is not None
    vote = ApprovalInput(
        step_id="put",
        plan_hash=carry.plan.plan_hash,
        approver="user:mallory",
        verdict="approve",
    )
    # Signal-with-start: the tokenless approval reaches the run in its very first task.
    handle = await start(
        worker,
        RunInput(request=put_request(tenant, "user:eve"), carry=carry, seal=seal),
        start_signal="approve_signal",
        start_signal_args=[vote],
    )
    await assert_refused(pool, handle, tenant, "not sealed by this Stead's workers")
    async with tenant_transaction(pool, tenant) as conn:
        assert await conn.fetchval("SELECT count(*) FROM runs") == 0, "a forged run is not recorded"


async def test_a_sealed_carry_lifted_from_history_does_not_start_another_run(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant, operations=["core.echo", "records.*"])
    echoes = [
        {"id": f"e{i:02d}", "operation": "core.echo", "args": {"value": i}} for i in range(12)
    ]
    request = RunRequest(
        tenant=tenant,
        principal="user:alice",
        playbook_source=playbook(*echoes),
        options=RunOptions(continue_as_new_after_steps=10),
    )
    real = await start(worker, RunInput(request=request))
    assert (await real.result()).status == "completed"
    assert real.first_execution_run_id is not None
    chain = await fetch_run_chain(worker.client, real.id, real.first_execution_run_id)
    assert len(chain) == 2, "the run must really continue as new"
    attrs = chain[0].events[-1].workflow_execution_continued_as_new_event_attributes
    lifted = RunInput.model_validate_json(attrs.input.payloads[0].data)
    assert lifted.carry is not None and lifted.seal is not None
    # Replayed under a new id, and under the same id once the chain closed.
    elsewhere = await start(worker, lifted)
    await assert_refused(pool, elsewhere, tenant, "not sealed by this Stead's workers")
    before = (0, await decisions(pool, tenant, real.id))
    same_id = await start(worker, lifted, real.id)
    await assert_refused(pool, same_id, tenant, "not sealed by this Stead's workers", before=before)
    async with tenant_transaction(pool, tenant) as conn:
        status = await conn.fetchval("SELECT status FROM runs WHERE workflow_id = $1", real.id)
    assert status == "completed", "the refused replay must not rewrite the real run's record"
    # The lifted state edited (a step marked pending again) fails the same way.
    edited = lifted.carry.model_copy(update={"status": "running", "results": {}})
    handle = await start(worker, lifted.model_copy(update={"carry": edited}))
    await assert_refused(pool, handle, tenant, "not sealed by this Stead's workers")


# ---------------------------------------------------- unauthenticated starts (finding 2)


async def test_a_start_without_a_token_is_refused_where_tokens_are_required(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = await token_tenant(worker, pool)
    handle = await start(worker, RunInput(request=put_request(tenant)))
    await assert_refused(pool, handle, tenant, f"tenant {tenant} requires a start token")


async def test_an_unmanaged_tenant_with_token_starts_is_refused_with_what_to_do(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = new_tenant()  # no directory, policy data at the default
    await configure_tenant(worker.settings.opa_url, tenant, start_authentication="token")
    handle = await start(worker, RunInput(request=put_request(tenant)))
    await assert_refused(pool, handle, tenant, "has no principals in its directory")
    refused = (await handle.result()).reasons[0]
    assert "stead tenant create" in refused and '"start_authentication": "none"' in refused


async def test_a_tenant_policy_does_not_know_requires_start_tokens(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = new_tenant()  # nothing in OPA at all: the default is token
    handle = await start(worker, RunInput(request=put_request(tenant)))
    await assert_refused(pool, handle, tenant, "has no principals in its directory")


async def test_mallorys_token_does_not_start_a_run_as_alice_so_she_cannot_approve_it(
    worker: WorkerHandle,
    pool: asyncpg.Pool,
    issuer: PrincipalTokenIssuer,
    identity_public: PublicKey,
) -> None:
    tenant = await token_tenant(
        worker,
        pool,
        approval_risk="low",
        approvers=["user:mallory", "user:alice"],
        approval_authentication="none",
    )
    mallory = issuer.issue(tenant, "user:mallory").token
    workflow_id = f"run-{tenant}-{uuid.uuid4().hex[:12]}"
    as_alice = put_request(tenant, "user:alice")
    handle = await start(
        worker,
        RunInput(
            request=as_alice, start_token=narrow(mallory, identity_public, workflow_id, as_alice)
        ),
        workflow_id,
    )
    await assert_refused(pool, handle, tenant, "the start token belongs to user:mallory")
    # Started honestly, the run is hers, and the self-approval rule holds.
    workflow_id = f"run-{tenant}-{uuid.uuid4().hex[:12]}"
    as_mallory = put_request(tenant, "user:mallory")
    honest = await start(
        worker,
        RunInput(
            request=as_mallory,
            start_token=narrow(mallory, identity_public, workflow_id, as_mallory),
        ),
        workflow_id,
    )
    pending = await wait_pending(honest, "put")
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await honest.execute_update(
            "approve",
            ApprovalInput(
                step_id="put",
                plan_hash=pending.plan_hash,
                approver="user:mallory",
                verdict="approve",
            ),
        )
    assert "started this run and may not approve" in str(refused.value.cause)
    assert await writes(pool, tenant) == 0
    await honest.signal("cancel")
    assert (await honest.result()).status == "cancelled"


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("bare", "not narrowed to this start"),
        ("other-request", "does not authorize this start"),
        ("other-tenant", "was issued for tenant"),
        ("disabled", "is disabled in tenant"),
    ],
)
async def test_a_start_token_proves_only_its_own_start(
    worker: WorkerHandle,
    pool: asyncpg.Pool,
    issuer: PrincipalTokenIssuer,
    identity_public: PublicKey,
    case: str,
    reason: str,
) -> None:
    tenant = await token_tenant(worker, pool)
    workflow_id = f"run-{tenant}-{uuid.uuid4().hex[:12]}"
    request = put_request(tenant)
    token = issuer.issue(tenant, "user:alice").token
    if case == "bare":
        presented = token
    elif case == "other-request":  # narrowed to another request than the one sent
        smaller = request.model_copy(update={"labels": {"why": "the approved request"}})
        presented = narrow(token, identity_public, workflow_id, smaller)
    elif case == "other-tenant":
        other = issuer.issue(new_tenant(), "user:alice").token
        presented = narrow(other, identity_public, workflow_id, request)
    else:
        presented = narrow(token, identity_public, workflow_id, request)
        async with tenant_transaction(pool, tenant) as conn:
            await directory.set_disabled(conn, tenant, "user:alice", True)
    handle = await start(worker, RunInput(request=request, start_token=presented), workflow_id)
    await assert_refused(pool, handle, tenant, reason)


async def test_a_start_token_lifted_from_history_starts_nothing_else(
    worker: WorkerHandle,
    pool: asyncpg.Pool,
    issuer: PrincipalTokenIssuer,
    identity_public: PublicKey,
) -> None:
    tenant = await token_tenant(worker, pool)
    workflow_id = f"run-{tenant}-{uuid.uuid4().hex[:12]}"
    request = put_request(tenant)
    token = narrow(issuer.issue(tenant, "user:alice").token, identity_public, workflow_id, request)
    real = await start(worker, RunInput(request=request, start_token=token), workflow_id)
    assert (await real.result()).status == "completed"
    assert await writes(pool, tenant) == 1
    history = await real.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    lifted = RunInput.model_validate_json(started.input.payloads[0].data)
    assert lifted.start_token == token, "only the narrowed token is in history"

    other = await start(worker, lifted)  # another workflow id
    await assert_refused(pool, other, tenant, "does not authorize this start", before=(1, 0))

    again = await start(worker, lifted, workflow_id)  # the same id, the first run closed
    status = await again.result()
    assert status.status == "denied"
    assert any("already used by another run" in r for r in status.reasons), status.reasons
    assert await writes(pool, tenant) == 1, "the replay executed nothing"
    refused = await audit(pool, tenant, workflow_id, "run_refused")
    assert any("already used by another run" in str(e.data["reason"]) for e in refused)
    async with tenant_transaction(pool, tenant) as conn:
        row = await conn.fetchrow(
            "SELECT status, principal FROM runs WHERE workflow_id = $1", workflow_id
        )
    assert (row["status"], row["principal"]) == ("completed", "user:alice"), (
        "the refused replay must not rewrite the first run's record"
    )
    async with tenant_transaction(pool, tenant) as conn:
        claim = await conn.fetchrow(
            "SELECT chain_id, principal, admitted, authenticated FROM run_starts"
            " WHERE workflow_id = $1",
            workflow_id,
        )
    assert dict(claim) == {
        "chain_id": real.first_execution_run_id,
        "principal": "user:alice",
        "admitted": True,
        "authenticated": True,
    }


async def test_a_claimed_workflow_id_cannot_be_freed_by_the_app_role(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    """The single-use claim survives an attacker holding the app's database role."""
    tenant = await token_tenant(worker, pool)
    async with tenant_transaction(pool, tenant) as conn:
        await conn.execute(
            "INSERT INTO run_starts (workflow_id, tenant, chain_id, principal, admitted)"
            " VALUES ('run-x', $1, 'chain-a', 'user:alice', false)",
            tenant,
        )
    for statement in (
        "DELETE FROM run_starts WHERE workflow_id = 'run-x'",
        "UPDATE run_starts SET chain_id = 'chain-b' WHERE workflow_id = 'run-x'",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_transaction(pool, tenant) as conn:
                await conn.execute(statement)


# ------------------------------------------------------------------ the honest path


async def test_stead_run_token_file_starts_and_the_audit_names_the_proven_starter(
    worker: WorkerHandle, pool: asyncpg.Pool, issuer: PrincipalTokenIssuer, tmp_path: Path
) -> None:
    tenant = await token_tenant(worker, pool)
    token_file = tmp_path / "alice.token"
    token_file.write_text(issuer.issue(tenant, "user:alice").token + "\n")
    playbook_file = tmp_path / "put.yaml"
    playbook_file.write_text(PUT)
    env = subprocess_env(worker.settings, STEAD_TASK_QUEUE=worker.task_queue)

    async def stead(*args: str, **extra: str) -> tuple[int, str, str]:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "stead.cli",
            *args,
            env={**env, **extra},
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(child.communicate(), timeout=120)
        assert child.returncode is not None
        return child.returncode, out.decode(), err.decode()

    base = ("run", "--tenant", tenant, "--playbook-file", str(playbook_file), "--wait", "--json")
    code, out, err = await stead(*base, "--token-file", str(token_file))
    assert code == 0, (out, err)
    run_id = json.loads(out)["run_id"]
    started = await audit(pool, tenant, run_id, "run_started")
    assert [(e.actor, e.data["authenticated"]) for e in started] == [("user:alice", True)]
    assert await writes(pool, tenant) == 1

    code, out, err = await stead(*base, STEAD_TOKEN_FILE=str(token_file))
    assert code == 0, (out, err)
    assert await writes(pool, tenant) == 2

    code, out, err = await stead(*base, "--token-file", str(token_file), "--as", "user:mallory")
    assert code == 2 and "does not match the token's principal user:alice" in err, (out, err)
    expired = tmp_path / "expired.token"
    an_hour_ago = PrincipalTokenIssuer(
        issuer_key(worker), clock=lambda: utcnow() - timedelta(hours=1)
    )
    expired.write_text(an_hour_ago.issue(tenant, "user:alice", timedelta(minutes=5)).token)
    code, out, err = await stead(*base, "--token-file", str(expired))
    assert code == 2 and "expired at" in err, (out, err)
    code, out, err = await stead(*base, "--as", "user:alice")
    assert code == 2, (out, err)
    assert f"tenant {tenant} requires a start token" in out, (out, err)
    assert await writes(pool, tenant) == 2


async def test_a_service_credential_starts_runs_as_the_webhook_does(
    worker: WorkerHandle, pool: asyncpg.Pool, issuer: PrincipalTokenIssuer
) -> None:
    """What `stead webhook serve --token-file` holds: service:webhook's token, narrowed per run."""
    tenant = await token_tenant(worker, pool)
    async with tenant_transaction(pool, tenant) as conn:
        await directory.add_principal(conn, tenant, "service:webhook")
    credential = StartCredential.load(
        worker.settings, issuer.issue(tenant, "service:webhook").token
    )
    assert credential.principal == "service:webhook"
    request = put_request(tenant, credential.principal)
    handle = await start_governed(
        worker.client, worker.task_queue, request, credential, workflow_id=f"return-{tenant}-1"
    )
    assert (await handle.result()).status == "completed"
    started = await audit(pool, tenant, handle.id, "run_started")
    assert [(e.actor, e.data["authenticated"]) for e in started] == [("service:webhook", True)]


async def test_a_start_on_a_closed_runs_id_rewrites_nothing_even_where_names_are_trusted(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = new_tenant()  # start_authentication: none, so no token is in play at all
    await configure_tenant(worker.settings.opa_url, tenant)
    real = await start(worker, RunInput(request=put_request(tenant)))
    assert (await real.result()).status == "completed"
    forged = put_request(tenant, "user:mallory", labels={"note": "rewritten"})
    again = await start(worker, RunInput(request=forged), real.id)
    await assert_refused(
        pool,
        again,
        tenant,
        "already used by another run",
        before=(1, await decisions(pool, tenant, real.id)),
    )
    async with tenant_transaction(pool, tenant) as conn:
        row = await conn.fetchrow(
            "SELECT principal, status, labels::text AS labels FROM runs WHERE workflow_id = $1",
            real.id,
        )
    assert dict(row) == {"principal": "user:alice", "status": "completed", "labels": "{}"}


# ------------------------------------------------------ tokens and seals, no stack


def test_approval_and_start_tokens_do_not_stand_in_for_each_other() -> None:
    keys = KeyPair()
    token = PrincipalTokenIssuer(keys.private_key).issue("acme", "user:alice").token
    request = put_request("acme")
    as_approval = scope_to_approval(
        token,
        keys.public_key,
        ApprovalScope(workflow_id="run-1", step_id="put", plan_hash="h", verdict="approve"),
    )
    scope = StartScope(workflow_id="run-1", request_digest=start_digest(request))
    with pytest.raises(PrincipalTokenScopeMismatch):
        verify_start(as_approval, keys.public_key, tenant="acme", scope=scope)
    as_start = narrow(token, keys.public_key, "run-1", request)
    assert verify_start(as_start, keys.public_key, tenant="acme", scope=scope).principal == (
        "user:alice"
    )
    with pytest.raises(PrincipalTokenScopeMismatch):
        PrincipalTokenVerifier(keys.public_key).verify_approval(
            as_start,
            tenant="acme",
            scope=ApprovalScope(
                workflow_id="run-1", step_id="put", plan_hash="h", verdict="approve"
            ),
        )


@pytest.mark.parametrize(
    "change",
    ["workflow_id", "run_id", "tenant", "principal", "status", "approval_authentication"],
)
def test_the_seal_covers_the_chain_the_run_and_every_byte_of_the_state(change: str) -> None:
    secret = b"k" * 32
    sealed = SealInput(
        workflow_id="run-1", run_id="r-1", request=put_request("acme"), carry=forged_carry()
    )
    good = seal(secret, sealed)
    assert seal_problem(secret, sealed, good) is None
    if change in ("workflow_id", "run_id"):
        other = sealed.model_copy(update={change: "elsewhere"})
    elif change in ("tenant", "principal"):
        value = "other" if change == "tenant" else "user:mallory"
        other = sealed.model_copy(
            update={"request": sealed.request.model_copy(update={change: value})}
        )
    else:
        value = "completed" if change == "status" else "token"
        other = sealed.model_copy(update={"carry": sealed.carry.model_copy(update={change: value})})
    assert seal_problem(secret, other, good) is not None
    assert seal_problem(b"x" * 32, sealed, good) is not None, "another key's seal is no seal"
