"""The effect ledger: one row per idempotency key, so a side effect happens at most once.

The protocol for an activity that performs an effect under key ``k``
(``<workflow id>/<step id>``):

1. ``begin`` in a transaction that commits right after it (the fused step's also
   records the step's decision, its capability spend and the decision's audit
   event), and **commit** it before touching the target system. The committed
   ``in_flight`` row is the record that an attempt may have started; if the
   worker dies after the effect but before ``complete``, the retry finds that row
   instead of a clean slate.
2. If ``begin`` returned ``completed``, return the stored ``result`` without
   acting. If it returned ``failed``, surface the stored ``error``.
3. If it returned ``in_flight`` with ``attempts > 1``, an earlier attempt may have
   acted: the adapter must pass ``k`` to the target as its idempotency key (or
   look the effect up there) rather than blindly repeating it.
4. Perform the effect, then ``complete`` (or ``fail``) in a new transaction.

Call ``fail`` only for a definitive failure (the target refused, the effect did not
happen and retrying will not help). For a transient error leave the row
``in_flight`` and let Temporal retry: the next ``begin`` bumps ``attempts``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

import asyncpg
from pydantic import JsonValue

from stead.contracts.base import Closed
from stead.contracts.run import canonical_json
from stead.errors import SteadError

EffectStatus = Literal["in_flight", "completed", "failed"]

_COLUMNS = (
    "idempotency_key, tenant, workflow_id, step_id, operation, args_hash, decision_id,"
    " status, result::text AS result, error, attempts, created_at, completed_at"
)


class LedgerEntry(Closed):
    key: str
    tenant: str
    workflow_id: str
    step_id: str
    operation: str
    args_hash: str
    decision_id: str | None
    status: EffectStatus
    result: JsonValue = None
    error: str | None = None
    attempts: int
    created_at: datetime
    completed_at: datetime | None = None


class LedgerError(SteadError):
    """Base of the ledger's errors."""


class LedgerConflict(LedgerError):
    """The key already names a different effect, or the requested transition is invalid.

    Not worth retrying: the same call will conflict again. A key must only ever
    mean one effect; a replanned step that changes its arguments needs a new key.
    """


class LedgerKeyUnknown(LedgerError):
    """``complete``/``fail`` named a key that ``begin`` never recorded for this tenant."""


def _entry(row: asyncpg.Record) -> LedgerEntry:
    return LedgerEntry(
        key=row["idempotency_key"],
        tenant=row["tenant"],
        workflow_id=row["workflow_id"],
        step_id=row["step_id"],
        operation=row["operation"],
        args_hash=row["args_hash"],
        decision_id=row["decision_id"],
        status=row["status"],
        result=None if row["result"] is None else json.loads(row["result"]),
        error=row["error"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        completed_at=row["completed_at"],
    )


async def begin(
    conn: asyncpg.Connection,
    *,
    tenant: str,
    key: str,
    workflow_id: str,
    step_id: str,
    operation: str,
    args_hash: str,
    decision_id: str | None,
) -> LedgerEntry:
    """Record the intent to perform an effect, or return what the key already recorded.

    Run in a ``tenant_transaction`` and let it commit before acting (see the
    module docstring). The row is locked ``FOR UPDATE`` until then, so two workers
    racing on one key are serialized and the second sees ``attempts == 2``.
    """
    inserted = await conn.fetchrow(
        "INSERT INTO effects (idempotency_key, tenant, workflow_id, step_id, operation,"
        " args_hash, decision_id, status)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, 'in_flight')"
        f" ON CONFLICT (idempotency_key) DO NOTHING RETURNING {_COLUMNS}",
        key,
        tenant,
        workflow_id,
        step_id,
        operation,
        args_hash,
        decision_id,
    )
    if inserted is not None:
        return _entry(inserted)
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM effects WHERE idempotency_key = $1 AND tenant = $2 FOR UPDATE",
        key,
        tenant,
    )
    if row is None:
        # The key exists but RLS hides it: another tenant recorded it.
        raise LedgerConflict(
            f"idempotency key {key!r} is already used outside tenant {tenant!r}; "
            "keys are global, so derive them from the (unique) workflow id"
        )
    existing = _entry(row)
    wanted = {
        "workflow_id": workflow_id,
        "step_id": step_id,
        "operation": operation,
        "args_hash": args_hash,
    }
    differs = [name for name, value in wanted.items() if getattr(existing, name) != value]
    if differs:
        raise LedgerConflict(
            f"idempotency key {key!r} already records a different effect "
            f"({', '.join(differs)} differ); a key may only ever mean one effect, "
            "so give the changed step a new key"
        )
    if existing.status != "in_flight":
        return existing
    bumped = await conn.fetchrow(
        "UPDATE effects SET attempts = attempts + 1 WHERE idempotency_key = $1"
        f" RETURNING {_COLUMNS}",
        key,
    )
    return _entry(bumped)


async def complete(conn: asyncpg.Connection, *, tenant: str, key: str, result: JsonValue) -> None:
    """Record that the effect happened and what it returned.

    Idempotent: completing an already completed key is a no-op that keeps the
    first result (the activity may be retried after this commit).
    """
    await _finish(conn, tenant=tenant, key=key, status="completed", result=result, error=None)


async def fail(conn: asyncpg.Connection, *, tenant: str, key: str, error: str) -> None:
    """Record a definitive failure: the effect did not happen and will not be retried."""
    await _finish(conn, tenant=tenant, key=key, status="failed", result=None, error=error)


async def _finish(
    conn: asyncpg.Connection,
    *,
    tenant: str,
    key: str,
    status: Literal["completed", "failed"],
    result: JsonValue,
    error: str | None,
) -> None:
    updated = await conn.fetchval(
        "UPDATE effects SET status = $3, result = $4::text::jsonb, error = $5,"
        " completed_at = now()"
        " WHERE idempotency_key = $1 AND tenant = $2 AND status = 'in_flight'"
        " RETURNING status",
        key,
        tenant,
        status,
        canonical_json(result) if status == "completed" else None,
        error,
    )
    if updated is not None:
        return
    current = await conn.fetchval(
        "SELECT status FROM effects WHERE idempotency_key = $1 AND tenant = $2", key, tenant
    )
    if current is None:
        raise LedgerKeyUnknown(
            f"no ledger entry {key!r} for tenant {tenant!r}; call begin() and commit "
            "before performing the effect"
        )
    if current != status:
        raise LedgerConflict(
            f"ledger entry {key!r} is already {current}; it cannot become {status}"
        )


async def get(conn: asyncpg.Connection, key: str) -> LedgerEntry | None:
    """The entry for ``key`` in the current tenant, or None."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM effects WHERE idempotency_key = $1", key)
    return None if row is None else _entry(row)
