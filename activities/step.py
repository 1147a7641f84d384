"""One governed step in one activity task: decide, and on an immediate allow, execute.

The regular path costs two activity tasks per step (``policy.decide_step``, then
``adapter.execute``), each a round trip through the task queue and two more events in
history. ``step.run`` does both on the run's own task queue, and governs exactly as
they do, because it *is* their code: OPA is asked and the decision recorded and
audited (``PolicyActivities.decide_step_in``), then the step executes through
``ExecutionActivities.execute`` (a capability token minted for the recorded allow,
verified and spent with the ledger intent, the effect exactly once per idempotency
key, the completion audited). Anything but an immediate allow is returned to the
workflow, which continues on the regular approval/decide/execute path.

A retry decides again (a new decision, recorded and audited) and executes under the
same idempotency key, so the ledger replays or reconciles what an earlier attempt did.
OPA being unreachable fails the activity at once (non-retryable) with the recorded
type ``PolicyUnavailable``: the workflow then decides on the regular path, whose retry
policy for decisions ends in a ``policy_unavailable`` block (fail closed).
"""

from __future__ import annotations

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.execution import ExecutionActivities
from activities.policy import PolicyActivities
from stead.contracts.activities import ExecuteStepInput, ExpressStepInput, ExpressStepOutput
from stead.contracts.run import Decision
from stead.db.pool import commit_without_waiting_for_disk, tenant_transaction

POLICY_UNAVAILABLE = "PolicyUnavailable"


class StepActivities:
    def __init__(
        self, pool: asyncpg.Pool, policy: PolicyActivities, execution: ExecutionActivities
    ) -> None:
        self._pool = pool
        self._policy = policy
        self._execution = execution

    @activity.defn(name="step.run")
    async def run(self, req: ExpressStepInput) -> ExpressStepOutput:
        decision = await self._decide(req)
        if decision.outcome != "allow" or decision.blocked is not None:
            return ExpressStepOutput(decision=decision)
        d = req.decide
        output = await self._execution.execute(
            ExecuteStepInput(
                tenant=d.tenant,
                principal=d.principal,
                run=d.run,
                plan_hash=d.plan_hash,
                step=d.step,
                decision_id=decision.decision_id,
                idempotency_key=req.idempotency_key,
            )
        )
        return ExpressStepOutput(decision=decision, executed=True, output=output)

    async def _decide(self, req: ExpressStepInput) -> Decision:
        try:
            return await decide_for_execution(self._pool, self._policy, req)
        except ApplicationError as exc:
            if exc.type != POLICY_UNAVAILABLE:
                raise
            # Not retried here: the workflow decides again on the regular path.
            raise ApplicationError(
                exc.message, type=POLICY_UNAVAILABLE, non_retryable=True
            ) from exc


async def decide_for_execution(
    pool: asyncpg.Pool, policy: PolicyActivities, req: ExpressStepInput
) -> Decision:
    """Decide and record a step that executes right after on an allow (``step.run``, the
    express lane). An allow's transaction does not wait for its fsync: the execution's
    intent or completion commits durably right after and flushes this WAL with it; if
    the worker dies first, the workflow never saw the decision and the retry decides
    again. Any other outcome is returned to the workflow, so it commits durably."""
    async with tenant_transaction(pool, req.decide.tenant) as conn:
        decision = await policy.decide_step_in(conn, req.decide)
        if decision.outcome == "allow" and decision.blocked is None:
            await commit_without_waiting_for_disk(conn)
        return decision
