"""The per-tenant, append-only, keyed audit log.

Each tenant's events form one chain: event ``n`` stores ``prev_hash`` (the hash of
event ``n-1``, or 64 zeros for the first) and ``hash``, an HMAC-SHA256 under the
audit key of ``prev_hash`` and the event's fields (``stead.audit.chain``). Editing a
row breaks its own MAC, deleting one leaves a gap in ``seq``, a row written without
the key (a forged insert, an old-style unkeyed hash) does not verify, and a cut of
the newest rows falls short of the tenant's anchor (``stead.audit.anchors``), which
the appender updates after each commit. :func:`verify_chain` reports the first such
problem.

Appends for a tenant are serialized by a transaction-scoped advisory lock, so
``seq`` stays gapless under concurrent writers without locking other tenants.
"""

from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
from pydantic import JsonValue

from stead.audit.anchors import Anchor, AnchorUnreadable
from stead.audit.chain import (
    CHAIN_KEYED,
    CHAIN_UNKEYED,
    GENESIS_HASH,
    AuditChain,
    hashed_fields,
    installed,
    keyed_mac,
    unkeyed_hash,
)
from stead.contracts.base import Closed
from stead.contracts.run import TenantId, canonical_json
from stead.db.pool import after_commit
from stead.errors import SteadError

_COLUMNS = (
    "tenant, seq, workflow_id, run_id, step_id, kind, actor, data::text AS data,"
    " recorded_at, prev_hash, hash"
)


class AuditEvent(Closed):
    """What a caller appends; the log assigns ``seq``, time and hashes."""

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


class VerifyResult(Closed):
    """What ``verify_chain`` found: ``first_bad_seq`` names the first row that fails.

    ``unkeyed`` counts rows from before the keyed chain (migration 0007), which only an
    unkeyed hash protects; ``anchored_seq`` is the head the anchor vouches for.
    """

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str | None = None
    unkeyed: int = 0
    anchored_seq: int | None = None


class AuditTenantMismatch(SteadError):
    """The connection is not in a transaction for the event's tenant."""


class AuditKeyConflict(SteadError):
    """The row holding an append's idempotency key is not this event's, or its MAC does
    not verify: someone wrote it without the audit key to stand in for the event."""


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


async def append_event(
    conn: asyncpg.Connection,
    event: AuditEvent,
    *,
    chain: AuditChain | None = None,
    idempotency_key: str | None = None,
) -> AuditRecord:
    """Append ``event`` to its tenant's chain; call inside ``tenant_transaction(event.tenant)``.

    ``idempotency_key`` makes the append happen at most once per key and tenant: a
    caller that may run again after its row committed (an activity retried because its
    worker died before Temporal recorded the completion) passes the same key each time,
    and an append that finds the key already in the chain returns that row, appends
    nothing and moves the anchor to the head (the first call may have died before it
    wrote the anchor).

    The lock is held until that transaction ends, so commit promptly: every other
    append for the tenant waits on it. If the transaction rolls back, the event
    never happened and the next append reuses its ``seq``. The transaction must be
    READ COMMITTED (the default): reading the chain head after taking the lock must
    see the append that released it. ``chain`` defaults to the process's installed
    one; without its key nothing is written (``AuditKeyMissing``).
    """
    chain = chain or installed()
    key = chain.key()
    if not conn.is_in_transaction():
        raise AuditTenantMismatch(
            "append_event needs a transaction: call it inside "
            f"tenant_transaction(pool, {event.tenant!r})"
        )
    # One round trip: take the tenant's append lock, read which tenant this
    # transaction is for, and let jsonb normalise the data. The MAC covers the
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
    recorded_at = datetime.now(UTC)
    tenant = event.tenant
    row = None
    known = _HEADS.get(tenant)
    if known is not None:
        # The head this process last committed: one round trip when it is still the head.
        seq, prev_hash = known[0] + 1, known[1]
        mac = keyed_mac(key, prev_hash, _fields(event, seq, stored_data, recorded_at))
        row = await conn.fetchrow(
            _INSERT_AFTER_KNOWN_HEAD,
            *_values(event, seq, stored_data, recorded_at, prev_hash, mac, idempotency_key),
        )
    if row is None:
        last = await conn.fetchrow(_HEAD, tenant)
        if idempotency_key is not None:
            written = await conn.fetchrow(_WRITTEN, tenant, idempotency_key)
            if written is not None and last is not None:
                # This call's row is already in the chain: nothing to append. The anchor
                # goes to the head, which ``last`` is (read under the append lock).
                found = _own_row(key, event, written)
                head_seq, head_mac = int(last["seq"]), str(last["hash"])
                after_commit(
                    conn,
                    f"audit-anchor:{tenant}",
                    lambda: _committed(chain, key, tenant, head_seq, head_mac),
                )
                return found
        seq = 1 if last is None else int(last["seq"]) + 1
        prev_hash = GENESIS_HASH if last is None else str(last["hash"])
        mac = keyed_mac(key, prev_hash, _fields(event, seq, stored_data, recorded_at))
        row = await conn.fetchrow(
            _INSERT, *_values(event, seq, stored_data, recorded_at, prev_hash, mac, idempotency_key)
        )
    # The anchor and the known head move only once the row is committed; outside
    # tenant_transaction there is no commit to wait for, so both lag until the next append.
    after_commit(conn, f"audit-anchor:{tenant}", lambda: _committed(chain, key, tenant, seq, mac))
    return _record(row)


