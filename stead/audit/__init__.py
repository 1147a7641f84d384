"""The append-only, hash-chained audit log: every decision, approval and effect, per tenant."""

from stead.audit.log import (
    GENESIS_HASH,
    AuditEvent,
    AuditRecord,
    AuditTenantMismatch,
    VerifyResult,
    append_event,
    list_events,
    verify_chain,
)

__all__ = [
    "GENESIS_HASH",
    "AuditEvent",
    "AuditRecord",
    "AuditTenantMismatch",
    "VerifyResult",
    "append_event",
    "list_events",
    "verify_chain",
]
