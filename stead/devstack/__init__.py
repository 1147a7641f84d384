"""The embedded stack behind ``stead dev``: Temporal, Postgres and OPA; Qdrant in process."""

from stead.devstack.stack import StackState, stack_down, stack_status, stack_up

__all__ = ["StackState", "stack_down", "stack_status", "stack_up"]
