"""The governed run (``stead.run``), a package that reads like the flow: open → plan →
decide → approve → execute → record. ``RunWorkflow`` is in ``workflows/run/run_workflow.py``."""

from __future__ import annotations

from temporalio import workflow

from workflows.run.run_workflow import RunWorkflow

with workflow.unsafe.imports_passed_through():
    from stead.contracts.activities import PLAN_REJECTED

__all__ = ["PLAN_REJECTED", "RunWorkflow"]
