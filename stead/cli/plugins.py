"""Commands and demos that installed packages add to ``stead``, through entry points.

Two groups, beside ``stead.adapters`` and ``stead.playbooks`` (``stead/plugins.py``):

* ``stead.cli``: ``name = "pkg.module:app"``, a Typer app mounted as ``stead <name>``
  (the field cases add ``stead webhook``);
* ``stead.demos``: ``name = "pkg.module:run"``, a function of no arguments that
  ``stead demo <name>`` calls (the field cases add ``content`` and ``commerce``).

The core ships neither kind; ``stead demo`` alone runs the foundation demo. A command
group whose plugin fails to import still appears, and running it prints why and exits
1: one broken package must not take every other ``stead`` command down with it.
"""

from __future__ import annotations

from collections.abc import Callable

import typer
from rich.markup import escape

from stead.cli._common import console, err_console
from stead.errors import ConfigError
from stead.plugins import plugin_entry_points

COMMANDS = "stead.cli"
DEMOS = "stead.demos"
# Where the demos this repository tells about live, for the message when they are absent.
CASES_HINT = "pip install -e examples/stead-cases (the field cases' plugin, in a source checkout)"


def add_plugin_commands(app: typer.Typer, group: str = COMMANDS) -> None:
    """Mount every installed ``stead.cli`` entry point on ``app`` under its name.

    A name ``app`` already has stays the core's: the plugin's group is not mounted and
    every ``stead`` invocation says so on stderr, rather than a plugin silently taking
    over a command such as ``stead approve``.
    """
    taken = _names(app)
    for ep in plugin_entry_points(group):
        if ep.name in taken:
            err_console.print(
                f"plugin command {ep.name!r} ({ep.value}) is not mounted: stead already has a "
                f"command {ep.name!r}; the plugin must use a name of its own",
                markup=False,
            )
            continue
        taken.add(ep.name)
        try:
            sub = ep.load()
        except Exception as exc:
            sub = _broken(ep.name, f"{ep.value} failed to import ({type(exc).__name__}: {exc})")
        if not isinstance(sub, typer.Typer):
            sub = _broken(ep.name, f"{ep.value} is {type(sub).__name__}, not a typer.Typer")
        app.add_typer(sub, name=ep.name)


def demo_names(group: str = DEMOS) -> list[str]:
    """The installed demos, by the name ``stead demo <name>`` takes."""
    return [ep.name for ep in plugin_entry_points(group)]


def plugin_demo(name: str, group: str = DEMOS) -> Callable[[], None]:
    """The installed demo ``name``; a ConfigError naming what is installed and the fix."""
    found = [ep for ep in plugin_entry_points(group) if ep.name == name]
    if not found:
        installed = ", ".join(demo_names(group)) or "none"
        raise ConfigError(
            f"no demo {name!r} is installed (installed demos: {installed}); the content and "
            f"commerce demos come with the field cases: {CASES_HINT}"
        )
    try:
        run = found[0].load()
    except Exception as exc:
        raise ConfigError(
            f"demo {name!r} ({found[0].value}) failed to import ({type(exc).__name__}: {exc}); "
            "fix or reinstall the package that provides it"
        ) from exc
    if not callable(run):
        raise ConfigError(f"demo {name!r} ({found[0].value}) is not callable")
    return run  # type: ignore[no-any-return]


def _names(app: typer.Typer) -> set[str]:
    groups = {info.name for info in app.registered_groups if info.name}
    commands = set()
    for info in app.registered_commands:
        if info.name:
            commands.add(info.name)
        elif info.callback is not None:
            commands.add(info.callback.__name__.replace("_", "-"))
    return groups | commands


def _broken(name: str, reason: str) -> typer.Typer:
    sub = typer.Typer(help=f"(unavailable: plugin {name!r} did not load)")

    @sub.callback(invoke_without_command=True)
    def fail() -> None:
        console.print(f"[red]error[/]: plugin command {escape(repr(name))}: {escape(reason)}")
        raise typer.Exit(1)

    return sub
