"""Third-party adapters, found through the ``stead.adapters`` entry-point group.

A package adds operations without touching Stead by declaring, in its
``pyproject.toml``::

    [project.entry-points."stead.adapters"]
    crm = "stead_crm.adapter:operations"

where ``operations()`` returns the package's :class:`~stead.operations.base.Operation` objects.
Loading is eager and strict: a plugin that fails to import, or returns something
that is not an operation, stops the worker at start with the plugin's name in the
message. Skipping it quietly would leave runs failing later with "unknown
operation", far from the cause.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import EntryPoint
from typing import Any

from stead.operations.base import Operation
from stead.plugins import PluginError, plugin_entry_points
from stead.plugins import describe as _describe

GROUP = "stead.adapters"
__all__ = ["GROUP", "PluginError", "load_plugin_operations"]


def load_plugin_operations(group: str = GROUP) -> list[Operation[Any, Any]]:
    """Every operation every installed plugin offers."""
    operations: list[Operation[Any, Any]] = []
    for ep in plugin_entry_points(group):
        operations.extend(_load(ep))
    return operations


def _load(ep: EntryPoint) -> list[Operation[Any, Any]]:
    where = _describe(ep)
    try:
        factory = ep.load()
    except Exception as exc:
        raise PluginError(
            f"adapter plugin {where} failed to import ({type(exc).__name__}: {exc}); "
            "fix or uninstall the package that provides it"
        ) from exc
    if not callable(factory):
        raise PluginError(
            f"adapter plugin {where} is not callable; it must name a function returning "
            "a list of stead.operations.base.Operation"
        )
    try:
        produced = factory()
    except Exception as exc:
        raise PluginError(
            f"adapter plugin {where} raised while listing its operations "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(produced, Operation) or not isinstance(produced, Iterable):
        raise PluginError(
            f"adapter plugin {where} returned {type(produced).__name__}; expected a list of "
            "stead.operations.base.Operation"
        )
    ops = list(produced)
    wrong = [type(op).__name__ for op in ops if not isinstance(op, Operation)]
    if wrong:
        raise PluginError(
            f"adapter plugin {where} returned {', '.join(sorted(set(wrong)))} among its "
            "operations; every item must be an stead.operations.base.Operation"
        )
    return ops
