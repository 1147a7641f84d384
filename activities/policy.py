"""Asking OPA before a plan and before every step, and recording what it said.

Fail closed: OPA unreachable raises a retryable error (Temporal retries a few times,
then the workflow blocks the step); an undefined or malformed answer is recorded as
a ``policy_undefined`` block at once. Each decision is stored with its id and the
policy revision, and appended to the audit log in the same transaction.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from stead.audit.log import AuditEvent, append_event
from stead.contracts import activity_names as names
from stead.contracts.activities import DecideStepInput, PlanDecisionInput, StepProvenance
from stead.contracts.run import ApprovalPolicy, Decision, sha256_hex
from stead.db.pool import tenant_transaction
from stead.egress import DestinationError
from stead.observability.metrics import observe_decision
from stead.operations.catalog import Catalog, InvalidArguments, UnknownOperation
from stead.planning.refs import find_refs
from stead.policy.opa import OpaClient, PolicyUnavailable, PolicyUndefined
from stead.runs.plans import PlanNotStored, load_steps
from stead.runs.scope import ScopeClaim, tenant_scoped
from stead.runs.store import DecisionKind, group_members, record_decision
from stead.slo.spend import tenant_spend_this_month


class PolicyActivities:
    def __init__(self, opa: OpaClient, pool: asyncpg.Pool, catalog: Catalog) -> None:
        self._opa = opa
        self._pool = pool
        self._catalog = catalog

    @activity.defn(name=names.POLICY_DECIDE_PLAN)
    @tenant_scoped(lambda req: ScopeClaim(req.tenant, (req.run.workflow_id,)))
    async def decide_plan(self, req: PlanDecisionInput) -> Decision:
        """Policy decides the whole plan: a stored plan (history holds one window of it)
        is read back by its hash first; if it cannot be read, no decision is made."""
        plan = req.plan
        if plan.stored is not None:
            try:
                async with tenant_transaction(self._pool, req.tenant) as conn:
                    steps = await load_steps(conn, tenant=req.tenant, plan_hash=plan.plan_hash)
            except PlanNotStored as exc:
                raise ApplicationError(
                    exc.message, type="PlanNotStored", non_retryable=True
                ) from None
            plan = plan.model_copy(update={"steps": steps})
        operations = {
            step.operation: self._operation_meta(step.operation)
            for step in plan.steps
            if step.operation in self._catalog
        }
        opa_input: dict[str, Any] = {
            "tenant": req.tenant,
            "principal": req.principal,
            "run": req.run.model_dump(mode="json"),
            "plan": plan.model_dump(
                mode="json", include={"plan_id", "plan_hash", "steps", "planner"}
            ),
            "budget": req.budget.model_dump(mode="json"),
            "tenant_spent": await self._tenant_spent(req.tenant, req.run.workflow_id),
            "operations": operations,
        }
        started = time.perf_counter()
        try:
            result = await self._opa.decide_plan(opa_input)
        except PolicyUnavailable as exc:
            observe_decision(req.tenant, "plan", None, None, time.perf_counter() - started)
            raise ApplicationError(exc.message, type="PolicyUnavailable") from exc
        except PolicyUndefined as exc:
            decision = _undefined(exc)
        else:
            decision = Decision(
                decision_id=uuid.uuid4().hex,
                outcome=result.outcome,
                reasons=tuple(result.reasons),
                policy_revision=await self._opa.revision(),
            )
        eval_ms = (time.perf_counter() - started) * 1000
        await self._record(
            req.tenant,
            req.run.workflow_id,
            req.run.run_id,
            None,
            "plan",
            decision,
            opa_input,
            eval_ms,
        )
        observe_decision(req.tenant, "plan", None, decision, eval_ms / 1000)
        return decision

    @activity.defn(name=names.POLICY_DECIDE_STEP)
    @tenant_scoped(lambda req: ScopeClaim(req.tenant, (req.run.workflow_id,)))
    async def decide_step(self, req: DecideStepInput) -> Decision:
        async with tenant_transaction(self._pool, req.tenant) as conn:
            return await self.decide_step_in(conn, req)

    async def decide_step_in(self, conn: asyncpg.Connection, req: DecideStepInput) -> Decision:
        """Decide one step and record it on the caller's ``tenant_transaction``.

        The month-to-date spend read, OPA's answer, the approver expansion, the decision
        row and its audit event share one transaction (one BEGIN/COMMIT instead of
        three per decision); the caller commits, so ``step.run`` can go on to execute
        on the decision it just recorded. OPA is asked while the transaction is open
        but before the audit append takes the tenant's lock, so no lock waits on OPA.
        """
        made = await self.evaluate_step_in(conn, req)
        await made.record(conn)
        made.observe()
        return made.decision

    async def evaluate_step_in(
        self, conn: asyncpg.Connection, req: DecideStepInput
    ) -> MadeDecision:
        """Ask policy about one step, reading on the caller's transaction; nothing written.

        The caller records the result (``MadeDecision.record``) in that transaction, or,
        like the fused step (``activities/step.py``), writes the row, admits the effect on
        it and appends the audit event last, so the tenant's append lock is held only
        until the commit.
        """
        started = time.perf_counter()
        problem, egress = self._inspect(req)
        opa_input: dict[str, Any] = {
            "tenant": req.tenant,
            "principal": req.principal,
            "run": req.run.model_dump(mode="json"),
            "step": {
                "id": req.step.id,
                "operation": req.step.operation,
                "args": req.step.args,
                **egress,
                **provenance_input(req.provenance),
            },
            "operation": {"name": req.step.operation, **self._execution_meta(req)},
            "budget": req.budget.model_dump(mode="json"),
            "spent": req.spent.model_dump(mode="json"),
            "tenant_spent": await _spent_on(conn, req.tenant, req.run.workflow_id),
            "approvals": [{"approver": a.approver, "verdict": a.verdict} for a in req.approvals],
        }
        if problem is not None:
            # Bad input is refused before policy: it must never reach an adapter.
            decision = Decision(decision_id=uuid.uuid4().hex, outcome="deny", reasons=(problem,))
        else:
            try:
                result = await self._opa.decide_step(opa_input)
            except PolicyUnavailable as exc:
                elapsed = time.perf_counter() - started
                observe_decision(req.tenant, "step", req.step.operation, None, elapsed)
                raise ApplicationError(exc.message, type="PolicyUnavailable") from exc
            except PolicyUndefined as exc:
                decision = _undefined(exc)
            else:
                approval = None
                if result.approval is not None:
                    eligible = await _expand(conn, req.tenant, result.approval.approvers)
                    escalate = await _expand(conn, req.tenant, result.approval.escalate_to)
                    approval = ApprovalPolicy(
                        approvers=tuple(result.approval.approvers),
                        eligible=eligible,
                        min_approvals=result.approval.min_approvals,
                        timeout_seconds=result.approval.timeout_seconds,
                        on_timeout=result.approval.on_timeout,
                        escalate_to=tuple(result.approval.escalate_to),
                        escalate_eligible=escalate,
                        allow_self_approval=result.approval.allow_self_approval,
                    )
                decision = Decision(
                    decision_id=uuid.uuid4().hex,
                    outcome=result.outcome,
                    reasons=tuple(result.reasons),
                    approval=approval,
                    policy_revision=await self._opa.revision(),
                )
        return MadeDecision(
            tenant=req.tenant,
            workflow_id=req.run.workflow_id,
            run_id=req.run.run_id,
            step_id=req.step.id,
            kind="step",
            decision=decision,
            opa_input=opa_input,
            eval_ms=(time.perf_counter() - started) * 1000,
            operation=req.step.operation,
        )

    async def _tenant_spent(self, tenant: str, workflow_id: str) -> dict[str, Any]:
        """The tenant's month-to-date spend for its budget rules, read fresh for each decision."""
        async with tenant_transaction(self._pool, tenant) as conn:
            return await _spent_on(conn, tenant, workflow_id)

    def _inspect(self, req: DecideStepInput) -> tuple[str | None, dict[str, Any]]:
        """A reason to refuse the step before policy, and what it sends where.

        The operation computes its destinations from the validated arguments here, on
        the worker (never from the plan or the workflow), and the ``secret://``
        references it will resolve; both go into ``input.step``. An operation that
        reaches outside but whose destination cannot be stated is refused.
        """
        try:
            op = self._catalog.get(req.step.operation)
            if find_refs(req.step.args):
                # Unresolved arguments say nothing about where they go.
                if op.destinations is not None:
                    return (
                        f"{req.step.operation}: its destination cannot be stated from "
                        "unresolved $ref arguments; policy decides resolved arguments only",
                        {},
                    )
                return None, {}
            args = self._catalog.parse_args(req.step.operation, req.step.args)
            destinations, secrets = op.egress(req.tenant, args, req.step.args)
        except (UnknownOperation, InvalidArguments) as exc:
            return str(exc), {}
        except DestinationError as exc:
            return f"destination_unknown: {exc}", {}
        egress: dict[str, Any] = {"secrets": secrets}
        if op.destinations is not None:
            egress["destinations"] = [d.as_policy_input() for d in destinations]
        if op.step_facts is not None:
            egress.update(op.step_facts(req.tenant))
        return None, egress

    def _operation_meta(self, name: str) -> dict[str, Any]:
        op = self._catalog.get(name)
        return {"side_effect": op.side_effect, "risk": op.risk, "scopes": list(op.scopes)}

    def _execution_meta(self, req: DecideStepInput) -> dict[str, Any]:
        """Risk and side effect come from the worker's catalog, never from the plan."""
        if req.step.operation in self._catalog:
            return self._operation_meta(req.step.operation)
        return {"side_effect": "external", "risk": "high", "scopes": []}

    async def _record(
        self,
        tenant: str,
        workflow_id: str,
        run_id: str,
        step_id: str | None,
        kind: DecisionKind,
        decision: Decision,
        opa_input: dict[str, Any],
        eval_ms: float,
    ) -> None:
        async with tenant_transaction(self._pool, tenant) as conn:
            await _record_on(
                conn, tenant, workflow_id, run_id, step_id, kind, decision, opa_input, eval_ms
            )


