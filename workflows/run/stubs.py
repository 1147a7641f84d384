"""Typed stubs for the activities the run calls: one function per activity.

Each names its activity by the constant its ``@activity.defn`` uses
(``stead.contracts.activity_names``), fixes the input and result types mypy checks,
and carries its timeout and retry preset, so the flow reads ``await stubs.decide_step(...)``
and this module stays I/O-free (names, not functions, cross into the workflow).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows.run.retry import PLAN_RETRY, POLICY_RETRY, QUICK

with workflow.unsafe.imports_passed_through():
    from stead.contracts import activity_names as names
    from stead.contracts.activities import (
        AuditInput,
        DecidedPlan,
        DecidedPlanInput,
        DecideStepInput,
        ExecuteStepInput,
        ExecuteStepOutput,
        ExpressStepInput,
        ExpressStepOutput,
        OpenRunInput,
        PlanDecisionInput,
        PlanWindowInput,
        RecalledMemory,
        RunRecordInput,
    )
    from stead.contracts.capability import CapabilityGrant
    from stead.contracts.continuation import SealCheck, SealInput, VerifySealInput
    from stead.contracts.identity import (
        ApprovalCheck,
        BurnedToken,
        BurnTokenInput,
        RunAdmission,
        VerifyApprovalInput,
        VerifyCancelInput,
    )
    from stead.contracts.run import Decision, Plan
    from stead.memory.contracts import RecallInput, RunSummaryInput

_T = TypeVar("_T")
SECONDS_10 = timedelta(seconds=10)
# Steps heartbeat while their adapter runs (activities/heartbeat.py): a worker that dies
# mid-step, or a lost completion, costs this long before the retry, not the step timeout.
STEP_HEARTBEAT = timedelta(seconds=10)
SECONDS_30 = timedelta(seconds=30)


async def _remote(name: str, arg: object, result_type: type[_T], **options: Any) -> _T:
    """``execute_activity`` by name, typed: names (not functions) keep this module I/O-free."""
    result: _T = await workflow.execute_activity(name, arg, result_type=result_type, **options)
    return result


async def _local(name: str, arg: object, result_type: type[_T], **options: Any) -> _T:
    result: _T = await workflow.execute_local_activity(
        name, arg, result_type=result_type, **options
    )
    return result


# ------------------------------------------------------------- the run's own books


async def open_run(inp: OpenRunInput) -> RunAdmission:
    """Record the start, verify the start token, admit the starter (local: no task hop)."""
    return await _local(
        names.RUNS_OPEN,
        inp,
        result_type=RunAdmission,
        start_to_close_timeout=SECONDS_10,
        retry_policy=QUICK,
    )


async def record_run(inp: RunRecordInput) -> None:
    """The run's record (local: a regular activity is a task round trip of its own)."""
    await workflow.execute_local_activity(
        names.RUNS_RECORD,
        inp,
        start_to_close_timeout=SECONDS_10,
        retry_policy=QUICK,
    )


async def audit(inp: AuditInput) -> None:
    await workflow.execute_activity(
        names.AUDIT_APPEND, inp, start_to_close_timeout=SECONDS_10, retry_policy=QUICK
    )


async def seal(inp: SealInput) -> str:
    return await _local(
        names.RUNS_SEAL,
        inp,
        result_type=str,
        start_to_close_timeout=SECONDS_30,
        retry_policy=QUICK,
    )


async def verify_seal(inp: VerifySealInput) -> SealCheck:
    return await _local(
        names.RUNS_VERIFY_SEAL,
        inp,
        result_type=SealCheck,
        start_to_close_timeout=SECONDS_30,
        retry_policy=QUICK,
    )


# ------------------------------------------------------------------ planning


async def create_decided_plan(inp: DecidedPlanInput) -> DecidedPlan:
    return await _remote(
        names.PLAN_CREATE_DECIDED,
        inp,
        result_type=DecidedPlan,
        start_to_close_timeout=timedelta(minutes=5),
        retry_policy=PLAN_RETRY,
    )


async def load_window(inp: PlanWindowInput) -> Plan:
    return await _remote(
        names.PLAN_WINDOW,
        inp,
        result_type=Plan,
        start_to_close_timeout=timedelta(seconds=60),
        retry_policy=QUICK,
    )


