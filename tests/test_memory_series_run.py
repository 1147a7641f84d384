"""A governed run records an observation with ``memory.observe`` and reads the trend back
with ``memory.series``; a retry of the observe step (same idempotency key) adds nothing."""

from __future__ import annotations

from typing import Any

from pydantic import JsonValue

from adapters.base import OperationContext
from adapters.registry import AdapterResources, default_catalog
from stead.db.pool import create_pool
from stead.memory.routed import UnavailableIndex
from stead.memory.service import MemoryService
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
