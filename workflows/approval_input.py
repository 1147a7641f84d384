"""Reading an approval from its raw payload, and deciding what may enter history.

Deterministic helpers for the run workflow's approval handlers (no I/O, no clock).

The handlers take ``*args`` of plain JSON values instead of one ``ApprovalInput``.
With a typed parameter the SDK validates first: input that does not fit is dropped
(a signal, with only a worker log line) or rejected (an update) before any Stead
code runs, so the refusal could not be audited. And a signal sent with no argument,
or two, made the SDK call the handler with the wrong arity: the TypeError failed the
workflow task, and since the signal stays in history, every retry failed again, so
one signal wedged the run for good. Here any number of arguments becomes either an
``ApprovalInput`` or a one-line reason, plus what the audit row needs (who claimed
to vote, on which step), never quoting a token. (A payload whose encoding is not
JSON at all still fails the SDK's decoding and is dropped with a worker log line.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from pydantic import ValidationError
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from stead.contracts.approval_token import (
        MAX_TOKEN_CHARS,
        ApprovalScope,
        exposed_revocation_ids,
        narrowing_problem,
    )
    from stead.contracts.run import ApprovalInput

_PRINCIPAL: Final = re.compile(r"^(user|agent|service|group):[A-Za-z0-9._@+-]{1,128}$")
_STEP: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
UNKNOWN_ACTOR: Final = "unknown:malformed-approval"


class Received(NamedTuple):
    """One approval attempt as received: the approval, or why it is malformed.

    A NamedTuple, not a frozen dataclass: every sandbox (every workflow-cache miss)
    creates this class again, and a dataclass generates its methods through exec.
    """

    approval: ApprovalInput | None
    problem: str | None
    actor: str
    step_id: str | None
    verdict: str | None
    token: str | None


def receive(args: Sequence[Any]) -> Received:
    """Validate the handler's arguments (one JSON object is expected); never raises."""
    if len(args) != 1:
        problem = f"approval input must be exactly one JSON object, got {len(args)} arguments"
        return Received(None, problem, UNKNOWN_ACTOR, None, None, None)
    value = args[0]
    fields = value if isinstance(value, dict) else {}
    actor = _claimed(fields.get("approver"), _PRINCIPAL) or UNKNOWN_ACTOR
    step_id = _claimed(fields.get("step_id"), _STEP)
    verdict = fields.get("verdict") if fields.get("verdict") in ("approve", "reject") else None
    token = fields.get("token")
    token = token if isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_CHARS else None
    if not isinstance(value, dict):
        problem = f"approval input must be a JSON object, got {type(value).__name__}"
        return Received(None, problem, actor, step_id, verdict, token)
    try:
        approval = ApprovalInput.model_validate(value)
    except ValidationError as exc:
        return Received(None, _malformed(exc), actor, step_id, verdict, token)
    return Received(approval, None, approval.approver, approval.step_id, approval.verdict, token)


def history_problem(approval: ApprovalInput, workflow_id: str) -> str | None:
    """Why ``approval`` must not be written to this run's history, or None.

    No token is fine here (whether the tenant needs one is the activity's call, from
    policy). A token must be narrowed to exactly this run, step, plan hash and verdict.
    """
    if approval.token is None:
        return None
    scope = ApprovalScope(
        workflow_id=workflow_id,
        step_id=approval.step_id,
        plan_hash=approval.plan_hash,
        verdict=approval.verdict,
    )
    return narrowing_problem(approval.token, scope)


def burnable(token: str | None) -> bool:
    """Whether ``token`` has revocation ids worth burning (garbage has none)."""
    return token is not None and bool(exposed_revocation_ids(token))


def _claimed(value: object, shape: re.Pattern[str]) -> str | None:
    return value if isinstance(value, str) and shape.fullmatch(value) else None


def _malformed(exc: ValidationError) -> str:
    """Field paths and messages only: pydantic's default text quotes input (tokens too)."""
    problems = [
        f"{'.'.join(str(p) for p in err['loc']) or 'input'}: {err['msg']}"
        for err in exc.errors(include_url=False, include_input=False)
    ]
    return "approval input is malformed: " + "; ".join(problems[:5])
