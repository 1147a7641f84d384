"""The workflows the Stead worker registers, in one place.

``stead upgrade check`` replays the cluster's open runs against exactly this list: a
workflow the worker runs but the check skipped would be a run nobody checked.
"""

from __future__ import annotations

from workflows.hello import HelloWorkflow
from workflows.memory import (
    MemoryIndexOpWorkflow,
    MemoryPurgeWorkflow,
    MemoryReindexWorkflow,
)
from workflows.run import RunWorkflow

WORKFLOWS: tuple[type, ...] = (
    HelloWorkflow,
    RunWorkflow,
    MemoryReindexWorkflow,
    MemoryPurgeWorkflow,
    MemoryIndexOpWorkflow,
)
