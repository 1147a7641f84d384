"""``core.echo``: an operation with no outside effect.

It lets a playbook pass data between steps, and gives benchmarks and long-run tests
a step whose cost is Stead's own governance (decision, ledger, audit), not a peer's.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from stead.operations.base import Operation, OperationContext


class EchoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: JsonValue = None
    note: str = Field(default="", max_length=1_000)


class EchoResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: JsonValue = None


async def _echo(ctx: OperationContext, args: EchoArgs) -> EchoResult:
    return EchoResult(value=args.value)


ECHO: Operation[EchoArgs, EchoResult] = Operation(
    name="core.echo",
    description="Return the given value unchanged (no external effect).",
    args_model=EchoArgs,
    result_model=EchoResult,
    run=_echo,
    side_effect="read",
    risk="low",
    idempotency="native",
    timeout_seconds=10.0,
)
