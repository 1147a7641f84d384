"""The worker-side drain that audits approvals the update validator refused.

``stead.approval_refusals`` explains why the validator cannot audit them itself.
Each refusal becomes an ``approval_refused`` row in its tenant's audit log, like
the ones the workflow writes through ``audit.append``. The queue is bounded: a
flood of refused updates costs this worker memory only up to ``MAX_QUEUED``, past
which refusals are counted and logged as unaudited rather than buffered forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import timedelta

import asyncpg

from stead.approval_refusals import ValidatorRefusal, subscribe
from stead.audit.log import AuditEvent, append_event
from stead.db.pool import tenant_transaction

log = logging.getLogger("stead.approvals")

MAX_QUEUED = 10_000
# Postgres blips are retried briefly; a longer outage loses the row (and logs it).
APPEND_ATTEMPTS = 4
FLUSH_ON_EXIT = timedelta(seconds=5)


@asynccontextmanager
async def auditing_validator_refusals(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """While open, refusals reported by this process's workflows are appended to the audit log."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[ValidatorRefusal] = asyncio.Queue(MAX_QUEUED)

    def enqueue(refusal: ValidatorRefusal) -> None:
        try:
            queue.put_nowait(refusal)
        except asyncio.QueueFull:
            log.error(
                "approval refusal on %s not audited: %d refusals already queued",
                refusal.workflow_id,
                MAX_QUEUED,
            )

    def sink(refusal: ValidatorRefusal) -> None:
        loop.call_soon_threadsafe(enqueue, refusal)

    unsubscribe = subscribe(sink)
    drain = asyncio.create_task(_drain(pool, queue), name="stead approval-refusal audit")
    try:
        yield
    finally:
        unsubscribe()
        # What was refused before shutdown is still audited, within a bounded wait.
        with suppress(TimeoutError):
            await asyncio.wait_for(queue.join(), FLUSH_ON_EXIT.total_seconds())
        drain.cancel()
        with suppress(asyncio.CancelledError):
            await drain


async def _drain(pool: asyncpg.Pool, queue: asyncio.Queue[ValidatorRefusal]) -> None:
    while True:
        refusal = await queue.get()
        try:
            for attempt in range(APPEND_ATTEMPTS):
                try:
                    await append_refusal(pool, refusal)
                    break
                except (OSError, asyncpg.PostgresError):
                    if attempt + 1 == APPEND_ATTEMPTS:
                        raise
                    await asyncio.sleep(0.2 * 2**attempt)
        except Exception:
            log.exception("approval refusal on %s could not be audited", refusal.workflow_id)
        finally:
            queue.task_done()


async def append_refusal(pool: asyncpg.Pool, refusal: ValidatorRefusal) -> None:
    async with tenant_transaction(pool, refusal.tenant) as conn:
        await append_event(
            conn,
            AuditEvent(
                tenant=refusal.tenant,
                workflow_id=refusal.workflow_id,
                run_id=refusal.run_id,
                step_id=refusal.step_id,
                kind=refusal.kind,
                actor=refusal.actor,
                data={"reason": refusal.reason, **refusal.data},
            ),
        )
