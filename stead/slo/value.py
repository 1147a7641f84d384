"""Value captured over weeks: a time series the run's close records, read per ISO week.

A run's value is the minutes its playbook declares for each step that succeeded,
summed into ``runs.minutes_saved`` when the run finishes. The SLO report adds those
up over a window of run starts; a trend over weeks needs them as points in time, and
kept past any purge of run records. So the same transaction that stamps the run
finished appends one point to the tenant's series ``stead.value.minutes_saved``
(at ``finished_at``, labelled with the playbook), keyed by the run so a retried close
adds nothing. Retention and rollups of time-series memory apply to it like any series,
and keep its weekly sums exact.

Series under ``stead.`` are the runtime's: a step's ``memory.observe`` refuses them
(``adapters/memory.py``), so no plan can claim value it did not capture.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg
from pydantic import Field

from stead.contracts.base import Closed

VALUE_SERIES = "stead.value.minutes_saved"
MAX_WEEKS = 520

# From the run's own row, so the point says exactly what the run recorded. A run that
# saved nothing adds no point: weeks count the runs that captured value.
_RECORD = """
INSERT INTO observations (tenant, series, labels, observed_at, value, sum_value, min_value,
    max_value, principal, workflow_id, request_key)
SELECT tenant, $3,
       CASE WHEN playbook IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('playbook', playbook)
       END,
       finished_at, minutes_saved::float8, minutes_saved::float8, minutes_saved::float8,
       minutes_saved::float8, 'service:stead', workflow_id, 'stead:value:' || workflow_id
FROM runs
WHERE workflow_id = $1 AND tenant = $2 AND finished_at IS NOT NULL AND minutes_saved > 0
ON CONFLICT (tenant, request_key) DO NOTHING
"""

# ISO weeks start on Monday; date_trunc('week') on a UTC timestamp gives that Monday.
# GROUPING SETS: one row per tenant and week, plus the all-tenant row of each week.
_WEEKS = """
SELECT tenant, GROUPING(tenant) = 1 AS is_total, week,
       sum(sum_value)::float8 AS minutes, sum(samples)::int8 AS runs
FROM (SELECT tenant, date_trunc('week', observed_at AT TIME ZONE 'UTC')::date AS week,
             sum_value, samples
      FROM observations
      WHERE series = $2 AND ($1::text IS NULL OR tenant = $1::text)
        AND observed_at >= $3 AND observed_at < $4) o
GROUP BY GROUPING SETS ((tenant, week), (week))
"""


async def record_run_value(conn: asyncpg.Connection, *, tenant: str, workflow_id: str) -> None:
    """Append the finished run's minutes saved to its tenant's value series, once."""
    await conn.execute(_RECORD, workflow_id, tenant, VALUE_SERIES)


class WeekValue(Closed):
    week: str = Field(description="ISO week, e.g. 2026-W10.")
    starts: date = Field(description="Its Monday (UTC).")
    minutes_saved: float
    runs: int = Field(description="Runs that captured value in the week.")


class ValueWeeks(Closed):
    """``stead slo --weeks N --json``: the last N ISO weeks, oldest first, this one last."""

    tenant: str | None = Field(description="The tenant reported on; null for all tenants.")
    series: str
    total: list[WeekValue]
    tenants: dict[str, list[WeekValue]] = Field(
        description="Per tenant with value in the weeks; with --tenant, that tenant only."
    )


def week_starts(weeks: int, until: datetime) -> list[date]:
    """The Mondays of the ``weeks`` ISO weeks ending with the one ``until`` falls in."""
    if not 1 <= weeks <= MAX_WEEKS:
        raise ValueError(f"weeks must be 1 to {MAX_WEEKS}, not {weeks}")
    today = until.astimezone(UTC).date()
    this_week = today - timedelta(days=today.weekday())
    return [this_week - timedelta(weeks=n) for n in range(weeks - 1, -1, -1)]


async def value_by_week(
    conn: asyncpg.Connection, *, tenant: str | None, weeks: int, until: datetime | None = None
) -> ValueWeeks:
    """Minutes saved per ISO week over the last ``weeks`` weeks up to ``until`` (now).

    ``tenant=None`` needs a connection row-level security does not restrict (admin);
    with a tenant, call inside ``tenant_transaction(tenant)``.
    """
    end = until or datetime.now(UTC)
    mondays = week_starts(weeks, end)
    start = datetime.combine(mondays[0], datetime.min.time(), UTC)
    rows = await conn.fetch(_WEEKS, tenant, VALUE_SERIES, start, end)
    found: dict[str | None, dict[date, tuple[float, int]]] = {}
    for row in rows:
        key = None if row["is_total"] else str(row["tenant"])
        found.setdefault(key, {})[row["week"]] = (float(row["minutes"]), int(row["runs"]))

    def series(key: str | None) -> list[WeekValue]:
        got = found.get(key, {})
        return [_week(monday, *got.get(monday, (0.0, 0))) for monday in mondays]

    return ValueWeeks(
        tenant=tenant,
        series=VALUE_SERIES,
        total=series(None),
        tenants={t: series(t) for t in sorted(k for k in found if k is not None)},
    )


def _week(monday: date, minutes: float, runs: int) -> WeekValue:
    year, week, _ = monday.isocalendar()
    return WeekValue(week=f"{year}-W{week:02d}", starts=monday, minutes_saved=minutes, runs=runs)
