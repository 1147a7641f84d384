"""Structured state for critical facts (an order's status, a reconciliation cursor).

Free-text memory tolerates "last writer wins, old versions kept"; a fact a workflow
acts on does not. Each key has a version, and a write names the version it read:
the write lands only if that is still the version (compare-and-set), so of two
concurrent writers exactly one wins and the other gets `StateConflict` with the
version to re-read. The check and the write are one statement, so no lock is held
across the caller's think time.
"""

from __future__ import annotations

import json

import asyncpg
from pydantic import JsonValue

from stead.contracts.run import canonical_json
from stead.db.pool import tenant_transaction
from stead.memory.contracts import StateValue
from stead.memory.db import db_errors
from stead.memory.errors import StateConflict

_COLUMNS = "tenant, namespace, key, value::text AS value, version, updated_at, updated_by"
_INSERT = f"""
INSERT INTO memory_state (tenant, namespace, key, value, version, updated_by, workflow_id,
    step_id, reason)
VALUES ($1, $2, $3, $4::text::jsonb, 1, $5, $6, $7, $8)
ON CONFLICT (tenant, namespace, key) DO NOTHING
RETURNING {_COLUMNS}
"""
_UPDATE = f"""
UPDATE memory_state SET value = $4::text::jsonb, version = version + 1, updated_at = now(),
    updated_by = $5, workflow_id = $6, step_id = $7, reason = $8
WHERE tenant = $1 AND namespace = $2 AND key = $3 AND version = $9
RETURNING {_COLUMNS}
"""
_GET = f"SELECT {_COLUMNS} FROM memory_state WHERE tenant = $1 AND namespace = $2 AND key = $3"


class StateStore:
    """Compare-and-set state on the app role's pool; RLS keeps each tenant to its keys."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, tenant: str, namespace: str, key: str) -> StateValue | None:
        with db_errors("state get"):
            async with tenant_transaction(self._pool, tenant) as conn:
                row = await conn.fetchrow(_GET, tenant, namespace, key)
        return None if row is None else _value(row)

    async def compare_and_set(
        self,
        tenant: str,
        namespace: str,
        key: str,
        value: JsonValue,
        *,
        expected_version: int,
        principal: str,
        workflow_id: str | None = None,
        step_id: str | None = None,
        reason: str = "",
    ) -> StateValue:
        """Write `value` if the key is at `expected_version` (0: must not exist yet).

        Raises `StateConflict` (with the current version) when another writer got there
        first; the caller re-reads and decides again."""
        if expected_version < 0:
            raise ValueError(
                f"expected_version must be 0 (absent) or a version, got {expected_version}"
            )
        body = canonical_json(value)
        args = (tenant, namespace, key, body, principal, workflow_id, step_id, reason)
        with db_errors("state compare-and-set"):
            async with tenant_transaction(self._pool, tenant) as conn:
                if expected_version == 0:
                    row = await conn.fetchrow(_INSERT, *args)
                else:
                    row = await conn.fetchrow(_UPDATE, *args, expected_version)
                if row is None:
                    current = await conn.fetchval(
                        "SELECT version FROM memory_state"
                        " WHERE tenant = $1 AND namespace = $2 AND key = $3",
                        tenant,
                        namespace,
                        key,
                    )
                    raise StateConflict(namespace, key, expected_version, int(current or 0))
        return _value(row)


def _value(row: asyncpg.Record) -> StateValue:
    return StateValue(
        tenant=row["tenant"],
        namespace=row["namespace"],
        key=row["key"],
        value=json.loads(row["value"]),
        version=int(row["version"]),
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )
