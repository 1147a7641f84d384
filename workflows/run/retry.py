"""Retry presets for the run's activities: Temporal owns retries, decided here once."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from stead.contracts.activities import NON_RETRYABLE_TYPES
    from stead.contracts.run import StepExecution

QUICK = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=10,
    non_retryable_error_types=list(NON_RETRYABLE_TYPES),
)
# Policy decisions retry a few times, then the step is blocked: fail closed, not forever.
POLICY_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=2),
    maximum_attempts=3,
    non_retryable_error_types=list(NON_RETRYABLE_TYPES),
)
PLAN_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=6,
    non_retryable_error_types=[*NON_RETRYABLE_TYPES, "PlannerUnusable"],
)


def execute_retry(execution: StepExecution) -> RetryPolicy:
    """How an execution attempt is retried: the operation's budget, ledger-safe."""
    return RetryPolicy(
        initial_interval=timedelta(milliseconds=500),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=execution.max_attempts,
        non_retryable_error_types=list(NON_RETRYABLE_TYPES),
    )
