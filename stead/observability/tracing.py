"""OpenTelemetry traces through Temporal's ``TracingInterceptor``: one trace per run.

Off by default. ``STEAD_OTLP_ENDPOINT`` (an OTLP/HTTP collector) turns it on for the
worker and the CLI: put the interceptor on ``Client.connect`` and it covers both the
client calls (``StartWorkflow`` becomes the run's root span) and the worker that
uses the client (workflow and activity spans). Tests pass their own exporter.

A run started by a client without tracing (a schedule, the Temporal UI, another
service) carries no trace context, and Temporal's interceptor would then either drop
the workflow's spans or start a fresh trace on every replay. Here such a run gets a
parent derived from its first run id instead, so its spans always share one trace,
whichever worker records them and however often the workflow is replayed.

This module imports OpenTelemetry; the rest of Stead imports it only when tracing is on.
"""

from __future__ import annotations

import hashlib
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from temporalio import workflow
from temporalio.contrib.opentelemetry import TracingInterceptor, TracingWorkflowInboundInterceptor
from temporalio.worker import WorkflowInterceptorClassInput

SERVICE_NAME = "stead"
TRACER_NAME = "stead.temporal"

_providers: dict[str, TracerProvider] = {}


def run_traceparent(workflow_id: str, first_run_id: str) -> str:
    """A W3C ``traceparent`` that is the same for every replay of one run."""
    digest = hashlib.sha256(f"{workflow_id}/{first_run_id}".encode()).hexdigest()
    return f"00-{digest[:32]}-{digest[32:48]}-01"


class RunTracingInterceptor(TracingInterceptor):
    """Temporal's tracing interceptor, with a stable trace for runs started without one."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[TracingWorkflowInboundInterceptor]:
        super().workflow_interceptor_class(input)
        return _RunTracingWorkflowInboundInterceptor


class _RunTracingWorkflowInboundInterceptor(TracingWorkflowInboundInterceptor):
    # Overrides a private hook of the SDK's interceptor (temporalio 1.x): where the
    # workflow reads its parent context. tests/test_tracing.py notices if it moves.
    def _load_workflow_context_carrier(self) -> Any:
        carrier = super()._load_workflow_context_carrier()
        if carrier:
            return carrier
        info = workflow.info()
        self._workflow_context_carrier = {
            "traceparent": run_traceparent(info.workflow_id, info.first_execution_run_id)
        }
        return self._workflow_context_carrier


def tracing_interceptor(exporter: SpanExporter, *, batch: bool = True) -> RunTracingInterceptor:
    """An interceptor whose spans go to ``exporter``; ``batch=False`` exports each at once."""
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    return RunTracingInterceptor(provider.get_tracer(TRACER_NAME))


def otlp_interceptor(endpoint: str) -> RunTracingInterceptor:
    """Spans batched to the OTLP/HTTP collector at ``endpoint`` (one exporter per process)."""
    provider = _providers.get(endpoint)
    if provider is None:
        url = endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"
        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        _providers[endpoint] = provider
    return RunTracingInterceptor(provider.get_tracer(TRACER_NAME))
