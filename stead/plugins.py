"""Installed packages that extend Stead, found through entry points.

Four groups, each read where it is used:

* ``stead.adapters``: a function returning operations, read by ``adapters/plugins.py``
  when the catalog is built;
* ``stead.playbooks``: a function returning a folder of playbook YAML, read by
  ``stead/planning/playbooks.py`` after the operator's ``STEAD_PLAYBOOK_DIR``;
* ``stead.cli``: a ``typer.Typer`` mounted as ``stead <name>`` (``stead/cli/plugins.py``);
* ``stead.demos``: a function ``stead demo <name>`` calls (``stead/cli/plugins.py``).

The field cases (``examples/stead-cases``) use all four; the core ships none and runs
without any.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from stead.errors import ConfigError


class PluginError(ConfigError):
    """An installed plugin could not be loaded; the message names it and the fix."""


def plugin_entry_points(group: str) -> list[EntryPoint]:
    """The installed entry points of ``group``, sorted so the load order is stable."""
    return sorted(entry_points(group=group), key=lambda ep: (ep.name, ep.value))


def describe(ep: EntryPoint) -> str:
    """``'name' (module:attr, from dist)``: how errors name a plugin."""
    dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
    return f"{ep.name!r} ({ep.value}, from {dist})"
