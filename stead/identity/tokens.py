"""Principal tokens: a credential Stead issues so an approver proves who they are.

A principal token is a biscuit signed with the identity key (``identity.key``, kept
where administrators run ``stead principal token``); verifiers hold ``identity.pub``
only. Its authority block names the tenant, the principal and the lifetime.

A bare principal token is never sent to a workflow: approvals travel in workflow
history, where every reader of the run could lift a bare token and approve other
steps with it. Instead the holder *attenuates* it offline (``scope_to_approval``,
done by ``stead approve``) with a block that only passes for one run, step, plan hash
and verdict, and expires within minutes. The verifier requires such a block: it
proves the token authorizes this approval, and that it would authorize no approval
differing in any of those four fields.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from biscuit_auth import (
    AuthorizationError,
    AuthorizerBuilder,
    Biscuit,
    BiscuitBuilder,
    BiscuitValidationError,
    BlockBuilder,
    PrivateKey,
    PublicKey,
    Rule,
)

from stead.biscuit_limits import limited
from stead.capability.authority import Clock, utcnow
from stead.contracts.approval_token import APPROVAL_BLOCK, ApprovalScope
from stead.contracts.base import Closed
from stead.contracts.cancel_token import CANCEL_BLOCK, CancelScope
from stead.contracts.token_blocks import MAX_TOKEN_CHARS
from stead.identity.errors import (
    PrincipalTokenExpired,
    PrincipalTokenInvalid,
    PrincipalTokenNotScoped,
    PrincipalTokenScopeMismatch,
    PrincipalTokenWrongTenant,
)

DEFAULT_TTL: Final = timedelta(hours=8)
MAX_TTL: Final = timedelta(days=30)
APPROVAL_TTL: Final = timedelta(minutes=5)

_PRINCIPAL_BLOCK = """
stead_token("principal", 1);
principal({tenant}, {principal});
token({token_id}, {issued_at}, {expires_at});
check if time($time), $time <= {expires_at};
"""


_CLAIMS = Rule(
    "claims($kind, $version, $tenant, $principal, $id, $issued, $expires) <-"
    " stead_token($kind, $version), principal($tenant, $principal), token($id, $issued, $expires)"
)

_AUTHORIZER = """
time({now});
approval({workflow_id}, {step_id}, {plan_hash}, {verdict});
allow if stead_token("principal", 1), principal({tenant}, $principal);
"""
# A cancel's authorizer states only a cancel: an approval-narrowed token fails it.
_CANCEL_AUTHORIZER = """
time({now});
cancel({workflow_id}, {reason_sha256});
allow if stead_token("principal", 1), principal({tenant}, $principal);
"""

# A value no real run, step, plan hash, verdict, reason or request digest can take.
_ELSEWHERE = "\x00elsewhere"


class PrincipalClaims(Closed):
    tenant: str
    principal: str
    token_id: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class IssuedPrincipalToken:
    token: str
    claims: PrincipalClaims


class PrincipalTokenIssuer:
    """Signs principal tokens; whoever holds it can impersonate any principal, so guard it."""

    def __init__(self, private_key: PrivateKey, *, clock: Clock = utcnow) -> None:
        self._key = private_key
        self._clock = clock

    def issue(
        self, tenant: str, principal: str, ttl: timedelta = DEFAULT_TTL
    ) -> IssuedPrincipalToken:
        if not timedelta(seconds=1) <= ttl <= MAX_TTL:
            raise ValueError(f"principal token ttl must be between 1 s and {MAX_TTL}, got {ttl}")
        issued_at = self._clock().astimezone(UTC).replace(microsecond=0)
        claims = PrincipalClaims(
            tenant=tenant,
            principal=principal,
            token_id=uuid.uuid4().hex,
            issued_at=issued_at,
            expires_at=issued_at + ttl,
        )
        token = BiscuitBuilder(_PRINCIPAL_BLOCK, claims.model_dump()).build(self._key)
        return IssuedPrincipalToken(token=token.to_base64(), claims=claims)


def scope_to_approval(
    token: str,
    public_key: PublicKey,
    scope: ApprovalScope,
    *,
    ttl: timedelta = APPROVAL_TTL,
    clock: Clock = utcnow,
) -> str:
    """Attenuate a principal token to one approval (needs the public key, not the private one)."""
    return narrow(token, public_key, APPROVAL_BLOCK, scope, ttl=ttl, clock=clock)


def scope_to_cancel(
    token: str,
    public_key: PublicKey,
    scope: CancelScope,
    *,
    ttl: timedelta = APPROVAL_TTL,
    clock: Clock = utcnow,
) -> str:
    """Attenuate a principal token to one cancel of one run, for one reason."""
    return narrow(token, public_key, CANCEL_BLOCK, scope, ttl=ttl, clock=clock)


def narrow(
    token: str, public_key: PublicKey, block: str, scope: Closed, *, ttl: timedelta, clock: Clock
) -> str:
    """Append a narrowing ``block`` (biscuit source with ``scope``'s fields and an
    ``expires_at`` as parameters): what every ``scope_to_*`` does, offline."""
    biscuit = _parse(token, public_key)
    expires_at = clock().astimezone(UTC).replace(microsecond=0) + ttl
    narrowed = BlockBuilder(block, {**scope.model_dump(), "expires_at": expires_at})
    return biscuit.append(narrowed).to_base64()


def read_claims(token: str, public_key: PublicKey, *, clock: Clock = utcnow) -> PrincipalClaims:
    """The signed claims of a token, checking only the signature (for display and the CLI)."""
    return _claims(_parse(token, public_key), clock().astimezone(UTC))


class PrincipalTokenVerifier:
    """Checks principal tokens with the identity public key; holds no secret."""

    def __init__(self, public_key: PublicKey, *, clock: Clock = utcnow) -> None:
        self._public_key = public_key
        self._clock = clock

    def claims(self, token: str) -> PrincipalClaims:
        """The signed claims of ``token`` (signature checked, nothing else); raises if forged."""
        return read_claims(token, self._public_key, clock=self._clock)

    @property
    def public_key(self) -> PublicKey:
        """The identity public key (start tokens are checked with it too)."""
        return self._public_key

    def verify_approval(self, token: str, *, tenant: str, scope: ApprovalScope) -> PrincipalClaims:
        """Claims of a token that proves its principal for exactly this approval; raises why not."""
        return verify_narrowed(
            token,
            self._public_key,
            self._clock().astimezone(UTC),
            tenant,
            _AUTHORIZER,
            scope.model_dump(),
            what="approval",
            fix="Approve with `stead approve`, or make the signal input with "
            "`stead principal sign-approval`",
        )

    def verify_cancel(self, token: str, *, tenant: str, scope: CancelScope) -> PrincipalClaims:
        """Claims of a token that proves its principal for exactly this cancel; raises why not."""
        return verify_narrowed(
            token,
            self._public_key,
            self._clock().astimezone(UTC),
            tenant,
            _CANCEL_AUTHORIZER,
            scope.model_dump(),
            what="cancel",
            fix="Cancel with `stead cancel RUN --as <principal> --token-file <file>`",
        )


def verify_narrowed(
    token: str,
    public_key: PublicKey,
    now: datetime,
    tenant: str,
    authorizer: str,
    facts: dict[str, Any],
    *,
    what: str,
    fix: str,
) -> PrincipalClaims:
    """Claims of a token that passes ``authorizer`` for exactly these ``facts`` (one
    approval, cancel or start), and for no others differing in any one; raises why not.

    The second half is what makes a bare token fail: it would pass for every value."""
    biscuit = _parse(token, public_key)
    claims = current_claims(biscuit, now, tenant)
    problem = _authorization_problem(biscuit, now, tenant, facts, authorizer)
    if problem is not None:
        raise PrincipalTokenScopeMismatch(
            f"principal token of {claims.principal} does not authorize this {what}: {problem}",
            token_id=claims.token_id,
        )
    for field in facts:
        elsewhere = {**facts, field: _ELSEWHERE}
        if _authorization_problem(biscuit, now, tenant, elsewhere, authorizer) is None:
            raise PrincipalTokenNotScoped(
                f"principal token of {claims.principal} is not narrowed to this {what}'s "
                f"{field}; a bare token in the run's history could be lifted and reused by "
                f"any reader. {fix}",
                token_id=claims.token_id,
            )
    return claims


def current_claims(biscuit: Biscuit, now: datetime, tenant: str) -> PrincipalClaims:
    """The token's claims if its lifetime is sane, it has not expired and it was issued
    for ``tenant``; raises why not. Every narrowed use (approvals, starts) starts here."""
    claims = _claims(biscuit, now)
    if claims.expires_at - claims.issued_at > MAX_TTL:
        raise PrincipalTokenInvalid(
            f"principal token {claims.token_id} claims a lifetime above {MAX_TTL}",
            token_id=claims.token_id,
        )
    if now >= claims.expires_at:
        raise PrincipalTokenExpired(
            f"principal token of {claims.principal} expired at {claims.expires_at.isoformat()}; "
            "get a new one with `stead principal token`",
            token_id=claims.token_id,
        )
    if claims.tenant != tenant:
        raise PrincipalTokenWrongTenant(
            f"principal token was issued for tenant {claims.tenant}, not {tenant}",
            token_id=claims.token_id,
        )
    return claims


def _parse(token: str, public_key: PublicKey) -> Biscuit:
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise PrincipalTokenInvalid("principal token is empty or too long to be one of ours")
    try:
        return Biscuit.from_base64(token, public_key)
    except BiscuitValidationError:
        raise PrincipalTokenInvalid(
            "principal token failed signature verification: not issued by this Stead's "
            "identity key, or altered since"
        ) from None


def _claims(biscuit: Biscuit, now: datetime) -> PrincipalClaims:
    found = limited(AuthorizerBuilder("time({now});", {"now": now})).build(biscuit).query(_CLAIMS)
    if len(found) != 1:
        raise PrincipalTokenInvalid(
            f"principal token carries {len(found)} claim sets; exactly one is required"
        )
    terms: list[Any] = found[0].terms
    kind, version, tenant, principal, token_id, issued_at, expires_at = terms
    if (kind, version) != ("principal", 1):
        raise PrincipalTokenInvalid(f"token is a {kind!r} v{version} token, not a principal token")
    try:
        return PrincipalClaims(
            tenant=tenant,
            principal=principal,
            token_id=token_id,
            issued_at=issued_at,
            expires_at=expires_at,
        )
    except ValueError as exc:
        raise PrincipalTokenInvalid(f"principal token claims are malformed: {exc}") from None


def _authorization_problem(
    biscuit: Biscuit,
    now: datetime,
    tenant: str,
    facts: dict[str, Any],
    authorizer: str = _AUTHORIZER,
) -> str | None:
    """None when every check of every block passes for these facts, else why not."""
    params = {"now": now, "tenant": tenant, **facts}
    try:
        limited(AuthorizerBuilder(authorizer, params)).build(biscuit).authorize()
    except AuthorizationError as exc:
        return str(exc)
    return None
