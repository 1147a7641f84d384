"""The append-only, keyed audit log: every decision, approval and effect, per tenant."""

from stead.audit.anchors import Anchor, AnchorStore
from stead.audit.chain import (
    GENESIS_HASH,
    AuditChain,
    AuditKeyMissing,
    chain_for,
    install,
    installed,
)
from stead.audit.log import (
    AuditEvent,
    AuditKeyConflict,
    AuditRecord,
    AuditTenantMismatch,
    VerifyResult,
    append_event,
    list_events,
    verify_chain,
)

__all__ = [
    "GENESIS_HASH",
    "Anchor",
    "AnchorStore",
    "AuditChain",
    "AuditEvent",
    "AuditKeyConflict",
    "AuditKeyMissing",
    "AuditRecord",
    "AuditTenantMismatch",
    "VerifyResult",
    "append_event",
    "chain_for",
    "install",
    "installed",
    "list_events",
    "verify_chain",
]
