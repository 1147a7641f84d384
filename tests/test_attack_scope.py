"""Tenant scope, from the attacker's side.

The attacker here can start any workflow on Stead's task queue, with any input, and
read workflow histories (invariant 9). They try to make the worker act for a victim
tenant: memory's index and repair workflows started directly (unsealed, sealed for
another workflow, a lifted seal with its tenant changed), and workflow code of their
own scheduling the run's activities with the victim's tenant. Each attempt must be
refused with a clear reason, execute nothing, and leave the victim's data intact.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.memory import MemoryActivities
from stead.contracts.activities import (
    DecideStepInput,
    ExpressStepInput,
    ExpressStepOutput,
    RecalledMemory,
    RunRef,
)
from stead.contracts.run import Budget, Spent, Step, StepExecution
from stead.db.pool import create_pool, tenant_transaction
from stead.memory.contracts import (
    INDEX_OP_WORKFLOW,
    PURGE_WORKFLOW,
    REINDEX_WORKFLOW,
    IndexOp,
    IndexOpResult,
    MaintenanceInput,
    PurgeResult,
    RecallInput,
    ReindexResult,
)
from stead.memory.routed import WorkerRoutedIndex
from stead.memory.sealing import (
    INDEX_OP_TTL,
    SEAL_REFUSED,
    SealedTermsRefused,
    SealMemo,
    open_terms,
    seal,
    seal_problem,
    seal_terms,
)
from stead.memory.service import MemoryService
from stead.runs.scope import SCOPE_REFUSED, RunScope, ScopeClaim
from stead.settings import Settings
from stead.temporal import connect
from stead.vector import EdgeVectorIndex, VectorIndexUnavailable
from stead.vector.terms import document_terms, query_terms
from tests.conftest import WorkerHandle
from tests.runs import POLL_INTERVAL, POLL_SECONDS, configure_tenant, playbook, start_run
from tests.scope_support import admit_run, integrity_secret
from tests.test_memory_support import EMBEDDER, new_tenant, open_service, query, remember, utcnow
from workflows.memory import MemoryIndexOpWorkflow, MemoryPurgeWorkflow, MemoryReindexWorkflow

VICTIM_FACTS = (
    ("payroll", "iban", "Salaries leave from account DE89 3704 0044 0532 0130 00."),
    ("payroll", "day", "Salaries are paid on the 25th of each month."),
)


@dataclass(frozen=True)
class MemoryWorker:
    client: Client
    task_queue: str
    service: MemoryService
    shard: Path


@pytest_asyncio.fixture(scope="module")
async def memory_worker(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MemoryWorker]:
    """A worker holding its embedded shard, as `stead worker` does (memory parts only)."""
    shard = tmp_path_factory.mktemp("attack-scope") / "qdrant"
    task_queue = f"test-attack-{uuid.uuid4().hex[:8]}"
    client = await connect(stack)
    async with (
        open_service(stack, EdgeVectorIndex(shard)) as service,
        Worker(
            client,
            task_queue=task_queue,
            workflows=[MemoryReindexWorkflow, MemoryPurgeWorkflow, MemoryIndexOpWorkflow],
            activities=MemoryActivities(service, integrity_secret(stack)).all(),
        ),
    ):
        yield MemoryWorker(client, task_queue, service, shard)


async def victim_with_memories(memory_worker: MemoryWorker) -> str:
    tenant = new_tenant()
    for namespace, key, content in VICTIM_FACTS:
        written = await memory_worker.service.remember(remember(tenant, namespace, key, content))
        assert written.indexed
    return tenant


async def assert_intact(memory_worker: MemoryWorker, tenant: str, *, others: int = 0) -> None:
    """The victim's points are all there (``others``: besides the payroll facts) and recall
    still finds them."""
    assert await memory_worker.service.index.count(tenant) == len(VICTIM_FACTS) + others
    found = await memory_worker.service.recall(query(tenant, "when are salaries paid"))
    assert not found.degraded
    assert {i.key for i in found.items} == {"iban", "day"}


def index_op(op: str, tenant: str, **fields: Any) -> IndexOp:
    return IndexOp.model_validate(
        {"op": op, "embedder": EMBEDDER.name, "dim": EMBEDDER.dim, "tenant": tenant, **fields}
    )


def routed_index(memory_worker: MemoryWorker, integrity: bytes) -> WorkerRoutedIndex:
    """The CLI's way to the worker's shard, sealing with ``integrity``."""
    return WorkerRoutedIndex(
        memory_worker.client,
        memory_worker.task_queue,
        embedder=EMBEDDER.name,
        dim=EMBEDDER.dim,
        integrity=integrity,
    )


async def refusal(client: Client, task_queue: str, name: str, arg: Any, wid: str) -> str:
    """Start ``name`` directly on Temporal; the ApplicationError that failed it."""
    with pytest.raises(WorkflowFailureError) as failed:
        await client.execute_workflow(
            name,
            arg,
            id=wid,
            task_queue=task_queue,
            execution_timeout=timedelta(seconds=30),
        )
    cause = application_error(failed.value)
    return f"{cause.type}: {cause.message}"


def application_error(failure: BaseException) -> ApplicationError:
    """The ApplicationError at the end of a workflow failure's cause chain."""
    cause: BaseException | None = failure
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.__cause__
    assert isinstance(cause, ApplicationError), failure
    return cause