def provenance_input(provenance: StepProvenance | None) -> dict[str, Any]:
    """``input.step.provenance`` and ``input.step.tainted``; none given is ``unknown``."""
    if provenance is None:
        return {"provenance": None, "tainted": ["unknown"]}
    return {
        "provenance": provenance.model_dump(mode="json"),
        "tainted": list(provenance.tainted),
    }


async def _spent_on(conn: asyncpg.Connection, tenant: str, workflow_id: str) -> dict[str, Any]:
    """The tenant's month-to-date spend for its budget rules, read fresh for each decision."""
    spend = await tenant_spend_this_month(conn, tenant, exclude_workflow_id=workflow_id)
    return spend.model_dump(mode="json")


async def _record_on(
    conn: asyncpg.Connection,
    tenant: str,
    workflow_id: str,
    run_id: str,
    step_id: str | None,
    kind: DecisionKind,
    decision: Decision,
    opa_input: dict[str, Any],
    eval_ms: float,
) -> None:
    """The decision row and its audit event, on the caller's transaction."""
    await MadeDecision(
        tenant=tenant,
        workflow_id=workflow_id,
        run_id=run_id,
        step_id=step_id,
        kind=kind,
        decision=decision,
        opa_input=opa_input,
        eval_ms=eval_ms,
    ).record(conn)


