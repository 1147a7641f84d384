"""Metrics, structured logs and traces for the worker.

``metrics`` holds the one registry every Stead metric lives in (import it to add or
record a metric); ``server`` serves it on ``/metrics``; ``approvals`` keeps the
pending-approvals gauge; ``steps`` times and counts step executions; ``interceptor``
puts tenant, run and step on every activity's log lines; ``logs`` formats them;
``temporal`` wires the Temporal SDK's own metrics; ``tracing`` (OpenTelemetry, loaded
only when tracing is on) makes one trace per run.
"""
