"""The step scheduler: start ready steps (bounded parallelism) until the plan is done,
the run is cancelled or out of time, or it is time to continue as new."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Literal

from temporalio import workflow

from workflows.run.lanes import RunLanes
from workflows.run.progress import FAILED_STEP_STATES

Outcome = Literal["done", "continue"]


class RunScheduler(RunLanes):
    async def _execute_plan(self) -> Outcome:
        req = self._input_request()
        run = self._run
        running: dict[str, asyncio.Task[None]] = {}
        while True:
            plan = run.plan
            assert plan is not None
            if self._cancel_requested and not running:
                why = self._cancel.summary() if self._cancel else "cancelled by request"
                self._cancel_remaining(why)
                run.set_status("cancelled", (why,))
                return "done"
            if run.ended and not running:
                return "done"
            stopping = self._cancel_requested or run.ended
            if (
                not stopping
                and not running
                and self._should_continue_as_new(req.options.continue_as_new_after_steps)
            ):
                return "continue"
            if not stopping:
                run.skip_unreachable()
                for step in run.ready_steps():
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
                if run.all_done():
                    if run.more_windows():
                        return "continue"
                    if not run.ended:
                        failed = any(run.state(s.id) in FAILED_STEP_STATES for s in plan.steps)
                        self._set_status(
                            "failed" if failed and run.aborting_failure() else "completed"
                        )
                    return "done"
                if self._should_continue_as_new(req.options.continue_as_new_after_steps):
                    return "continue"
                # Nothing runnable and nothing running: only a cancel can change that.
                await workflow.wait_condition(lambda: self._cancel_requested)
                continue
            try:
                await workflow.wait_condition(
                    lambda: any(t.done() for t in running.values()) or self._cancel_requested,
                    timeout=_remaining_time(req.deadline),
                )
            except TimeoutError:
                self._cancel_requested = True
                run.reasons = ("deadline passed",)
                await _drain(running)
                self._cancel_remaining("deadline passed")
                run.status = "timed_out"
                return "done"
            for sid in [sid for sid, t in running.items() if t.done()]:
                running.pop(sid).result()
            if self._cancel_requested:
                await _drain(running)

    def _should_continue_as_new(self, every: int) -> bool:
        if self._run.is_stored():
            return False  # a stored plan continues at window boundaries only (more_windows)
        return self._steps_this_run >= every or workflow.info().is_continue_as_new_suggested()

    def _cancel_remaining(self, reason: str) -> None:
        self._run.cancel_remaining(reason)
        self._pending.clear()
        self._pending_policy.clear()


async def _drain(running: dict[str, asyncio.Task[None]]) -> None:
    """Cancel every running step and wait until each has recorded how it ended."""
    for task in running.values():
        task.cancel()
    await asyncio.gather(*running.values(), return_exceptions=True)
    running.clear()


def _remaining_time(deadline: datetime | None) -> timedelta | None:
    if deadline is None:
        return None
    return max(deadline - workflow.now(), timedelta(milliseconds=1))