_HEAD = "SELECT seq, hash FROM audit_events WHERE tenant = $1 ORDER BY seq DESC LIMIT 1"
# The row an earlier call with the same key wrote (unique per tenant, migration 0013).
_WRITTEN = f"SELECT {_COLUMNS} FROM audit_events WHERE tenant = $1 AND idempotency_key = $2"
_INSERT = (
    "INSERT INTO audit_events (tenant, seq, workflow_id, run_id, step_id, kind, actor,"
    " data, recorded_at, prev_hash, hash, chain_version, idempotency_key)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9, $10, $11, $12, $13)"
    f" RETURNING {_COLUMNS}"
)
# The same row, written only if the chain's head is still the row it links to: under
# the tenant's append lock (taken by an earlier statement, so this statement's snapshot
# sees every committed append) nothing else can move the head meanwhile. No row back:
# another process appended since, or this call's key is already written (a retry); read
# the head (and the keyed row) and insert as above. A first call pays no extra round trip.
_INSERT_AFTER_KNOWN_HEAD = (
    "INSERT INTO audit_events (tenant, seq, workflow_id, run_id, step_id, kind, actor,"
    " data, recorded_at, prev_hash, hash, chain_version, idempotency_key)"
    " SELECT $1::text, $2::bigint, $3::text, $4::text, $5::text, $6::text, $7::text,"
    " $8::text::jsonb, $9::timestamptz, $10::text, $11::text, $12::smallint, $13::text"
    " WHERE EXISTS (SELECT 1 FROM audit_events"
    "   WHERE tenant = $1::text AND seq = $2::bigint - 1 AND hash = $10::text)"
    " AND NOT EXISTS (SELECT 1 FROM audit_events WHERE tenant = $1::text AND seq >= $2::bigint)"
    " AND ($13::text IS NULL OR NOT EXISTS (SELECT 1 FROM audit_events"
    "   WHERE tenant = $1::text AND idempotency_key = $13::text))"
    f" RETURNING {_COLUMNS}"
)
# Each tenant's chain head (seq, hash) as this process last committed it. Only a hint:
# the insert above checks it against the table under the lock, so a stale one (another
# worker appended, a transaction rolled back) costs the one read it saves, nothing more.
_HEADS: dict[str, tuple[int, str]] = {}


def _own_row(key: bytes, event: AuditEvent, row: asyncpg.Record) -> AuditRecord:
    """The row found under the key, once it is shown to be this event's: same run, step,
    kind and actor, and a MAC that verifies (a row planted with a predicted key by a
    writer without the audit key must not stand in for the event)."""
    found = _record(row)
    same = (found.workflow_id, found.run_id, found.step_id, found.kind, found.actor) == (
        event.workflow_id,
        event.run_id,
        event.step_id,
        event.kind,
        event.actor,
    )
    mac = keyed_mac(key, found.prev_hash, _fields(found, found.seq, found.data, found.recorded_at))
    if not same or not hmac.compare_digest(mac, found.hash):
        raise AuditKeyConflict(
            f"audit row seq {found.seq} of tenant {found.tenant} holds this append's key but "
            "is not its event (or its MAC does not verify); nothing appended"
        )
    return found


def _committed(chain: AuditChain, key: bytes, tenant: str, seq: int, mac: str) -> None:
    known = _HEADS.get(tenant)
    if known is None or known[0] < seq:
        _HEADS[tenant] = (seq, mac)
    chain.anchors.advance(key, tenant, seq, mac)


def _fields(event: AuditEvent, seq: int, data: object, recorded_at: datetime) -> dict[str, Any]:
    return hashed_fields(
        tenant=event.tenant,
        seq=seq,
        workflow_id=event.workflow_id,
        run_id=event.run_id,
        step_id=event.step_id,
        kind=event.kind,
        actor=event.actor,
        data=data,
        recorded_at=recorded_at,
    )


