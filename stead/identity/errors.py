"""Typed errors of the identity directory and of principal tokens."""

from __future__ import annotations

from typing import Literal

from stead.errors import ConfigError, SteadError


class DirectoryError(ConfigError):
    """A directory request names something that is not there, or is already there."""


class TenantExists(DirectoryError):
    pass


class TenantUnknown(DirectoryError):
    pass


class PrincipalExists(DirectoryError):
    pass


class PrincipalUnknown(DirectoryError):
    pass


TokenRefusal = Literal["invalid", "expired", "wrong_tenant", "not_scoped", "scope_mismatch"]


class PrincipalTokenRefused(SteadError):
    """The token does not prove who the approver is, for this approval; ``reason`` says how."""

    reason: TokenRefusal = "invalid"

    def __init__(self, message: str, *, token_id: str | None = None) -> None:
        super().__init__(message)
        self.token_id = token_id


class PrincipalTokenInvalid(PrincipalTokenRefused):
    reason = "invalid"


class PrincipalTokenExpired(PrincipalTokenRefused):
    reason = "expired"


class PrincipalTokenWrongTenant(PrincipalTokenRefused):
    reason = "wrong_tenant"


class PrincipalTokenNotScoped(PrincipalTokenRefused):
    """A bare principal token was presented: it would sit in history, reusable by any reader."""

    reason = "not_scoped"


class PrincipalTokenScopeMismatch(PrincipalTokenRefused):
    reason = "scope_mismatch"
