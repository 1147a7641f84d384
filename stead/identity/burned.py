"""Burned principal tokens: exposed in a run's history, so refused everywhere from now on.

A principal token that reaches workflow history without being narrowed to exactly
that approval (possible only through the ``approve_signal`` signal, which Temporal
writes before any handler runs) can be lifted by every reader of the history. Its
revocation ids (``stead.contracts.approval_token.exposed_revocation_ids``) are
recorded here, in the token's own tenant, and an approval whose token carries any
of them is refused. Rows are append-only for the app role (migration 0009).

Call these inside ``tenant_transaction`` for the tenant: row-level security hides
and refuses every other tenant's rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg


async def burn(
    conn: asyncpg.Connection,
    tenant: str,
    revocation_ids: Sequence[str],
    *,
    token_id: str | None,
    workflow_id: str,
    reason: str,
) -> int:
    """Record ``revocation_ids`` as burned; idempotent (an activity retry adds nothing)."""
    if not revocation_ids:
        return 0
    inserted = await conn.fetch(
        "INSERT INTO burned_tokens (tenant, revocation_id, token_id, workflow_id, reason)"
        " SELECT $1, r, $3, $4, $5 FROM unnest($2::text[]) AS r"
        " ON CONFLICT (tenant, revocation_id) DO NOTHING RETURNING 1",
        tenant,
        list(revocation_ids),
        token_id,
        workflow_id,
        reason[:1000],
    )
    return len(inserted)


async def burned_in(
    conn: asyncpg.Connection, tenant: str, revocation_ids: Sequence[str]
) -> str | None:
    """The workflow whose history exposed one of ``revocation_ids``, or None if none is burned."""
    if not revocation_ids:
        return None
    found: str | None = await conn.fetchval(
        "SELECT workflow_id FROM burned_tokens WHERE tenant = $1"
        " AND revocation_id = ANY($2::text[]) ORDER BY burned_at LIMIT 1",
        tenant,
        list(revocation_ids),
    )
    return found
