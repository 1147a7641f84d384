"""Why a secret could not be resolved: one class per condition, never the value itself.

Messages name the reference (safe to show) and the fix. None of these is worth a
retry: a missing, refused or unreadable secret stays that way until an operator acts,
so callers turn them into non-retryable step failures.
"""

from __future__ import annotations

from stead.errors import ErrorCode, SteadError


class SecretError(SteadError):
    """Base class for every secret resolution failure."""

    code = ErrorCode.CONFIG


class InvalidSecretRef(SecretError, ValueError):
    """The text is not a well-formed ``secret://<tenant>/<adapter>/<name>``."""


class SecretRefused(SecretError):
    """The reference belongs to another tenant (or adapter) than the caller's."""


class SecretNotBound(SecretRefused):
    """The secret declares no destinations, or not the one the step is sending it to."""


class SecretNotFound(SecretError):
    """No configured backend holds the reference."""


class SecretUnreadable(SecretError):
    """A backend holds the reference but will not hand it out (unsafe mode, bad bytes)."""
