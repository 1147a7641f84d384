"""Sealing and checking a run's continuation state (local activities of ``stead.run``).

The workflow cannot hold a key (history is readable, workflow code is deterministic),
so the worker seals the next run's input before continue-as-new and checks it when
the continued run starts. A worker without ``integrity.secret`` can do neither: it
refuses, and the run does not continue on state nobody can vouch for.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from stead.contracts import activity_names as names
from stead.contracts.continuation import SealCheck, SealInput, VerifySealInput
from stead.runs.scope import ScopeClaim, scope_refused, tenant_scoped, worker_pool
from stead.runs.seal import NOT_SEALED, seal, seal_problem

NO_SECRET = (
    "this worker has no integrity secret (integrity.secret in the keys dir), so it cannot "
    "{what} a run's continuation state; run `stead keys init` where the workers' keys are made "
    "and give every worker the same integrity.secret"
)


def _seal_claim(req: SealInput) -> ScopeClaim:
    """A seal vouches for the next run of *this* admitted run only: otherwise any workflow
    code on the queue could have the worker seal a carry for any tenant and start a run
    past admission with it."""
    if activity.in_activity() and req.run_id != activity.info().workflow_run_id:
        raise scope_refused(
            f"runs.seal was asked to seal for run {req.run_id!r} but runs for run "
            f"{activity.info().workflow_run_id!r}; a run seals only its own continuation"
        )
    return ScopeClaim(req.request.tenant, (req.workflow_id,))


class ContinuationActivities:
    def __init__(self, secret: bytes | None) -> None:
        self._secret = secret

    @activity.defn(name=names.RUNS_SEAL)
    @tenant_scoped(_seal_claim, pool=worker_pool)
    async def seal(self, req: SealInput) -> str:
        if self._secret is None:
            raise ApplicationError(
                NO_SECRET.format(what="seal"), type="IntegritySecretMissing", non_retryable=True
            )
        return seal(self._secret, req)

    @activity.defn(name=names.RUNS_VERIFY_SEAL)
    async def verify(self, req: VerifySealInput) -> SealCheck:
        if self._secret is None:
            return SealCheck(valid=False, reason=f"{NOT_SEALED}: " + NO_SECRET.format(what="check"))
        problem = seal_problem(self._secret, req.sealed, req.seal)
        return SealCheck(valid=problem is None, reason=problem)
