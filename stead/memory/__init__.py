"""Memory as a service: Postgres holds every version with provenance, Qdrant ranks them.

The entry point is `stead.memory.service.MemoryService` (remember, recall, get,
history, erase, purge_expired, reindex; compare-and-set state under `.state`). This
package root re-exports only the contracts and errors, which workflow code may
import: importing the service here would pull database and model clients into every
workflow's import closure.
"""

from stead.memory.contracts import (
    EraseResult,
    MemoryVersion,
    Provenance,
    PurgeResult,
    RecallItem,
    RecallQuery,
    RecallResult,
    ReindexResult,
    RememberRequest,
    RememberResult,
    StateValue,
)
from stead.memory.errors import MemoryConflict, MemoryNotFound, MemoryUnavailable, StateConflict

__all__ = [
    "EraseResult",
    "MemoryConflict",
    "MemoryNotFound",
    "MemoryUnavailable",
    "MemoryVersion",
    "Provenance",
    "PurgeResult",
    "RecallItem",
    "RecallQuery",
    "RecallResult",
    "ReindexResult",
    "RememberRequest",
    "RememberResult",
    "StateConflict",
    "StateValue",
]
