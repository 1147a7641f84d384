"""Audit appends and run records requested by the workflow itself (approvals, status)."""

from __future__ import annotations

from datetime import datetime

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.identity import IdentityActivities
from stead.audit.log import AuditEvent, append_event
from stead.contracts import activity_names as names
from stead.contracts.activities import AuditInput, OpenRunInput, RunRecordInput
from stead.contracts.identity import RunAdmission
from stead.db.pool import tenant_transaction
from stead.identity.admission import claim_workflow_id, id_taken
from stead.observability.metrics import ApprovalVerdict, observe_approval, observe_run_finished
from stead.runs.scope import (
    Need,
    ScopeClaim,
    scope_for,
    scope_refused,
    stamp_admission,
    tenant_scoped,
)
from stead.runs.store import record_run_started, record_run_status
from stead.slo.value import record_run_value


def _open_claim(req: OpenRunInput) -> ScopeClaim:
    """The admission and the record must be of one run, tenant and starter: the record's
    tenant is the one the run is stamped as admitted for."""
    if (req.admit.tenant, req.admit.principal) != (req.record.tenant, req.record.principal):
        raise scope_refused(
            f"runs.open admits {req.admit.principal} in {req.admit.tenant} but would record "
            f"{req.record.principal} in {req.record.tenant}; both must name the same run"
        )
    return ScopeClaim(req.record.tenant, (req.admit.workflow_id, req.record.workflow_id), "bound")


# What a run refused at the door audits: it writes no run record (a forged continuation
# state), yet its refusals belong in the claimed tenant's log, as any refused start's do.
REFUSAL_KINDS: frozenset[str] = frozenset({"run_refused", "approval_refused"})


def _audit_claim(req: AuditInput) -> ScopeClaim:
    """A run audits into its own record's tenant; only refusals go without a record."""
    need: Need = "bound" if req.kind in REFUSAL_KINDS else "recorded"
    return ScopeClaim(req.tenant, (req.workflow_id,), need)


def _record_claim(req: RunRecordInput) -> ScopeClaim:
    """Starting a record needs no record; a later write needs the run's own, and totals
    (which budgets and SLO reports add up) need an admitted run: a refused run has
    spent nothing, so it can still record how it ended."""
    if req.status == "planning":
        need: Need = "bound"
    elif req.tokens or req.cost_usd or req.minutes_saved:
        need = "admitted"
    else:
        need = "recorded"
    return ScopeClaim(req.tenant, (req.workflow_id,), need)


def _activity_key() -> str:
    """Who is appending: the same on every retry of one scheduled activity, different for
    every other (an activity id is unique within its run, a run id within its workflow).
    Derived here, on the worker, so no workflow code changes and no input can forge it."""
    info = activity.info()
    return f"activity:{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}"


