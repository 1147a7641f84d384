"""Step metrics and the step log line, recorded around the execution activity.

:func:`observed_step` decorates ``ExecutionActivities.execute_admitted`` so every way
out of it (a result, an answer replayed from the effect ledger, any error) is counted
the same way, whether Temporal runs it as ``adapter.execute`` or the fused step and the
express lane call it inside theirs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Concatenate, ParamSpec, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from stead.contracts.activities import ExecuteStepInput, ExecuteStepOutput
from stead.observability.logs import log_context
from stead.observability.metrics import (
    StepOutcome,
    observe_step,
    observe_step_recovered,
    observe_step_retry,
)

log = logging.getLogger("stead.steps")
S = TypeVar("S")
P = ParamSpec("P")
Execute = Callable[Concatenate[S, ExecuteStepInput, P], Awaitable[ExecuteStepOutput]]


def observed_step(fn: Execute[S, P]) -> Execute[S, P]:
    """Count, time and log each execution attempt of a step (its input comes first)."""

    @functools.wraps(fn)
    async def execute(
        self: S, req: ExecuteStepInput, /, *args: P.args, **kwargs: P.kwargs
    ) -> ExecuteStepOutput:
        tenant, operation, step_id = req.tenant, req.step.operation, req.step.id
        info = activity.info()
        if info.attempt > 1:
            observe_step_retry(tenant, operation)
        started = time.perf_counter()
        with log_context(tenant=tenant, run_id=req.run.workflow_id, step_id=step_id):
            try:
                result = await fn(self, req, *args, **kwargs)
            except asyncio.CancelledError:
                observe_step(tenant, operation, "cancelled", time.perf_counter() - started)
                raise
            except Exception as exc:
                _failed(req, info, exc, time.perf_counter() - started)
                raise
            seconds = time.perf_counter() - started
            outcome: StepOutcome = "replayed" if result.replayed else "succeeded"
            observe_step(tenant, operation, outcome, seconds)
            if info.attempt > 1:
                # Temporal does not say when the first attempt failed; its scheduling is
                # the closest fact, so recovery counts from the step's first scheduling.
                recovery = datetime.now(UTC) - info.scheduled_time
                observe_step_recovered(operation, recovery.total_seconds())
            log.info(
                "step %s (%s) %s",
                step_id,
                operation,
                outcome,
                extra={"operation": operation, "outcome": outcome, "duration_ms": _ms(seconds)},
            )
            return result

    return execute


def _failed(req: ExecuteStepInput, info: activity.Info, exc: Exception, seconds: float) -> None:
    operation = req.step.operation
    outcome: StepOutcome = "failed" if _is_final(exc, info) else "retrying"
    error = _error_type(exc)
    observe_step(req.tenant, operation, outcome, seconds, error=error)
    log.warning(
        "step %s (%s) %s on attempt %d: %s",
        req.step.id,
        operation,
        outcome,
        info.attempt,
        exc,
        extra={
            "operation": operation,
            "outcome": outcome,
            "error": error,
            "duration_ms": _ms(seconds),
        },
    )


def _is_final(exc: Exception, info: activity.Info) -> bool:
    """Whether Temporal gives up on the step after this attempt."""
    policy = info.retry_policy
    if isinstance(exc, ApplicationError):
        if exc.non_retryable:
            return True
        if policy is not None and exc.type in (policy.non_retryable_error_types or ()):
            return True
    return policy is not None and 0 < policy.maximum_attempts <= info.attempt


def _error_type(exc: Exception) -> str:
    """An ``ApplicationError``'s type (StepFailed, AdapterRetryable, ...), else the class."""
    if isinstance(exc, ApplicationError) and exc.type:
        return exc.type
    return type(exc).__name__


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
