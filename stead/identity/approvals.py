"""Authenticating an approval: is the approver who they claim, and may they approve now?

Called by the ``identity.verify_approval`` activity from the workflow's approval
handlers, before a vote is counted. The workflow's own checks (pending step, plan
hash, eligible names, self-approval, duplicate votes, token present when the run's
policy needs one) run first and without I/O; this adds what needs keys and the
directory:

1. the run's approval policy, read when it started (``stead.identity.admission``):
   ``token`` (the default) or ``none`` (claimed names, for development tenants);
2. the principal token: signed by the identity key, unexpired, for this tenant,
   for the claimed approver, and scoped to exactly this approval;
3. the directory: the tenant is managed, the principal is enabled, the token was
   issued after the principal's last revocation, and policy's approvers still name
   the principal directly or through a group it is in now.

Refusals are returned, not raised, so the workflow audits each once.
"""

from __future__ import annotations

import asyncpg

from stead.contracts.identity import ApprovalCheck, VerifyApprovalInput
from stead.db.pool import tenant_transaction
from stead.identity.directory import get_principal, get_tenant, is_named_approver
from stead.identity.errors import PrincipalTokenRefused
from stead.identity.tokens import ApprovalScope, PrincipalClaims, PrincipalTokenVerifier


class ApprovalAuthenticator:
    def __init__(self, pool: asyncpg.Pool, tokens: PrincipalTokenVerifier | None) -> None:
        self._pool = pool
        self._tokens = tokens

    async def check(self, req: VerifyApprovalInput) -> ApprovalCheck:
        """Accept or refuse one approval; raises only when a dependency is down (retryable)."""
        if req.token is None:
            if req.authentication == "none":
                return ApprovalCheck(accepted=True)
            return _refuse(
                f"tenant {req.tenant} requires approvers to present a Stead principal token: "
                f"get one with `stead principal token {req.approver} --tenant {req.tenant}`, "
                "then `stead approve ... --token-file <file>`"
            )
        if self._tokens is None:
            return _refuse(
                "this worker has no identity public key (identity.pub in the keys dir), "
                "so it cannot verify principal tokens"
            )
        scope = ApprovalScope(
            workflow_id=req.workflow_id,
            step_id=req.step_id,
            plan_hash=req.plan_hash,
            verdict=req.verdict,
        )
        try:
            claims = self._tokens.verify_approval(req.token, tenant=req.tenant, scope=scope)
        except PrincipalTokenRefused as exc:
            return _refuse(exc.message)
        if claims.principal != req.approver:
            return _refuse(
                f"the principal token belongs to {claims.principal}, but the approval claims "
                f"to be from {req.approver}"
            )
        problem = await self._directory_problem(req, claims)
        if problem is not None:
            return _refuse(problem)
        return ApprovalCheck(accepted=True, authenticated=True, token_id=claims.token_id)

    async def _directory_problem(
        self, req: VerifyApprovalInput, claims: PrincipalClaims
    ) -> str | None:
        async with tenant_transaction(self._pool, req.tenant) as conn:
            if await get_tenant(conn, req.tenant) is None:
                return f"tenant {req.tenant} has no directory; create it with `stead tenant create`"
            principal = await get_principal(conn, req.tenant, claims.principal)
            if principal is None:
                return f"{claims.principal} is not a principal of tenant {req.tenant}"
            if principal.disabled:
                return f"{claims.principal} is disabled in tenant {req.tenant}"
            revoked = principal.tokens_not_before
            if revoked is not None and claims.issued_at < revoked:
                return (
                    f"principal token {claims.token_id} was issued before {claims.principal}'s "
                    f"tokens were revoked at {revoked.isoformat()}; get a new one"
                )
            if not await is_named_approver(conn, req.tenant, claims.principal, req.approvers):
                return (
                    f"{claims.principal} is no longer named by the step's approvers "
                    f"({', '.join(req.approvers) or 'none'}) in the directory"
                )
        return None


def _refuse(reason: str) -> ApprovalCheck:
    return ApprovalCheck(accepted=False, reason=reason)
