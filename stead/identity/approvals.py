"""Authenticating an approval: is the approver who they claim, and may they approve now?

Called by the ``identity.verify_approval`` activity from the workflow's approval
handlers, before a vote is counted. The workflow's own checks (pending step, plan
hash, eligible names, self-approval, duplicate votes) run first and without I/O;
this adds everything that must not be taken from workflow input or state, the way
every narrowed token is checked (``stead.identity.narrowed``): the tenant's policy
read from OPA now, a token narrowed to exactly this approval (run, step, plan hash,
verdict), signed, unexpired and not burned, a principal the directory backs, and one
that policy's approvers still name, directly or through a group it is in now.
"""

from __future__ import annotations

from functools import partial

import asyncpg

from stead.contracts.approval_token import ApprovalScope, narrowing_problem
from stead.contracts.identity import ApprovalCheck, VerifyApprovalInput
from stead.identity.directory import is_named_approver
from stead.identity.narrowed import NarrowedAct, NarrowedTokenAuthenticator
from stead.identity.tokens import PrincipalClaims, PrincipalTokenVerifier


class ApprovalAuthenticator(NarrowedTokenAuthenticator):
    async def check(self, req: VerifyApprovalInput) -> ApprovalCheck:
        """Accept or refuse one approval; raises only when a dependency is down (retryable)."""
        scope = ApprovalScope(
            workflow_id=req.workflow_id,
            step_id=req.step_id,
            plan_hash=req.plan_hash,
            verdict=req.verdict,
        )

        def verify(tokens: PrincipalTokenVerifier, token: str) -> PrincipalClaims:
            return tokens.verify_approval(token, tenant=req.tenant, scope=scope)

        async def no_longer_named(conn: asyncpg.Connection, claims: PrincipalClaims) -> str | None:
            if await is_named_approver(conn, req.tenant, claims.principal, req.approvers):
                return None
            return (
                f"{claims.principal} is no longer named by the step's approvers "
                f"({', '.join(req.approvers) or 'none'}) in the directory"
            )

        return await self.authenticate(
            NarrowedAct(
                kind="approval",
                tenant=req.tenant,
                workflow_id=req.workflow_id,
                token=req.token,
                claimed_by=req.approver,
                token_required=(
                    f"tenant {req.tenant} requires approvers to present a Stead principal "
                    f"token: get one with `stead principal token {req.approver} --tenant "
                    f"{req.tenant}`, then `stead approve ... --token-file <file>`"
                ),
                narrowing_problem=partial(narrowing_problem, scope=scope),
                verify=verify,
                directory_problem=no_longer_named,
            )
        )
