"""Record the workflow histories that ``tests/test_replay.py`` replays.

``.venv/bin/python -m tests.record_histories [--replace] [scenario ...]`` adds scenarios,
or re-records them after a workflow changed on purpose (read ``tests/histories/README.md``
first: never re-record to hide a nondeterminism error). It starts its own embedded stack
in a temporary STEAD_HOME, runs each scenario on an in-process worker, checks the outcome
is the one the scenario exists to show, and writes the history of every run to
``tests/histories/<scenario>.json``, or ``<scenario>.<n>.json`` (n = 1, 2, ...) when the
workflow continued as new. The workflow id is ``hist-<scenario>``: exported history JSON
does not carry it, so the replay test derives it from the file name.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from stead.contracts.cancel_token import cancel_scope
from stead.contracts.hello import Greeting, GreetingRequest
from stead.contracts.run import (
    ApprovalInput,
    CancelInput,
    PendingApproval,
    RunInput,
    RunOptions,
    RunRequest,
    RunStatus,
    StepResult,
    Verdict,
)
from stead.contracts.search_attributes import (
    SA_PENDING,
    SA_STATUS,
    SA_TENANT,
    start_search_attributes,
)
from stead.db.pool import create_pool, tenant_transaction
from stead.devstack.stack import stack_down, stack_up
from stead.identity import directory
from stead.identity.tokens import PrincipalTokenIssuer, scope_to_cancel
from stead.keys import IDENTITY, key_store
from stead.settings import Settings
from stead.temporal import connect
from tests import opa_auth
from tests.conftest import REPO, settings_for
from tests.peers import FakeLlm, serve
from tests.runs import configure_tenant, playbook, wait_pending
from workers.main import build_worker, open_resources

HISTORIES = REPO / "tests" / "histories"
TASK_QUEUE = "stead-histories"
# A second worker whose plans over STORED_AFTER steps are stored and run window by window
# (windows of STORED_AFTER steps, the smallest continue_as_new_after_steps allows).
STORED_QUEUE = "stead-histories-stored"
STORED_AFTER = 10
STORED_STEPS = 25
PRINCIPAL = "user:ann"

PUT_GET = playbook(
    {"id": "put", "operation": "records.put", "args": {"key": "${inputs.key}", "value": {"n": 1}}},
    {
        "id": "get",
        "operation": "records.get",
        "args": {"key": {"$ref": "steps.put.output.key"}},
        "depends_on": ["put"],
    },
    inputs={"key": {"type": "string", "required": True}},
)
PUT_ONE = playbook({"id": "put", "operation": "records.put", "args": {"key": "a", "value": {}}})
AnyHandle = WorkflowHandle[Any, Any]
CHAIN_STEPS = 25
CHAIN_CONTINUE_AFTER = 10
# Long enough for the run to reach its approval on a loaded machine.
DEADLINE_SECONDS = 20


def workflow_id(scenario: str) -> str:
    return f"hist-{scenario}"


def history_workflow_id(path: Path) -> str:
    """``approved.json`` → ``hist-approved``; ``chain.2.json`` → ``hist-chain``."""
    return workflow_id(path.name.split(".", 1)[0])


async def fetch_run_chain(client: Client, wf_id: str, first_run_id: str) -> list[WorkflowHistory]:
    """The history of every run of ``wf_id``, following continue-as-new from the first run."""
    histories: list[WorkflowHistory] = []
    run_id: str | None = first_run_id
    while run_id is not None:
        history = await client.get_workflow_handle(wf_id, run_id=run_id).fetch_history()
        histories.append(history)
        last = history.events[-1]
        if last.HasField("workflow_execution_continued_as_new_event_attributes"):
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
        else:
            run_id = None
    return histories


@dataclass(frozen=True)
class Recorder:
    client: Client
    settings: Settings
    llm: FakeLlm

    async def start_run(
        self,
        scenario: str,
        tenant_config: dict[str, Any],
        task_queue: str = TASK_QUEUE,
        search_attributes: TypedSearchAttributes | None = None,
        **request: Any,
    ) -> WorkflowHandle[Any, RunStatus]:
        # One tenant per scenario, so record keys and audit chains never mix.
        tenant = workflow_id(scenario)
        await configure_tenant(self.settings.opa_url, tenant, **tenant_config)
        req = RunRequest(tenant=tenant, principal=PRINCIPAL, **request)
        return await self.client.start_workflow(
            "stead.run",
            RunInput(request=req),
            id=workflow_id(scenario),
            task_queue=task_queue,
            result_type=RunStatus,
            search_attributes=search_attributes,
        )


async def scheduled(handle: AnyHandle) -> list[str]:
    """The activity types the run scheduled, in order (local ones are markers, not here)."""
    history = await handle.fetch_history()
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]


def approval(
    pending: PendingApproval, approver: str, verdict: Verdict, comment: str = ""
) -> ApprovalInput:
    return ApprovalInput(
        step_id=pending.step_id,
        plan_hash=pending.plan_hash,
        approver=approver,
        verdict=verdict,
        comment=comment,
    )


def expect(status: RunStatus, run_state: str, *step_states: str) -> None:
    seen = tuple(s.status for s in status.steps)
    if status.status != run_state or (step_states and seen != step_states):
        raise RuntimeError(
            f"{status.workflow_id}: expected {run_state} {step_states}, got {status.status} {seen} "
            f"({status.reasons}); the scenario no longer shows what it should, so nothing is saved"
        )


# ------------------------------------------------------------------ scenarios


async def happy(r: Recorder) -> AnyHandle:
    """Two steps, each decided and executed in one fused ``step.run`` task."""
    handle = await r.start_run("happy", {}, playbook_source=PUT_GET, inputs={"key": "k1"})
    expect(await handle.result(), "completed", "succeeded", "succeeded")
    if (await scheduled(handle)).count("step.run") != 2:
        raise RuntimeError(f"{handle.id}: the steps did not take the fused lane")
    return handle


async def _approval(r: Recorder, scenario: str, **config: Any) -> WorkflowHandle[Any, RunStatus]:
    return await r.start_run(scenario, {"approval_risk": "low", **config}, playbook_source=PUT_ONE)


async def approved(r: Recorder) -> AnyHandle:
    handle = await _approval(r, "approved", approvers=["user:bob"])
    pending = await wait_pending(handle, "put")
    await handle.execute_update(
        "approve",
        approval(pending, "user:bob", "approve"),
    )
    expect(await handle.result(), "completed", "succeeded")
    return handle


async def vote_after_audit(r: Recorder) -> AnyHandle:
    """Patch ``vote-after-audit``: the vote counts once its approval_accepted row is
    written, and the approver's answer already names it (the step may still wait)."""
    handle = await _approval(r, "vote-after-audit", approvers=["user:bob"])
    pending = await wait_pending(handle, "put")
    answer = await handle.execute_update(
        "approve", approval(pending, "user:bob", "approve"), result_type=StepResult
    )
    if [a.approver for a in answer.approvals] != ["user:bob"]:
        raise RuntimeError(f"{handle.id}: the answer does not name the vote: {answer}")
    expect(await handle.result(), "completed", "succeeded")
    markers = [
        e.marker_recorded_event_attributes.details["patch-data"]
        for e in (await handle.fetch_history()).events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]
    if not any(b"vote-after-audit" in p.data for m in markers for p in m.payloads):
        raise RuntimeError(f"{handle.id}: the run did not take the vote-after-audit path")
    return handle


