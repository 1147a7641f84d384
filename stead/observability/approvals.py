"""``stead_approvals_pending``: how many runs are waiting on a human, per tenant.

The figure comes from Temporal visibility (each run flags itself with the
``SteadPendingApproval`` search attribute), not from increments in this process: a
wait outlives the worker that started it, and the approval may arrive on another
worker, so a counter kept here would drift. Every worker reports the same
namespace-wide figure; aggregate across workers with ``max``, not ``sum``.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from temporalio.client import Client

from stead.contracts.search_attributes import SA_TENANT

NAME = "stead_approvals_pending"
DOC = "Runs waiting on at least one human approval (from Temporal visibility)."
# The query `stead pending` lists with (stead/contracts/search_attributes.py has both).
PENDING_QUERY = "SteadPendingApproval = true AND ExecutionStatus = 'Running'"


class PendingApprovals(Collector):
    """A gauge refreshed from visibility by :meth:`refresh`; a tenant with none is absent."""

    def __init__(self) -> None:
        # Replaced whole, never mutated: collect() runs on the HTTP server's thread.
        self._counts: dict[str, int] = {}

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(NAME, DOC, labels=["tenant"])
        for tenant, count in sorted(self._counts.items()):
            family.add_metric([tenant], count)
        yield family

    def describe(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(NAME, DOC, labels=["tenant"])

    def count(self, tenant: str) -> int:
        return self._counts.get(tenant, 0)

    async def refresh(self, client: Client) -> None:
        """Recount from visibility (which lags the workflows by a moment)."""
        counts: dict[str, int] = {}
        async for execution in client.list_workflows(PENDING_QUERY):
            tenant = execution.typed_search_attributes.get(SA_TENANT) or "unknown"
            counts[tenant] = counts.get(tenant, 0) + 1
        self._counts = counts
