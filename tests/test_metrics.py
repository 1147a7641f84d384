"""The worker's ``/metrics`` after real runs: counters move by exactly what happened.

Each test reads ``/metrics`` over HTTP before and after a run on the real stack and
compares the two. Tenants are fresh per test, so tenant-labelled series start at 0;
series without a tenant label are compared as deltas too.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from temporalio.client import Client, WorkflowHandle

from stead.contracts.run import ApprovalInput, RunStatus
from stead.devstack.ports import free_port, is_free
from stead.observability.metrics import APPROVALS_PENDING
from stead.observability.server import MetricsServer, serve_metrics
from stead.settings import Settings
from stead.temporal import connect
from tests.conftest import WorkerHandle
from tests.peers import FakeLlm, serve, serve_handler
from tests.runs import configure_tenant, new_tenant, playbook, start_run, wait_pending
from tests.workers import worker_process
from workers.main import build_worker, open_resources

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Scrape:
    """One read of a /metrics page: sample name and labels to value."""

    samples: dict[tuple[str, Labels], float]

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """Sum over every series of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


async def scrape(url: str) -> Scrape:
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    response.raise_for_status()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    return Scrape(samples)


@pytest.fixture(scope="module")
def metrics() -> Iterator[MetricsServer]:
    """The same server the worker starts, on a free loopback port, over this process's registry."""
    server = serve_metrics(0, host="127.0.0.1")
    yield server
    server.close()


@dataclass
class FlakyService:
    """An HTTP service that answers 503 to its first ``failures`` requests, then ``status``."""

    failures: int = 0
    status: int = 200
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self) -> int:
        with self.lock:
            self.requests += 1
            return 503 if self.requests <= self.failures else self.status


@pytest.fixture
def flaky() -> Iterator[tuple[FlakyService, str]]:
    service = FlakyService()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def do_GET(self) -> None:
            body = json.dumps({"ok": True}).encode()
            self.send_response(service.answer())
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve_handler(Handler) as url:
        yield service, f"{url}/thing"


async def _pending_in_visibility(client: Client, tenant: str, expected: int) -> None:
    """Refresh the gauge until visibility, which lags the workflow a moment, agrees."""
    for _ in range(200):
        await APPROVALS_PENDING.refresh(client)
        if APPROVALS_PENDING.count(tenant) == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"visibility never showed {expected} pending run(s) for {tenant}")


async def test_governed_run_counts_steps_decisions_latency_and_minutes_saved(
    worker: WorkerHandle, metrics: MetricsServer
) -> None:
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant, egress=["127.0.0.1"])
    before = await scrape(metrics.url)
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        playbook_source=playbook(
            {
                "id": "put",
                "operation": "records.put",
                "args": {"key": "m", "value": {}},
                "minutes_saved": 2,
            },
            {
                "id": "echo",
                "operation": "core.echo",
                "args": {"value": 1},
                "minutes_saved": 3,
                "depends_on": ["put"],
            },
        ),
    )
    status = await handle.result()
    assert status.status == "completed", status.reasons
    after = await scrape(metrics.url)

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    for op in ("records.put", "core.echo"):
        assert delta("stead_steps_total", tenant=tenant, operation=op, outcome="succeeded") == 1
        assert delta("stead_step_duration_seconds_count", operation=op, outcome="succeeded") == 1
        assert (
            delta(
                "stead_policy_decisions_total",
                tenant=tenant,
                kind="step",
                operation=op,
                outcome="allow",
            )
            == 1
        )
    assert after.total("stead_steps_total", tenant=tenant) == 2
    assert (
        delta(
            "stead_policy_decisions_total",
            tenant=tenant,
            kind="plan",
            operation="",
            outcome="allow",
        )
        == 1
    )
    assert delta("stead_policy_evaluation_seconds_count", kind="step") == 2
    assert delta("stead_policy_evaluation_seconds_count", kind="plan") == 1
    assert after.total("stead_step_failures_total", tenant=tenant) == 0
    assert after.total("stead_step_retries_total", tenant=tenant) == 0
    assert delta("stead_run_duration_seconds_count", tenant=tenant, status="completed") == 1
    # The observed duration is the run row's own start-to-finish span, not a guess.
    took = await _recorded_run_seconds(worker.settings, handle.id)
    assert took > 0
    assert math.isclose(
        delta("stead_run_duration_seconds_sum", tenant=tenant, status="completed"), took
    )
    assert delta("stead_minutes_saved_total", tenant=tenant) == 5