async def rejected(r: Recorder) -> AnyHandle:
    handle = await _approval(r, "rejected", approvers=["user:bob"])
    pending = await wait_pending(handle, "put")
    await handle.execute_update(
        "approve",
        approval(pending, "user:bob", "reject", comment="not today"),
    )
    expect(await handle.result(), "failed", "rejected")
    return handle


async def approval_timeout(r: Recorder) -> AnyHandle:
    handle = await _approval(
        r,
        "approval-timeout",
        approvers=["user:bob"],
        approval_timeout_seconds=1,
        on_timeout="escalate",
        escalate_to=["user:carol"],
    )
    status = await handle.result()
    expect(status, "failed", "rejected")
    if "timed out after escalation" not in (status.steps[0].error or ""):
        raise RuntimeError(f"{handle.id}: not escalated before timing out: {status.steps[0].error}")
    return handle


async def denied(r: Recorder) -> AnyHandle:
    handle = await r.start_run(
        "denied",
        {"operations": ["records.get", "core.echo"]},
        playbook_source=playbook(
            {"id": "echo", "operation": "core.echo", "args": {"value": 1}},
            {
                "id": "put",
                "operation": "records.put",
                "args": {"key": "x", "value": {}},
                "depends_on": ["echo"],
            },
        ),
    )
    # The tenant's allow-list lacks records.put, so the plan decision already says no.
    expect(await handle.result(), "denied", "not_run", "not_run")
    return handle