def victim_ops(victim: str) -> list[IndexOp]:
    vector = tuple(EMBEDDER.embed_sync(["when are salaries paid"])[0])
    point = {
        "id": str(uuid.uuid4()),
        "vector": list(vector),
        "payload": {
            "tenant": victim,
            "namespace": "payroll",
            "memory_id": "forged",
            "version": 1,
            "sensitivity": "internal",
        },
    }
    return [
        index_op("query", victim, vector=vector, k=10),
        index_op("count", victim),
        index_op("delete", victim, ids=(str(uuid.uuid4()),)),
        index_op("upsert", victim, points=(point,)),
        index_op("ensure", victim),
    ]


# ---------------------------------------------------------------- memory.index_op


async def test_an_unsealed_index_op_for_another_tenant_is_refused(
    memory_worker: MemoryWorker,
) -> None:
    victim = await victim_with_memories(memory_worker)
    for op in victim_ops(victim):
        reason = await refusal(
            memory_worker.client,
            memory_worker.task_queue,
            INDEX_OP_WORKFLOW,
            op,
            f"memory-index-{uuid.uuid4().hex}",
        )
        assert reason.startswith(f"{SEAL_REFUSED}: ") and "is not sealed" in reason, op.op
    await assert_intact(memory_worker, victim)


async def test_an_index_op_sealed_for_another_workflow_is_refused(
    memory_worker: MemoryWorker, stack: Settings
) -> None:
    victim = await victim_with_memories(memory_worker)
    secret = integrity_secret(stack)
    for op in victim_ops(victim):
        meant_for = f"memory-index-{uuid.uuid4().hex}"
        sealed = seal(
            secret, INDEX_OP_WORKFLOW, op, meant_for, now=datetime.now(UTC), ttl=INDEX_OP_TTL
        )
        reason = await refusal(
            memory_worker.client,
            memory_worker.task_queue,
            INDEX_OP_WORKFLOW,
            sealed,
            f"memory-index-{uuid.uuid4().hex}",
        )
        assert f"was sealed for workflow {meant_for!r}" in reason, op.op
    await assert_intact(memory_worker, victim)


async def test_an_index_op_sealed_with_another_key_is_refused(
    memory_worker: MemoryWorker,
) -> None:
    victim = await victim_with_memories(memory_worker)
    forged_secret = b"\x07" * 32
    for op in victim_ops(victim):
        wid = f"memory-index-{uuid.uuid4().hex}"
        sealed = seal(
            forged_secret, INDEX_OP_WORKFLOW, op, wid, now=datetime.now(UTC), ttl=INDEX_OP_TTL
        )
        reason = await refusal(
            memory_worker.client, memory_worker.task_queue, INDEX_OP_WORKFLOW, sealed, wid
        )
        assert "does not match its seal" in reason, op.op
    await assert_intact(memory_worker, victim)


async def lifted_index_input(memory_worker: MemoryWorker, workflow_id: str) -> IndexOp:
    """The sealed input of a finished routed call, read back from its history."""
    handle = memory_worker.client.get_workflow_handle(workflow_id)
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            [lifted] = await memory_worker.client.data_converter.decode(payloads, [IndexOp])
            assert isinstance(lifted, IndexOp)
            return lifted
    raise AssertionError(f"no start event in {workflow_id}")


