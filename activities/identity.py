"""Identity checks the run workflow asks for: may this principal start a run, is this approval real.

Admission runs inside ``runs.open``; the approval, cancel and burn checks are
activities of their own. All answer with a result (admitted or not, accepted or not, and
why), so the workflow records a refusal once. Only an unreachable Postgres raises, and
Temporal retries it; if it stays down the workflow refuses the run or the vote: identity
fails closed.
OPA is asked at admission and again for every approval (its authentication mode is
never taken from the workflow); if it cannot answer, approvals need tokens.
"""

from __future__ import annotations

import asyncpg
from temporalio import activity

from stead.contracts import activity_names as names
from stead.contracts.identity import (
    AdmitRunInput,
    ApprovalCheck,
    BurnedToken,
    BurnTokenInput,
    RunAdmission,
    VerifyApprovalInput,
    VerifyCancelInput,
)
from stead.identity.admission import admit_run
from stead.identity.approvals import ApprovalAuthenticator
from stead.identity.cancels import CancelAuthenticator
from stead.identity.tokens import PrincipalTokenVerifier
from stead.policy.opa import OpaClient
from stead.runs.scope import ScopeClaim, tenant_scoped


class IdentityActivities:
    def __init__(
        self, pool: asyncpg.Pool, opa: OpaClient, tokens: PrincipalTokenVerifier | None
    ) -> None:
        self._pool = pool
        self._opa = opa
        self._tokens = tokens
        self._approvals = ApprovalAuthenticator(pool, opa, tokens)
        self._cancels = CancelAuthenticator(pool, opa, tokens)

    async def admit_run(self, req: AdmitRunInput) -> RunAdmission:
        """The admission half of ``runs.open`` (``RecordActivities.open_run``), which
        checks this input's tenant scope before calling it: not an activity of its own."""
        key = None if self._tokens is None else self._tokens.public_key
        return await admit_run(self._pool, self._opa, req, key)

    @activity.defn(name=names.IDENTITY_VERIFY_APPROVAL)
    @tenant_scoped(lambda req: ScopeClaim(req.tenant, (req.workflow_id,)))
    async def verify_approval(self, req: VerifyApprovalInput) -> ApprovalCheck:
        return await self._approvals.check(req)

    @activity.defn(name=names.IDENTITY_VERIFY_CANCEL)
    @tenant_scoped(lambda req: ScopeClaim(req.tenant, (req.workflow_id,)))
    async def verify_cancel(self, req: VerifyCancelInput) -> ApprovalCheck:
        return await self._cancels.check(req)

    @activity.defn(name=names.IDENTITY_BURN_TOKEN)
    @tenant_scoped(lambda req: ScopeClaim(req.tenant, (req.workflow_id,), "recorded"))
    async def burn_token(self, req: BurnTokenInput) -> BurnedToken:
        """A token the run's history exposed (an unnarrowed one in a signal): revoke it."""
        return await self._approvals.burn(req)
