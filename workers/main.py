"""The Stead worker: which workflows and activities run on which task queue.

Started by ``stead worker``. It connects with the pydantic data converter (every
contract is a pydantic model; payloads AES-GCM encrypted when a keyring is set), opens
the resources activities need (Postgres pool, OPA client, adapter resources and the
secret store) once, and exits cleanly on SIGTERM/SIGINT: in-flight
activities get the graceful-shutdown window, then the process returns 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker

from activities.capability import CapabilityActivities
from activities.continuation import ContinuationActivities
from activities.execution import ExecutionActivities
from activities.hello import greet
from activities.identity import IdentityActivities
from activities.memory import MemoryActivities
from activities.planning import PlanningActivities
from activities.policy import PolicyActivities
from activities.records import RecordActivities
from activities.step import StepActivities
from adapters.ratelimit import RateLimiter
from adapters.registry import AdapterResources, worker_catalog
from stead.audit import chain_for
from stead.audit import install as install_audit_chain
from stead.capability.trust import WorkerTrust, open_trust
from stead.db.pool import create_pool
from stead.errors import ConfigError
from stead.keys import INTEGRITY, key_store
from stead.memory.factory import open_memory_service
from stead.memory.schedules import ensure_memory_schedules
from stead.memory.service import MemoryService
from stead.namespace_setup import fix_command, missing_search_attributes
from stead.observability.interceptor import ObservabilityInterceptor
from stead.observability.logs import configure_logging
from stead.observability.server import worker_metrics
from stead.observability.temporal import temporal_runtime
from stead.operations.catalog import Catalog
from stead.policy.opa import OpaClient
from stead.runs.scope import configure_scope
from stead.secrets import open_secret_store
from stead.settings import Settings, secret_environment
from stead.temporal import connect
from stead.temporal.versioning import deployment_config
from workers.edge import build_edge_worker, open_edge_resources
from workers.refusals import auditing_validator_refusals
from workers.registered import WORKFLOWS
from workers.sandbox import WorkerSandbox

log = logging.getLogger("stead.worker")


@dataclass
class WorkerResources:
    """Long-lived handles shared by every activity on this worker."""

    settings: Settings
    pool: asyncpg.Pool
    opa: OpaClient
    catalog: Catalog
    adapters: AdapterResources
    trust: WorkerTrust
    memory: MemoryService

    def activities(self) -> list[Callable[..., Any]]:
        policy = PolicyActivities(self.opa, self.pool, self.catalog)
        # Steps routed to an edge worker's queue are not executed here
        # (stead/operations/catalog.py).
        execution = ExecutionActivities(
            self.catalog.local_to(self.settings.task_queue),
            self.pool,
            self.adapters,
            issuer=self.trust.authority,
            verifier=self.trust.capabilities,
            rate_limits=RateLimiter(self.pool, self.settings.rate_limits),
        )
        identity = IdentityActivities(self.pool, self.opa, self.trust.principals)
        capability = CapabilityActivities(self.pool, self.trust.authority)
        planning = PlanningActivities(self.catalog, self.settings, self.pool, policy)
        records = RecordActivities(self.pool, identity)
        step = StepActivities(self.pool, policy, execution)
        continuation = ContinuationActivities(self.trust.integrity)
        return [
            greet,
            planning.create_decided,
            planning.plan_window,
            policy.decide_plan,
            policy.decide_step,
            execution.execute,
            step.run,
            step.run_express,
            records.append_audit,
            records.record_run,
            records.open_run,
            continuation.seal,
            continuation.verify,
            identity.verify_approval,
            identity.verify_cancel,
            identity.burn_token,
            capability.issue,
            *MemoryActivities(self.memory, self.trust.integrity).all(),
        ]


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[WorkerResources]:
    install_audit_chain(chain_for(settings))
    pool = await create_pool(settings.postgres_dsn)
    opa = OpaClient(settings.opa_url, token=settings.opa_token)
    catalog = worker_catalog(settings)
    local = catalog.local_to(settings.task_queue).adapters()
    adapters = await AdapterResources.open(settings, pool=pool, adapters=local)
    adapters.secrets = open_secret_store(settings, secret_environment())
    # An index another process holds only degrades recall (Postgres full-text search).
    memory = await open_memory_service(settings, pool, opa)
    adapters.memory = memory
    try:
        trust = open_trust(settings, pool)
        # Admission stamps are sealed and checked with the integrity secret. A worker that
        # mints capabilities must check them (it would otherwise admit stamps anyone
        # connecting as the app role could write); one holding only capability.pub runs
        # no step without a grant from such a worker, so it only warns.
        if trust.integrity is None:
            missing = (
                f"no integrity secret at {key_store(settings).secret_path(INTEGRITY)}: run "
                "`stead keys init` and give every worker that runs workflows the same "
                "integrity.secret"
            )
            if trust.authority is not None:
                raise ConfigError(missing)
            log.warning("%s; admission stamps are not checked on this worker", missing)
        configure_scope(pool, trust.integrity)
        async with auditing_validator_refusals(pool):
            yield WorkerResources(settings, pool, opa, catalog, adapters, trust, memory)
    finally:
        await memory.index.close()
        await adapters.aclose()
        await opa.aclose()
        await pool.close()


# Every run the worker has not cached (a new run, or a parked run evicted from a full
# cache whose approval arrives) gets a fresh sandbox that re-executes the workflow
# modules. Passing them through instead would take away the sandbox's run-time guard:
# their `time`, `random` and `open` are then the real ones, and a workflow reading the
# clock completes instead of failing its task (tests/test_worker_sandbox.py). So they
# are re-executed, from code compiled once per worker process (workers/sandbox.py):
# what a cache miss costs is in bench/sandbox_cost.py; a bounded cache
# (`STEAD_MAX_CACHED_WORKFLOWS`) keeps misses rare.
WORKFLOW_RUNNER = WorkerSandbox()


def build_worker(
    client: Client,
    task_queue: str,
    resources: WorkerResources,
    *,
    held_patches: Collection[str] = (),
) -> Worker:
    """The worker for ``task_queue``. ``held_patches`` keeps new runs on the code path from
    before those patches (``workflow.patched`` answers False where no history says
    otherwise): for a rollout that waits, or to measure the old path beside the new."""
    held = frozenset(held_patches)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(WORKFLOWS),
        activities=resources.activities(),
        # With a build id: this build of the worker deployment, runs auto-upgrading to
        # whichever build is current (stead/temporal/versioning.py says why).
        deployment_config=deployment_config(resources.settings),
        graceful_shutdown_timeout=timedelta(seconds=10),
        interceptors=[ObservabilityInterceptor()],
        workflow_runner=WORKFLOW_RUNNER,
        max_cached_workflows=resources.settings.max_cached_workflows,
        # Bounded slots keep a backlog in Temporal, where fairness between tenants applies.
        max_concurrent_activities=resources.settings.worker_max_activities,
        max_concurrent_workflow_tasks=resources.settings.worker_max_workflow_tasks,
        patch_activation_callback=(lambda patch: patch.patch_id not in held) if held else None,
    )


@asynccontextmanager
async def serving(
    client: Client, settings: Settings, adapters: Collection[str] = ()
) -> AsyncIterator[None]:
    """The full worker, or with ``adapters`` an edge worker running only their steps."""
    if adapters:
        log.info("edge worker: only the %s adapter(s), no workflows", ", ".join(sorted(adapters)))
        async with (
            open_edge_resources(settings, adapters) as edge,
            build_edge_worker(client, settings.task_queue, edge),
        ):
            yield
        return
    async with (
        open_resources(settings) as resources,
        build_worker(client, settings.task_queue, resources),
    ):
        yield


async def run_worker(settings: Settings, *, adapters: Collection[str] = ()) -> None:
    configure_logging(settings.log_format, settings.log_level)
    # SDK metrics on their own port (metrics_port + 1 unless set), Core logs in our format.
    client = await connect(settings, runtime=temporal_runtime(settings))
    # Without Stead's search attributes every run's workflow task fails, silently and
    # forever: refuse here, naming what is missing and the command that fixes it.
    missing = await missing_search_attributes(client, settings.temporal_namespace)
    if missing:
        raise ConfigError(
            f"Temporal namespace {settings.temporal_namespace!r} lacks Stead's search "
            f"attributes {', '.join(missing)}; register them with "
            f"`{fix_command(settings.temporal_namespace)}`"
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with (
        worker_metrics(settings.metrics_port, client),
        serving(client, settings, adapters),
    ):
        if settings.memory_schedules and not adapters:
            # Opt-in, one pair per namespace; never for test or demo queues.
            await ensure_memory_schedules(
                client,
                settings.task_queue,
                reindex_every=timedelta(seconds=settings.memory_reindex_every_seconds),
                purge_every=timedelta(seconds=settings.memory_purge_every_seconds),
            )
        log.info("worker polling %s on %s", settings.task_queue, settings.temporal_address)
        print(
            f"stead worker ready: task queue {settings.task_queue!r} "
            f"on {settings.temporal_address}{_build_note(settings, adapters)}",
            flush=True,
        )
        await stop.wait()
        log.info("shutdown requested; draining")


def _build_note(settings: Settings, adapters: Collection[str]) -> str:
    """Which build this worker is, so an operator rolling one out sees it start."""
    if settings.worker_build_id is None:
        return " (unversioned)"
    if adapters:
        # An edge worker runs activities only: nothing of it is replayed, so it stays
        # unversioned and any build's runs may use it.
        return " (edge worker: unversioned)"
    return (
        f" (worker deployment {settings.worker_deployment!r}, build {settings.worker_build_id!r})"
    )