async def step_denied(r: Recorder) -> AnyHandle:
    """The plan is allowed; the step decision denies arguments that fail the schema."""
    handle = await r.start_run(
        "step-denied",
        {},
        playbook_source=playbook(
            {"id": "echo", "operation": "core.echo", "args": {"value": {"not": "a string"}}},
            {
                "id": "put",
                "operation": "records.put",
                "args": {"key": {"$ref": "steps.echo.output.value"}, "value": {}},
                "depends_on": ["echo"],
            },
        ),
    )
    expect(await handle.result(), "denied", "succeeded", "denied")
    return handle


async def plan_rejected(r: Recorder) -> AnyHandle:
    unknown = playbook({"id": "a", "operation": "mail.blast", "args": {}})
    handle = await r.start_run("plan-rejected", {}, playbook_source=unknown)
    expect(await handle.result(), "plan_rejected")
    return handle


async def signal_approval(r: Recorder) -> AnyHandle:
    handle = await _approval(r, "signal-approval", approvers=["user:bob"])
    pending = await wait_pending(handle, "put")
    for approver in ("user:eve", "user:bob"):  # eve is refused (and audited), bob counts
        await handle.signal("approve_signal", approval(pending, approver, "approve"))
    expect(await handle.result(), "completed", "succeeded")
    return handle


async def cancelled(r: Recorder) -> AnyHandle:
    """A claimed cancel by signal (the Temporal UI path), audited as claimed."""
    handle = await _approval(r, "cancelled", approvers=["user:bob"])
    await wait_pending(handle, "put")
    await handle.signal("cancel", CancelInput(requested_by="user:bob", reason="not today"))
    expect(await handle.result(), "cancelled", "cancelled")
    return handle


async def cancel_update(r: Recorder) -> AnyHandle:
    """A claimed cancel by update, as `stead cancel --as` sends it without a token."""
    handle = await _approval(r, "cancel-update", approvers=["user:bob"])
    await wait_pending(handle, "put")
    await handle.execute_update("cancel", CancelInput(requested_by="user:bob", reason="not today"))
    expect(await handle.result(), "cancelled", "cancelled")
    return handle


async def cancel_proven(r: Recorder) -> AnyHandle:
    """A cancel proven by a principal token narrowed to this run and reason (a managed
    tenant whose approvals need tokens): ``identity.verify_cancel`` checks and spends it."""
    scenario = "cancel-proven"
    tenant = workflow_id(scenario)
    pool = await create_pool(r.settings.postgres_dsn, max_size=1)
    try:
        async with tenant_transaction(pool, tenant) as conn:
            await directory.create_tenant(conn, tenant)
            for principal in ("user:ann", "user:bob"):
                await directory.add_principal(conn, tenant, principal)
    finally:
        await pool.close()
    handle = await _approval(r, scenario, approvers=["user:bob"], approval_authentication="token")
    await wait_pending(handle, "put")
    keys = key_store(r.settings)
    private, public = keys.private(IDENTITY), keys.public(IDENTITY)
    assert private is not None and public is not None
    bob = PrincipalTokenIssuer(private).issue(tenant, "user:bob").token
    token = scope_to_cancel(bob, public, cancel_scope(handle.id, "not today"))
    await handle.execute_update(
        "cancel", CancelInput(requested_by="user:bob", reason="not today", token=token)
    )
    expect(await handle.result(), "cancelled", "cancelled")
    return handle