def _values(
    event: AuditEvent,
    seq: int,
    data: object,
    recorded_at: datetime,
    prev_hash: str,
    mac: str,
    idempotency_key: str | None,
) -> tuple[object, ...]:
    return (
        event.tenant,
        seq,
        event.workflow_id,
        event.run_id,
        event.step_id,
        event.kind,
        event.actor,
        canonical_json(data),
        recorded_at,
        prev_hash,
        mac,
        CHAIN_KEYED,
        idempotency_key,
    )


async def verify_chain(
    conn: asyncpg.Connection, tenant: str, *, chain: AuditChain | None = None
) -> VerifyResult:
    """Recompute the tenant's chain in ``seq`` order and report the first broken link.

    Call inside ``tenant_transaction(tenant)`` (RLS hides the rows otherwise, and the
    cursor needs a transaction). Rows stream through a cursor, so a long chain
    does not sit in memory. Without the audit key this raises ``AuditKeyMissing``:
    a chain nobody could check is never reported intact.
    """
    chain = chain or installed()
    key = chain.key()
    # The anchor is read before the rows: it is written after its row commits, so
    # every row it names is visible to the query that follows.
    try:
        anchor = chain.anchors.read(tenant, key)
    except AnchorUnreadable as exc:
        return VerifyResult(
            ok=False, checked=0, reason=f"{exc.message}: the anchor was forged or wiped"
        )
    walk = _Walk(key, anchor)
    cursor = conn.cursor(
        f"SELECT {_COLUMNS}, chain_version FROM audit_events WHERE tenant = $1 ORDER BY seq",
        tenant,
        prefetch=500,
    )
    async for row in cursor:
        problem = walk.step(row)
        if problem is not None:
            return walk.result(*problem)
    return walk.finish(tenant, chain)


class _Walk:
    """One verification pass: what the next row must be, and what was seen so far."""

    def __init__(self, key: bytes, anchor: Anchor | None) -> None:
        self.key = key
        self.anchor = anchor
        self.checked = 0
        self.unkeyed = 0
        self.keyed_seen = False
        self.prev = GENESIS_HASH

    def step(self, row: asyncpg.Record) -> tuple[int | None, str] | None:
        """Check one row; a (first bad seq, reason) when it fails."""
        seq = int(row["seq"])
        expected = self.checked + 1
        if seq != expected:
            return expected, f"seq {expected} is missing (next row is seq {seq}): a row was deleted"
        if row["prev_hash"] != self.prev:
            return seq, f"seq {seq} does not link to seq {seq - 1}: prev_hash differs"
        fields = hashed_fields(
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
        version = row["chain_version"]
        if version == CHAIN_KEYED:
            if not hmac.compare_digest(keyed_mac(self.key, self.prev, fields), row["hash"]):
                return seq, (
                    f"seq {seq} was altered or forged: its MAC does not verify under the audit key"
                )
            self.keyed_seen = True
        elif version == CHAIN_UNKEYED and not self.keyed_seen:
            if unkeyed_hash(self.prev, fields) != row["hash"]:
                return seq, f"seq {seq} was altered: its content no longer matches its hash"
            self.unkeyed += 1
        else:
            return seq, (
                f"seq {seq} is an unkeyed (chain_version {version}) row after the keyed chain "
                "began: forged"
            )
        anchor = self.anchor
        if (
            anchor is not None
            and seq == anchor.seq
            and not hmac.compare_digest(row["hash"], anchor.mac)
        ):
            return seq, (
                f"seq {seq} is not the row the anchor recorded: the chain was rewritten from here"
            )
        self.prev = row["hash"]
        self.checked += 1
        return None

    def result(self, first_bad_seq: int | None, reason: str) -> VerifyResult:
        return VerifyResult(
            ok=False,
            checked=self.checked,
            first_bad_seq=first_bad_seq,
            reason=reason,
            unkeyed=self.unkeyed,
            anchored_seq=None if self.anchor is None else self.anchor.seq,
        )

    def finish(self, tenant: str, chain: AuditChain) -> VerifyResult:
        if self.anchor is not None and self.anchor.seq > self.checked:
            return self.result(
                self.checked + 1,
                f"rows after seq {self.checked} are missing: the anchor records seq "
                f"{self.anchor.seq}, so the newest rows were deleted",
            )
        if self.anchor is None and self.keyed_seen:
            return self.result(
                None,
                f"tenant {tenant} has no anchor at {chain.anchors.path(tenant)}: a deleted tail "
                "would go unseen; verify where the workers write anchors (STEAD_AUDIT_ANCHOR_DIR)",
            )
        return VerifyResult(
            ok=True,
            checked=self.checked,
            unkeyed=self.unkeyed,
            anchored_seq=None if self.anchor is None else self.anchor.seq,
        )


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
