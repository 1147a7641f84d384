"""The per-tenant, append-only, hash-chained audit log.

Each tenant's events form one chain: event ``n`` stores ``prev_hash`` (the hash of
event ``n-1``, or 64 zeros for the first) and ``hash = sha256(prev_hash +
canonical_json(fields))``. Editing a row breaks its own hash, deleting one leaves a
gap in ``seq``, and splicing in a forged row breaks the next row's ``prev_hash``;
:func:`verify_chain` reports the first such row. What the chain alone cannot show
is a cut of the *newest* rows or a whole chain rewritten by a superuser; anchoring
the head hash somewhere else (a signed export, a Temporal history) closes that.

Appends for a tenant are serialized by a transaction-scoped advisory lock, so
``seq`` stays gapless under concurrent writers without locking other tenants.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, JsonValue

from stead.contracts.run import TenantId, canonical_json
from stead.errors import SteadError

GENESIS_HASH = "0" * 64

_COLUMNS = (
    "tenant, seq, workflow_id, run_id, step_id, kind, actor, data::text AS data,"
    " recorded_at, prev_hash, hash"
)


class AuditEvent(BaseModel):
    """What a caller appends; the log assigns ``seq``, time and hashes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: TenantId
    workflow_id: str | None = None
    run_id: str | None = None
    step_id: str | None = None
    kind: str
    actor: str
    data: dict[str, JsonValue] = {}


class AuditRecord(AuditEvent):
    """An event as stored, with its place in the tenant's chain."""

    seq: int
    recorded_at: datetime
    prev_hash: str
    hash: str


class VerifyResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str | None = None


class AuditTenantMismatch(SteadError):
    """The connection is not in a transaction for the event's tenant."""


def _iso(ts: datetime) -> str:
    """One text form of a timestamp for hashing: UTC, always six fractional digits.

    Postgres keeps microseconds and asyncpg returns timestamptz in UTC, so the value
    read back formats to exactly the string that was hashed at append time.
    """
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def _event_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(fields)).encode()).hexdigest()


def _hashed_fields(
    *,
    tenant: str,
    seq: int,
    workflow_id: str | None,
    run_id: str | None,
    step_id: str | None,
    kind: str,
    actor: str,
    data: object,
    recorded_at: datetime,
) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "seq": seq,
        "workflow_id": workflow_id,
        "run_id": run_id,
        "step_id": step_id,
        "kind": kind,
        "actor": actor,
        "data": data,
        "recorded_at": _iso(recorded_at),
    }


