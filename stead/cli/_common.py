"""What every CLI command shares: settings loading, errors as clean messages, JSON output."""

from __future__ import annotations

import atexit
import gc
import json
import re
from collections.abc import Callable
from functools import wraps
from typing import Any, NoReturn, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from stead.audit import chain_for
from stead.audit import install as install_audit_chain
from stead.errors import ErrorCode, SteadError
from stead.settings import Settings, load_settings

# A Temporal client still alive at interpreter shutdown can abort the process
# (temporalio/sdk-python#300), losing the exit code CI relies on; collect it first.
atexit.register(gc.collect)

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # TenantId's pattern
P = ParamSpec("P")
R = TypeVar("R")


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
        except SteadError as exc:
            fail(exc.code, exc.message)
        except ValidationError as exc:
            fail(ErrorCode.INVALID_INPUT, validation_problems(exc))
        except ValueError as exc:
            fail(ErrorCode.INVALID_INPUT, str(exc))

    return wrapper


def fail(code: str, message: str) -> NoReturn:
    """Print ``error (<code>): <message>`` on stderr (one line, markup-free) and exit 1."""
    err_console.print(f"[bold red]error[/] ({code}): {escape(message)}", highlight=False)
    raise typer.Exit(1)


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


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str, sort_keys=True))
