"""Attributable approvals on the real stack: a vote counts only with a Stead principal token.

The tenant here is managed (in the directory) and its policy data leaves approval
authentication at its default, ``token``. Every refused attempt must leave the step
waiting, write nothing, and appear in the audit log as ``approval_refused``.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from typer import Typer
from typer.testing import CliRunner

from stead.capability.authority import utcnow
from stead.cli.identity import principal_app
from stead.contracts.run import ApprovalInput
from stead.db.pool import tenant_transaction
from stead.identity import directory
from stead.identity.tokens import PrincipalTokenIssuer
from tests.conftest import WorkerHandle
from tests.identity_support import _identity_public_key as _identity_public_key  # autouse
from tests.identity_support import (
    audit,
    audited,
    forged_token,
    held_run,
    managed_tenant,
    refused_update,
    scoped,
    stead,
    still_waiting_then_cancel,
    vote,
    writes,
)
from tests.identity_support import issuer as issuer
from tests.identity_support import pool as pool
from tests.runs import new_tenant


async def test_a_scoped_principal_token_counts_and_the_vote_is_attributed(
    worker: WorkerHandle, pool: asyncpg.Pool, issuer: PrincipalTokenIssuer
) -> None:
    tenant = await managed_tenant(pool, {"user:bob": ["approvers"]})
    handle, pending = await held_run(worker, tenant)
    issued = issuer.issue(tenant, "user:bob")
    result = await handle.execute_update(
        "approve", vote(pending, "user:bob", scoped(issued.token, handle, pending))
    )
    assert result["status"] in ("awaiting_approval", "running", "succeeded")
    status = await handle.result()
    assert status.status == "completed", status.reasons
    assert await writes(pool, tenant) == 1
    accepted = await audit(pool, tenant, handle, "approval_accepted")
    assert [(e.actor, e.data["authenticated"], e.data["token_id"]) for e in accepted] == [
        ("user:bob", True, issued.claims.token_id)
    ]


async def test_a_tenant_that_requires_tokens_refuses_a_bare_name(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = await managed_tenant(pool, {"user:bob": ["approvers"]})
    handle, pending = await held_run(worker, tenant)
    # No token is nothing to keep out of history: the activity reads the tenant's policy
    # (never the run's state) and refuses, and the handler audits it.
    assert "requires approvers to present a Stead principal token" in await refused_update(
        handle, vote(pending, "user:bob", None)
    )
    refused = await audit(pool, tenant, handle, "approval_refused")
    assert [(e.actor, e.data["via"]) for e in refused] == [("user:bob", "update")]
    await still_waiting_then_cancel(handle, pool, tenant)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("forged", "failed signature verification"),
        ("expired", "expired at"),
        ("other-tenant", "was issued for tenant"),
        ("bare", "not narrowed to this approval"),
        ("other-verdict", "narrowed to another approval"),
        ("other-step", "narrowed to another approval"),
        ("someone-else", "belongs to user:carol"),
    ],
)
async def test_a_bad_principal_token_is_refused_and_audited(
    worker: WorkerHandle, pool: asyncpg.Pool, issuer: PrincipalTokenIssuer, case: str, message: str
) -> None:
    tenant = await managed_tenant(pool, {"user:bob": ["approvers"], "user:carol": []})
    other = await managed_tenant(pool, {"user:bob": ["approvers"]})
    handle, pending = await held_run(worker, tenant)
    bob = issuer.issue(tenant, "user:bob").token
    token = {
        "forged": lambda: forged_token(tenant, handle, pending),
        "expired": lambda: scoped(
            PrincipalTokenIssuer(issuer._key, clock=lambda: utcnow() - timedelta(hours=9))
            .issue(tenant, "user:bob")
            .token,
            handle,
            pending,
        ),
        "other-tenant": lambda: scoped(issuer.issue(other, "user:bob").token, handle, pending),
        "bare": lambda: bob,
        "other-verdict": lambda: scoped(bob, handle, pending, verdict="reject"),
        "other-step": lambda: scoped(bob, handle, pending, step_id="delete"),
        "someone-else": lambda: scoped(issuer.issue(tenant, "user:carol").token, handle, pending),
    }[case]()
    assert message in await refused_update(handle, vote(pending, "user:bob", token))
    refused = await audited(pool, tenant, handle, "approval_refused", 1)
    assert len(refused) == 1 and refused[0].actor == "user:bob"
    assert message in str(refused[0].data["reason"])
    await still_waiting_then_cancel(handle, pool, tenant)


async def test_disabling_a_principal_revokes_its_tokens(
    worker: WorkerHandle, pool: asyncpg.Pool, issuer: PrincipalTokenIssuer
) -> None:
    tenant = await managed_tenant(pool, {"user:bob": ["approvers"]})
    handle, pending = await held_run(worker, tenant)
    token = issuer.issue(tenant, "user:bob").token
    async with tenant_transaction(pool, tenant) as conn:
        await directory.set_disabled(conn, tenant, "user:bob", True)
    assert "user:bob is disabled" in await refused_update(
        handle, vote(pending, "user:bob", scoped(token, handle, pending))
    )
    async with tenant_transaction(pool, tenant) as conn:
        await directory.set_disabled(conn, tenant, "user:bob", False)
    assert "revoked" in await refused_update(
        handle, vote(pending, "user:bob", scoped(token, handle, pending))
    )
    await still_waiting_then_cancel(handle, pool, tenant)


async def test_leaving_the_approvers_group_withdraws_the_right_to_vote(
    worker: WorkerHandle, pool: asyncpg.Pool, issuer: PrincipalTokenIssuer
) -> None:
    tenant = await managed_tenant(pool, {"user:bob": ["approvers"]})
    handle, pending = await held_run(worker, tenant)
    async with tenant_transaction(pool, tenant) as conn:
        await directory.leave_group(conn, tenant, "user:bob", "approvers")
    token = scoped(issuer.issue(tenant, "user:bob").token, handle, pending)
    assert "no longer named" in await refused_update(handle, vote(pending, "user:bob", token))
    await still_waiting_then_cancel(handle, pool, tenant)


async def test_the_ui_signal_path_needs_a_token_too(
    worker: WorkerHandle, pool: asyncpg.Pool, issuer: PrincipalTokenIssuer
) -> None:
    tenant = await managed_tenant(pool, {"user:bob": ["approvers"]})
    handle, pending = await held_run(worker, tenant)
    forged = forged_token(tenant, handle, pending)
    await handle.signal("approve_signal", vote(pending, "user:bob", None))
    await handle.signal("approve_signal", vote(pending, "user:bob", forged))
    await handle.signal("approve_signal", vote(pending, "user:bob", "not a token!"))
    issued = issuer.issue(tenant, "user:bob")
    await handle.signal(
        "approve_signal", vote(pending, "user:bob", scoped(issued.token, handle, pending))
    )
    status = await handle.result()
    assert status.status == "completed", status.reasons
    assert [a.approver for a in status.steps[0].approvals] == ["user:bob"]
    refused = await audit(pool, tenant, handle, "approval_refused")
    reasons = " | ".join(sorted(str(e.data["reason"]) for e in refused))
    assert len(refused) == 3 and all(e.data["via"] == "signal" for e in refused)
    # Signals are handled concurrently, so the refusals may be audited in any order.
    for why in ("requires approvers", "signature", "not URL-safe base64"):
        assert why in reasons
    accepted = await audit(pool, tenant, handle, "approval_accepted")
    assert [e.data["token_id"] for e in accepted] == [issued.claims.token_id]


async def test_a_malformed_token_is_refused_by_the_validator_without_history(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = await managed_tenant(pool, {"user:bob": ["approvers"]})
    handle, pending = await held_run(worker, tenant)
    before = len((await handle.fetch_history()).events)
    assert "not URL-safe base64" in await refused_update(handle, vote(pending, "user:bob", "a b c"))
    assert len((await handle.fetch_history()).events) == before
    refused = await audited(pool, tenant, handle, "approval_refused", 1)
    assert [(e.actor, e.data["via"]) for e in refused] == [("user:bob", "update")]
    await still_waiting_then_cancel(handle, pool, tenant)


async def test_an_unmanaged_tenant_cannot_authenticate_approvers_by_default(
    worker: WorkerHandle, pool: asyncpg.Pool, issuer: PrincipalTokenIssuer
) -> None:
    tenant = new_tenant()  # in OPA, not in the directory: nobody to check a token against
    handle, pending = await held_run(worker, tenant, approvers=("user:bob",))
    token = scoped(issuer.issue(tenant, "user:bob").token, handle, pending)
    assert "has no directory" in await refused_update(handle, vote(pending, "user:bob", token))
    await still_waiting_then_cancel(handle, pool, tenant)


async def test_stead_approve_presents_a_token_scoped_to_that_approval(
    worker: WorkerHandle, pool: asyncpg.Pool, issuer: PrincipalTokenIssuer, tmp_path: Path
) -> None:
    tenant = await managed_tenant(pool, {"user:bob": ["approvers"]})
    handle, _ = await held_run(worker, tenant)
    issued = issuer.issue(tenant, "user:bob")
    token_file = tmp_path / "bob.token"
    token_file.write_text(issued.token + "\n")
    code, _, err = await stead(worker, "approve", handle.id, "put", "--as", "user:bob")
    assert code == 1 and "requires approvers to present" in err
    code, out, err = await stead(
        worker, "approve", handle.id, "put", "--as", "user:bob", "--token-file", str(token_file)
    )
    assert code == 0, err
    assert "approved step put" in out
    assert (await handle.result()).status == "completed"
    history = b"".join(e.SerializeToString() for e in (await handle.fetch_history()).events)
    assert issued.token.encode() not in history, "only the scoped token may reach history"
    accepted = await audit(pool, tenant, handle, "approval_accepted")
    assert [e.data["token_id"] for e in accepted] == [issued.claims.token_id]


async def test_sign_approval_prints_the_signal_input_for_the_temporal_ui(
    worker: WorkerHandle, pool: asyncpg.Pool, issuer: PrincipalTokenIssuer
) -> None:
    tenant = await managed_tenant(pool, {"user:bob": ["approvers"]})
    handle, pending = await held_run(worker, tenant)
    token = issuer.issue(tenant, "user:bob").token
    code, out, err = await asyncio.to_thread(
        lambda: _invoke(
            worker,
            principal_app,
            "sign-approval",
            handle.id,
            "put",
            "--as",
            "user:bob",
            STEAD_PRINCIPAL_TOKEN=token,
        )
    )
    assert code == 0, err
    payload = json.loads(out)
    assert payload["plan_hash"] == pending.plan_hash and payload["token"] != token
    await handle.signal("approve_signal", ApprovalInput.model_validate(payload))
    assert (await handle.result()).status == "completed"


def _invoke(worker: WorkerHandle, app: Typer, *args: str, **env: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app,
        list(args),
        env={"STEAD_HOME": str(worker.settings.home), "STEAD_TASK_QUEUE": worker.task_queue, **env},
    )
    return result.exit_code, result.stdout, result.stderr
