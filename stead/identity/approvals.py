"""Authenticating an approval: is the approver who they claim, and may they approve now?

Called by the ``identity.verify_approval`` activity from the workflow's approval
handlers, before a vote is counted. The workflow's own checks (pending step, plan
hash, eligible names, self-approval, duplicate votes) run first and without I/O;
this adds everything that must not be taken from workflow input or state:

1. the tenant's approval policy, read from OPA *now*
   (``data.stead.identity.approval_authentication``): ``token`` (the default, and the
   answer whenever OPA cannot say) or ``none`` (claimed names, for development
   tenants). Workflow state cannot switch it: an attacker who starts a run with a
   forged carry, or a tenant flipped to ``token`` after the run started, still
   needs a token;
2. the principal token: narrowed to exactly this approval (``approval_token``),
   signed by the identity key, unexpired, for this tenant and the claimed approver;
3. the burn list: a token exposed unnarrowed in some run's history is refused, and
   so is everything narrowed from it (``stead.identity.burned``);
4. the directory: the tenant is managed, the principal is enabled, the token was
   issued after the principal's last revocation, and policy's approvers still name
   the principal directly or through a group it is in now.

A token that reaches this check without being narrowed to this approval was written
to history (the update's validator keeps such tokens out, signals cannot), so it is
burned before it is refused. Refusals are returned, not raised, so the workflow
audits each once.
"""

from __future__ import annotations

import asyncpg

from stead.contracts.approval_token import (
    ApprovalScope,
    exposed_revocation_ids,
    narrowing_problem,
)
from stead.contracts.identity import ApprovalCheck, BurnedToken, BurnTokenInput, VerifyApprovalInput
from stead.contracts.token_blocks import revocation_ids
from stead.db.pool import tenant_transaction
from stead.identity.admission import approval_authentication
from stead.identity.burned import burn, burned_in
from stead.identity.directory import get_principal, get_tenant, is_named_approver
from stead.identity.errors import PrincipalTokenRefused
from stead.identity.tokens import PrincipalClaims, PrincipalTokenVerifier
from stead.policy.opa import OpaClient

EXPOSED: str = (
    "it was exposed in a run's history and is revoked for good; get a new one with "
    "`stead principal token`, and approve with `stead approve` or `stead principal "
    "sign-approval`, which never send a bare token"
)


class ApprovalAuthenticator:
    def __init__(
        self, pool: asyncpg.Pool, opa: OpaClient, tokens: PrincipalTokenVerifier | None
    ) -> None:
        self._pool = pool
        self._opa = opa
        self._tokens = tokens

    async def check(self, req: VerifyApprovalInput) -> ApprovalCheck:
        """Accept or refuse one approval; raises only when a dependency is down (retryable)."""
        mode = await approval_authentication(self._opa, req.tenant)
        if req.token is None:
            if mode == "none":
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
        exposure = narrowing_problem(req.token, scope)
        if exposure is not None:
            burned = await self.burn(
                BurnTokenInput(
                    tenant=req.tenant, workflow_id=req.workflow_id, token=req.token, reason=exposure
                )
            )
            revoked = f"; the token is refused from now on: {EXPOSED}" if burned.burned else ""
            return _refuse(exposure + revoked)
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

    async def burn(self, req: BurnTokenInput) -> BurnedToken:
        """Burn a token the run's history exposed; in the tenant its signature proves.

        A token that does not verify with our key is nobody's here (it authorizes
        nothing), so there is nothing to burn. A worker without the public key cannot
        tell, so it burns under the run's tenant: refusing too much, never too little.
        """
        ids = exposed_revocation_ids(req.token)
        if not ids:
            return BurnedToken(burned=0)
        tenant, token_id = req.tenant, None
        if self._tokens is not None:
            try:
                claims = self._tokens.claims(req.token)
            except PrincipalTokenRefused:
                return BurnedToken(burned=0)
            tenant, token_id = claims.tenant, claims.token_id
        try:
            async with tenant_transaction(self._pool, tenant) as conn:
                await burn(
                    conn,
                    tenant,
                    ids,
                    token_id=token_id,
                    workflow_id=req.workflow_id,
                    reason=req.reason,
                )
        except ValueError:
            # Signed by us for a tenant id no run can have: usable nowhere.
            return BurnedToken(burned=0, token_id=token_id)
        return BurnedToken(burned=len(ids), token_id=token_id)

    async def _directory_problem(
        self, req: VerifyApprovalInput, claims: PrincipalClaims
    ) -> str | None:
        async with tenant_transaction(self._pool, req.tenant) as conn:
            exposed_by = await burned_in(conn, req.tenant, revocation_ids(req.token or ""))
            if exposed_by is not None:
                return (
                    f"principal token {claims.token_id} of {claims.principal} is refused: "
                    f"{EXPOSED} (seen in {exposed_by})"
                )
            problem = await token_holder_problem(conn, req.tenant, claims)
            if problem is not None:
                return problem
            if not await is_named_approver(conn, req.tenant, claims.principal, req.approvers):
                return (
                    f"{claims.principal} is no longer named by the step's approvers "
                    f"({', '.join(req.approvers) or 'none'}) in the directory"
                )
        return None


async def token_holder_problem(
    conn: asyncpg.Connection, tenant: str, claims: PrincipalClaims
) -> str | None:
    """Why the directory does not back this token's principal now (approvals and cancels)."""
    if await get_tenant(conn, tenant) is None:
        return f"tenant {tenant} has no directory; create it with `stead tenant create`"
    principal = await get_principal(conn, tenant, claims.principal)
    if principal is None:
        return f"{claims.principal} is not a principal of tenant {tenant}"
    if principal.disabled:
        return f"{claims.principal} is disabled in tenant {tenant}"
    revoked = principal.tokens_not_before
    if revoked is not None and claims.issued_at < revoked:
        return (
            f"principal token {claims.token_id} was issued before {claims.principal}'s "
            f"tokens were revoked at {revoked.isoformat()}; get a new one"
        )
    return None


def _refuse(reason: str) -> ApprovalCheck:
    return ApprovalCheck(accepted=False, reason=reason)
