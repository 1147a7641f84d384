"""The SLO report: service levels of governed runs, computed in Postgres from what runs recorded.

Nothing here reads process memory or Temporal: a report is a function of the
``runs``, ``decisions``, ``effects`` and ``audit_events`` rows, so any operator
with database access gets the same figures, after any restart.

**Population.** A report covers the runs *started* in the window
(``started_at >= now() - since``, database clock) and everything those runs
recorded: their decisions, effects and audit events, even ones that landed
after the window began. Figures about finished runs (latency, cost, failure
rate, minutes saved) use the runs among them with ``finished_at`` set; a run
records its totals only when it finishes.

**Percentiles** are nearest-rank (``percentile_disc``): p95 is the smallest
observed value that at least 95 % of the observations do not exceed, so it is
always a value that actually happened. ``null`` when there is nothing to measure.

Metric definitions (the JSON keys of :class:`Figures`):

``latency_seconds``
    End-to-end run latency, ``finished_at - started_at`` of each finished run
    (request to last recorded action, approval waits included).
``cost``
    ``total_usd`` and ``total_tokens`` summed over finished runs (the planner's usage
    plus what adapters reported, e.g. ``llm.generate`` drafts, as the run recorded);
    ``mean_usd_per_run`` is ``total_usd / runs.finished``.
``failure_rate``
    ``runs.failed / runs.finished``, where ``failed`` counts the statuses
    ``failed`` and ``timed_out``. Denied, plan-rejected and cancelled runs are
    policy or an operator at work, not failures.
``recovery``
    Per step, from the effect ledger: a step *recovered* when its effect completed
    after more than one attempt (``attempts > 1``, each extra attempt means an
    earlier one did not complete). Its recovery time is ``completed_at -
    created_at``: from the start of the first, failed attempt to success. The
    ledger does not stamp the moment the first attempt failed, so this bounds the
    recovery from above by that attempt's own duration. ``failed_steps`` counts
    effects that ended ``failed`` (never recovered).
``approvals``
    Per step, from the audit log: ``requested`` steps had a ``step_decision`` with
    outcome ``approve``; ``answered`` got at least one ``approval_accepted``;
    ``overridden`` got an ``approval_accepted`` with verdict ``reject`` (a human
    overrode what the plan proposed); ``timed_out`` had ``approval_timed_out``.
    ``override_rate`` is ``overridden / requested``. Refused approvals (wrong
    approver, stale plan) are not answers.
``time_to_decision_seconds``
    Per answered step: the first ``approval_accepted`` minus the first
    ``step_decision`` with outcome ``approve`` (when the step started waiting).
    Both stamps come from the audit log, written by the same workers' clocks.
``decisions``
    Step decisions recorded by policy, by outcome; ``blocked`` counts the denies
    that mean OPA could not answer (fail closed).
``minutes_saved``
    Sum of ``runs.minutes_saved`` over finished runs: the minutes playbooks
    declare for each step that succeeded.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import asyncpg
from pydantic import Field

from stead.contracts.base import Closed
from stead.slo.window import parse_since

FAILED_STATUSES = ("failed", "timed_out")


class _Out(Closed):
    """The report's parts: closed and frozen, like every contract."""


class Distribution(_Out):
    count: int = Field(description="How many observations.")
    mean: float | None = Field(description="Arithmetic mean, seconds; null when count is 0.")
    p50: float | None = Field(description="Nearest-rank median, seconds.")
    p95: float | None = Field(description="Nearest-rank 95th percentile, seconds.")


class RunCounts(_Out):
    started: int = Field(description="Runs started in the window.")
    finished: int = Field(description="Of those, runs with a final status.")
    in_flight: int = Field(description="Of those, runs not finished yet.")
    failed: int = Field(description="Finished runs whose status is failed or timed_out.")
    by_status: dict[str, int] = Field(description="Runs started in the window, by status.")


class Cost(_Out):
    total_usd: float = Field(description="Dollars recorded by finished runs.")
    mean_usd_per_run: float | None = Field(description="total_usd / runs.finished.")
    total_tokens: int = Field(description="Tokens recorded by finished runs.")


class Recovery(_Out):
    recovered_steps: int = Field(description="Effects that completed after more than one attempt.")
    failed_steps: int = Field(description="Effects that ended failed.")
    mean_seconds: float | None = Field(
        description="Mean of completed_at - created_at over recovered steps."
    )


class Approvals(_Out):
    requested: int = Field(description="Steps policy held for approval.")
    answered: int = Field(description="Of those, steps a human voted on.")
    overridden: int = Field(description="Of those, steps an approver rejected.")
    timed_out: int = Field(description="Of those, steps whose approval timed out.")
    override_rate: float | None = Field(description="overridden / requested.")


class StepDecisions(_Out):
    allow: int
    approve: int
    deny: int
    blocked: int = Field(description="Denies because OPA could not be asked (fail closed).")


