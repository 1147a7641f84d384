"""Reaching the embedded shard when another process (the worker) holds it.

The embedded Qdrant engine lets one process open a shard. The CLI therefore asks
the worker to make each index call for it: a short workflow on the worker's task
queue runs the `memory.index_op` activity against the worker's own index. Only
vectors and content-free payloads travel in the clear (the CLI reads and writes
Postgres itself), and term vectors sealed (`seal_terms`), so memory content never
enters Temporal history on this path. No worker answering
makes the index unavailable, which degrades recall and leaves writes for reindex,
exactly as an unreachable Qdrant server would.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from pydantic import JsonValue
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as TemporalTimeout
from temporalio.service import RPCError

from stead.memory.contracts import INDEX_OP_WORKFLOW, IndexOp, IndexOpResult
from stead.memory.sealing import INDEX_OP_TTL, SEAL_REFUSED, seal, seal_terms
from stead.vector import VectorHit, VectorIndexMismatch, VectorIndexUnavailable, VectorPoint
from stead.vector.index import HybridHits, TermVector

EMBEDDER_MISMATCH = "EmbedderMismatch"


class WorkerRoutedIndex:
    """`VectorIndex` whose calls run on the worker polling `task_queue`."""

    def __init__(
        self,
        client: Client,
        task_queue: str,
        *,
        embedder: str,
        dim: int,
        integrity: bytes,
        timeout: timedelta = timedelta(seconds=20),
    ) -> None:
        self._client = client
        self._integrity = integrity
        self._task_queue = task_queue
        self._embedder = embedder
        self._dim = dim
        self._timeout = timeout
        self._checked = False

    async def ensure_collection(self, dim: int) -> None:
        await self._call(IndexOp(op="ensure", embedder=self._embedder, dim=dim))

    async def upsert(self, points: Sequence[VectorPoint]) -> None:
        if points:
            dumped = tuple(p.model_dump(mode="json", exclude={"terms"}) for p in points)
            terms = {str(p.id): p.terms.model_dump(mode="json") for p in points if p.terms}
            await self._call(self._op("upsert", points=dumped), points=terms)

    async def query(
        self,
        tenant: str,
        vector: Sequence[float],
        k: int,
        namespaces: Sequence[str] | None = None,
    ) -> list[VectorHit]:
        result = await self._call(
            self._op(
                "query",
                tenant=tenant,
                vector=tuple(vector),
                k=k,
                namespaces=None if namespaces is None else tuple(namespaces),
            )
        )
        return [VectorHit.model_validate(hit) for hit in result.hits]

    async def hybrid(
        self,
        tenant: str,
        vector: Sequence[float] | None,
        terms: TermVector | None,
        k: int,
        namespaces: Sequence[str] | None = None,
    ) -> HybridHits:
        result = await self._call(
            self._op(
                "hybrid",
                tenant=tenant,
                vector=tuple(vector or ()),
                k=k,
                namespaces=None if namespaces is None else tuple(namespaces),
            ),
            query=None if terms is None else terms.model_dump(mode="json"),
        )
        return HybridHits(
            dense=tuple(VectorHit.model_validate(hit) for hit in result.hits),
            lexical=tuple(VectorHit.model_validate(hit) for hit in result.lexical),
        )

    async def set_terms(self, tenant: str, terms: Mapping[str, TermVector]) -> list[str]:
        if not terms:
            return []
        points = {i: t.model_dump(mode="json") for i, t in terms.items()}
        return list((await self._call(self._op("set_terms", tenant=tenant), points=points)).ids)

    async def delete(self, tenant: str, point_ids: Sequence[str]) -> None:
        if point_ids:
            await self._call(self._op("delete", tenant=tenant, ids=tuple(point_ids)))

    async def count(self, tenant: str) -> int:
        return (await self._call(self._op("count", tenant=tenant))).count

    async def optimize(self) -> bool:
        # The worker that owns the shard optimizes it in its own reindex.
        return False

    async def close(self) -> None:
        return None

    def _op(self, op: str, **fields: object) -> IndexOp:
        return IndexOp.model_validate(
            {"op": op, "embedder": self._embedder, "dim": self._dim, **fields}
        )

    async def _call(
        self,
        op: IndexOp,
        *,
        query: dict[str, JsonValue] | None = None,
        points: Mapping[str, dict[str, JsonValue]] | None = None,
    ) -> IndexOpResult:
        """Run ``op`` on the worker; term vectors (``query``, ``points``) go sealed."""
        where = f"the worker on task queue {self._task_queue!r}"
        try:
            if not self._checked:
                await self._require_poller(where)
                self._checked = True
            workflow_id = f"memory-index-{uuid.uuid4().hex}"
            if query is not None or points:
                terms: dict[str, JsonValue] = {"query": query, "points": dict(points or {})}
                op = op.model_copy(
                    update={"sealed_terms": seal_terms(self._integrity, workflow_id, terms)}
                )
            # Sealed for this workflow id: the worker refuses an index call nobody
            # holding the integrity secret made (stead/memory/sealing.py).
            sealed = seal(
                self._integrity,
                INDEX_OP_WORKFLOW,
                op,
                workflow_id,
                now=datetime.now(UTC),
                ttl=INDEX_OP_TTL,
            )
            result: IndexOpResult = await self._client.execute_workflow(
                INDEX_OP_WORKFLOW,
                sealed,
                id=workflow_id,
                task_queue=self._task_queue,
                result_type=IndexOpResult,
                execution_timeout=self._timeout,
            )
            return result
        except WorkflowFailureError as exc:
            raise _unavailable(exc, where, self._timeout) from None
        except RPCError as exc:
            raise VectorIndexUnavailable(
                f"Temporal did not take the call for {where}: {exc}"
            ) from None

    async def _require_poller(self, where: str) -> None:
        """Fail at once when nobody polls the queue, instead of waiting out the timeout."""
        response = await self._client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=self._client.namespace,
                task_queue=TaskQueue(name=self._task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        if not response.pollers:
            raise VectorIndexUnavailable(f"no worker polls {where}; start one with `stead worker`")


def _unavailable(
    exc: WorkflowFailureError, where: str, timeout: timedelta
) -> VectorIndexUnavailable | VectorIndexMismatch:
    """Read the failure's cause chain (workflow -> activity -> application error)."""
    cause: BaseException | None = exc.cause
    while cause is not None:
        if isinstance(cause, ApplicationError) and cause.type == EMBEDDER_MISMATCH:
            return VectorIndexMismatch(cause.message)
        if isinstance(cause, ApplicationError) and cause.type == SEAL_REFUSED:
            return VectorIndexUnavailable(f"{where} refused the index call: {cause.message}")
        if isinstance(cause, TemporalTimeout):
            return VectorIndexUnavailable(
                f"{where} did not answer in {timeout.total_seconds():g} s"
            )
        if isinstance(cause, ApplicationError) and cause.cause is None:
            return VectorIndexUnavailable(f"{where} could not use its index: {cause.message}")
        cause = cause.cause if isinstance(cause, ApplicationError | ActivityError) else None
    return VectorIndexUnavailable(f"{where} failed the index call: {exc.cause}")


