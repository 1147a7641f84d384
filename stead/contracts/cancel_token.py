"""What a principal token must look like before it may enter a run's history as a cancel.

The same rule as approvals (``approval_token``): a cancel travels in workflow history,
so only a token narrowed to exactly this cancel may be written there. Its narrowing
block holds nothing but

    check if cancel("<workflow id>", "<sha256 of the reason>");
    check if time($time), $time <= <expiry>;

which ``stead.identity.tokens.scope_to_cancel`` appends. An approval-narrowed token
does not pass a cancel's authorizer (no ``cancel`` fact) and a cancel-narrowed one no
approval's. A narrowed cancel token is used once: the verifying activity burns it, so
one lifted from history cannot be replayed (``exposed_revocation_ids`` in
``approval_token`` names what to burn for either kind).

Deterministic and key-free, like ``approval_token``: the run's validator checks the
shape; the activity checks the signature and evaluates the checks.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from stead.contracts.base import Closed
from stead.contracts.token_blocks import EXPIRY_CHECK, narrowing_values, printed_blocks

CANCEL_CHECK: Final = "check if cancel({workflow_id}, {reason_sha256});"
CANCEL_BLOCK: Final = f"\n{CANCEL_CHECK}\n{EXPIRY_CHECK}\n"
_PRINTED_CANCEL: Final = re.compile(r'^check if cancel\("([^"\\]*)", "([0-9a-f]{64})"\);$')
NOT_NARROWED_FIX: Final = (
    "cancel with `stead cancel RUN --as <principal> --token-file <file>`: it narrows the "
    "token to this one cancel"
)


class CancelScope(Closed):
    """The one cancel a narrowed token may be used for: this run, this reason."""

    workflow_id: str
    reason_sha256: str


def cancel_scope(workflow_id: str, reason: str) -> CancelScope:
    return CancelScope(
        workflow_id=workflow_id, reason_sha256=hashlib.sha256(reason.encode()).hexdigest()
    )


def cancel_narrowing_problem(token: str, scope: CancelScope) -> str | None:
    """Why ``token`` may not enter the history of ``scope``'s cancel, or None."""
    blocks = printed_blocks(token)
    if isinstance(blocks, str):
        return blocks
    scopes = [s for s in (_narrowed_to(b) for b in blocks[1:]) if s is not None]
    if scope in scopes:
        return None
    if any(s.workflow_id == scope.workflow_id for s in scopes):
        return (
            f"the principal token is narrowed to another reason for this cancel; {NOT_NARROWED_FIX}"
        )
    if scopes:
        return (
            f"the principal token is narrowed to a cancel of run {scopes[0].workflow_id}, not "
            f"this one; {NOT_NARROWED_FIX}"
        )
    return (
        "the principal token is not narrowed to this cancel: a bare token in the run's "
        f"history could be lifted and reused by anyone who reads it; {NOT_NARROWED_FIX}"
    )


def narrows_a_cancel(block: str) -> bool:
    """Whether a printed block is exactly stead's cancel-narrowing block."""
    return _narrowed_to(block) is not None


def _narrowed_to(block: str) -> CancelScope | None:
    values = narrowing_values(block, _PRINTED_CANCEL)
    if values is None:
        return None
    workflow_id, reason_sha256 = values
    return CancelScope(workflow_id=workflow_id, reason_sha256=reason_sha256)
