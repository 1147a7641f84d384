"""The planning activity: a playbook or the LLM turns a run request into a validated plan.

A plan that cannot be made (unknown playbook, bad input, unknown operation, a cycle,
an LLM that keeps answering nonsense) fails with a non-retryable ``PlanRejected``
whose details carry the reasons; provider hiccups stay retryable so Temporal can
wait them out.
"""

from __future__ import annotations

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.policy import PolicyActivities
from stead.contracts import activity_names as names
from stead.contracts.activities import (
    PLAN_REJECTED,
    DecidedPlan,
    DecidedPlanInput,
    PlanDecisionInput,
    PlanInput,
    PlanWindowInput,
)
from stead.contracts.run import Plan, PlannerInfo, Step, StepExecution, StoredPlan
from stead.db.pool import tenant_transaction
from stead.observability.metrics import observe_planner
from stead.operations.catalog import Catalog
from stead.planning.llm import LlmPlanner
from stead.planning.playbooks import expand, expand_replan, failure_of
from stead.planning.preflight import request_playbook
from stead.planning.validate import PlanRejected, build_plan, validate_plan
from stead.runs.plans import (
    PlanNotStored,
    execution_order,
    load_window,
    outputs_needed_after,
    referenced_outputs,
    store_plan,
    stored_plan_hash,
)
from stead.runs.scope import ScopeClaim, tenant_scoped
from stead.settings import Settings

PLAN_NOT_STORED = "PlanNotStored"


