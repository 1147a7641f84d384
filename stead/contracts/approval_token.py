"""What a principal token must look like before it may enter a run's history.

Approvals travel in workflow history, and anyone who can read a history could lift a
token from it. A *bare* principal token there is a standing credential: narrowed by
the lifter (``scope_to_approval`` needs only the public key), it approves any step of
the principal's tenant. So only a token *narrowed* to exactly one approval may be
written: it carries a block that holds nothing but

    check if approval("<workflow id>", "<step id>", "<plan hash>", "<verdict>");
    check if time($time), $time <= <expiry>;

which ``stead.identity.tokens.scope_to_approval`` appends (``APPROVAL_BLOCK``).

``narrowing_problem`` decides that from the token's structure alone, without keys and
without I/O, so the ``approve`` update's validator can refuse anything else *before*
Temporal writes it. It is deterministic (biscuit parsing only). It checks the shape,
not the signature: the activity verifies the signature and evaluates the checks, and a
forged token that passes here is refused there. The block must hold only those two
checks: a block may also carry its own facts, and a check is satisfied by facts of its
own block, so an ``approval(...)`` fact beside the check would make it pass anywhere.

Signals are always written to history, so a token that fails this check there is
exposed; ``exposed_revocation_ids`` says which of its revocation ids to burn.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from biscuit_auth import UnverifiedBiscuit

from stead.contracts.base import Closed
from stead.contracts.cancel_token import narrows_a_cancel
from stead.contracts.token_blocks import EXPIRY_CHECK, narrowing_values, printed_blocks

# Re-exported: the workflow's approval validator (workflows/approval_input.py) bounds a
# token's length with it before anything else.
from stead.contracts.token_blocks import MAX_TOKEN_CHARS as MAX_TOKEN_CHARS

Verdict = Literal["approve", "reject"]

# The text of stead's narrowing block, with biscuit parameters.
APPROVAL_CHECK: Final = "check if approval({workflow_id}, {step_id}, {plan_hash}, {verdict});"
APPROVAL_BLOCK: Final = f"\n{APPROVAL_CHECK}\n{EXPIRY_CHECK}\n"

# How biscuit prints the approval check (strings are printed between quotes, unescaped).
_PRINTED_APPROVAL: Final = re.compile(
    r'^check if approval\("([^"\\]*)", "([^"\\]*)", "([^"\\]*)", "(approve|reject)"\);$'
)

NOT_NARROWED_FIX: Final = (
    "approve with `stead approve ... --token-file <file>`, or make the signal input "
    "with `stead principal sign-approval`: both narrow the token to this one approval"
)


class ApprovalScope(Closed):
    """The one approval a narrowed token may be used for."""

    workflow_id: str
    step_id: str
    plan_hash: str
    verdict: Verdict


def narrowing_problem(token: str, scope: ApprovalScope) -> str | None:
    """Why ``token`` may not enter the history of ``scope``'s approval, or None.

    None means: the token has a block narrowing it to exactly this run, step, plan
    hash and verdict, with an expiry. Everything else (garbage, oversized, bare, or
    narrowed to another approval) gets a one-line reason that never quotes the token.
    """
    blocks = printed_blocks(token)
    if isinstance(blocks, str):
        return blocks
    scopes = [s for s in (_narrowed_to(b) for b in blocks[1:]) if s is not None]
    if scope in scopes:
        return None
    if scopes:
        other = scopes[0]
        return (
            f"the principal token is narrowed to another approval (run {other.workflow_id}, "
            f"step {other.step_id}, verdict {other.verdict}), not this one; {NOT_NARROWED_FIX}"
        )
    return (
        "the principal token is not narrowed to this approval: a bare token in the run's "
        f"history could be lifted and reused by anyone who reads it; {NOT_NARROWED_FIX}"
    )


def exposed_revocation_ids(token: str) -> tuple[str, ...]:
    """The revocation ids that revoke what ``token`` can do beyond one stead approval.

    A bare token (no narrowing block) is burned whole, authority block included, so
    nothing derived from it passes again. A token narrowed to some approval only loses
    that narrowed derivation: its principal's own token never left their hands.
    Garbage yields nothing (it is nobody's token).
    """
    blocks = printed_blocks(token)
    if isinstance(blocks, str):
        return ()
    try:
        ids = tuple(UnverifiedBiscuit.from_base64(token).revocation_ids)
    except Exception:
        return ()
    # A block narrowing to a cancel (``cancel_token``) counts the same way: burning a
    # lifted cancel token must not revoke the principal's own token.
    for index, block in enumerate(blocks[1:], start=1):
        if _narrowed_to(block) is not None or narrows_a_cancel(block):
            return ids[index:]
    return ids


def _narrowed_to(block: str) -> ApprovalScope | None:
    """The approval a block narrows to, if it is exactly stead's narrowing block."""
    values = narrowing_values(block, _PRINTED_APPROVAL)
    if values is None:
        return None
    workflow_id, step_id, plan_hash, verdict = values
    return ApprovalScope(
        workflow_id=workflow_id,
        step_id=step_id,
        plan_hash=plan_hash,
        verdict="approve" if verdict == "approve" else "reject",
    )
