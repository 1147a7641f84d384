"""A SKU that keeps drifting is a trend the third reconciliation reports, not a guess.

Real pieces only: the example shop API, a warehouse database in the session's
Postgres, OPA with the shipped policy and a ``stead worker`` child process. Each run
of the shipped ``commerce-reconcile`` playbook reads the earlier runs' mismatch points
per SKU (``memory.series``), compares, fixes, and records this run's points
(``memory.observe_many``, one governed step); between runs the warehouse recounts
MUG-01, so it is mismatched every time while CAP-03 is fixed once and stays right.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from stead.contracts.run import RunInput, RunStatus
from stead.settings import Settings
from stead.temporal import connect
from stead_cases.runs import commerce_request, reconcile_limits
from stead_cases.services._http import serve
from stead_cases.services.shop import ShopService
from stead_cases.services.warehouse import create_warehouse, recount
from tests.cases import approve_until_done, configure_case_tenant, retire, step
from tests.runs import new_tenant
from tests.test_memory_support import admin_fetch
from tests.workers import start_worker

APPROVER = "user:ops-lead"
SKUS = ("MUG-01", "CAP-03")


async def test_three_runs_with_the_same_mismatching_sku_report_a_trend(stack: Settings) -> None:
    assert stack.postgres_admin_dsn
    tenant = new_tenant()
    await configure_case_tenant(stack.opa_url, tenant, "shop")
    database = f"wh_{tenant}_trend".lower()
    dsn = await create_warehouse(stack.postgres_admin_dsn, database)
    task_queue = f"trend-{uuid.uuid4().hex[:8]}"
    worker = start_worker(
        stack, task_queue, STEAD_SQL_DATABASES=json.dumps({tenant: {"trend": dsn}})
    )
    client = await connect(stack)
    limits = await reconcile_limits(stack.opa_url, tenant, stack.opa_token)
    outputs: list[dict[str, Any]] = []
    workflows: list[str] = []
    try:
        with serve(ShopService()) as url:
            for n in range(3):
                if n:
                    # The shelf count drops again: MUG-01 is wrong in every run.
                    await recount(stack.postgres_admin_dsn, database, {"MUG-01": -1})
                request = commerce_request(
                    tenant,
                    shop_url=url,
                    database="trend",
                    skus=SKUS,
                    limits=limits,
                    trigger={"type": "nightly", "night": n + 1},
                )
                handle = await client.start_workflow(
                    "stead.run",
                    RunInput(request=request),
                    id=f"run-{tenant}-{uuid.uuid4().hex[:12]}",
                    task_queue=task_queue,
                    result_type=RunStatus,
                )
                status, _ = await approve_until_done(handle, APPROVER)
                assert status.status == "completed", status.reasons
                observed = step(status, "observe").output
                assert observed == {"series": "commerce.sku", "observed": 4, "created": 4}
                compare = step(status, "compare").output
                assert isinstance(compare, dict)
                outputs.append(compare)
                workflows.append(handle.id)
    finally:
        retire(worker)

    verdicts = [
        {t["sku"]: (t["verdict"], t["mismatched"], t["runs"]) for t in o["trends"]} for o in outputs
    ]
    assert verdicts == [
        {"MUG-01": ("first", 1, 1), "CAP-03": ("first", 1, 1)},
        {"MUG-01": ("again", 2, 2)},
        {"MUG-01": ("trend", 3, 3)},
    ]
    third = outputs[2]
    assert "MUG-01 mismatched in 3 of the last 3 runs (trend)" in third["summary"]
    assert "MUG-01: first mismatch (no earlier run recorded it)" in outputs[0]["summary"]
    assert "CAP-03" not in " ".join(t["text"] for t in third["trends"])

    # What memory holds: per run and SKU a mismatch and a stock point, with the run and
    # the step that wrote them as provenance.
    rows = await admin_fetch(
        stack,
        "SELECT workflow_id, step_id, labels->>'sku' AS sku, labels->>'kind' AS kind, value"
        " FROM observations WHERE tenant = $1 AND series = 'commerce.sku'"
        " ORDER BY id",
        tenant,
    )
    mismatch = [
        (workflows.index(r["workflow_id"]), r["sku"], r["value"])
        for r in rows
        if r["kind"] == "mismatch"
    ]
    assert sorted(mismatch) == [
        (0, "CAP-03", 1.0),
        (0, "MUG-01", 1.0),
        (1, "CAP-03", 0.0),
        (1, "MUG-01", 1.0),
        (2, "CAP-03", 0.0),
        (2, "MUG-01", 1.0),
    ]
    assert {r["step_id"] for r in rows} == {"observe"}
    assert sum(r["kind"] == "stock" for r in rows) == 6
