"""The capability authority: the only holder of the signing key, and it signs only after an allow.

Before minting, the authority reads the decision the step names from the ``decisions``
table (inside the tenant's RLS transaction) and refuses unless it is a recorded
*allow* for that very run and step. The workflow asks nothing of it: the execute
activity calls it on the worker at execution time, so a token exists only for the
few seconds between minting and use and never enters workflow history.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import asyncpg
from biscuit_auth import BiscuitBuilder, PrivateKey

from stead.audit.chain import DECISION_MAC_COLUMNS, decision_row_verified
from stead.capability.claims import DEFAULT_TTL, MAX_TTL, CapabilityClaims, CapabilityScope
from stead.capability.errors import NoAllowDecision
from stead.db.pool import tenant_transaction

Clock = Callable[[], datetime]

# The authority block. Facts are what the token claims; the check makes any
# verifier that supplies the current time refuse it after expiry, even one that
# forgets to compare expires_at itself.
AUTHORITY_BLOCK = """
stead_token("capability", 1);
capability({tenant}, {workflow_id}, {run_id}, {step_id}, {operation});
effect({args_hash}, {idempotency_key}, {decision_id});
token({token_id}, {issued_at}, {expires_at});
check if time($time), $time <= {expires_at};
"""


def utcnow() -> datetime:
    return datetime.now(UTC)


class CapabilityIssuer(Protocol):
    """Where the execution boundary gets a token for a step it is about to run."""

    async def issue(self, scope: CapabilityScope) -> str: ...


@dataclass(frozen=True)
class IssuedCapability:
    token: str
    claims: CapabilityClaims


class CapabilityAuthority:
    """Mints capability tokens with the private key, for steps policy allowed."""

    def __init__(
        self,
        private_key: PrivateKey,
        pool: asyncpg.Pool,
        *,
        ttl: timedelta = DEFAULT_TTL,
        clock: Clock = utcnow,
    ) -> None:
        if not timedelta(seconds=1) <= ttl <= MAX_TTL:
            raise ValueError(f"capability ttl must be between 1 s and {MAX_TTL}, got {ttl}")
        self._key = private_key
        self._pool = pool
        self._ttl = ttl
        self._clock = clock

    async def issue(self, scope: CapabilityScope) -> str:
        """A token for ``scope``, once the recorded decision is checked to be its allow."""
        return (await self.authorize(scope)).token

    async def authorize(
        self, scope: CapabilityScope, *, ttl: timedelta | None = None
    ) -> IssuedCapability:
        """Check the recorded decision, then sign; ``ttl`` (≤ 5 min) overrides the default."""
        await self._check_decision(scope)
        return self.sign(scope, ttl=ttl)

    def sign(self, scope: CapabilityScope, *, ttl: timedelta | None = None) -> IssuedCapability:
        """Sign ``scope`` without reading the decision log (``authorize`` is the checked path)."""
        lifetime = self._ttl if ttl is None else ttl
        if not timedelta(seconds=1) <= lifetime <= MAX_TTL:
            raise ValueError(f"capability ttl must be between 1 s and {MAX_TTL}, got {lifetime}")
        issued_at = self._clock().astimezone(UTC).replace(microsecond=0)
        claims = CapabilityClaims(
            **scope.model_dump(),
            token_id=uuid.uuid4().hex,
            issued_at=issued_at,
            expires_at=issued_at + lifetime,
        )
        builder = BiscuitBuilder(AUTHORITY_BLOCK, claims.model_dump())
        return IssuedCapability(token=builder.build(self._key).to_base64(), claims=claims)

    async def issue_in(self, conn: asyncpg.Connection, scope: CapabilityScope) -> str:
        """``issue`` with the decision read on the caller's ``tenant_transaction``.

        The execution boundary checks, spends and records intent in one transaction;
        reading the decision there saves a transaction per step and sees exactly the
        row that transaction builds on.
        """
        await self._check_decision_on(conn, scope)
        return self.sign(scope).token

    async def _check_decision(self, scope: CapabilityScope) -> None:
        async with tenant_transaction(self._pool, scope.tenant) as conn:
            await self._check_decision_on(conn, scope)

    async def _check_decision_on(self, conn: asyncpg.Connection, scope: CapabilityScope) -> None:
        row = await conn.fetchrow(
            f"SELECT {DECISION_MAC_COLUMNS} FROM decisions WHERE decision_id = $1",
            scope.decision_id,
        )
        if row is not None and not decision_row_verified(row):
            raise NoAllowDecision(
                f"decision {scope.decision_id} for step {scope.step_id} of {scope.workflow_id} "
                "carries no valid MAC: it was not recorded by a worker, so the capability "
                "authority signs nothing for it"
            )
        if (
            row is None
            or row["outcome"] != "allow"
            or row["blocked"] is not None
            or row["workflow_id"] != scope.workflow_id
            or row["step_id"] != scope.step_id
        ):
            raise NoAllowDecision(
                f"no recorded allow decision {scope.decision_id} for step {scope.step_id} of "
                f"{scope.workflow_id}; the capability authority signs nothing for it"
            )
