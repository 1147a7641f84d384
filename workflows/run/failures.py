"""How a step stops and what an activity failure says, read without I/O."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from stead.contracts.run import Decision, StepState


class StepStop(Exception):
    """A step ended without success; carries the state it ended in and why."""

    def __init__(self, state: StepState, reason: str, decision: Decision | None = None) -> None:
        super().__init__(reason)
        self.state = state
        self.reason = reason
        self.decision = decision


def blocked_reason(decision: Decision) -> str:
    """``policy_undefined: <why>``, said once: a block's reasons start with its own code."""
    assert decision.blocked is not None
    reasons = [r for r in decision.reasons if r != decision.blocked]
    return f"{decision.blocked}: " + "; ".join(reasons) if reasons else decision.blocked


def planner_spend(err: ActivityError) -> tuple[int, float]:
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


def failure_type(err: ActivityError) -> str | None:
    cause = err.cause
    return cause.type if isinstance(cause, ApplicationError) else None


def failure_reasons(err: ActivityError) -> tuple[str, ...]:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        details = cause.details[0] if cause.details else None
        if isinstance(details, list) and details:
            return tuple(str(d) for d in details)
        return (cause.message,)
    if cause is not None:
        return (str(cause),)
    return (str(err),)
