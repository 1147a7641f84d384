"""Contracts of the identity activities: admitting a run's starter, authenticating an approver.

The workflow only learns *whether* a principal was admitted or an approval verified,
and why not; keys, directory rows and token contents stay on the worker. Refusals are
results rather than errors, so a refused approval is audited once instead of retried.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from stead.contracts.base import Closed
from stead.contracts.run import PrincipalId, StepId, TenantId, Verdict
from stead.contracts.token_blocks import MAX_TOKEN_CHARS

# The longest principal token the workflow will pass to an activity (see
# stead.contracts.approval_token, which also decides what may enter history).
PRINCIPAL_TOKEN_MAX_CHARS: Final = MAX_TOKEN_CHARS


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

    ``approval_authentication`` is the tenant's policy for approvals when the run
    started, a hint only: ``identity.verify_approval`` reads the policy again for
    every vote and never trusts the workflow's copy.
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
    # No authentication mode here: the activity reads it from policy each time, so no
    # workflow input or state can switch a tenant's approvals to claimed names.
    token: str | None = None


class VerifyCancelInput(Closed):
    """A cancel to authenticate: the claimed principal, the reason and its token."""

    tenant: TenantId
    workflow_id: str
    requested_by: PrincipalId
    reason: str = Field(default="", max_length=1_000)
    # As for approvals, the activity reads from policy whether a token is needed.
    token: str | None = Field(default=None, max_length=PRINCIPAL_TOKEN_MAX_CHARS)


class BurnTokenInput(Closed):
    """A principal token the run's history exposed without narrowing it to one approval."""

    tenant: TenantId
    workflow_id: str
    token: str = Field(max_length=PRINCIPAL_TOKEN_MAX_CHARS)
    reason: str = Field(max_length=1_000)


class BurnedToken(Closed):
    """How many of the token's revocation ids are on the burn list (0: garbage, not ours)."""

    burned: int
    token_id: str | None = None


class ApprovalCheck(Closed):
    """The verdict on one approval attempt; ``reason`` is set exactly when it is refused."""

    accepted: bool
    reason: str | None = None
    authenticated: bool = Field(
        default=False, description="True when a Stead principal token proved the approver."
    )
    token_id: str | None = None