class PlanningActivities:
    """Holds the catalog and settings the planners need; one instance per worker.

    ``pool`` is where plans too large for history are stored; without one (unit tests
    of the planners) such a plan is rejected rather than sent whole. ``policy`` decides
    plans for ``plan.create_decided``; a worker without it cannot plan a run.
    """

    def __init__(
        self,
        catalog: Catalog,
        settings: Settings,
        pool: asyncpg.Pool | None = None,
        policy: PolicyActivities | None = None,
    ) -> None:
        self._catalog = catalog
        self._settings = settings
        self._pool = pool
        self._policy = policy
        self._llm = LlmPlanner(catalog, settings)

    async def create_plan(self, req: PlanInput) -> Plan:
        """The planning half of ``plan.create_decided``, which checks this input's tenant
        scope before calling it; the planner tests call it directly."""
        plan_id = f"{req.workflow_id}/plan-{req.attempt}"
        try:
            if req.request.goal is not None:
                plan = await self._llm.plan(req, plan_id)
                info = plan.planner
                observe_planner(req.request.tenant, info.model or "", info.tokens, info.cost_usd)
            else:
                plan = self._from_playbook(req, plan_id)
            return await self._stored_if_large(req, plan)
        except PlanRejected as exc:
            # The spend rides in the details, after the reasons, so the run counts it.
            spent = {"tokens": exc.tokens, "usd": exc.cost_usd}
            if exc.tokens or exc.cost_usd:
                model = self._settings.planner_model or ""
                observe_planner(req.request.tenant, model, exc.tokens, exc.cost_usd)
            raise ApplicationError(
                str(exc), exc.reasons, spent, type=PLAN_REJECTED, non_retryable=True
            ) from None

    @activity.defn(name=names.PLAN_CREATE_DECIDED)
    @tenant_scoped(
        lambda req: ScopeClaim(req.plan.request.tenant, (req.plan.workflow_id, req.run.workflow_id))
    )
    async def create_decided(self, req: DecidedPlanInput) -> DecidedPlan:
        """``create_plan`` then ``policy.decide_plan``, in one activity task.

        Half the task round trips and history events of planning, with the same code:
        the decision is made, recorded, audited and counted by
        ``PolicyActivities.decide_plan`` exactly as when the workflow asks for it
        (a stored plan is read back by its hash, so policy sees the whole plan). If
        policy cannot decide, the plan comes back undecided and the workflow asks
        ``policy.decide_plan`` itself, whose retries end in a ``policy_unavailable``
        block: failing closed stays the workflow's, and an OPA outage never makes
        Temporal retry (and an LLM re-plan) the planning.
        """
        if self._policy is None:
            raise ApplicationError(
                "this worker cannot decide plans (no policy client)",
                type="PlanNotDecided",
                non_retryable=True,
            )
        plan = await self.create_plan(req.plan)
        request = req.plan.request
        try:
            decision = await self._policy.decide_plan(
                PlanDecisionInput(
                    tenant=request.tenant,
                    principal=request.principal,
                    run=req.run,
                    plan=plan,
                    budget=request.budget,
                )
            )
        except Exception as exc:  # any failure to decide: the workflow decides on its own
            why = exc.message if isinstance(exc, ApplicationError) else repr(exc)
            activity.logger.warning("plan %s left undecided: %s", plan.plan_id, why)
            return DecidedPlan(plan=plan, undecided=why)
        return DecidedPlan(plan=plan, decision=decision)

    @activity.defn(name=names.PLAN_WINDOW)
    @tenant_scoped(lambda req: ScopeClaim(req.tenant))
    async def plan_window(self, req: PlanWindowInput) -> Plan:
        """The next window of a stored plan, read from Postgres (the plan never re-enters
        history whole). A plan that is gone fails the run: nothing else could run it."""
        if req.plan.stored is None or self._pool is None:
            raise ApplicationError(
                "this worker cannot load windows of stored plans (no plan store)",
                type=PLAN_NOT_STORED,
                non_retryable=True,
            )
        try:
            async with tenant_transaction(self._pool, req.tenant) as conn:
                window = await load_window(
                    conn,
                    tenant=req.tenant,
                    plan_hash=req.plan.plan_hash,
                    start=req.start,
                    size=req.size,
                )
        except PlanNotStored as exc:
            raise ApplicationError(exc.message, type=PLAN_NOT_STORED, non_retryable=True) from None
        if not window.steps:
            raise ApplicationError(
                f"plan {req.plan.plan_hash} has {window.total_steps} steps; "
                f"there is no window at step {req.start}",
                type=PLAN_NOT_STORED,
                non_retryable=True,
            )
        return req.plan.model_copy(
            update={
                "steps": window.steps,
                "execution": window.execution,
                "stored": StoredPlan(
                    total_steps=window.total_steps,
                    window_start=req.start,
                    keep_outputs=window.keep_outputs,
                ),
            }
        )

    async def _stored_if_large(self, req: PlanInput, plan: Plan) -> Plan:
        """A plan over ``plan_inline_max_steps`` goes to Postgres; history gets its first window.

        Smaller plans, replans, and every plan of a workflow that predates stored plans
        come back whole exactly as before. The stored plan is hashed over what is stored, so the
        hash approvers see names the whole plan, not the window.
        """
        limit = self._settings.plan_inline_max_steps
        # A replan merges into the run's inline plan; stored plans never replan (below).
        if not req.allow_stored or req.attempt > 1 or len(plan.steps) <= limit:
            return plan
        replanning = [s.id for s in plan.steps if s.on_failure == "replan"]
        if replanning:
            raise PlanRejected(
                [
                    f"step {sid!r} uses on_failure: replan, which plans over {limit} steps "
                    "(stored by reference and run window by window) do not support; "
                    "use skip or abort, or split the playbook"
                    for sid in replanning[:5]
                ],
                summary=f"a {len(plan.steps)}-step plan cannot replan",
            )
        if self._pool is None:
            raise PlanRejected(
                [f"the plan has {len(plan.steps)} steps and this worker has no plan store"]
            )
        steps = execution_order(plan.steps)
        plan_hash = stored_plan_hash(steps, plan.execution)
        async with tenant_transaction(self._pool, req.request.tenant) as conn:
            await store_plan(
                conn,
                tenant=req.request.tenant,
                plan_hash=plan_hash,
                steps=steps,
                execution=plan.execution,
            )
        size = req.request.options.continue_as_new_after_steps
        return _first_window(plan, plan_hash, steps, size)

    def _from_playbook(self, req: PlanInput, plan_id: str) -> Plan:
        """Expand the playbook and validate it like any other plan.

        On a replan only the steps that have not completed are planned again, so a
        deterministic playbook retries the rest of its work instead of redoing it; a
        rejected step's ``on_reject`` block adds the redo steps with the reviewer's
        comment (``expand_replan``).
        """
        playbook = request_playbook(req.request, self._settings)
        if req.attempt > 1:
            steps = expand_replan(
                playbook,
                req.request.inputs,
                attempt=req.attempt,
                failure=failure_of(req.failure),
                completed=req.completed_steps,
            )
        else:
            steps = [
                s for s in expand(playbook, req.request.inputs) if s.id not in req.completed_steps
            ]
        reasons = validate_plan(
            steps, self._catalog, req.request.budget, completed=req.completed_steps
        )
        if reasons:
            raise PlanRejected(reasons, summary=f"playbook {playbook.name!r} gives an invalid plan")
        info = PlannerInfo(kind="playbook", playbook=playbook.name)
        return build_plan(steps, self._catalog, info, playbook.description, plan_id)


def _first_window(plan: Plan, plan_hash: str, steps: list[Step], size: int) -> Plan:
    window = tuple(steps[:size])
    execution: dict[str, StepExecution] = {s.id: plan.execution[s.id] for s in window}
    return plan.model_copy(
        update={
            "plan_hash": plan_hash,
            "steps": window,
            "execution": execution,
            "stored": StoredPlan(
                total_steps=len(steps),
                keep_outputs=outputs_needed_after(referenced_outputs(steps), len(window)),
            ),
        }
    )
