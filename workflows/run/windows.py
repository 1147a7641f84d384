"""Stored-plan windows, without I/O.

A plan over ``plan_inline_max_steps`` lives in Postgres (activities/planning.py); each
workflow run holds one window of it and continues as new at the window's end, carrying
the plan header, compact settled state and only the outputs later steps refer to, so no
payload grows with the plan. Steps are stored dependencies first, so any id outside the
current window that a step of it names is from an earlier window.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import JsonValue

    from stead.contracts.run import (
        TERMINAL_RUN_STATES,
        Plan,
        RunCarry,
        SettledStep,
        SettledWindows,
    )

StateOf = Callable[[str], str]


def is_stored(plan: Plan | None) -> bool:
    return plan is not None and plan.stored is not None


def window_to_load(plan: Plan | None) -> bool:
    """A continued run of a stored plan starts with the header only."""
    return plan is not None and plan.stored is not None and not plan.steps


def more_windows(plan: Plan | None) -> bool:
    if plan is None or plan.stored is None:
        return False
    return plan.stored.window_start + len(plan.steps) < plan.stored.total_steps


class EarlierStates:
    """The state of a step of an earlier window: succeeded unless settled otherwise.

    Cached per window (plan hash, window start), because it is asked for every
    dependency of every step on every pass of the scheduler.
    """

    def __init__(self) -> None:
        self._key: tuple[str, int] | None = None
        self._ids: frozenset[str] = frozenset()
        self._settled: dict[str, str] = {}

    def of(self, plan: Plan | None, settled: SettledWindows | None, step_id: str) -> str | None:
        """None for a step of the current window (or an inline plan)."""
        if plan is None or plan.stored is None:
            return None
        key = (plan.plan_hash, plan.stored.window_start)
        if key != self._key:
            self._key = key
            self._ids = frozenset(s.id for s in plan.steps)
            self._settled = {s.step_id: s.status for s in settled.unsuccessful} if settled else {}
        if step_id in self._ids:
            return None
        return self._settled.get(step_id, "succeeded")


class Settled(NamedTuple):
    """A finished window, settled: what the next run of a stored plan carries."""

    header: Plan
    outputs: dict[str, JsonValue]
    settled: SettledWindows


def settle_window(carry: RunCarry, state_of: StateOf, minutes_saved: float) -> Settled:
    """The window this run held, compacted: counts and the steps that did not succeed
    are kept, the steps dropped, and only the outputs later windows refer to."""
    plan = carry.plan
    assert plan is not None and plan.stored is not None
    settled = carry.settled or SettledWindows()
    counts = dict(settled.counts)
    unsuccessful = list(settled.unsuccessful)
    for step in plan.steps:
        state = state_of(step.id)
        counts[state] = counts.get(state, 0) + 1
        if state != "succeeded":
            status = carry.results[step.id].status
            unsuccessful.append(
                SettledStep(step_id=step.id, operation=step.operation, status=status)
            )
    keep = set(plan.stored.keep_outputs)
    stored = plan.stored.model_copy(
        update={"window_start": plan.stored.window_start + len(plan.steps), "keep_outputs": ()}
    )
    return Settled(
        header=plan.model_copy(update={"steps": (), "execution": {}, "stored": stored}),
        outputs={sid: out for sid, out in carry.outputs.items() if sid in keep},
        settled=SettledWindows(
            counts=counts, unsuccessful=tuple(unsuccessful), minutes_saved=minutes_saved
        ),
    )


def whole_run_counts(
    plan: Plan | None, settled: SettledWindows | None, status: str, state_of: StateOf
) -> dict[str, int]:
    """Steps by state over the whole stored plan: settled, this window, not yet loaded."""
    assert plan is not None and plan.stored is not None
    counts = dict(settled.counts) if settled else {}
    for step in plan.steps:
        state = state_of(step.id)
        counts[state] = counts.get(state, 0) + 1
    later = plan.stored.total_steps - plan.stored.window_start - len(plan.steps)
    if later > 0:
        # A cancelled run cancels every step not done, as an inline plan's does.
        if status in ("cancelled", "timed_out"):
            state = "cancelled"
        elif status in TERMINAL_RUN_STATES:
            state = "not_run"
        else:
            state = "pending"
        counts[state] = counts.get(state, 0) + later
    return counts
