"""Memory's Prometheus series, served by the worker's /metrics."""

from __future__ import annotations

from prometheus_client import Counter

DEGRADED_RECALLS = Counter(
    "stead_memory_degraded_recalls_total",
    "Recalls answered by Postgres full-text search because the vector path was unavailable.",
    ["reason"],
)
UNINDEXED_WRITES = Counter(
    "stead_memory_unindexed_writes_total",
    "Memory versions committed to Postgres whose index write failed (reindex repairs them).",
)