async def _recorded_run_seconds(settings: Settings, workflow_id: str) -> float:
    """``finished_at - started_at`` of the run's row, read as the database owner."""
    assert settings.postgres_admin_dsn is not None
    admin = await asyncpg.connect(settings.postgres_admin_dsn)
    try:
        took = await admin.fetchval(
            "SELECT EXTRACT(EPOCH FROM finished_at - started_at)::float8 FROM runs"
            " WHERE workflow_id = $1",
            workflow_id,
        )
    finally:
        await admin.close()
    assert took is not None, f"run {workflow_id} has no finish stamp"
    return float(took)


async def _decision_to_finish_seconds(settings: Settings, workflow_id: str, step_id: str) -> float:
    """From policy's first "approve" decision on the step to the run's finish stamp."""
    assert settings.postgres_admin_dsn is not None
    admin = await asyncpg.connect(settings.postgres_admin_dsn)
    try:
        span = await admin.fetchval(
            "SELECT EXTRACT(EPOCH FROM r.finished_at - min(d.evaluated_at))::float8"
            " FROM runs r JOIN decisions d USING (workflow_id)"
            " WHERE r.workflow_id = $1 AND d.step_id = $2 AND d.kind = 'step'"
            " AND d.outcome = 'approve' GROUP BY r.finished_at",
            workflow_id,
            step_id,
        )
    finally:
        await admin.close()
    assert span is not None, f"run {workflow_id} has no approve decision or finish stamp"
    return float(span)


async def test_retried_step_counts_the_failure_the_retry_and_the_recovery(
    worker: WorkerHandle, metrics: MetricsServer, flaky: tuple[FlakyService, str]
) -> None:
    service, url = flaky
    service.failures = 1
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant, egress=["127.0.0.1"])
    before = await scrape(metrics.url)
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        playbook_source=playbook(
            {"id": "call", "operation": "http.request", "args": {"method": "GET", "url": url}}
        ),
    )
    status = await handle.result()
    assert status.status == "completed", status.reasons
    assert service.requests == 2
    after = await scrape(metrics.url)
    op = "http.request"
    assert after.value("stead_steps_total", tenant=tenant, operation=op, outcome="retrying") == 1
    assert after.value("stead_steps_total", tenant=tenant, operation=op, outcome="succeeded") == 1
    assert (
        after.value(
            "stead_step_failures_total", tenant=tenant, operation=op, error="AdapterRetryable"
        )
        == 1
    )
    assert after.value("stead_step_retries_total", tenant=tenant, operation=op) == 1
    recovered = after.value("stead_step_recovery_seconds_count", operation=op) - before.value(
        "stead_step_recovery_seconds_count", operation=op
    )
    assert recovered == 1


async def test_final_step_failure_is_counted_once_and_fails_the_run(
    worker: WorkerHandle, metrics: MetricsServer, flaky: tuple[FlakyService, str]
) -> None:
    service, url = flaky
    service.status = 404
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant, egress=["127.0.0.1"])
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        playbook_source=playbook(
            {"id": "call", "operation": "http.request", "args": {"method": "GET", "url": url}}
        ),
    )
    status = await handle.result()
    assert status.status == "failed"
    after = await scrape(metrics.url)
    op = "http.request"
    assert after.total("stead_steps_total", tenant=tenant) == 1
    assert after.value("stead_steps_total", tenant=tenant, operation=op, outcome="failed") == 1
    assert (
        after.value("stead_step_failures_total", tenant=tenant, operation=op, error="StepFailed")
        == 1
    )
    assert after.value("stead_run_duration_seconds_count", tenant=tenant, status="failed") == 1


async def test_denied_step_is_a_deny_decision_and_never_a_step(
    worker: WorkerHandle, metrics: MetricsServer
) -> None:
    tenant = new_tenant()
    await configure_tenant(
        worker.settings.opa_url, tenant, operations=["core.echo"], egress=["127.0.0.1"]
    )
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        playbook_source=playbook(
            {"id": "put", "operation": "records.put", "args": {"key": "x", "value": {}}}
        ),
    )
    status = await handle.result()
    assert status.status == "denied"
    after = await scrape(metrics.url)
    assert (
        after.value(
            "stead_policy_decisions_total", tenant=tenant, kind="plan", operation="", outcome="deny"
        )
        == 1
    )
    assert after.total("stead_policy_decisions_total", tenant=tenant) == 1
    assert after.total("stead_steps_total", tenant=tenant) == 0
    assert after.value("stead_run_duration_seconds_count", tenant=tenant, status="denied") == 1


