"""Start tokens: a principal token narrowed to one run start, so a start proves its starter.

``stead run --token-file`` (and the webhook, the demos) hold a bare principal token
and attenuate it offline (``scope_to_start``) with a block that passes only for one
workflow id and one request digest (tenant, principal, source, inputs, budget,
options, deadline, labels: the whole ``RunRequest``), and expires within minutes.
Only that narrowed copy enters the run's history. A reader who lifts it can at most
replay the very same start of the very same workflow id, which ``runs.open`` refuses
once that id is recorded for another run chain.

The verifier insists on the narrowing exactly as approvals do: the token must
authorize this start, and must authorize no start differing in the workflow id or
the digest (else it is a bare token, ``PrincipalTokenNotScoped``). An approval-scoped
token is no start token (its ``approval(...)`` check never passes here) and a
start-scoped token approves nothing.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any, Final

from biscuit_auth import AuthorizationError, AuthorizerBuilder, Biscuit, BlockBuilder, PublicKey

from stead.biscuit_limits import limited
from stead.capability.authority import Clock, utcnow
from stead.contracts.base import Closed
from stead.identity.errors import PrincipalTokenNotScoped, PrincipalTokenScopeMismatch
from stead.identity.tokens import PrincipalClaims, _parse, current_claims

START_TTL: Final = timedelta(minutes=10)

_START_BLOCK = """
check if start({workflow_id}, {request_digest});
check if time($time), $time <= {expires_at};
"""

_AUTHORIZER = """
time({now});
start({workflow_id}, {request_digest});
allow if stead_token("principal", 1), principal({tenant}, $principal);
"""

# A value no real workflow id or digest can take.
_ELSEWHERE = "\x00elsewhere"


class StartScope(Closed):
    """The one start a narrowed token may be used for."""

    workflow_id: str
    request_digest: str


def scope_to_start(
    token: str,
    public_key: PublicKey,
    scope: StartScope,
    *,
    ttl: timedelta = START_TTL,
    clock: Clock = utcnow,
) -> str:
    """Attenuate a principal token to one start (needs the public key, not the private one)."""
    biscuit = _parse(token, public_key)
    expires_at = clock().astimezone(UTC).replace(microsecond=0) + ttl
    block = BlockBuilder(_START_BLOCK, {**scope.model_dump(), "expires_at": expires_at})
    return biscuit.append(block).to_base64()


def verify_start(
    token: str,
    public_key: PublicKey,
    *,
    tenant: str,
    scope: StartScope,
    clock: Clock = utcnow,
) -> PrincipalClaims:
    """Claims of a token that proves its principal for exactly this start; raises why not."""
    biscuit = _parse(token, public_key)
    now = clock().astimezone(UTC)
    claims = current_claims(biscuit, now, tenant)
    facts = scope.model_dump()
    problem = _problem(biscuit, now, tenant, facts)
    if problem is not None:
        raise PrincipalTokenScopeMismatch(
            f"principal token of {claims.principal} does not authorize this start "
            f"(expired, or narrowed to another workflow id or request): {problem}",
            token_id=claims.token_id,
        )
    for field in facts:
        if _problem(biscuit, now, tenant, {**facts, field: _ELSEWHERE}) is None:
            raise PrincipalTokenNotScoped(
                f"principal token of {claims.principal} is not narrowed to this start's "
                f"{field}; a bare token in the run's history could be lifted by any reader. "
                "Start with `stead run --token-file`, which narrows it",
                token_id=claims.token_id,
            )
    return claims


def _problem(biscuit: Biscuit, now: Any, tenant: str, start: dict[str, Any]) -> str | None:
    """None when every check of every block passes for this start, else why not."""
    params = {"now": now, "tenant": tenant, **start}
    try:
        limited(AuthorizerBuilder(_AUTHORIZER, params)).build(biscuit).authorize()
    except AuthorizationError as exc:
        return str(exc)
    return None