async def test_a_lifted_sealed_input_cannot_be_retargeted_or_replayed(
    memory_worker: MemoryWorker, stack: Settings
) -> None:
    victim = await victim_with_memories(memory_worker)
    attacker = new_tenant()
    # The attacker's own, legitimate call, sealed as the CLI seals it, lands in history.
    original = f"memory-index-{uuid.uuid4().hex}"
    own = seal(
        integrity_secret(stack),
        INDEX_OP_WORKFLOW,
        index_op("count", attacker),
        original,
        now=datetime.now(UTC),
        ttl=INDEX_OP_TTL,
    )
    counted = await memory_worker.client.execute_workflow(
        INDEX_OP_WORKFLOW,
        own,
        id=original,
        task_queue=memory_worker.task_queue,
        result_type=IndexOpResult,
    )
    assert counted.count == 0
    lifted = await lifted_index_input(memory_worker, original)
    assert lifted.seal is not None and lifted.tenant == attacker

    retargeted = lifted.model_copy(update={"tenant": victim})
    as_query = lifted.model_copy(
        update={
            "op": "query",
            "vector": tuple(EMBEDDER.embed_sync(["salaries"])[0]),
            "tenant": victim,
        }
    )
    for forged in (retargeted, as_query):
        # Same workflow id (reused after the original closed), so only the seal's MAC stops it.
        reason = await refusal(
            memory_worker.client, memory_worker.task_queue, INDEX_OP_WORKFLOW, forged, original
        )
        assert "does not match its seal" in reason
    # Unchanged but under a new workflow id: bound to the old one.
    reason = await refusal(
        memory_worker.client,
        memory_worker.task_queue,
        INDEX_OP_WORKFLOW,
        lifted,
        f"memory-index-{uuid.uuid4().hex}",
    )
    assert f"was sealed for workflow {original!r}" in reason
    # Unchanged, same id, within expiry: the worker that holds the shard saw it used.
    reason = await refusal(
        memory_worker.client, memory_worker.task_queue, INDEX_OP_WORKFLOW, lifted, original
    )
    assert "already used by run" in reason
    await assert_intact(memory_worker, victim)


async def test_routing_with_the_wrong_integrity_secret_degrades_instead_of_answering(
    memory_worker: MemoryWorker,
) -> None:
    victim = await victim_with_memories(memory_worker)
    routed = routed_index(memory_worker, b"\x01" * 32)

    with pytest.raises(VectorIndexUnavailable, match=r"refused the index call.*does not match"):
        await routed.query(victim, EMBEDDER.embed_sync(["salaries"])[0], 10)
    await assert_intact(memory_worker, victim)


async def test_routed_calls_with_the_workers_secret_still_work(
    memory_worker: MemoryWorker, stack: Settings
) -> None:
    victim = await victim_with_memories(memory_worker)
    routed = routed_index(memory_worker, integrity_secret(stack))
    async with open_service(stack, routed) as cli_side:
        found = await cli_side.recall(query(victim, "when are salaries paid"))

    assert not found.degraded
    assert {i.key for i in found.items} == {"iban", "day"}


# ------------------------------------------------------------ reindex and purge


async def test_unsealed_tenant_repairs_are_refused_and_purge_nothing(
    memory_worker: MemoryWorker, stack: Settings
) -> None:
    victim = await victim_with_memories(memory_worker)
    lapsed = utcnow() - timedelta(seconds=1)
    await memory_worker.service.remember(
        remember(victim, "ops", "promo", "Promo WINTER.", expires_at=lapsed)
    )
    attempts: list[tuple[str, MaintenanceInput]] = [
        (REINDEX_WORKFLOW, MaintenanceInput(tenant=victim)),
        (REINDEX_WORKFLOW, MaintenanceInput(tenant=victim, full=True)),
        (REINDEX_WORKFLOW, MaintenanceInput(full=True)),
        (PURGE_WORKFLOW, MaintenanceInput(tenant=victim)),
    ]
    secret = integrity_secret(stack)
    for name, inp in attempts:
        reason = await refusal(
            memory_worker.client,
            memory_worker.task_queue,
            name,
            inp,
            f"attack-{uuid.uuid4().hex}",
        )
        assert reason.startswith(f"{SEAL_REFUSED}: ") and "is not sealed" in reason, inp
        # A reindex seal does not open a purge, nor one for another workflow id.
        other = "reindex" if name == PURGE_WORKFLOW else "purge"
        wid = f"attack-{uuid.uuid4().hex}"
        wrong = seal(
            secret,
            REINDEX_WORKFLOW if other == "reindex" else PURGE_WORKFLOW,
            inp,
            wid,
            now=datetime.now(UTC),
            ttl=INDEX_OP_TTL,
        )
        reason = await refusal(memory_worker.client, memory_worker.task_queue, name, wrong, wid)
        assert "does not match its seal" in reason, inp

    # Nothing was purged: the lapsed version still has its content.
    history = await memory_worker.service.history(victim, "ops", "promo", principal="user:alice")
    assert [v.erased_at for v in history] == [None]
    await assert_intact(memory_worker, victim, others=1)