async def _approval_run(worker: WorkerHandle, tenant: str) -> WorkflowHandle[Any, RunStatus]:
    await configure_tenant(
        worker.settings.opa_url,
        tenant,
        approval_risk="low",
        approvers=["user:bob"],
        egress=["127.0.0.1"],
    )
    return await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        playbook_source=playbook(
            {"id": "put", "operation": "records.put", "args": {"key": "a", "value": {}}}
        ),
    )


async def test_rejected_approval_is_pending_then_an_override_with_its_wait(
    worker: WorkerHandle, metrics: MetricsServer
) -> None:
    tenant = new_tenant()
    handle = await _approval_run(worker, tenant)
    pending = await wait_pending(handle, "put")
    await _pending_in_visibility(worker.client, tenant, 1)
    waiting = await scrape(metrics.url)
    assert waiting.value("stead_approvals_pending", tenant=tenant) == 1
    assert (
        waiting.value(
            "stead_policy_decisions_total",
            tenant=tenant,
            kind="step",
            operation="records.put",
            outcome="approve",
        )
        == 1
    )
    await handle.execute_update(
        "approve",
        ApprovalInput(
            step_id="put",
            plan_hash=pending.plan_hash,
            approver="user:bob",
            verdict="reject",
            comment="no",
        ),
    )
    assert (await handle.result()).status == "failed"
    await _pending_in_visibility(worker.client, tenant, 0)
    after = await scrape(metrics.url)
    assert after.value("stead_approvals_pending", tenant=tenant) == 0
    assert after.value("stead_human_overrides_total", tenant=tenant, kind="rejected") == 1
    assert after.value("stead_approval_wait_seconds_count", tenant=tenant, verdict="reject") == 1
    waited = after.value("stead_approval_wait_seconds_sum", tenant=tenant, verdict="reject")
    # Measured from policy's "approve" decision to the verdict, so within the run's life
    # after that decision: never longer than from the decision to the run's finish stamp.
    assert 0 < waited <= await _decision_to_finish_seconds(worker.settings, handle.id, "put")
    assert after.total("stead_steps_total", tenant=tenant) == 0


async def test_granted_approval_records_time_to_decision_and_no_override(
    worker: WorkerHandle, metrics: MetricsServer
) -> None:
    tenant = new_tenant()
    handle = await _approval_run(worker, tenant)
    pending = await wait_pending(handle, "put")
    await handle.execute_update(
        "approve",
        ApprovalInput(
            step_id="put", plan_hash=pending.plan_hash, approver="user:bob", verdict="approve"
        ),
    )
    assert (await handle.result()).status == "completed"
    after = await scrape(metrics.url)
    assert after.value("stead_approval_wait_seconds_count", tenant=tenant, verdict="approve") == 1
    assert after.value("stead_human_overrides_total", tenant=tenant, kind="rejected") == 0
    assert (
        after.value(
            "stead_steps_total", tenant=tenant, operation="records.put", outcome="succeeded"
        )
        == 1
    )


VALID_PLAN = {"rationale": "echo", "steps": [{"id": "a", "operation": "core.echo", "args": {}}]}


@pytest_asyncio.fixture(scope="module")
async def priced_llm_worker(stack: Settings) -> AsyncIterator[tuple[WorkerHandle, FakeLlm]]:
    """A worker whose planner is a model litellm has a price for, served by a local fake."""
    llm = FakeLlm()
    with serve(llm) as url:
        settings = stack.model_copy(
            update={
                "planner_model": "openai/gpt-4o-mini",
                "planner_api_base": f"{url}/v1",
                "planner_api_key": SecretStr("test-key"),
            }
        )
        task_queue = f"metrics-llm-{uuid.uuid4().hex[:8]}"
        client = await connect(settings)
        async with (
            open_resources(settings) as resources,
            build_worker(client, task_queue, resources),
        ):
            yield WorkerHandle(client=client, task_queue=task_queue, settings=settings), llm


async def test_planner_tokens_and_cost_are_counted_by_model_and_tenant(
    priced_llm_worker: tuple[WorkerHandle, FakeLlm], metrics: MetricsServer
) -> None:
    w, llm = priced_llm_worker
    llm.reply_plan("not json {", tokens=400)
    llm.reply_plan(VALID_PLAN, tokens=600)
    tenant = new_tenant()
    await configure_tenant(w.settings.opa_url, tenant, egress=["127.0.0.1"])
    handle = await start_run(
        w.client, w.task_queue, tenant=tenant, principal="user:ann", goal="echo"
    )
    status = await handle.result()
    assert status.status == "completed", status.reasons
    after = await scrape(metrics.url)
    model = "openai/gpt-4o-mini"
    assert after.value("stead_planner_tokens_total", tenant=tenant, model=model) == 1000
    cost = after.value("stead_planner_cost_usd_total", tenant=tenant, model=model)
    assert cost > 0
    assert math.isclose(cost, status.spent.usd, rel_tol=1e-9)


