"""Reading a cancel from its raw signal arguments, for the run workflow's handler.

Deterministic (no I/O, no clock). Like the approval handlers (``approval_input.py``),
the ``cancel`` handler takes ``*args``: a typed parameter would let the SDK drop input
that does not fit, or fail every workflow task on the wrong arity, before Stead could
audit it.

Every cancel stops the run, with or without a payload: stopping is the safe direction,
a bare ``cancel`` is what the Temporal UI's signal button and older clients send, and
whoever can signal a run can also terminate it through Temporal, so refusing one would
protect nothing. What differs is the attribution the audit records: ``claimed`` (the
payload names a principal), ``unattributed`` (no payload) or ``malformed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import ValidationError
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from stead.contracts.run import CancelInput

UNATTRIBUTED: Final = "unknown:unattributed-cancel"
MALFORMED: Final = "unknown:malformed-cancel"
Attribution = Literal["claimed", "unattributed", "malformed"]


@dataclass(frozen=True)
class ReceivedCancel:
    """One cancel as received: who (as claimed), why, and how far that is attributed."""

    actor: str
    reason: str
    attribution: Attribution
    problem: str | None = None

    def audit_data(self) -> dict[str, object]:
        data: dict[str, object] = {"reason": self.reason, "attribution": self.attribution}
        if self.problem is not None:
            data["problem"] = self.problem
        return data

    def summary(self) -> str:
        """The run's reason for ending, in one line."""
        return f"cancelled by {self.actor}" + (f": {self.reason}" if self.reason else "")


def receive_cancel(args: Sequence[Any]) -> ReceivedCancel:
    """Validate the handler's arguments (none, or one JSON object); never raises."""
    if not args:
        return ReceivedCancel(UNATTRIBUTED, "", "unattributed")
    if len(args) != 1:
        problem = f"cancel input must be one JSON object, got {len(args)} arguments"
        return ReceivedCancel(MALFORMED, "", "malformed", problem)
    try:
        cancel = CancelInput.model_validate(args[0])
    except ValidationError as exc:
        return ReceivedCancel(MALFORMED, "", "malformed", _malformed(exc))
    return ReceivedCancel(cancel.requested_by, cancel.reason, "claimed")


def _malformed(exc: ValidationError) -> str:
    """Field paths and messages only: pydantic's default text quotes the input."""
    problems = [
        f"{'.'.join(str(p) for p in err['loc']) or 'input'}: {err['msg']}"
        for err in exc.errors(include_url=False, include_input=False)
    ]
    return "cancel input is malformed: " + "; ".join(problems[:5])
