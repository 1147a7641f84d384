"""Planning: make the plan, have policy decide it, replan after a failure, load windows."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.run import stubs
from workflows.run.failures import StepStop, failure_reasons, planner_spend
from workflows.run.opening import RunOpening

with workflow.unsafe.imports_passed_through():
    from stead.contracts.activities import (
        DecidedPlanInput,
        PlanDecisionInput,
        PlanFailure,
        PlanInput,
        PlanWindowInput,
        RecalledMemory,
    )
    from stead.contracts.run import Decision, Plan, RunState, Step
    from stead.memory.contracts import RecallInput, RunSummaryInput


class RunPlanning(RunOpening):
    async def _make_plan(
        self, *, attempt: int, failure: str | None, detail: PlanFailure | None = None
    ) -> Plan | None:
        req = self._input_request()
        plan_input = PlanInput(
            request=req,
            workflow_id=self._ref.workflow_id,
            attempt=attempt,
            recalled=await self._recall(),
            failure_context=failure,
            completed_steps=self._run.succeeded_steps(),
            failure=detail,
            allow_stored=True,
        )
        decision: Decision | None = None
        try:
            decided = await stubs.create_decided_plan(
                DecidedPlanInput(plan=plan_input, run=self._ref)
            )
            plan, decision = decided.plan, decided.decision
        except ActivityError as err:
            tokens, usd = planner_spend(err)
            self._run.spend_planning(tokens, usd)
            self._run.plan_refused("plan_rejected", failure_reasons(err), plan=None)
            return None
        self._run.spend_planning(plan.planner.tokens, plan.planner.cost_usd)
        # Undecided (policy could not be asked in plan.create_decided): ask on its own,
        # so the retries and the policy_unavailable block are exactly the regular path's.
        if decision is None:
            decision = await self._decide_plan(plan)
        if decision.outcome != "allow":
            # A block (OPA could not be asked) is not a "no": the run failed, as it does
            # when a step is blocked, and can be run again once policy answers.
            status: RunState = "failed" if decision.blocked is not None else "denied"
            self._run.plan_refused(status, decision.reasons, plan=plan)
            return None
        return plan

    async def _recall(self) -> tuple[RecalledMemory, ...]:
        """Context for the LLM planner from memory. Playbooks need none; a memory outage
        plans without context rather than failing the run."""
        req = self._input_request()
        if req.goal is None:
            return ()
        try:
            recalled = await stubs.recall(
                RecallInput(
                    tenant=req.tenant,
                    principal=req.principal,
                    query=req.goal,
                    workflow_id=self._ref.workflow_id,
                )
            )
        except ActivityError:
            return ()
        return tuple(recalled)

    async def _remember_summary(self) -> None:
        """The run's outcome, remembered with provenance; best effort after the record."""
        req = self._input_request()
        plan = self._run.plan
        try:
            await stubs.remember_run_summary(
                RunSummaryInput(
                    tenant=req.tenant,
                    principal=req.principal,
                    workflow_id=self._ref.workflow_id,
                    run_id=workflow.info().run_id,
                    status=self._run.status,
                    goal=req.goal,
                    playbook=req.playbook,
                    steps=self._run.summary_steps(),
                    reasons=self._run.reasons,
                    planner_model=plan.planner.model if plan else None,
                    prompt_hash=plan.planner.prompt_hash if plan else None,
                    plan_hash=plan.plan_hash if plan else None,
                ),
                local=self._fewer_actions,
            )
        except ActivityError:
            return

    async def _decide_plan(self, plan: Plan) -> Decision:
        req = self._input_request()
        try:
            return await stubs.decide_plan(
                PlanDecisionInput(
                    tenant=req.tenant,
                    principal=req.principal,
                    run=self._ref,
                    plan=plan,
                    budget=req.budget,
                )
            )
        except ActivityError as err:
            return await self._blocked_decision(None, err)

    async def _blocked_decision(self, step_id: str | None, err: ActivityError) -> Decision:
        """OPA could not be asked: the decision is a block with the reason, and it is audited."""
        reasons = failure_reasons(err)
        decision = Decision(
            decision_id=f"blocked-{workflow.uuid4().hex}",
            outcome="deny",
            reasons=("policy_unavailable", *reasons),
            blocked="policy_unavailable",
        )
        await self._audit(
            "policy_blocked", "system:stead", step_id, {"reasons": list(decision.reasons)}
        )
        return decision

    async def _load_window(self) -> bool:
        """Read this run's window of a stored plan; False (run failed, with the reason)
        if it cannot be read."""
        plan = self._run.plan
        assert plan is not None and plan.stored is not None
        req = self._input_request()
        try:
            window = await stubs.load_window(
                PlanWindowInput(
                    tenant=req.tenant,
                    plan=plan,
                    start=plan.stored.window_start,
                    size=req.options.continue_as_new_after_steps,
                )
            )
        except ActivityError as err:
            reason = f"steps from {plan.stored.window_start} of stored plan {plan.plan_hash} "
            self._set_status(
                "failed", (reason + "could not be loaded: " + "; ".join(failure_reasons(err)),)
            )
            return False
        self._run.plan = window
        return True

    async def _after_failure(self, step: Step, stop: StepStop) -> None:
        """``on_failure`` decides: abort the run, skip the step, or replan (bounded)."""
        req = self._input_request()
        if stop.state == "denied":
            self._set_status("denied", (f"step {step.id}: {stop.reason}",))
            return
        if stop.state == "cancelled":
            return
        if step.on_failure == "skip":
            return
        if step.on_failure == "replan" and self._run.replans < req.options.max_replans:
            await self._replan(step, stop)
            return
        self._set_status("failed", (f"step {step.id} {stop.state}: {stop.reason}",))

    async def _replan(self, step: Step, stop: StepStop) -> None:
        self._run.replans += 1
        failure = f"step {step.id} ({step.operation}) {stop.state}: {stop.reason}"
        # The same facts as fields (data in the activity input, not a new command).
        rejection = next((v for v in self._votes.get(step.id, ()) if v.verdict == "reject"), None)
        detail = PlanFailure(
            step_id=step.id,
            operation=step.operation,
            state=stop.state,
            reason=stop.reason,
            approver=rejection.approver if rejection else None,
            comment=rejection.comment if rejection else "",
        )
        new_plan = await self._make_plan(
            attempt=self._run.replans + 1, failure=failure, detail=detail
        )
        if new_plan is None:
            return
        self._replaced.update(self._run.replanned(new_plan))
        self._set_status("running")
