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

Verdict = Literal["approve", "reject"]

# The text of stead's narrowing block, with biscuit parameters.
APPROVAL_CHECK: Final = "check if approval({workflow_id}, {step_id}, {plan_hash}, {verdict});"
EXPIRY_CHECK: Final = "check if time($time), $time <= {expires_at};"
APPROVAL_BLOCK: Final = f"\n{APPROVAL_CHECK}\n{EXPIRY_CHECK}\n"

MAX_TOKEN_CHARS: Final = 16_384
# A principal token has an authority block and usually one narrowing block; a few more
# attenuations are legitimate, dozens are an attempt to make parsing expensive.
MAX_BLOCKS: Final = 8
_SHAPE: Final = re.compile(r"^[A-Za-z0-9_-]{16,}={0,2}$")
# How biscuit prints the two checks (strings are printed between quotes, unescaped).
_PRINTED_APPROVAL: Final = re.compile(
    r'^check if approval\("([^"\\]*)", "([^"\\]*)", "([^"\\]*)", "(approve|reject)"\);$'
)
_PRINTED_EXPIRY: Final = re.compile(
    r"^check if time\(\$time\), \$time <= \d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z;$"
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
    blocks = _blocks(token)
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
    blocks = _blocks(token)
    if isinstance(blocks, str):
        return ()
    try:
        ids = tuple(UnverifiedBiscuit.from_base64(token).revocation_ids)
    except Exception:
        return ()
    # A block narrowing to a cancel (``cancel_token``) counts the same way: burning a
    # lifted cancel token must not revoke the principal's own token.
    from stead.contracts.cancel_token import narrows_a_cancel

    for index, block in enumerate(blocks[1:], start=1):
        if _narrowed_to(block) is not None or narrows_a_cancel(block):
            return ids[index:]
    return ids


def revocation_ids(token: str) -> tuple[str, ...]:
    """All of ``token``'s revocation ids (one per block), or none for garbage."""
    if isinstance(_blocks(token), str):
        return ()
    try:
        return tuple(UnverifiedBiscuit.from_base64(token).revocation_ids)
    except Exception:
        return ()


def printed_blocks(token: str) -> list[str] | str:
    """The printed source of each block of ``token``, or why it is not one we would read
    (no keys, no I/O; a cancel's narrowing is read the same way, ``cancel_token``)."""
    return _blocks(token)


def _blocks(token: str) -> list[str] | str:
    """The printed source of each block, or why ``token`` is not a biscuit we would read."""
    if not isinstance(token, str) or not token:
        return "the principal token is empty"
    if len(token) > MAX_TOKEN_CHARS:
        return f"the principal token is longer than {MAX_TOKEN_CHARS} characters"
    if not _SHAPE.fullmatch(token):
        return (
            "the principal token is not URL-safe base64; "
            "pass the text `stead principal token` printed"
        )
    try:
        parsed = UnverifiedBiscuit.from_base64(token)
        count = parsed.block_count()
        if count > MAX_BLOCKS:
            return f"the principal token has {count} blocks; at most {MAX_BLOCKS} are accepted"
        return [parsed.block_source(i) for i in range(count)]
    except Exception:
        return (
            "the principal token is not a biscuit token; "
            "pass the text `stead principal token` printed"
        )


def _narrowed_to(block: str) -> ApprovalScope | None:
    """The approval a block narrows to, if it is exactly stead's narrowing block."""
    lines = [line.strip() for line in block.splitlines() if line.strip()]
    if len(lines) != 2 or not _PRINTED_EXPIRY.fullmatch(lines[1]):
        return None
    found = _PRINTED_APPROVAL.fullmatch(lines[0])
    if found is None:
        return None
    workflow_id, step_id, plan_hash, verdict = found.groups()
    return ApprovalScope(
        workflow_id=workflow_id,
        step_id=step_id,
        plan_hash=plan_hash,
        verdict="approve" if verdict == "approve" else "reject",
    )
