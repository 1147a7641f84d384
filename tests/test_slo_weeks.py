"""Value captured per ISO week (``stead slo --weeks``): points of the series a run's close
records, summed by week, per tenant, with row-level security keeping tenants apart; a
finished run records its value once, and no step can write that series."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import pytest_asyncio
from pydantic import JsonValue

from adapters.registry import default_catalog
from stead.db.pool import create_pool, tenant_transaction
from stead.memory import Provenance
from stead.memory.contracts import ObserveRequest
from stead.memory.series import SeriesStore
from stead.operations.catalog import InvalidArguments
from stead.settings import Settings
from stead.slo.value import (
    VALUE_SERIES,
    ValueWeeks,
    WeekValue,
    record_run_value,
    value_by_week,
)
from tests.conftest import WorkerHandle
from tests.runs import configure_tenant, new_tenant, playbook, start_run
from tests.test_memory_support import admin_fetch
from tests.test_slo import stead_slo

# Wednesday of ISO week 2021-W11; the weeks before it are W08, W09 and W10.
UNTIL = datetime(2021, 3, 17, 12, tzinfo=UTC)


@pytest_asyncio.fixture(scope="module")
async def pool(stack: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(stack.postgres_dsn, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


async def captured(pool: asyncpg.Pool, tenant: str, *points: tuple[datetime, float]) -> None:
    """What the run close records, written at explicit times through the memory store."""
    await SeriesStore(pool).observe_many(
        [
            ObserveRequest(
                tenant=tenant,
                series=VALUE_SERIES,
                value=minutes,
                observed_at=at,
                provenance=Provenance(principal="service:stead"),
            )
            for at, minutes in points
        ]
    )


def by_week(weeks: list[WeekValue]) -> list[tuple[str, float, int]]:
    return [(w.week, w.minutes_saved, w.runs) for w in weeks]


async def test_value_is_summed_per_iso_week_and_each_tenant_sees_only_its_own(
    stack: Settings, pool: asyncpg.Pool
) -> None:
    a, b = new_tenant(), new_tenant()
    await captured(
        pool,
        a,
        (datetime(2021, 2, 1, tzinfo=UTC), 99),  # W05: before the four weeks
        (datetime(2021, 2, 24, 9, tzinfo=UTC), 3),  # W08
        (datetime(2021, 3, 8, tzinfo=UTC), 10),  # W10, Monday 00:00
        (datetime(2021, 3, 14, 23, 59, tzinfo=UTC), 5),  # W10, Sunday night
        (datetime(2021, 3, 15, tzinfo=UTC), 7),  # W11, Monday 00:00
        (datetime(2021, 3, 18, tzinfo=UTC), 50),  # after `until`
    )
    await captured(pool, b, (datetime(2021, 3, 10, tzinfo=UTC), 100))

    async with tenant_transaction(pool, a) as conn:
        mine = await value_by_week(conn, tenant=a, weeks=4, until=UNTIL)
        # The app role asking for all tenants, or for b, still sees only a's rows.
        everyone = await value_by_week(conn, tenant=None, weeks=4, until=UNTIL)
        theirs = await value_by_week(conn, tenant=b, weeks=4, until=UNTIL)
    expected = [
        ("2021-W08", 3.0, 1),
        ("2021-W09", 0.0, 0),
        ("2021-W10", 15.0, 2),
        ("2021-W11", 7.0, 1),
    ]
    assert by_week(mine.total) == expected
    assert list(mine.tenants) == [a] and by_week(mine.tenants[a]) == expected
    assert by_week(everyone.total) == expected and list(everyone.tenants) == [a]
    assert theirs.tenants == {} and all(w.runs == 0 for w in theirs.total)

    # Across tenants, as the admin: both, each on its own, and the weeks summed.
    assert stack.postgres_admin_dsn
    admin = await asyncpg.connect(stack.postgres_admin_dsn)
    try:
        both = await value_by_week(admin, tenant=None, weeks=4, until=UNTIL)
    finally:
        await admin.close()
    assert by_week(both.tenants[a]) == expected
    assert by_week(both.tenants[b])[2] == ("2021-W10", 100.0, 1)
    assert by_week(both.total)[2] == ("2021-W10", 115.0, 3)


async def test_the_cli_prints_the_weeks_of_one_tenant_as_json(
    stack: Settings, pool: asyncpg.Pool
) -> None:
    a, b = new_tenant(), new_tenant()
    last_week = datetime.now(UTC) - timedelta(days=7)
    await captured(pool, a, (last_week, 12))
    await captured(pool, b, (last_week, 1000))

    done = stead_slo(stack, "--tenant", a, "--weeks", "3", "--json")
    assert done.returncode == 0, done.stderr
    report = ValueWeeks.model_validate(json.loads(done.stdout))
    year, week, _ = last_week.isocalendar()
    assert len(report.total) == 3 and list(report.tenants) == [a]
    assert [(w.week, w.minutes_saved) for w in report.total if w.runs] == [
        (f"{year}-W{week:02d}", 12.0)
    ]

    table = stead_slo(stack, "--tenant", a, "--weeks", "3")
    assert table.returncode == 0, table.stderr
    assert f"{year}-W{week:02d}" in table.stdout and "1000" not in table.stdout
    refused = stead_slo(stack, "--tenant", a, "--weeks", "0")
    assert refused.returncode == 2 and "--weeks" in refused.stderr
    mixed = stead_slo(stack, "--tenant", a, "--weeks", "3", "--actions")
    assert mixed.returncode == 2 and "--actions on its own" in mixed.stderr


async def test_a_finished_run_records_its_value_once(worker: WorkerHandle) -> None:
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant)
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ops",
        playbook_source=playbook(
            {"id": "a", "operation": "core.echo", "args": {"value": "hi"}, "minutes_saved": 7},
            {"id": "b", "operation": "core.echo", "args": {"value": "ho"}, "minutes_saved": 5},
        ),
    )
    status = await handle.result()
    assert status.status == "completed", status.reasons

    # A retried close (same run) adds nothing.
    pool = await create_pool(worker.settings.postgres_dsn, min_size=1, max_size=1)
    try:
        async with tenant_transaction(pool, tenant) as conn:
            await record_run_value(conn, tenant=tenant, workflow_id=handle.id)
            weeks = await value_by_week(conn, tenant=tenant, weeks=1)
    finally:
        await pool.close()
    rows = await admin_fetch(
        worker.settings,
        "SELECT series, value, labels::text AS labels, workflow_id, principal"
        " FROM observations WHERE tenant = $1",
        tenant,
    )
    assert [(r["series"], r["value"], r["workflow_id"], r["principal"]) for r in rows] == [
        (VALUE_SERIES, 12.0, handle.id, "service:stead")
    ]
    assert json.loads(rows[0]["labels"]) == {}  # an inline playbook records no name
    assert [(w.minutes_saved, w.runs) for w in weeks.total] == [(12.0, 1)]


def test_no_step_can_write_the_value_series() -> None:
    catalog = default_catalog()
    cases: list[tuple[str, dict[str, JsonValue]]] = [
        ("memory.observe", {"series": VALUE_SERIES, "value": 1e6}),
        ("memory.observe_many", {"series": VALUE_SERIES, "points": [{"value": 1e6}]}),
    ]
    for operation, args in cases:
        with pytest.raises(InvalidArguments, match="recorded by Stead itself"):
            catalog.parse_args(operation, args)
