"""Approvals attacked from around the CLI, on the real stack.

The attacker can send updates and signals to any run, read every workflow history
and connect as the app's database role. None of that may put a reusable token in
history, let a refused approval go unaudited, let a lifted token approve anything,
or let workflow state turn a tenant's token requirement off.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from biscuit_auth import Biscuit, BlockBuilder, KeyPair
from temporalio.client import WorkflowUpdateFailedError

from stead.contracts.approval_token import (
    ApprovalScope,
    exposed_revocation_ids,
    narrowing_problem,
)
from stead.contracts.identity import VerifyApprovalInput
from stead.contracts.run import ApprovalInput
from stead.db.pool import tenant_transaction
from stead.identity.approvals import ApprovalAuthenticator
from stead.identity.tokens import PrincipalTokenIssuer, scope_to_approval
from stead.keys import IDENTITY, key_store
from stead.policy.opa import OpaClient, PolicyUnavailable
from tests.conftest import WorkerHandle
from tests.identity_support import (
    PUT,
    Handle,
    audited,
    held_run,
    managed_tenant,
    refused_update,
    scoped,
    stead,
    still_waiting_then_cancel,
    vote,
    writes,
)
from tests.identity_support import _identity_public_key as _identity_public_key  # autouse
from tests.identity_support import issuer as issuer
from tests.identity_support import pool as pool
from tests.runs import configure_tenant, new_tenant, start_run, wait_pending
from tests.test_opa_client import closed_port as closed_port  # fixture
from workflows.approval_input import burnable, receive

# ------------------------------------------------------------------ fixtures


# ------------------------------------------------------------------ history


async def history_texts(handle: Handle) -> list[bytes]:
    """Everything a history reader sees: raw events, their JSON, every payload decoded."""
    history = await handle.fetch_history()
    raw = b"".join(e.SerializeToString() for e in history.events)
    as_json = history.to_json()
    payloads: list[bytes] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "data" and isinstance(value, str):
                    try:
                        payloads.append(base64.b64decode(value))
                    except ValueError:
                        payloads.append(value.encode())
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(as_json))
    return [raw, as_json.encode(), *payloads]


async def in_history(handle: Handle, secret: str) -> bool:
    return any(secret.encode() in text for text in await history_texts(handle))


async def lift_token(handle: Handle) -> str:
    """What an attacker reading the history does: find a principal token in a signal."""
    for text in await history_texts(handle):
        try:
            value = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(value, dict) and isinstance(value.get("token"), str):
            return str(value["token"])
    raise AssertionError("no token in the history")


async def burned_rows(pool: asyncpg.Pool, tenant: str) -> list[asyncpg.Record]:
    async with tenant_transaction(pool, tenant) as conn:
        return list(await conn.fetch("SELECT * FROM burned_tokens WHERE tenant = $1", tenant))


# ------------------------------------------------------- (a) update, bare token


async def test_a_bare_token_sent_to_the_update_never_reaches_history_and_is_audited(
    worker: WorkerHandle, pool: asyncpg.Pool, issuer: PrincipalTokenIssuer
) -> None:
    tenant = await managed_tenant(pool, {"user:bob": ["approvers"]})
    handle, pending = await held_run(worker, tenant)
    bare = issuer.issue(tenant, "user:bob").token
    events_before = len((await handle.fetch_history()).events)

    reason = await refused_update(handle, vote(pending, "user:bob", bare))

    assert "not narrowed to this approval" in reason and bare not in reason
    assert len((await handle.fetch_history()).events) == events_before
    assert not await in_history(handle, bare)
    assert not await in_history(handle, bare[:48]), "not even a fragment of it"
    refused = await audited(pool, tenant, handle, "approval_refused", 1)
    assert [(e.actor, e.step_id, e.data["via"]) for e in refused] == [("user:bob", "put", "update")]
    assert "not narrowed" in str(refused[0].data["reason"]) and refused[0].data["update_id"]
    assert bare not in json.dumps([e.data for e in refused])
    # It never entered history, so it was not burned: narrowed properly, it still counts.
    assert await burned_rows(pool, tenant) == []
    await handle.execute_update("approve", vote(pending, "user:bob", scoped(bare, handle, pending)))
    assert (await handle.result()).status == "completed"
    assert await writes(pool, tenant) == 1


async def test_a_token_narrowed_to_another_approval_or_carrying_its_own_facts_is_kept_out(
    worker: WorkerHandle, pool: asyncpg.Pool, issuer: PrincipalTokenIssuer
) -> None:
    tenant = await managed_tenant(pool, {"user:bob": ["approvers"]})
    handle, pending = await held_run(worker, tenant)
    bare = issuer.issue(tenant, "user:bob").token
    public = _public(worker)
    elsewhere = scoped(bare, handle, pending, verdict="reject")
    # A block that states the approval fact itself satisfies its own check anywhere.
    self_satisfying = (
        Biscuit.from_base64(bare, public)
        .append(
            BlockBuilder(
                f'approval("{handle.id}", "put", "{pending.plan_hash}", "approve");\n'
                f'check if approval("{handle.id}", "put", "{pending.plan_hash}", "approve");\n'
                "check if time($t), $t <= 2099-01-01T00:00:00Z;"
            )
        )
        .to_base64()
    )
    for token, why in (
        (elsewhere, "narrowed to another approval"),
        (self_satisfying, "not narrowed"),
    ):
        assert why in await refused_update(handle, vote(pending, "user:bob", token))
        assert not await in_history(handle, token)
    refused = await audited(pool, tenant, handle, "approval_refused", 2)
    assert len(refused) == 2 and all(e.data["via"] == "update" for e in refused)
    await still_waiting_then_cancel(handle, pool, tenant)


# --------------------------------------------------------- (b) signal, burned


async def test_a_bare_token_sent_by_signal_is_burned_and_refused_on_every_other_run(
    worker: WorkerHandle, pool: asyncpg.Pool, issuer: PrincipalTokenIssuer
) -> None:
    tenant = await managed_tenant(pool, {"user:bob": ["approvers"]})
    victim, victim_pending = await held_run(worker, tenant)
    target, target_pending = await held_run(worker, tenant)
    bare = issuer.issue(tenant, "user:bob")

    await victim.signal("approve_signal", vote(victim_pending, "user:bob", bare.token))

    refused = await audited(pool, tenant, victim, "approval_refused", 1)
    assert [(e.actor, e.data["via"], e.data.get("token_burned")) for e in refused] == [
        ("user:bob", "signal", True)
    ]
    assert "not narrowed" in str(refused[0].data["reason"])
    assert "revoked: get a new one" in str(refused[0].data["reason"])
    assert bare.token not in json.dumps(refused[0].data)
    burned = await burned_rows(pool, tenant)
    assert {r["revocation_id"] for r in burned} == set(exposed_revocation_ids(bare.token))
    assert {r["workflow_id"] for r in burned} == {victim.id}
    # The attacker lifts it from the victim's history and narrows it for another run.
    lifted = await lift_token(victim)
    assert lifted == bare.token
    narrowed = scoped(lifted, target, target_pending)
    reason = await refused_update(target, vote(target_pending, "user:bob", narrowed))
    assert "exposed in a run's history" in reason and "get a new one" in reason
    on_target = await audited(pool, tenant, target, "approval_refused", 1)
    assert "exposed" in str(on_target[0].data["reason"])
    assert await writes(pool, tenant) == 0
    # Only that token is dead: bob's fresh token approves both runs.
    fresh = issuer.issue(tenant, "user:bob").token
    for handle, pending in ((victim, victim_pending), (target, target_pending)):
        await handle.execute_update(
            "approve", vote(pending, "user:bob", scoped(fresh, handle, pending))
        )
        assert (await handle.result()).status == "completed"


async def test_a_token_exposed_on_another_tenants_run_is_burned_in_its_own_tenant(
    worker: WorkerHandle, pool: asyncpg.Pool, issuer: PrincipalTokenIssuer
) -> None:
    """The burn follows the token (its signature proves its tenant), not the run."""
    mine = await managed_tenant(pool, {"user:bob": ["approvers"]})
    theirs = await managed_tenant(pool, {"user:bob": ["approvers"]})
    their_run, their_pending = await held_run(worker, theirs)
    my_run, my_pending = await held_run(worker, mine)
    bare = issuer.issue(mine, "user:bob").token
    await their_run.signal("approve_signal", vote(their_pending, "user:bob", bare))
    await audited(pool, theirs, their_run, "approval_refused", 1)
    assert len(await burned_rows(pool, mine)) == 1 and await burned_rows(pool, theirs) == []
    lifted = scoped(await lift_token(their_run), my_run, my_pending)
    assert "exposed in a run's history" in await refused_update(
        my_run, vote(my_pending, "user:bob", lifted)
    )
    await still_waiting_then_cancel(my_run, pool, mine)
    await still_waiting_then_cancel(their_run, pool, theirs)


async def test_the_app_role_cannot_unburn_a_token_nor_see_another_tenants_burns(
    worker: WorkerHandle, pool: asyncpg.Pool, issuer: PrincipalTokenIssuer
) -> None:
    tenant = await managed_tenant(pool, {"user:bob": ["approvers"]})
    handle, pending = await held_run(worker, tenant)
    await handle.signal(
        "approve_signal", vote(pending, "user:bob", issuer.issue(tenant, "user:bob").token)
    )
    await audited(pool, tenant, handle, "approval_refused", 1)
    assert len(await burned_rows(pool, tenant)) == 1
    for statement in ("DELETE FROM burned_tokens", "UPDATE burned_tokens SET tenant = 'x'"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_transaction(pool, tenant) as conn:
                await conn.execute(statement)
    assert len(await burned_rows(pool, tenant)) == 1
    other = new_tenant()
    async with tenant_transaction(pool, other) as conn:
        assert await conn.fetchval("SELECT count(*) FROM burned_tokens") == 0
    await still_waiting_then_cancel(handle, pool, tenant)


# -------------------------------------------- (c) handler refusals are audited


async def test_each_refusal_the_validator_used_to_swallow_now_leaves_an_audit_row(
    worker: WorkerHandle, pool: asyncpg.Pool, issuer: PrincipalTokenIssuer
) -> None:
    tenant = await managed_tenant(pool, {"user:bob": ["approvers"], "user:eve": []})
    await configure_tenant(
        worker.settings.opa_url,
        tenant,
        approval_risk="low",
        approvers=["group:approvers", "user:ann"],
        approval_authentication="token",
    )
    handle = await start_run(
        worker.client, worker.task_queue, tenant=tenant, principal="user:ann", playbook_source=PUT
    )
    pending = await wait_pending(handle, "put")

    def token(principal: str, plan_hash: str | None = None) -> str:
        bare = issuer.issue(tenant, principal).token
        if plan_hash is None:
            return scoped(bare, handle, pending)
        return scoped(bare, handle, pending, plan_hash=plan_hash)

    stale = "0" * 64
    attempts = [
        ("no token", vote(pending, "user:bob", None), "requires approvers to present"),
        ("non-approver", vote(pending, "user:eve", token("user:eve")), "not an approver"),
        ("self-approval", vote(pending, "user:ann", token("user:ann")), "may not approve"),
        (
            "stale plan hash",
            ApprovalInput(
                step_id="put",
                plan_hash=stale,
                approver="user:bob",
                verdict="approve",
                token=token("user:bob", plan_hash=stale),
            ),
            "plan hash does not match",
        ),
    ]
    for case, approval, message in attempts:
        assert message in await refused_update(handle, approval), case
    refused = await audited(pool, tenant, handle, "approval_refused", len(attempts))
    assert [(e.actor, e.data["via"]) for e in refused] == [
        (a.approver, "update") for _, a, _ in attempts
    ]
    for row, (case, _, message) in zip(refused, attempts, strict=True):
        assert message in str(row.data["reason"]), case
    await still_waiting_then_cancel(handle, pool, tenant)


async def test_stead_approve_prints_a_refusal_as_one_line_and_exits_1(
    worker: WorkerHandle, pool: asyncpg.Pool, issuer: PrincipalTokenIssuer, tmp_path: Path
) -> None:
    tenant = await managed_tenant(pool, {"user:bob": ["approvers"], "user:eve": []})
    handle, _ = await held_run(worker, tenant)
    token_file = tmp_path / "eve.token"
    token_file.write_text(issuer.issue(tenant, "user:eve").token)
    code, out, err = await stead(
        worker, "approve", handle.id, "put", "--as", "user:eve", "--token-file", str(token_file)
    )
    assert code == 1 and out == ""
    assert err.strip().count("\n") == 0, err
    assert "error (approval_refused): approval refused: user:eve is not an approver" in err
    assert token_file.read_text() not in err
    refused = await audited(pool, tenant, handle, "approval_refused", 1)
    assert [(e.actor, e.data["via"]) for e in refused] == [("user:eve", "update")]
    await still_waiting_then_cancel(handle, pool, tenant)


# ------------------------------------------------------ (d) malformed signals


MALFORMED: list[tuple[str, object, str]] = [
    (
        "missing step_id",
        {"plan_hash": "h", "approver": "user:bob", "verdict": "approve"},
        "step_id",
    ),
    (
        "wrong type",
        {"step_id": 7, "plan_hash": "h", "approver": "user:bob", "verdict": 1},
        "verdict",
    ),
    (
        "extra field",
        {
            "step_id": "put",
            "plan_hash": "h",
            "approver": "user:bob",
            "verdict": "approve",
            "admin": 1,
        },
        "admin",
    ),
    ("not an object", ["put", "user:bob"], "JSON object"),
]


async def test_malformed_signals_are_audited_and_the_run_still_completes(
    worker: WorkerHandle, pool: asyncpg.Pool, issuer: PrincipalTokenIssuer
) -> None:
    tenant = await managed_tenant(pool, {"user:bob": ["approvers"]})
    handle, pending = await held_run(worker, tenant)
    for _, payload, _ in MALFORMED:
        await handle.signal("approve_signal", payload)
    refused = await audited(pool, tenant, handle, "approval_refused", len(MALFORMED))
    assert len(refused) == len(MALFORMED) and all(e.data["via"] == "signal" for e in refused)
    reasons = " | ".join(str(e.data["reason"]) for e in refused)
    for case, _, field in MALFORMED:
        assert field in reasons, case
    assert "approval input is malformed" in reasons
    assert await writes(pool, tenant) == 0
    token = scoped(issuer.issue(tenant, "user:bob").token, handle, pending)
    await handle.signal("approve_signal", vote(pending, "user:bob", token))
    status = await handle.result()
    assert status.status == "completed", status.reasons
    assert await writes(pool, tenant) == 1


async def test_a_signal_with_no_argument_or_two_is_audited_and_does_not_wedge_the_run(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    """Before, the SDK called the handler with the wrong arity: every workflow task of
    the run failed from then on, because the signal stays in its history."""
    tenant = await managed_tenant(pool, {"user:bob": ["approvers"]})
    handle, _ = await held_run(worker, tenant)
    await handle.signal("approve_signal")
    await handle.signal("approve_signal", args=[{"step_id": "put"}, {"approver": "user:bob"}])
    await handle.signal("cancel", "please")  # ignored argument; the cancel itself counts
    refused = await audited(pool, tenant, handle, "approval_refused", 2)
    assert sorted(str(e.data["reason"]) for e in refused) == [
        "approval input must be exactly one JSON object, got 0 arguments",
        "approval input must be exactly one JSON object, got 2 arguments",
    ]
    status = await handle.result()
    assert status.status == "cancelled", status.reasons
    assert await writes(pool, tenant) == 0


async def test_a_malformed_signal_still_burns_the_bare_token_it_exposed(
    worker: WorkerHandle, pool: asyncpg.Pool, issuer: PrincipalTokenIssuer
) -> None:
    tenant = await managed_tenant(pool, {"user:bob": ["approvers"]})
    handle, _ = await held_run(worker, tenant)
    bare = issuer.issue(tenant, "user:bob").token
    await handle.signal(
        "approve_signal",
        {"step_id": "put", "approver": "user:bob", "verdict": "yes", "token": bare},
    )
    refused = await audited(pool, tenant, handle, "approval_refused", 1)
    assert refused[0].data.get("token_burned") is True
    assert "malformed" in str(refused[0].data["reason"])
    assert bare not in json.dumps(refused[0].data)
    assert len(await burned_rows(pool, tenant)) == 1
    await still_waiting_then_cancel(handle, pool, tenant)


async def test_a_malformed_update_is_refused_before_history_and_audited(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = await managed_tenant(pool, {"user:bob": ["approvers"]})
    handle, _ = await held_run(worker, tenant)
    events_before = len((await handle.fetch_history()).events)
    with pytest.raises(WorkflowUpdateFailedError) as refused_err:
        await handle.execute_update(
            "approve", {"step_id": "put", "approver": "user:bob", "verdict": "approve", "x": 1}
        )
    assert "approval input is malformed" in str(refused_err.value.cause)
    assert len((await handle.fetch_history()).events) == events_before
    refused = await audited(pool, tenant, handle, "approval_refused", 1)
    assert [(e.actor, e.step_id, e.data["via"]) for e in refused] == [("user:bob", "put", "update")]
    assert "plan_hash" in str(refused[0].data["reason"])
    await still_waiting_then_cancel(handle, pool, tenant)


# ------------------------------------------- (e) the mode comes from policy now


async def test_a_tenant_switched_to_tokens_after_the_run_started_refuses_tokenless_votes(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    tenant = new_tenant()
    settings = {"approval_risk": "low", "approvers": ["user:bob"]}
    await configure_tenant(
        worker.settings.opa_url, tenant, approval_authentication="none", **settings
    )
    handle = await start_run(
        worker.client, worker.task_queue, tenant=tenant, principal="user:ann", playbook_source=PUT
    )
    pending = await wait_pending(handle, "put")
    # The run was admitted as "none" and its state still says so; policy now says token.
    await configure_tenant(
        worker.settings.opa_url, tenant, approval_authentication="token", **settings
    )
    await handle.signal("approve_signal", vote(pending, "user:bob", None))
    assert "requires approvers to present" in await refused_update(
        handle, vote(pending, "user:bob", None)
    )
    refused = await audited(pool, tenant, handle, "approval_refused", 2)
    assert sorted(str(e.data["via"]) for e in refused) == ["signal", "update"]
    assert all("requires approvers to present" in str(e.data["reason"]) for e in refused)
    await still_waiting_then_cancel(handle, pool, tenant)


async def test_a_tenant_with_no_policy_answer_needs_tokens(
    worker: WorkerHandle, pool: asyncpg.Pool
) -> None:
    """Fail closed: a tenant OPA knows nothing about (no approval_authentication) needs tokens."""
    tenant = new_tenant()
    await configure_tenant(
        worker.settings.opa_url,
        tenant,
        approval_risk="low",
        approvers=["user:bob"],
        approval_authentication="maybe",
    )
    handle = await start_run(
        worker.client, worker.task_queue, tenant=tenant, principal="user:ann", playbook_source=PUT
    )
    pending = await wait_pending(handle, "put")
    assert "requires approvers to present" in await refused_update(
        handle, vote(pending, "user:bob", None)
    )
    await still_waiting_then_cancel(handle, pool, tenant)


async def test_an_opa_outage_is_retried_not_read_as_a_missing_token(
    pool: asyncpg.Pool, closed_port: int
) -> None:
    """A tokenless vote while OPA cannot answer raises, so Temporal retries the check
    (and the run then refuses the vote saying OPA did not answer). It used to be refused
    at once "for lacking a token", final, on a tenant that needs none: one of 10,000
    bulk approvals in bench.parked, when OPA was slow for 1.5 s under load."""
    vote = VerifyApprovalInput(
        tenant=new_tenant(),
        workflow_id="run-1",
        step_id="s0",
        plan_hash="0" * 64,
        approver="user:bob",
        verdict="approve",
        approvers=("user:bob",),
    )
    async with OpaClient(f"http://127.0.0.1:{closed_port}") as down:
        with pytest.raises(PolicyUnavailable, match="could not be reached"):
            await ApprovalAuthenticator(pool, down, None).check(vote)


# ------------------------------------------- the narrowing check, without a stack


def test_narrowing_accepts_exactly_stead_narrowing_block() -> None:
    keys = KeyPair()
    bare = PrincipalTokenIssuer(keys.private_key).issue("acme", "user:bob").token
    scope = ApprovalScope(
        workflow_id="run-1", step_id="put", plan_hash="ab" * 32, verdict="approve"
    )
    narrowed = scope_to_approval(bare, keys.public_key, scope)
    assert narrowing_problem(narrowed, scope) is None
    assert "not narrowed" in (narrowing_problem(bare, scope) or "")
    for field, value in (
        ("workflow_id", "run-2"),
        ("step_id", "get"),
        ("plan_hash", "cd"),
        ("verdict", "reject"),
    ):
        other = scope.model_copy(update={field: value})
        assert "another approval" in (narrowing_problem(narrowed, other) or ""), field
    assert "URL-safe" in (narrowing_problem("not a token!", scope) or "")
    assert "longer than" in (narrowing_problem("A" * 20_000, scope) or "")
    assert "not a biscuit" in (narrowing_problem("A" * 64, scope) or "")
    # A bare token is burned whole; a narrowed one only loses its narrowed derivation.
    assert len(exposed_revocation_ids(bare)) == 1
    assert exposed_revocation_ids(narrowed) == exposed_revocation_ids(narrowed)[-1:]


def _public(worker: WorkerHandle) -> Any:
    return key_store(worker.settings).public(IDENTITY)


def test_receive_turns_any_arguments_into_an_approval_or_a_reason_without_the_token() -> None:
    keys = KeyPair()
    bare = PrincipalTokenIssuer(keys.private_key).issue("acme", "user:bob").token
    good = {"step_id": "put", "plan_hash": "ab", "approver": "user:bob", "verdict": "approve"}
    assert receive([good]).approval == ApprovalInput(**good)
    cases: list[tuple[list[Any], str]] = [
        ([], "got 0 arguments"),
        ([good, good], "got 2 arguments"),
        (["put"], "must be a JSON object, got str"),
        ([{**good, "comment": "x" * 5_000}], "comment"),
        ([{**good, "plan_hash": "f" * 500}], "plan_hash"),
        ([{**good, "approver": "root"}], "approver"),
        ([{**good, "token": bare, "extra": 1}], "extra"),
    ]
    for args, why in cases:
        received = receive(args)
        assert received.approval is None and why in (received.problem or ""), why
        assert bare not in (received.problem or "")
    exposed = receive([{**good, "token": bare, "extra": 1}])
    assert exposed.token == bare and exposed.actor == "user:bob" and exposed.step_id == "put"
    assert receive([{**good, "approver": "root"}]).actor == "unknown:malformed-approval"
    assert burnable(bare) and not burnable("garbage") and not burnable(None)
