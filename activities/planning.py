"""The planning activity: a playbook or the LLM turns a run request into a validated plan.

A plan that cannot be made (unknown playbook, bad input, unknown operation, a cycle,
an LLM that keeps answering nonsense) fails with a non-retryable ``PlanRejected``
whose details carry the reasons; provider hiccups stay retryable so Temporal can
wait them out.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from adapters.catalog import Catalog
from stead.contracts.activities import PLAN_REJECTED, PlanInput
from stead.contracts.run import Plan, PlannerInfo, RunRequest
from stead.errors import ConfigError
from stead.observability.metrics import observe_planner
from stead.planning.llm import NO_PLANNER_MODEL, LlmPlanner
from stead.planning.playbooks import (
    Playbook,
    expand,
    expand_replan,
    failure_of,
    load_playbook,
    parse_playbook,
)
from stead.planning.validate import PlanRejected, build_plan, validate_plan
from stead.settings import Settings

INLINE_ORIGIN = "--playbook-file"


class PlanningActivities:
    """Holds the catalog and settings the planners need; one instance per worker."""

    def __init__(self, catalog: Catalog, settings: Settings) -> None:
        self._catalog = catalog
        self._settings = settings
        self._llm = LlmPlanner(catalog, settings)

    @activity.defn(name="plan.create")
    async def create_plan(self, req: PlanInput) -> Plan:
        plan_id = f"{req.workflow_id}/plan-{req.attempt}"
        try:
            if req.request.goal is not None:
                plan = await self._llm.plan(req, plan_id)
                info = plan.planner
                observe_planner(req.request.tenant, info.model or "", info.tokens, info.cost_usd)
                return plan
            return self._from_playbook(req, plan_id)
        except PlanRejected as exc:
            raise ApplicationError(
                str(exc), exc.reasons, type=PLAN_REJECTED, non_retryable=True
            ) from None

    def _from_playbook(self, req: PlanInput, plan_id: str) -> Plan:
        """Expand the playbook and validate it like any other plan.

        On a replan only the steps that have not completed are planned again, so a
        deterministic playbook retries the rest of its work instead of redoing it; a
        rejected step's ``on_reject`` block adds the redo steps with the reviewer's
        comment (``expand_replan``).
        """
        playbook = _playbook(req.request, self._settings)
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


def preflight(request: RunRequest, settings: Settings) -> None:
    """Catch what would only fail inside the run, before a workflow is started.

    Checks that a goal has a planner model, and that a playbook exists, parses and
    accepts the given inputs. The catalog checks happen in the activity, on the worker
    that knows the adapters.
    """
    if request.goal is not None:
        if settings.planner_model is None:
            raise ConfigError(NO_PLANNER_MODEL)
        return
    try:
        expand(_playbook(request, settings), request.inputs)
    except PlanRejected as exc:
        raise ConfigError(str(exc)) from None


def _playbook(request: RunRequest, settings: Settings) -> Playbook:
    if request.playbook is not None:
        return load_playbook(request.playbook, settings.playbook_dir)
    if request.playbook_source is not None:
        return parse_playbook(request.playbook_source, INLINE_ORIGIN)
    raise PlanRejected(["the request names neither a goal nor a playbook"])
