"""Run limits for every biscuit authorizer Stead builds.

Biscuit's default Datalog time budget is 1 ms. A busy two-core host exceeds it, and the
authorizer then refuses a perfectly valid token ("Reached Datalog execution limits").
Stead's token policies are a handful of facts, so a larger budget costs nothing.
"""

from __future__ import annotations

from datetime import timedelta

from biscuit_auth import AuthorizerBuilder

AUTHORIZER_TIME_LIMIT = timedelta(milliseconds=250)


def limited(builder: AuthorizerBuilder) -> AuthorizerBuilder:
    limits = builder.limits()  # type: ignore[attr-defined]
    limits.max_time = AUTHORIZER_TIME_LIMIT
    builder.set_limits(limits)  # type: ignore[attr-defined]
    return builder