async def test_the_schedules_unsealed_maintenance_still_runs(
    memory_worker: MemoryWorker,
) -> None:
    """What the Schedules start (every tenant, incremental) acts for nobody in particular."""
    reindexed = await memory_worker.client.execute_workflow(
        REINDEX_WORKFLOW,
        MaintenanceInput(),
        id=f"stead-memory-reindex/{memory_worker.task_queue}-{uuid.uuid4().hex[:6]}",
        task_queue=memory_worker.task_queue,
        result_type=ReindexResult,
    )
    purged = await memory_worker.client.execute_workflow(
        PURGE_WORKFLOW,
        MaintenanceInput(),
        id=f"stead-memory-purge/{memory_worker.task_queue}-{uuid.uuid4().hex[:6]}",
        task_queue=memory_worker.task_queue,
        result_type=PurgeResult,
    )
    assert reindexed.failed == 0 and purged.tenants >= 0


def test_a_seal_is_checked_against_everything_it_covers() -> None:
    """The pure check: purpose, workflow id, body, key and expiry all count."""
    secret = b"\x05" * 32
    now = datetime.now(UTC)
    body = MaintenanceInput(tenant="acme")
    sealed = seal(secret, REINDEX_WORKFLOW, body, "wf-1", now=now, ttl=timedelta(minutes=1))

    assert seal_problem(secret, REINDEX_WORKFLOW, sealed, "wf-1", now=now) is None
    assert "no integrity secret" in str(
        seal_problem(None, REINDEX_WORKFLOW, sealed, "wf-1", now=now)
    )
    assert "sealed for workflow 'wf-1'" in str(
        seal_problem(secret, REINDEX_WORKFLOW, sealed, "wf-2", now=now)
    )
    assert "does not match" in str(seal_problem(secret, PURGE_WORKFLOW, sealed, "wf-1", now=now))
    assert "does not match" in str(
        seal_problem(b"\x06" * 32, REINDEX_WORKFLOW, sealed, "wf-1", now=now)
    )
    full = sealed.model_copy(update={"full": True})
    assert "does not match" in str(seal_problem(secret, REINDEX_WORKFLOW, full, "wf-1", now=now))
    later = now + timedelta(minutes=2)
    assert "expired" in str(seal_problem(secret, REINDEX_WORKFLOW, sealed, "wf-1", now=later))

    memo = SealMemo()
    assert sealed.seal is not None
    assert memo.claim(sealed.seal, "run-a", now=now) is None
    assert memo.claim(sealed.seal, "run-a", now=now) is None  # a retry of the same run
    assert "already used by run 'run-a'" in str(memo.claim(sealed.seal, "run-b", now=now))


# ------------------------------------------------------- the run's activities


