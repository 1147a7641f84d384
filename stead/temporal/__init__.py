"""Stead's one way to reach Temporal: ``connect(settings)``.

The worker, the CLI, the webhook, the codec server, tests and benchmarks all connect
here, so a TLS, API-key or profile setting works the same for every process.
"""

from stead.temporal.client import connect, temporal_tls, tracing_interceptors

__all__ = ["connect", "temporal_tls", "tracing_interceptors"]