class RecordActivities:
    """``identity`` admits runs for ``runs.open``; without it only ``runs.record`` works."""

    def __init__(self, pool: asyncpg.Pool, identity: IdentityActivities | None = None) -> None:
        self._pool = pool
        self._identity = identity

    @activity.defn(name=names.RUNS_OPEN)
    @tenant_scoped(_open_claim)
    async def open_run(self, req: OpenRunInput) -> RunAdmission:
        """Admission (``IdentityActivities.admit_run``) and ``runs.record("planning")`` as
        one local activity.

        One marker event and one local-activity dispatch per run instead of two, with
        the same code. Admission goes first because it only reads (it verifies the
        start token against the directory), then the workflow id is claimed: an attempt whose
        record failed repeats nothing when it is retried, and the ``run_started`` audit
        event is written by the attempt that commits the record. The workflow records
        and audits a refusal like any other.
        """
        if self._identity is None:
            raise ApplicationError(
                "this worker cannot admit runs (no identity activities)",
                type="RunNotOpened",
                non_retryable=True,
            )
        admission = await self._identity.admit_run(req.admit)
        # The workflow id is claimed for this run chain before anything is written: a
        # start replayed on a closed run's id (a lifted start token) gets no record.
        async with tenant_transaction(self._pool, req.admit.tenant) as conn:
            if not await claim_workflow_id(conn, req.admit, admission):
                return id_taken(req.admit, admission)
        # The run id admitted (this local activity runs in the run it opens), which
        # stead/runs/scope.py checks every later activity's tenant against.
        admitted_run = activity.info().workflow_run_id if admission.admitted else None
        await self._record(req.record, admission, stamp=True, admitted_run=admitted_run)
        if admitted_run is not None:
            scope_for(self._pool).remember(
                req.record.workflow_id, admitted_run, req.record.tenant, "admitted"
            )
        return admission

    @activity.defn(name=names.AUDIT_APPEND)
    @tenant_scoped(_audit_claim)
    async def append_audit(self, req: AuditInput) -> None:
        """Append the workflow's event, at most once per scheduled activity: a retry after
        the row committed (the worker died, or its completion was lost, before Temporal
        recorded it) finds its row by the activity's key and appends nothing."""
        verdict = _approval_verdict(req)
        waited: float | None = None
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
                idempotency_key=_activity_key(),
            )
            if verdict is not None and req.step_id is not None:
                waited = await _approval_wait_seconds(conn, req.workflow_id, req.step_id)
        if verdict is not None:
            observe_approval(req.tenant, verdict, waited)

    @activity.defn(name=names.RUNS_RECORD)
    @tenant_scoped(_record_claim)
    async def record_run(self, req: RunRecordInput) -> None:
        """Idempotent upsert: Temporal may deliver it more than once."""
        await self._record(req, None)

    async def _record(
        self,
        req: RunRecordInput,
        admission: RunAdmission | None,
        *,
        stamp: bool = False,
        admitted_run: str | None = None,
    ) -> None:
        """The record; ``admission`` adds how the starter was proven to ``run_started``.

        ``stamp`` (``runs.open`` only): set the record's admitted run, None if refused.
        """
        started: dict[str, object] = {"goal": req.goal, "playbook": req.playbook}
        if req.playbook_sha256 is not None:
            started["playbook_sha256"] = req.playbook_sha256
        if admission is not None:
            started.update(
                authenticated=admission.authenticated,
                token_id=admission.token_id,
                start_authentication=admission.start_authentication,
                admitted=admission.admitted,
            )
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
                if stamp:
                    mac = None
                    if admitted_run is not None:
                        mac = scope_for(self._pool).admission_mac(
                            req.workflow_id, req.tenant, admitted_run
                        )
                    await stamp_admission(conn, req.workflow_id, admitted_run, mac)
                await append_event(
                    conn,
                    AuditEvent(
                        tenant=req.tenant,
                        workflow_id=req.workflow_id,
                        run_id=None,
                        step_id=None,
                        kind="run_started",
                        actor=req.principal,
                        data=started,
                    ),
                )
                return
            first_finish = req.finished and await _finished_at(conn, req.workflow_id) is None
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
                await record_run_value(conn, tenant=req.tenant, workflow_id=req.workflow_id)
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
            took = await _run_seconds(conn, req.workflow_id) if first_finish else None
        if took is not None:
            observe_run_finished(req.tenant, req.status, took, req.minutes_saved or 0.0)


def _approval_verdict(req: AuditInput) -> ApprovalVerdict | None:
    """The verdict an approval event records, for the time-to-decision metric."""
    if req.kind == "approval_timed_out":
        return "timed_out"
    verdict = req.data.get("verdict")
    if req.kind == "approval_accepted" and verdict in ("approve", "reject"):
        return "approve" if verdict == "approve" else "reject"
    return None


async def _approval_wait_seconds(
    conn: asyncpg.Connection, workflow_id: str, step_id: str
) -> float | None:
    """Since policy first asked for approval of the step (its first "approve" decision)."""
    waited = await conn.fetchval(
        "SELECT EXTRACT(EPOCH FROM now() - min(evaluated_at))::float8 FROM decisions"
        " WHERE workflow_id = $1 AND step_id = $2 AND kind = 'step' AND outcome = 'approve'",
        workflow_id,
        step_id,
    )
    return None if waited is None else float(waited)


async def _finished_at(conn: asyncpg.Connection, workflow_id: str) -> datetime | None:
    finished: datetime | None = await conn.fetchval(
        "SELECT finished_at FROM runs WHERE workflow_id = $1", workflow_id
    )
    return finished


async def _run_seconds(conn: asyncpg.Connection, workflow_id: str) -> float | None:
    """Request to last action: the run row's start to its finish stamp."""
    took = await conn.fetchval(
        "SELECT EXTRACT(EPOCH FROM finished_at - started_at)::float8 FROM runs"
        " WHERE workflow_id = $1",
        workflow_id,
    )
    return None if took is None else float(took)
