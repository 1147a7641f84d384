"""``stead slo``: service levels of governed runs, computed in Postgres.

The report is read from the database every time (see ``stead.slo.report`` for what
each figure means), so it answers the same on any machine and after any restart.
One tenant's report uses the app role inside that tenant's transaction, so
row-level security guarantees it holds nothing of another tenant; the report
across all tenants needs the admin DSN, like ``stead audit verify`` without
``--tenant``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import asyncpg
import typer
from rich.table import Table
from temporalio.client import Client

from stead.cli._common import console, fails_cleanly, print_json, settings, with_client
from stead.db.pool import create_pool, tenant_transaction
from stead.errors import ConfigError
from stead.settings import Settings
from stead.slo.actions import ActionsCost, actions_cost
from stead.slo.report import Distribution, Figures, SloReport, compute_report
from stead.slo.value import MAX_WEEKS, ValueWeeks, WeekValue, value_by_week
from stead.slo.window import InvalidWindow, parse_since

T = TypeVar("T")


def register(app: typer.Typer) -> None:
    app.command("slo")(slo)


def _window(value: str) -> str:
    """Refuse a bad window before connecting anywhere: a usage error, exit 2."""
    try:
        parse_since(value)
    except InvalidWindow as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


@fails_cleanly
def slo(
    tenant: Annotated[
        str | None,
        typer.Option(help="Only this tenant; all tenants need the admin DSN."),
    ] = None,
    since: Annotated[
        str, typer.Option(help="Window of run starts: 30m, 24h, 7d.", callback=_window)
    ] = "7d",
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    actions: Annotated[
        bool,
        typer.Option(
            "--actions",
            help="Also count Temporal Cloud Actions of the latest finished runs (asks Temporal).",
        ),
    ] = False,
    weeks: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_WEEKS,
            help="Instead: value captured (minutes saved) per ISO week, the last N weeks.",
        ),
    ] = None,
) -> None:
    """Latency p50/p95, cost per run, failure rate, recovery, overrides, approval wait, value.

    Covers the runs started in the window and what they recorded. --json prints
    scope {tenant, since, window_start, window_end}, total, and tenants.<id>, each
    with runs, latency_seconds, cost, failure_rate, recovery, approvals,
    time_to_decision_seconds, decisions and minutes_saved (each defined in
    stead/slo/report.py). Percentiles are nearest-rank; null means nothing to measure.
    With --actions, temporal_actions {runs_counted, total, per_run, per_step}: what the
    latest finished runs (at most 200) cost in Temporal Cloud Actions (stead/slo/actions.py).
    With --weeks N, only the value per ISO week: {tenant, series, total, tenants.<id>},
    each a list of {week, starts, minutes_saved, runs}, oldest first (stead/slo/value.py).
    """
    if weeks is not None and actions:
        raise typer.BadParameter("--weeks prints value per week only; run --actions on its own")
    cfg = settings()
    if weeks is not None:
        found = asyncio.run(
            _read(cfg, tenant, lambda c: value_by_week(c, tenant=tenant, weeks=weeks))
        )
        if json_out:
            print_json(found.model_dump(mode="json"))
        else:
            _print_weeks(found)
        return
    if actions:
        report, cost = with_client(lambda client: _report(cfg, tenant, since, client), cfg)
    else:
        report, cost = asyncio.run(_report(cfg, tenant, since))
    if json_out:
        out = report.model_dump(mode="json")
        if cost is not None:
            out["temporal_actions"] = cost.model_dump(mode="json")
        print_json(out)
    else:
        _print(report, cost)


async def _report(
    cfg: Settings, tenant: str | None, since: str, client: Client | None = None
) -> tuple[SloReport, ActionsCost | None]:
    async def both(conn: asyncpg.Connection) -> tuple[SloReport, ActionsCost | None]:
        report = await compute_report(conn, tenant=tenant, since=since)
        if client is None:
            return report, None
        start = report.scope.window_start
        return report, await actions_cost(conn, client, tenant=tenant, window_start=start)

    return await _read(cfg, tenant, both)


async def _read(
    cfg: Settings, tenant: str | None, read: Callable[[asyncpg.Connection], Awaitable[T]]
) -> T:
    """``read`` in one tenant's transaction (app role, RLS), or across all tenants as
    admin in one read-only snapshot."""
    if tenant is not None:
        pool = await create_pool(cfg.postgres_dsn, min_size=1, max_size=1)
        try:
            async with tenant_transaction(pool, tenant) as conn:
                return await read(conn)
        finally:
            await pool.close()
    if not cfg.postgres_admin_dsn:
        raise ConfigError(
            "a report across all tenants needs STEAD_POSTGRES_ADMIN_DSN; or pass --tenant"
        )
    try:
        conn = await asyncpg.connect(cfg.postgres_admin_dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        host = cfg.postgres_admin_dsn.rsplit("@", 1)[-1]
        raise ConfigError(f"cannot connect to Postgres at {host} as admin: {exc}") from None
    try:
        # Read-only and one snapshot: the admin role could write, and every query
        # must see the same rows.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await read(conn)
    finally:
        await conn.close()


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _pair(d: Distribution) -> str:
    return f"{_seconds(d.p50)} / {_seconds(d.p95)}"


def _summary(f: Figures) -> list[tuple[str, str]]:
    a, r = f.approvals, f.recovery
    return [
        ("runs", f"{f.runs.finished} finished of {f.runs.started} ({f.runs.in_flight} in flight)"),
        ("latency p50 / p95", _pair(f.latency_seconds)),
        ("failure rate", f"{_percent(f.failure_rate)} ({f.runs.failed} failed or timed out)"),
        (
            "cost",
            f"${f.cost.total_usd:.4f} total, "
            + ("-" if f.cost.mean_usd_per_run is None else f"${f.cost.mean_usd_per_run:.4f}")
            + f" per run, {f.cost.total_tokens} tokens",
        ),
        (
            "recovery (mean)",
            f"{_seconds(r.mean_seconds)} over {r.recovered_steps} steps;"
            f" {r.failed_steps} never recovered",
        ),
        (
            "overrides",
            f"{a.overridden} of {a.requested} approvals ({_percent(a.override_rate)});"
            f" {a.timed_out} timed out",
        ),
        ("time to decision p50 / p95", _pair(f.time_to_decision_seconds)),
        (
            "step decisions",
            f"{f.decisions.allow} allow, {f.decisions.approve} approve,"
            f" {f.decisions.deny} deny ({f.decisions.blocked} blocked)",
        ),
        ("minutes saved", f"{f.minutes_saved:g}"),
    ]


def _print(report: SloReport, cost: ActionsCost | None = None) -> None:
    scope = report.scope
    who = f"tenant {scope.tenant}" if scope.tenant else "all tenants"
    summary = Table(
        title=f"SLOs of {who}, runs started since {scope.window_start:%Y-%m-%d %H:%M} UTC"
        f" ({scope.since})"
    )
    summary.add_column("metric", no_wrap=True)
    summary.add_column("value")
    for name, value in _summary(report.total):
        summary.add_row(name, value)
    if cost is not None:
        summary.add_row(
            "Temporal Actions",
            f"{cost.total} over the latest {cost.runs_counted} finished runs: "
            f"{'-' if cost.per_run is None else cost.per_run} per run, "
            f"{'-' if cost.per_step is None else cost.per_step} per step",
        )
    console.print(summary)
    if scope.tenant is not None or not report.tenants:
        return
    per_tenant = Table(title="per tenant")
    for col in ("tenant", "runs", "p95", "failed", "cost", "overrode", "min saved"):
        per_tenant.add_column(col, no_wrap=col == "tenant")
    for name, f in report.tenants.items():
        per_tenant.add_row(
            name,
            str(f.runs.started),
            _seconds(f.latency_seconds.p95),
            _percent(f.failure_rate),
            f"${f.cost.total_usd:.2f}",
            f"{f.approvals.overridden}/{f.approvals.requested}",
            f"{f.minutes_saved:g}",
        )
    console.print(per_tenant)


def _print_weeks(found: ValueWeeks) -> None:
    who = f"tenant {found.tenant}" if found.tenant else "all tenants"
    table = Table(title=f"Value captured by {who}, per ISO week ({found.series})")
    table.add_column("week", no_wrap=True)
    table.add_column("from", no_wrap=True)
    table.add_column("minutes saved", justify="right")
    table.add_column("runs", justify="right")
    others = {} if found.tenant else found.tenants
    for name in others:
        table.add_column(name, justify="right")
    for n, week in enumerate(found.total):
        table.add_row(
            week.week,
            f"{week.starts:%Y-%m-%d}",
            f"{week.minutes_saved:g}",
            str(week.runs),
            *(_minutes(per[n]) for per in others.values()),
        )
    console.print(table)


def _minutes(week: WeekValue) -> str:
    return f"{week.minutes_saved:g}"
