"""A governed run records an observation with ``memory.observe`` and reads the trend back
with ``memory.series``; a retry of the observe step (same idempotency key) adds nothing."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from pydantic import JsonValue

from adapters.base import AdapterError, OperationContext
from adapters.registry import AdapterResources, default_catalog
from stead.db.pool import create_pool
from stead.memory import Provenance
from stead.memory.contracts import ObserveRequest
from stead.memory.routed import UnavailableIndex
from stead.memory.service import MemoryService
from stead.settings import Settings
from tests.conftest import WorkerHandle
from tests.runs import configure_tenant, new_tenant, playbook, start_run
from tests.test_memory_support import EMBEDDER, admin_fetch

CATALOG = default_catalog()
SKU: dict[str, JsonValue] = {"sku": "A-1"}
OBSERVE_ARGS: dict[str, JsonValue] = {
    "series": "stock.mismatch",
    "value": 3,
    "labels": SKU,
    "reason": "count",
}
RUN = playbook(
    {"id": "observe", "operation": "memory.observe", "args": OBSERVE_ARGS},
    {
        "id": "trend",
        "operation": "memory.series",
        "args": {"series": "stock.mismatch", "labels": SKU, "window": "7d", "aggregate": "sum"},
        "depends_on": ["observe"],
    },
)


async def test_a_run_observes_then_reads_and_a_retry_does_not_double_count(
    worker: WorkerHandle,
) -> None:
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant)

    handle = await start_run(
        worker.client, worker.task_queue, tenant=tenant, principal="user:ops", playbook_source=RUN
    )
    status = await handle.result()

    assert status.status == "completed", status.reasons
    outputs: dict[str, Any] = {s.step_id: s.output for s in status.steps}
    assert outputs["observe"]["created"] is True
    assert [(p["value"], p["samples"]) for p in outputs["trend"]["points"]] == [(3.0, 1)]

    # What Temporal does when the observe activity's completion is lost: run it again
    # with the step's idempotency key. The first point comes back; nothing is added.
    pool = await create_pool(worker.settings.postgres_dsn, min_size=1, max_size=2)
    try:
        service = MemoryService(pool, UnavailableIndex("not needed"), EMBEDDER)
        ctx = OperationContext(
            tenant=tenant,
            principal="user:ops",
            workflow_id=handle.id,
            step_id="observe",
            idempotency_key=f"{handle.id}/observe",
            resources=AdapterResources(pool=pool, memory=service),
        )
        op = CATALOG.get("memory.observe")
        again = await op.run(ctx, CATALOG.parse_args("memory.observe", OBSERVE_ARGS))
        assert op.reconcile is not None
        found = await op.reconcile(ctx, CATALOG.parse_args("memory.observe", OBSERVE_ARGS))
    finally:
        await pool.close()
    assert again.created is False and again.value == 3
    assert found is not None and found.observed_at == again.observed_at
    rows = await admin_fetch(
        worker.settings,
        "SELECT principal, workflow_id, step_id FROM observations WHERE tenant = $1",
        tenant,
    )
    assert [tuple(r) for r in rows] == [("user:ops", handle.id, "observe")]


POINTS: dict[str, JsonValue] = {
    "series": "commerce.sku",
    "points": [
        {"value": 1, "labels": {"sku": "A-1", "kind": "mismatch"}},
        {"value": 0, "labels": {"sku": "B-2", "kind": "mismatch"}},
    ],
    "labels": {"source": "test"},
}


async def test_a_batch_is_written_once_whole_and_a_changed_retry_writes_nothing(
    stack: Settings,
) -> None:
    tenant = new_tenant()
    pool = await create_pool(stack.postgres_dsn, min_size=1, max_size=2)
    try:
        service = MemoryService(pool, UnavailableIndex("not needed"), EMBEDDER)
        ctx = OperationContext(
            tenant=tenant,
            principal="user:ops",
            workflow_id="run-batch",
            step_id="observe",
            idempotency_key="run-batch/observe",
            resources=AdapterResources(pool=pool, memory=service),
        )
        op = CATALOG.get("memory.observe_many")
        args = CATALOG.parse_args("memory.observe_many", POINTS)
        assert op.reconcile is not None
        assert await op.reconcile(ctx, args) is None  # nothing committed yet
        first = await op.run(ctx, args)
        again = await op.run(ctx, args)
        found = await op.reconcile(ctx, args)
        changed: dict[str, JsonValue] = {
            **POINTS,
            "points": [{"value": 1, "labels": {"sku": "A-1"}}, {"value": 5}],
        }
        with pytest.raises(AdapterError, match="already wrote a different point"):
            await op.run(ctx, CATALOG.parse_args("memory.observe_many", changed))
        # All or none: a batch whose second point conflicts leaves no first point.
        other = dataclasses.replace(ctx, step_id="other", idempotency_key="run-batch/other")
        await service.observations.observe(
            ObserveRequest(
                tenant=tenant,
                series="commerce.sku",
                value=9,
                provenance=Provenance(principal="user:ops"),
                request_key="run-batch/other#1",
            )
        )
        with pytest.raises(AdapterError, match="already wrote a different point"):
            await op.run(other, args)
    finally:
        await pool.close()
    assert (first.observed, first.created) == (2, 2)
    assert (again.observed, again.created) == (2, 0)
    assert found is not None and found.observed == 2
    rows = await admin_fetch(
        stack,
        "SELECT labels::text AS labels, value, request_key FROM observations"
        " WHERE tenant = $1 ORDER BY id",
        tenant,
    )
    assert [(json.loads(r["labels"]), r["value"], r["request_key"]) for r in rows] == [
        ({"sku": "A-1", "kind": "mismatch", "source": "test"}, 1.0, "run-batch/observe#0"),
        ({"sku": "B-2", "kind": "mismatch", "source": "test"}, 0.0, "run-batch/observe#1"),
        ({}, 9.0, "run-batch/other#1"),
    ]