async def chain(r: Recorder) -> AnyHandle:
    steps = [{"id": "s01", "operation": "core.echo", "args": {"value": 1}}]
    for n in range(2, CHAIN_STEPS + 1):
        steps.append(
            {
                "id": f"s{n:02d}",
                "operation": "core.echo",
                "args": {"value": {"$ref": f"steps.s{n - 1:02d}.output.value"}},
                "depends_on": [f"s{n - 1:02d}"],
            }
        )
    handle = await r.start_run(
        "chain",
        {},
        playbook_source=playbook(*steps),
        options=RunOptions(continue_as_new_after_steps=CHAIN_CONTINUE_AFTER),
    )
    status = await handle.result()
    expect(status, "completed", *["succeeded"] * CHAIN_STEPS)
    if status.continued < 2:
        raise RuntimeError(f"{handle.id}: continued as new {status.continued} times, not >= 2")
    return handle


async def fan_out(r: Recorder) -> AnyHandle:
    """Independent steps in parallel (above max_parallel), then one step joining them."""
    leaves = [{"id": f"leaf{n}", "operation": "core.echo", "args": {"value": n}} for n in range(6)]
    join = {
        "id": "join",
        "operation": "core.echo",
        "args": {"value": [{"$ref": f"steps.leaf{n}.output.value"} for n in range(6)]},
        "depends_on": [f"leaf{n}" for n in range(6)],
    }
    handle = await r.start_run(
        "fan-out", {}, playbook_source=playbook(*leaves, join), options=RunOptions(max_parallel=4)
    )
    expect(await handle.result(), "completed", *["succeeded"] * 7)
    return handle


async def express(r: Recorder) -> AnyHandle:
    """Low-risk reads take the express lane (one local activity); the write does not."""
    handle = await r.start_run(
        "express",
        {},
        playbook_source=playbook(
            {"id": "name", "operation": "core.echo", "args": {"value": "k-express"}},
            {
                "id": "put",
                "operation": "records.put",
                "args": {"key": {"$ref": "steps.name.output.value"}, "value": {"n": 2}},
                "depends_on": ["name"],
            },
            {
                "id": "get",
                "operation": "records.get",
                "args": {"key": {"$ref": "steps.put.output.key"}},
                "depends_on": ["put"],
            },
        ),
        options=RunOptions(express_reads=True),
    )
    expect(await handle.result(), "completed", "succeeded", "succeeded", "succeeded")
    history = await handle.fetch_history()
    if not any(e.HasField("marker_recorded_event_attributes") for e in history.events):
        raise RuntimeError(f"{handle.id}: no local activity in history: express lane unused")
    return handle


async def rejected_replan(r: Recorder) -> AnyHandle:
    """A reviewer rejects a step with a comment; the run replans and its ``on_reject``
    block redoes the step with the comment, which is approved and completes the run."""
    source = playbook(
        {
            "id": "publish",
            "operation": "records.put",
            "args": {"key": "post", "value": {"text": "v1"}},
            "on_failure": "replan",
            "on_reject": [
                {
                    "id": "redo",
                    "operation": "records.put",
                    "args": {"key": "post", "value": {"text": "${failure.comment}"}},
                    "replaces": "publish",
                }
            ],
        }
    )
    handle = await r.start_run(
        "rejected-replan",
        {"approval_risk": "low", "approvers": ["user:bob"]},
        playbook_source=source,
    )
    pending = await wait_pending(handle, "publish")
    await handle.execute_update("approve", approval(pending, "user:bob", "reject", "say v2"))
    pending = await wait_pending(handle, "redo_2")
    await handle.execute_update("approve", approval(pending, "user:bob", "approve"))
    status = await handle.result()
    expect(status, "completed", "succeeded")
    if status.replans != 1:
        raise RuntimeError(f"{handle.id}: replanned {status.replans} times, not once")
    return handle


