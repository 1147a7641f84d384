"""Contracts of sealing a run's continuation state (``runs.seal``, ``runs.verify_seal``).

``RunInput.carry`` is everything a run knows (plan, results, status, the approval
policy read at admission). Anyone who can start workflows could hand-make one, so a
carry is accepted only with the worker's seal over it, made by the run that
continued as new and bound to that run's id.
"""

from __future__ import annotations

from pydantic import Field

from stead.contracts.base import Closed
from stead.contracts.run import RunCarry, RunRequest


class SealInput(Closed):
    """What a seal covers: the chain's workflow id, the run that continues, and its state."""

    workflow_id: str
    run_id: str = Field(
        description="The run that continues as new (the next run's continued_run_id)."
    )
    request: RunRequest
    carry: RunCarry


class VerifySealInput(Closed):
    sealed: SealInput
    seal: str | None = None


class SealCheck(Closed):
    """``reason`` is set exactly when the continuation state is refused."""

    valid: bool
    reason: str | None = None