def _record(row: asyncpg.Record) -> AuditRecord:
    return AuditRecord(
        tenant=row["tenant"],
        seq=row["seq"],
        workflow_id=row["workflow_id"],
        run_id=row["run_id"],
        step_id=row["step_id"],
        kind=row["kind"],
        actor=row["actor"],
        data=json.loads(row["data"]),
        recorded_at=row["recorded_at"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


async def append_event(conn: asyncpg.Connection, event: AuditEvent) -> AuditRecord:
    """Append ``event`` to its tenant's chain; call inside ``tenant_transaction(event.tenant)``.

    The lock is held until that transaction ends, so commit promptly: every other
    append for the tenant waits on it. If the transaction rolls back, the event
    never happened and the next append reuses its ``seq``. The transaction must be
    READ COMMITTED (the default): reading the chain head after taking the lock must
    see the append that released it.
    """
    if not conn.is_in_transaction():
        raise AuditTenantMismatch(
            "append_event needs a transaction: call it inside "
            f"tenant_transaction(pool, {event.tenant!r})"
        )
    # One round trip: take the tenant's append lock, read which tenant this
    # transaction is for, and let jsonb normalise the data. The hash covers the
    # data as jsonb gives it back (jsonb may rewrite numbers, e.g. 1e20 becomes an
    # integer), so verification recomputes from exactly what is stored.
    head = await conn.fetchrow(
        "SELECT pg_advisory_xact_lock(hashtext('audit:' || $1::text)),"
        " current_setting('app.tenant_id', true) AS tenant, $2::text::jsonb::text AS data",
        event.tenant,
        canonical_json(event.data),
    )
    if head["tenant"] != event.tenant:
        raise AuditTenantMismatch(
            f"audit event for tenant {event.tenant!r} appended in a transaction for "
            f"{head['tenant']!r}; use tenant_transaction(pool, {event.tenant!r})"
        )
    stored_data = json.loads(head["data"])
    last = await conn.fetchrow(
        "SELECT seq, hash FROM audit_events WHERE tenant = $1 ORDER BY seq DESC LIMIT 1",
        event.tenant,
    )
    seq = 1 if last is None else int(last["seq"]) + 1
    prev_hash = GENESIS_HASH if last is None else str(last["hash"])
    recorded_at = datetime.now(UTC)
    fields = _hashed_fields(
        tenant=event.tenant,
        seq=seq,
        workflow_id=event.workflow_id,
        run_id=event.run_id,
        step_id=event.step_id,
        kind=event.kind,
        actor=event.actor,
        data=stored_data,
        recorded_at=recorded_at,
    )
    digest = _event_hash(prev_hash, fields)
    row = await conn.fetchrow(
        "INSERT INTO audit_events (tenant, seq, workflow_id, run_id, step_id, kind, actor,"
        " data, recorded_at, prev_hash, hash)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9, $10, $11)"
        f" RETURNING {_COLUMNS}",
        event.tenant,
        seq,
        event.workflow_id,
        event.run_id,
        event.step_id,
        event.kind,
        event.actor,
        canonical_json(stored_data),
        recorded_at,
        prev_hash,
        digest,
    )
    return _record(row)


async def verify_chain(conn: asyncpg.Connection, tenant: str) -> VerifyResult:
    """Recompute the tenant's chain in ``seq`` order and report the first broken link.

    Call inside ``tenant_transaction(tenant)`` (RLS hides the rows otherwise, and the
    cursor needs a transaction). Rows stream through a cursor, so a long chain
    does not sit in memory.
    """
    checked = 0
    expected_prev = GENESIS_HASH
    cursor = conn.cursor(
        f"SELECT {_COLUMNS} FROM audit_events WHERE tenant = $1 ORDER BY seq",
        tenant,
        prefetch=500,
    )
    async for row in cursor:
        seq = int(row["seq"])
        expected_seq = checked + 1
        if seq != expected_seq:
            return VerifyResult(
                ok=False,
                checked=checked,
                first_bad_seq=expected_seq,
                reason=f"seq {expected_seq} is missing (next row is seq {seq}): a row was deleted",
            )
        if row["prev_hash"] != expected_prev:
            return VerifyResult(
                ok=False,
                checked=checked,
                first_bad_seq=seq,
                reason=f"seq {seq} does not link to seq {seq - 1}: prev_hash differs",
            )
        fields = _hashed_fields(
            tenant=row["tenant"],
            seq=seq,
            workflow_id=row["workflow_id"],
            run_id=row["run_id"],
            step_id=row["step_id"],
            kind=row["kind"],
            actor=row["actor"],
            data=json.loads(row["data"]),
            recorded_at=row["recorded_at"],
        )
        if _event_hash(expected_prev, fields) != row["hash"]:
            return VerifyResult(
                ok=False,
                checked=checked,
                first_bad_seq=seq,
                reason=f"seq {seq} was altered: its content no longer matches its hash",
            )
        expected_prev = row["hash"]
        checked += 1
    return VerifyResult(ok=True, checked=checked)


async def list_events(
    conn: asyncpg.Connection, tenant: str, workflow_id: str | None = None
) -> list[AuditRecord]:
    """The tenant's events in chain order, optionally only those of one workflow."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM audit_events"
        " WHERE tenant = $1 AND ($2::text IS NULL OR workflow_id = $2::text) ORDER BY seq",
        tenant,
        workflow_id,
    )
    return [_record(r) for r in rows]
