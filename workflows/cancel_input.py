"""Reading a cancel from its raw signal arguments, for the run workflow's handler.

Deterministic (no I/O, no clock). Like the approval handlers (``approval_input.py``),
the ``cancel`` handler takes ``*args``: a typed parameter would let the SDK drop input
that does not fit, or fail every workflow task on the wrong arity, before Stead could
audit it.

In a tenant whose approvals are claimed names (``approval_authentication: none``) every
cancel stops the run, with or without a payload, and the audit records its attribution:
``claimed`` (the payload names a principal), ``unattributed`` (no payload) or
``malformed``. Where approvals need tokens, so does a cancel: a principal token
narrowed to this run and this reason (``stead.contracts.cancel_token``), verified by
an activity, recorded as ``token``; anything else is refused and the run keeps going.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal, NamedTuple

from pydantic import ValidationError
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from stead.contracts.cancel_token import cancel_narrowing_problem, cancel_scope
    from stead.contracts.run import CancelInput

UNATTRIBUTED: Final = "unknown:unattributed-cancel"
MALFORMED: Final = "unknown:malformed-cancel"
Attribution = Literal["claimed", "unattributed", "malformed", "token"]


class ReceivedCancel(NamedTuple):
    """One cancel as received: who (as claimed), why, and how far that is attributed.

    A NamedTuple, not a frozen dataclass: every sandbox (every workflow-cache miss)
    creates this class again, and a dataclass generates its methods through exec.
    """

    actor: str
    reason: str
    attribution: Attribution
    problem: str | None = None
    token: str | None = None

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
    value = args[0]
    token = value.get("token") if isinstance(value, dict) else None
    token = token if isinstance(token, str) and 0 < len(token) <= 16_384 else None
    try:
        cancel = CancelInput.model_validate(value)
    except ValidationError as exc:
        return ReceivedCancel(MALFORMED, "", "malformed", _malformed(exc), token)
    return ReceivedCancel(cancel.requested_by, cancel.reason, "claimed", token=cancel.token)


def cancel_history_problem(
    received: ReceivedCancel, workflow_id: str, tokens_required: bool
) -> str | None:
    """Why this cancel must not be written to the run's history (update validator) or
    must be refused (signal), from its shape alone; None when it may go on.

    A token must be narrowed to exactly this run and reason; where tokens are required
    a cancel without one, or malformed, is refused.
    """
    if received.token is not None and received.attribution != "malformed":
        return cancel_narrowing_problem(received.token, cancel_scope(workflow_id, received.reason))
    if received.problem is not None and (tokens_required or received.token is not None):
        return received.problem
    if tokens_required:
        return (
            "this tenant's approvals need principal tokens, and so does a cancel: "
            "`stead cancel RUN --as <principal> --token-file <file>`"
        )
    return None


def _malformed(exc: ValidationError) -> str:
    """Field paths and messages only: pydantic's default text quotes the input."""
    problems = [
        f"{'.'.join(str(p) for p in err['loc']) or 'input'}: {err['msg']}"
        for err in exc.errors(include_url=False, include_input=False)
    ]
    return "cancel input is malformed: " + "; ".join(problems[:5])
