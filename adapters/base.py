"""The operation types under their old name, for third-party adapter plugins.

The SDK lives in ``stead.operations.base`` (the core needs it: the planner reads the
catalog); plugins written against ``from adapters.base import ...`` keep working
through this re-export. Code in this repository imports ``stead.operations.base``.
"""

from stead.operations.base import (
    OPERATION_NAME,
    AdapterError,
    Idempotency,
    Operation,
    OperationContext,
    OperationSpec,
    Risk,
    SideEffect,
)

__all__ = [
    "OPERATION_NAME",
    "AdapterError",
    "Idempotency",
    "Operation",
    "OperationContext",
    "OperationSpec",
    "Risk",
    "SideEffect",
]
