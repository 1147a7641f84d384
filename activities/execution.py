"""Executing a step through its adapter, exactly once per idempotency key.

The intent row commits to the effect ledger *before* the adapter is called. A retry
that finds the row completed returns the stored result without touching the
adapter; one that finds it still in flight (the worker died between effect and
completion) asks the adapter to reconcile before trying again.

No adapter runs without a capability token scoped to this tenant, run, step,
operation, argument hash, idempotency key and decision, minted by the capability
authority only after it finds that decision recorded as an *allow*. On a worker that
holds the signing key the token is minted here, at execution time; an edge worker
(public key only) reads the grant the authority minted ahead for it. Either way the
token never enters workflow history. The boundary verifies it with the public key
alone and spends it in the capability ledger in the transaction that commits the
effect's intent. Any refusal is audited (``capability_refused``) and fails the step
without a retry.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, NoReturn

import asyncpg
from pydantic import JsonValue
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeats
from adapters.ratelimit import RATE_LIMITED, RateLimited, RateLimiter
from stead.audit.log import AuditEvent, append_event
from stead.capability import (
    CapabilityAuthority,
    CapabilityClaims,
    CapabilityIssuer,
    CapabilityMismatch,
    CapabilityRefused,
    CapabilityReplayed,
    CapabilityScope,
    CapabilityVerifier,
    NoAuthority,
    consume,
)
from stead.capability.ledger import load_grant, spent_on
from stead.contracts import activity_names as names
from stead.contracts.activities import (
    INVALID_ARGUMENTS,
    LEDGER_CONFLICT,
    STEP_FAILED,
    UNKNOWN_OPERATION,
    ExecuteStepInput,
    ExecuteStepOutput,
    StepUsage,
)
from stead.contracts.run import sha256_hex
from stead.db.pool import commit_without_waiting_for_disk, tenant_transaction
from stead.ledger import effects
from stead.ledger.effects import LedgerConflict
from stead.observability.metrics import observe_step_usage
from stead.observability.steps import observed_step
from stead.operations.base import AdapterError, Operation, OperationContext
from stead.operations.catalog import Catalog, InvalidArguments, UnknownOperation
from stead.runs.scope import ScopeClaim, tenant_scoped

# The ApplicationError type of every capability refusal; never retried.
CAPABILITY_REFUSED = "CapabilityRefused"


class ExecutionActivities:
    def __init__(
        self,
        catalog: Catalog,
        pool: asyncpg.Pool,
        resources: Any,
        *,
        issuer: CapabilityIssuer | None,
        verifier: CapabilityVerifier,
        rate_limits: RateLimiter | None = None,
    ) -> None:
        self._catalog = catalog
        self._pool = pool
        self._resources = resources
        self._issuer = issuer
        self._verifier = verifier
        self._rate_limits = rate_limits or RateLimiter(pool)

    @activity.defn(name=names.ADAPTER_EXECUTE)
    @tenant_scoped(lambda req: ScopeClaim(req.tenant, (req.run.workflow_id,)))
    async def execute(self, req: ExecuteStepInput) -> ExecuteStepOutput:
        return await self.execute_admitted(req, None)

    @property
    def mints_inline(self) -> bool:
        """This worker holds the authority: it mints on the transaction that spends."""
        return isinstance(self._issuer, CapabilityAuthority)

    @observed_step  # step metrics and the step log line: stead/observability/steps.py
    @heartbeats
    async def execute_admitted(
        self, req: ExecuteStepInput, admitted: effects.LedgerEntry | Exception | None
    ) -> ExecuteStepOutput:
        """Execute the step; ``admitted`` is what the caller's own transaction made of its
        admission (``admit_in``: the fused step admits on its decision's transaction),
        the error it raised, or None to admit here in a transaction of its own."""
        op, args = self._parse(req)
        if admitted is None:
            entry = await self._admit(req, op)
        elif isinstance(admitted, Exception):
            raise admitted
        else:
            entry = admitted
        ctx = OperationContext(
            tenant=req.tenant,
            principal=req.principal,
            workflow_id=req.run.workflow_id,
            step_id=req.step.id,
            idempotency_key=req.idempotency_key,
            resources=self._resources,
        )
        if entry.status == "completed":
            return ExecuteStepOutput(
                output=entry.result, replayed=True, usage=reported_usage(op, entry.result)
            )
        if entry.status == "failed":
            raise ApplicationError(
                entry.error or "step failed earlier", type=STEP_FAILED, non_retryable=True
            )
        if entry.attempts > 1 and op.reconcile is not None:
            try:
                found = await op.reconcile(ctx, args)
            except AdapterError as exc:
                await self._adapter_failed(req, exc)
            if found is not None:
                output = found.model_dump(mode="json")
                await self._complete(req, output, reconciled=True)
                return ExecuteStepOutput(
                    output=output, replayed=True, usage=reported_usage(op, output)
                )
        await self._acquire_rate_limit(req, op)
        try:
            result = await op.run(ctx, args)
        except AdapterError as exc:
            await self._adapter_failed(req, exc)
        output = result.model_dump(mode="json")
        await self._complete(req, output, reconciled=False)
        usage = reported_usage(op, output)
        if usage is not None:
            observe_step_usage(req.tenant, req.step.operation, usage.tokens, usage.usd)
        return ExecuteStepOutput(output=output, usage=usage)

    async def admit_in(
        self, conn: asyncpg.Connection, req: ExecuteStepInput
    ) -> effects.LedgerEntry:
        """Mint, verify and spend the step's capability and record its intent, all on the
        caller's ``tenant_transaction`` (which holds the step's just-recorded allow).

        Only where ``mints_inline``. Raises ``CapabilityRefused`` (the caller audits it
        once its transaction has rolled back: ``refusal_event``, ``refused_error``),
        ``ApplicationError`` for a ledger conflict, ``UnknownOperation``.
        """
        assert isinstance(self._issuer, CapabilityAuthority)
        # The arguments are parsed (and refused) by ``execute_admitted``; only the
        # operation's side effect matters here.
        op = self._catalog.get(req.step.operation)
        scope = CapabilityScope.for_step(req)
        token = await self._issuer.issue_in(conn, scope)
        return await self._spend_and_begin(conn, req, op, scope, token)

    async def _adapter_failed(self, req: ExecuteStepInput, exc: AdapterError) -> NoReturn:
        """Retry what the adapter says may succeed; record anything else as the step's end."""
        if exc.retryable:
            raise ApplicationError(exc.message, exc.details, type="AdapterRetryable") from exc
        await self._fail(req, exc.message)
        raise ApplicationError(
            exc.message, exc.details, type=STEP_FAILED, non_retryable=True
        ) from exc

    async def _acquire_rate_limit(self, req: ExecuteStepInput, op: Operation[Any, Any]) -> None:
        """The tenant's rate limit for ``op``, shared by all workers (adapters/ratelimit.py).

        Over the limit, this attempt fails with a retry delay of exactly the wait for the
        slot it has reserved, so the retry runs without drawing again.
        """
        try:
            await self._rate_limits.acquire(req.tenant, op, req.idempotency_key)
        except RateLimited as exc:
            raise ApplicationError(
                str(exc),
                exc.details,
                type=RATE_LIMITED,
                next_retry_delay=timedelta(seconds=exc.retry_after),
            ) from exc

    def _parse(self, req: ExecuteStepInput) -> tuple[Operation[Any, Any], Any]:
        try:
            op = self._catalog.get(req.step.operation)
            return op, self._catalog.parse_args(req.step.operation, req.step.args)
        except UnknownOperation as exc:
            raise ApplicationError(str(exc), type=UNKNOWN_OPERATION, non_retryable=True) from exc
        except InvalidArguments as exc:
            raise ApplicationError(
                str(exc), exc.errors, type=INVALID_ARGUMENTS, non_retryable=True
            ) from exc

    async def _admit(self, req: ExecuteStepInput, op: Operation[Any, Any]) -> effects.LedgerEntry:
        """Get, verify and spend the step's capability, and commit the intent with it.

        With the in-process authority, the decision check, the spend and the intent
        share one transaction.
        """
        scope = CapabilityScope.for_step(req)
        inline = req.capability_grant is None and self.mints_inline
        try:
            token = None if inline else await self._token(req, scope)
            async with tenant_transaction(self._pool, req.tenant) as conn:
                if token is None:
                    assert isinstance(self._issuer, CapabilityAuthority)
                    token = await self._issuer.issue_in(conn, scope)
                return await self._spend_and_begin(conn, req, op, scope, token)
        except CapabilityRefused as exc:
            await self._refused(req, exc)
            raise refused_error(exc) from None

    async def _spend_and_begin(
        self,
        conn: asyncpg.Connection,
        req: ExecuteStepInput,
        op: Operation[Any, Any],
        scope: CapabilityScope,
        token: str,
    ) -> effects.LedgerEntry:
        """Verify and spend ``token`` and record the intent, on the caller's transaction.

        The intent of a read with native idempotency needs no fsync of its own: the
        completion's durable commit follows. Any other intent commits durably, before
        the adapter acts.
        """
        claims = await self._verify(conn, token, scope)
        if op.side_effect == "read" and op.idempotency == "native":
            await commit_without_waiting_for_disk(conn)
        await consume(conn, claims)
        try:
            return await effects.begin(
                conn,
                tenant=req.tenant,
                key=req.idempotency_key,
                workflow_id=req.run.workflow_id,
                step_id=req.step.id,
                operation=req.step.operation,
                args_hash=scope.args_hash,
                decision_id=req.decision_id,
            )
        except LedgerConflict as exc:
            raise ApplicationError(str(exc), type=LEDGER_CONFLICT, non_retryable=True) from exc

    async def _token(self, req: ExecuteStepInput, scope: CapabilityScope) -> str:
        """The grant the authority minted ahead (edge steps), else a token minted now."""
        if req.capability_grant is not None:
            async with tenant_transaction(self._pool, req.tenant) as conn:
                return await load_grant(conn, req.capability_grant)
        if self._issuer is None:
            raise NoAuthority(
                "this worker holds no capability signing key (capability.key) and the step "
                f"carries no grant, so step {scope.step_id} cannot be authorized here"
            )
        return await self._issuer.issue(scope)

    async def _verify(
        self, conn: asyncpg.Connection, token: str, scope: CapabilityScope
    ) -> CapabilityClaims:
        """Public-key verification; a token already spent on another step is a replay."""
        try:
            return self._verifier.verify(token, scope)
        except CapabilityMismatch as exc:
            if exc.token_id is None:
                raise
            spent = await spent_on(conn, exc.token_id)
            if spent is None:
                raise
            raise CapabilityReplayed(
                f"capability token {exc.token_id} was spent on {spent} and replayed for "
                f"{scope.workflow_id}/{scope.step_id}: {exc.message}",
                token_id=exc.token_id,
            ) from None

    async def _refused(self, req: ExecuteStepInput, exc: CapabilityRefused) -> None:
        """Audit the refusal in its own transaction: the refused one has rolled back."""
        async with tenant_transaction(self._pool, req.tenant) as conn:
            await append_event(conn, refusal_event(req, exc))

    async def _complete(
        self, req: ExecuteStepInput, output: JsonValue, *, reconciled: bool
    ) -> None:
        async with tenant_transaction(self._pool, req.tenant) as conn:
            await effects.complete(conn, tenant=req.tenant, key=req.idempotency_key, result=output)
            await append_event(
                conn, self._event(req, "effect_reconciled" if reconciled else "effect", {})
            )

    async def _fail(self, req: ExecuteStepInput, error: str) -> None:
        async with tenant_transaction(self._pool, req.tenant) as conn:
            await effects.fail(conn, tenant=req.tenant, key=req.idempotency_key, error=error)
            await append_event(conn, self._event(req, "effect_failed", {"error": error}))

    def _event(self, req: ExecuteStepInput, kind: str, extra: dict[str, JsonValue]) -> AuditEvent:
        return step_event(req, kind, extra)


def reported_usage(op: Operation[Any, Any], output: JsonValue) -> StepUsage | None:
    """What the result says the step consumed, for the run's spend (``step_usage()`` on
    the result model, e.g. ``llm.generate``'s tokens and dollars).

    Read from the stored JSON, so a result replayed from the ledger counts too: the
    workflow never saw the attempt that paid for it.
    """
    if not hasattr(op.result_model, "step_usage") or not isinstance(output, dict):
        return None
    usage: StepUsage | None = op.result_model.model_validate(output).step_usage()
    return usage


def step_event(req: ExecuteStepInput, kind: str, extra: dict[str, JsonValue]) -> AuditEvent:
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


def refused_error(exc: CapabilityRefused) -> ApplicationError:
    """What the step fails with once a refusal is audited: never retried."""
    return ApplicationError(
        f"capability refused ({exc.reason}): {exc.message}",
        type=CAPABILITY_REFUSED,
        non_retryable=True,
    )


def refusal_event(req: ExecuteStepInput, exc: CapabilityRefused) -> AuditEvent:
    """``capability_refused``: why, never the token itself (only its id, when it has one)."""
    return step_event(
        req,
        "capability_refused",
        {"reason": exc.reason, "detail": exc.message, "token_id": exc.token_id},
    )
