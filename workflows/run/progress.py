"""The run's state as it changes, and the frozen ``RunCarry`` it produces.

Pure: no Temporal calls, no I/O. The clock and the approval votes are given to it, so
a unit test can drive it without a workflow (tests/test_run_progress.py). Every change
is a typed attribute or method (mypy checks them), and ``carry`` builds the frozen
contract that continue-as-new passes whole.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal

from temporalio import workflow

from workflows.run import windows

with workflow.unsafe.imports_passed_through():
    from pydantic import JsonValue

    from stead.contracts.activities import ExecuteStepOutput
    from stead.contracts.run import (
        TERMINAL_RUN_STATES,
        ApprovalRecord,
        Decision,
        Plan,
        RunCarry,
        RunState,
        SettledWindows,
        Spent,
        Step,
        StepResult,
        StepState,
    )

FAILED_STEP_STATES: frozenset[str] = frozenset({"failed", "denied", "rejected", "blocked"})
DONE_STEP_STATES: frozenset[str] = frozenset(
    {"succeeded", "skipped", *FAILED_STEP_STATES, "cancelled", "not_run"}
)
Clock = Callable[[], datetime]
VotesOf = Callable[[str], tuple[ApprovalRecord, ...]]


class RunProgress:
    """Status, plan, step results, outputs and spend of one run (one window of it)."""

    def __init__(self, carry: RunCarry, *, clock: Clock, votes: VotesOf) -> None:
        self._clock = clock
        self._votes = votes
        self._earlier = windows.EarlierStates()
        self.resume(carry)

    def resume(self, carry: RunCarry) -> None:
        """Take over a carry: the start's empty one, or a continued run's verified one."""
        self.status: RunState = carry.status
        self.plan: Plan | None = carry.plan
        self.results: dict[str, StepResult] = dict(carry.results)
        self.outputs: dict[str, JsonValue] = dict(carry.outputs)
        self.spent: Spent = carry.spent
        self.replans: int = carry.replans
        self.continued: int = carry.continued
        self.reasons: tuple[str, ...] = carry.reasons
        self.approval_authentication: Literal["token", "none"] | None = (
            carry.approval_authentication
        )
        self.settled: SettledWindows | None = carry.settled

    @property
    def carry(self) -> RunCarry:
        return RunCarry(
            status=self.status,
            plan=self.plan,
            results=self.results,
            outputs=self.outputs,
            spent=self.spent,
            replans=self.replans,
            continued=self.continued,
            reasons=self.reasons,
            approval_authentication=self.approval_authentication,
            settled=self.settled,
        )

    def next_carry(self) -> RunCarry:
        """What the next run gets at continue-as-new: for a stored plan, the finished
        window settled and dropped; otherwise everything."""
        carry = self.carry
        if not windows.is_stored(self.plan):
            return carry.model_copy(update={"continued": self.continued + 1})
        window = windows.settle_window(carry, self.state, self.minutes_saved())
        return RunCarry(
            status=self.status,
            plan=window.header,
            results={},
            outputs=window.outputs,
            spent=self.spent,
            replans=self.replans,
            continued=self.continued + 1,
            reasons=self.reasons,
            approval_authentication=self.approval_authentication,
            settled=window.settled,
        )

    # --------------------------------------------------------------- status

    def set_status(self, status: RunState, reasons: tuple[str, ...] = ()) -> None:
        self.status = status
        if reasons:
            self.reasons = reasons

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL_RUN_STATES

    # ------------------------------------------------------------- planning

    def spend_planning(self, tokens: int, usd: float) -> None:
        self.spent = Spent(
            steps=self.spent.steps, tokens=self.spent.tokens + tokens, usd=self.spent.usd + usd
        )

    def plan_refused(self, status: RunState, reasons: tuple[str, ...], plan: Plan | None) -> None:
        """Planning ended the run: the planner rejected it, or policy did not allow it."""
        self.status = status
        self.reasons = reasons
        if plan is not None:
            self.plan = plan

    def replanned(self, new_plan: Plan) -> dict[str, StepResult]:
        """Merge a replan: succeeded steps keep their results, the new plan supplies the
        rest. Returns the results the merge dropped (updates may still ask about them)."""
        old = self.plan
        assert old is not None
        done = {sid for sid, r in self.results.items() if r.status == "succeeded"}
        kept = [s for s in old.steps if s.id in done]
        fresh = [s for s in new_plan.steps if s.id not in done]
        dropped = {sid: r for sid, r in self.results.items() if sid not in done}
        self.results = {sid: r for sid, r in self.results.items() if sid in done}
        self.plan = new_plan.model_copy(
            update={"steps": (*kept, *fresh), "execution": {**old.execution, **new_plan.execution}}
        )
        self.status = "running"
        return dropped

    def succeeded_steps(self) -> tuple[str, ...]:
        return tuple(sid for sid, r in self.results.items() if r.status == "succeeded")

    # ---------------------------------------------------------------- steps

    def state(self, step_id: str) -> str:
        result = self.results.get(step_id)
        if result is not None:
            return result.status
        return self._earlier.of(self.plan, self.settled, step_id) or "pending"

    def put_result(
        self,
        step: Step,
        status: StepState,
        *,
        decision: Decision | None = None,
        output: JsonValue = None,
        error: str | None = None,
        started_at: datetime | None = None,
        finished: bool = False,
    ) -> None:
        previous = self.results.get(step.id)
        self.results[step.id] = StepResult(
            step_id=step.id,
            operation=step.operation,
            status=status,
            decision=decision or (previous.decision if previous else None),
            approvals=self._votes(step.id),
            output=output,
            error=error,
            started_at=started_at or (previous.started_at if previous else None),
            finished_at=self._clock() if finished else None,
        )

    def step_output(self, step_id: str, output: ExecuteStepOutput) -> None:
        """One more step, its output for later refs, and the tokens and dollars its
        adapter reported (an LLM draft)."""
        self.outputs[step_id] = output.output
        usage = output.usage
        self.spent = Spent(
            steps=self.spent.steps + 1,
            tokens=self.spent.tokens + (usage.tokens if usage else 0),
            usd=self.spent.usd + (usage.usd if usage else 0.0),
        )

    def ready_steps(self) -> list[Step]:
        assert self.plan is not None
        return [
            step
            for step in self.plan.steps
            if self.state(step.id) == "pending"
            and all(self.state(dep) == "succeeded" for dep in step.depends_on)
        ]

    def skip_unreachable(self) -> None:
        """A step whose dependency will never succeed is skipped, not left pending forever."""
        assert self.plan is not None
        changed = True
        while changed:
            changed = False
            for step in self.plan.steps:
                if self.state(step.id) != "pending":
                    continue
                dead = [
                    d
                    for d in step.depends_on
                    if self.state(d) in DONE_STEP_STATES and self.state(d) != "succeeded"
                ]
                if dead:
                    self.put_result(step, "skipped", error=f"dependency {dead[0]} did not succeed")
                    changed = True

    def all_done(self) -> bool:
        assert self.plan is not None
        return all(self.state(s.id) in DONE_STEP_STATES for s in self.plan.steps)

    def aborting_failure(self) -> bool:
        assert self.plan is not None
        return any(
            self.state(s.id) in FAILED_STEP_STATES and s.on_failure != "skip"
            for s in self.plan.steps
        )

    def cancel_remaining(self, reason: str) -> None:
        if self.plan is None:
            return
        for step in self.plan.steps:
            if self.state(step.id) not in DONE_STEP_STATES:
                self.put_result(step, "cancelled", error=reason, finished=True)

    def mark_not_run(self) -> None:
        """A finished run shows why each step that never started did not: "pending" in
        a run that has ended would say it might still happen."""
        if self.plan is None:
            return
        why = f"not run: the run ended {self.status}"
        if self.reasons:
            why += f" ({self.reasons[0]})"
        for step in self.plan.steps:
            if self.state(step.id) not in DONE_STEP_STATES:
                self.put_result(step, "not_run", error=why, finished=True)

    # -------------------------------------------------------------- windows

    def is_stored(self) -> bool:
        return windows.is_stored(self.plan)

    def window_to_load(self) -> bool:
        return windows.window_to_load(self.plan)

    def more_windows(self) -> bool:
        return windows.more_windows(self.plan)

    # -------------------------------------------------------------- reading

    def ordered_steps(self) -> tuple[StepResult, ...]:
        """Every step of the plan (window) in plan order, "pending" until it has a result."""
        if self.plan is None:
            return ()
        return tuple(
            self.results.get(step.id)
            or StepResult(step_id=step.id, operation=step.operation, status="pending")
            for step in self.plan.steps
        )

    def minutes_saved(self) -> float:
        if self.plan is None:
            return 0.0
        earlier = self.settled.minutes_saved if self.settled else 0.0
        return earlier + sum(
            s.minutes_saved for s in self.plan.steps if self.state(s.id) == "succeeded"
        )

    def whole_run_counts(self) -> dict[str, int]:
        return windows.whole_run_counts(self.plan, self.settled, self.status, self.state)

    def step_counts(self) -> dict[str, int]:
        if self.is_stored():
            return self.whole_run_counts()
        counts: dict[str, int] = {}
        for result in self.results.values():
            counts[result.status] = counts.get(result.status, 0) + 1
        return counts

    def summary_steps(self) -> tuple[tuple[str, str, str], ...]:
        """(id, operation, status) for the run's memory summary: for a stored plan the
        steps of earlier windows that did not succeed, then the last window."""
        earlier = tuple(
            (s.step_id, s.operation, str(s.status))
            for s in (self.settled.unsuccessful if self.settled else ())
        )
        return earlier + tuple((r.step_id, r.operation, r.status) for r in self.ordered_steps())
