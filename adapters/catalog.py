"""The adapter catalog: every operation a plan may name, looked up by ``adapter.op``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, JsonValue, ValidationError

from adapters.base import Operation, OperationSpec


class UnknownOperation(LookupError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        super().__init__(f"unknown operation {name!r}; known operations: {', '.join(sorted(known))}")


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

    def names(self) -> list[str]:
        return sorted(self._ops)

    def specs(self) -> list[OperationSpec]:
        return [self._ops[name].spec() for name in self.names()]

    def parse_args(self, name: str, args: dict[str, JsonValue]) -> BaseModel:
        """Validate ``args`` against the operation's schema; errors name each bad field."""
        op = self.get(name)
        try:
            return op.args_model.model_validate(args)
        except ValidationError as exc:
            errors = [
                f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
            ]
            raise InvalidArguments(name, errors) from None

    def subset(self, names: Iterable[str]) -> Catalog:
        return Catalog(self.get(n) for n in names)
