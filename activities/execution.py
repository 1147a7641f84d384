"""Executing a step through its adapter, exactly once per idempotency key.

The intent row commits to the effect ledger *before* the adapter is called. A retry
that finds the row completed returns the stored result without touching the
adapter; one that finds it still in flight (the worker died between effect and
completion) asks the adapter to reconcile before trying again. The step must carry
a recorded *allow* decision: execution re-checks it rather than trusting the caller.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from pydantic import JsonValue
from temporalio import activity
from temporalio.exceptions import ApplicationError

from adapters.base import AdapterError, Operation, OperationContext
from adapters.catalog import Catalog, InvalidArguments, UnknownOperation
from stead.audit.log import AuditEvent, append_event
from stead.contracts.activities import (
    INVALID_ARGUMENTS,
    LEDGER_CONFLICT,
    STEP_FAILED,
    UNKNOWN_OPERATION,
    ExecuteStepInput,
    ExecuteStepOutput,
)
from stead.contracts.run import sha256_hex
from stead.db.pool import tenant_transaction
from stead.ledger import effects
from stead.ledger.effects import LedgerConflict


class ExecutionActivities:
    def __init__(self, catalog: Catalog, pool: asyncpg.Pool, resources: Any) -> None:
        self._catalog = catalog
        self._pool = pool
        self._resources = resources

    @activity.defn(name="adapter.execute")
    async def execute(self, req: ExecuteStepInput) -> ExecuteStepOutput:
        op, args = self._parse(req)
        ctx = OperationContext(
            tenant=req.tenant,
            principal=req.principal,
            workflow_id=req.run.workflow_id,
            step_id=req.step.id,
            idempotency_key=req.idempotency_key,
            resources=self._resources,
        )
        entry = await self._begin(req)
        if entry.status == "completed":
            return ExecuteStepOutput(output=entry.result, replayed=True)
        if entry.status == "failed":
            raise ApplicationError(entry.error or "step failed earlier", type=STEP_FAILED, non_retryable=True)
        if entry.attempts > 1 and op.reconcile is not None:
            found = await op.reconcile(ctx, args)
            if found is not None:
                output = found.model_dump(mode="json")
                await self._complete(req, output, reconciled=True)
                return ExecuteStepOutput(output=output, replayed=True)
        try:
            result = await op.run(ctx, args)
        except AdapterError as exc:
            if exc.retryable:
                raise ApplicationError(exc.message, exc.details, type="AdapterRetryable") from exc
            await self._fail(req, exc.message)
            raise ApplicationError(exc.message, exc.details, type=STEP_FAILED, non_retryable=True) from exc
        output = result.model_dump(mode="json")
        await self._complete(req, output, reconciled=False)
        return ExecuteStepOutput(output=output)

    def _parse(self, req: ExecuteStepInput) -> tuple[Operation[Any, Any], Any]:
        try:
            op = self._catalog.get(req.step.operation)
            return op, self._catalog.parse_args(req.step.operation, req.step.args)
        except UnknownOperation as exc:
            raise ApplicationError(str(exc), type=UNKNOWN_OPERATION, non_retryable=True) from exc
        except InvalidArguments as exc:
            raise ApplicationError(str(exc), exc.errors, type=INVALID_ARGUMENTS, non_retryable=True) from exc

    async def _begin(self, req: ExecuteStepInput) -> effects.LedgerEntry:
        """Check the recorded decision and commit the intent, in its own transaction."""
        async with tenant_transaction(self._pool, req.tenant) as conn:
            outcome = await conn.fetchval(
                "SELECT outcome FROM decisions WHERE decision_id = $1 AND workflow_id = $2 AND step_id = $3",
                req.decision_id,
                req.run.workflow_id,
                req.step.id,
            )
            if outcome != "allow":
                raise ApplicationError(
                    f"no recorded allow decision {req.decision_id} for step {req.step.id}; refusing to execute",
                    type=STEP_FAILED,
                    non_retryable=True,
                )
            try:
                return await effects.begin(
                    conn,
                    tenant=req.tenant,
                    key=req.idempotency_key,
                    workflow_id=req.run.workflow_id,
                    step_id=req.step.id,
                    operation=req.step.operation,
                    args_hash=sha256_hex(req.step.args),
                    decision_id=req.decision_id,
                )
            except LedgerConflict as exc:
                raise ApplicationError(str(exc), type=LEDGER_CONFLICT, non_retryable=True) from exc

    async def _complete(self, req: ExecuteStepInput, output: JsonValue, *, reconciled: bool) -> None:
        async with tenant_transaction(self._pool, req.tenant) as conn:
            await effects.complete(conn, tenant=req.tenant, key=req.idempotency_key, result=output)
            await append_event(conn, self._event(req, "effect_reconciled" if reconciled else "effect", {}))

    async def _fail(self, req: ExecuteStepInput, error: str) -> None:
        async with tenant_transaction(self._pool, req.tenant) as conn:
            await effects.fail(conn, tenant=req.tenant, key=req.idempotency_key, error=error)
            await append_event(conn, self._event(req, "effect_failed", {"error": error}))

    def _event(self, req: ExecuteStepInput, kind: str, extra: dict[str, JsonValue]) -> AuditEvent:
        return AuditEvent(
            tenant=req.tenant,
            workflow_id=req.run.workflow_id,
            run_id=req.run.run_id,
            step_id=req.step.id,
            kind=kind,
            actor=req.principal,
            data={
                "operation": req.step.operation,
                "idempotency_key": req.idempotency_key,
                "decision_id": req.decision_id,
                "args_hash": sha256_hex(req.step.args),
                **extra,
            },
        )
