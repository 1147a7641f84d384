"""A run whose every workflow task fails, for tests/test_cli_struggling_run.py.

In a module of its own: the workflow sandbox re-imports the module that defines a
workflow, so it imports nothing but temporalio.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow


@workflow.defn(name="stead.run")
class StrugglingRun:
    """Named like the run, with its query and update, so the CLI talks to it as to one;
    its workflow task fails on every attempt, as a worker that cannot finish it would."""

    @workflow.run
    async def run(self, *args: Any) -> None:
        raise RuntimeError("this workflow task fails on every attempt, on purpose")

    @workflow.query(name="pending_approvals")
    def pending_approvals(self) -> list[Any]:
        return []

    @workflow.update(name="approve")
    async def approve(self, *args: Any) -> None:
        return None
