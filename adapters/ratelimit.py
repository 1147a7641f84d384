"""Per-tenant rate limits: a token bucket per (tenant, operation) in Postgres.

Why Postgres and not memory: a tenant's steps run on whichever worker polls first,
and edge workers run on other machines. A per-worker bucket would let N workers
grant N times the limit; one row per bucket, locked for the few milliseconds of a
check, gives every worker the same answer, on the database's clock.

Why reservations: when the bucket is empty, the step takes the *next* token in
advance (the balance goes negative) and is told exactly when it is ready. The
activity fails once with that delay (``next_retry_delay``); its retry finds the
reservation and proceeds without drawing again. Throttling therefore costs a step
one attempt, however many steps queue behind the limit, and steps get their slots
in arrival order instead of racing each other through their retry budgets.

The check runs after the effect ledger has the step's intent and before the
adapter is called, so a replayed step (already completed) costs no token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from stead.db.pool import tenant_transaction
from stead.operations.base import Operation
from stead.settings import RateLimitSetting

# The ApplicationError type an over-limit attempt fails with (retryable, with a delay).
RATE_LIMITED = "RateLimited"
# A retry is scheduled this much after the reservation is ready, and a reservation
# counts as ready this much early, so timer jitter never costs a second attempt.
MARGIN_SECONDS = 0.05
# Reservations of steps that never came back (cancelled runs) are dropped after this.
STALE_RESERVATION = timedelta(hours=1)

_ENSURE = """
INSERT INTO rate_buckets (tenant, operation, tokens, refilled_at)
VALUES ($1, $2, $3, clock_timestamp())
ON CONFLICT (tenant, operation) DO NOTHING
"""
_LOCK = """
SELECT tokens, refilled_at FROM rate_buckets
WHERE tenant = $1 AND operation = $2
FOR UPDATE
"""
# Read after the lock is held: the time must be the time of *this* decision.
_NOW_AND_RESERVATION = """
SELECT clock_timestamp() AS now,
       (SELECT ready_at FROM rate_reservations
        WHERE tenant = $1 AND idempotency_key = $2) AS ready_at
"""
_UPDATE = """
UPDATE rate_buckets SET tokens = $3, refilled_at = $4
WHERE tenant = $1 AND operation = $2
"""
_RESERVE = """
INSERT INTO rate_reservations (tenant, idempotency_key, operation, ready_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant, idempotency_key) DO UPDATE SET ready_at = EXCLUDED.ready_at
"""
_RELEASE = "DELETE FROM rate_reservations WHERE tenant = $1 AND idempotency_key = $2"
_SWEEP = "DELETE FROM rate_reservations WHERE tenant = $1 AND ready_at < $2"


@dataclass(frozen=True)
class RateLimit:
    """``per_minute`` calls per minute for one tenant, in bursts of at most ``burst``."""

    per_minute: int
    burst: int

    @property
    def per_second(self) -> float:
        return self.per_minute / 60.0


class RateLimited(Exception):
    """The tenant is over the operation's limit; this step holds the slot ``retry_after`` away."""

    def __init__(self, tenant: str, operation: str, limit: RateLimit, retry_after: float) -> None:
        self.tenant = tenant
        self.operation = operation
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(
            f"tenant {tenant} is over its limit of {limit.per_minute}/min for {operation}; "
            f"the step holds the next slot and runs again in {retry_after:.2f} s"
        )

    @property
    def details(self) -> dict[str, Any]:
        return {
            "reason": "rate_limited",
            "operation": self.operation,
            "per_minute": self.limit.per_minute,
            "retry_after_seconds": round(self.retry_after, 3),
        }


class RateLimiter:
    """Grants or defers a call for (tenant, operation); see the module docstring."""

    def __init__(
        self, pool: asyncpg.Pool, overrides: Mapping[str, RateLimitSetting] | None = None
    ) -> None:
        self._pool = pool
        self._overrides = dict(overrides or {})

    def limit_for(self, tenant: str, op: Operation[Any, Any]) -> RateLimit | None:
        """The operator's override for this tenant, else for everyone, else the declared limit."""
        override = self._overrides.get(f"{tenant}/{op.name}") or self._overrides.get(op.name)
        if override is not None:
            return RateLimit(override.per_minute, override.burst or override.per_minute)
        if op.rate_limit_per_minute is None:
            return None
        return RateLimit(op.rate_limit_per_minute, op.rate_limit_burst or op.rate_limit_per_minute)

    async def acquire(self, tenant: str, op: Operation[Any, Any], idempotency_key: str) -> None:
        """Return when the call may go ahead; raise ``RateLimited`` with the wait otherwise."""
        limit = self.limit_for(tenant, op)
        if limit is None:
            return
        async with tenant_transaction(self._pool, tenant) as conn:
            wait = await self._take(conn, tenant, op.name, idempotency_key, limit)
        # Raised after the commit: the reservation must outlive this attempt.
        if wait is not None:
            raise RateLimited(tenant, op.name, limit, wait + MARGIN_SECONDS)

    async def _take(
        self,
        conn: asyncpg.Connection,
        tenant: str,
        operation: str,
        key: str,
        limit: RateLimit,
    ) -> float | None:
        """Seconds until this step's slot, or None to proceed now. Runs under the row lock."""
        await conn.execute(_ENSURE, tenant, operation, float(limit.burst))
        bucket = await conn.fetchrow(_LOCK, tenant, operation)
        clock = await conn.fetchrow(_NOW_AND_RESERVATION, tenant, key)
        assert bucket is not None and clock is not None
        now: datetime = clock["now"]
        ready_at: datetime | None = clock["ready_at"]
        if ready_at is not None:
            wait = (ready_at - now).total_seconds()
            if wait > MARGIN_SECONDS:
                return wait  # retried early (timer jitter or a manual reset): same slot
            await conn.execute(_RELEASE, tenant, key)
            return None
        refilled_at: datetime = bucket["refilled_at"]
        elapsed = max(0.0, (now - refilled_at).total_seconds())
        balance: float = bucket["tokens"]
        tokens = min(float(limit.burst), balance + elapsed * limit.per_second) - 1.0
        await conn.execute(_UPDATE, tenant, operation, tokens, now)
        if tokens >= 0:
            return None
        wait = -tokens / limit.per_second
        await conn.execute(_RESERVE, tenant, key, operation, now + timedelta(seconds=wait))
        await conn.execute(_SWEEP, tenant, now - STALE_RESERVATION)
        return wait
