"""An edge worker: ``stead worker --adapters email --task-queue edge-email``.

It runs one activity, ``adapter.execute``, for the named adapters only, and polls
the task queue their steps are routed to (``STEAD_ADAPTER_QUEUES`` on the workers
that plan). It hosts no workflows, asks no policy, and opens only what those
adapters use, so the SMTP relay's credentials (say) live on this machine and nowhere
else. It still writes the effect ledger, the audit log and the rate-limit buckets,
so it connects to Postgres as the app role.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker

from activities.execution import ExecutionActivities
from adapters.ratelimit import RateLimiter
from adapters.registry import AdapterResources, worker_catalog
from stead.audit import chain_for
from stead.audit import install as install_audit_chain
from stead.capability.trust import WorkerTrust, open_trust
from stead.db.pool import create_pool
from stead.errors import ConfigError
from stead.observability.interceptor import ObservabilityInterceptor
from stead.operations.catalog import Catalog, UnknownAdapter
from stead.runs.scope import configure_scope
from stead.settings import Settings


@dataclass
class EdgeResources:
    """What an edge worker holds: the ledger's pool and its adapters' handles."""

    settings: Settings
    pool: asyncpg.Pool
    catalog: Catalog
    adapters: AdapterResources
    trust: WorkerTrust

    def activities(self) -> list[Callable[..., Any]]:
        execution = ExecutionActivities(
            self.catalog,
            self.pool,
            self.adapters,
            issuer=self.trust.authority,
            verifier=self.trust.capabilities,
            rate_limits=RateLimiter(self.pool, self.settings.rate_limits),
        )
        return [execution.execute]


def edge_catalog(settings: Settings, adapters: Collection[str]) -> Catalog:
    """The operations of ``adapters``; an unknown name fails the start, listing the known."""
    try:
        return worker_catalog(settings).for_adapters(adapters)
    except UnknownAdapter as exc:
        raise ConfigError(f"--adapters: {exc}") from None


@asynccontextmanager
async def open_edge_resources(
    settings: Settings, adapters: Collection[str]
) -> AsyncIterator[EdgeResources]:
    catalog = edge_catalog(settings, adapters)
    install_audit_chain(chain_for(settings))
    pool = await create_pool(settings.postgres_dsn)
    try:
        handles = await AdapterResources.open(settings, pool=pool, adapters=catalog.adapters())
        try:
            trust = open_trust(settings, pool)
            # Without the integrity secret the edge cannot check admission seals; an edge
            # holding only capability.pub still runs a step only from a grant that
            # capability.issue (which checks them) minted.
            configure_scope(pool, trust.integrity)
            yield EdgeResources(settings, pool, catalog, handles, trust)
        finally:
            await handles.aclose()
    finally:
        await pool.close()


def build_edge_worker(client: Client, task_queue: str, edge: EdgeResources) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        activities=edge.activities(),
        graceful_shutdown_timeout=timedelta(seconds=10),
        interceptors=[ObservabilityInterceptor()],
        max_concurrent_activities=edge.settings.worker_max_activities,
    )
