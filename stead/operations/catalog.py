"""The adapter catalog: every operation a plan may name, looked up by ``adapter.op``.

One catalog serves three readers: the planner (``specs()``: JSON schemas it must
fill), OPA (``opa_data()``: what each operation is, loaded as ``data.stead.catalog``)
and the workers (``get``/``parse_args``: what to run and with which checked
arguments). Routing lives here too: ``route`` assigns adapters to the task queue of
an edge worker, and ``local_to`` is what a worker on a given queue may execute.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel, JsonValue, ValidationError

from stead.operations.base import Operation, OperationSpec


class UnknownOperation(LookupError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        super().__init__(
            f"unknown operation {name!r}; known operations: {', '.join(sorted(known))}"
        )


class UnknownAdapter(LookupError):
    """A worker or routing setting names an adapter no installed operation belongs to."""

    def __init__(self, names: Iterable[str], known: Iterable[str]) -> None:
        self.names = sorted(names)
        super().__init__(
            f"unknown adapter(s) {', '.join(self.names)}; installed adapters: "
            f"{', '.join(sorted(known))}"
        )


class InvalidArguments(ValueError):
    def __init__(self, operation: str, errors: list[str]) -> None:
        self.operation = operation
        self.errors = errors
        super().__init__(f"arguments for {operation} fail its schema: " + "; ".join(errors))


class Catalog:
    def __init__(self, operations: Iterable[Operation[Any, Any]] = ()) -> None:
        self._ops: dict[str, Operation[Any, Any]] = {}
        for op in operations:
            self.register(op)

    def register(self, op: Operation[Any, Any]) -> None:
        if op.name in self._ops:
            raise ValueError(f"operation {op.name} is registered twice")
        self._ops[op.name] = op

    def get(self, name: str) -> Operation[Any, Any]:
        try:
            return self._ops[name]
        except KeyError:
            raise UnknownOperation(name, self._ops) from None

    def __contains__(self, name: object) -> bool:
        return name in self._ops

    def __iter__(self) -> Iterator[Operation[Any, Any]]:
        return (self._ops[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._ops)

    def names(self) -> list[str]:
        return sorted(self._ops)

    def adapters(self) -> set[str]:
        """Adapter names (``email`` for ``email.send``) with at least one operation here."""
        return {op.adapter for op in self._ops.values()}

    def specs(self) -> list[OperationSpec]:
        return [self._ops[name].spec() for name in self.names()]

    def opa_data(self) -> dict[str, JsonValue]:
        """The catalog as OPA data, meant for ``data.stead.catalog``.

        Keyed by operation name so a rule reads
        ``data.stead.catalog.operations[input.step.operation].risk``; each entry is
        the operation's spec (schemas included, for ``json.match_schema``).
        """
        operations: dict[str, JsonValue] = {}
        for spec in self.specs():
            operations[spec.name] = spec.model_dump(mode="json", exclude={"name"})
        return {"operations": operations}

    def parse_args(self, name: str, args: dict[str, JsonValue]) -> BaseModel:
        """Validate ``args`` against the operation's schema; errors name each bad field."""
        op = self.get(name)
        try:
            parsed: BaseModel = op.args_model.model_validate(args)
        except ValidationError as exc:
            errors = [
                f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
                for err in exc.errors()
            ]
            raise InvalidArguments(name, errors) from None
        return parsed

    def subset(self, names: Iterable[str]) -> Catalog:
        return Catalog(self.get(n) for n in names)

    def for_tenant(self, tenant: str) -> Catalog:
        """Without operations tagged ``tenant:<other>`` (another tenant's MCP tools), so a
        planner prompt never lists what only another tenant configured."""
        return Catalog(
            op
            for op in self
            if all(t == f"tenant:{tenant}" for t in op.tags if t.startswith("tenant:"))
        )

    def for_adapters(self, adapters: Collection[str]) -> Catalog:
        """Only the operations of ``adapters`` (what an edge worker serves)."""
        self._check_adapters(adapters)
        return Catalog(op for op in self if op.adapter in adapters)

    def route(self, queues: Mapping[str, str]) -> Catalog:
        """A copy in which every operation of adapter ``a`` runs on task queue ``queues[a]``.

        ``build_plan`` copies an operation's queue into the plan, and the run workflow
        schedules that step's ``adapter.execute`` there, so the step lands on the edge
        worker that holds the adapter's credentials.
        """
        self._check_adapters(queues)
        return Catalog(
            dataclasses.replace(op, task_queue=queues[op.adapter]) if op.adapter in queues else op
            for op in self
        )

    def local_to(self, task_queue: str) -> Catalog:
        """What a worker polling ``task_queue`` executes: everything not routed elsewhere."""
        return Catalog(op for op in self if op.task_queue in (None, task_queue))

    def _check_adapters(self, adapters: Iterable[str]) -> None:
        unknown = set(adapters) - self.adapters()
        if unknown:
            raise UnknownAdapter(unknown, self.adapters())
