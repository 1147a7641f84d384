"""Proven cancels on the real stack: where approvals need a principal token, so does
``stead cancel``, and a forged or lifted token is refused while the run keeps going.

The tenant is managed (in the directory) and its approvals need tokens. ``stead
cancel --token-file`` narrows the token to this run and this reason; the worker
verifies it and spends it, so the copy in history cannot be used again.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from biscuit_auth import KeyPair, PublicKey
from temporalio.client import WorkflowUpdateFailedError

from stead.contracts.cancel_token import cancel_scope
from stead.contracts.run import CancelInput, PendingApproval
from stead.identity.tokens import PrincipalTokenIssuer, scope_to_cancel
from tests.conftest import WorkerHandle
from tests.identity_support import (
    Handle,
    audit,
    audited,
    held_run,
    managed_tenant,
    stead,
    writes,
)
from tests.identity_support import identity_public as identity_public
from tests.identity_support import issuer as issuer
from tests.identity_support import pool as pool

REASON = "wrong day"


async def still_waiting(handle: Handle, pool: asyncpg.Pool, tenant: str) -> None:
    """A refused cancel changed nothing: the step still waits, nothing was written."""
    pending = await handle.query("pending_approvals", result_type=list[PendingApproval])
    assert [p.step_id for p in pending] == ["put"], "a refused cancel must not stop the run"
    assert (await handle.describe()).status is not None
    assert await writes(pool, tenant) == 0


async def refused(handle: Handle, cancel: CancelInput) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await handle.execute_update("cancel", cancel)
    return str(caught.value.cause)


async def test_stead_cancel_needs_a_token_and_a_proven_cancel_is_audited_as_such(
    worker: WorkerHandle, pool: asyncpg.Pool, issuer: PrincipalTokenIssuer, tmp_path: Path
) -> None:
    tenant = await managed_tenant(pool, {"user:bob": ["approvers"]})
    handle, _ = await held_run(worker, tenant)
    code, _, err = await stead(worker, "cancel", handle.id, "--as", "user:bob", "--reason", REASON)
    assert code == 1 and "cancel refused, the run keeps going" in err, err
    assert "need principal tokens" in err and "Traceback" not in err
    await still_waiting(handle, pool, tenant)

    issued = issuer.issue(tenant, "user:bob")
    token_file = tmp_path / "bob.token"
    token_file.write_text(issued.token + "\n")
    code, out, err = await stead(
        worker, "cancel", handle.id, "--as", "user:bob", "--reason", REASON,
        "--token-file", str(token_file),
    )  # fmt: skip
    assert code == 0, err
    assert "proven by token" in out
    status = await handle.result()
    assert status.status == "cancelled" and status.reasons == (f"cancelled by user:bob: {REASON}",)
    asked = await audit(pool, tenant, handle, "cancel_requested")
    assert [(e.actor, e.data) for e in asked] == [
        ("user:bob", {"reason": REASON, "attribution": "token", "token_id": issued.claims.token_id})
    ]
    refusals = await audited(pool, tenant, handle, "cancel_refused", 1)
    assert [e.data["via"] for e in refusals] == ["update"]
    history = b"".join(e.SerializeToString() for e in (await handle.fetch_history()).events)
    assert issued.token.encode() not in history, "only the narrowed token may reach history"


async def test_a_forged_or_lifted_cancel_token_is_refused_and_the_run_keeps_going(
    worker: WorkerHandle,
    pool: asyncpg.Pool,
    issuer: PrincipalTokenIssuer,
    identity_public: PublicKey,
    tmp_path: Path,
) -> None:
    tenant = await managed_tenant(pool, {"user:bob": ["approvers"]})
    spent, _ = await held_run(worker, tenant)
    target, _ = await held_run(worker, tenant)
    # Bob cancels the first run properly; its history now holds his narrowed token.
    bob = issuer.issue(tenant, "user:bob").token
    used = scope_to_cancel(bob, identity_public, cancel_scope(spent.id, REASON))
    await spent.execute_update(
        "cancel", CancelInput(requested_by="user:bob", reason=REASON, token=used)
    )
    assert (await spent.result()).status == "cancelled"

    # Lifted as is: narrowed to the other run, so the validator keeps it out of history.
    lifted = CancelInput(requested_by="user:bob", reason=REASON, token=used)
    before = len((await target.fetch_history()).events)
    assert "narrowed to a cancel of run" in await refused(target, lifted)
    assert len((await target.fetch_history()).events) == before
    # Re-narrowed to this run by whoever read it (the public key suffices): spent.
    renarrowed = scope_to_cancel(used, identity_public, cancel_scope(target.id, REASON))
    why = await refused(
        target, CancelInput(requested_by="user:bob", reason=REASON, token=renarrowed)
    )
    assert "burned" in why or "does not authorize" in why, why
    # Signed by a key this Stead never issued.
    stranger = KeyPair()
    fake = PrincipalTokenIssuer(stranger.private_key).issue(tenant, "user:bob").token
    forged = scope_to_cancel(fake, stranger.public_key, cancel_scope(target.id, REASON))
    assert "signature" in await refused(
        target, CancelInput(requested_by="user:bob", reason=REASON, token=forged)
    )
    # The same by signal: in history already, so refused (and burned), never obeyed.
    for token in (used, forged):
        await target.signal(
            "cancel", CancelInput(requested_by="user:bob", reason=REASON, token=token)
        )
    refusals = await audited(pool, tenant, target, "cancel_refused", 5)
    assert sorted(str(e.data["via"]) for e in refusals) == [
        "signal",
        "signal",
        "update",
        "update",
        "update",
    ]
    await still_waiting(target, pool, tenant)
    assert not await audit(pool, tenant, target, "cancel_requested")

    # Bob's own fresh token still cancels it: refusing lifted copies revoked nothing of his.
    token_file = tmp_path / "bob.token"
    token_file.write_text(issuer.issue(tenant, "user:bob").token)
    code, _, err = await stead(
        worker, "cancel", target.id, "--as", "user:bob", "--reason", REASON,
        "--token-file", str(token_file),
    )  # fmt: skip
    assert code == 0, err
    assert (await target.result()).status == "cancelled"
