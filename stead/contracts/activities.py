"""Inputs and outputs of the run's activities: the workflow's only doors to the world."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, JsonValue

from stead.contracts.base import Closed
from stead.contracts.identity import AdmitRunInput
from stead.contracts.run import (
    ApprovalRecord,
    Budget,
    Decision,
    Plan,
    PrincipalId,
    RunRequest,
    RunState,
    Spent,
    Step,
    StepExecution,
    StepId,
    TenantId,
)

# ApplicationError types raised by activities; the workflow branches on these names.
PLAN_REJECTED = "PlanRejected"
STEP_FAILED = "StepFailed"
INVALID_ARGUMENTS = "InvalidArguments"
UNKNOWN_OPERATION = "UnknownOperation"
LEDGER_CONFLICT = "LedgerConflict"
# The input's tenant is not the run's admitted one (stead/runs/scope.py).
TENANT_SCOPE_REFUSED = "TenantScopeRefused"
NON_RETRYABLE_TYPES = (
    PLAN_REJECTED,
    STEP_FAILED,
    INVALID_ARGUMENTS,
    UNKNOWN_OPERATION,
    LEDGER_CONFLICT,
    TENANT_SCOPE_REFUSED,
)


class RecalledMemory(Closed):
    """Context recalled before planning (filled by the memory service; empty until it lands)."""

    namespace: str
    key: str
    content: str
    sensitivity: str = "internal"
    version: int = 1
    valid_from: datetime | None = Field(default=None, description="When it was true (event time).")
    recorded_at: datetime | None = Field(default=None, description="When memory learned it.")
    freshness: str = Field(
        default="",
        description="How current the recall was: its consistency policy, writes not yet"
        " indexed, or degraded to full text.",
    )


class RunRef(Closed):
    workflow_id: str
    run_id: str
    started_by: PrincipalId


class PlanFailure(Closed):
    """The failure that caused a replan, as fields: what a deterministic planner (a
    playbook's ``on_reject``) needs without parsing ``failure_context``."""

    step_id: StepId
    operation: str
    state: str = Field(description="The step's final state: rejected, failed, blocked...")
    reason: str = ""
    approver: PrincipalId | None = Field(default=None, description="Who rejected it, if anyone.")
    comment: str = Field(default="", description="The rejecting approver's comment.")


class PlanInput(Closed):
    request: RunRequest
    workflow_id: str
    attempt: int = Field(default=1, ge=1, description="1 for the first plan, 2+ for replans.")
    recalled: tuple[RecalledMemory, ...] = ()
    failure_context: str | None = None
    completed_steps: tuple[StepId, ...] = ()
    # Appended with a default, so inputs in histories recorded before it still load.
    failure: PlanFailure | None = None
    allow_stored: bool = Field(
        default=False,
        description="The workflow can run a plan stored by reference (window by window); "
        "without it a plan of any size comes back whole, as before.",
    )


class PlanWindowInput(Closed):
    """Load the next window of a stored plan: ``plan`` is its header (no steps)."""

    tenant: TenantId
    plan: Plan
    start: int = Field(ge=0)
    size: int = Field(ge=1)


class PlanDecisionInput(Closed):
    tenant: TenantId
    principal: PrincipalId
    run: RunRef
    plan: Plan
    budget: Budget


class StepProvenance(Closed):
    """Where a step's arguments came from, for policy (``input.step.provenance``).

    ``planner`` made every argument; ``recalled`` says the LLM planner's prompt held
    recalled memory; ``args`` maps each argument path filled from an earlier step's
    output (``$ref``) to its sources (``step:<id>`` and that output's own taints);
    ``tainted`` is the union of untrusted sources: ``llm`` (an LLM wrote it),
    ``memory`` (recalled memory or a memory read shaped it), ``unknown`` (its origin
    is out of sight, e.g. a step in an earlier window of a stored plan).
    """

    planner: Literal["llm", "playbook"]
    recalled: bool = False
    args: dict[str, tuple[str, ...]] = {}
    tainted: tuple[Literal["llm", "memory", "unknown"], ...] = ()


class DecideStepInput(Closed):
    tenant: TenantId
    principal: PrincipalId
    run: RunRef
    plan_hash: str
    step: Step
    execution: StepExecution
    budget: Budget
    spent: Spent
    approvals: tuple[ApprovalRecord, ...] = ()
    # Appended with a default, so inputs in histories recorded before it still load;
    # policy reads a missing provenance as tainted "unknown" (fail closed).
    provenance: StepProvenance | None = None


class ExecuteStepInput(Closed):
    tenant: TenantId
    principal: PrincipalId
    run: RunRef
    plan_hash: str
    step: Step
    decision_id: str
    idempotency_key: str
    capability_grant: str | None = Field(
        default=None,
        description="Id of a capability minted ahead by the authority (edge steps).",
    )


class StepUsage(Closed):
    """What a step consumed that counts against the run's budget (an LLM call's tokens
    and dollars), as its adapter reported it."""

    tokens: int = Field(default=0, ge=0)
    usd: float = Field(default=0.0, ge=0)


class ExecuteStepOutput(Closed):
    output: JsonValue = None
    replayed: bool = Field(
        default=False, description="True when the ledger already held the result."
    )
    # Appended with a default, so outputs in histories recorded before it still load.
    usage: StepUsage | None = Field(
        default=None, description="Tokens and dollars the adapter reports; added to spent."
    )


class AuditInput(Closed):
    tenant: TenantId
    workflow_id: str
    run_id: str
    step_id: str | None = None
    kind: str
    actor: str
    data: dict[str, JsonValue] = {}


class RunRecordInput(Closed):
    tenant: TenantId
    workflow_id: str
    principal: PrincipalId
    status: RunState
    goal: str | None = None
    playbook: str | None = None
    playbook_sha256: str | None = None
    plan_hash: str | None = None
    tokens: int | None = None
    cost_usd: float | None = None
    minutes_saved: float | None = None
    labels: dict[str, str] = {}
    summary: dict[str, JsonValue] = {}
    finished: bool = False
    at: datetime | None = None


class ExpressStepInput(Closed):
    """Decide and, if allowed at once, execute a low-risk read step in one local activity."""

    decide: DecideStepInput
    idempotency_key: str


class ExpressStepOutput(Closed):
    decision: Decision
    executed: bool = False
    output: ExecuteStepOutput | None = None


class DecidedPlanInput(Closed):
    """Make the plan and have policy decide it, in one activity (``plan.create_decided``)."""

    plan: PlanInput
    run: RunRef


class DecidedPlan(Closed):
    """A plan and policy's decision on it.

    ``decision`` is None when policy could not decide (OPA unreachable, a stored plan
    that could not be read back): the workflow then asks ``policy.decide_plan`` on its
    own, whose retries end in a ``policy_unavailable`` block (fail closed);
    ``undecided`` says why, for the worker log only.
    """

    plan: Plan
    decision: Decision | None = None
    undecided: str | None = None


class OpenRunInput(Closed):
    """The run's admission and its start record, in one local activity (``runs.open``)."""

    admit: AdmitRunInput
    record: RunRecordInput
