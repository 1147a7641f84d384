"""What an adapter operation declares, and the context it runs with.

An operation is the only code that touches an external system. It declares its
argument and result schemas, the scopes it needs, its side effect and risk (OPA
reads both), how it stays idempotent, and how long and how often it may run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, JsonValue

SideEffect = Literal["read", "write", "external"]
Risk = Literal["low", "medium", "high"]
Idempotency = Literal["native", "key", "reconcile"]

A = TypeVar("A", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


class OperationSpec(BaseModel):
    """The catalog entry the planner and OPA see: no code, only JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    args_schema: dict[str, JsonValue]
    result_schema: dict[str, JsonValue]
    scopes: tuple[str, ...]
    side_effect: SideEffect
    risk: Risk
    idempotency: Idempotency
    timeout_seconds: float
    max_attempts: int
    rate_limit_per_minute: int | None
    task_queue: str | None


@dataclass(frozen=True)
class OperationContext:
    """What an operation may know about the call: never a raw credential."""

    tenant: str
    principal: str
    workflow_id: str
    step_id: str
    idempotency_key: str
    resources: Any = None  # worker-side handles (db pool, http client), set by the worker


class AdapterError(Exception):
    """Raised by an operation; ``retryable`` decides whether Temporal tries again."""

    def __init__(self, message: str, *, retryable: bool, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.details = details or {}


@dataclass(frozen=True)
class Operation(Generic[A, R]):
    name: str
    description: str
    args_model: type[A]
    result_model: type[R]
    run: Callable[[OperationContext, A], Awaitable[R]]
    side_effect: SideEffect
    risk: Risk
    idempotency: Idempotency
    scopes: tuple[str, ...] = ()
    timeout_seconds: float = 30.0
    max_attempts: int = 5
    rate_limit_per_minute: int | None = None
    task_queue: str | None = None
    # For idempotency="reconcile" (and "key" when the target can be asked): after a
    # crash between effect and completion, find the effect the key produced, if any.
    reconcile: Callable[[OperationContext, A], Awaitable[R | None]] | None = None
    tags: tuple[str, ...] = field(default=())

    def spec(self) -> OperationSpec:
        return OperationSpec(
            name=self.name,
            description=self.description,
            args_schema=self.args_model.model_json_schema(),
            result_schema=self.result_model.model_json_schema(),
            scopes=self.scopes,
            side_effect=self.side_effect,
            risk=self.risk,
            idempotency=self.idempotency,
            timeout_seconds=self.timeout_seconds,
            max_attempts=self.max_attempts,
            rate_limit_per_minute=self.rate_limit_per_minute,
            task_queue=self.task_queue,
        )
