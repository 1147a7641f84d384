"""Stead's two field cases as a plugin: a creator's content week and a shop's stock
reconciliation (README.md beside this package tells both stories).

Installed next to Stead (``pip install -e examples/stead-cases``), it adds through
entry points (``pyproject.toml``):

* ``stead.adapters``: :func:`operations`, the cases' operations (``content.*``,
  ``llm.generate``, ``platform.publish``, ``shop.*``, ``warehouse.stock``,
  ``commerce.reconcile``);
* ``stead.playbooks``: :func:`playbooks`, the folder of ``content-weekly`` and
  ``commerce-reconcile``;
* ``stead.cli``: ``stead webhook serve``, the commerce case's return events;
* ``stead.demos``: ``stead demo content`` and ``stead demo commerce``.

The core imports none of it; ``services/`` holds the local stand-ins for the outside
world (a publishing platform, a shop API, a warehouse database, an LLM, a mailbox)
the demos and the end-to-end tests start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stead.operations.base import Operation


def operations() -> list[Operation[Any, Any]]:
    """The ``stead.adapters`` entry point: every operation of both cases."""
    from stead_cases.commerce import COMMERCE_OPERATIONS
    from stead_cases.content import CONTENT_OPERATIONS

    return [*CONTENT_OPERATIONS, *COMMERCE_OPERATIONS]


def playbooks() -> Path:
    """The ``stead.playbooks`` entry point: the folder of the cases' playbooks."""
    return Path(__file__).resolve().parent / "playbooks"
