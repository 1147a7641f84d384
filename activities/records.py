"""Audit appends and run records requested by the workflow itself (approvals, status)."""

from __future__ import annotations

import asyncpg
from temporalio import activity

from stead.audit.log import AuditEvent, append_event
from stead.contracts.activities import AuditInput, RunRecordInput
from stead.db.pool import tenant_transaction
from stead.runs.store import record_run_started, record_run_status


class RecordActivities:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @activity.defn(name="audit.append")
    async def append_audit(self, req: AuditInput) -> None:
        async with tenant_transaction(self._pool, req.tenant) as conn:
            await append_event(
                conn,
                AuditEvent(
                    tenant=req.tenant,
                    workflow_id=req.workflow_id,
                    run_id=req.run_id,
                    step_id=req.step_id,
                    kind=req.kind,
                    actor=req.actor,
                    data=req.data,
                ),
            )

    @activity.defn(name="runs.record")
    async def record_run(self, req: RunRecordInput) -> None:
        """Idempotent upsert: Temporal may deliver it more than once."""
        async with tenant_transaction(self._pool, req.tenant) as conn:
            if req.status == "planning":
                await record_run_started(
                    conn,
                    tenant=req.tenant,
                    workflow_id=req.workflow_id,
                    principal=req.principal,
                    goal=req.goal,
                    playbook=req.playbook,
                    labels=req.labels,
                )
                await append_event(
                    conn,
                    AuditEvent(
                        tenant=req.tenant,
                        workflow_id=req.workflow_id,
                        run_id=None,
                        step_id=None,
                        kind="run_started",
                        actor=req.principal,
                        data={"goal": req.goal, "playbook": req.playbook},
                    ),
                )
                return
            await record_run_status(
                conn,
                tenant=req.tenant,
                workflow_id=req.workflow_id,
                status=req.status,
                plan_hash=req.plan_hash,
                tokens=req.tokens,
                cost_usd=req.cost_usd,
                minutes_saved=req.minutes_saved,
                summary=req.summary,
                finished=req.finished,
            )
            if req.finished:
                await append_event(
                    conn,
                    AuditEvent(
                        tenant=req.tenant,
                        workflow_id=req.workflow_id,
                        run_id=None,
                        step_id=None,
                        kind="run_finished",
                        actor="system:stead",
                        data={"status": req.status, **req.summary},
                    ),
                )