@dataclass(frozen=True)
class MadeDecision:
    """A decision policy made, not yet recorded, with what its row and audit event need.

    ``record`` writes both on the caller's transaction; the fused step writes the row
    first (the capability authority reads it back before it mints), admits the effect
    and appends the event last, and if that transaction rolls back it records the
    decision again in one of its own (``record_row`` is idempotent per decision id).
    """

    tenant: str
    workflow_id: str
    run_id: str
    step_id: str | None
    kind: DecisionKind
    decision: Decision
    opa_input: dict[str, Any]
    eval_ms: float
    operation: str | None = None

    @property
    def allows_now(self) -> bool:
        """An immediate allow: the step may execute on it without anyone's approval."""
        return self.decision.outcome == "allow" and self.decision.blocked is None

    async def record(self, conn: asyncpg.Connection) -> None:
        await self.record_row(conn)
        await self.append_event(conn)

    async def record_row(self, conn: asyncpg.Connection) -> bool:
        """The decision row; False when it was already stored (a retried transaction)."""
        return await record_decision(
            conn,
            tenant=self.tenant,
            workflow_id=self.workflow_id,
            step_id=self.step_id,
            kind=self.kind,
            decision=self.decision,
            input_hash=sha256_hex(self.opa_input),
            eval_ms=self.eval_ms,
        )

    async def append_event(self, conn: asyncpg.Connection) -> None:
        decision = self.decision
        await append_event(
            conn,
            AuditEvent(
                tenant=self.tenant,
                workflow_id=self.workflow_id,
                run_id=self.run_id,
                step_id=self.step_id,
                kind=f"{self.kind}_decision",
                actor="system:opa",
                data={
                    "decision_id": decision.decision_id,
                    "outcome": decision.outcome,
                    "reasons": list(decision.reasons),
                    "blocked": decision.blocked,
                    "policy_revision": decision.policy_revision,
                    # What was decided: the audit names the plan, not only the outcome.
                    **_plan_hash(self.kind, self.opa_input),
                },
            ),
        )

    def observe(self) -> None:
        """The decision's metrics, once it is recorded."""
        observe_decision(self.tenant, self.kind, self.operation, self.decision, self.eval_ms / 1000)


def _plan_hash(kind: DecisionKind, opa_input: dict[str, Any]) -> dict[str, object]:
    plan = opa_input.get("plan")
    if kind != "plan" or not isinstance(plan, dict):
        return {}
    return {"plan_hash": plan.get("plan_hash")}


def _undefined(exc: PolicyUndefined) -> Decision:
    return Decision(
        decision_id=uuid.uuid4().hex,
        outcome="deny",
        reasons=("policy_undefined", str(exc)),
        blocked="policy_undefined",
    )


async def _expand(conn: asyncpg.Connection, tenant: str, names: Sequence[str]) -> tuple[str, ...]:
    """``group:x`` becomes its members (from the directory); principals stay themselves."""
    groups = [n for n in names if n.startswith("group:")]
    members = await group_members(conn, tenant, groups) if groups else {}
    expanded: list[str] = []
    for name in names:
        expanded.extend(members.get(name, []) if name.startswith("group:") else [name])
    return tuple(_unique(expanded))


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)
