"""Policy decisions from OPA: the client, its typed results and its fail-closed errors."""

from stead.policy.opa import (
    PLAN_DECISION,
    STEP_DECISION,
    ApprovalTerms,
    OpaClient,
    PlanPolicy,
    PlanPolicyResult,
    PolicyUnauthorized,
    PolicyUnavailable,
    PolicyUndefined,
    StepPolicy,
    StepPolicyResult,
)

__all__ = [
    "PLAN_DECISION",
    "STEP_DECISION",
    "ApprovalTerms",
    "OpaClient",
    "PlanPolicy",
    "PlanPolicyResult",
    "PolicyUnauthorized",
    "PolicyUnavailable",
    "PolicyUndefined",
    "StepPolicy",
    "StepPolicyResult",
]
