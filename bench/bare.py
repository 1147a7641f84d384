"""The baseline: a bare Temporal workflow running N sequential trivial activities.

No OPA, no Postgres, no interceptor, no pydantic contracts: what is left is what
Temporal itself costs per step (schedule, dispatch, complete, one workflow task),
so ``governed / bare`` is Stead's governance tax and nothing else. The activity has
no I/O, which is why it may share a module with the deterministic workflow.
With ``local=True`` the steps run as local activities: the baseline for the
express lane, which is one local activity per step too.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bench.noop")
async def noop(value: int) -> int:
    return value


@workflow.defn(name="bench.bare_chain")
class BareChainWorkflow:
    @workflow.run
    async def run(self, steps: int, local: bool) -> int:
        done = 0
        for _ in range(steps):
            if local:
                done += await workflow.execute_local_activity(
                    noop, 1, start_to_close_timeout=timedelta(seconds=10)
                )
            else:
                done += await workflow.execute_activity(
                    noop, 1, start_to_close_timeout=timedelta(seconds=10)
                )
        return done