async def test_llm_step_cost_is_counted_by_operation_and_added_to_the_runs_spend(
    priced_llm_worker: tuple[WorkerHandle, FakeLlm], metrics: MetricsServer
) -> None:
    """A draft's tokens and dollars (what ``llm.generate`` reports) count like the planner's."""
    w, llm = priced_llm_worker
    llm.replies.clear()
    llm.reply_plan("A short draft.", tokens=300)
    tenant = new_tenant()
    await configure_tenant(w.settings.opa_url, tenant, egress=["127.0.0.1"])
    source = playbook(
        {
            "id": "draft",
            "operation": "llm.generate",
            "args": {
                "model": "openai/gpt-4o-mini",
                "api_base": w.settings.planner_api_base,
                "prompt": "Write one line.",
            },
        }
    )
    handle = await start_run(
        w.client, w.task_queue, tenant=tenant, principal="user:ann", playbook_source=source
    )
    status = await handle.result()
    assert status.status == "completed", status.reasons
    after = await scrape(metrics.url)
    assert after.value("stead_step_tokens_total", tenant=tenant, operation="llm.generate") == 300
    cost = after.value("stead_step_cost_usd_total", tenant=tenant, operation="llm.generate")
    assert cost > 0
    assert status.spent.tokens == 300
    assert math.isclose(cost, status.spent.usd, rel_tol=1e-9)


def _two_free_ports() -> int:
    """A free port whose successor is free too (the worker takes both)."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and is_free(port + 1):
            return port
    raise AssertionError("no two adjacent free ports on loopback")


async def test_stead_worker_serves_its_metrics_and_the_sdks_on_the_next_port(
    stack: Settings,
) -> None:
    port = _two_free_ports()
    task_queue = f"metrics-proc-{uuid.uuid4().hex[:8]}"
    with worker_process(stack, task_queue, STEAD_METRICS_PORT=str(port)):
        client = await connect(stack)
        tenant = new_tenant()
        await configure_tenant(stack.opa_url, tenant, egress=["127.0.0.1"])
        handle = await start_run(
            client,
            task_queue,
            tenant=tenant,
            principal="user:ann",
            playbook_source=playbook({"id": "a", "operation": "core.echo", "args": {}}),
        )
        assert (await handle.result()).status == "completed"
        stead = await scrape(f"http://127.0.0.1:{port}/metrics")
        sdk = await scrape(f"http://127.0.0.1:{port + 1}/metrics")
    assert (
        stead.value("stead_steps_total", tenant=tenant, operation="core.echo", outcome="succeeded")
        == 1
    )
    assert stead.value("stead_run_duration_seconds_count", tenant=tenant, status="completed") == 1
    assert "process_resident_memory_bytes" in stead.names()
    # At least the run's opening and its step ran as activities (the close and the run's
    # summary are local activities since the fewer-actions patch).
    assert (
        sdk.total("temporal_activity_execution_latency_seconds_count", task_queue=task_queue) >= 2
    )
    assert sdk.total("temporal_workflow_completed_total", task_queue=task_queue) >= 1


async def test_memorys_own_series_are_served_on_the_same_page(metrics: MetricsServer) -> None:
    import stead.memory.metrics  # noqa: F401  (registers memory's series on import)

    async with httpx.AsyncClient() as http:
        page = (await http.get(metrics.url)).text
    assert "# HELP stead_memory_degraded_recalls_total" in page
    assert "# HELP stead_approvals_pending" in page


async def test_express_lane_steps_are_counted_like_any_other(
    worker: WorkerHandle, metrics: MetricsServer
) -> None:
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant, egress=["127.0.0.1"])
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        options={"express_reads": True},
        playbook_source=playbook({"id": "echo", "operation": "core.echo", "args": {"value": 1}}),
    )
    assert (await handle.result()).status == "completed"
    after = await scrape(metrics.url)
    labels = {"tenant": tenant, "operation": "core.echo"}
    assert after.value("stead_steps_total", **labels, outcome="succeeded") == 1
    assert after.value("stead_policy_decisions_total", **labels, kind="step", outcome="allow") == 1
