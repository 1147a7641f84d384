"""What every CLI command shares: settings loading, errors as clean messages, JSON output."""

from __future__ import annotations

import asyncio
import atexit
import gc
import json
import logging
import re
from collections.abc import Awaitable, Callable
from functools import cache, wraps
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from temporalio.api.errordetails.v1 import WorkflowNotReadyFailure
from temporalio.runtime import LogForwardingConfig, LoggingConfig, Runtime, TelemetryConfig
from temporalio.service import RetryConfig, RPCError, RPCStatusCode

from stead.audit import chain_for
from stead.audit import install as install_audit_chain
from stead.errors import ErrorCode, SteadError, TemporalRefused, TemporalUnavailable
from stead.settings import Settings, load_settings

if TYPE_CHECKING:
    from temporalio.client import Client

# A Temporal client still alive at interpreter shutdown can abort the process
# (temporalio/sdk-python#300), losing the exit code CI relies on; collect it first.
atexit.register(gc.collect)

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # TenantId's pattern
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

# Exit code of every command that talks to Temporal when Temporal did not answer:
# distinct from 1 (failed/refused), 2 (denied) and 3 (cancelled/timed out), so a
# pipeline can retry instead of reporting a run as failed.
EXIT_TEMPORAL_UNAVAILABLE = 4
# What a dead or restarting server looks like from the client; anything else
# (NOT_FOUND, PERMISSION_DENIED, …) is an answer, not an outage.
_OUTAGE = frozenset({RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED})
_REFUSED = frozenset({RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED})


def settings() -> Settings:
    """The settings; also installs the audit chain they name, which any command that
    writes or verifies the audit log (memory, audit, demos) appends and checks with."""
    loaded = load_settings()
    install_audit_chain(chain_for(loaded))
    return loaded


def fails_cleanly(func: Callable[P, R]) -> Callable[P, R]:
    """An expected error becomes one red line and exit code 1, not a traceback.

    Expected: a SteadError (configuration, stack, policy…), and a value the user typed
    that a contract refuses (``--tenant 'A B'``: pydantic's ValidationError, or the
    ValueError a parser raises). The message is printed as text, never as Rich markup:
    ``^[a-z]{0,62}$`` must reach the user whole.
    """

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except TemporalUnavailable as exc:
            fail(exc.code, exc.message, EXIT_TEMPORAL_UNAVAILABLE)
        except RPCError as exc:
            if exc.status in _REFUSED:
                fail(ErrorCode.TEMPORAL_REFUSED, temporal_refused(exc).message)
            if exc.status not in _OUTAGE:
                raise
            fail(
                ErrorCode.TEMPORAL_UNAVAILABLE,
                temporal_unavailable(exc).message,
                EXIT_TEMPORAL_UNAVAILABLE,
            )
        except SteadError as exc:
            fail(exc.code, exc.message)
        except ValidationError as exc:
            fail(ErrorCode.INVALID_INPUT, validation_problems(exc))
        except ValueError as exc:
            fail(ErrorCode.INVALID_INPUT, str(exc))

    return wrapper


def fail(code: str, message: str, exit_code: int = 1) -> NoReturn:
    """Print ``error (<code>): <message>`` on stderr (one line, markup-free) and exit."""
    err_console.print(f"[bold red]error[/] ({code}): {escape(message)}", highlight=False)
    raise typer.Exit(exit_code)


def is_outage(exc: RPCError) -> bool:
    """Temporal did not answer (down, restarting, too slow), as opposed to said no."""
    return exc.status in _OUTAGE


def task_in_failed_state(exc: RPCError) -> bool:
    """Temporal refused a query or an update because the run's workflow task is on its
    third or later attempt (failed or timed out twice in a row): ``FAILED_PRECONDITION``
    carrying a ``WorkflowNotReadyFailure``, told apart by type, not by its wording.

    For an update this says nothing about whether it was recorded: the server checks the
    attempt before it looks the update id up, so the SDK's own re-send of an update the
    run had already accepted gets this answer too (tests/test_approval_unknown_outcome.py).
    """
    if exc.status != RPCStatusCode.FAILED_PRECONDITION:
        return False
    return any(d.Is(WorkflowNotReadyFailure.DESCRIPTOR) for d in exc.grpc_status.details)


