"""Why a capability token is refused: one class per condition, each with a stable reason code.

The reason code goes into the audit log (``capability_refused``) so an operator can
count tampering apart from expiry or replay without parsing messages.
"""

from __future__ import annotations

from typing import Literal

from stead.errors import SteadError

RefusalReason = Literal[
    "no_allow_decision",
    "no_authority",
    "invalid",
    "expired",
    "mismatch",
    "replayed",
    "key_rebound",
]


class CapabilityRefused(SteadError):
    """The execution boundary refused a capability: the step must not touch its adapter."""

    reason: RefusalReason = "invalid"

    def __init__(self, message: str, *, token_id: str | None = None) -> None:
        super().__init__(message)
        self.token_id = token_id


class NoAllowDecision(CapabilityRefused):
    """The authority found no recorded *allow* for this run and step, so it signs nothing."""

    reason = "no_allow_decision"


class NoAuthority(CapabilityRefused):
    """This worker holds only the public key, so it cannot mint a token for the step."""

    reason = "no_authority"


class CapabilityInvalid(CapabilityRefused):
    """Not a token this authority signed: bad encoding, bad signature, or a failing check."""

    reason = "invalid"


class CapabilityExpired(CapabilityRefused):
    reason = "expired"


class CapabilityMismatch(CapabilityRefused):
    """A genuine token, but for another tenant, run, step, operation, arguments or key."""

    reason = "mismatch"

    def __init__(
        self, message: str, *, fields: tuple[str, ...], token_id: str | None = None
    ) -> None:
        super().__init__(message, token_id=token_id)
        self.fields = fields


class CapabilityReplayed(CapabilityRefused):
    """The token was already used once: tokens are single-use."""

    reason = "replayed"


class KeyRebound(CapabilityRefused):
    """The idempotency key was first used for another step, operation or arguments."""

    reason = "key_rebound"
