"""Contracts of the governed run: what enters the workflow, what it records, what it reports.

Every model is closed (``extra="forbid"``): a field the workflow does not know is an
error at the boundary, not silently dropped. Fields get defaults so old histories
still deserialize when a field is added later.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    Field,
    JsonValue,
    StringConstraints,
    model_validator,
)

from stead.contracts.base import Closed

TenantId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
PrincipalId = Annotated[
    str, StringConstraints(pattern=r"^(user|agent|service|group):[A-Za-z0-9._@+-]{1,128}$")
]
StepId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
# ``adapter.operation``, or ``mcp.<server>.<tool>`` (stead/operations/base.py OPERATION_NAME).
OperationName = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?$")
]

OnFailure = Literal["abort", "skip", "replan"]
Verdict = Literal["approve", "reject"]
Outcome = Literal["allow", "deny", "approve"]
BlockedReason = Literal["policy_unavailable", "policy_undefined"]


def canonical_json(value: object) -> str:
    """One byte-exact JSON form for hashing: sorted keys, no whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_hex(value: object) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


class Budget(Closed):
    max_steps: int = Field(default=50, ge=1, le=100_000)
    max_tokens: int = Field(default=200_000, ge=0)
    max_usd: float = Field(default=5.0, ge=0)


class RunOptions(Closed):
    """Knobs a caller may set per run; defaults suit interactive use."""

    max_parallel: int = Field(default=4, ge=1, le=64)
    max_replans: int = Field(default=1, ge=0, le=5)
    continue_as_new_after_steps: int = Field(default=200, ge=10)
    default_approval_timeout_seconds: int | None = Field(default=None, ge=1)
    express_reads: bool = Field(
        default=False,
        description="Run low-risk read steps as one local activity (decide + execute), "
        "still policy-checked, ledgered and audited.",
    )


class RunRequest(Closed):
    tenant: TenantId
    principal: PrincipalId
    goal: str | None = Field(default=None, min_length=1, max_length=8_000)
    playbook: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,100}$")
    playbook_source: str | None = Field(
        default=None, max_length=512_000, description="Inline playbook YAML (--playbook-file)."
    )
    inputs: dict[str, JsonValue] = {}
    budget: Budget = Budget()
    deadline: datetime | None = None
    labels: dict[str, str] = {}
    options: RunOptions = RunOptions()

    @model_validator(mode="after")
    def _one_source(self) -> RunRequest:
        given = [x for x in (self.goal, self.playbook, self.playbook_source) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of goal, playbook or playbook_source")
        return self


class Step(Closed):
    id: StepId
    operation: OperationName
    args: dict[str, JsonValue] = {}
    depends_on: tuple[StepId, ...] = ()
    rationale: str = ""
    on_failure: OnFailure = "abort"
    minutes_saved: float = Field(default=0.0, ge=0, description="Value captured when it succeeds.")
    timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="Tighter activity timeout; never above the catalog's.",
    )


class StepExecution(Closed):
    """How a step runs, resolved from the adapter catalog at plan time so it is in history."""

    task_queue: str | None = None
    timeout_seconds: float = 30.0
    max_attempts: int = 5
    side_effect: Literal["read", "write", "external"] = "read"
    risk: Literal["low", "medium", "high"] = "low"
    scopes: tuple[str, ...] = ()


class PlannerInfo(Closed):
    kind: Literal["playbook", "llm"]
    model: str | None = None
    playbook: str | None = None
    prompt_hash: str | None = None
    tokens: int = 0
    cost_usd: float = 0.0
    attempts: int = 1
    # Appended with a default, so plans in histories recorded before it still load.
    recalled: int = Field(
        default=0, ge=0, description="Recalled memories the LLM planner's prompt held."
    )


class StoredPlan(Closed):
    """Where a plan stored by reference (too big to carry in history) stands.

    The whole plan lives in Postgres under ``(tenant, plan_hash)``, its steps ordered
    so every dependency comes first; the :class:`Plan` that carries this holds only
    the window of steps from ``window_start`` on.
    """

    total_steps: int = Field(ge=1)
    window_start: int = Field(default=0, ge=0)
    keep_outputs: tuple[StepId, ...] = Field(
        default=(),
        description="Steps up to the end of this window whose outputs a later step "
        "refers to: the only outputs carried into the next window.",
    )


class Plan(Closed):
    plan_id: str
    plan_hash: str
    steps: tuple[Step, ...]
    execution: dict[StepId, StepExecution] = {}
    rationale: str = ""
    planner: PlannerInfo
    stored: StoredPlan | None = Field(
        default=None,
        description="Set when the plan is stored by reference: ``steps`` is one window.",
    )

    @staticmethod
    def hash_steps(steps: tuple[Step, ...]) -> str:
        return sha256_hex([s.model_dump(mode="json") for s in steps])


class ApprovalPolicy(Closed):
    approvers: tuple[str, ...]
    eligible: tuple[PrincipalId, ...] = Field(
        default=(), description="Principals allowed to approve: approvers with groups expanded."
    )
    min_approvals: int = Field(default=1, ge=1)
    timeout_seconds: int = Field(default=3600, ge=1)
    on_timeout: Literal["reject", "escalate"] = "reject"
    escalate_to: tuple[str, ...] = ()
    escalate_eligible: tuple[PrincipalId, ...] = ()
    allow_self_approval: bool = False


class Decision(Closed):
    decision_id: str
    outcome: Outcome
    reasons: tuple[str, ...]
    approval: ApprovalPolicy | None = None
    policy_revision: str = "unknown"
    blocked: BlockedReason | None = None