class UnavailableIndex:
    """The index when nothing can serve it: every call says why, so recall degrades to
    full-text search and writes stay pending for `stead memory reindex`."""

    def __init__(self, reason: str) -> None:
        self._reason = reason

    def _fail(self) -> VectorIndexUnavailable:
        return VectorIndexUnavailable(self._reason)

    async def ensure_collection(self, dim: int) -> None:
        raise self._fail()

    async def upsert(self, points: Sequence[VectorPoint]) -> None:
        raise self._fail()

    async def query(
        self,
        tenant: str,
        vector: Sequence[float],
        k: int,
        namespaces: Sequence[str] | None = None,
    ) -> list[VectorHit]:
        raise self._fail()

    async def hybrid(
        self,
        tenant: str,
        vector: Sequence[float] | None,
        terms: TermVector | None,
        k: int,
        namespaces: Sequence[str] | None = None,
    ) -> HybridHits:
        raise self._fail()

    async def set_terms(self, tenant: str, terms: Mapping[str, TermVector]) -> list[str]:
        raise self._fail()

    async def delete(self, tenant: str, point_ids: Sequence[str]) -> None:
        raise self._fail()

    async def count(self, tenant: str) -> int:
        raise self._fail()

    async def optimize(self) -> bool:
        raise self._fail()

    async def close(self) -> None:
        return None
