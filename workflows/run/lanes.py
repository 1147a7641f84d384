"""The step lanes: express (low-risk reads, one local activity), fused (decide and
execute in one activity task) and governed (decide, wait for approvals, decide again,
execute). Every lane is decided by policy; they differ only in round trips."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.run import stubs
from workflows.run.failures import (
    StepStop,
    blocked_reason,
    failure_reasons,
    failure_type,
)
from workflows.run.retry import execute_retry
from workflows.run.stopping import RunStopping

with workflow.unsafe.imports_passed_through():
    from stead.contracts.activities import (
        DecideStepInput,
        ExecuteStepInput,
        ExecuteStepOutput,
        ExpressStepInput,
        ExpressStepOutput,
    )
    from stead.contracts.run import Decision, Plan, Step, StepExecution
    from stead.planning.provenance import step_provenance
    from stead.planning.refs import RefError, resolve_refs


class RunLanes(RunStopping):
    async def _run_step(self, step: Step, plan: Plan) -> None:
        started = workflow.now()
        decision: Decision | None = None
        run = self._run
        try:
            resolved = self._resolve(step)
            execution = plan.execution.get(step.id, StepExecution())
            if self._express_eligible(execution):
                express = await self._express(resolved, execution, plan)
            else:
                express = await self._fused(step, resolved, execution, plan, started)
            if express is not None and express.executed and express.output is not None:
                decision, output = express.decision, express.output
            else:
                first = express.decision if express is not None else None
                decision = await self._governed(resolved, execution, plan, first)
                run.put_result(step, "running", decision=decision, started_at=started)
                output = await self._execute(resolved, execution, plan, decision)
            run.step_output(step.id, output)
            run.put_result(
                step,
                "succeeded",
                decision=decision,
                output=output.output,
                started_at=started,
                finished=True,
            )
        except StepStop as stop:
            run.put_result(
                step,
                stop.state,
                decision=stop.decision or decision,
                error=stop.reason,
                started_at=started,
                finished=True,
            )
            await self._after_failure(step, stop)
        except asyncio.CancelledError:
            run.put_result(
                step,
                "cancelled",
                decision=decision,
                error="cancelled",
                started_at=started,
                finished=True,
            )

    def _resolve(self, step: Step) -> Step:
        try:
            args = resolve_refs(step.args, self._run.outputs)
        except RefError as err:
            raise StepStop("failed", f"cannot resolve arguments: {err}") from None
        return step.model_copy(update={"args": args})

    def _decide_input(self, step: Step, execution: StepExecution, plan: Plan) -> DecideStepInput:
        req = self._input_request()
        return DecideStepInput(
            tenant=req.tenant,
            principal=req.principal,
            run=self._ref,
            plan_hash=plan.plan_hash,
            step=step,
            execution=execution,
            budget=req.budget,
            spent=self._run.spent,
            approvals=tuple(self._votes.get(step.id, ())),
            provenance=step_provenance(plan, step.id),
        )

    def _express_input(self, step: Step, execution: StepExecution, plan: Plan) -> ExpressStepInput:
        return ExpressStepInput(
            decide=self._decide_input(step, execution, plan),
            idempotency_key=f"{self._ref.workflow_id}/{step.id}",
        )

    # -------------------------------------------------------------------- express

    def _express_eligible(self, execution: StepExecution) -> bool:
        req = self._input_request()
        return (
            req.options.express_reads
            and execution.side_effect == "read"
            and execution.risk == "low"
            and execution.task_queue is None
        )

    async def _express(
        self, step: Step, execution: StepExecution, plan: Plan
    ) -> ExpressStepOutput | None:
        """Low-risk reads skip two round trips through the task queue, not the governance:
        the local activity asks OPA, records the decision, and executes through the ledger
        only on an immediate allow. Anything else falls back to the governed lane."""
        try:
            return await stubs.express_step(
                self._express_input(step, execution, plan),
                timeout=timedelta(seconds=execution.timeout_seconds),
            )
        except ActivityError:
            return None  # the governed lane decides again and blocks or fails with a reason

    # ---------------------------------------------------------------------- fused

    async def _fused(
        self,
        step: Step,
        resolved: Step,
        execution: StepExecution,
        plan: Plan,
        started: datetime,
    ) -> ExpressStepOutput | None:
        """Decide and, on an immediate allow, execute in one activity task (``step.run``).

        Half the task round trips of decide-then-execute for every step on this run's
        own queue (routed steps keep the governed lane: their adapter runs on an edge
        worker). Returns None where the governed lane must decide: for routed steps,
        and when OPA could not be asked (the
        governed lane retries the decision, then blocks the step). A failure after the
        decision fails the step like ``adapter.execute`` failing; the decision is in
        the decision log and audit, not in the step's result.
        """
        own_queue = workflow.info().task_queue
        if execution.task_queue not in (None, own_queue):
            return None
        self._run.put_result(step, "running", started_at=started)
        try:
            return await stubs.run_step(
                self._express_input(resolved, execution, plan),
                # The decision (OPA answers in ~1 ms, fails over in 1.5 s) plus the adapter.
                timeout=timedelta(seconds=execution.timeout_seconds + 10),
                retry=execute_retry(execution),
            )
        except ActivityError as err:
            if failure_type(err) == "PolicyUnavailable":
                return None
            raise StepStop("failed", "; ".join(failure_reasons(err))) from None

    # ------------------------------------------------------------------- governed

    async def _governed(
        self, step: Step, execution: StepExecution, plan: Plan, first: Decision | None = None
    ) -> Decision:
        """Ask OPA; while it says "approve", wait for humans and ask again with their votes."""
        escalated = False
        while True:
            decision = first or await self._decide_step(step, execution, plan)
            first = None
            if decision.blocked is not None:
                raise StepStop("blocked", blocked_reason(decision), decision)
            if decision.outcome == "allow":
                return decision
            if decision.outcome == "deny":
                raise StepStop("denied", "; ".join(decision.reasons), decision)
            escalated = await self._await_approval(step, plan, decision, escalated)
            # A human "no" ends the step here; a "yes" is only counted by asking policy again.
            rejection = self._rejection(step.id)
            if rejection is not None:
                raise StepStop("rejected", rejection, decision)

    async def _decide_step(self, step: Step, execution: StepExecution, plan: Plan) -> Decision:
        try:
            return await stubs.decide_step(self._decide_input(step, execution, plan))
        except ActivityError as err:
            return await self._blocked_decision(step.id, err)

    async def _execute(
        self, step: Step, execution: StepExecution, plan: Plan, decision: Decision
    ) -> ExecuteStepOutput:
        req = self._input_request()
        execute = ExecuteStepInput(
            tenant=req.tenant,
            principal=req.principal,
            run=self._ref,
            plan_hash=plan.plan_hash,
            step=step,
            decision_id=decision.decision_id,
            idempotency_key=f"{self._ref.workflow_id}/{step.id}",
        )
        queue = execution.task_queue or workflow.info().task_queue
        try:
            if queue != workflow.info().task_queue:
                # An edge worker holds only the public key: the authority (on this queue)
                # mints its token ahead and keeps it in Postgres; history sees only the id.
                grant = await stubs.issue_capability(execute)
                execute = execute.model_copy(update={"capability_grant": grant.token_id})
            return await stubs.execute_step(
                execute,
                task_queue=queue,
                timeout=timedelta(seconds=execution.timeout_seconds),
                retry=execute_retry(execution),
            )
        except ActivityError as err:
            raise StepStop("failed", "; ".join(failure_reasons(err)), decision) from None
