"""The effect ledger: exactly-once side effects keyed by ``<workflow id>/<step id>``."""

from stead.ledger.effects import (
    EffectStatus,
    LedgerConflict,
    LedgerEntry,
    LedgerError,
    LedgerKeyUnknown,
    begin,
    complete,
    fail,
    get,
)

__all__ = [
    "EffectStatus",
    "LedgerConflict",
    "LedgerEntry",
    "LedgerError",
    "LedgerKeyUnknown",
    "begin",
    "complete",
    "fail",
    "get",
]
