"""Time-series memory on the real Postgres: buckets and aggregates, retention and
downsampling that keep aggregates exact, idempotent writes, and tenant isolation
that holds for raw SQL as the app role too."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from stead.db.pool import create_pool, tenant_transaction
from stead.memory import Provenance
from stead.memory.contracts import ObserveRequest, Retention, SeriesQuery
from stead.memory.errors import MemoryConflict
from stead.memory.routed import UnavailableIndex
from stead.memory.series import SeriesStore, parse_span
from stead.memory.service import MemoryService
from stead.settings import Settings
from tests.conftest import REPO, subprocess_env
from tests.test_memory_support import EMBEDDER, admin_fetch, new_tenant

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday, midnight UTC
WHO = Provenance(principal="agent:counter")


@pytest_asyncio.fixture(scope="module")
async def pool(stack: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(stack.postgres_dsn, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def store(pool: asyncpg.Pool) -> SeriesStore:
    return SeriesStore(pool)


async def observe(
    store: SeriesStore, tenant: str, value: float, at: datetime, **labels: str
) -> None:
    await store.observe(
        ObserveRequest(
            tenant=tenant,
            series="stock.mismatch",
            value=value,
            labels=labels,
            observed_at=at,
            provenance=WHO,
        )
    )


async def window(store: SeriesStore, tenant: str, aggregate: str, **fields: object) -> list[float]:
    query = SeriesQuery.model_validate(
        {
            "tenant": tenant,
            "series": "stock.mismatch",
            "since": T0,
            "until": T0 + timedelta(days=3),
            "aggregate": aggregate,
            **fields,
        }
    )
    return [p.value for p in (await store.series(query)).points]


async def two_days(store: SeriesStore, tenant: str) -> None:
    """Day 1: 1, 3 (A) and 10 (B); day 2: 5 (A)."""
    await observe(store, tenant, 1, T0 + timedelta(hours=1), sku="A")
    await observe(store, tenant, 3, T0 + timedelta(hours=2), sku="A")
    await observe(store, tenant, 10, T0 + timedelta(hours=3), sku="B")
    await observe(store, tenant, 5, T0 + timedelta(days=1, hours=1), sku="A")


async def test_buckets_and_every_aggregate(store: SeriesStore) -> None:
    tenant = new_tenant()
    await two_days(store, tenant)

    assert await window(store, tenant, "avg") == [pytest.approx(14 / 3), 5]
    assert await window(store, tenant, "min") == [1, 5]
    assert await window(store, tenant, "max") == [10, 5]
    assert await window(store, tenant, "sum") == [14, 5]
    assert await window(store, tenant, "count") == [3, 1]
    assert await window(store, tenant, "last") == [10, 5]
    assert await window(store, tenant, "sum", labels={"sku": "A"}) == [4, 5]
    assert await window(store, tenant, "sum", bucket=timedelta(hours=1)) == [1, 3, 10, 5]
    assert await window(store, tenant, "count", bucket=timedelta(days=7)) == [4]


async def test_grouped_by_a_label_with_only_the_newest_points_of_each(store: SeriesStore) -> None:
    """What a reconciliation asks: per SKU, how many of its last three checks mismatched."""
    tenant = new_tenant()
    for day, wrong in enumerate([0, 0, 1, 1, 1]):
        at = T0 + timedelta(days=day)
        await observe(store, tenant, wrong, at, sku="A-1", kind="mismatch")
        await observe(store, tenant, 40 - day, at, sku="A-1", kind="stock")
    await observe(store, tenant, 1, T0, sku="B-2", kind="mismatch")
    await observe(store, tenant, 1, T0 + timedelta(hours=1), kind="mismatch")  # no sku

    query = SeriesQuery(
        tenant=tenant,
        series="stock.mismatch",
        labels={"kind": "mismatch"},
        since=T0,
        until=T0 + timedelta(days=7),
        bucket=timedelta(weeks=1),
        aggregate="sum",
        by="sku",
        last=3,
    )
    found = (await store.series(query)).points
    assert [(p.group, p.value, p.samples) for p in found] == [
        (None, 1.0, 1),
        ("A-1", 3.0, 3),
        ("B-2", 1.0, 1),
    ]
    # A week bucket is the ISO week: it starts on T0, a Monday.
    assert {p.bucket for p in found} == {T0}
    everything = await store.series(query.model_copy(update={"by": None, "last": None}))
    assert [(p.group, p.value, p.samples) for p in everything.points] == [(None, 5.0, 7)]


async def test_downsampling_keeps_aggregates_and_retention_drops_old_points(
    store: SeriesStore, stack: Settings
) -> None:
    tenant = new_tenant()
    await two_days(store, tenant)
    before = {
        agg: await window(store, tenant, agg) for agg in ("avg", "min", "max", "sum", "count")
    }
    await store.set_retention(
        Retention(tenant=tenant, series="*", raw_days=1, rollup="day", keep_days=30),
        principal="user:ops",
    )

    # Two days on, day 1 is past raw_days and rolled up; day 2's point too (its day ended).
    done = await store.compact(tenant, now=T0 + timedelta(days=3))

    assert (done.rolled_up, done.rollups, done.dropped) == (4, 3, 0)  # (day 1: A, B), day 2: A
    after = {agg: await window(store, tenant, agg) for agg in before}
    assert after == before
    rows = await admin_fetch(stack, "SELECT resolution FROM observations WHERE tenant = $1", tenant)
    assert {r["resolution"] for r in rows} == {"day"}

    gone = await store.compact(tenant, now=T0 + timedelta(days=30, hours=12))
    assert gone.dropped == 2 and await window(store, tenant, "count") == [1]


async def test_a_retried_observation_is_written_once_and_a_changed_one_refused(
    store: SeriesStore, stack: Settings
) -> None:
    tenant = new_tenant()
    request = ObserveRequest(
        tenant=tenant,
        series="stock.level",
        value=7,
        observed_at=T0,
        provenance=WHO,
        request_key="wf-1/count",
    )
    first = await store.observe(request)
    again = await store.observe(request)

    assert first.created and not again.created and again.value == 7
    with pytest.raises(MemoryConflict):
        await store.observe(request.model_copy(update={"value": 8.0}))
    rows = await admin_fetch(stack, "SELECT 1 FROM observations WHERE tenant = $1", tenant)
    assert len(rows) == 1


async def test_tenants_never_see_or_change_each_others_points(
    store: SeriesStore, pool: asyncpg.Pool, stack: Settings
) -> None:
    mine, theirs = new_tenant(), new_tenant()
    await two_days(store, theirs)

    assert await window(store, mine, "count") == []
    async with tenant_transaction(pool, mine) as conn:
        assert await conn.fetchval("SELECT count(*) FROM observations") == 0
        # Downsampling runs as the owner, but row-level security still confines it.
        await conn.execute(
            "INSERT INTO observation_retention (tenant, series, raw_days, rollup, updated_by)"
            " VALUES ($1, '*', 1, 'day', 'user:x')",
            mine,
        )
        await conn.fetchrow("SELECT * FROM observations_compact($1)", T0 + timedelta(days=9))
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_transaction(pool, mine) as conn:
            await conn.execute(
                "INSERT INTO observations (tenant, series, observed_at, value, sum_value,"
                " min_value, max_value, principal) VALUES ($1, 's', now(), 1, 1, 1, 1, 'x')",
                theirs,
            )
    for sql in ("UPDATE observations SET value = 0", "DELETE FROM observations"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_transaction(pool, theirs) as conn:
                await conn.execute(sql)
    assert await window(store, theirs, "count") == [3, 1]
    raw = await admin_fetch(stack, "SELECT resolution FROM observations WHERE tenant = $1", theirs)
    assert {r["resolution"] for r in raw} == {"raw"}


def test_spans_parse_or_say_what_they_expected() -> None:
    assert parse_span("7d") == timedelta(days=7)
    assert parse_span("15m") == timedelta(minutes=15)
    with pytest.raises(ValueError, match="not a span"):
        parse_span("7 years")


def stead(stack: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "stead"), "memory", *args],
        env=subprocess_env(stack),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_cli_observes_reads_windows_and_sets_retention(stack: Settings) -> None:
    tenant = new_tenant()
    for value, at in ((2, "2026-03-02T01:00"), (4, "2026-03-02T05:00"), (9, "2026-03-03T01:00")):
        done = stead(
            stack,
            "observe",
            "stock.level",
            str(value),
            "--tenant",
            tenant,
            "--label",
            "sku=A-1",
            "--at",
            at,
            "--json",
        )
        assert done.returncode == 0, done.stderr

    done = stead(
        stack,
        "series",
        "stock.level",
        "--tenant",
        tenant,
        "--label",
        "sku=A-1",
        "--until",
        "2026-03-04T00:00",
        "--since",
        "7d",
        "--bucket",
        "1d",
        "--agg",
        "max",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert [(p["value"], p["samples"]) for p in json.loads(done.stdout)["points"]] == [
        (4, 2),
        (9, 1),
    ]
    newest = stead(
        stack,
        "series",
        "stock.level",
        "--tenant",
        tenant,
        "--until",
        "2026-03-04T00:00",
        "--bucket",
        "1w",
        "--agg",
        "sum",
        "--by",
        "sku",
        "--last",
        "2",
        "--json",
    )
    assert newest.returncode == 0, newest.stderr
    points = json.loads(newest.stdout)["points"]
    assert [(p["group"], p["value"], p["samples"]) for p in points] == [("A-1", 13, 2)]
    retained = stead(stack, "retention", "--tenant", tenant, "--raw-days", "1", "--json")
    assert retained.returncode == 0, retained.stderr
    assert json.loads(retained.stdout)["rolled_up"] == 3

    bad = stead(stack, "series", "stock.level", "--tenant", tenant, "--bucket", "fortnight")
    assert bad.returncode != 0 and "--bucket" in bad.stderr and "Traceback" not in bad.stderr


async def test_the_memory_purge_pass_applies_retention(pool: asyncpg.Pool) -> None:
    tenant = new_tenant()
    service = MemoryService(pool, UnavailableIndex("not needed"), EMBEDDER)
    await two_days(service.observations, tenant)
    await service.observations.set_retention(
        Retention(tenant=tenant, series="stock.mismatch", raw_days=1, keep_days=3650),
        principal="user:ops",
    )

    purged = await service.purge_expired(tenant)

    assert (purged.observations_rolled_up, purged.observations_dropped) == (4, 0)
    assert await window(service.observations, tenant, "count", bucket=timedelta(hours=1)) == [
        1,
        1,
        1,
        1,
    ]


async def test_compaction_refuses_a_time_in_the_future(store: SeriesStore) -> None:
    with pytest.raises(asyncpg.InvalidParameterValueError, match="in the future"):
        await store.compact(new_tenant(), now=datetime.now(UTC) + timedelta(days=400))