class ApprovalInput(Closed):
    step_id: StepId
    plan_hash: str = Field(max_length=128)
    approver: PrincipalId
    verdict: Verdict
    comment: str = Field(default="", max_length=4_000)
    token: str | None = Field(default=None, description="Signed principal token, when required.")


class CancelInput(Closed):
    """A cancel's payload (the ``cancel`` update or signal): who asks the run to stop, why.

    Where the tenant's ``approval_authentication`` is ``token``, ``token`` must be the
    principal token of ``requested_by`` narrowed to this run and the sha256 of this
    reason (``stead.contracts.cancel_token``); ``stead cancel`` narrows it. Elsewhere
    ``requested_by`` is claimed and audited as claimed.
    """

    requested_by: PrincipalId
    reason: str = Field(default="", max_length=1_000)
    token: str | None = Field(default=None, max_length=16_384)


class ApprovalRecord(Closed):
    approver: PrincipalId
    verdict: Verdict
    comment: str = ""
    at: datetime
    escalated: bool = False


StepState = Literal[
    "pending",
    "awaiting_approval",
    "running",
    "succeeded",
    "failed",
    "denied",
    "rejected",
    "blocked",
    "skipped",
    "cancelled",
    # The run ended before this step could start (a denied plan or step, a failure,
    # a refused starter); its ``error`` says why.
    "not_run",
]
RunState = Literal[
    "planning",
    "running",
    "awaiting_approval",
    "completed",
    "failed",
    "denied",
    "plan_rejected",
    "cancelled",
    "timed_out",
]
TERMINAL_RUN_STATES: frozenset[str] = frozenset(
    {"completed", "failed", "denied", "plan_rejected", "cancelled", "timed_out"}
)


class StepResult(Closed):
    step_id: StepId
    operation: OperationName
    status: StepState
    decision: Decision | None = None
    approvals: tuple[ApprovalRecord, ...] = ()
    output: JsonValue = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Spent(Closed):
    steps: int = 0
    tokens: int = 0
    usd: float = 0.0


class PendingApproval(Closed):
    workflow_id: str
    tenant: TenantId
    step_id: StepId
    operation: OperationName
    plan_hash: str
    args: dict[str, JsonValue]
    reasons: tuple[str, ...]
    approvers: tuple[str, ...]
    eligible: tuple[PrincipalId, ...]
    requested_by: PrincipalId
    since: datetime
    deadline: datetime


class RunStatus(Closed):
    workflow_id: str
    tenant: TenantId
    principal: PrincipalId
    status: RunState
    plan: Plan | None = None
    steps: tuple[StepResult, ...] = ()
    pending_approvals: tuple[PendingApproval, ...] = ()
    spent: Spent = Spent()
    reasons: tuple[str, ...] = ()
    replans: int = 0
    continued: int = 0
    total_steps: int | None = Field(
        default=None, description="Stored plans: steps in the whole plan (``steps`` is a window)."
    )
    step_counts: dict[str, int] = Field(
        default={}, description="Stored plans: whole-run count of steps by state."
    )


class SettledStep(Closed):
    """A step of an earlier window that did not succeed (all others did)."""

    step_id: StepId
    operation: OperationName
    status: StepState


class SettledWindows(Closed):
    """What the windows a stored plan already ran left behind, compacted.

    A step of an earlier window succeeded unless it is listed in ``unsuccessful``:
    that is all later windows need to resolve their dependencies.
    """

    counts: dict[str, int] = {}
    unsuccessful: tuple[SettledStep, ...] = ()
    minutes_saved: float = 0.0


class RunCarry(Closed):
    """Everything a run knows, passed whole through continue-as-new."""

    status: RunState = "running"
    plan: Plan | None = None
    results: dict[StepId, StepResult] = {}
    outputs: dict[StepId, JsonValue] = {}
    spent: Spent = Spent()
    replans: int = 0
    continued: int = 0
    reasons: tuple[str, ...] = ()
    approval_authentication: Literal["token", "none"] | None = Field(
        default=None,
        description="How approvers prove who they are, read from policy when the run started "
        "(None: the run predates identity checks, so a token is required).",
    )
    settled: SettledWindows | None = Field(
        default=None, description="Stored plans: the windows already run, compacted."
    )


class RunInput(Closed):
    """What starts (or continues) ``stead.run``; nothing here is trusted as it arrives.

    A fresh start carries ``start_token``: the starter's principal token narrowed to
    this workflow id and this request (``start_digest``), checked by ``runs.open``
    before anything else. A continue-as-new carries ``carry`` and the worker's
    ``seal`` over it; the continued run verifies the seal before using the carry.
    """

    request: RunRequest
    carry: RunCarry | None = None
    start_token: str | None = Field(
        default=None,
        max_length=16_384,
        description="The starter's principal token, narrowed to this start (stead run).",
    )
    seal: str | None = Field(
        default=None,
        max_length=256,
        description="The worker's HMAC over the continuation state (continue-as-new only).",
    )


def playbook_digest(request: RunRequest) -> str | None:
    """SHA-256 of an inline playbook's text, so the audit shows what a file run ran.

    Hashed as given (not canonicalised): ``sha256sum playbook.yaml`` matches it for a
    file with LF line endings, so an auditor can tell which file it was.
    """
    if request.playbook_source is None:
        return None
    return hashlib.sha256(request.playbook_source.encode()).hexdigest()


def start_digest(request: RunRequest) -> str:
    """The digest a start token is narrowed to: every field of the request, canonically.

    Deterministic and I/O-free (the workflow computes it too): tenant, principal,
    source, inputs, budget, options, deadline and labels all count, so a token for one
    request starts no other.
    """
    return sha256_hex({"stead_start": 1, "request": request.model_dump(mode="json")})
