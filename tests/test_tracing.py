"""OpenTelemetry traces through Temporal's interceptor: every span of a run in one trace."""

from __future__ import annotations

import signal
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler

import pytest
import pytest_asyncio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.worker import Worker

from stead.observability.tracing import run_traceparent, tracing_interceptor
from stead.settings import Settings
from stead.temporal import connect, tracing_interceptors
from tests.peers import serve_handler
from tests.runs import configure_tenant, new_tenant, playbook, start_run
from tests.workers import worker_process
from workers.main import build_worker, open_resources
from workflows.run import RunWorkflow

TWO_STEPS = playbook(
    {"id": "put", "operation": "records.put", "args": {"key": "k", "value": {}}},
    {"id": "echo", "operation": "core.echo", "args": {"value": 1}, "depends_on": ["put"]},
)


@dataclass
class Traced:
    plain: Client  # no tracing: how a schedule or the Temporal UI starts a run
    traced: Client
    exporter: InMemorySpanExporter
    settings: Settings


@pytest_asyncio.fixture(scope="module")
async def traced(stack: Settings) -> AsyncIterator[Traced]:
    exporter = InMemorySpanExporter()
    plain = await connect(stack)
    config = plain.config()
    config["interceptors"] = [tracing_interceptor(exporter, batch=False)]
    yield Traced(plain=plain, traced=Client(**config), exporter=exporter, settings=stack)


def _run_spans(exporter: InMemorySpanExporter, workflow_id: str) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if (s.attributes or {}).get("temporalWorkflowID") == workflow_id
    ]


def _trace_ids(spans: list[ReadableSpan]) -> set[int]:
    return {s.context.trace_id for s in spans if s.context is not None}


async def test_a_traced_start_roots_the_runs_one_trace(traced: Traced) -> None:
    task_queue = f"trace-{uuid.uuid4().hex[:8]}"
    tenant = new_tenant()
    await configure_tenant(traced.settings.opa_url, tenant)
    async with (
        open_resources(traced.settings) as resources,
        build_worker(traced.traced, task_queue, resources),
    ):
        handle = await start_run(
            traced.traced,
            task_queue,
            tenant=tenant,
            principal="user:ann",
            playbook_source=TWO_STEPS,
        )
        assert (await handle.result()).status == "completed"
    spans = _run_spans(traced.exporter, handle.id)
    names = [s.name for s in spans]
    assert "StartWorkflow:stead.run" in names and "RunWorkflow:stead.run" in names
    executions = ("adapter.execute", "express.step", "step.run")
    assert sum(names.count(f"RunActivity:{name}") for name in executions) >= 2
    assert "RunActivity:plan.create_decided" in names and "CompleteWorkflow:stead.run" in names
    assert len(_trace_ids(spans)) == 1
    root = next(s for s in spans if s.name == "StartWorkflow:stead.run")
    assert root.parent is None


async def test_a_run_started_without_tracing_keeps_one_trace_across_replays(
    traced: Traced,
) -> None:
    """With no workflow cache every task replays the run from the start, yet no span strays."""
    task_queue = f"trace-replay-{uuid.uuid4().hex[:8]}"
    tenant = new_tenant()
    await configure_tenant(traced.settings.opa_url, tenant)
    async with open_resources(traced.settings) as resources:
        worker = Worker(
            traced.traced,
            task_queue=task_queue,
            workflows=[RunWorkflow],
            activities=resources.activities(),
            max_cached_workflows=0,
            graceful_shutdown_timeout=timedelta(seconds=5),
        )
        async with worker:
            handle = await start_run(
                traced.plain,
                task_queue,
                tenant=tenant,
                principal="user:ann",
                playbook_source=TWO_STEPS,
            )
            assert (await handle.result()).status == "completed"
    spans = _run_spans(traced.exporter, handle.id)
    names = [s.name for s in spans]
    assert "RunWorkflow:stead.run" in names and "CompleteWorkflow:stead.run" in names
    assert "RunActivity:plan.create_decided" in names
    description = await handle.describe()
    expected = run_traceparent(handle.id, description.run_id).split("-")[1]
    assert _trace_ids(spans) == {int(expected, 16)}


def test_tracing_is_off_unless_an_otlp_endpoint_is_set(stack: Settings) -> None:
    assert stack.otlp_endpoint is None
    assert tracing_interceptors(stack) == []


@dataclass
class Collector:
    """An OTLP/HTTP trace receiver: what a collector would be sent."""

    spans: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def receive(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.lock:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        attributes = {a.key: a.value.string_value for a in span.attributes}
                        self.spans.append((span.name, span.trace_id, attributes))


@pytest.fixture
def collector() -> Iterator[tuple[Collector, str]]:
    received = Collector()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if self.path == "/v1/traces":
                received.receive(self.rfile.read(length))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serve_handler(Handler) as url:
        yield received, url


async def test_stead_worker_sends_the_runs_trace_to_the_otlp_endpoint(
    stack: Settings, collector: tuple[Collector, str]
) -> None:
    received, endpoint = collector
    task_queue = f"otlp-{uuid.uuid4().hex[:8]}"
    tenant = new_tenant()
    await configure_tenant(stack.opa_url, tenant)
    with worker_process(stack, task_queue, STEAD_OTLP_ENDPOINT=endpoint) as child:
        handle = await start_run(
            await connect(stack),
            task_queue,
            tenant=tenant,
            principal="user:ann",
            playbook_source=TWO_STEPS,
        )
        assert (await handle.result()).status == "completed"
        # The batch exporter flushes when the worker shuts down.
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 0
    spans = [s for s in received.spans if s[2].get("temporalWorkflowID") == handle.id]
    assert {name for name, _, _ in spans} >= {
        "RunWorkflow:stead.run",
        "RunActivity:plan.create_decided",
        "CompleteWorkflow:stead.run",
    }
    assert len({trace_id for _, trace_id, _ in spans}) == 1
