"""Run records, policy decisions and group membership in Postgres.

The workflow is the source of truth for a run; these rows are its queryable
shadow for the CLI, dashboards and audits. Every write is idempotent because the
activities that make them are retried by Temporal: starting a run twice upserts,
status updates set absolute values rather than increments, and a decision is
stored once per ``decision_id``.

Every function expects a connection inside ``tenant_transaction`` for ``tenant``:
row-level security hides other tenants' rows and rejects writes for them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

import asyncpg
from pydantic import JsonValue

from stead.audit.chain import decision_mac, installed
from stead.contracts.base import Closed
from stead.contracts.run import ApprovalPolicy, Decision, RunState, canonical_json
from stead.errors import SteadError

DecisionKind = Literal["plan", "step"]

_RUN_COLUMNS = (
    "workflow_id, tenant, principal, goal, playbook, status, plan_hash, started_at,"
    " finished_at, tokens, cost_usd::float8 AS cost_usd,"
    " minutes_saved::float8 AS minutes_saved, labels::text AS labels,"
    " summary::text AS summary, updated_at"
)
_DECISION_COLUMNS = (
    "decision_id, tenant, workflow_id, step_id, kind, outcome, reasons::text AS reasons,"
    " approval::text AS approval, policy_revision, input_hash, blocked, evaluated_at, eval_ms"
)


class RunRecord(Closed):
    workflow_id: str
    tenant: str
    principal: str
    goal: str | None
    playbook: str | None
    status: str
    plan_hash: str | None
    started_at: datetime
    finished_at: datetime | None
    tokens: int
    cost_usd: float
    minutes_saved: float
    labels: dict[str, str]
    summary: dict[str, JsonValue]
    updated_at: datetime


class DecisionRecord(Closed):
    decision: Decision
    tenant: str
    workflow_id: str
    step_id: str | None
    kind: DecisionKind
    input_hash: str
    evaluated_at: datetime
    eval_ms: float | None


class RunNotRecorded(SteadError):
    """A status update named a run that ``record_run_started`` never stored for the tenant."""


class DecisionIdTaken(SteadError):
    """A ``decision_id`` is already stored for another tenant; ids must be globally unique."""


def _run(row: asyncpg.Record) -> RunRecord:
    return RunRecord(
        workflow_id=row["workflow_id"],
        tenant=row["tenant"],
        principal=row["principal"],
        goal=row["goal"],
        playbook=row["playbook"],
        status=row["status"],
        plan_hash=row["plan_hash"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        tokens=row["tokens"],
        cost_usd=row["cost_usd"],
        minutes_saved=row["minutes_saved"],
        labels=json.loads(row["labels"]),
        summary=json.loads(row["summary"]),
        updated_at=row["updated_at"],
    )


def _decision(row: asyncpg.Record) -> DecisionRecord:
    approval = None if row["approval"] is None else json.loads(row["approval"])
    return DecisionRecord(
        decision=Decision(
            decision_id=row["decision_id"],
            outcome=row["outcome"],
            reasons=tuple(json.loads(row["reasons"])),
            approval=None if approval is None else ApprovalPolicy.model_validate(approval),
            policy_revision=row["policy_revision"],
            blocked=row["blocked"],
        ),
        tenant=row["tenant"],
        workflow_id=row["workflow_id"],
        step_id=row["step_id"],
        kind=row["kind"],
        input_hash=row["input_hash"],
        evaluated_at=row["evaluated_at"],
        eval_ms=row["eval_ms"],
    )


async def record_run_started(
    conn: asyncpg.Connection,
    *,
    tenant: str,
    workflow_id: str,
    principal: str,
    goal: str | None,
    playbook: str | None,
    labels: dict[str, str],
) -> None:
    """Store a new run in status ``planning``; repeating it leaves status and totals alone.

    Continue-as-new keeps the workflow id, so a continued run calling this again
    refreshes its description without resetting progress. A workflow id already
    stored by another tenant fails with an RLS error rather than being overwritten.
    """
    await conn.execute(
        "INSERT INTO runs (workflow_id, tenant, principal, goal, playbook, status, labels)"
        " VALUES ($1, $2, $3, $4, $5, 'planning', $6::text::jsonb)"
        " ON CONFLICT (workflow_id) DO UPDATE SET principal = EXCLUDED.principal,"
        " goal = EXCLUDED.goal, playbook = EXCLUDED.playbook, labels = EXCLUDED.labels,"
        " updated_at = now()",
        workflow_id,
        tenant,
        principal,
        goal,
        playbook,
        canonical_json(labels),
    )


async def record_run_status(
    conn: asyncpg.Connection,
    *,
    tenant: str,
    workflow_id: str,
    status: RunState,
    plan_hash: str | None = None,
    tokens: int | None = None,
    cost_usd: float | None = None,
    minutes_saved: float | None = None,
    summary: dict[str, JsonValue] | None = None,
    finished: bool = False,
) -> None:
    """Set the run's status and, where given, its totals (absolute values, not deltas).

    ``None`` leaves a field as it is. ``finished`` stamps ``finished_at`` once; a
    retried final update keeps the first stamp.
    """
    updated = await conn.fetchval(
        "UPDATE runs SET status = $3,"
        " plan_hash = COALESCE($4, plan_hash),"
        " tokens = COALESCE($5, tokens),"
        " cost_usd = COALESCE($6::float8::numeric, cost_usd),"
        " minutes_saved = COALESCE($7::float8::numeric, minutes_saved),"
        " summary = COALESCE($8::text::jsonb, summary),"
        " finished_at = CASE WHEN $9 THEN COALESCE(finished_at, now()) ELSE finished_at END,"
        " updated_at = now()"
        " WHERE workflow_id = $1 AND tenant = $2 RETURNING 1",
        workflow_id,
        tenant,
        status,
        plan_hash,
        tokens,
        cost_usd,
        minutes_saved,
        None if summary is None else canonical_json(summary),
        finished,
    )
    if updated is None:
        raise RunNotRecorded(
            f"run {workflow_id!r} is not recorded for tenant {tenant!r}; "
            "record_run_started must run before its status is updated"
        )


async def record_decision(
    conn: asyncpg.Connection,
    *,
    tenant: str,
    workflow_id: str,
    step_id: str | None,
    kind: DecisionKind,
    decision: Decision,
    input_hash: str,
    eval_ms: float | None,
) -> bool:
    """Store a policy decision once; a retry with the same ``decision_id`` is a no-op.

    ``step_id`` is None exactly when ``kind`` is ``"plan"`` (a database check). Returns
    whether this call stored it (False: it was stored before).
    """
    approval = decision.approval
    approval_json = None if approval is None else canonical_json(approval.model_dump(mode="json"))
    mac = decision_mac(
        installed().key(),
        decision_id=decision.decision_id,
        tenant=tenant,
        workflow_id=workflow_id,
        step_id=step_id,
        kind=kind,
        outcome=decision.outcome,
        blocked=decision.blocked,
        input_hash=input_hash,
        policy_revision=decision.policy_revision,
    )
    inserted = await conn.fetchval(
        "INSERT INTO decisions (decision_id, tenant, workflow_id, step_id, kind, outcome,"
        " reasons, approval, policy_revision, input_hash, blocked, eval_ms, mac)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8::text::jsonb, $9, $10, $11, $12,"
        " $13) ON CONFLICT (decision_id) DO NOTHING RETURNING 1",
        decision.decision_id,
        tenant,
        workflow_id,
        step_id,
        kind,
        decision.outcome,
        canonical_json(list(decision.reasons)),
        approval_json,
        decision.policy_revision,
        input_hash,
        decision.blocked,
        eval_ms,
        mac,
    )
    if inserted is not None:
        return True
    # ON CONFLICT DO NOTHING also swallows a clash with a row RLS hides from us.
    visible = await conn.fetchval(
        "SELECT 1 FROM decisions WHERE decision_id = $1", decision.decision_id
    )
    if visible is None:
        raise DecisionIdTaken(
            f"decision {decision.decision_id!r} is already stored for another tenant; "
            "decision ids must be globally unique"
        )
    return False


async def get_run(conn: asyncpg.Connection, workflow_id: str) -> RunRecord | None:
    row = await conn.fetchrow(
        f"SELECT {_RUN_COLUMNS} FROM runs WHERE workflow_id = $1", workflow_id
    )
    return None if row is None else _run(row)


async def list_runs(
    conn: asyncpg.Connection, tenant: str, status: str | None = None, limit: int = 100
) -> list[RunRecord]:
    """Newest first."""
    rows = await conn.fetch(
        f"SELECT {_RUN_COLUMNS} FROM runs"
        " WHERE tenant = $1 AND ($2::text IS NULL OR status = $2::text)"
        " ORDER BY started_at DESC, workflow_id LIMIT $3",
        tenant,
        status,
        limit,
    )
    return [_run(r) for r in rows]


async def list_decisions(
    conn: asyncpg.Connection, tenant: str, workflow_id: str
) -> list[DecisionRecord]:
    """A run's decisions in the order they were evaluated."""
    rows = await conn.fetch(
        f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE tenant = $1 AND workflow_id = $2"
        " ORDER BY evaluated_at, decision_id",
        tenant,
        workflow_id,
    )
    return [_decision(r) for r in rows]


def _group_name(group: str) -> str:
    return group.removeprefix("group:")


async def group_members(
    conn: asyncpg.Connection, tenant: str, groups: Sequence[str]
) -> dict[str, list[str]]:
    """Members of each group, keyed by the name as given (``group:ops`` or ``ops``).

    Every requested group is a key; an unknown or empty group maps to ``[]`` so an
    approval naming it simply has no eligible approvers from it.
    """
    names = sorted({_group_name(g) for g in groups})
    rows = await conn.fetch(
        "SELECT group_name, principal FROM group_members"
        " WHERE tenant = $1 AND group_name = ANY($2::text[]) ORDER BY group_name, principal",
        tenant,
        names,
    )
    by_name: dict[str, list[str]] = {name: [] for name in names}
    for row in rows:
        by_name[row["group_name"]].append(row["principal"])
    return {g: list(by_name[_group_name(g)]) for g in groups}


async def add_group_member(
    conn: asyncpg.Connection, tenant: str, group: str, principal: str
) -> None:
    """Idempotent; ``group`` may carry the ``group:`` prefix."""
    await conn.execute(
        "INSERT INTO group_members (tenant, group_name, principal) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING",
        tenant,
        _group_name(group),
        principal,
    )
