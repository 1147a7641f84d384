"""Typed memory errors: each names the condition and what the caller can do about it."""

from __future__ import annotations

from stead.errors import ErrorCode, SteadError


class MemoryUnavailable(SteadError):
    """Postgres, the source of truth, did not answer: nothing can be recalled or written.

    Unlike an unavailable vector index there is no degraded path, so this fails
    clearly; it is transient, and Temporal retries the activity."""

    code = ErrorCode.SERVICE_NOT_READY


class MemoryNotFound(SteadError):
    """No memory (or version) under that namespace and key for this tenant."""

    code = ErrorCode.CONFIG


class MemoryConflict(SteadError):
    """A request key was reused with different content: returning the first result would
    hide the changed intent, writing again would break at-most-once."""

    code = ErrorCode.CONFIG


class StateConflict(SteadError):
    """A compare-and-set lost: the state is at `current_version`, not the expected one.

    Re-read the state, recompute, and retry with `expected_version=current_version`."""

    code = ErrorCode.CONFIG

    def __init__(self, namespace: str, key: str, expected: int, current: int) -> None:
        self.namespace = namespace
        self.key = key
        self.expected = expected
        self.current_version = current
        super().__init__(
            f"state {namespace}/{key} is at version {current}, not {expected}; re-read it and "
            f"retry with expected_version={current}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.namespace, self.key, self.expected, self.current_version))