async def recall(inp: RecallInput) -> list[RecalledMemory]:
    return await _remote(
        names.MEMORY_RECALL,
        inp,
        result_type=list[RecalledMemory],
        start_to_close_timeout=SECONDS_30,
        retry_policy=QUICK,
    )


async def remember_run_summary(inp: RunSummaryInput, *, local: bool) -> None:
    """The run's memory summary, its last write.

    Local since ``fewer-actions``: it follows the final ``runs.record`` in the same
    workflow task, so their markers are billed as one Action instead of the summary
    costing an activity of its own. It holds that last task open while it embeds (the
    SDK heartbeats a task whose local activity outlasts the task timeout), where the
    regular activity cost the run two task round trips instead.
    """
    if local:
        await workflow.execute_local_activity(
            names.MEMORY_REMEMBER_RUN_SUMMARY,
            inp,
            start_to_close_timeout=SECONDS_30,
            retry_policy=QUICK,
        )
        return
    await workflow.execute_activity(
        names.MEMORY_REMEMBER_RUN_SUMMARY,
        inp,
        start_to_close_timeout=SECONDS_30,
        retry_policy=QUICK,
    )


# ---------------------------------------------------------------- decisions


async def decide_plan(inp: PlanDecisionInput) -> Decision:
    return await _remote(
        names.POLICY_DECIDE_PLAN,
        inp,
        result_type=Decision,
        start_to_close_timeout=SECONDS_10,
        retry_policy=POLICY_RETRY,
    )


async def decide_step(inp: DecideStepInput) -> Decision:
    return await _remote(
        names.POLICY_DECIDE_STEP,
        inp,
        result_type=Decision,
        start_to_close_timeout=SECONDS_10,
        retry_policy=POLICY_RETRY,
    )


# ---------------------------------------------------------------- the lanes


async def express_step(inp: ExpressStepInput, *, timeout: timedelta) -> ExpressStepOutput:
    return await _local(
        names.EXPRESS_STEP,
        inp,
        result_type=ExpressStepOutput,
        start_to_close_timeout=timeout,
        retry_policy=POLICY_RETRY,
    )


async def run_step(
    inp: ExpressStepInput, *, timeout: timedelta, retry: RetryPolicy
) -> ExpressStepOutput:
    return await _remote(
        names.STEP_RUN,
        inp,
        result_type=ExpressStepOutput,
        start_to_close_timeout=timeout,
        heartbeat_timeout=STEP_HEARTBEAT,
        retry_policy=retry,
    )


async def issue_capability(inp: ExecuteStepInput) -> CapabilityGrant:
    return await _remote(
        names.CAPABILITY_ISSUE,
        inp,
        result_type=CapabilityGrant,
        start_to_close_timeout=SECONDS_10,
        retry_policy=QUICK,
    )


async def execute_step(
    inp: ExecuteStepInput, *, task_queue: str, timeout: timedelta, retry: RetryPolicy
) -> ExecuteStepOutput:
    return await _remote(
        names.ADAPTER_EXECUTE,
        inp,
        result_type=ExecuteStepOutput,
        task_queue=task_queue,
        start_to_close_timeout=timeout,
        heartbeat_timeout=STEP_HEARTBEAT,
        retry_policy=retry,
    )


# ---------------------------------------------------------------- approvals


async def verify_approval(inp: VerifyApprovalInput) -> ApprovalCheck:
    return await _remote(
        names.IDENTITY_VERIFY_APPROVAL,
        inp,
        result_type=ApprovalCheck,
        start_to_close_timeout=SECONDS_10,
        retry_policy=POLICY_RETRY,
    )


async def verify_cancel(inp: VerifyCancelInput) -> ApprovalCheck:
    return await _remote(
        names.IDENTITY_VERIFY_CANCEL,
        inp,
        result_type=ApprovalCheck,
        start_to_close_timeout=SECONDS_10,
        retry_policy=POLICY_RETRY,
    )


async def burn_token(inp: BurnTokenInput) -> BurnedToken:
    return await _remote(
        names.IDENTITY_BURN_TOKEN,
        inp,
        result_type=BurnedToken,
        start_to_close_timeout=SECONDS_10,
        retry_policy=QUICK,
    )
