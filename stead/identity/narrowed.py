"""One check for a principal token narrowed to one act: an approval or a cancel.

Both travel in the run's history, so both are checked the same way, in this order:

1. for an act without a token, the tenant's policy, read from OPA *now*
   (``approval_authentication_now``): ``none`` accepts a claimed name, anything else
   (an undefined answer too) needs a token. Workflow state cannot switch it. OPA down
   or slow raises, so Temporal retries the check: an outage never reads as a missing
   token;
2. the token's shape: narrowed to exactly this act (``stead.contracts.approval_token``,
   ``cancel_token``). A token that is not was written to history anyway (signals cannot
   be refused before they are), so it is burned before it is refused;
3. the signature, expiry, tenant and scope (``PrincipalTokenVerifier``), and the
   principal the act claims to be from;
4. the burn list (``stead.identity.burned``) and the directory: a managed tenant, an
   enabled principal, a token issued after the principal's last revocation, plus what
   the act itself asks of the directory (an approver still named by the step);
5. a single-use act's token is burned in the transaction that accepts it, so the copy
   the history now holds cannot be replayed.

Refusals are returned, not raised, so the run audits each once; only a dependency that
is down raises, and Temporal retries it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import asyncpg

from stead.contracts.approval_token import exposed_revocation_ids
from stead.contracts.identity import ApprovalCheck, BurnedToken, BurnTokenInput
from stead.contracts.token_blocks import revocation_ids
from stead.db.pool import tenant_transaction
from stead.identity.admission import approval_authentication_now
from stead.identity.burned import burn, burned_in
from stead.identity.directory import get_principal, get_tenant
from stead.identity.errors import PrincipalTokenRefused
from stead.identity.tokens import PrincipalClaims, PrincipalTokenVerifier
from stead.policy.opa import OpaClient

EXPOSED: str = (
    "it was exposed in a run's history and is revoked for good; get a new one with "
    "`stead principal token`"
)
NO_IDENTITY_KEY: str = (
    "this worker has no identity public key (identity.pub in the keys dir), "
    "so it cannot verify principal tokens"
)

DirectoryCheck = Callable[[asyncpg.Connection, PrincipalClaims], Awaitable[str | None]]


@dataclass(frozen=True)
class NarrowedAct:
    """One approval or cancel as presented, and what differs between the two kinds."""

    kind: Literal["approval", "cancel"]
    tenant: str
    workflow_id: str
    token: str | None
    claimed_by: str
    # The refusal when the tenant needs a token and none came: says how to get one.
    token_required: str
    # Why the token may not stand in this act's history (``narrowing_problem``), or None.
    narrowing_problem: Callable[[str], str | None]
    # The signed claims when the token authorizes exactly this act; raises why not.
    verify: Callable[[PrincipalTokenVerifier, str], PrincipalClaims]
    # What this kind asks of the directory beyond a current principal.
    directory_problem: DirectoryCheck | None = None
    # Set for a single-use act: the burn reason recorded when the token is accepted.
    spent_as: str | None = None


class NarrowedTokenAuthenticator:
    """Checks narrowed tokens against OPA, the burn list and the directory; burns exposed
    ones. One per worker; the approval and cancel authenticators build on it."""

    def __init__(
        self, pool: asyncpg.Pool, opa: OpaClient, tokens: PrincipalTokenVerifier | None
    ) -> None:
        self._pool = pool
        self._opa = opa
        self._tokens = tokens

    async def authenticate(self, act: NarrowedAct) -> ApprovalCheck:
        """Accept or refuse one act; raises only when a dependency is down (retryable)."""
        if act.token is None:
            # Only a tokenless act depends on the mode: a token is checked either way.
            mode = await approval_authentication_now(self._opa, act.tenant)
            return ApprovalCheck(accepted=True) if mode == "none" else _refuse(act.token_required)
        if self._tokens is None:
            return _refuse(NO_IDENTITY_KEY)
        exposure = act.narrowing_problem(act.token)
        if exposure is not None:
            burned = await self.burn(
                BurnTokenInput(
                    tenant=act.tenant, workflow_id=act.workflow_id, token=act.token, reason=exposure
                )
            )
            revoked = f"; the token is refused from now on: {EXPOSED}" if burned.burned else ""
            return _refuse(exposure + revoked)
        try:
            claims = act.verify(self._tokens, act.token)
        except PrincipalTokenRefused as exc:
            return _refuse(exc.message)
        if claims.principal != act.claimed_by:
            return _refuse(
                f"the principal token belongs to {claims.principal}, but the {act.kind} "
                f"claims to be from {act.claimed_by}"
            )
        problem = await self._directory_problem(act, act.token, claims)
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
        self, act: NarrowedAct, token: str, claims: PrincipalClaims
    ) -> str | None:
        async with tenant_transaction(self._pool, act.tenant) as conn:
            exposed_by = await burned_in(conn, act.tenant, revocation_ids(token))
            if exposed_by is not None:
                return (
                    f"principal token {claims.token_id} of {claims.principal} is refused: it "
                    f"was burned (exposed in a run's history, or a single-use token already "
                    f"used; in {exposed_by}); get a new one with `stead principal token`"
                )
            problem = await token_holder_problem(conn, act.tenant, claims)
            if problem is None and act.directory_problem is not None:
                problem = await act.directory_problem(conn, claims)
            if problem is not None:
                return problem
            if act.spent_as is not None:
                # Spent in the same transaction that accepted it: a replay finds it burned.
                await burn(
                    conn,
                    act.tenant,
                    exposed_revocation_ids(token),
                    token_id=claims.token_id,
                    workflow_id=act.workflow_id,
                    reason=act.spent_as,
                )
        return None


async def token_holder_problem(
    conn: asyncpg.Connection, tenant: str, claims: PrincipalClaims
) -> str | None:
    """Why the directory does not back this token's principal now."""
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