async def test_the_scope_check_against_run_records(stack: Settings) -> None:
    """RunScope against real rows: admitted for A, claims for B, none, refused, cached."""
    pool = await create_pool(stack.postgres_dsn, min_size=1, max_size=2)
    try:
        scope = RunScope(pool)
        tenant_a, tenant_b = new_tenant(), new_tenant()
        wid, run_id = f"run-{tenant_a}-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
        await admit_run(pool, tenant_a, wid, run_id)

        async def refused(claim: ScopeClaim, run: str = run_id, first: str | None = None) -> str:
            async def first_run() -> str | None:
                return first

            with pytest.raises(ApplicationError) as caught:
                await scope.check(wid, run, claim, first_run)
            assert caught.value.type == SCOPE_REFUSED and caught.value.non_retryable
            return caught.value.message

        # Another tenant's input under A's admitted run: RLS hides A's record from B.
        assert "has no run recorded for tenant" in await refused(ScopeClaim(tenant_b, (wid,)))
        assert "has no run recorded" in await refused(ScopeClaim(tenant_b, (wid,), "recorded"))
        # An input naming another run than the one the server says is running.
        assert "names workflow 'run-other'" in await refused(ScopeClaim(tenant_a, ("run-other",)))
        # No record at all for this workflow id.
        with pytest.raises(ApplicationError, match="has no run recorded"):
            await scope.check(f"run-{uuid.uuid4().hex}", run_id, ScopeClaim(tenant_a))

        # The match is allowed, and cached: the second check costs no lookup.
        await scope.check(wid, run_id, ScopeClaim(tenant_a, (wid,)))
        lookups = scope.lookups
        for _ in range(5):
            await scope.check(wid, run_id, ScopeClaim(tenant_a, (wid,)))
            await scope.check(wid, run_id, ScopeClaim(tenant_a, (wid,), "recorded"))
        assert scope.lookups == lookups

        # A continued run: its run id is new, the chain's first run is the admitted one.
        await scope.check(wid, "continued-run", ScopeClaim(tenant_a, (wid,)), _first(run_id))
        # A new execution reusing the id: its chain starts elsewhere, so it is not admitted.
        assert "was not admitted" in await refused(
            ScopeClaim(tenant_a, (wid,)), run="reused-run", first="reused-run"
        )
        # ... but it may still record and audit (its record exists).
        await scope.check(wid, "reused-run", ScopeClaim(tenant_a, (wid,), "recorded"))

        # A refused run: recorded, not admitted.
        refused_wid, refused_run = f"run-{tenant_a}-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
        await admit_run(pool, tenant_a, refused_wid, None)
        with pytest.raises(ApplicationError, match="was not admitted for tenant"):
            await scope.check(refused_wid, refused_run, ScopeClaim(tenant_a, (refused_wid,)))
        await scope.check(refused_wid, refused_run, ScopeClaim(tenant_a, (), "recorded"))
        # A reused id refused at admission clears the earlier run's stamp.
        await admit_run(pool, tenant_a, wid, None)
        with pytest.raises(ApplicationError, match="was not admitted"):
            await RunScope(pool).check(wid, run_id, ScopeClaim(tenant_a, (wid,)))
    finally:
        await pool.close()


async def test_an_admission_stamp_forged_as_the_app_role_admits_nothing(stack: Settings) -> None:
    """The app role can write `runs`; without the integrity secret its stamp has no MAC."""
    secret = integrity_secret(stack)
    pool = await create_pool(stack.postgres_dsn, min_size=1, max_size=2)
    try:
        scope = RunScope(pool, integrity=secret)
        tenant = new_tenant()
        forged_wid, forged_run = f"mallory-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
        # SQL as stead_app: a record for the victim, stamped admitted for the attacker's run.
        async with tenant_transaction(pool, tenant) as conn:
            await conn.execute(
                "INSERT INTO runs (workflow_id, tenant, principal, status, admitted_run_id,"
                " admission_mac) VALUES ($1, $2, 'user:mallory', 'running', $3, $4)",
                forged_wid,
                tenant,
                forged_run,
                "ab" * 32,
            )
        with pytest.raises(ApplicationError, match="not sealed with the workers' integrity"):
            await scope.check(forged_wid, forged_run, ScopeClaim(tenant, (forged_wid,)))
        # It is still a record: its own refusal could be recorded and audited.
        await scope.check(forged_wid, forged_run, ScopeClaim(tenant, (), "recorded"))

        # A stamp written with the secret (as runs.open writes it) admits.
        wid, run_id = f"run-{tenant}-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
        await admit_run(pool, tenant, wid, run_id, integrity=secret)
        await scope.check(wid, run_id, ScopeClaim(tenant, (wid,)))
        # ... and moved to another tenant's claim or run id, it does not.
        async with tenant_transaction(pool, tenant) as conn:
            await conn.execute(
                "UPDATE runs SET admitted_run_id = $2 WHERE workflow_id = $1", forged_wid, run_id
            )
            await conn.execute(
                "UPDATE runs SET admission_mac = (SELECT admission_mac FROM runs"
                " WHERE workflow_id = $2) WHERE workflow_id = $1",
                forged_wid,
                wid,
            )
        with pytest.raises(ApplicationError, match="not sealed"):
            await scope.check(forged_wid, run_id, ScopeClaim(tenant, (forged_wid,)))
    finally:
        await pool.close()


