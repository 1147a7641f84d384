"""Authenticating a cancel: is the principal who asks the run to stop who they claim?

Called by the ``identity.verify_cancel`` activity from the run's cancel handlers, the
counterpart of ``approvals.ApprovalAuthenticator`` for a cancel:

1. the tenant's policy, read from OPA now (``approval_authentication``): ``none``
   accepts a claimed name, anything else needs a token;
2. the principal token: narrowed to exactly this run and reason
   (``stead.contracts.cancel_token``), signed by the identity key, unexpired, for this
   tenant and for the claimed principal;
3. the burn list, and the directory (managed tenant, enabled principal, token issued
   after the principal's last revocation);
4. single use: an accepted token's narrowed block is burned at once, so the copy the
   run's history now holds cannot be replayed.

A token that was not narrowed to this cancel but reached the activity (a signal: it is
in history already) is burned before it is refused. Refusals are returned, not raised,
so the run audits each once.
"""

from __future__ import annotations

import asyncpg

from stead.contracts.approval_token import exposed_revocation_ids
from stead.contracts.cancel_token import cancel_narrowing_problem, cancel_scope
from stead.contracts.identity import ApprovalCheck, BurnTokenInput, VerifyCancelInput
from stead.contracts.token_blocks import revocation_ids
from stead.db.pool import tenant_transaction
from stead.identity.admission import approval_authentication
from stead.identity.approvals import EXPOSED, ApprovalAuthenticator, token_holder_problem
from stead.identity.burned import burn, burned_in
from stead.identity.errors import PrincipalTokenRefused
from stead.identity.tokens import PrincipalClaims, PrincipalTokenVerifier
from stead.policy.opa import OpaClient

USED: str = "used for a cancel; a narrowed cancel token is single-use"


class CancelAuthenticator:
    def __init__(
        self,
        pool: asyncpg.Pool,
        opa: OpaClient,
        tokens: PrincipalTokenVerifier | None,
        approvals: ApprovalAuthenticator,
    ) -> None:
        self._pool = pool
        self._opa = opa
        self._tokens = tokens
        self._approvals = approvals

    async def check(self, req: VerifyCancelInput) -> ApprovalCheck:
        """Accept or refuse one cancel; raises only when a dependency is down (retryable)."""
        mode = await approval_authentication(self._opa, req.tenant)
        if req.token is None:
            if mode == "none":
                return ApprovalCheck(accepted=True)
            return _refuse(
                f"tenant {req.tenant} requires a Stead principal token to cancel a run: "
                f"`stead cancel {req.workflow_id} --as {req.requested_by} --token-file <file>`"
            )
        if self._tokens is None:
            return _refuse(
                "this worker has no identity public key (identity.pub in the keys dir), "
                "so it cannot verify principal tokens"
            )
        scope = cancel_scope(req.workflow_id, req.reason)
        exposure = cancel_narrowing_problem(req.token, scope)
        if exposure is not None:
            burned = await self._approvals.burn(
                BurnTokenInput(
                    tenant=req.tenant, workflow_id=req.workflow_id, token=req.token, reason=exposure
                )
            )
            revoked = f"; the token is refused from now on: {EXPOSED}" if burned.burned else ""
            return _refuse(exposure + revoked)
        try:
            claims = self._tokens.verify_cancel(req.token, tenant=req.tenant, scope=scope)
        except PrincipalTokenRefused as exc:
            return _refuse(exc.message)
        if claims.principal != req.requested_by:
            return _refuse(
                f"the principal token belongs to {claims.principal}, but the cancel claims "
                f"to be from {req.requested_by}"
            )
        problem = await self._directory_problem_and_spend(req, claims)
        if problem is not None:
            return _refuse(problem)
        return ApprovalCheck(accepted=True, authenticated=True, token_id=claims.token_id)

    async def _directory_problem_and_spend(
        self, req: VerifyCancelInput, claims: PrincipalClaims
    ) -> str | None:
        token = req.token or ""
        async with tenant_transaction(self._pool, req.tenant) as conn:
            exposed_by = await burned_in(conn, req.tenant, revocation_ids(token))
            if exposed_by is not None:
                return (
                    f"principal token {claims.token_id} of {claims.principal} is refused: it "
                    f"was burned (exposed or already used, in {exposed_by}); get a new one "
                    "with `stead principal token`"
                )
            problem = await token_holder_problem(conn, req.tenant, claims)
            if problem is not None:
                return problem
            # Spent in the same transaction that accepted it: a replay finds it burned.
            await burn(
                conn,
                req.tenant,
                exposed_revocation_ids(token),
                token_id=claims.token_id,
                workflow_id=req.workflow_id,
                reason=USED,
            )
        return None


def _refuse(reason: str) -> ApprovalCheck:
    return ApprovalCheck(accepted=False, reason=reason)
