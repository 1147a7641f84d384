"""The capability ledger in Postgres: spent tokens, key bindings, and grants for edge workers.

``consume`` runs in the tenant transaction that commits the step's intent to the effect
ledger, so a token is spent exactly when its effect may start. It refuses a token whose
idempotency key was first spent on a different step, operation or argument hash (a key
names one effect). A token presented again for its own step (a Temporal retry of an
edge step re-reads the same grant) passes: its claims are signed, so its binding is the
one recorded, and the effect ledger then hands back the stored result or reconciles.
A token is therefore *single-effect*: it can never cause a second effect, nor any
effect but the one it names.

Grants are tokens the authority minted ahead for an edge worker; the workflow carries
only their id.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from stead.capability.claims import CapabilityClaims
from stead.capability.errors import CapabilityInvalid, KeyRebound

_BOUND = ("workflow_id", "step_id", "operation", "args_hash")
_SPEND = (
    "WITH first AS ("
    " SELECT workflow_id, step_id, operation, args_hash FROM capability_uses"
    " WHERE tenant = $2::text AND idempotency_key = $3::text"
    " ORDER BY used_at, token_id LIMIT 1),"
    " spent AS ("
    " INSERT INTO capability_uses (token_id, tenant, idempotency_key, workflow_id, run_id,"
    " step_id, operation, args_hash, decision_id, issued_at, expires_at)"
    " SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, $8::text,"
    " $9::text, $10::timestamptz, $11::timestamptz"
    " WHERE NOT EXISTS (SELECT 1 FROM first WHERE (first.workflow_id, first.step_id,"
    " first.operation, first.args_hash) IS DISTINCT FROM ($4::text, $6::text, $7::text,"
    " $8::text))"
    " ON CONFLICT (token_id) DO NOTHING RETURNING 1)"
    " SELECT first.workflow_id AS first_workflow_id, first.step_id AS first_step_id,"
    " first.operation AS first_operation, first.args_hash AS first_args_hash,"
    " EXISTS (SELECT 1 FROM spent) AS inserted"
    " FROM (SELECT 1) AS one LEFT JOIN first ON true"
)


async def consume(conn: asyncpg.Connection, claims: CapabilityClaims) -> bool:
    """Spend the token in the caller's ``tenant_transaction``; True on its first use.

    Raises ``KeyRebound`` when the key already belongs to another effect.
    """
    # Serialize spends of one key, so two workers cannot bind it two ways at once.
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        f"capability:{claims.tenant}/{claims.idempotency_key}",
    )
    # The key's first use and the spend in one round trip. The first use is read from
    # the statement's snapshot, i.e. before this insert, as the separate SELECT did; the
    # insert happens only if that first use (if any) is this effect, so a rebound key
    # writes nothing even for a caller that catches ``KeyRebound`` and commits.
    row = await conn.fetchrow(
        _SPEND,
        claims.token_id,
        claims.tenant,
        claims.idempotency_key,
        claims.workflow_id,
        claims.run_id,
        claims.step_id,
        claims.operation,
        claims.args_hash,
        claims.decision_id,
        claims.issued_at,
        claims.expires_at,
    )
    if row["first_workflow_id"] is not None:
        differs = [name for name in _BOUND if row[f"first_{name}"] != getattr(claims, name)]
        if differs:
            raise KeyRebound(
                f"idempotency key {claims.idempotency_key!r} was first spent on another effect "
                f"({', '.join(differs)} differ); a key may only ever mean one effect",
                token_id=claims.token_id,
            )
    inserted = bool(row["inserted"])
    if not inserted and await spent_on(conn, claims.token_id) is None:
        # The id is taken, but not in this tenant: not a token of ours to spend here.
        raise CapabilityInvalid(
            f"capability token {claims.token_id} is not spendable in tenant {claims.tenant}",
            token_id=claims.token_id,
        )
    return inserted


async def spent_on(conn: asyncpg.Connection, token_id: str) -> str | None:
    """The step a token was already spent on (``<workflow id>/<step id>``), or None."""
    row = await conn.fetchrow(
        "SELECT workflow_id, step_id FROM capability_uses WHERE token_id = $1", token_id
    )
    return None if row is None else f"{row['workflow_id']}/{row['step_id']}"


async def store_grant(
    conn: asyncpg.Connection,
    *,
    tenant: str,
    token_id: str,
    idempotency_key: str,
    token: str,
    expires_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO capability_grants (token_id, tenant, idempotency_key, token, expires_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token_id) DO NOTHING",
        token_id,
        tenant,
        idempotency_key,
        token,
        expires_at,
    )


async def load_grant(conn: asyncpg.Connection, token_id: str) -> str:
    """The granted token, to be verified like any other; raises if there is none."""
    token = await conn.fetchval("SELECT token FROM capability_grants WHERE token_id = $1", token_id)
    if token is None:
        raise CapabilityInvalid(
            f"no capability grant {token_id} in this tenant; the authority never issued it",
            token_id=token_id,
        )
    return str(token)


async def prune_expired(conn: asyncpg.Connection, tenant: str) -> int:
    """Delete the tenant's expired grants and spent tokens; returns how many rows went.

    Safe because an expired token fails verification before the ledger is asked,
    and the effect ledger keeps each key's binding for good.
    """
    deleted = await conn.fetchval(
        "WITH g AS (DELETE FROM capability_grants WHERE tenant = $1 AND expires_at < now()"
        " RETURNING 1), u AS (DELETE FROM capability_uses WHERE tenant = $1"
        " AND expires_at < now() RETURNING 1)"
        " SELECT (SELECT count(*) FROM g) + (SELECT count(*) FROM u)",
        tenant,
    )
    return int(deleted)
