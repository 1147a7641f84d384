"""Time-series memory: observations over time, per tenant, in Postgres.

A recurring stock mismatch should be a trend a later run can read, not a guess. So a
step (or the CLI) appends a point — series name, labels, time, value — and a reader
asks for a window bucketed by hour or day with one aggregate. Points are append-only
for the app role; retention (`observation_retention`, applied by the memory purge
pass) replaces old raw points by hourly or daily rollups that carry samples, sum,
min, max and last, so every aggregate reads the same before and after compaction.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import asyncpg

from stead.db.pool import tenant_transaction
from stead.memory.contracts import (
    CompactResult,
    ObserveRequest,
    ObserveResult,
    Retention,
    SeriesPoint,
    SeriesQuery,
    SeriesResult,
)
from stead.memory.db import db_errors
from stead.memory.errors import MemoryConflict

MAX_BUCKETS = 10_000
_SPAN = re.compile(r"^\s*(\d{1,6})\s*(m|h|d|w)\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

_INSERT = """
INSERT INTO observations (tenant, series, labels, observed_at, value, sum_value, min_value,
    max_value, principal, workflow_id, run_id, step_id, request_key)
VALUES ($1, $2, $3::text::jsonb, $4, $5, $5, $5, $5, $6, $7, $8, $9, $10)
ON CONFLICT (tenant, request_key) DO NOTHING
RETURNING series, labels::text AS labels, observed_at, value
"""
_WRITTEN = """
SELECT series, labels::text AS labels, observed_at, value FROM observations
WHERE tenant = $1 AND request_key = $2
"""
# A step's batch (every point keyed): one statement, not a round trip per point.
_INSERT_MANY = """
INSERT INTO observations (tenant, series, labels, observed_at, value, sum_value, min_value,
    max_value, principal, workflow_id, run_id, step_id, request_key)
SELECT $1, p.series, p.labels::jsonb, p.observed_at, p.value, p.value, p.value, p.value,
       p.principal, p.workflow_id, p.run_id, p.step_id, p.request_key
FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::float8[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::text[])
     AS p(series, labels, observed_at, value, principal, workflow_id, run_id, step_id,
          request_key)
ON CONFLICT (tenant, request_key) DO NOTHING
RETURNING request_key
"""
_WRITTEN_MANY = """
SELECT request_key, series, labels::text AS labels, observed_at, value FROM observations
WHERE tenant = $1 AND request_key = ANY($2::text[])
"""
# Rows combine the same way whatever their resolution: raw points are rollups of one.
# Buckets align to Monday 2000-01-03 00:00 UTC, so a 1w bucket is an ISO week (hours and
# days align as they would to any midnight). With a label to group by ($7), each value of
# it is its own series; with `last` ($8), only the newest rows of each group count (a
# window function, so only then: it sorts every row of the window).
_IN_WINDOW = """
    SELECT *, labels ->> $7::text AS grp FROM observations
    WHERE tenant = $1 AND series = $2 AND labels @> $3::text::jsonb
      AND observed_at >= $5 AND observed_at < $6
"""
_NEWEST_IN_WINDOW = f"""
    SELECT * FROM (
        SELECT w.*, row_number() OVER (PARTITION BY grp ORDER BY observed_at DESC, id DESC) AS nth
        FROM ({_IN_WINDOW}) w
    ) numbered WHERE nth <= $8::int