async def llm_planner(r: Recorder) -> AnyHandle:
    """The LLM planner (a local OpenAI-compatible server) plans from a goal."""
    r.llm.replies.clear()
    r.llm.reply_plan(
        {
            "rationale": "echo twice",
            "steps": [
                {"id": "a", "operation": "core.echo", "args": {"value": 1}},
                {
                    "id": "b",
                    "operation": "core.echo",
                    "args": {"value": {"$ref": "steps.a.output.value"}},
                    "depends_on": ["a"],
                },
            ],
        },
        tokens=60,
    )
    handle = await r.start_run("llm-planner", {}, goal="echo a value twice")
    status = await handle.result()
    expect(status, "completed", "succeeded", "succeeded")
    if status.plan is None or status.plan.planner.kind != "llm":
        raise RuntimeError(f"{handle.id}: not planned by the LLM planner")
    return handle


async def stored_plan(r: Recorder) -> AnyHandle:
    """A plan over the worker's inline limit is stored and run window by window: each
    continued run loads its window with ``plan.window``."""
    steps = [{"id": "s01", "operation": "core.echo", "args": {"value": 1}}]
    for n in range(2, STORED_STEPS + 1):
        steps.append(
            {
                "id": f"s{n:02d}",
                "operation": "core.echo",
                "args": {"value": {"$ref": f"steps.s{n - 1:02d}.output.value"}},
                "depends_on": [f"s{n - 1:02d}"],
            }
        )
    handle = await r.start_run(
        "stored-plan",
        {},
        task_queue=STORED_QUEUE,
        playbook_source=playbook(*steps),
        options=RunOptions(continue_as_new_after_steps=STORED_AFTER),
    )
    status = await handle.result()
    if status.status != "completed" or status.total_steps != STORED_STEPS or status.continued < 2:
        raise RuntimeError(
            f"{handle.id}: expected a completed stored plan of {STORED_STEPS} steps over >= 3 "
            "windows, got "
            f"{status.status} {status.total_steps} steps, continued {status.continued}"
        )
    return handle


def opening_attributes(scenario: str) -> TypedSearchAttributes:
    """What `stead run` sets at start for the scenario's run (its tenant is the id)."""
    tenant = workflow_id(scenario)
    return start_search_attributes(RunRequest(tenant=tenant, principal=PRINCIPAL, goal="-"))


def upserted(history: WorkflowHistory) -> list[dict[str, str]]:
    """Each search-attribute upsert in order, as {attribute: JSON value}; the patches'
    ``TemporalChangeVersion`` upserts (not billed) left out."""
    found = []
    for event in history.events:
        if event.HasField("upsert_workflow_search_attributes_event_attributes"):
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            values = {k: v.data.decode() for k, v in fields.indexed_fields.items()}
            values.pop("TemporalChangeVersion", None)
            if values:
                found.append(values)
    return found


def expect_fewer_actions(history: WorkflowHistory, upserts: int) -> None:
    """The ``fewer-actions`` path: no activity for the summary, ``upserts`` upserts."""
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    seen = upserted(history)
    if "memory.remember_run_summary" in scheduled or len(seen) != upserts:
        raise RuntimeError(
            f"not the fewer-actions path: activities {scheduled}, upserts {seen} "
            f"(expected {upserts}); is the worker on today's code?"
        )


async def _started_like_stead_run(
    r: Recorder, scenario: str, **request: Any
) -> WorkflowHandle[Any, RunStatus]:
    """One step held for user:bob's approval, its search attributes on the start request."""
    return await r.start_run(
        scenario,
        {"approval_risk": "low", "approvers": ["user:bob"]},
        search_attributes=opening_attributes(scenario),
        playbook_source=PUT_ONE,
        **request,
    )


async def fewer_actions_approved(r: Recorder) -> AnyHandle:
    """Started as `stead run` starts (search attributes on the start request): the run
    upserts none of them, an approval opening and closing is one upsert each (status and
    pending flag together), and the summary is a local activity beside the final record."""
    handle = await _started_like_stead_run(r, "fewer-actions-approved")
    pending = await wait_pending(handle, "put")
    await handle.execute_update("approve", approval(pending, "user:bob", "approve"))
    expect(await handle.result(), "completed", "succeeded")
    # running, awaiting_approval + pending, running + not pending, completed
    expect_fewer_actions(await handle.fetch_history(), upserts=4)
    return handle


