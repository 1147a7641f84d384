"""Authenticating a cancel: is the principal who asks the run to stop who they claim?

Called by the ``identity.verify_cancel`` activity from the run's cancel handlers, and
checked like every narrowed token (``stead.identity.narrowed``): the tenant's policy
read from OPA now, a token narrowed to exactly this run and reason
(``stead.contracts.cancel_token``), signed, unexpired and not burned, and a principal
the directory backs. A narrowed cancel token is single-use: it is burned in the
transaction that accepts it, so the copy the run's history now holds cannot be
replayed.
"""

from __future__ import annotations

from functools import partial

from stead.contracts.cancel_token import cancel_narrowing_problem, cancel_scope
from stead.contracts.identity import ApprovalCheck, VerifyCancelInput
from stead.identity.narrowed import NarrowedAct, NarrowedTokenAuthenticator
from stead.identity.tokens import PrincipalClaims, PrincipalTokenVerifier

USED: str = "used for a cancel; a narrowed cancel token is single-use"


class CancelAuthenticator(NarrowedTokenAuthenticator):
    async def check(self, req: VerifyCancelInput) -> ApprovalCheck:
        """Accept or refuse one cancel; raises only when a dependency is down (retryable)."""
        scope = cancel_scope(req.workflow_id, req.reason)

        def verify(tokens: PrincipalTokenVerifier, token: str) -> PrincipalClaims:
            return tokens.verify_cancel(token, tenant=req.tenant, scope=scope)

        return await self.authenticate(
            NarrowedAct(
                kind="cancel",
                tenant=req.tenant,
                workflow_id=req.workflow_id,
                token=req.token,
                claimed_by=req.requested_by,
                token_required=(
                    f"tenant {req.tenant} requires a Stead principal token to cancel a run: "
                    f"`stead cancel {req.workflow_id} --as {req.requested_by} --token-file <file>`"
                ),
                narrowing_problem=partial(cancel_narrowing_problem, scope=scope),
                verify=verify,
                spent_as=USED,
            )
        )