def _first(run_id: str) -> Any:
    async def first_run() -> str | None:
        return run_id

    return first_run


@workflow.defn(name="attacker.recall")
class AttackerRecall:
    """Attacker-written workflow code, run on the attacker's own worker, scheduling
    Stead's ``memory.recall`` on Stead's task queue with the victim's tenant."""

    @workflow.run
    async def run(self, args: tuple[str, str, str]) -> list[RecalledMemory]:
        tenant, queue, claimed_workflow = args
        recalled: list[RecalledMemory] = await workflow.execute_activity(
            "memory.recall",
            RecallInput(
                tenant=tenant,
                principal="user:mallory",
                query="salaries",
                workflow_id=claimed_workflow or workflow.info().workflow_id,
            ),
            result_type=list[RecalledMemory],
            task_queue=queue,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=2),
        )
        return recalled


async def test_attacker_workflow_code_cannot_use_the_run_activities_for_a_victim(
    stack: Settings, worker: WorkerHandle
) -> None:
    victim = new_tenant()
    await configure_tenant(stack.opa_url, victim, approval_risk="high")
    # The victim's own run completes (its record is admitted for its run id).
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=victim,
        principal="user:victim",
        playbook_source=playbook({"id": "hi", "operation": "core.echo", "args": {"value": 1}}),
    )
    status = await handle.result()
    assert status.status == "completed"

    attacker_queue = f"attacker-{uuid.uuid4().hex[:8]}"
    async with Worker(
        worker.client,
        task_queue=attacker_queue,
        workflows=[AttackerRecall],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        cases = [
            # Own workflow id, victim tenant: no run of the victim has this id.
            (f"mallory-{uuid.uuid4().hex[:8]}", "", "has no run recorded for tenant"),
            # Own workflow id, but the input claims the victim's run.
            (f"mallory-{uuid.uuid4().hex[:8]}", handle.id, "names workflow"),
            # Reusing the victim's finished run's workflow id: a new chain, not admitted.
            (handle.id, "", "was not admitted for tenant"),
        ]
        for wid, claimed, expected in cases:
            with pytest.raises(WorkflowFailureError) as failed:
                await worker.client.execute_workflow(
                    "attacker.recall",
                    (victim, worker.task_queue, claimed),
                    id=wid,
                    task_queue=attacker_queue,
                    execution_timeout=timedelta(seconds=60),
                )
            cause = application_error(failed.value)
            assert cause.type == SCOPE_REFUSED and expected in cause.message, cause.message


@workflow.defn(name="attacker.step")
class AttackerStep:
    """Attacker-written workflow code scheduling Stead's ``step.run`` (decide, then execute
    on an immediate allow) for the victim's tenant on Stead's task queue."""

    @workflow.run
    async def run(self, args: tuple[ExpressStepInput, str]) -> ExpressStepOutput:
        step, queue = args
        out: ExpressStepOutput = await workflow.execute_activity(
            "step.run",
            step,
            result_type=ExpressStepOutput,
            task_queue=queue,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=2),
        )
        return out


def forged_step(tenant: str, workflow_id: str, key: str) -> ExpressStepInput:
    run = RunRef(workflow_id=workflow_id, run_id="forged", started_by="user:victim")
    step = Step(id="put", operation="records.put", args={"key": key, "value": {"x": "pwned"}})
    return ExpressStepInput(
        decide=DecideStepInput(
            tenant=tenant,
            principal="user:victim",
            run=run,
            plan_hash="0" * 64,
            step=step,
            execution=StepExecution(side_effect="write"),
            budget=Budget(),
            spent=Spent(),
        ),
        idempotency_key=f"{workflow_id}/put",
    )