def update_not_taken(run_id: str, what: str) -> str:
    """The one line for an update Temporal answered with "workflow task in failed state"."""
    return (
        f"{run_id} did not answer the {what}: its workflow task failed or timed out twice "
        "in a row (an overloaded or failing worker; the worker log says which), and Temporal "
        f"refused the request. Whether the {what} was recorded is unknown (one the run had "
        "already accepted gets this answer too): `stead status` or `stead pending` says "
        f"what still waits once the run's tasks complete; sending it again is safe"
    )


def temporal_unavailable(exc: RPCError) -> TemporalUnavailable:
    """The one-line error for an RPC that Temporal did not answer."""
    detail = " ".join(str(exc.message or exc).split())[:160]
    return TemporalUnavailable(
        f"Temporal did not answer ({exc.status.name if exc.status else 'no status'}: "
        f"{detail}); nothing was changed by this command. Is `stead dev up` running, or is "
        "STEAD_TEMPORAL_ADDRESS right? Try again when Temporal is back"
    )


def temporal_refused(exc: RPCError) -> TemporalRefused:
    """The one-line error for a call Temporal answered with "not you" or "not allowed"."""
    detail = " ".join(str(exc.message or exc).split())[:160]
    return TemporalRefused(
        f"Temporal refused this client ({exc.status.name if exc.status else 'no status'}: "
        f"{detail}); nothing was changed. Check the API key (TEMPORAL_API_KEY) and the "
        "permissions it grants on the namespace, or the client certificate"
    )


@cache
def cli_runtime() -> Runtime:
    """The SDK runtime of a CLI process: core's log lines go through Python logging.

    Left to itself the SDK core writes its retry warnings straight to the console
    (stdout), which corrupts ``--json``; forwarded, they reach the ``temporalio.core``
    logger, whose output (with no handler configured) goes to stderr. One per process.
    """
    logs = LoggingConfig(
        filter=LoggingConfig.default.filter,
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )
    return Runtime(telemetry=TelemetryConfig(logging=logs))


async def cli_client(cfg: Settings) -> Client:
    """A client whose calls give up within ``temporal_connect_timeout`` when Temporal is down.

    A command answers a person or a pipeline: it should say "unavailable" (exit 4)
    in seconds, not retry silently for the SDK's default budget.
    """
    from stead.temporal import connect

    budget = int(cfg.temporal_connect_timeout * 1000)
    return await connect(
        cfg,
        runtime=cli_runtime(),
        retry_config=RetryConfig(max_elapsed_time_millis=budget),
    )


def with_client(work: Callable[[Client], Awaitable[T]], cfg: Settings | None = None) -> T:
    """Connect, run ``work`` and let the client go, all in one event loop."""

    async def go() -> T:
        client = await cli_client(cfg or settings())
        return await work(client)

    return asyncio.run(go())


def validation_problems(exc: ValidationError) -> str:
    """``field: problem; …`` for the user, without pydantic's URLs and input echoes."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
    )


def tenant_id(value: str | None) -> str | None:
    """A ``--tenant`` callback: a value that is no tenant id is a usage error (exit 2)
    before anything is asked, not a query that quietly finds nothing."""
    if value is not None and not _TENANT.match(value):
        raise typer.BadParameter(
            f"{value!r} is not a tenant id (lowercase letters, digits, '_' and '-', "
            "starting with a letter or digit, at most 63)"
        )
    return value


def principal_id(value: str) -> str:
    """An ``--as`` callback: a value that is no principal id is a usage error (exit 2)
    before anything is asked, even when nothing would have been voted on."""
    from pydantic import TypeAdapter, ValidationError

    from stead.contracts.run import PrincipalId

    try:
        return TypeAdapter(PrincipalId).validate_python(value)
    except ValidationError:
        raise typer.BadParameter(
            f"{value!r} is not a principal id (user:, agent:, service: or group: and a name "
            "of letters, digits and ._@+-)"
        ) from None


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str, sort_keys=True))
