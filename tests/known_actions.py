"""A workflow with one of each billable thing, for tests/test_actions.py.

In a module of its own: the workflow sandbox re-imports the module that defines a
workflow, so it imports nothing but temporalio.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy, SearchAttributeKey

TIMEOUT = timedelta(seconds=10)
TENANT_KEY = SearchAttributeKey.for_keyword("SteadTenant")


@activity.defn(name="actions.flaky")
async def flaky(fail_first: bool) -> int:
    if fail_first and activity.info().attempt == 1:
        raise RuntimeError("first attempt fails on purpose")
    return activity.info().attempt


@workflow.defn(name="actions.known")
class KnownWorkflow:
    """One of each: patch, activity, retried activity, local activities, timer, signal,
    search-attribute upsert, continue-as-new."""

    def __init__(self) -> None:
        self.poked = False

    @workflow.signal
    def poke(self) -> None:
        self.poked = True

    @workflow.run
    async def run(self, continued: bool) -> None:
        if continued:
            return
        # A patch: one marker (this workflow task's) and a TemporalChangeVersion upsert (free).
        workflow.patched("actions-test")
        await workflow.execute_activity(flaky, False, start_to_close_timeout=TIMEOUT)
        await workflow.execute_activity(
            flaky,
            True,
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=10)),
            start_to_close_timeout=TIMEOUT,
        )
        # Two local activities in one workflow task: one Action for both markers.
        await asyncio.gather(
            workflow.execute_local_activity(flaky, False, start_to_close_timeout=TIMEOUT),
            workflow.execute_local_activity(flaky, False, start_to_close_timeout=TIMEOUT),
        )
        await workflow.sleep(timedelta(milliseconds=10))
        await workflow.wait_condition(lambda: self.poked)
        workflow.upsert_search_attributes([TENANT_KEY.value_set("actions-test")])
        workflow.continue_as_new(True)
