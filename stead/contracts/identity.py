"""Contracts of the identity activities: admitting a run's starter, authenticating an approver.

The workflow only learns *whether* a principal was admitted or an approval verified,
and why not; keys, directory rows and token contents stay on the worker. Refusals are
results rather than errors, so a refused approval is audited once instead of retried.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from pydantic import Field

from stead.contracts.run import Closed, PrincipalId, StepId, TenantId, Verdict

# The shape of a principal token (URL-safe base64 of a biscuit), checked by the
# workflow's update validator without any crypto: the real check is the activity's.
PRINCIPAL_TOKEN_MAX_CHARS: Final = 16_384
PRINCIPAL_TOKEN_SHAPE: Final = re.compile(r"^[A-Za-z0-9_-]{16,}={0,2}$")


def principal_token_problem(token: str | None) -> str | None:
    """Why ``token`` cannot be a principal token at all, or None (deterministic, no I/O)."""
    if token is None:
        return None
    if len(token) > PRINCIPAL_TOKEN_MAX_CHARS:
        return f"principal token is longer than {PRINCIPAL_TOKEN_MAX_CHARS} characters"
    if not PRINCIPAL_TOKEN_SHAPE.fullmatch(token):
        return (
            "principal token is not URL-safe base64; pass the text `stead principal token` printed"
        )
    return None


class AdmitRunInput(Closed):
    tenant: TenantId
    principal: PrincipalId
    workflow_id: str
    chain_id: str | None = Field(
        default=None,
        description="The run chain's first run id (set by the Temporal server): the claim "
        "on the workflow id that makes a start token single-use.",
    )
    request_digest: str | None = Field(
        default=None, description="``start_digest`` of the request the start token must match."
    )
    start_token: str | None = Field(
        default=None, max_length=16_384, description="The narrowed start token, if any."
    )


ApprovalAuthentication = Literal["token", "none"]


class RunAdmission(Closed):
    """Whether the starter may start the run; ``managed`` says the tenant has a directory.

    ``approval_authentication`` is the tenant's policy for this run's approvals, read
    once at the start (like the plan's decision) so a vote never waits on OPA.
    """

    admitted: bool
    managed: bool
    reason: str | None = None
    approval_authentication: ApprovalAuthentication = "token"
    start_authentication: ApprovalAuthentication = "token"
    authenticated: bool = Field(
        default=False, description="True when a start token proved the starter."
    )
    token_id: str | None = None
    id_taken: bool = Field(
        default=False,
        description="The workflow id belongs to another run chain: nothing was recorded, "
        "and the refused run must not write that run's record.",
    )


class VerifyApprovalInput(Closed):
    tenant: TenantId
    workflow_id: str
    step_id: StepId
    plan_hash: str
    approver: PrincipalId
    verdict: Verdict
    approvers: tuple[str, ...] = Field(
        default=(), description="Who policy named for this step (groups unexpanded)."
    )
    authentication: ApprovalAuthentication = "token"
    token: str | None = None


class ApprovalCheck(Closed):
    """The verdict on one approval attempt; ``reason`` is set exactly when it is refused."""

    accepted: bool
    reason: str | None = None
    authenticated: bool = Field(
        default=False, description="True when a Stead principal token proved the approver."
    )
    token_id: str | None = None
