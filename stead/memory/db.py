"""How a Postgres failure looks to memory's callers: one typed, retryable error.

Postgres is the truth, so unlike the vector index there is nothing to degrade to:
an unreachable or failing database is `MemoryUnavailable`, named with the
operation, and Temporal decides whether to try again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from stead.memory.errors import MemoryUnavailable

# "The database is unreachable or busy", as opposed to "this request is wrong".
TRANSIENT = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.TransactionRollbackError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
)


@contextmanager
def db_errors(what: str) -> Iterator[None]:
    try:
        yield
    except TRANSIENT as exc:
        raise MemoryUnavailable(
            f"memory {what}: Postgres did not answer ({type(exc).__name__}: {exc}); memory is "
            "unavailable until it does. Is `stead dev up` running, and STEAD_POSTGRES_DSN right?"
        ) from exc