async def fewer_actions_deadline(r: Recorder) -> AnyHandle:
    """The deadline passes while a step awaits approval: the wait is cancelled with the
    pending flag still set, and the final status and the flag go out in one upsert."""
    deadline = datetime.now(UTC) + timedelta(seconds=DEADLINE_SECONDS)
    handle = await _started_like_stead_run(r, "fewer-actions-deadline", deadline=deadline)
    await wait_pending(handle, "put")
    expect(await handle.result(), "timed_out", "cancelled")
    history = await handle.fetch_history()
    # running, awaiting_approval + pending, timed_out + not pending
    expect_fewer_actions(history, upserts=3)
    if set(upserted(history)[-1]) != {"SteadStatus", "SteadPendingApproval"}:
        raise RuntimeError(f"{handle.id}: the last upsert set {upserted(history)[-1]}")
    return handle


async def fewer_actions_forged(r: Recorder) -> AnyHandle:
    """Started with search attributes that lie (another tenant, already completed, pending):
    the run overwrites each with its own value in its first task, as if none were set."""
    scenario = "fewer-actions-forged"
    forged = TypedSearchAttributes(
        [
            SearchAttributePair(SA_TENANT, "someone-else"),
            SearchAttributePair(SA_STATUS, "completed"),
            SearchAttributePair(SA_PENDING, True),
        ]
    )
    handle = await r.start_run(
        scenario, {}, search_attributes=forged, playbook_source=PUT_GET, inputs={"key": "k9"}
    )
    expect(await handle.result(), "completed", "succeeded", "succeeded")
    history = await handle.fetch_history()
    # the forged three corrected, running, completed
    expect_fewer_actions(history, upserts=3)
    if set(upserted(history)[0]) != {"SteadTenant", "SteadStatus", "SteadPendingApproval"}:
        raise RuntimeError(f"{handle.id}: the forged attributes were kept: {upserted(history)}")
    return handle


async def fewer_actions_chain(r: Recorder) -> AnyHandle:
    """A chain that continues as new: each continued run keeps the attributes it inherited
    (the same tenant, status and pending flag) instead of upserting them again."""
    scenario = "fewer-actions-chain"
    steps = [{"id": "s01", "operation": "core.echo", "args": {"value": 1}}]
    steps += [
        {
            "id": f"s{n:02d}",
            "operation": "core.echo",
            "args": {"value": {"$ref": f"steps.s{n - 1:02d}.output.value"}},
            "depends_on": [f"s{n - 1:02d}"],
        }
        for n in range(2, CHAIN_CONTINUE_AFTER + 3)
    ]
    handle = await r.start_run(
        scenario,
        {},
        search_attributes=opening_attributes(scenario),
        playbook_source=playbook(*steps),
        options=RunOptions(continue_as_new_after_steps=CHAIN_CONTINUE_AFTER),
    )
    status = await handle.result()
    expect(status, "completed", *["succeeded"] * len(steps))
    if status.continued != 1:
        raise RuntimeError(f"{handle.id}: continued as new {status.continued} times, not once")
    # the continued run: only its final status
    last = await r.client.get_workflow_handle(handle.id).fetch_history()
    expect_fewer_actions(last, upserts=1)
    return handle


async def hello(r: Recorder) -> AnyHandle:
    handle = await r.client.start_workflow(
        "stead.hello",
        GreetingRequest(name="history"),
        id=workflow_id("hello"),
        task_queue=TASK_QUEUE,
        result_type=Greeting,
    )
    greeting = await handle.result()
    if "history" not in greeting.message:
        raise RuntimeError(f"{handle.id}: unexpected greeting {greeting.message!r}")
    return handle


