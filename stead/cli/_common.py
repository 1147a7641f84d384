"""What every CLI command shares: settings loading, errors as clean messages, JSON output."""

from __future__ import annotations

import atexit
import gc
import json
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from stead.audit import chain_for
from stead.audit import install as install_audit_chain
from stead.errors import SteadError
from stead.settings import Settings, load_settings

# A Temporal client still alive at interpreter shutdown can abort the process
# (temporalio/sdk-python#300), losing the exit code CI relies on; collect it first.
atexit.register(gc.collect)

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")


def settings() -> Settings:
    """The settings; also installs the audit chain they name, which any command that
    writes or verifies the audit log (memory, audit, demos) appends and checks with."""
    loaded = load_settings()
    install_audit_chain(chain_for(loaded))
    return loaded


def fails_cleanly(func: Callable[P, R]) -> Callable[P, R]:
    """A SteadError becomes one red line and exit code 1, not a traceback."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except SteadError as exc:
            err_console.print(f"[bold red]error[/] ({exc.code}): {exc.message}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str, sort_keys=True))