class Figures(_Out):
    """The SLO figures of one scope: one tenant, or all tenants together."""

    runs: RunCounts
    latency_seconds: Distribution
    cost: Cost
    failure_rate: float | None = Field(description="runs.failed / runs.finished.")
    recovery: Recovery
    approvals: Approvals
    time_to_decision_seconds: Distribution
    decisions: StepDecisions
    minutes_saved: float


class Scope(_Out):
    tenant: str | None = Field(description="The tenant reported on; null for all tenants.")
    since: str = Field(description="The window as given, e.g. 7d.")
    window_start: datetime
    window_end: datetime


class SloReport(_Out):
    """``stead slo --json``: the totals for the scope, and the same figures per tenant."""

    scope: Scope
    total: Figures
    tenants: dict[str, Figures] = Field(
        description="Per tenant with runs in the window; with --tenant, that tenant only."
    )


# Runs in the window; every other query joins to it, so all figures describe the
# same population. ($1: tenant or NULL for all, $2: window start)
_WINDOW = (
    "WITH w AS (SELECT * FROM runs WHERE started_at >= $2"
    " AND ($1::text IS NULL OR tenant = $1::text))"
)
# GROUPING SETS ((tenant), ()) gives one row per tenant plus the all-tenant row
# (is_total) in one pass; percentiles cannot be merged from per-tenant rows.
_BY_TENANT = "GROUP BY GROUPING SETS ((tenant), ())"

_RUNS_SQL = f"""{_WINDOW},
d AS (SELECT tenant, status, cost_usd, tokens, minutes_saved,
             extract(epoch FROM finished_at - started_at) AS secs
      FROM w WHERE finished_at IS NOT NULL)
SELECT tenant, GROUPING(tenant) = 1 AS is_total,
       count(*) AS finished,
       count(*) FILTER (WHERE status = ANY($3::text[])) AS failed,
       avg(secs)::float8 AS mean,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY secs)::float8 AS p50,
       percentile_disc(0.95) WITHIN GROUP (ORDER BY secs)::float8 AS p95,
       COALESCE(sum(cost_usd), 0)::float8 AS total_usd,
       COALESCE(sum(tokens), 0)::int8 AS total_tokens,
       COALESCE(sum(minutes_saved), 0)::float8 AS minutes_saved
FROM d {_BY_TENANT}"""

_STATUS_SQL = f"""{_WINDOW}
SELECT tenant, GROUPING(tenant) = 1 AS is_total, status,
       count(*) AS n
FROM w GROUP BY GROUPING SETS ((tenant, status), (status))"""

_RECOVERY_SQL = f"""{_WINDOW}
SELECT e.tenant, GROUPING(e.tenant) = 1 AS is_total,
       count(*) FILTER (WHERE e.status = 'completed' AND e.attempts > 1) AS recovered,
       count(*) FILTER (WHERE e.status = 'failed') AS failed,
       (avg(extract(epoch FROM e.completed_at - e.created_at))
            FILTER (WHERE e.status = 'completed' AND e.attempts > 1))::float8 AS mean
FROM effects e JOIN w ON w.tenant = e.tenant AND w.workflow_id = e.workflow_id
GROUP BY GROUPING SETS ((e.tenant), ())"""

_APPROVALS_SQL = f"""{_WINDOW},
steps AS (
    SELECT a.tenant, a.workflow_id, a.step_id,
           min(a.recorded_at) FILTER (
               WHERE a.kind = 'step_decision' AND a.data->>'outcome' = 'approve') AS requested_at,
           min(a.recorded_at) FILTER (WHERE a.kind = 'approval_accepted') AS answered_at,
           bool_or(a.kind = 'approval_accepted' AND a.data->>'verdict' = 'reject') AS overridden,
           bool_or(a.kind = 'approval_timed_out') AS timed_out
    FROM audit_events a JOIN w ON w.tenant = a.tenant AND w.workflow_id = a.workflow_id
    WHERE a.step_id IS NOT NULL
      AND a.kind IN ('step_decision', 'approval_accepted', 'approval_timed_out')
    GROUP BY a.tenant, a.workflow_id, a.step_id),
asked AS (
    SELECT tenant, overridden, timed_out, answered_at IS NOT NULL AS answered,
           extract(epoch FROM answered_at - requested_at) AS secs
    FROM steps WHERE requested_at IS NOT NULL)
SELECT tenant, GROUPING(tenant) = 1 AS is_total,
       count(*) AS requested,
       count(*) FILTER (WHERE answered) AS answered,
       count(*) FILTER (WHERE overridden) AS overridden,
       count(*) FILTER (WHERE timed_out) AS timed_out,
       avg(secs)::float8 AS mean,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY secs)::float8 AS p50,
       percentile_disc(0.95) WITHIN GROUP (ORDER BY secs)::float8 AS p95
FROM asked {_BY_TENANT}"""

