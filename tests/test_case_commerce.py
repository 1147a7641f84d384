"""Field case B end to end: inventory and returns reconciliation for a small shop.

Real pieces only: the example shop API (HTTP), warehouse databases in the session's
Postgres, OPA with the shipped policy (``policies/stead/commerce.rego``), and a
``stead worker`` child process that the test kills with SIGKILL mid-run.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from temporalio.client import Client, ScheduleActionStartWorkflow, WorkflowHandle

from adapters.webhook import sign, signing_key
from stead.contracts.run import RunInput, RunRequest, RunStatus
from stead.settings import Settings
from stead.temporal import connect
from stead_cases.runs import (
    COMMERCE_SCHEDULE,
    commerce_request,
    ensure_demo_schedules,
    reconcile_limits,
)
from stead_cases.services._http import serve
from stead_cases.services.shop import ShopService
from stead_cases.services.warehouse import create_warehouse, receive_return, rename_column
from stead_cases.webhook import ReturnRuns, serving
from tests.cases import (
    configure_case_tenant,
    decide,
    output,
    playbook_variant,
    retire,
    step,
)
from tests.opa_auth import admin_headers
from tests.runs import new_tenant, wait_pending
from tests.workers import start_worker

APPROVER = "user:ops-lead"
DATABASES = ("nightly", "policy", "returns", "drift")


@dataclass
class Case:
    client: Client
    settings: Settings
    task_queue: str
    tenant: str
    tight_tenant: str
    databases: dict[str, str]
    worker: subprocess.Popen[str]
    env: dict[str, str]

    def restart_worker(self) -> None:
        retire(self.worker)
        self.worker = start_worker(self.settings, self.task_queue, env=self.env)

    async def start(self, request: RunRequest) -> WorkflowHandle[Any, RunStatus]:
        return await self.client.start_workflow(
            "stead.run",
            RunInput(request=request),
            id=f"run-{request.tenant}-{uuid.uuid4().hex[:12]}",
            task_queue=self.task_queue,
            result_type=RunStatus,
        )


@pytest.fixture(scope="module")
async def case(stack: Settings) -> AsyncIterator[Case]:
    assert stack.postgres_admin_dsn
    tenant, tight = new_tenant(), new_tenant()
    for t in (tenant, tight):
        await configure_case_tenant(stack.opa_url, t, "shop")
    databases = {
        name: await create_warehouse(stack.postgres_admin_dsn, f"wh_{tenant}_{name}")
        for name in DATABASES
    }
    env = {
        "STEAD_SQL_DATABASES": json.dumps(
            {t: {name: dsn for name, dsn in databases.items()} for t in (tenant, tight)}
        )
    }
    task_queue = f"commerce-{uuid.uuid4().hex[:8]}"
    worker = start_worker(stack, task_queue, env=env)
    state = Case(await connect(stack), stack, task_queue, tenant, tight, databases, worker, env)
    try:
        yield state
    finally:
        retire(state.worker)


@pytest.fixture
def shop() -> Iterator[tuple[ShopService, str]]:
    service = ShopService()
    with serve(service) as url:
        yield service, url


async def test_nightly_run_fixes_small_escalates_large_and_survives_a_worker_kill(
    case: Case, shop: tuple[ShopService, str]
) -> None:
    service, url = shop
    held = service.stall_next()
    handle = await case.start(
        commerce_request(
            case.tenant,
            shop_url=url,
            database="nightly",
            limits=await reconcile_limits(
                case.settings.opa_url, case.tenant, case.settings.opa_token
            ),
            trigger={"type": "nightly"},
            playbook_source=playbook_variant("commerce-reconcile", fix_small=4, fix_large=4),
        )
    )
    # The shop has applied the first small fix and holds its answer: kill the worker now.
    assert await asyncio.to_thread(held.wait, 60)
    os.kill(case.worker.pid, signal.SIGKILL)
    await asyncio.to_thread(case.worker.wait, 30)
    service.release()
    case.restart_worker()

    pending = await wait_pending(handle, "fix_large")
    adjustments: Any = pending.args["adjustments"]
    assert [a["sku"] for a in adjustments] == ["LMP-05"]
    assert any("LMP-05" in r and "over the auto-fix limits" in r for r in pending.reasons)
    await decide(handle, pending, APPROVER)
    status: RunStatus = await handle.result()

    assert status.status == "completed", status.reasons
    # Each adjustment reached the shop exactly once, though one was sent twice.
    assert sorted((a["sku"], a["delta"]) for a in service.adjustments) == [
        ("CAP-03", 3),
        ("LMP-05", -3),
        ("MUG-01", -2),
    ]
    assert service.requests == 4
    assert len({a["idempotency_key"] for a in service.adjustments}) == 3
    assert {s: service.stock(s) for s in ("MUG-01", "CAP-03", "LMP-05")} == {
        "MUG-01": 38,
        "CAP-03": 10,
        "LMP-05": 0,
    }
    small, large = step(status, "fix_small"), step(status, "fix_large")
    assert small.decision is not None and small.decision.reasons == ("allowed by policy",)
    assert [a.approver for a in large.approvals] == [APPROVER]
    assert output(status, "compare")["unmatched"] == [{"sku": "PIN-06", "only_in": "warehouse"}]
    remembered = output(status, "remember")
    assert isinstance(remembered, dict) and remembered["version"] >= 1
    assert remembered["namespace"] == "commerce" and remembered["key"] == "reconciliation"


async def test_tightening_the_limit_in_opa_escalates_more_on_the_next_run(
    case: Case, stack: Settings
) -> None:
    tenant = case.tight_tenant

    async def escalated_after_a_run(read_limits: bool) -> tuple[list[str], RunStatus]:
        service = ShopService()
        with serve(service) as url:
            limits = (
                await reconcile_limits(stack.opa_url, tenant, stack.opa_token)
                if read_limits
                else {}
            )
            handle = await case.start(
                commerce_request(tenant, shop_url=url, database="policy", limits=limits)
            )
            pending = await wait_pending(handle, "fix_large")
            await decide(handle, pending, APPROVER, reject=True, comment="count it again")
            status: RunStatus = await handle.result()
        adjustments: Any = pending.args["adjustments"]
        return sorted(a["sku"] for a in adjustments), status

    before, first = await escalated_after_a_run(read_limits=True)
    assert before == ["LMP-05"]
    assert first.status == "completed"
    assert step(first, "fix_large").status == "rejected"

    async with httpx.AsyncClient() as http:
        response = await http.put(
            f"{stack.opa_url}/v1/data/stead/tenants/{tenant}/reconcile",
            json={"max_auto_units": 2, "max_auto_value": 100},
            headers=admin_headers(),
        )
        response.raise_for_status()

    after, second = await escalated_after_a_run(read_limits=True)
    assert after == ["CAP-03", "LMP-05"]
    # The second run recalled the first one's findings from memory, with provenance.
    assert step(first, "previous").output == {"items": []}
    recalled = output(second, "previous")["items"]
    assert len(recalled) == 1
    assert recalled[0]["workflow_id"] == first.workflow_id
    assert recalled[0]["step_id"] == "remember"
    assert [a["sku"] for a in recalled[0]["data"]["escalated"]] == ["LMP-05"]
    compare = output(second, "compare")
    assert compare["previous"]["workflow_id"] == first.workflow_id
    assert compare["recurring"] == ["CAP-03", "LMP-05", "MUG-01"]
    assert "mismatched again: CAP-03, LMP-05, MUG-01" in compare["summary"]
    versions = [output(r, "remember")["version"] for r in (first, second)]
    assert versions[1] == versions[0] + 1
    assert step(second, "fix_small").output == {  # MUG-01 (2 units) is still fixed alone
        "applied": [
            {
                "sku": "MUG-01",
                "delta": -2,
                "available": 38,
                "adjustment_id": "adj_1",
                "replayed": False,
            }
        ]
    }

    # A run that routes with stale limits (the playbook's defaults) gets no more freedom:
    # policy holds its "small" batch, which now holds an adjustment over the limit.
    service = ShopService()
    with serve(service) as url:
        handle = await case.start(
            commerce_request(tenant, shop_url=url, database="policy", limits={})
        )
        held = await wait_pending(handle, "fix_small")
        assert any("CAP-03: 3 units" in r for r in held.reasons)
        await handle.signal("cancel")
        await handle.result()
    assert service.adjustments == []


async def test_renamed_fields_stop_the_run_naming_the_field(
    case: Case, shop: tuple[ShopService, str], stack: Settings
) -> None:
    service, url = shop
    service.rename_field("inventory.available", "inventory.in_stock")
    limits = await reconcile_limits(stack.opa_url, case.tenant, stack.opa_token)
    handle = await case.start(
        commerce_request(case.tenant, shop_url=url, database="drift", limits=limits)
    )
    status: RunStatus = await handle.result()
    assert status.status == "failed"
    error = step(status, "shop").error or ""
    assert "no field 'inventory.available'" in error and "in_stock" in error
    assert service.adjustments == []

    assert stack.postgres_admin_dsn
    await rename_column(
        stack.postgres_admin_dsn, f"wh_{case.tenant}_drift", "on_hand", "qty_on_hand"
    )
    mapped = commerce_request(
        case.tenant,
        shop_url=url,
        database="drift",
        limits=limits,
        shop_fields={"available": "inventory.in_stock"},
    )
    status = await (await case.start(mapped)).result()
    assert status.status == "failed"
    assert step(status, "shop").status == "succeeded"
    assert "no column stock_levels.on_hand" in (step(status, "warehouse").error or "")
    assert service.adjustments == []


async def test_each_return_event_starts_exactly_one_run(
    case: Case, shop: tuple[ShopService, str], stack: Settings
) -> None:
    service, url = shop
    assert stack.postgres_admin_dsn
    event: dict[str, Any] = {
        "event_id": "ret-1001",
        "order_id": "o-77",
        "sku": "CAP-03",
        "quantity": 1,
    }
    # The warehouse books the parcel (CAP-03 sellable 10 -> 11; the shop still shows 7).
    await receive_return(stack.postgres_admin_dsn, f"wh_{case.tenant}_returns", **event)
    runs = ReturnRuns(
        case.client,
        case.task_queue,
        case.tenant,
        url,
        stack.opa_url,
        database="returns",
        opa_token=stack.opa_token,
    )
    secret = "whsec_" + base64.b64encode(b"return-events-key").decode()
    body = json.dumps(event).encode()
    with serving(runs, asyncio.get_running_loop(), secret=secret) as receiver:
        async with httpx.AsyncClient() as http:
            unsigned = await http.post(f"{receiver}/returns", content=body)
            answers = []
            for _ in range(2):  # the sender retries: a redelivery must not start a second run
                stamp = int(time.time())
                headers = {
                    "webhook-id": "ret-1001",
                    "webhook-timestamp": str(stamp),
                    "webhook-signature": sign(signing_key(secret), "ret-1001", stamp, body),
                }
                answers.append(
                    await http.post(f"{receiver}/returns", content=body, headers=headers)
                )
    assert unsigned.status_code == 401
    assert [a.status_code for a in answers] == [202, 200]
    run_id = answers[0].json()["run_id"]
    assert answers[1].json() == {"run_id": run_id, "started": False}

    status = await case.client.get_workflow_handle(run_id, result_type=RunStatus).result()
    assert status.status == "completed", status.reasons
    assert [(a["sku"], a["delta"]) for a in service.adjustments] == [("CAP-03", 4)]
    assert service.stock("CAP-03") == 11
    remembered = output(status, "compare")
    assert "type=return" in remembered["summary"] and "event_id=ret-1001" in remembered["summary"]


async def test_demo_schedules_are_created_once_and_updated_in_place(case: Case) -> None:
    nightly = commerce_request(case.tenant, shop_url="http://127.0.0.1:9", limits={})
    first = await ensure_demo_schedules(case.client, case.task_queue, commerce=nightly, paused=True)
    moved = commerce_request(case.tenant, shop_url="http://127.0.0.1:10", limits={})
    again = await ensure_demo_schedules(case.client, case.task_queue, commerce=moved, paused=True)
    assert first == again == [COMMERCE_SCHEDULE]
    handle = case.client.get_schedule_handle(COMMERCE_SCHEDULE)
    try:
        described = await handle.describe()
        (nightly_at,) = described.schedule.spec.calendars  # Temporal stores the cron as this
        assert (nightly_at.hour[0].start, nightly_at.minute[0].start) == (2, 30)
        assert described.schedule.state.paused
        action = described.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        (payload,) = action.args
        data = await case.client.data_converter.decode([payload])
        request = RunInput.model_validate(data[0]).request
        assert request.inputs["shop_url"] == "http://127.0.0.1:10"
        assert request.playbook == "commerce-reconcile"
    finally:
        await handle.delete()
