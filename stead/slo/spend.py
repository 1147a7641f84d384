"""What a tenant has spent this month: the ``tenant_spent`` OPA reads for tenant budgets.

Spend is read from ``runs`` (tokens and dollars each run recorded), never kept in a
process, so every worker sees the same figure and a restart loses nothing. The
window is the calendar month in UTC, taken from the database clock so all workers
agree on when a month turns over.

The run being decided is left out: its spend so far travels in the step input as
``spent`` (the workflow's own count, which includes planner and adapter cost not yet written
to its row), and counting its row too would count it twice. A run records its
totals when it finishes, so runs still in flight add nothing until then.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from stead.contracts.base import Closed


class TenantSpend(Closed):
    """The tenant's other runs started since ``since``; what OPA sees as ``input.tenant_spent``."""

    usd: float
    tokens: int
    runs: int
    since: datetime


async def tenant_spend_this_month(
    conn: asyncpg.Connection, tenant: str, *, exclude_workflow_id: str | None = None
) -> TenantSpend:
    """Sum the tenant's runs started this UTC month; call inside ``tenant_transaction(tenant)``.

    Uses the ``runs (tenant, started_at)`` index, so the cost does not grow with
    older months.
    """
    row = await conn.fetchrow(
        "WITH w AS (SELECT date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
        " AS since)"
        " SELECT w.since, count(r.workflow_id) AS runs,"
        " COALESCE(sum(r.cost_usd), 0)::float8 AS usd, COALESCE(sum(r.tokens), 0)::int8 AS tokens"
        " FROM w LEFT JOIN runs r ON r.tenant = $1 AND r.started_at >= w.since"
        " AND r.workflow_id IS DISTINCT FROM $2::text"
        " GROUP BY w.since",
        tenant,
        exclude_workflow_id,
    )
    return TenantSpend(usd=row["usd"], tokens=row["tokens"], runs=row["runs"], since=row["since"])
