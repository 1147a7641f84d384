"""The governed run: plan → plan decision → for each step: decide → (approve) → execute.

Deterministic: no I/O, clocks or randomness here; every fact about the world comes
from an activity result recorded in history. State lives in one ``RunCarry`` so
continue-as-new passes it whole. Policy is the only authority: after a human
approves, the step is decided *again* with the approval in OPA's input, so the
approval counts only if policy says it is enough.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.approval_input import Received, burnable, history_problem, receive
from workflows.cancel_input import ReceivedCancel, receive_cancel

with workflow.unsafe.imports_passed_through():
    from pydantic import JsonValue

    from stead.approval_refusals import ValidatorRefusal, report
    from stead.contracts.activities import (
        NON_RETRYABLE_TYPES,
        PLAN_REJECTED,
        AuditInput,
        DecidedPlan,
        DecidedPlanInput,
        DecideStepInput,
        ExecuteStepInput,
        ExecuteStepOutput,
        ExpressStepInput,
        ExpressStepOutput,
        OpenRunInput,
        PlanDecisionInput,
        PlanFailure,
        PlanInput,
        PlanWindowInput,
        RecalledMemory,
        RunRecordInput,
        RunRef,
    )
    from stead.contracts.capability import CapabilityGrant
    from stead.contracts.continuation import SealCheck, SealInput, VerifySealInput
    from stead.contracts.identity import (
        AdmitRunInput,
        ApprovalCheck,
        BurnedToken,
        BurnTokenInput,
        RunAdmission,
        VerifyApprovalInput,
    )
    from stead.contracts.run import (
        TERMINAL_RUN_STATES,
        ApprovalInput,
        ApprovalRecord,
        Decision,
        PendingApproval,
        Plan,
        RunCarry,
        RunInput,
        RunRequest,
        RunState,
        RunStatus,
        SettledStep,
        SettledWindows,
        Spent,
        Step,
        StepExecution,
        StepResult,
        StepState,
        playbook_digest,
        start_digest,
    )
    from stead.memory.contracts import RecallInput, RunSummaryInput
    from stead.planning.provenance import step_provenance
    from stead.planning.refs import RefError, resolve_refs

_T = TypeVar("_T")
SA_TENANT = SearchAttributeKey.for_keyword("SteadTenant")
SA_STATUS = SearchAttributeKey.for_keyword("SteadStatus")
SA_PENDING = SearchAttributeKey.for_bool("SteadPendingApproval")
# Histories recorded before these checks existed replay without them (workflow.patched).
MEMORY_RECALL_PATCH = "memory-recall-before-planning"
MEMORY_SUMMARY_PATCH = "memory-remember-run-summary"
RUN_ADMISSION_PATCH = "identity-run-admission"
VERIFIED_APPROVALS_PATCH = "identity-verified-approvals"
CAPABILITY_GRANTS_PATCH = "capability-grants-for-routed-steps"
STORED_PLANS_PATCH = "plans-stored-by-reference"
FUSED_STEP_PATCH = "fused-decide-execute"
LOCAL_BOOKKEEPING_PATCH = "local-run-bookkeeping"
# Per-run fixed cost: the start record and admission in one local activity (runs.open),
# the plan and its decision in one activity, search attributes upserted only on change.
RUN_FIXED_COST_PATCH = "run-fixed-cost"
# Cancels are audited (``cancel_requested``); asked in the handler, so only runs that
# get a cancel pay for the marker.
CANCEL_AUDIT_PATCH = "cancel-attributed"

QUICK = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=10,
    non_retryable_error_types=list(NON_RETRYABLE_TYPES),
)
# Policy decisions retry a few times, then the step is blocked: fail closed, not forever.
POLICY_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=2),
    maximum_attempts=3,
    non_retryable_error_types=list(NON_RETRYABLE_TYPES),
)
PLAN_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=6,
    non_retryable_error_types=[*NON_RETRYABLE_TYPES, "PlannerUnusable"],
)
FAILED_STEP_STATES: frozenset[str] = frozenset({"failed", "denied", "rejected", "blocked"})
DONE_STEP_STATES: frozenset[str] = frozenset(
    {"succeeded", "skipped", *FAILED_STEP_STATES, "cancelled", "not_run"}
)


class StepStop(Exception):
    """A step ended without success; carries the state it ended in and why."""

    def __init__(self, state: StepState, reason: str, decision: Decision | None = None) -> None:
        super().__init__(reason)
        self.state = state
        self.reason = reason
        self.decision = decision


@workflow.defn(name="stead.run")
class RunWorkflow:
    @workflow.init
    def __init__(self, inp: RunInput) -> None:
        self._request = inp.request
        self._request_principal = inp.request.principal
        self._tenant = inp.request.tenant
        # Workflow input is not trusted: a carry counts only once its seal is verified
        # (``_continuation_refusal``); until then the run knows nothing.
        self._carry = RunCarry(status="planning")
        self._start_token = inp.start_token
        # A run refused at the door writes no memory; one refused because its workflow
        # id belongs to another chain (or whose state was forged) writes no run record.
        self._refused_at_door = False
        self._owns_record = True
        self._ref = RunRef(
            workflow_id=workflow.info().workflow_id,
            run_id=workflow.info().run_id,
            started_by=inp.request.principal,
        )
        self._pending: dict[str, PendingApproval] = {}
        self._pending_policy: dict[str, tuple[frozenset[str], bool]] = {}
        self._votes: dict[str, list[ApprovalRecord]] = {}
        self._cancel_requested = False
        # The first cancel received: who asked and why, for the run's reason and record.
        self._cancel: ReceivedCancel | None = None
        self._steps_this_run = 0
        # Results a replan dropped from the carry, for updates still answering about them.
        self._replaced: dict[str, StepResult] = {}
        # Stored plans: which window the caches below describe (see _earlier_state).
        self._window_key: tuple[str, int] | None = None
        self._window_ids: frozenset[str] = frozenset()
        self._settled_states: dict[str, str] = {}
        # The search-attribute values last upserted (see _upsert).
        self._sa_status: str | None = None
        self._sa_pending: bool | None = None

    # ---------------------------------------------------------------- entry

    @workflow.run
    async def run(self, inp: RunInput) -> RunStatus:
        request = inp.request
        # The run's one patch marker is its first command, before any activity: a marker
        # recorded after a local activity (the continuation check) in the first workflow
        # task can land in a different task than on replay (queries replay runs evicted
        # from the cache) and fail as nondeterminism.
        _lean()
        if inp.carry is None:
            self._upsert(tenant=request.tenant, status=self._carry.status, pending=False)
            refusal = await self._open_run()
            if refusal is not None:
                return await self._refused(refusal)
            plan = await self._make_plan(attempt=1, failure=None)
            if plan is None:
                return await self._finish()
            self._carry = self._carry.model_copy(update={"plan": plan, "status": "running"})
            self._set_status("running")
        else:
            refusal = await self._continuation_refusal(inp)
            if refusal is not None:
                self._upsert(tenant=request.tenant)
                self._owns_record = False
                await self._audit_refusal(refusal, continued=True)
                return await self._refused(refusal)
            self._carry = inp.carry
            self._upsert(tenant=request.tenant, status=self._carry.status, pending=False)
            if self._window_to_load() and not await self._load_window():
                return await self._finish()

        while await self._execute_plan() == "continue":
            await workflow.wait_condition(workflow.all_handlers_finished)
            carry = self._carry_forward().model_copy(
                update={"continued": self._carry.continued + 1}
            )
            seal = await self._seal(request, carry)
            if seal is None:
                return await self._finish()
            # A cancel that arrived while the seal was made is handled here, not lost.
            await workflow.wait_condition(workflow.all_handlers_finished)
            if self._cancel_requested:
                continue
            workflow.continue_as_new(RunInput(request=request, carry=carry, seal=seal))
        return await self._finish()

    async def _continuation_refusal(self, inp: RunInput) -> str | None:
        """Why this run's continuation state may not be used, or None.

        A carry is accepted only from a real continue-as-new of this chain (the server
        sets ``continued_run_id``; a client start cannot) and only with the seal the
        continuing run got from a worker for exactly that run id and that state.
        """
        assert inp.carry is not None
        continued = workflow.info().continued_run_id
        if continued is None:
            return (
                "continuation state was not sealed by this Stead's workers: a run carries "
                "state only when it continues as new from its own chain, and this one was "
                "started directly; start runs with `stead run`"
            )
        sealed = SealInput(
            workflow_id=self._ref.workflow_id,
            run_id=continued,
            request=inp.request,
            carry=inp.carry,
        )
        try:
            check = await _local_activity(
                "runs.verify_seal",
                VerifySealInput(sealed=sealed, seal=inp.seal),
                SealCheck,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=QUICK,
            )
        except ActivityError as err:
            return "continuation state could not be verified, so it is refused: " + "; ".join(
                _failure_reasons(err)
            )
        return None if check.valid else (check.reason or "continuation state was refused")

    async def _seal(self, request: RunRequest, carry: RunCarry) -> str | None:
        """The worker's seal over the next run's input; None (run failed) if none is given."""
        try:
            return await _local_activity(
                "runs.seal",
                SealInput(
                    workflow_id=self._ref.workflow_id,
                    run_id=workflow.info().run_id,
                    request=request,
                    carry=carry,
                ),
                str,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=QUICK,
            )
        except ActivityError as err:
            self._set_status(
                "failed",
                ("the run could not continue as new: " + "; ".join(_failure_reasons(err)),),
            )
            return None

    async def _refused(self, reason: str) -> RunStatus:
        """End a run refused before it did anything: denied, nothing planned or run."""
        self._refused_at_door = True
        self._set_status("denied", (reason,))
        return await self._finish()

    async def _audit_refusal(self, reason: str, **data: object) -> None:
        """``run_refused`` in the claimed tenant's audit log. If even that fails the run
        still ends denied: an audit outage never lets a refused run in."""
        with contextlib.suppress(ActivityError):
            await self._audit(
                "run_refused", self._request_principal, None, {"reason": reason, **data}
            )

    async def _open_run(self) -> str | None:
        """Record the run's start and admit its starter; why it may not run, or None.

        Since the run-fixed-cost patch both are one local activity (``runs.open``),
        which also verifies the start token and claims the workflow id for this run
        chain. If it fails the run is refused (a starter nobody could check runs
        nothing) and writes no record (it could be another run's). Histories from
        before the patch record, then admit, with two activities as they did.
        """
        if _lean():
            try:
                admission = await _local_activity(
                    "runs.open",
                    OpenRunInput(admit=self._admit_input(), record=self._record_input("planning")),
                    RunAdmission,
                    start_to_close_timeout=timedelta(seconds=10),
                    retry_policy=QUICK,
                )
            except ActivityError as err:
                # Fail closed: a starter nobody could check runs nothing, and a record
                # that may not exist (or be another run's) is not written.
                self._owns_record = False
                reason = "the run could not be admitted: " + "; ".join(_failure_reasons(err))
                await self._audit_refusal(reason)
                return reason
            if admission.id_taken:
                self._owns_record = False
            return await self._admission_refusal(admission)
        await self._record_run("planning")
        return await self._admit_run()

    def _admit_input(self) -> AdmitRunInput:
        req = self._input_request()
        return AdmitRunInput(
            tenant=req.tenant,
            principal=req.principal,
            workflow_id=self._ref.workflow_id,
            chain_id=workflow.info().first_execution_run_id,
            request_digest=start_digest(req),
            start_token=self._start_token,
        )

    async def _admit_run(self) -> str | None:
        """Why the starter may not start this run (per the tenant's directory), or None."""
        if not _since(RUN_ADMISSION_PATCH):
            return None
        req = self._input_request()
        try:
            admission = await self._bookkeeping(
                "identity.admit_run",
                self._admit_input(),
                result_type=RunAdmission,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=QUICK,
            )
        except ActivityError as err:
            # Fail closed: a starter nobody could check does not get to run anything.
            reason = "the directory could not confirm the starter: " + "; ".join(
                _failure_reasons(err)
            )
            await self._audit("run_refused", req.principal, None, {"reason": reason})
            return reason
        return await self._admission_refusal(admission)

    async def _admission_refusal(self, admission: RunAdmission) -> str | None:
        """Keep the run's approval policy; a refusal is audited and returned."""
        req = self._input_request()
        self._carry = self._carry.model_copy(
            update={"approval_authentication": admission.approval_authentication}
        )
        if admission.admitted:
            return None
        reason = admission.reason or f"{req.principal} may not start runs in {req.tenant}"
        await self._audit_refusal(reason)
        return reason

    # ------------------------------------------------------------ planning

    async def _make_plan(
        self, *, attempt: int, failure: str | None, detail: PlanFailure | None = None
    ) -> Plan | None:
        req = self._input_request()
        completed = tuple(sid for sid, r in self._carry.results.items() if r.status == "succeeded")
        # Histories from before stored plans replay with plans that always come back whole.
        allow_stored = _since(STORED_PLANS_PATCH)
        plan_input = PlanInput(
            request=req,
            workflow_id=self._ref.workflow_id,
            attempt=attempt,
            recalled=await self._recall(),
            failure_context=failure,
            completed_steps=completed,
            failure=detail,
            allow_stored=allow_stored,
        )
        decision: Decision | None = None
        try:
            if _lean():
                decided = await _activity(
                    "plan.create_decided",
                    DecidedPlanInput(plan=plan_input, run=self._ref),
                    result_type=DecidedPlan,
                    start_to_close_timeout=timedelta(minutes=5),
                    retry_policy=PLAN_RETRY,
                )
                plan, decision = decided.plan, decided.decision
            else:
                plan = await _activity(
                    "plan.create",
                    plan_input,
                    result_type=Plan,
                    start_to_close_timeout=timedelta(minutes=5),
                    retry_policy=PLAN_RETRY,
                )
        except ActivityError as err:
            tokens, usd = _planner_spend(err)
            self._carry = self._carry.model_copy(
                update={
                    "status": "plan_rejected",
                    "reasons": _failure_reasons(err),
                    "spent": self._spent_planning(tokens, usd),
                }
            )
            return None
        self._carry = self._carry.model_copy(
            update={"spent": self._spent_planning(plan.planner.tokens, plan.planner.cost_usd)}
        )
        # Undecided (policy could not be asked in plan.create_decided): ask on its own,
        # so the retries and the policy_unavailable block are exactly the regular path's.
        if decision is None:
            decision = await self._decide_plan(plan)
        if decision.outcome != "allow":
            # A block (OPA could not be asked) is not a "no": the run failed, as it does
            # when a step is blocked, and can be run again once policy answers.
            status: RunState = "failed" if decision.blocked is not None else "denied"
            self._carry = self._carry.model_copy(
                update={"status": status, "plan": plan, "reasons": decision.reasons}
            )
            return None
        return plan

    def _spent_planning(self, tokens: int, usd: float) -> Spent:
        spent = self._carry.spent
        return spent.model_copy(update={"tokens": spent.tokens + tokens, "usd": spent.usd + usd})

    async def _recall(self) -> tuple[RecalledMemory, ...]:
        """Context for the LLM planner from memory. Playbooks need none; a memory outage
        plans without context rather than failing the run."""
        req = self._input_request()
        if req.goal is None or not _since(MEMORY_RECALL_PATCH):
            return ()
        try:
            recalled = await _activity(
                "memory.recall",
                RecallInput(
                    tenant=req.tenant,
                    principal=req.principal,
                    query=req.goal,
                    workflow_id=self._ref.workflow_id,
                ),
                result_type=list[RecalledMemory],
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=QUICK,
            )
        except ActivityError:
            return ()
        return tuple(recalled)

    async def _remember_summary(self) -> None:
        """The run's outcome, remembered with provenance; best effort after the record."""
        if not _since(MEMORY_SUMMARY_PATCH):
            return
        req = self._input_request()
        plan = self._carry.plan
        try:
            # A regular activity even with local bookkeeping: embedding can queue behind
            # other runs' summaries, and a local activity would hold the workflow task open.
            await workflow.execute_activity(
                "memory.remember_run_summary",
                RunSummaryInput(
                    tenant=req.tenant,
                    principal=req.principal,
                    workflow_id=self._ref.workflow_id,
                    run_id=workflow.info().run_id,
                    status=self._carry.status,
                    goal=req.goal,
                    playbook=req.playbook,
                    steps=self._summary_steps(),
                    reasons=self._carry.reasons,
                    planner_model=plan.planner.model if plan else None,
                    prompt_hash=plan.planner.prompt_hash if plan else None,
                    plan_hash=plan.plan_hash if plan else None,
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=QUICK,
            )
        except ActivityError:
            return

    async def _decide_plan(self, plan: Plan) -> Decision:
        req = self._input_request()
        try:
            return await _activity(
                "policy.decide_plan",
                PlanDecisionInput(
                    tenant=req.tenant,
                    principal=req.principal,
                    run=self._ref,
                    plan=plan,
                    budget=req.budget,
                ),
                result_type=Decision,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=POLICY_RETRY,
            )
        except ActivityError as err:
            return await self._blocked_decision(None, err)

    # ----------------------------------------------------------- execution

    async def _execute_plan(self) -> str:
        """Run ready steps (bounded parallelism) until done, aborted, or time to continue-as-new."""
        req = self._input_request()
        running: dict[str, asyncio.Task[None]] = {}
        while True:
            plan = self._carry.plan
            assert plan is not None
            if self._cancel_requested and not running:
                why = self._cancel.summary() if self._cancel else "cancelled by request"
                self._cancel_remaining(why)
                self._carry = self._carry.model_copy(
                    update={"status": "cancelled", "reasons": (why,)}
                )
                return "done"
            if self._carry.status in TERMINAL_RUN_STATES and not running:
                return "done"
            stopping = self._cancel_requested or self._carry.status in TERMINAL_RUN_STATES
            if (
                not stopping
                and not running
                and self._should_continue_as_new(req.options.continue_as_new_after_steps)
            ):
                return "continue"
            if not stopping:
                self._skip_unreachable(plan)
                for step in self._ready_steps(plan):
                    # A started step stays "pending" until its first decision returns.
                    if step.id in running:
                        continue
                    if len(running) >= req.options.max_parallel:
                        break
                    if self._steps_this_run >= req.options.continue_as_new_after_steps:
                        break
                    self._steps_this_run += 1
                    running[step.id] = asyncio.create_task(self._run_step(step, plan))
            if not running:
                if all(self._state(s.id) in DONE_STEP_STATES for s in plan.steps):
                    if self._more_windows():
                        return "continue"
                    failed = [s.id for s in plan.steps if self._state(s.id) in FAILED_STEP_STATES]
                    if self._carry.status not in TERMINAL_RUN_STATES:
                        self._set_status(
                            "failed" if failed and self._aborting_failure(plan) else "completed"
                        )
                    return "done"
                if self._should_continue_as_new(req.options.continue_as_new_after_steps):
                    return "continue"
                # Nothing runnable and nothing running: only a cancel can change that.
                await workflow.wait_condition(lambda: self._cancel_requested)
                continue
            deadline = self._remaining_time(req.deadline)
            try:
                await workflow.wait_condition(
                    lambda: any(t.done() for t in running.values()) or self._cancel_requested,
                    timeout=deadline,
                )
            except TimeoutError:
                self._cancel_requested = True
                self._carry = self._carry.model_copy(update={"reasons": ("deadline passed",)})
                for task in running.values():
                    task.cancel()
                await asyncio.gather(*running.values(), return_exceptions=True)
                running.clear()
                self._cancel_remaining("deadline passed")
                self._carry = self._carry.model_copy(update={"status": "timed_out"})
                return "done"
            for sid in [sid for sid, t in running.items() if t.done()]:
                running.pop(sid).result()
            if self._cancel_requested:
                for task in running.values():
                    task.cancel()
                await asyncio.gather(*running.values(), return_exceptions=True)
                running.clear()

    def _ready_steps(self, plan: Plan) -> list[Step]:
        ready = []
        for step in plan.steps:
            if self._state(step.id) != "pending":
                continue
            if all(self._state(dep) == "succeeded" for dep in step.depends_on):
                ready.append(step)
        return ready

    def _skip_unreachable(self, plan: Plan) -> None:
        """A step whose dependency will never succeed is skipped, not left pending forever."""
        changed = True
        while changed:
            changed = False
            for step in plan.steps:
                if self._state(step.id) != "pending":
                    continue
                dead = [
                    d
                    for d in step.depends_on
                    if self._state(d) in DONE_STEP_STATES and self._state(d) != "succeeded"
                ]
                if dead:
                    self._put_result(step, "skipped", error=f"dependency {dead[0]} did not succeed")
                    changed = True

    def _should_continue_as_new(self, every: int) -> bool:
        if self._stored_plan():
            return False  # a stored plan continues at window boundaries only (_more_windows)
        return self._steps_this_run >= every or workflow.info().is_continue_as_new_suggested()

    async def _run_step(self, step: Step, plan: Plan) -> None:
        started = workflow.now()
        decision: Decision | None = None
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
                decision = await self._decide_until_allowed(resolved, execution, plan, first)
                self._put_result(step, "running", decision=decision, started_at=started)
                output = await self._execute(resolved, execution, plan, decision)
            self._carry = self._carry.model_copy(
                update={
                    "outputs": {**self._carry.outputs, step.id: output.output},
                    "spent": self._spent_after(output),
                }
            )
            self._put_result(
                step,
                "succeeded",
                decision=decision,
                output=output.output,
                started_at=started,
                finished=True,
            )
        except StepStop as stop:
            self._put_result(
                step,
                stop.state,
                decision=stop.decision or decision,
                error=stop.reason,
                started_at=started,
                finished=True,
            )
            await self._after_failure(step, stop)
        except asyncio.CancelledError:
            self._put_result(
                step,
                "cancelled",
                decision=decision,
                error="cancelled",
                started_at=started,
                finished=True,
            )

    def _spent_after(self, output: ExecuteStepOutput) -> Spent:
        """One more step, plus the tokens and dollars its adapter reported (an LLM draft):
        a data change only, so histories recorded before ``usage`` existed replay alike."""
        spent = self._carry.spent
        usage = output.usage
        if usage is None:
            return spent.model_copy(update={"steps": spent.steps + 1})
        return spent.model_copy(
            update={
                "steps": spent.steps + 1,
                "tokens": spent.tokens + usage.tokens,
                "usd": spent.usd + usage.usd,
            }
        )

    def _resolve(self, step: Step) -> Step:
        try:
            args = resolve_refs(step.args, self._carry.outputs)
        except RefError as err:
            raise StepStop("failed", f"cannot resolve arguments: {err}") from None
        return step.model_copy(update={"args": args})

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
        only on an immediate allow. Anything else falls back to the normal path."""
        try:
            return await _local_activity(
                "express.step",
                ExpressStepInput(
                    decide=self._decide_input(step, execution, plan),
                    idempotency_key=f"{self._ref.workflow_id}/{step.id}",
                ),
                ExpressStepOutput,
                start_to_close_timeout=timedelta(seconds=execution.timeout_seconds),
                retry_policy=POLICY_RETRY,
            )
        except ActivityError:
            return None  # the regular path decides again and blocks or fails with a reason

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
        own queue (routed steps keep the regular path: their adapter runs on an edge
        worker). Returns None where the regular path must decide: in histories from
        before this existed, for routed steps, and when OPA could not be asked (the
        regular path retries the decision, then blocks the step). A failure after the
        decision fails the step like ``adapter.execute`` failing; the decision is in
        the decision log and audit, not in the step's result.
        """
        own_queue = workflow.info().task_queue
        if execution.task_queue not in (None, own_queue):
            return None
        if not _since(FUSED_STEP_PATCH):
            return None
        self._put_result(step, "running", started_at=started)
        try:
            return await _activity(
                "step.run",
                ExpressStepInput(
                    decide=self._decide_input(resolved, execution, plan),
                    idempotency_key=f"{self._ref.workflow_id}/{step.id}",
                ),
                result_type=ExpressStepOutput,
                # The decision (OPA answers in ~1 ms, fails over in 1.5 s) plus the adapter.
                start_to_close_timeout=timedelta(seconds=execution.timeout_seconds + 10),
                retry_policy=_execute_retry(execution),
            )
        except ActivityError as err:
            if _failure_type(err) == "PolicyUnavailable":
                return None
            raise StepStop("failed", "; ".join(_failure_reasons(err))) from None

    async def _decide_until_allowed(
        self, step: Step, execution: StepExecution, plan: Plan, first: Decision | None = None
    ) -> Decision:
        """Ask OPA; while it says "approve", wait for humans and ask again with their votes."""
        escalated = False
        while True:
            decision = first or await self._decide_step(step, execution, plan)
            first = None
            if decision.blocked is not None:
                raise StepStop("blocked", _blocked_reason(decision), decision)
            if decision.outcome == "allow":
                return decision
            if decision.outcome == "deny":
                raise StepStop("denied", "; ".join(decision.reasons), decision)
            escalated = await self._await_approval(step, plan, decision, escalated)
            # A human "no" ends the step here; a "yes" is only counted by asking policy again.
            rejection = self._rejection(step.id)
            if rejection is not None:
                raise StepStop("rejected", rejection, decision)

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
            spent=self._carry.spent,
            approvals=tuple(self._votes.get(step.id, ())),
            provenance=step_provenance(plan, step.id),
        )

    async def _decide_step(self, step: Step, execution: StepExecution, plan: Plan) -> Decision:
        try:
            return await _activity(
                "policy.decide_step",
                self._decide_input(step, execution, plan),
                result_type=Decision,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=POLICY_RETRY,
            )
        except ActivityError as err:
            return await self._blocked_decision(step.id, err)

    async def _blocked_decision(self, step_id: str | None, err: ActivityError) -> Decision:
        """OPA could not be asked: the decision is a block with the reason, and it is audited."""
        reasons = _failure_reasons(err)
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

    async def _await_approval(
        self, step: Step, plan: Plan, decision: Decision, escalated: bool
    ) -> bool:
        policy = decision.approval
        if policy is None:
            raise StepStop(
                "denied", "policy asked for approval without saying who approves", decision
            )
        eligible = policy.escalate_eligible if escalated else policy.eligible
        approvers = policy.escalate_to if escalated else policy.approvers
        now = workflow.now()
        self._pending[step.id] = PendingApproval(
            workflow_id=self._ref.workflow_id,
            tenant=self._tenant,
            step_id=step.id,
            operation=step.operation,
            plan_hash=plan.plan_hash,
            args=step.args,
            reasons=decision.reasons,
            approvers=approvers,
            eligible=eligible,
            requested_by=self._request_principal,
            since=now,
            deadline=now + timedelta(seconds=policy.timeout_seconds),
        )
        self._pending_policy[step.id] = (frozenset(eligible), policy.allow_self_approval)
        self._put_result(step, "awaiting_approval", decision=decision)
        self._refresh_pending_flag()
        votes_before = len(self._votes.get(step.id, ()))
        try:
            await workflow.wait_condition(
                lambda: (
                    self._cancel_requested
                    or self._rejection(step.id) is not None
                    or (
                        self._approvals(step.id) >= policy.min_approvals
                        and len(self._votes.get(step.id, ())) > votes_before
                    )
                ),
                timeout=timedelta(seconds=policy.timeout_seconds),
            )
        except TimeoutError:
            self._clear_pending(step.id)
            if policy.on_timeout == "escalate" and not escalated and policy.escalate_to:
                await self._audit(
                    "approval_escalated", "system:stead", step.id, {"to": list(policy.escalate_to)}
                )
                return True
            await self._audit(
                "approval_timed_out", "system:stead", step.id, {"escalated": escalated}
            )
            raise StepStop(
                "rejected",
                "approval timed out" + (" after escalation" if escalated else ""),
                decision,
            ) from None
        self._clear_pending(step.id)
        if self._cancel_requested:
            raise StepStop("cancelled", "cancelled while awaiting approval", decision)
        return escalated

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
            if queue != workflow.info().task_queue and _since(CAPABILITY_GRANTS_PATCH):
                # An edge worker holds only the public key: the authority (on this queue)
                # mints its token ahead and keeps it in Postgres; history sees only the id.
                grant = await _activity(
                    "capability.issue",
                    execute,
                    result_type=CapabilityGrant,
                    start_to_close_timeout=timedelta(seconds=10),
                    retry_policy=QUICK,
                )
                execute = execute.model_copy(update={"capability_grant": grant.token_id})
            return await _activity(
                "adapter.execute",
                execute,
                result_type=ExecuteStepOutput,
                task_queue=queue,
                start_to_close_timeout=timedelta(seconds=execution.timeout_seconds),
                retry_policy=_execute_retry(execution),
            )
        except ActivityError as err:
            raise StepStop("failed", "; ".join(_failure_reasons(err)), decision) from None

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
        if step.on_failure == "replan" and self._carry.replans < req.options.max_replans:
            await self._replan(step, stop)
            return
        self._set_status("failed", (f"step {step.id} {stop.state}: {stop.reason}",))

    async def _replan(self, step: Step, stop: StepStop) -> None:
        self._carry = self._carry.model_copy(update={"replans": self._carry.replans + 1})
        failure = f"step {step.id} ({step.operation}) {stop.state}: {stop.reason}"
        old = self._carry.plan
        assert old is not None
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
            attempt=self._carry.replans + 1, failure=failure, detail=detail
        )
        if new_plan is None:
            return
        # Steps that already succeeded keep their results; the new plan supplies the rest.
        done = {sid for sid, r in self._carry.results.items() if r.status == "succeeded"}
        kept = [s for s in old.steps if s.id in done]
        fresh = [s for s in new_plan.steps if s.id not in done]
        results = {sid: r for sid, r in self._carry.results.items() if sid in done}
        self._replaced.update({sid: r for sid, r in self._carry.results.items() if sid not in done})
        merged = new_plan.model_copy(
            update={
                "steps": (*kept, *fresh),
                "execution": {**old.execution, **new_plan.execution},
            }
        )
        self._carry = self._carry.model_copy(
            update={"plan": merged, "results": results, "status": "running"}
        )
        self._set_status("running")

    # ------------------------------------------------------- stored plans
    # A plan over ``plan_inline_max_steps`` lives in Postgres (activities/planning.py);
    # each workflow run holds one window of it and continues as new at the window's end,
    # carrying the plan header, compact settled state and only the outputs later steps
    # refer to, so no payload grows with the plan.

    def _stored_plan(self) -> bool:
        plan = self._carry.plan
        return plan is not None and plan.stored is not None

    def _window_to_load(self) -> bool:
        """A continued run of a stored plan starts with the header only."""
        plan = self._carry.plan
        return plan is not None and plan.stored is not None and not plan.steps

    def _more_windows(self) -> bool:
        plan = self._carry.plan
        if plan is None or plan.stored is None:
            return False
        return plan.stored.window_start + len(plan.steps) < plan.stored.total_steps

    async def _load_window(self) -> bool:
        """Read this run's window; False (run failed, with the reason) if it cannot be read."""
        plan = self._carry.plan
        assert plan is not None and plan.stored is not None
        if not _since(STORED_PLANS_PATCH):
            self._set_status("failed", ("a stored plan reached a worker that cannot run one",))
            return False
        req = self._input_request()
        try:
            window = await _activity(
                "plan.window",
                PlanWindowInput(
                    tenant=req.tenant,
                    plan=plan,
                    start=plan.stored.window_start,
                    size=req.options.continue_as_new_after_steps,
                ),
                result_type=Plan,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=QUICK,
            )
        except ActivityError as err:
            reason = f"steps from {plan.stored.window_start} of stored plan {plan.plan_hash} "
            self._set_status(
                "failed", (reason + "could not be loaded: " + "; ".join(_failure_reasons(err)),)
            )
            return False
        self._carry = self._carry.model_copy(update={"plan": window})
        return True

    def _carry_forward(self) -> RunCarry:
        """What the next run gets: for a stored plan, the finished window settled and dropped."""
        plan = self._carry.plan
        if plan is None or plan.stored is None:
            return self._carry
        settled = self._carry.settled or SettledWindows()
        counts = dict(settled.counts)
        unsuccessful = list(settled.unsuccessful)
        for step in plan.steps:
            state = self._state(step.id)
            counts[state] = counts.get(state, 0) + 1
            if state != "succeeded":
                status = self._carry.results[step.id].status
                unsuccessful.append(
                    SettledStep(step_id=step.id, operation=step.operation, status=status)
                )
        keep = set(plan.stored.keep_outputs)
        header = plan.model_copy(
            update={
                "steps": (),
                "execution": {},
                "stored": plan.stored.model_copy(
                    update={
                        "window_start": plan.stored.window_start + len(plan.steps),
                        "keep_outputs": (),
                    }
                ),
            }
        )
        return self._carry.model_copy(
            update={
                "plan": header,
                "results": {},
                "outputs": {sid: out for sid, out in self._carry.outputs.items() if sid in keep},
                "settled": SettledWindows(
                    counts=counts,
                    unsuccessful=tuple(unsuccessful),
                    minutes_saved=self._minutes_saved(),
                ),
            }
        )

    def _earlier_state(self, step_id: str) -> str | None:
        """A step of an earlier window of a stored plan: succeeded unless settled otherwise.

        Steps are stored dependencies first, so any id outside the current window that
        a step of it names is from an earlier window.
        """
        plan = self._carry.plan
        if plan is None or plan.stored is None:
            return None
        key = (plan.plan_hash, plan.stored.window_start)
        if key != self._window_key:
            self._window_key = key
            self._window_ids = frozenset(s.id for s in plan.steps)
            settled = self._carry.settled
            self._settled_states = (
                {s.step_id: s.status for s in settled.unsuccessful} if settled else {}
            )
        if step_id in self._window_ids:
            return None
        return self._settled_states.get(step_id, "succeeded")

    def _whole_run_counts(self) -> dict[str, int]:
        """Steps by state over the whole stored plan: settled, this window, not yet loaded."""
        plan = self._carry.plan
        assert plan is not None and plan.stored is not None
        counts = dict(self._carry.settled.counts) if self._carry.settled else {}
        for step in plan.steps:
            state = self._state(step.id)
            counts[state] = counts.get(state, 0) + 1
        later = plan.stored.total_steps - plan.stored.window_start - len(plan.steps)
        if later > 0:
            # A cancelled run cancels every step not done, as an inline plan's does.
            if self._carry.status in ("cancelled", "timed_out"):
                state = "cancelled"
            elif self._carry.status in TERMINAL_RUN_STATES:
                state = "not_run"
            else:
                state = "pending"
            counts[state] = counts.get(state, 0) + later
        return counts

    def _summary_steps(self) -> tuple[tuple[str, str, str], ...]:
        """(id, operation, status) for the run's memory summary: for a stored plan the
        steps of earlier windows that did not succeed, then the last window."""
        settled = self._carry.settled
        earlier = tuple(
            (s.step_id, s.operation, str(s.status))
            for s in (settled.unsuccessful if settled else ())
        )
        return earlier + tuple((r.step_id, r.operation, r.status) for r in self._snapshot().steps)

    # ---------------------------------------------------------- approvals
    #
    # Two rules shape this block. Only a token narrowed to exactly this approval may
    # be written to history (a bare one could be lifted by any reader): the update's
    # validator refuses anything else before Temporal writes it, and reports that
    # refusal out of band (stead.approval_refusals), because a rejected update leaves
    # no event and a validator cannot run activities. Signals are written before any
    # handler runs, so an unnarrowed token in one is burned instead. And every other
    # refusal is accepted into the handler and audited there, so each refused
    # approval, by update or signal, malformed or not, leaves one audit row.

    @workflow.update(name="approve")
    async def approve(self, *args: Any) -> StepResult:
        received = receive(args)
        approval = received.approval
        if approval is None:
            # The validator refused it; only a replay without validation gets here.
            malformed = received.problem or "malformed approval"
            raise ApplicationError(malformed, type="ApprovalRefused", non_retryable=True)
        problem = self._approval_problem(approval)
        if problem is not None:
            await self._approval_refused(received, problem, via="update")
            raise ApplicationError(problem, type="ApprovalRefused", non_retryable=True)
        check = await self._authenticate(approval, via="update")
        if check is not None and not check.accepted:
            raise ApplicationError(
                check.reason or "approval refused", type="ApprovalRefused", non_retryable=True
            )
        await self._accept(approval, check)
        return self._result_for_voter(approval.step_id)

    def _result_for_voter(self, step_id: str) -> StepResult:
        """The step as the approver's vote left it. A rejection can trigger a replan while
        the vote's audit activity is still running, and the replan drops the rejected
        step's result from the carry: the update then answers from ``_replaced``. (An
        uncaught KeyError here would fail the workflow task on every retry and hang the
        approver's update.)"""
        result = self._carry.results.get(step_id) or self._replaced.get(step_id)
        if result is None:
            raise ApplicationError(
                f"step {step_id} is no longer part of this run", type="ApprovalRefused"
            )
        return result

    @approve.validator
    def _validate_approve(self, *args: Any) -> None:
        """Refuse, before it is written, what must never be in history; report the refusal."""
        received = receive(args)
        approval = received.approval
        problem = received.problem
        if approval is not None:
            problem = history_problem(approval, self._ref.workflow_id)
        if problem is None:
            return
        if not workflow.unsafe.is_replaying():
            update = workflow.current_update_info()
            report(
                ValidatorRefusal(
                    tenant=self._tenant,
                    workflow_id=self._ref.workflow_id,
                    run_id=self._ref.run_id,
                    step_id=received.step_id,
                    actor=received.actor,
                    reason=problem,
                    data={
                        "via": "update",
                        "verdict": received.verdict or "",
                        "update_id": update.id if update else "",
                    },
                )
            )
        raise ApplicationError(problem, type="ApprovalRefused", non_retryable=True)

    @workflow.signal(name="approve_signal")
    async def approve_signal(self, *args: Any) -> None:
        """The Temporal UI path: same checks as the update; refused attempts are audited.

        Anyone who can reach the UI can send this signal, so the UI proves nothing: the
        signal counts only when it carries a principal token narrowed to this approval
        (``stead principal sign-approval`` prints the input to paste), like the update.
        Temporal has written the signal before this runs, so a token in it that is not
        narrowed to this approval is exposed: it is burned, then the attempt refused.
        """
        received = receive(args)
        approval = received.approval
        problem = received.problem
        if approval is not None:
            problem = history_problem(approval, self._ref.workflow_id)
        if problem is not None:
            burned = await self._burn_exposed(received.token, problem)
            if burned:
                problem += (
                    "; the token is now in this run's history, so it is revoked: get a new "
                    "one with `stead principal token`"
                )
            await self._approval_refused(received, problem, via="signal", token_burned=burned)
            return
        assert approval is not None
        problem = self._approval_problem(approval)
        if problem is not None:
            await self._approval_refused(received, problem, via="signal")
            return
        check = await self._authenticate(approval, via="signal")
        if check is not None and not check.accepted:
            return
        await self._accept(approval, check)

    async def _burn_exposed(self, token: str | None, why: str) -> bool | None:
        """Revoke a token this run's history now holds unnarrowed.

        True when burned, False when there was nothing to burn (no token, garbage, not
        signed by us), None when the burn could not be recorded: the audit row then
        says ``token_burned: null`` so an operator revokes the principal's tokens.
        """
        if not burnable(token):
            return False
        assert token is not None
        try:
            burned = await _activity(
                "identity.burn_token",
                BurnTokenInput(
                    tenant=self._tenant,
                    workflow_id=self._ref.workflow_id,
                    token=token,
                    reason=why[:1_000],
                ),
                result_type=BurnedToken,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=QUICK,
            )
        except ActivityError:
            return None
        return burned.burned > 0

    async def _approval_refused(
        self, received: Received, reason: str, *, via: str, token_burned: bool | None = False
    ) -> None:
        data: dict[str, object] = {"reason": reason, "verdict": received.verdict, "via": via}
        if token_burned is not False:
            data["token_burned"] = token_burned
        await self._audit("approval_refused", received.actor, received.step_id, data)

    async def _authenticate(self, approval: ApprovalInput, via: str) -> ApprovalCheck | None:
        """Prove the approver (activity: policy, token and directory), then re-check the vote.

        Returns None for histories recorded before approvals were verified. A refusal
        is audited here, once. The checks without I/O run again afterwards because the
        step may have moved on, or the same approver's other vote been counted, while
        the activity ran. Whether the tenant needs a token at all is the activity's
        decision, read from policy each time, never this run's state.
        """
        if not _since(VERIFIED_APPROVALS_PATCH):
            return None
        pending = self._pending.get(approval.step_id)
        try:
            check = await _activity(
                "identity.verify_approval",
                VerifyApprovalInput(
                    tenant=self._tenant,
                    workflow_id=self._ref.workflow_id,
                    step_id=approval.step_id,
                    plan_hash=approval.plan_hash,
                    approver=approval.approver,
                    verdict=approval.verdict,
                    approvers=pending.approvers if pending is not None else (),
                    token=approval.token,
                ),
                result_type=ApprovalCheck,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=POLICY_RETRY,
            )
        except ActivityError as err:
            check = ApprovalCheck(
                accepted=False,
                reason="the approver's identity could not be verified, so the vote is not "
                "counted: " + "; ".join(_failure_reasons(err)),
            )
        problem = check.reason if not check.accepted else self._approval_problem(approval)
        if problem is None:
            return check
        await self._audit(
            "approval_refused",
            approval.approver,
            approval.step_id,
            {"reason": problem, "verdict": approval.verdict, "via": via},
        )
        return ApprovalCheck(accepted=False, reason=problem)

    def _approval_problem(self, approval: ApprovalInput) -> str | None:
        """Why this vote cannot count here, from the run's own state (no I/O)."""
        plan = self._carry.plan
        if approval.step_id not in self._pending:
            return f"step {approval.step_id} is not awaiting approval"
        if plan is None or approval.plan_hash != plan.plan_hash:
            return "plan hash does not match the plan awaiting approval; re-read `stead status`"
        eligible, self_ok = self._pending_policy[approval.step_id]
        if approval.approver == self._request_principal and not self_ok:
            return f"{approval.approver} started this run and may not approve its steps"
        if approval.approver not in eligible:
            return f"{approval.approver} is not an approver for step {approval.step_id}"
        if any(v.approver == approval.approver for v in self._votes.get(approval.step_id, ())):
            return f"{approval.approver} already voted on step {approval.step_id}"
        return None

    async def _accept(self, approval: ApprovalInput, check: ApprovalCheck | None = None) -> None:
        record = ApprovalRecord(
            approver=approval.approver,
            verdict=approval.verdict,
            comment=approval.comment,
            at=workflow.now(),
        )
        self._votes.setdefault(approval.step_id, []).append(record)
        await self._audit(
            "approval_accepted",
            approval.approver,
            approval.step_id,
            {
                "verdict": approval.verdict,
                "comment": approval.comment,
                "plan_hash": approval.plan_hash,
                **(
                    {}
                    if check is None
                    else {"authenticated": check.authenticated, "token_id": check.token_id}
                ),
            },
        )

    def _approvals(self, step_id: str) -> int:
        return sum(1 for v in self._votes.get(step_id, ()) if v.verdict == "approve")

    def _rejection(self, step_id: str) -> str | None:
        for vote in self._votes.get(step_id, ()):
            if vote.verdict == "reject":
                return f"rejected by {vote.approver}" + (
                    f": {vote.comment}" if vote.comment else ""
                )
        return None

    def _clear_pending(self, step_id: str) -> None:
        self._pending.pop(step_id, None)
        self._pending_policy.pop(step_id, None)
        self._refresh_pending_flag()

    def _refresh_pending_flag(self) -> None:
        waiting = bool(self._pending)
        if self._carry.status not in TERMINAL_RUN_STATES:
            self._set_status("awaiting_approval" if waiting else "running")
        self._upsert(pending=waiting)

    # ------------------------------------------------------ cancel/queries

    @workflow.signal(name="cancel")
    async def cancel(self, *args: Any) -> None:
        """Stop the run; audited as ``cancel_requested`` with who asked and why.

        ``*args``, not a typed payload: a bare cancel still stops the run, and a
        malformed one stops it too and is audited as such (``workflows/cancel_input.py``).
        The flag is set before the first await, so the run stops exactly as before.
        """
        received = receive_cancel(args)
        self._cancel_requested = True
        if self._cancel is None:
            self._cancel = received
        if not workflow.patched(CANCEL_AUDIT_PATCH):
            return
        # Before the run's record exists the audit is refused (no record to scope it to);
        # the cancel still stands and run_finished names who asked and why.
        with contextlib.suppress(ActivityError):
            await self._audit("cancel_requested", received.actor, None, received.audit_data())

    @workflow.query(name="status")
    def status(self) -> RunStatus:
        return self._snapshot()

    @workflow.query(name="plan")
    def plan(self) -> Plan | None:
        return self._carry.plan

    @workflow.query(name="pending_approvals")
    def pending_approvals(self) -> list[PendingApproval]:
        return list(self._pending.values())

    # ----------------------------------------------------------- helpers

    def _input_request(self) -> RunRequest:
        return self._request

    def _state(self, step_id: str) -> str:
        result = self._carry.results.get(step_id)
        if result is not None:
            return result.status
        return self._earlier_state(step_id) or "pending"

    def _put_result(
        self,
        step: Step,
        status: StepState,
        *,
        decision: Decision | None = None,
        output: object = None,
        error: str | None = None,
        started_at: datetime | None = None,
        finished: bool = False,
    ) -> None:
        previous = self._carry.results.get(step.id)
        result = StepResult(
            step_id=step.id,
            operation=step.operation,
            status=status,
            decision=decision or (previous.decision if previous else None),
            approvals=tuple(self._votes.get(step.id, ())),
            output=output,
            error=error,
            started_at=started_at or (previous.started_at if previous else None),
            finished_at=workflow.now() if finished else None,
        )
        self._carry = self._carry.model_copy(
            update={"results": {**self._carry.results, step.id: result}}
        )

    def _set_status(self, status: RunState, reasons: Sequence[str] = ()) -> None:
        update: dict[str, object] = {"status": status}
        if reasons:
            update["reasons"] = tuple(reasons)
        self._carry = self._carry.model_copy(update=update)
        self._upsert(status=status)

    def _upsert(
        self,
        *,
        tenant: str | None = None,
        status: str | None = None,
        pending: bool | None = None,
    ) -> None:
        """Upsert the run's search attributes (what ``stead runs`` and the UI filter on).

        Each upsert is a command, an event in history and a visibility write for the
        Temporal server; a run used to send its final status twice and ``pending=False``
        when it already was. Since the run-fixed-cost patch only values that changed
        are sent (the tenant, first, always); older histories replay every upsert.
        """
        changed_only = _lean()
        updates: list[SearchAttributeUpdate[Any]] = []
        if tenant is not None:
            updates.append(SA_TENANT.value_set(tenant))
        if status is not None and not (changed_only and status == self._sa_status):
            updates.append(SA_STATUS.value_set(status))
            self._sa_status = status
        if pending is not None and not (changed_only and pending == self._sa_pending):
            updates.append(SA_PENDING.value_set(pending))
            self._sa_pending = pending
        if updates:
            workflow.upsert_search_attributes(updates)

    def _aborting_failure(self, plan: Plan) -> bool:
        return any(
            self._state(s.id) in FAILED_STEP_STATES and s.on_failure != "skip" for s in plan.steps
        )

    def _cancel_remaining(self, reason: str) -> None:
        plan = self._carry.plan
        if plan is None:
            return
        for step in plan.steps:
            if self._state(step.id) not in DONE_STEP_STATES:
                self._put_result(step, "cancelled", error=reason, finished=True)
        self._pending.clear()
        self._pending_policy.clear()

    def _mark_not_run(self) -> None:
        """A finished run shows why each step that never started did not: "pending" in
        a run that has ended would say it might still happen."""
        plan = self._carry.plan
        if plan is None:
            return
        why = f"not run: the run ended {self._carry.status}"
        if self._carry.reasons:
            why += f" ({self._carry.reasons[0]})"
        for step in plan.steps:
            if self._state(step.id) not in DONE_STEP_STATES:
                self._put_result(step, "not_run", error=why, finished=True)

    def _remaining_time(self, deadline: datetime | None) -> timedelta | None:
        if deadline is None:
            return None
        return max(deadline - workflow.now(), timedelta(milliseconds=1))

    def _snapshot(self) -> RunStatus:
        plan = self._carry.plan
        ordered = []
        if plan is not None:
            for step in plan.steps:
                ordered.append(
                    self._carry.results.get(step.id)
                    or StepResult(step_id=step.id, operation=step.operation, status="pending")
                )
        stored = plan.stored if plan is not None else None
        return RunStatus(
            workflow_id=self._ref.workflow_id,
            tenant=self._tenant,
            principal=self._request_principal,
            status=self._carry.status,
            plan=plan,
            steps=tuple(ordered),
            pending_approvals=tuple(self._pending.values()),
            spent=self._carry.spent,
            reasons=self._carry.reasons,
            replans=self._carry.replans,
            continued=self._carry.continued,
            total_steps=stored.total_steps if stored else None,
            step_counts=self._whole_run_counts() if stored else {},
        )

    async def _audit(
        self, kind: str, actor: str, step_id: str | None, data: dict[str, object]
    ) -> None:
        await workflow.execute_activity(
            "audit.append",
            AuditInput(
                tenant=self._tenant,
                workflow_id=self._ref.workflow_id,
                run_id=self._ref.run_id,
                step_id=step_id,
                kind=kind,
                actor=actor,
                data=data,
            ),
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=QUICK,
        )

    async def _record_run(self, status: str, *, finished: bool = False) -> None:
        await self._bookkeeping(
            "runs.record",
            self._record_input(status, finished=finished),
            result_type=None,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=QUICK,
        )

    def _record_input(self, status: str, *, finished: bool = False) -> RunRecordInput:
        req = self._input_request()
        plan = self._carry.plan
        return RunRecordInput(
            tenant=req.tenant,
            workflow_id=self._ref.workflow_id,
            principal=req.principal,
            status=status,
            goal=req.goal,
            playbook=req.playbook,
            playbook_sha256=playbook_digest(req) if status == "planning" else None,
            plan_hash=plan.plan_hash if plan else None,
            tokens=self._carry.spent.tokens,
            cost_usd=self._carry.spent.usd,
            minutes_saved=self._minutes_saved(),
            labels=req.labels,
            summary=self._record_summary(),
            finished=finished,
        )

    def _record_summary(self) -> dict[str, JsonValue]:
        """What run_finished carries: the reasons, step counts and, if cancelled, by whom."""
        steps: dict[str, JsonValue] = {**self._step_counts()}
        summary: dict[str, JsonValue] = {"reasons": list(self._carry.reasons), "steps": steps}
        if self._cancel is not None:
            summary["cancel"] = {
                "requested_by": self._cancel.actor,
                "reason": self._cancel.reason,
                "attribution": self._cancel.attribution,
            }
        return summary

    async def _bookkeeping(
        self, name: str, arg: object, result_type: type[_T] | None, **options: Any
    ) -> _T:
        """A run's own bookkeeping (its record, its admission) as a local activity.

        Three per run, each a task round trip and a workflow task of its own as a
        regular activity; as local activities they run in the workflow task that asks
        for them. Histories recorded before keep regular activities.
        """
        if _since(LOCAL_BOOKKEEPING_PATCH):
            result: _T = await workflow.execute_local_activity(
                name, arg, result_type=result_type, **options
            )
        else:
            result = await workflow.execute_activity(name, arg, result_type=result_type, **options)
        return result

    def _minutes_saved(self) -> float:
        plan = self._carry.plan
        if plan is None:
            return 0.0
        earlier = self._carry.settled.minutes_saved if self._carry.settled else 0.0
        return earlier + sum(
            s.minutes_saved for s in plan.steps if self._state(s.id) == "succeeded"
        )

    def _step_counts(self) -> dict[str, int]:
        if self._stored_plan():
            return self._whole_run_counts()
        counts: dict[str, int] = {}
        for result in self._carry.results.values():
            counts[result.status] = counts.get(result.status, 0) + 1
        return counts

    async def _finish(self) -> RunStatus:
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._mark_not_run()
        self._pending.clear()
        self._set_status(self._carry.status)
        self._upsert(pending=False)
        if self._owns_record:
            await self._record_run(self._carry.status, finished=True)
        if not self._refused_at_door:
            await self._remember_summary()
        return self._snapshot()


def _lean() -> bool:
    """Whether this run started on code with the run-fixed-cost patch (see ``_since``)."""
    return workflow.patched(RUN_FIXED_COST_PATCH)


def _since(patch: str) -> bool:
    """``workflow.patched(patch)`` for the patches older than run-fixed-cost.

    Each patch a new run meets costs it a marker event and a ``TemporalChangeVersion``
    search-attribute upsert (SDK core adds one per patch): five or six pairs per run,
    more history and visibility writes than the run's own upserts. A run with the
    run-fixed-cost marker was started by code in which every older patch is in force,
    so it asks only that one (the first thing ``run`` does, memoized by the SDK);
    histories without it ask each patch where they always did and replay unchanged.
    """
    return _lean() or workflow.patched(patch)


async def _local_activity(name: str, arg: object, result_type: type[_T], **options: Any) -> _T:
    result: _T = await workflow.execute_local_activity(
        name, arg, result_type=result_type, **options
    )
    return result


async def _activity(name: str, arg: object, result_type: type[_T], **options: Any) -> _T:
    """``execute_activity`` by name, typed: names (not functions) keep this module I/O-free."""
    result: _T = await workflow.execute_activity(name, arg, result_type=result_type, **options)
    return result


def _execute_retry(execution: StepExecution) -> RetryPolicy:
    """How an execution attempt is retried: the operation's budget, ledger-safe."""
    return RetryPolicy(
        initial_interval=timedelta(milliseconds=500),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=execution.max_attempts,
        non_retryable_error_types=list(NON_RETRYABLE_TYPES),
    )


def _blocked_reason(decision: Decision) -> str:
    """``policy_undefined: <why>``, said once: a block's reasons start with its own code."""
    assert decision.blocked is not None
    reasons = [r for r in decision.reasons if r != decision.blocked]
    return f"{decision.blocked}: " + "; ".join(reasons) if reasons else decision.blocked


def _planner_spend(err: ActivityError) -> tuple[int, float]:
    """What a rejected planning spent (tokens, usd): the details after its reasons."""
    cause = err.cause
    if not isinstance(cause, ApplicationError) or len(cause.details) < 2:
        return 0, 0.0
    spent = cause.details[1]
    if not isinstance(spent, dict):
        return 0, 0.0
    tokens, usd = spent.get("tokens", 0), spent.get("usd", 0.0)
    if not isinstance(tokens, int) or not isinstance(usd, int | float):
        return 0, 0.0
    return tokens, float(usd)


def _failure_type(err: ActivityError) -> str | None:
    cause = err.cause
    return cause.type if isinstance(cause, ApplicationError) else None


def _failure_reasons(err: ActivityError) -> tuple[str, ...]:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        details = cause.details[0] if cause.details else None
        if isinstance(details, list) and details:
            return tuple(str(d) for d in details)
        return (cause.message,)
    if cause is not None:
        return (str(cause),)
    return (str(err),)


__all__ = ["PLAN_REJECTED", "RunWorkflow"]