async def test_attacker_workflow_code_cannot_run_a_step_for_a_victim(
    stack: Settings, worker: WorkerHandle
) -> None:
    victim = new_tenant()
    # Policy would allow the write at once: only the scope check stands in the way.
    await configure_tenant(stack.opa_url, victim, approval_risk="high")
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=victim,
        principal="user:victim",
        playbook_source=playbook({"id": "hi", "operation": "core.echo", "args": {"value": 1}}),
    )
    assert (await handle.result()).status == "completed"

    attacker_queue = f"attacker-{uuid.uuid4().hex[:8]}"
    key = f"k-{uuid.uuid4().hex[:8]}"
    async with Worker(
        worker.client,
        task_queue=attacker_queue,
        workflows=[AttackerStep],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        for wid, expected in (
            (f"mallory-{uuid.uuid4().hex[:8]}", "has no run recorded for tenant"),
            (handle.id, "was not admitted for tenant"),
        ):
            with pytest.raises(WorkflowFailureError) as failed:
                await worker.client.execute_workflow(
                    "attacker.step",
                    (forged_step(victim, wid, key), worker.task_queue),
                    id=wid,
                    task_queue=attacker_queue,
                    execution_timeout=timedelta(seconds=60),
                )
            cause = application_error(failed.value)
            assert cause.type == SCOPE_REFUSED and expected in cause.message, cause.message

    # Nothing ran: no record, no ledger entry, no decision for the forged step.
    pool = await create_pool(stack.postgres_dsn, min_size=1, max_size=2)
    try:
        async with tenant_transaction(pool, victim) as conn:
            records = await conn.fetchval("SELECT count(*) FROM records WHERE key = $1", key)
            effects = await conn.fetchval(
                "SELECT count(*) FROM effects WHERE step_id = 'put' AND operation = 'records.put'"
            )
            decisions = await conn.fetchval("SELECT count(*) FROM decisions WHERE step_id = 'put'")
    finally:
        await pool.close()
    assert (records, effects, decisions) == (0, 0, 0)


@workflow.defn(name="attacker.calls")
class AttackerCalls:
    """Attacker-written workflow code making a series of Stead activity calls on Stead's
    task queue; answers each with "ok" or the refusal's type and message."""

    @workflow.run
    async def run(self, args: tuple[str, list[tuple[str, dict[str, Any]]]]) -> list[str]:
        queue, calls = args
        outcomes = []
        for name, payload in calls:
            try:
                await workflow.execute_activity(
                    name,
                    payload,
                    task_queue=queue,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=RetryPolicy(maximum_attempts=1),
                )
                outcomes.append("ok")
            except ActivityError as err:
                cause = err.cause
                assert isinstance(cause, ApplicationError)
                outcomes.append(f"{cause.type}: {cause.message}")
        return outcomes


async def test_a_record_opened_by_attacker_code_cannot_carry_spend_into_the_victims_totals(
    stack: Settings, worker: WorkerHandle
) -> None:
    """An attacker's workflow may open a (never admitted) record in the victim's tenant,
    as starting a refused run would, but not book tokens, dollars or minutes on it, nor
    act for the tenant through it."""
    victim = new_tenant()
    wid = f"mallory-{uuid.uuid4().hex[:8]}"
    base = {"tenant": victim, "workflow_id": wid, "principal": "user:mallory"}
    calls: list[tuple[str, dict[str, Any]]] = [
        ("runs.record", {**base, "status": "planning", "playbook": "x"}),
        ("runs.record", {**base, "status": "completed", "cost_usd": 10_000.0, "finished": True}),
        ("runs.record", {**base, "status": "denied", "finished": True}),
        (
            "memory.recall",
            {"tenant": victim, "principal": "user:mallory", "query": "q", "workflow_id": wid},
        ),
    ]
    async with Worker(
        worker.client,
        task_queue=f"attacker-{uuid.uuid4().hex[:8]}",
        workflows=[AttackerCalls],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ) as attacker:
        outcomes = await worker.client.execute_workflow(
            "attacker.calls",
            (worker.task_queue, calls),
            id=wid,
            task_queue=attacker.task_queue,
            result_type=list[str],
            execution_timeout=timedelta(seconds=60),
        )

    assert outcomes[0] == "ok" and outcomes[2] == "ok"
    assert outcomes[1].startswith(f"{SCOPE_REFUSED}: ") and "was not admitted" in outcomes[1]
    assert outcomes[3].startswith(f"{SCOPE_REFUSED}: ") and "was not admitted" in outcomes[3]
    pool = await create_pool(stack.postgres_dsn, min_size=1, max_size=2)
    try:
        async with tenant_transaction(pool, victim) as conn:
            row = await conn.fetchrow(
                "SELECT status, cost_usd::float8 AS cost, admitted_run_id FROM runs"
                " WHERE workflow_id = $1",
                wid,
            )
    finally:
        await pool.close()
    assert dict(row) == {"status": "denied", "cost": 0.0, "admitted_run_id": None}


@workflow.defn(name="attacker.seal")
class AttackerSeal:
    """Attacker-written workflow code asking Stead's worker to seal a continuation state
    for the victim's tenant: with a valid seal, a forged carry would start a run that
    skips admission."""

    @workflow.run
    async def run(self, args: tuple[str, str, bool]) -> list[str]:
        tenant, queue, own_run_id = args
        run_id = workflow.info().run_id if own_run_id else "forged-run"
        payload = {
            "workflow_id": workflow.info().workflow_id,
            "run_id": run_id,
            "request": {"tenant": tenant, "principal": "user:victim", "playbook": "records-demo"},
            "carry": {"status": "running"},
        }
        try:
            await workflow.execute_activity(
                "runs.seal",
                payload,
                task_queue=queue,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except ActivityError as err:
            cause = err.cause
            assert isinstance(cause, ApplicationError)
            return [f"{cause.type}: {cause.message}"]
        return ["sealed"]


async def test_attacker_workflow_code_cannot_have_a_victims_continuation_sealed(
    worker: WorkerHandle,
) -> None:
    victim = new_tenant()
    async with Worker(
        worker.client,
        task_queue=f"attacker-{uuid.uuid4().hex[:8]}",
        workflows=[AttackerSeal],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ) as attacker:
        for own_run_id, expected in (
            (True, "has no run recorded for tenant"),
            (False, "a run seals only its own continuation"),
        ):
            [outcome] = await worker.client.execute_workflow(
                "attacker.seal",
                (victim, worker.task_queue, own_run_id),
                id=f"mallory-{uuid.uuid4().hex[:8]}",
                task_queue=attacker.task_queue,
                result_type=list[str],
                execution_timeout=timedelta(seconds=60),
            )
            assert outcome.startswith(f"{SCOPE_REFUSED}: ") and expected in outcome, outcome


async def test_routed_term_vectors_reach_history_sealed_never_in_the_clear(
    memory_worker: MemoryWorker, stack: Settings
) -> None:
    """Hashed token ids are words to anyone with a dictionary: the question's and the
    points' term vectors cross Temporal history only encrypted, and the worker opens them."""
    victim = await victim_with_memories(memory_worker)
    routed = routed_index(memory_worker, integrity_secret(stack))
    terms = query_terms("when are salaries paid")
    assert terms is not None
    found = await routed.hybrid(victim, None, terms, 10)
    assert found.lexical, "the worker ranked the exact terms it opened"
    fact = document_terms("salaries are paid on the 25th")
    assert await routed.set_terms(victim, {str(uuid.uuid4()): fact}) == []

    inputs = await index_op_inputs(memory_worker, want=2)
    sealed = [op for op in inputs if op.sealed_terms]
    assert len(sealed) >= 2
    hashed = {*terms.indices, *fact.indices}
    for op in inputs:
        assert not hashed & integers_in(op.model_dump(mode="json")), op


def integers_in(value: object) -> set[int]:
    """Every integer in a JSON value (a term id in the clear would be one)."""
    if isinstance(value, bool):
        return set()
    if isinstance(value, int):
        return {value}
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return set().union(*(integers_in(v) for v in value))
    return set()


async def index_op_inputs(memory_worker: MemoryWorker, *, want: int) -> list[IndexOp]:
    """Every ``memory.index_op`` input on the worker's queue, as Temporal recorded it."""
    query_text = (
        f"WorkflowType = '{INDEX_OP_WORKFLOW}' AND TaskQueue = '{memory_worker.task_queue}'"
    )
    for _ in range(int(POLL_SECONDS / POLL_INTERVAL)):
        ids = [w.id async for w in memory_worker.client.list_workflows(query_text)]
        if len(ids) >= want:
            break
        await asyncio.sleep(POLL_INTERVAL)
    inputs: list[IndexOp] = []
    for wid in ids:
        history = await memory_worker.client.get_workflow_handle(wid).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        inputs.append(IndexOp.model_validate_json(started.input.payloads[0].data))
    return inputs


def test_sealed_terms_open_only_for_their_workflow_and_key() -> None:
    secret, other = b"\x02" * 32, b"\x03" * 32
    sealed = seal_terms(secret, "memory-index-a", {"query": None, "points": {}})
    assert open_terms(secret, "memory-index-a", sealed) == {"query": None, "points": {}}
    for key, wid in ((secret, "memory-index-b"), (other, "memory-index-a")):
        with pytest.raises(SealedTermsRefused):
            open_terms(key, wid, sealed)
