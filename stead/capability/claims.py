"""What a capability token grants: exactly one effect of one step of one run.

``CapabilityScope`` is what the execution boundary expects, derived from the step it
is about to run; ``CapabilityClaims`` is what a verified token says. They must agree
field for field before an adapter is called.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from stead.contracts.activities import ExecuteStepInput
from stead.contracts.base import Closed
from stead.contracts.run import sha256_hex

# The issue caps a capability's life at five minutes: long enough for one attempt of
# one step, short enough that a leaked token is useless soon after.
MAX_TTL: Final = timedelta(minutes=5)
DEFAULT_TTL: Final = timedelta(minutes=2)


class CapabilityScope(Closed):
    """One effect: the fields a token is bound to."""

    tenant: str
    workflow_id: str
    run_id: str
    step_id: str
    operation: str
    args_hash: str
    idempotency_key: str
    decision_id: str

    @classmethod
    def for_step(cls, req: ExecuteStepInput) -> CapabilityScope:
        """The scope of the step the execute activity was asked to run."""
        return cls(
            tenant=req.tenant,
            workflow_id=req.run.workflow_id,
            run_id=req.run.run_id,
            step_id=req.step.id,
            operation=req.step.operation,
            args_hash=sha256_hex(req.step.args),
            idempotency_key=req.idempotency_key,
            decision_id=req.decision_id,
        )


class CapabilityClaims(CapabilityScope):
    """A verified token: its scope, plus its single-use id and lifetime."""

    token_id: str
    issued_at: datetime
    expires_at: datetime

    @property
    def scope(self) -> CapabilityScope:
        return CapabilityScope(**self.model_dump(include=set(CapabilityScope.model_fields)))

    def mismatches(self, expected: CapabilityScope) -> tuple[str, ...]:
        """The scope fields where this token differs from ``expected``, in a stable order.

        Compared attribute by attribute: the fields are plain strings, so this is what
        comparing two dumps compared, without building three models per step."""
        return tuple(
            name
            for name in CapabilityScope.model_fields
            if getattr(self, name) != getattr(expected, name)
        )