"""
_BUCKETS = """
WITH picked AS ({picked})
SELECT date_bin($4::interval, observed_at, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS bucket,
       grp, sum(samples) AS samples, sum(sum_value) AS total, min(min_value) AS low,
       max(max_value) AS high, (array_agg(value ORDER BY observed_at DESC, id DESC))[1] AS last
FROM picked
GROUP BY 2, 1 ORDER BY 2 NULLS FIRST, 1
"""
_WINDOW = _BUCKETS.format(picked=_IN_WINDOW)
_WINDOW_NEWEST = _BUCKETS.format(picked=_NEWEST_IN_WINDOW)
_RETAIN = """
INSERT INTO observation_retention (tenant, series, raw_days, rollup, keep_days, updated_by)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (tenant, series) DO UPDATE SET raw_days = $3, rollup = $4, keep_days = $5,
    updated_at = now(), updated_by = $6
"""


def parse_span(text: str) -> timedelta:
    """'15m', '1h', '1d', '2w' as a timedelta; anything else is a ValueError that says so."""
    match = _SPAN.match(text)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a span: a positive number and m, h, d or w (e.g. 7d)")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


class SeriesStore:
    """Observations on the app role's pool; RLS keeps each tenant to its points."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def observe(self, req: ObserveRequest) -> ObserveResult:
        """Append a point; with a `request_key`, a repeat returns the first point
        (`created=False`), and a different point under the same key is refused."""
        return (await self.observe_many([req]))[0]

    async def observe_many(self, reqs: list[ObserveRequest]) -> list[ObserveResult]:
        """Append points of one tenant in one transaction: all commit or none do, so a
        step that records a batch (one point per SKU) is retried or reconciled whole."""
        tenants = {r.tenant for r in reqs}
        if len(tenants) > 1:
            raise ValueError(f"one batch of observations is one tenant's, not {sorted(tenants)}")
        if not reqs:
            return []
        keyed = len(reqs) > 1 and all(r.request_key is not None for r in reqs)
        with db_errors("observe"):
            async with tenant_transaction(self._pool, reqs[0].tenant) as conn:
                if keyed:
                    return await _insert_keyed(conn, reqs)
                return [await _insert(conn, req) for req in reqs]

    async def written(self, tenant: str, request_key: str) -> ObserveResult | None:
        """The point a request key wrote, if it committed (a step's reconcile)."""
        with db_errors("observe lookup"):
            async with tenant_transaction(self._pool, tenant) as conn:
                row = await conn.fetchrow(_WRITTEN, tenant, request_key)
        return None if row is None else _observed(row, created=False)

    async def written_many(
        self, tenant: str, request_keys: list[str]
    ) -> list[ObserveResult] | None:
        """The points a batch's keys wrote, in key order, or None if the batch never
        committed (its points commit together, so a batch is found whole or not at all)."""
        with db_errors("observe lookup"):
            async with tenant_transaction(self._pool, tenant) as conn:
                rows = await conn.fetch(_WRITTEN_MANY, tenant, request_keys)
        found = {row["request_key"]: _observed(row, created=False) for row in rows}
        if not request_keys or len(found) < len(request_keys):
            return None
        return [found[key] for key in request_keys]

    async def series(self, query: SeriesQuery) -> SeriesResult:
        """The window [since, until) in buckets, one aggregate per non-empty bucket."""
        until = query.until or datetime.now(UTC)
        if until <= query.since:
            raise ValueError(f"until ({until.isoformat()}) must be after since")
        if (until - query.since) / query.bucket > MAX_BUCKETS:
            raise ValueError(
                f"{query.since.isoformat()} to {until.isoformat()} in buckets of "
                f"{query.bucket} is more than {MAX_BUCKETS} buckets; use a larger bucket"
            )
        labels = json.dumps(query.labels, sort_keys=True)
        with db_errors("series"):
            async with tenant_transaction(self._pool, query.tenant) as conn:
                args = (query.tenant, query.series, labels, query.bucket, query.since, until)
                if query.last is None:
                    rows = await conn.fetch(_WINDOW, *args, query.by)
                else:
                    rows = await conn.fetch(_WINDOW_NEWEST, *args, query.by, query.last)
        return SeriesResult(
            series=query.series,
            aggregate=query.aggregate,
            bucket_seconds=query.bucket.total_seconds(),
            points=[_point(row, query.aggregate) for row in rows],
        )

    async def set_retention(self, retention: Retention, *, principal: str) -> None:
        r = retention
        with db_errors("set retention"):
            async with tenant_transaction(self._pool, r.tenant) as conn:
                await conn.execute(
                    _RETAIN, r.tenant, r.series, r.raw_days, r.rollup, r.keep_days, principal
                )

    async def compact(self, tenant: str, *, now: datetime | None = None) -> CompactResult:
        """Apply the tenant's retention at `now` (default: the database's clock)."""
        with db_errors("compact"):
            async with tenant_transaction(self._pool, tenant) as conn:
                if now is None:
                    row = await conn.fetchrow("SELECT * FROM observations_compact()")
                else:
                    row = await conn.fetchrow("SELECT * FROM observations_compact($1)", now)
        assert row is not None
        return CompactResult(
            rolled_up=int(row["rolled_up"]),
            rollups=int(row["rollups"]),
            dropped=int(row["dropped"]),
        )


async def _insert(conn: asyncpg.Connection, req: ObserveRequest) -> ObserveResult:
    at = req.observed_at or datetime.now(UTC)
    labels = json.dumps(req.labels, sort_keys=True)
    p = req.provenance
    row = await conn.fetchrow(
        _INSERT,
        req.tenant,
        req.series,
        labels,
        at,
        req.value,
        p.principal,
        p.workflow_id,
        p.run_id,
        p.step_id,
        req.request_key,
    )
    created = row is not None
    if row is None:
        row = await conn.fetchrow(_WRITTEN, req.tenant, req.request_key)
    assert row is not None  # the conflict that skipped the insert is this row
    result = _observed(row, created=created)
    if not created:
        _same_or_refuse(req, result)
    return result


async def _insert_keyed(
    conn: asyncpg.Connection, reqs: list[ObserveRequest]
) -> list[ObserveResult]:
    """Insert a keyed batch in one statement; a key that already wrote (a retry) returns
    its point, and one that wrote a different point refuses the whole batch."""
    now = datetime.now(UTC)
    ats = [r.observed_at or now for r in reqs]
    rows = await conn.fetch(
        _INSERT_MANY,
        reqs[0].tenant,
        [r.series for r in reqs],
        [json.dumps(r.labels, sort_keys=True) for r in reqs],
        ats,
        [r.value for r in reqs],
        [r.provenance.principal for r in reqs],
        [r.provenance.workflow_id for r in reqs],
        [r.provenance.run_id for r in reqs],
        [r.provenance.step_id for r in reqs],
        [r.request_key for r in reqs],
    )
    fresh = {row["request_key"] for row in rows}
    created: list[bool] = []
    for req in reqs:
        created.append(req.request_key in fresh)
        fresh.discard(req.request_key)  # a key twice in one batch: the second is a repeat
    earlier = [r.request_key or "" for r, new in zip(reqs, created, strict=True) if not new]
    found = {}
    if earlier:
        found = {
            row["request_key"]: _observed(row, created=False)
            for row in await conn.fetch(_WRITTEN_MANY, reqs[0].tenant, earlier)
        }
    results = []
    for req, at, new in zip(reqs, ats, created, strict=True):
        if new:
            results.append(
                ObserveResult(
                    series=req.series,
                    labels=req.labels,
                    observed_at=at,
                    value=req.value,
                    created=True,
                )
            )
        else:
            results.append(_same_or_refuse(req, found[req.request_key or ""]))
    return results


def _same_or_refuse(req: ObserveRequest, result: ObserveResult) -> ObserveResult:
    """The point a key already wrote, if it is the one asked for; else a conflict."""
    if (
        result.series != req.series
        or result.labels != req.labels
        or result.value != req.value
        or (req.observed_at is not None and result.observed_at != req.observed_at)
    ):
        raise MemoryConflict(
            f"request key {req.request_key!r} already wrote a different point "
            f"({result.series} {result.labels} = {result.value}); a retry must repeat "
            "the same observation"
        )
    return result


def _observed(row: asyncpg.Record, *, created: bool) -> ObserveResult:
    return ObserveResult(
        series=row["series"],
        labels=json.loads(row["labels"]),
        observed_at=row["observed_at"],
        value=float(row["value"]),
        created=created,
    )


def _point(row: asyncpg.Record, aggregate: str) -> SeriesPoint:
    samples = int(row["samples"])
    values = {
        "avg": float(row["total"]) / samples,
        "min": float(row["low"]),
        "max": float(row["high"]),
        "sum": float(row["total"]),
        "count": float(samples),
        "last": float(row["last"]),
    }
    return SeriesPoint(
        bucket=row["bucket"], value=values[aggregate], samples=samples, group=row["grp"]
    )
