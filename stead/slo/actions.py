"""Temporal Cloud Actions of the finished runs in an SLO window: what they cost on Cloud.

The rest of ``stead slo`` reads Postgres only; Actions live in Temporal's histories,
so this part asks Temporal, for the most recent finished runs (at most ``limit``,
each history is one or more fetches), and is opt-in (``stead slo --actions``).
Steps are the runs' step decisions in Postgres, the same population the report uses.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
from pydantic import Field
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from stead.contracts.base import Closed
from stead.runs.actions import count_actions, run_histories

DEFAULT_LIMIT = 200

_RECENT_FINISHED = """
SELECT r.workflow_id,
       (SELECT count(DISTINCT d.step_id) FROM decisions d
         WHERE d.tenant = r.tenant AND d.workflow_id = r.workflow_id AND d.kind = 'step') AS steps
FROM runs r
WHERE r.started_at >= $2 AND ($1::text IS NULL OR r.tenant = $1::text)
  AND r.finished_at IS NOT NULL
ORDER BY r.started_at DESC
LIMIT $3"""


class ActionsCost(Closed):
    """Temporal Cloud Actions of the finished runs counted (``stead.runs.actions`` rules)."""

    runs_counted: int = Field(
        description="Finished runs whose histories were counted (Temporal still had them)."
    )
    total: int = Field(description="Their Actions together.")
    per_run: float | None = Field(description="total / runs_counted.")
    per_step: float | None = Field(description="total / their step decisions.")


async def actions_cost(
    conn: asyncpg.Connection,
    client: Client,
    *,
    tenant: str | None,
    window_start: datetime,
    limit: int = DEFAULT_LIMIT,
) -> ActionsCost:
    rows = await conn.fetch(_RECENT_FINISHED, tenant, window_start, limit)
    total = steps = n = 0
    for row in rows:
        try:
            histories = await run_histories(client, row["workflow_id"])
        except RPCError as exc:
            # Past the namespace's retention Temporal has dropped the history.
            if exc.status == RPCStatusCode.NOT_FOUND:
                continue
            raise
        total += count_actions(histories).total
        steps += int(row["steps"] or 0)
        n += 1
    return ActionsCost(
        runs_counted=n,
        total=total,
        per_run=round(total / n, 2) if n else None,
        per_step=round(total / steps, 2) if steps else None,
    )