Scenario = Callable[[Recorder], Awaitable[AnyHandle]]
SCENARIOS: dict[str, Scenario] = {
    "happy": happy,
    "approved": approved,
    "rejected": rejected,
    "approval-timeout": approval_timeout,
    "denied": denied,
    "step-denied": step_denied,
    "plan-rejected": plan_rejected,
    "signal-approval": signal_approval,
    "cancelled": cancelled,
    "cancel-update": cancel_update,
    "cancel-proven": cancel_proven,
    "chain": chain,
    "fan-out": fan_out,
    "express": express,
    "rejected-replan": rejected_replan,
    "llm-planner": llm_planner,
    "stored-plan": stored_plan,
    "hello": hello,
    "fewer-actions-approved": fewer_actions_approved,
    "fewer-actions-deadline": fewer_actions_deadline,
    "fewer-actions-forged": fewer_actions_forged,
    "fewer-actions-chain": fewer_actions_chain,
    "vote-after-audit": vote_after_audit,
}


# ------------------------------------------------------------------- driver


def write_histories(scenario: str, histories: list[WorkflowHistory]) -> list[Path]:
    for stale in recorded(scenario):
        stale.unlink()
    if len(histories) == 1:
        targets = [HISTORIES / f"{scenario}.json"]
    else:
        targets = [HISTORIES / f"{scenario}.{n}.json" for n in range(1, len(histories) + 1)]
    for target, history in zip(targets, histories, strict=True):
        target.write_text(compact_json(history))
    return targets


def compact_json(history: WorkflowHistory) -> str:
    """``to_json()`` with one event per line: a quarter smaller, and still greppable by event."""
    events = json.loads(history.to_json())["events"]
    lines = ",\n".join(json.dumps(event, separators=(",", ":")) for event in events)
    return '{"events": [\n' + lines + "\n]}\n"


async def record(base: Settings, names: list[str]) -> None:
    llm = FakeLlm()
    with serve(llm) as llm_url:
        settings = base.model_copy(
            update={
                "planner_model": "openai/fake-planner",
                "planner_api_base": f"{llm_url}/v1",
                "planner_api_key": SecretStr("test-key"),
            }
        )
        await record_with(settings, llm, names)


async def record_with(settings: Settings, llm: FakeLlm, names: list[str]) -> None:
    client = await connect(settings)
    HISTORIES.mkdir(exist_ok=True)
    stored = settings.model_copy(update={"plan_inline_max_steps": STORED_AFTER})
    async with (
        open_resources(settings) as resources,
        build_worker(client, TASK_QUEUE, resources),
        build_worker(client, STORED_QUEUE, dataclasses.replace(resources, settings=stored)),
    ):
        recorder = Recorder(client, settings, llm)
        for name in names:
            began = time.monotonic()
            handle = await SCENARIOS[name](recorder)
            assert handle.first_execution_run_id is not None
            histories = await fetch_run_chain(client, handle.id, handle.first_execution_run_id)
            for path, history in zip(write_histories(name, histories), histories, strict=True):
                print(
                    f"{path.relative_to(REPO)}: {len(history.events)} events, "
                    f"{path.stat().st_size} bytes ({time.monotonic() - began:.1f} s)",
                    flush=True,
                )


def recorded(scenario: str) -> list[Path]:
    return sorted([*HISTORIES.glob(f"{scenario}.json"), *HISTORIES.glob(f"{scenario}.*.json")])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.record_histories", description=__doc__)
    parser.add_argument("scenarios", nargs="*", metavar="scenario", help="default: all")
    parser.add_argument(
        "--replace",
        action="store_true",
        help="overwrite existing histories (read tests/histories/README.md first)",
    )
    args = parser.parse_args(argv)
    names: list[str] = args.scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    existing = [n for n in names if recorded(n)]
    if existing and not args.replace:
        # An old history is the proof that runs parked on the old code still replay.
        print(f"keeping existing histories of {existing}; pass --replace to overwrite them")
        names = [n for n in names if n not in existing]
    if not names:
        return 0
    with tempfile.TemporaryDirectory(prefix="stead-histories-") as tmp:
        base = settings_for(Path(tmp))
        try:
            stack_up(base)
            settings = settings_for(Path(tmp))
            opa_auth.remember(settings)  # configure_tenant writes to OPA as its admin
            asyncio.run(record(settings, names))
        finally:
            stack_down(base)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
