"""Memory's own workflows: the scheduled repairs, and index calls routed from the CLI.

Each is a single activity call, so each is trivially deterministic; a workflow (not a
bare cron) gives them Temporal's retries, history and visibility, and lets a Temporal
Schedule that survives worker restarts run the repairs (``stead.memory.schedules``).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from stead.memory.contracts import (
        INDEX_OP_WORKFLOW,
        PURGE_WORKFLOW,
        REINDEX_WORKFLOW,
        IndexOp,
        IndexOpResult,
        MaintenanceInput,
        PurgeResult,
        ReindexResult,
    )

# A repair that cannot reach the index fails after a few tries; the next scheduled
# run tries again, so one outage never piles up retries.
MAINTENANCE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=4,
    non_retryable_error_types=["MemoryConflict", "VectorIndexMismatch", "EmbedderMismatch"],
)
# The CLI waits on an index call: fail fast, the CLI degrades instead.
INDEX_OP_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_attempts=3,
    non_retryable_error_types=["EmbedderMismatch", "VectorIndexMismatch"],
)


@workflow.defn(name=REINDEX_WORKFLOW)
class MemoryReindexWorkflow:
    """Index versions whose index write failed; drop points of superseded or erased ones."""

    @workflow.run
    async def run(self, inp: MaintenanceInput) -> ReindexResult:
        result: ReindexResult = await workflow.execute_activity(
            "memory.reindex",
            inp,
            result_type=ReindexResult,
            start_to_close_timeout=timedelta(minutes=30),
            retry_policy=MAINTENANCE_RETRY,
        )
        return result


@workflow.defn(name=PURGE_WORKFLOW)
class MemoryPurgeWorkflow:
    """Erase versions past their TTL: content and vectors go, hash and provenance stay."""

    @workflow.run
    async def run(self, inp: MaintenanceInput) -> PurgeResult:
        result: PurgeResult = await workflow.execute_activity(
            "memory.purge_expired",
            inp,
            result_type=PurgeResult,
            start_to_close_timeout=timedelta(minutes=30),
            retry_policy=MAINTENANCE_RETRY,
        )
        return result


@workflow.defn(name=INDEX_OP_WORKFLOW)
class MemoryIndexOpWorkflow:
    """One vector-index call on the worker that holds the embedded shard."""

    @workflow.run
    async def run(self, op: IndexOp) -> IndexOpResult:
        result: IndexOpResult = await workflow.execute_activity(
            "memory.index_op",
            op,
            result_type=IndexOpResult,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=INDEX_OP_RETRY,
        )
        return result
