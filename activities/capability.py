"""The capability authority's activity: mint a grant for a step an edge worker will run.

Runs on the workflow's own task queue, where workers hold ``capability.key``. The token
goes to Postgres (``capability_grants``), and the workflow gets only its id: a grant
reference in history is useless without the database and grants nothing but the one
effect it names. Steps that run where the key is mint inline instead
(``activities/execution.py``).
"""

from __future__ import annotations

import asyncpg
from temporalio import activity

from activities.execution import refusal_event, refused_error
from stead.audit.log import append_event
from stead.capability import (
    MAX_TTL,
    CapabilityAuthority,
    CapabilityRefused,
    CapabilityScope,
    NoAuthority,
)
from stead.capability.ledger import store_grant
from stead.contracts import activity_names as names
from stead.contracts.activities import ExecuteStepInput
from stead.contracts.capability import CapabilityGrant
from stead.db.pool import tenant_transaction
from stead.runs.scope import ScopeClaim, tenant_scoped


class CapabilityActivities:
    def __init__(self, pool: asyncpg.Pool, authority: CapabilityAuthority | None) -> None:
        self._pool = pool
        self._authority = authority

    @activity.defn(name=names.CAPABILITY_ISSUE)
    @tenant_scoped(lambda req: ScopeClaim(req.tenant, (req.run.workflow_id,)))
    async def issue(self, req: ExecuteStepInput) -> CapabilityGrant:
        scope = CapabilityScope.for_step(req)
        try:
            if self._authority is None:
                raise NoAuthority(
                    "this worker holds no capability signing key (capability.key); run the "
                    "authority on the workflow's task queue"
                )
            # The longest life allowed: the edge may pick the task up after a queue wait.
            issued = await self._authority.authorize(scope, ttl=MAX_TTL)
        except CapabilityRefused as exc:
            async with tenant_transaction(self._pool, req.tenant) as conn:
                await append_event(conn, refusal_event(req, exc))
            raise refused_error(exc) from None
        async with tenant_transaction(self._pool, req.tenant) as conn:
            await store_grant(
                conn,
                tenant=req.tenant,
                token_id=issued.claims.token_id,
                idempotency_key=req.idempotency_key,
                token=issued.token,
                expires_at=issued.claims.expires_at,
            )
        return CapabilityGrant(token_id=issued.claims.token_id, expires_at=issued.claims.expires_at)