_DECISIONS_SQL = f"""{_WINDOW}
SELECT d.tenant, GROUPING(d.tenant) = 1 AS is_total,
       count(*) FILTER (WHERE d.outcome = 'allow') AS allow,
       count(*) FILTER (WHERE d.outcome = 'approve') AS approve,
       count(*) FILTER (WHERE d.outcome = 'deny') AS deny,
       count(*) FILTER (WHERE d.blocked IS NOT NULL) AS blocked
FROM decisions d JOIN w ON w.tenant = d.tenant AND w.workflow_id = d.workflow_id
WHERE d.kind = 'step'
GROUP BY GROUPING SETS ((d.tenant), ())"""

_TOTAL = ""  # key of the all-tenant row; tenant ids are never empty


async def compute_report(conn: asyncpg.Connection, *, tenant: str | None, since: str) -> SloReport:
    """Compute the report over runs started within ``since`` (``30m``, ``24h``, ``7d``).

    ``tenant=None`` reports on every tenant and needs a connection that row-level
    security does not restrict (the admin role). With a tenant, call inside
    ``tenant_transaction(tenant)``. Run it in one transaction: ``now()`` is then
    one instant for every query, so all figures share the same window.
    """
    window = parse_since(since)
    bounds = await conn.fetchrow(
        "SELECT now() AS window_end, now() - $1::interval AS window_start", window
    )
    args = (tenant, bounds["window_start"])
    runs = _keyed(await conn.fetch(_RUNS_SQL, *args, list(FAILED_STATUSES)))
    statuses = await conn.fetch(_STATUS_SQL, *args)
    recovery = _keyed(await conn.fetch(_RECOVERY_SQL, *args))
    approvals = _keyed(await conn.fetch(_APPROVALS_SQL, *args))
    decisions = _keyed(await conn.fetch(_DECISIONS_SQL, *args))

    by_status: dict[str, dict[str, int]] = {}
    for row in statuses:
        by_status.setdefault(_key(row), {})[row["status"]] = row["n"]
    tenants = sorted(k for k in by_status if k != _TOTAL)

    def figures(key: str) -> Figures:
        return _figures(
            by_status.get(key, {}),
            runs.get(key),
            recovery.get(key),
            approvals.get(key),
            decisions.get(key),
        )

    return SloReport(
        scope=Scope(
            tenant=tenant,
            since=since,
            window_start=bounds["window_start"],
            window_end=bounds["window_end"],
        ),
        total=figures(_TOTAL),
        tenants={t: figures(t) for t in tenants},
    )


def _key(row: asyncpg.Record) -> str:
    return _TOTAL if row["is_total"] else str(row["tenant"])


def _keyed(rows: Iterable[asyncpg.Record]) -> dict[str, asyncpg.Record]:
    return {_key(row): row for row in rows}


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _distribution(row: asyncpg.Record | None, count: int) -> Distribution:
    if row is None or count == 0:
        return Distribution(count=0, mean=None, p50=None, p95=None)
    return Distribution(count=count, mean=row["mean"], p50=row["p50"], p95=row["p95"])


def _figures(
    by_status: dict[str, int],
    runs: asyncpg.Record | None,
    recovery: asyncpg.Record | None,
    approvals: asyncpg.Record | None,
    decisions: asyncpg.Record | None,
) -> Figures:
    started = sum(by_status.values())
    finished = int(runs["finished"]) if runs else 0
    failed = int(runs["failed"]) if runs else 0
    total_usd = float(runs["total_usd"]) if runs else 0.0
    answered = int(approvals["answered"]) if approvals else 0
    requested = int(approvals["requested"]) if approvals else 0
    overridden = int(approvals["overridden"]) if approvals else 0
    recovered = int(recovery["recovered"]) if recovery else 0
    return Figures(
        runs=RunCounts(
            started=started,
            finished=finished,
            in_flight=started - finished,
            failed=failed,
            by_status=dict(sorted(by_status.items())),
        ),
        latency_seconds=_distribution(runs, finished),
        cost=Cost(
            total_usd=total_usd,
            mean_usd_per_run=None if not finished else total_usd / finished,
            total_tokens=int(runs["total_tokens"]) if runs else 0,
        ),
        failure_rate=_ratio(failed, finished),
        recovery=Recovery(
            recovered_steps=recovered,
            failed_steps=int(recovery["failed"]) if recovery else 0,
            mean_seconds=recovery["mean"] if recovery and recovered else None,
        ),
        approvals=Approvals(
            requested=requested,
            answered=answered,
            overridden=overridden,
            timed_out=int(approvals["timed_out"]) if approvals else 0,
            override_rate=_ratio(overridden, requested),
        ),
        time_to_decision_seconds=_distribution(approvals, answered),
        decisions=StepDecisions(
            allow=int(decisions["allow"]) if decisions else 0,
            approve=int(decisions["approve"]) if decisions else 0,
            deny=int(decisions["deny"]) if decisions else 0,
            blocked=int(decisions["blocked"]) if decisions else 0,
        ),
        minutes_saved=float(runs["minutes_saved"]) if runs else 0.0,
    )


__all__ = [
    "Approvals",
    "Cost",
    "Distribution",
    "Figures",
    "Recovery",
    "RunCounts",
    "Scope",
    "SloReport",
    "StepDecisions",
    "compute_report",
]
