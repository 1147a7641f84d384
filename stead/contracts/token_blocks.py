"""Reading a principal token's blocks without keys: what approvals and cancels share.

A token narrowed to one approval (``approval_token``) or one cancel (``cancel_token``)
carries a last block of exactly two checks: the narrowing check, and

    check if time($time), $time <= <expiry>;

Both modules read the printed source of a token's blocks here, with the same limits,
so a token too large or too deep to parse cheaply is refused the same way for either.
Deterministic (biscuit parsing only), so workflow validators may call it.
"""

from __future__ import annotations

import re
from typing import Final

from biscuit_auth import UnverifiedBiscuit

MAX_TOKEN_CHARS: Final = 16_384
# A principal token has an authority block and usually one narrowing block; a few more
# attenuations are legitimate, dozens are an attempt to make parsing expensive.
MAX_BLOCKS: Final = 8
EXPIRY_CHECK: Final = "check if time($time), $time <= {expires_at};"

_SHAPE: Final = re.compile(r"^[A-Za-z0-9_-]{16,}={0,2}$")
# How biscuit prints the expiry check (strings are printed between quotes, unescaped).
_PRINTED_EXPIRY: Final = re.compile(
    r"^check if time\(\$time\), \$time <= \d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z;$"
)


def printed_blocks(token: str) -> list[str] | str:
    """The printed source of each block, or why ``token`` is not a biscuit we would read.

    The reason is one line and never quotes the token."""
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


def revocation_ids(token: str) -> tuple[str, ...]:
    """All of ``token``'s revocation ids (one per block), or none for garbage."""
    if isinstance(printed_blocks(token), str):
        return ()
    try:
        return tuple(UnverifiedBiscuit.from_base64(token).revocation_ids)
    except Exception:
        return ()


def narrowing_values(block: str, check: re.Pattern[str]) -> tuple[str, ...] | None:
    """The values of ``check``'s groups when ``block`` holds exactly that check and an
    expiry, else None.

    Nothing else may stand in the block: a block may carry its own facts, and a check is
    satisfied by facts of its own block, so a fact beside the check would make it pass
    anywhere."""
    lines = [line.strip() for line in block.splitlines() if line.strip()]
    if len(lines) != 2 or not _PRINTED_EXPIRY.fullmatch(lines[1]):
        return None
    found = check.fullmatch(lines[0])
    return None if found is None else found.groups()
