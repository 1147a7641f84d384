"""Memory's seams into Temporal on the real stack: the activities a run calls, the
`memory.remember` operation, the scheduled repair workflows and their schedules, and
index calls routed to the worker that holds the embedded shard.

The worker here registers only memory's workflows and activities (plus one test
workflow that calls the run-facing activities the way the run workflow will).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytest_asyncio
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.memory import MemoryActivities
from adapters.base import AdapterError, OperationContext
from adapters.memory import MEMORY_REMEMBER, RememberArgs
from stead.contracts.activities import RecalledMemory
from stead.embeddings import MiniLmEmbedder
from stead.memory.contracts import (
    PURGE_WORKFLOW,
    REINDEX_WORKFLOW,
    MaintenanceInput,
    PurgeResult,
    RecallInput,
    ReindexResult,
    RememberResult,
    RunSummaryInput,
)
from stead.memory.routed import WorkerRoutedIndex
from stead.memory.service import MemoryService
from stead.memory.shard import GuardedEdgeIndex
from stead.settings import Settings
from stead.temporal import connect
from stead.vector import EdgeVectorIndex, VectorIndexUnavailable
from tests.scope_support import admit_run, integrity_secret, sealed
from tests.test_memory_support import EMBEDDER, new_tenant, open_service, query, remember, utcnow
from workflows.memory import (
    MemoryIndexOpWorkflow,
    MemoryPurgeWorkflow,
    MemoryReindexWorkflow,
)


@workflow.defn(name="test.memory.seams")
class SeamsWorkflow:
    """Recall before planning, summary at the end: the two calls the run makes.

    It waits for ``admitted``: the test writes the run's admitted record (as
    ``runs.open`` would) once it knows the run id, and only then may it act.
    """

    def __init__(self) -> None:
        self._admitted = False

    @workflow.signal
    def admitted(self) -> None:
        self._admitted = True

    @workflow.run
    async def run(
        self, args: tuple[RecallInput, RunSummaryInput]
    ) -> tuple[list[RecalledMemory], RememberResult]:
        recall, summary = args
        await workflow.wait_condition(lambda: self._admitted)
        recalled = await workflow.execute_activity(
            "memory.recall",
            recall,
            result_type=list[RecalledMemory],
            start_to_close_timeout=timedelta(seconds=30),
        )
        written = await workflow.execute_activity(
            "memory.remember_run_summary",
            summary,
            result_type=RememberResult,
            start_to_close_timeout=timedelta(seconds=30),
        )
        return recalled, written


@dataclass(frozen=True)
class MemoryWorker:
    client: Client
    task_queue: str
    service: MemoryService
    shard: Path


@pytest_asyncio.fixture(scope="module")
async def worker(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MemoryWorker]:
    shard = tmp_path_factory.mktemp("memory-seams") / "qdrant"
    task_queue = f"test-memory-{uuid.uuid4().hex[:8]}"
    client = await connect(stack)
    async with (
        open_service(stack, EdgeVectorIndex(shard)) as service,
        Worker(
            client,
            task_queue=task_queue,
            workflows=[
                MemoryReindexWorkflow,
                MemoryPurgeWorkflow,
                MemoryIndexOpWorkflow,
                SeamsWorkflow,
            ],
            activities=MemoryActivities(service, integrity_secret(stack)).all(),
            workflow_runner=UnsandboxedWorkflowRunner(),
        ),
    ):
        yield MemoryWorker(client, task_queue, service, shard)


async def test_a_run_recalls_before_planning_and_remembers_its_summary(
    worker: MemoryWorker,
) -> None:
    tenant = new_tenant()
    await worker.service.remember(
        remember(tenant, "brand", "tone", "Replies are short and friendly.")
    )
    workflow_id = f"run-{tenant}"
    recall = RecallInput(
        tenant=tenant,
        principal="user:alice",
        query="how should replies sound",
        workflow_id=workflow_id,
    )
    summary = RunSummaryInput(
        tenant=tenant,
        principal="user:alice",
        workflow_id=workflow_id,
        run_id="r-1",
        status="completed",
        goal="Answer the customer",
        steps=(("draft", "core.echo", "succeeded"),),
        planner_model="openai/fake-planner",
        prompt_hash="cd" * 32,
        plan_hash="ef" * 32,
    )

    handle = await worker.client.start_workflow(
        "test.memory.seams",
        (recall, summary),
        id=workflow_id,
        task_queue=worker.task_queue,
        result_type=tuple[list[RecalledMemory], RememberResult],
    )
    await admit_run(worker.service.pool, tenant, workflow_id, handle.result_run_id)
    await handle.signal("admitted")
    recalled, written = await handle.result()

    assert [(m.namespace, m.key, m.content) for m in recalled] == [
        ("brand", "tone", "Replies are short and friendly.")
    ]
    version = written.version
    assert (version.namespace, version.key, written.created) == ("runs", workflow_id, True)
    assert "Step draft (core.echo): succeeded" in (version.content or "")
    p = version.provenance
    assert (p.principal, p.agent, p.model, p.prompt_hash, p.workflow_id, p.run_id) == (
        "user:alice",
        "stead.run",
        "openai/fake-planner",
        "cd" * 32,
        workflow_id,
        "r-1",
    )
    assert p.source_refs == (f"plan:{'ef' * 32}",)
    again = await MemoryActivities(worker.service).remember_run_summary(summary)
    assert not again.created and again.version.id == version.id


async def test_the_remember_operation_takes_provenance_from_the_step_context(
    worker: MemoryWorker,
) -> None:
    tenant = new_tenant()
    ctx = OperationContext(
        tenant=tenant,
        principal="user:carol",
        workflow_id="run-7",
        step_id="note",
        idempotency_key="run-7/note",
        resources=SimpleNamespace(memory=worker.service),
    )
    args = RememberArgs(
        namespace="customers",
        key="c-42",
        content="Prefers invoices by post.",
        reason="customer said so on the phone",
        expires_in_seconds=3600,
    )

    first = await MEMORY_REMEMBER.run(ctx, args)
    retried = await MEMORY_REMEMBER.run(ctx, args)
    assert MEMORY_REMEMBER.reconcile is not None
    reconciled = await MEMORY_REMEMBER.reconcile(ctx, args)

    assert (first.version, first.created, retried.created) == (1, True, False)
    assert reconciled == retried
    [stored] = await worker.service.history(tenant, "customers", "c-42", principal="user:carol")
    p = stored.provenance
    assert (p.principal, p.workflow_id, p.step_id, p.reason) == (
        "user:carol",
        "run-7",
        "note",
        "customer said so on the phone",
    )
    assert stored.expires_at is not None
    with pytest.raises(AdapterError, match="different content") as caught:
        await MEMORY_REMEMBER.run(ctx, args.model_copy(update={"content": "Prefers email."}))
    assert not caught.value.retryable


async def test_reindex_and_purge_workflows_repair_the_index(
    worker: MemoryWorker, stack: Settings
) -> None:
    tenant = new_tenant()
    async with open_service(
        stack, GuardedEdgeIndex(worker.shard)
    ) as blocked:  # the worker holds it
        await blocked.remember(
            remember(tenant, "ops", "dns", "DNS records live in the infra repo.")
        )
    lapsed = utcnow() - timedelta(seconds=1)  # written with a TTL that has already passed
    await worker.service.remember(
        remember(tenant, "ops", "promo", "Promo WINTER.", expires_at=lapsed)
    )

    reindexed = await worker.client.execute_workflow(
        REINDEX_WORKFLOW,
        sealed(stack, REINDEX_WORKFLOW, MaintenanceInput(tenant=tenant), f"reindex-{tenant}"),
        id=f"reindex-{tenant}",
        task_queue=worker.task_queue,
        result_type=ReindexResult,
    )
    purged = await worker.client.execute_workflow(
        PURGE_WORKFLOW,
        sealed(stack, PURGE_WORKFLOW, MaintenanceInput(tenant=tenant), f"purge-{tenant}"),
        id=f"purge-{tenant}",
        task_queue=worker.task_queue,
        result_type=PurgeResult,
    )

    assert (reindexed.tenants, reindexed.indexed) == (1, 1)
    assert (purged.erased, purged.vectors_removed) == (1, True)
    assert [
        i.key for i in (await worker.service.recall(query(tenant, "where are DNS records"))).items
    ][:1] == ["dns"]


async def test_index_calls_route_to_the_worker_holding_the_shard(
    worker: MemoryWorker, stack: Settings
) -> None:
    tenant = new_tenant()
    routed = WorkerRoutedIndex(
        worker.client,
        worker.task_queue,
        embedder=EMBEDDER.name,
        dim=EMBEDDER.dim,
        integrity=integrity_secret(stack),
    )
    async with open_service(stack, routed) as remote:
        written = await remote.remember(
            remember(tenant, "kb", "vpn", "Use the VPN before opening the wiki.")
        )
        result = await remote.recall(query(tenant, "do I need the VPN for the wiki?"))

    assert written.indexed and not result.degraded
    assert [i.key for i in result.items] == ["vpn"]
    assert await worker.service.index.count(tenant) == 1


async def test_routing_without_a_worker_is_unavailable_at_once(
    worker: MemoryWorker, stack: Settings
) -> None:
    routed = WorkerRoutedIndex(
        worker.client,
        f"nobody-{uuid.uuid4().hex[:6]}",
        embedder=EMBEDDER.name,
        dim=EMBEDDER.dim,
        integrity=integrity_secret(stack),
    )

    with pytest.raises(VectorIndexUnavailable, match="no worker polls"):
        await routed.count(new_tenant())


async def test_routing_with_another_embedder_is_refused(
    worker: MemoryWorker, stack: Settings
) -> None:
    other = MiniLmEmbedder()
    routed = WorkerRoutedIndex(
        worker.client,
        worker.task_queue,
        embedder="openai/other-model",
        dim=other.dim,
        integrity=integrity_secret(stack),
    )

    with pytest.raises(Exception, match="holds local/all-MiniLM-L6-v2"):
        await routed.count(new_tenant())


def test_a_long_run_summary_fits_one_memory_version() -> None:
    from activities.memory import summary_text
    from stead.memory.contracts import MAX_CONTENT, RunSummaryInput

    steps = tuple((f"s{i:05d}", "core.echo", "succeeded") for i in range(5_000))
    text = summary_text(
        RunSummaryInput(
            tenant="acme",
            principal="user:ann",
            workflow_id="run-acme-x",
            run_id="r1",
            status="completed",
            steps=(*steps, ("last", "http.request", "failed")),
        )
    )
    assert len(text) <= MAX_CONTENT
    assert "5000 succeeded" in text and "Step last (http.request): failed" in text
