"""Verifying a capability token with the authority's *public* key, and nothing else.

This is what an adapter host (a main worker, or an edge worker that holds no signing
key) runs before any adapter code: the signature proves the authority checked a
recorded allow; the claims must match the step about to run field for field; the
lifetime must not have passed. Facts a holder appends in attenuation blocks are not
trusted (biscuit scopes them away), so attenuation can narrow a token but never
re-aim it; checks it appends still bind.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any, Final

from biscuit_auth import (
    AuthorizationError,
    Authorizer,
    AuthorizerBuilder,
    Biscuit,
    BiscuitValidationError,
    PublicKey,
    Rule,
)

from stead.biscuit_limits import limited
from stead.capability.authority import Clock, utcnow
from stead.capability.claims import MAX_TTL, CapabilityClaims, CapabilityScope
from stead.capability.errors import CapabilityExpired, CapabilityInvalid, CapabilityMismatch

MAX_TOKEN_CHARS: Final = 8_192

_CLAIMS = Rule(
    "claims($kind, $version, $tenant, $workflow, $run, $step, $operation, $args, $key,"
    " $decision, $id, $issued, $expires) <- stead_token($kind, $version),"
    " capability($tenant, $workflow, $run, $step, $operation),"
    " effect($args, $key, $decision), token($id, $issued, $expires)"
)

_AUTHORIZER = """
time({now});
allow if stead_token("capability", 1),
    capability({tenant}, {workflow_id}, {run_id}, {step_id}, {operation}),
    effect({args_hash}, {idempotency_key}, {decision_id});
"""


class CapabilityVerifier:
    """Checks tokens against one public key; holds no secret at all."""

    def __init__(self, public_key: PublicKey, *, clock: Clock = utcnow) -> None:
        self._public_key = public_key
        self._clock = clock

    def verify(self, token: str, expected: CapabilityScope) -> CapabilityClaims:
        """The token's claims when it grants exactly ``expected`` now; raises why not.

        One authorizer (the time fact and the allow policy for ``expected``) both reads
        the claims and, once they are checked field by field, authorizes: building a
        second one just to read the claims cost a Datalog parse per step and checked
        nothing more (a query runs no policy).
        """
        biscuit = self._parse(token)
        now = self._clock().astimezone(UTC)
        authorizer = limited(
            AuthorizerBuilder(_AUTHORIZER, {"now": now, **expected.model_dump()})
        ).build(biscuit)
        claims = _claims(authorizer)
        different = claims.mismatches(expected)
        if different:
            raise CapabilityMismatch(
                f"capability token {claims.token_id} was minted for another effect "
                f"({', '.join(different)} differ); refusing to run step {expected.step_id}",
                fields=different,
                token_id=claims.token_id,
            )
        if claims.expires_at - claims.issued_at > MAX_TTL:
            raise CapabilityInvalid(
                f"capability token {claims.token_id} claims a lifetime above {MAX_TTL}",
                token_id=claims.token_id,
            )
        if now >= claims.expires_at:
            raise CapabilityExpired(
                f"capability token {claims.token_id} expired at {claims.expires_at.isoformat()}",
                token_id=claims.token_id,
            )
        try:
            authorizer.authorize()
        except AuthorizationError as exc:
            raise CapabilityInvalid(
                f"capability token {claims.token_id} failed its own checks: {exc}",
                token_id=claims.token_id,
            ) from None
        return claims

    def _parse(self, token: str) -> Biscuit:
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise CapabilityInvalid("capability token is empty or too long to be one of ours")
        try:
            return Biscuit.from_base64(token, self._public_key)
        except BiscuitValidationError:
            raise CapabilityInvalid(
                "capability token failed signature verification: not signed by this "
                "Stead's capability authority, or altered since"
            ) from None


def _claims(authorizer: Authorizer) -> CapabilityClaims:
    """Read the authority block's claims; anything but exactly one complete set is invalid."""
    found = authorizer.query(_CLAIMS)
    if len(found) != 1:
        raise CapabilityInvalid(
            f"capability token carries {len(found)} claim sets; exactly one is required"
        )
    terms: list[Any] = found[0].terms
    kind, version, *scope, token_id, issued_at, expires_at = terms
    if (kind, version) != ("capability", 1):
        raise CapabilityInvalid(f"token is a {kind!r} v{version} token, not a capability")
    names = list(CapabilityScope.model_fields)
    try:
        return CapabilityClaims(
            **dict(zip(names, scope, strict=True)),
            token_id=token_id,
            issued_at=issued_at,
            expires_at=expires_at,
        )
    except (TypeError, ValueError) as exc:
        raise CapabilityInvalid(f"capability token claims are malformed: {exc}") from None
