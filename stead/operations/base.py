"""What an adapter operation declares, and the context it runs with.

An operation is the only code that touches an external system. It declares its
argument and result schemas, the scopes it needs, its side effect and risk (OPA
reads both), how it stays idempotent, how long and how often it may run, and how
many calls per minute one tenant may make. ``adapters/README.md`` shows how to
write one.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, JsonValue

from stead.contracts.base import Closed
from stead.egress import Destination

# The scheme of ``stead.secrets.refs``; not imported from there, because the secrets
# package reads settings and workflow code imports this module (through the catalog).
SECRET_SCHEME = "secret://"

SideEffect = Literal["read", "write", "external"]
Risk = Literal["low", "medium", "high"]
Idempotency = Literal["native", "key", "reconcile"]

A = TypeVar("A", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)

# The same grammar as ``stead.contracts.run.OperationName``: a plan can only name
# what this allows, so an operation outside it could never be called. The optional
# third segment is for namespaced adapters: ``mcp.<server>.<tool>``.
OPERATION_NAME = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?$")


class OperationSpec(Closed):
    """The catalog entry the planner and OPA see: no code, only JSON."""

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
    rate_limit_burst: int | None = None
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

    def __init__(
        self, message: str, *, retryable: bool, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.details = details or {}


@dataclass(frozen=True)
class Operation(Generic[A, R]):
    """One thing a plan step can do. Checked when built, so a bad plugin fails at load."""

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
    # Calls per minute for *each* tenant; None is unlimited. The bucket holds
    # ``rate_limit_burst`` tokens (default: one minute's worth). See adapters/ratelimit.py.
    rate_limit_per_minute: int | None = None
    rate_limit_burst: int | None = None
    # The task queue whose workers run this operation (an edge worker holding its
    # credentials); None means the run's own queue. Operators usually assign it
    # with STEAD_ADAPTER_QUEUES instead of hard-coding it here.
    task_queue: str | None = None
    # For idempotency="reconcile" (and "key" when the target can be asked): after a
    # crash between effect and completion, find the effect the key produced, if any.
    reconcile: Callable[[OperationContext, A], Awaitable[R | None]] | None = None
    tags: tuple[str, ...] = field(default=())
    # Where the operation sends bytes, computed from its validated arguments on the
    # worker and given to OPA (input.step.destinations), which checks each against the
    # tenant's egress list. None means it reaches nothing outside Stead; an operation
    # with side_effect="external" and no destinations is denied by the shipped policy.
    destinations: Callable[[A], Sequence[Destination]] | None = None
    # The secret:// references a step resolves (input.step.secrets), for those not in
    # its arguments (a default key named after the tenant). References written in the
    # arguments are found without it.
    secret_refs: Callable[[str, A], Sequence[str]] | None = None
    # More facts for ``input.step``, computed on the worker for the step's tenant (an
    # MCP tool's server and pinned definition hash: ``input.step.mcp``).
    step_facts: Callable[[str], Mapping[str, JsonValue]] | None = None

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ValueError(f"operation {self.name!r} is malformed: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        problems = []
        if not OPERATION_NAME.match(self.name):
            problems.append("its name must be '<adapter>.<operation>' in lowercase, e.g. mail.send")
        for label, model in (("args_model", self.args_model), ("result_model", self.result_model)):
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                problems.append(f"{label} must be a pydantic BaseModel subclass")
        if not self.timeout_seconds > 0:
            problems.append("timeout_seconds must be positive")
        if self.max_attempts < 1:
            problems.append("max_attempts must be at least 1")
        for label, value in (
            ("rate_limit_per_minute", self.rate_limit_per_minute),
            ("rate_limit_burst", self.rate_limit_burst),
        ):
            if value is not None and value < 1:
                problems.append(f"{label} must be at least 1 (None means unlimited)")
        if self.rate_limit_burst is not None and self.rate_limit_per_minute is None:
            problems.append("rate_limit_burst needs rate_limit_per_minute")
        if self.idempotency == "reconcile" and self.reconcile is None:
            problems.append('idempotency="reconcile" needs a reconcile function')
        return problems

    def egress(
        self, tenant: str, args: A, raw: Mapping[str, Any] | None = None
    ) -> tuple[list[Destination], list[str]]:
        """Destinations and secret references of one step, for the policy input.

        Cheap on purpose (a URL split, a scan of the arguments): it runs before every
        decision of the governed step, so pass ``raw``, the JSON the arguments were
        parsed from, to scan it instead of dumping ``args`` again. Raises
        ``DestinationError`` when a destination cannot be stated, which denies the step.
        """
        destinations = list(self.destinations(args)) if self.destinations is not None else []
        scanned = raw if raw is not None else args.model_dump(mode="json")
        refs = dict.fromkeys(_secret_refs(scanned))
        if self.secret_refs is not None:
            refs.update(dict.fromkeys(self.secret_refs(tenant, args)))
        return destinations, list(refs)

    @property
    def adapter(self) -> str:
        """The adapter this operation belongs to: ``email`` for ``email.send``."""
        return self.name.split(".", 1)[0]

    def spec(self) -> OperationSpec:
        """The catalog entry, built once: the operation is immutable, and generating its two
        JSON schemas costs about a millisecond, which every decision used to pay."""
        cached: OperationSpec | None = self.__dict__.get("_spec")
        if cached is None:
            cached = self._build_spec()
            # A frozen dataclass still has a __dict__; the cache is not a field, so
            # equality, repr and dataclasses.replace() ignore it.
            object.__setattr__(self, "_spec", cached)
        return cached

    def _build_spec(self) -> OperationSpec:
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
            rate_limit_burst=self.rate_limit_burst,
            task_queue=self.task_queue,
        )


def _secret_refs(value: object) -> list[str]:
    """Every string in ``value`` that is a ``secret://`` reference."""
    if isinstance(value, str):
        return [value] if value.startswith(SECRET_SCHEME) else []
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in _secret_refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _secret_refs(item)]
    return []
