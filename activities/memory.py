"""Memory's doors for workflows: recall before planning, the run summary at the end,
the scheduled repairs, and index calls routed here by the CLI.

Retryability is decided here, once: Postgres or the index being down is retryable
(`MemoryUnavailable`, `VectorIndexUnavailable`); a bad request or a model mismatch
is not.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from stead.contracts import activity_names as names
from stead.contracts.activities import RecalledMemory
from stead.embeddings.base import EmbeddingUnavailable
from stead.memory.contracts import (
    INDEX_OP_WORKFLOW,
    MAX_CONTENT,
    PURGE_WORKFLOW,
    REINDEX_WORKFLOW,
    IndexOp,
    IndexOpResult,
    MaintenanceInput,
    Provenance,
    PurgeResult,
    RecallInput,
    RecallQuery,
    RecallResult,
    ReindexResult,
    RememberRequest,
    RememberResult,
    RunSummaryInput,
)
from stead.memory.errors import MemoryConflict, MemoryUnavailable
from stead.memory.indexer import RUN_SUMMARIES
from stead.memory.routed import EMBEDDER_MISMATCH
from stead.memory.sealing import (
    SEAL_REFUSED,
    SealedTermsRefused,
    SealMemo,
    open_terms,
    seal_problem,
)
from stead.memory.service import MemoryService
from stead.runs.scope import ScopeClaim, tenant_scoped
from stead.vector import VectorIndexMismatch, VectorIndexUnavailable, VectorPoint
from stead.vector.index import TermVector

RUNS_NAMESPACE = RUN_SUMMARIES
# What the Schedules start (workflows/memory.py): every tenant, incremental, unsealed.
SCHEDULED_MAINTENANCE = MaintenanceInput()
log = logging.getLogger("stead.memory")


def _run_claim(req: RecallInput | RunSummaryInput) -> ScopeClaim:
    return ScopeClaim(req.tenant, (req.workflow_id,))


def _service_pool(owner: MemoryActivities) -> asyncpg.Pool:
    return owner._service.pool


class MemoryActivities:
    """Activities over one `MemoryService` (the worker's pool, index, embedder and OPA).

    ``integrity`` is the workers' integrity secret: without it the index calls and the
    tenant-scoped repairs, which must be sealed with it, are all refused.
    """

    def __init__(self, service: MemoryService, integrity: bytes | None = None) -> None:
        self._service = service
        self._integrity = integrity
        self._seals = SealMemo()

    def all(self) -> list[Any]:
        """Every memory activity, for the worker's registration list."""
        return [
            self.recall,
            self.remember_run_summary,
            self.reindex,
            self.purge_expired,
            self.index_op,
        ]

    @activity.defn(name=names.MEMORY_RECALL)
    @tenant_scoped(_run_claim, pool=_service_pool)
    async def recall(self, req: RecallInput) -> tuple[RecalledMemory, ...]:
        """Context for the planner. Secrets never leave (RecallInput cannot ask for them,
        and they are dropped again here); pii only where OPA allows this principal/agent."""
        query = RecallQuery(
            tenant=req.tenant,
            query=req.query,
            principal=req.principal,
            agent=req.agent,
            namespaces=req.namespaces,
            k=req.k,
            max_age=None if req.max_age_seconds is None else timedelta(seconds=req.max_age_seconds),
            clearance=req.clearance,
        )
        with _failures():
            result = await self._service.recall(query)
        if result.degraded:
            log.warning(
                "recall for %s answered by exact terms only (index or model unavailable)",
                req.workflow_id,
            )
        freshness = freshness_note(result)
        return tuple(
            RecalledMemory(
                namespace=item.namespace,
                key=item.key,
                content=item.content,
                sensitivity=item.sensitivity,
                version=item.version,
                valid_from=item.valid_from,
                recorded_at=item.recorded_at,
                freshness=freshness,
            )
            for item in result.items
            if item.sensitivity != "secret"
        )

    @activity.defn(name=names.MEMORY_REMEMBER_RUN_SUMMARY)
    @tenant_scoped(_run_claim, pool=_service_pool)
    async def remember_run_summary(self, req: RunSummaryInput) -> RememberResult:
        """Remember how the run ended, once per run (a retry returns the first write)."""
        request = RememberRequest(
            tenant=req.tenant,
            namespace=RUNS_NAMESPACE,
            key=req.workflow_id,
            content=summary_text(req),
            sensitivity="internal",
            provenance=Provenance(
                principal=req.principal,
                agent="stead.run",
                model=req.planner_model,
                prompt_hash=req.prompt_hash,
                workflow_id=req.workflow_id,
                run_id=req.run_id,
                reason="run summary",
                source_refs=(f"plan:{req.plan_hash}",) if req.plan_hash else (),
            ),
            request_key=f"{req.workflow_id}/{req.run_id}/summary",
        )
        with _failures():
            return await self._service.remember(request)

    @activity.defn(name="memory.reindex")
    async def reindex(self, req: MaintenanceInput) -> ReindexResult:
        self._require_seal(REINDEX_WORKFLOW, req)
        with _failures():
            return await self._service.reindex(req.tenant, full=req.full)

    @activity.defn(name="memory.purge_expired")
    async def purge_expired(self, req: MaintenanceInput) -> PurgeResult:
        self._require_seal(PURGE_WORKFLOW, req)
        with _failures():
            return await self._service.purge_expired(req.tenant)

    @activity.defn(name="memory.index_op")
    async def index_op(self, req: IndexOp) -> IndexOpResult:
        """One index call for a process that cannot open the embedded shard itself."""
        self._require_seal(INDEX_OP_WORKFLOW, req)
        query_terms, point_terms = self._open_terms(req)
        embedder = self._service.embedder
        if req.embedder != embedder.name or req.dim != embedder.dim:
            raise ApplicationError(
                f"the caller embeds with {req.embedder} ({req.dim} dims) but this worker's "
                f"index holds {embedder.name} ({embedder.dim} dims); use the worker's "
                "STEAD_EMBEDDING_* settings",
                type=EMBEDDER_MISMATCH,
                non_retryable=True,
            )
        index = self._service.index
        with _failures():
            if req.op == "ensure":
                await index.ensure_collection(req.dim)
            elif req.op == "upsert":
                await index.upsert(
                    [
                        VectorPoint.model_validate({**p, "terms": point_terms.get(str(p["id"]))})
                        for p in req.points
                    ]
                )
            elif req.op == "delete":
                await index.delete(_tenant(req), req.ids)
            elif req.op == "count":
                return IndexOpResult(count=await index.count(_tenant(req)))
            elif req.op == "hybrid":
                found = await index.hybrid(
                    _tenant(req), req.vector or None, query_terms, req.k, req.namespaces
                )
                return IndexOpResult(
                    hits=tuple(h.model_dump(mode="json") for h in found.dense),
                    lexical=tuple(h.model_dump(mode="json") for h in found.lexical),
                )
            elif req.op == "set_terms":
                return IndexOpResult(ids=tuple(await index.set_terms(_tenant(req), point_terms)))
            else:
                hits = await index.query(_tenant(req), req.vector, req.k, req.namespaces)
                return IndexOpResult(hits=tuple(h.model_dump(mode="json") for h in hits))
        return IndexOpResult()

    def _open_terms(self, req: IndexOp) -> tuple[TermVector | None, dict[str, TermVector]]:
        """The question's and the points' term vectors, which travel sealed (`seal_terms`)."""
        if req.sealed_terms is None:
            return None, {}
        workflow_id = (activity.info().workflow_id or "") if activity.in_activity() else ""
        try:
            opened = open_terms(self._integrity or b"", workflow_id, req.sealed_terms)
            query, points = opened.get("query"), opened.get("points") or {}
            if not isinstance(points, dict):
                raise ValueError("the sealed terms' points are not an object")
            return (
                None if query is None else TermVector.model_validate(query),
                {i: TermVector.model_validate(t) for i, t in points.items()},
            )
        except (SealedTermsRefused, ValueError) as exc:
            log.warning("refused %s: %s", INDEX_OP_WORKFLOW, exc)
            raise ApplicationError(str(exc), type=SEAL_REFUSED, non_retryable=True) from None

    def _require_seal(self, purpose: str, req: IndexOp | MaintenanceInput) -> None:
        """Refuse (non-retryable, nothing done) an input not sealed for this workflow.

        The Schedules' maintenance (every tenant, incremental) needs no seal. The expiry
        is compared with the server's scheduling time, so retries of an activity
        scheduled in time still run and a late replay does not.
        """
        if not activity.in_activity():
            return
        if isinstance(req, MaintenanceInput) and req == SCHEDULED_MAINTENANCE:
            return
        info = activity.info()
        workflow_id = info.workflow_id or ""
        problem = seal_problem(self._integrity, purpose, req, workflow_id, now=info.scheduled_time)
        if problem is None and req.seal is not None:
            problem = self._seals.claim(req.seal, info.workflow_run_id or "", now=datetime.now(UTC))
        if problem is not None:
            log.warning("refused %s: %s", purpose, problem)
            raise ApplicationError(problem, type=SEAL_REFUSED, non_retryable=True)


SUMMARY_STEPS = 100


def freshness_note(result: RecallResult) -> str:
    """One line for the planner on how current its recalled context is."""
    if result.degraded:
        return "degraded: meaning not ranked (index or model unavailable), exact terms only"
    if result.consistency == "fresh":
        return f"fresh: every current write ranked ({result.unindexed} not yet indexed)"
    if result.unindexed:
        return f"indexed: {result.unindexed} recent write(s) not yet indexed, found only by terms"
    return "indexed: index up to date"


def summary_text(req: RunSummaryInput) -> str:
    """A plain-text account a later planner can read: what was asked, what ran, how it
    ended. Step outputs are left out: they may hold data the summary must not copy.

    The first paragraph is the headline (goal, outcome, counts, reasons): the only part
    embedded for search (stead/memory/indexer.py); the step lines follow a blank line."""
    lines = [f"Run ended {req.status}."]
    if req.goal:
        lines.append(f"Goal: {req.goal}")
    if req.playbook:
        lines.append(f"Playbook: {req.playbook}")
    counts = Counter(status for _, _, status in req.steps)
    if counts:
        lines.append("Steps: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    for reason in req.reasons[:SUMMARY_STEPS]:
        lines.append(f"Reason: {reason}")
    # The id is the memory's key; as text it is ~20 tokens of hex that no search needs.
    lines += ["", f"Run: {req.workflow_id}"]
    # Long runs (thousands of steps) would overflow a memory version: name the first
    # steps and the ones that did not succeed, and count the rest.
    shown = [s for s in req.steps if s[2] != "succeeded"][:SUMMARY_STEPS] or req.steps[
        :SUMMARY_STEPS
    ]
    for step_id, operation, status in shown:
        lines.append(f"Step {step_id} ({operation}): {status}")
    if len(req.steps) > len(shown):
        lines.append(f"... and {len(req.steps) - len(shown)} more steps")
    return "\n".join(lines).rstrip()[:MAX_CONTENT]


def _tenant(req: IndexOp) -> str:
    if req.tenant is None:
        raise ApplicationError(f"index op {req.op} needs a tenant", non_retryable=True)
    return req.tenant


@contextmanager
def _failures() -> Iterator[None]:
    """Map memory errors to ApplicationErrors whose retryability is decided here."""
    try:
        yield
    except (MemoryUnavailable, VectorIndexUnavailable, EmbeddingUnavailable) as exc:
        raise ApplicationError(exc.message, type=type(exc).__name__) from None
    except (MemoryConflict, VectorIndexMismatch) as exc:
        raise ApplicationError(exc.message, type=type(exc).__name__, non_retryable=True) from None
