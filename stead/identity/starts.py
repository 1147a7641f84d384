"""Start tokens: a principal token narrowed to one run start, so a start proves its starter.

``stead run --token-file`` (and the webhook, the demos) hold a bare principal token
and attenuate it offline (``scope_to_start``) with a block that passes only for one
workflow id and one request digest (tenant, principal, source, inputs, budget,
options, deadline, labels: the whole ``RunRequest``), and expires within minutes.
Only that narrowed copy enters the run's history. A reader who lifts it can at most
replay the very same start of the very same workflow id, which ``runs.open`` refuses
once that id is recorded for another run chain.

The verifier insists on the narrowing exactly as approvals do: the token must
authorize this start, and must authorize no start differing in the workflow id or
the digest (else it is a bare token, ``PrincipalTokenNotScoped``). An approval-scoped
token is no start token (its ``approval(...)`` check never passes here) and a
start-scoped token approves nothing.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Final

from biscuit_auth import PublicKey

from stead.capability.authority import Clock, utcnow
from stead.contracts.base import Closed
from stead.identity.tokens import PrincipalClaims, narrow, verify_narrowed

START_TTL: Final = timedelta(minutes=10)

_START_BLOCK = """
check if start({workflow_id}, {request_digest});
check if time($time), $time <= {expires_at};
"""

_AUTHORIZER = """
time({now});
start({workflow_id}, {request_digest});
allow if stead_token("principal", 1), principal({tenant}, $principal);
"""


class StartScope(Closed):
    """The one start a narrowed token may be used for."""

    workflow_id: str
    request_digest: str


def scope_to_start(
    token: str,
    public_key: PublicKey,
    scope: StartScope,
    *,
    ttl: timedelta = START_TTL,
    clock: Clock = utcnow,
) -> str:
    """Attenuate a principal token to one start (needs the public key, not the private one)."""
    return narrow(token, public_key, _START_BLOCK, scope, ttl=ttl, clock=clock)


def verify_start(
    token: str,
    public_key: PublicKey,
    *,
    tenant: str,
    scope: StartScope,
    clock: Clock = utcnow,
) -> PrincipalClaims:
    """Claims of a token that proves its principal for exactly this start; raises why not."""
    return verify_narrowed(
        token,
        public_key,
        clock().astimezone(UTC),
        tenant,
        _AUTHORIZER,
        scope.model_dump(),
        what="start",
        fix="Start with `stead run --token-file`, which narrows it",
    )
