"""The Temporal SDK runtime for the worker: its metrics exported, its logs in ours.

The SDK's core serves its own metrics (task slots, poll and schedule-to-start
latency, ...) on a port beside the worker's ``/metrics``:
``settings.resolved_temporal_metrics_port``, which is ``metrics_port + 1`` unless set.
Names follow Prometheus conventions (seconds, ``_total``) under the ``temporal_``
prefix. Core's own log lines are forwarded to the ``temporalio.core`` Python logger,
so they come out in the worker's format (JSON) rather than as raw console text.
"""

from __future__ import annotations

import logging

from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from stead.settings import Settings


def temporal_runtime(settings: Settings, host: str = "0.0.0.0") -> Runtime:
    """The runtime for the worker's client. Create one per process: it holds its port."""
    port = settings.resolved_temporal_metrics_port
    metrics = None
    if port:
        metrics = PrometheusConfig(
            bind_address=f"{host}:{port}",
            counters_total_suffix=True,
            unit_suffix=True,
            durations_as_seconds=True,
        )
    logs = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )
    return Runtime(telemetry=TelemetryConfig(logging=logs, metrics=metrics))
