"""The express lane: one local activity that decides a low-risk read and, on an immediate
allow, executes it. It reuses the regular policy and execution code unchanged, so the
decision is recorded, the effect goes through the ledger and both are audited. It decides
through ``decide_for_execution`` as ``step.run`` does, so a retry whose effect an earlier
attempt already began reuses that attempt's allow (audited ``decision_reused``) instead
of deciding again."""

from __future__ import annotations

import asyncpg
from temporalio import activity

from activities.execution import ExecutionActivities
from activities.policy import PolicyActivities
from activities.step import decide_for_execution, execute_if_allowed
from stead.contracts.activities import ExpressStepInput, ExpressStepOutput


class ExpressActivities:
    def __init__(
        self, pool: asyncpg.Pool, policy: PolicyActivities, execution: ExecutionActivities
    ) -> None:
        self._pool = pool
        self._policy = policy
        self._execution = execution

    @activity.defn(name="express.step")
    async def run_step(self, req: ExpressStepInput) -> ExpressStepOutput:
        decision = await decide_for_execution(self._pool, self._policy, req)
        return await execute_if_allowed(self._execution, req, decision)
