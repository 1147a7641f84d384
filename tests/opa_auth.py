"""The test stack's OPA credentials, for helpers that only get an OPA URL.

The session ``stack`` fixture records its tokens here; OPAs a test starts of its own
(``opa_stack.start(..., tokens=stack_tokens(stack))``) reuse them, so one admin token
writes to every OPA in a session.
"""

from __future__ import annotations

from stead.policy.authz import OpaTokens
from stead.settings import Settings

_current: list[OpaTokens] = []


def remember(settings: Settings) -> None:
    """Called by the ``stack`` fixture once the stack is up."""
    _current[:] = [stack_tokens(settings)]


def stack_tokens(settings: Settings) -> OpaTokens:
    if settings.opa_token is None or settings.opa_admin_token is None:
        raise AssertionError(f"no OPA tokens for the stack in {settings.home}; is it up?")
    return OpaTokens(
        decision=settings.opa_token.get_secret_value(),
        admin=settings.opa_admin_token.get_secret_value(),
    )


def admin_headers() -> dict[str, str]:
    """``Authorization`` for writes to OPA's data and policy APIs."""
    if not _current:
        raise AssertionError("no test stack has recorded OPA tokens (use the `stack` fixture)")
    return {"Authorization": f"Bearer {_current[0].admin}"}


def decision_headers() -> dict[str, str]:
    """``Authorization`` for reading decisions and ``data.stead``, as a worker does."""
    if not _current:
        raise AssertionError("no test stack has recorded OPA tokens (use the `stack` fixture)")
    return {"Authorization": f"Bearer {_current[0].decision}"}
